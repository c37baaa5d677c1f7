//! The flags that choose the backbone and the device, and the engine's setup made from them: the
//! one place a run's backbone is decided, `--resume` included.

use super::checkpoint::CheckpointMeta;
use super::engine::{EngineSetup, WeightsSource};
use crate::config::Config;
use crate::data::SourceOptions;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Which backbone, at which input size, on which device: the flags of every command that runs a
/// backbone over images.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackboneArgs {
    /// Pretrained backbone on the Hugging Face Hub, ORG/NAME[@REVISION] (overrides hub.backbone).
    #[arg(long, value_name = "ID")]
    pub backbone: Option<String>,
    /// Local model.safetensors (with config.json beside it) instead of downloading.
    #[arg(long, value_name = "PATH", conflicts_with = "backbone")]
    pub weights: Option<PathBuf>,
    /// Input side in pixels instead of the backbone's own (overrides data.image_size; the resize
    /// keeps crop_pct; ViTs resample their position embeddings).
    #[arg(long, value_name = "N")]
    pub image_size: Option<u32>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl BackboneArgs {
    /// Applies `--backbone` and `--image-size` to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(b) = &self.backbone {
            config.hub.backbone = b.clone();
        }
        if let Some(n) = self.image_size {
            config.data.image_size = n;
        }
    }

    /// Where the backbone comes from: `--weights`, else `hub.backbone` of `config` (which
    /// `--backbone` set).
    pub fn source(&self, config: &Config) -> anyhow::Result<WeightsSource> {
        Ok(match &self.weights {
            Some(path) => WeightsSource::Local {
                weights: path.clone(),
            },
            None => WeightsSource::Hub {
                repo: config.hub.backbone.parse().map_err(anyhow::Error::msg)?,
                options: crate::hub::HubOptions::from_config(&config.hub),
            },
        })
    }

    /// The local weights file (`config.json` beside it), fetched from the Hub first when the
    /// backbone is a Hub repository.
    pub fn local_weights(&self, config: &Config) -> anyhow::Result<PathBuf> {
        match self.source(config)? {
            WeightsSource::Local { weights } => Ok(weights),
            _ => crate::hub::fetch_backbone_blocking(&config.hub.backbone),
        }
    }

    /// The backbone of a run that resumes `checkpoint`: the checkpoint's own. A `--backbone` or
    /// `--weights` that names another one is an error naming both.
    pub fn resumed(&self, checkpoint: &Path) -> anyhow::Result<WeightsSource> {
        let meta = CheckpointMeta::read(checkpoint)?;
        let given = match (&self.backbone, &self.weights) {
            (Some(id), _) => {
                let same = strip_revision(id) == strip_revision(&meta.backbone);
                (!same).then(|| format!("--backbone {id}"))
            }
            (None, Some(weights)) => {
                let config = weights
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("config.json");
                let arch = crate::model::ModelConfig::from_file(&config)?.architecture;
                (arch != meta.architecture)
                    .then(|| format!("--weights {} (a {arch})", weights.display()))
            }
            (None, None) => None,
        };
        if let Some(given) = given {
            anyhow::bail!(
                "{} was trained from {} ({}), but {given} names another backbone; leave the flag \
                 out to resume with the checkpoint's own",
                checkpoint.display(),
                meta.backbone,
                meta.architecture
            );
        }
        Ok(WeightsSource::Checkpoint {
            path: checkpoint.to_path_buf(),
        })
    }
}

/// A Hub id without its `@REVISION`.
fn strip_revision(id: &str) -> &str {
    id.split_once('@').map_or(id, |(repo, _)| repo)
}

/// Where the model runs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceArgs {
    /// `cpu` or `cuda[:N]`. Default: the first CUDA GPU when tltui was built with the `cuda`
    /// feature and one is present, else the CPU.
    #[arg(long = "device", value_name = "DEVICE")]
    pub name: Option<String>,
}

impl DeviceArgs {
    /// The device named, or the default.
    pub fn pick(&self) -> anyhow::Result<Device> {
        pick_device(self.name.as_deref())
    }
}

/// The device `spec` names (`cpu`, `cuda`, `cuda:N`), or the default: the first CUDA GPU when
/// built with the `cuda` feature and one is present, else the CPU.
fn pick_device(spec: Option<&str>) -> anyhow::Result<Device> {
    let ordinal = match spec {
        None if cfg!(feature = "cuda") => {
            return Ok(Device::new_cuda(0).unwrap_or(Device::Cpu));
        }
        None | Some("cpu") => return Ok(Device::Cpu),
        Some("cuda") => 0,
        Some(s) => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unknown device {s:?}: use cpu, cuda or cuda:N"))?,
    };
    if !cfg!(feature = "cuda") {
        anyhow::bail!(
            "this tltui was built without CUDA; build it with scripts/cuda-build.sh (cargo build --features cuda)"
        );
    }
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: {e}"))
}

impl EngineSetup {
    /// The setup of a run on `dataset` read as `source`, under `config` (with `model`'s flags
    /// applied): the backbone of `model`, or of `resume`'s checkpoint; checkpoints in
    /// `checkpoint.dir`, else in the user's cache directory.
    pub fn new(
        dataset: &Path,
        source: SourceOptions,
        config: Config,
        model: &BackboneArgs,
        resume: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let weights = match resume {
            Some(ckpt) => model.resumed(ckpt)?,
            None => model.source(&config)?,
        };
        let cache = crate::cache_dir();
        let checkpoint_dir = if config.checkpoint.dir.is_empty() {
            let name = crate::data::dataset_name(dataset);
            cache
                .ok_or_else(|| {
                    anyhow::anyhow!("no cache directory on this system; pass --checkpoint-dir")
                })?
                .join("checkpoints")
                .join(name)
        } else {
            PathBuf::from(&config.checkpoint.dir)
        };
        Ok(Self {
            dataset: dataset.to_path_buf(),
            source,
            config,
            weights,
            checkpoint_dir,
            feature_cache_dir: super::features::default_cache_dir(),
            device: model.device.pick()?,
            replay: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::pick_device;

    #[test]
    fn devices_by_name() {
        assert!(pick_device(Some("cpu")).unwrap().is_cpu());
        let err = pick_device(Some("gpu")).unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
        if !cfg!(feature = "cuda") {
            assert!(pick_device(None).unwrap().is_cpu());
            let err = pick_device(Some("cuda:1")).unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
