//! `tltui embed`: the pooled backbone features of images, after the backbone's own eval
//! transform — for search, clustering and de-duplication, and a black-box check of an
//! architecture against timm.

use crate::cli::EmbedArgs;
use crate::data::decode::decode_rgb;
use crate::data::{Preprocess, Skipped};
use crate::infer::collect_images;
use crate::model::{build_backbone, Backbone, ModelConfig, Params};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Images decoded and run through the backbone at a time.
const BATCH: usize = 32;

/// One image's features.
#[derive(Debug, Serialize)]
pub struct Embedding {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    pub features: Vec<f32>,
}

/// A backbone and its eval transform.
pub struct Embedder {
    backbone: Box<dyn Backbone>,
    prep: Preprocess,
    device: Device,
}

impl Embedder {
    /// Loads `weights` (with `config.json` beside it) onto `device`, its input resized to
    /// `image_size` pixels (0: the backbone's own size).
    pub fn load(weights: &Path, image_size: u32, device: Device) -> anyhow::Result<Self> {
        let config_path = weights
            .parent()
            .unwrap_or(Path::new("."))
            .join("config.json");
        let config = ModelConfig::from_file(&config_path)?;
        let (image_size, _) = config.image_size(image_size, &device);
        let (config, prep) = config.at_image_size(image_size)?;
        let backbone = build_backbone(&config, Params::load(weights, &device)?)?;
        Ok(Self {
            backbone,
            prep,
            device,
        })
    }

    /// Features of each readable image of `paths`, in order; the others come back as skipped.
    pub fn embed(&self, paths: &[PathBuf]) -> anyhow::Result<(Vec<Embedding>, Vec<Skipped>)> {
        let prep = &self.prep;
        let decoded: Vec<(PathBuf, Result<Vec<f32>, String>)> = paths
            .par_iter()
            .map(|p| {
                let input = decode_rgb(p, u64::MAX).map(|img| prep.eval(&img));
                (p.clone(), input)
            })
            .collect();
        let (mut good, mut skipped) = (Vec::new(), Vec::new());
        for (path, r) in decoded {
            match r {
                Ok(input) => good.push((path, input)),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        if good.is_empty() {
            return Ok((Vec::new(), skipped));
        }
        let s = self.prep.size as usize;
        let (paths, inputs): (Vec<PathBuf>, Vec<Vec<f32>>) = good.into_iter().unzip();
        let x = Tensor::from_vec(inputs.concat(), (paths.len(), 3, s, s), &self.device)?;
        let features = self.backbone.forward(&x, false)?.to_vec2::<f32>()?;
        let embeddings = paths
            .into_iter()
            .zip(features)
            .map(|(path, features)| Embedding { path, features })
            .collect();
        Ok((embeddings, skipped))
    }
}

/// `tltui embed`: prints each image's features as it goes (a JSON object per line with
/// `--json`, a summary line otherwise); unreadable files are reported on stderr.
pub fn run(args: &EmbedArgs) -> anyhow::Result<()> {
    let mut config = crate::config::Config::default();
    args.model.apply(&mut config);
    let weights = args.model.local_weights(&config)?;
    let device = args.model.device.pick()?;
    let embedder = Embedder::load(&weights, config.data.image_size, device)?;
    let paths = collect_images(&args.images);
    if paths.is_empty() {
        anyhow::bail!("no image files among the paths given");
    }
    let (mut embedded, mut skipped) = (0, 0);
    let mut out = std::io::stdout().lock();
    for chunk in paths.chunks(BATCH) {
        let (embeddings, bad) = embedder.embed(chunk)?;
        for e in &embeddings {
            if args.json {
                serde_json::to_writer(&mut out, e)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", summary(e))?;
            }
        }
        for s in &bad {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
        embedded += embeddings.len();
        skipped += bad.len();
    }
    if embedded == 0 {
        anyhow::bail!("none of the {skipped} images could be read");
    }
    if !args.json {
        writeln!(
            out,
            "{embedded} images embedded, {skipped} skipped, {} features each, input {} px",
            embedder.backbone.parts().num_features,
            embedder.prep.size
        )?;
    }
    Ok(())
}

/// A line for a person: the path, the L2 norm and the first features.
fn summary(e: &Embedding) -> String {
    let norm = e.features.iter().map(|v| v * v).sum::<f32>().sqrt();
    let head: Vec<String> = e
        .features
        .iter()
        .take(4)
        .map(|v| format!("{v:.4}"))
        .collect();
    format!(
        "{}: |f| {norm:.4}  [{}, …]",
        e.path.display(),
        head.join(", ")
    )
}
