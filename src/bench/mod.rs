//! `tltui bench`: throughput of each stage on a real dataset, the numbers BENCHMARKS.md compares
//! with the PyTorch peer (`../shared/tools/peer_torch.py --bench` prints the same keys).

use crate::cli::BenchArgs;
use crate::config::DuplicateMode;
use crate::data::decode::decode_rgb;
use crate::data::{Dataset, Preprocess, Sample, SplitOptions};
use crate::model::{build_backbone, Head, ModelConfig, Params, TrainingPass};
use crate::train::metrics::cross_entropy;
use crate::train::optim::AdamW;
use crate::train::{Command, Engine, EngineSetup, Event};
use candle_core::Tensor;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;
use std::time::{Duration, Instant};

mod scaling;

/// One bench run's figures.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub decode_img_per_s: f64,
    pub forward_img_per_s: f64,
    pub train_img_per_s: f64,
    pub warmup_epoch_ms: f64,
    /// Launch to the first validation result with an empty feature cache, and with a warm one
    /// (absent with `--skip-end-to-end`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_validation_cold_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_validation_cached_s: Option<f64>,
    pub peak_rss_mb: f64,
    pub device: String,
    pub threads: usize,
    pub batch: usize,
}

/// Median wall time of `reps` runs of `f` after one unmeasured run.
fn timed(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[reps / 2])
}

/// Peak resident memory of this process, in MB (0 where the system does not report it).
pub fn peak_rss_mb() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: an all-zero rusage is valid, and getrusage fills the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        // Linux reports kilobytes, macOS bytes.
        let kib = if cfg!(target_os = "macos") {
            usage.ru_maxrss as f64 / 1024.0
        } else {
            usage.ru_maxrss as f64
        };
        kib / 1024.0
    }
    #[cfg(not(unix))]
    0.0
}

/// Runs every measurement and prints a table or one JSON object.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let config = args.data.config.load(|c| args.model.apply(c))?;
    let weights = &args.model.local_weights(&config)?;
    if let Some(n) = args.scaling_run {
        return scaling::run_one(args, weights, n);
    }
    if !args.scaling.is_empty() {
        return scaling::run(args, weights, &args.scaling);
    }
    let dataset = args
        .dataset
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("bench needs a DATASET folder"))?;
    let config_path = weights
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("config.json");
    let model_config = ModelConfig::from_file(&config_path)?;
    let device = args.model.device.pick()?;
    let (image_size, note) = model_config.image_size(config.data.image_size, &device);
    if let Some(note) = note.filter(|_| !args.json) {
        eprintln!("{note}");
    }
    let prep = Preprocess::from_cfg(&model_config.pretrained_cfg, image_size)
        .map_err(anyhow::Error::msg)?;
    let flags = &args.data.config;
    let split = SplitOptions {
        val_fraction: flags.val_fraction.unwrap_or(0.25),
        seed: flags.seed.unwrap_or(0),
        duplicates: flags.duplicates.unwrap_or(DuplicateMode::Off),
    };
    let source = args.data.source.options(&config);
    let ds = Dataset::open(dataset, &source, &split, u64::MAX)?;
    let batch = args.batch;
    let reps = args.reps;
    let say = |what: &str| {
        if !args.json {
            eprintln!("measuring {what}…");
        }
    };

    say("decode + preprocess");
    let sample: Vec<&Sample> = ds.train.iter().take(96).collect();
    let decode = timed(reps, || {
        sample.par_iter().try_for_each(|s| -> anyhow::Result<()> {
            let img = decode_rgb(&s.path, u64::MAX).map_err(anyhow::Error::msg)?;
            std::hint::black_box(prep.eval(&img));
            Ok(())
        })
    })?;
    let inputs: Vec<f32> = sample
        .iter()
        .take(batch)
        .flat_map(|s| prep.eval(&decode_rgb(&s.path, u64::MAX).unwrap_or_default()))
        .collect();
    let size = prep.size as usize;
    let x = Tensor::from_vec(inputs, (batch.min(sample.len()), 3, size, size), &device)?;

    say("backbone forward");
    let mut backbone = build_backbone(&model_config, Params::load(weights, &device)?)?;
    let forward = timed(reps, || {
        std::hint::black_box(backbone.forward(&x, false)?);
        Ok(())
    })?;

    say("fine-tune train step");
    for i in 0..backbone.parts().groups.len() {
        backbone.set_trainable(i, true);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let head = Head::new(
        backbone.parts().num_features,
        ds.class_names.len(),
        0.0,
        &mut rng,
        &device,
    )?;
    let mut vars: Vec<(candle_core::Var, f64)> =
        head.vars().into_iter().map(|v| (v, 1.0)).collect();
    vars.extend(backbone.trainable_vars().into_iter().map(|(_, v)| (v, 1.0)));
    let mut opt = AdamW::new(vars, 0.01)?;
    let y = Tensor::zeros(x.dim(0)?, candle_core::DType::U32, &device)?;
    let train = timed(reps, || {
        let pass = TrainingPass::run(backbone.as_ref(), &x, true)?;
        let logits = head.forward(&pass.features, None::<&mut rand_chacha::ChaCha8Rng>)?;
        let mut grads = cross_entropy(&logits, &y, None)?.backward()?;
        pass.backward(backbone.as_ref(), &mut grads)?;
        opt.step(&grads, 1e-4)?;
        Ok(())
    })?;

    say("warm-up epoch on cached features");
    let features = Tensor::randn(0f32, 1.0, (1049, backbone.parts().num_features), &device)?;
    let labels = Tensor::from_vec(
        (0..1049u32).map(|i| i % 2).collect::<Vec<_>>(),
        1049,
        &device,
    )?;
    let mut head_opt = AdamW::new(head.vars().into_iter().map(|v| (v, 1.0)).collect(), 0.0)?;
    let warmup = timed(reps, || {
        for start in (0..1049).step_by(batch) {
            let n = batch.min(1049 - start);
            let logits = head.forward(
                &features.narrow(0, start, n)?,
                None::<&mut rand_chacha::ChaCha8Rng>,
            )?;
            head_opt.step(
                &cross_entropy(&logits, &labels.narrow(0, start, n)?, None)?.backward()?,
                1e-3,
            )?;
        }
        Ok(())
    })?;
    drop((backbone, opt, head_opt));

    let (cold, cached) = if args.skip_end_to_end {
        (None, None)
    } else {
        say("launch to first validation (cold, then with the feature cache)");
        let cache = tempfile::tempdir()?;
        let run = || first_validation(weights, dataset, &source, cache.path(), &device, image_size);
        (Some(run()?), Some(run()?))
    };

    let n = x.dim(0)? as f64;
    let report = BenchReport {
        decode_img_per_s: sample.len() as f64 / decode.as_secs_f64(),
        forward_img_per_s: n / forward.as_secs_f64(),
        train_img_per_s: n / train.as_secs_f64(),
        warmup_epoch_ms: warmup.as_secs_f64() * 1000.0,
        first_validation_cold_s: cold,
        first_validation_cached_s: cached,
        peak_rss_mb: peak_rss_mb(),
        device: crate::train::engine::device_name(&device),
        threads: rayon::current_num_threads(),
        batch,
    };
    if let Some(path) = &args.record {
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        crate::backbones::record(
            path,
            &model_config.architecture,
            report.forward_img_per_s,
            report.train_img_per_s,
            format!(
                "tltui bench ({build} build) on {}, {} threads, batch {batch}, {side}x{side} input",
                report.device,
                report.threads,
                side = x.dim(2)?
            ),
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "decode + preprocess        {:>8.1} img/s",
            report.decode_img_per_s
        );
        println!(
            "backbone forward           {:>8.1} img/s (batch {batch})",
            report.forward_img_per_s
        );
        println!(
            "fine-tune train step       {:>8.1} img/s (batch {batch})",
            report.train_img_per_s
        );
        println!(
            "warm-up epoch (features)   {:>8.1} ms",
            report.warmup_epoch_ms
        );
        if let (Some(cold), Some(cached)) = (cold, cached) {
            println!("first validation, cold     {cold:>8.1} s");
            println!("first validation, cached   {cached:>8.1} s");
        }
        println!("peak RSS                   {:>8.0} MB", report.peak_rss_mb);
    }
    Ok(())
}

