//! `tltui bench --scaling`: the engine on generated datasets of growing size, each size in its
//! own process so that its peak memory is its own. Shows that an epoch costs the same per image
//! whatever the dataset size, and that memory stays within `data.cache_memory_mb` (images beyond
//! it are decoded again from disk each time they are needed), and that the label-issue finder
//! stays linear in the number of images.

use super::peak_rss_mb;
use crate::cli::BenchArgs;
use crate::config::Config;
use crate::train::{Command, EngineSetup, Event, Phase, WeightsSource};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Classes of the generated dataset (one shape each).
const CLASSES: [&str; 4] = ["square", "disc", "stripes", "cross"];
/// Side of the network input in scaling runs: small, so that 20k images take minutes.
const IMAGE_SIZE: u32 = 96;

/// One dataset size's figures.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScalingRun {
    pub images: usize,
    pub train_images: usize,
    /// Images the memory budget holds decoded; the others are streamed from disk.
    pub cached_images: usize,
    pub cache_memory_mb: usize,
    /// Launch to the dataset being decoded and ready.
    pub load_s: f64,
    /// One warm-up epoch with augmentation (every image decoded or taken from memory,
    /// augmented and run through the backbone), validation excluded.
    pub epoch_s: f64,
    pub epoch_ms_per_image: f64,
    /// The label-issue finder on the features of every image (out-of-fold heads and confident
    /// learning; the feature pass before it excluded).
    pub label_issues_s: f64,
    pub peak_rss_mb: f64,
}

/// Runs each size in a child process and prints a table (or one JSON object per size).
pub fn run(args: &BenchArgs, weights: &Path, sizes: &[usize]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    if !args.json {
        println!(
            "{:>7} {:>8} {:>9} {:>8} {:>9} {:>11} {:>9} {:>9}",
            "images", "cached", "budget", "load s", "epoch s", "ms/image", "finder s", "peak RSS"
        );
    }
    for &n in sizes {
        let out = std::process::Command::new(&exe)
            .args(["bench", "--weights"])
            .arg(weights)
            .args(["--scaling-run", &n.to_string(), "--cache-mb"])
            .arg(args.cache_mb.to_string())
            .args(
                args.model
                    .device
                    .name
                    .iter()
                    .flat_map(|d| ["--device", d.as_str()]),
            )
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            anyhow::bail!("the {n}-image run failed");
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if args.json {
            print!("{text}");
            continue;
        }
        let r: ScalingRun = serde_json::from_str(text.trim())?;
        println!(
            "{:>7} {:>8} {:>6} MB {:>8.1} {:>9.1} {:>11.2} {:>9.2} {:>6.0} MB",
            r.images,
            r.cached_images,
            r.cache_memory_mb,
            r.load_s,
            r.epoch_s,
            r.epoch_ms_per_image,
            r.label_issues_s,
            r.peak_rss_mb
        );
    }
    Ok(())
}

/// One size, in this process: generates the images in a temporary folder, runs one epoch and
/// prints one JSON object.
pub fn run_one(args: &BenchArgs, weights: &Path, images: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dataset = dir.path().join("generated");
    eprintln!("generating {images} images…");
    generate(&dataset, images)?;
    let mut config = Config::default();
    config.data.image_size = IMAGE_SIZE;
    config.data.val_fraction = 0.1;
    config.data.cache_memory_mb = args.cache_mb as u64;
    config.augment.warmup = true;
    let setup = EngineSetup {
        dataset,
        source: crate::data::SourceOptions::folders(),
        config,
        weights: WeightsSource::Local {
            weights: weights.to_path_buf(),
        },
        checkpoint_dir: dir.path().join("checkpoints"),
        feature_cache_dir: None,
        device: args.model.device.pick()?,
        replay: None,
    };
    eprintln!("one warm-up epoch over {images} images…");
    let start = Instant::now();
    let (mut load_s, mut cached, mut train_images) = (0.0, 0, 0);
    let mut epoch_started = None;
    let mut epoch_s = None;
    let mut label_issues_s = None;
    let find = Command::FindLabelIssues {
        folds: crate::train::label_issues::DEFAULT_FOLDS,
    };
    super::one_warmup_epoch(setup, Some(find), |e| match e {
        Event::LabelIssues(issues) => label_issues_s = Some(issues.seconds),
        Event::DatasetReady {
            classes,
            cached_images,
            ..
        } => {
            load_s = start.elapsed().as_secs_f64();
            cached = *cached_images;
            train_images = classes.iter().map(|c| c.train).sum();
        }
        Event::PhaseChanged {
            phase: Some(Phase::Warmup),
            ..
        } => epoch_started = Some(Instant::now()),
        Event::Validation { seconds, .. } => {
            let t = epoch_started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            epoch_s = Some(t - seconds);
        }
        _ => {}
    })?;
    let epoch_s = epoch_s.ok_or_else(|| anyhow::anyhow!("no epoch finished"))?;
    let run = ScalingRun {
        images,
        train_images,
        cached_images: cached,
        cache_memory_mb: args.cache_mb,
        load_s,
        epoch_s,
        epoch_ms_per_image: epoch_s * 1000.0 / train_images.max(1) as f64,
        label_issues_s: label_issues_s.ok_or_else(|| anyhow::anyhow!("no label issues"))?,
        peak_rss_mb: peak_rss_mb(),
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// Writes `n` JPEGs (256x192, a shape per class on a random background) under `root/CLASS/`.
fn generate(root: &Path, n: usize) -> anyhow::Result<()> {
    for class in CLASSES {
        std::fs::create_dir_all(root.join(class))?;
    }
    (0..n).into_par_iter().try_for_each(|i| {
        let class = i % CLASSES.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let img = picture(class, &mut rng);
        let path = root.join(CLASSES[class]).join(format!("{i:06}.jpg"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(file, 85).encode_image(&img)?;
        anyhow::Ok(())
    })
}

/// One generated picture of `class`.
fn picture(class: usize, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = (256u32, 192u32);
    let bg: Rgb<u8> = Rgb([rng.random(), rng.random(), rng.random()]);
    let fg = Rgb(bg.0.map(|c| c.wrapping_add(128)));
    let (cx, cy) = (
        rng.random_range(64..192) as i64,
        rng.random_range(48..144) as i64,
    );
    let r = rng.random_range(24..48) as i64;
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i64 - cx, y as i64 - cy);
        let inside = match class {
            0 => dx.abs() < r && dy.abs() < r,
            1 => dx * dx + dy * dy < r * r,
            2 => (x / 16) % 2 == 0 && dy.abs() < r,
            _ => (dx.abs() < r / 4 && dy.abs() < r) || (dy.abs() < r / 4 && dx.abs() < r),
        };
        if inside {
            fg
        } else {
            bg
        }
    })
}