/// Seconds from starting the engine (warm-up requested at once) to its first validation result.
fn first_validation(
    weights: &std::path::Path,
    dataset: &std::path::Path,
    source: &crate::data::SourceOptions,
    cache: &std::path::Path,
    device: &candle_core::Device,
    image_size: u32,
) -> anyhow::Result<f64> {
    let mut config = crate::config::Config::default();
    config.data.image_size = image_size;
    config.data.val_fraction = 0.25;
    config.data.seed = 0;
    let setup = EngineSetup {
        dataset: dataset.to_path_buf(),
        source: source.clone(),
        config,
        weights: crate::train::WeightsSource::Local {
            weights: weights.to_path_buf(),
        },
        checkpoint_dir: cache.join("checkpoints"),
        feature_cache_dir: Some(cache.join("features")),
        device: device.clone(),
        replay: None,
    };
    let start = Instant::now();
    let mut seconds = None;
    one_warmup_epoch(setup, None, |e| {
        if matches!(e, Event::Validation { .. }) {
            seconds = Some(start.elapsed().as_secs_f64());
        }
    })?;
    seconds.ok_or_else(|| anyhow::anyhow!("the engine finished without a validation result"))
}

/// Starts an engine on `setup` with a one-epoch warm-up (after `first`, if given), shows `on_event` every event up to and
/// including the first validation, then stops the engine; an engine failure is the error.
fn one_warmup_epoch(
    setup: EngineSetup,
    first: Option<Command>,
    mut on_event: impl FnMut(&Event),
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::spawn(setup, tx);
    if let Some(command) = first {
        engine.commands().send(command)?;
    }
    engine.commands().send(Command::Warmup {
        epochs: crate::config::Epochs::Count(1),
    })?;
    let mut validated = false;
    for e in rx.iter() {
        match &e {
            Event::Validation { .. } if !validated => {
                on_event(&e);
                validated = true;
                let _ = engine.commands().send(Command::Stop);
            }
            Event::Finished(s) => {
                if let Some(err) = &s.error {
                    anyhow::bail!(err.clone());
                }
                break;
            }
            _ if !validated => on_event(&e),
            _ => {}
        }
    }
    engine.join();
    Ok(())
}
