//! Checkpoints: every weight (backbone in timm key names, head as `classifier.*`) in one
//! safetensors file whose header metadata holds what is needed to use it again. Written
//! atomically: temp file, fsync, rename, so a crash mid-write leaves the previous file intact.

use super::recipe::Recipe;
use super::Phase;
use crate::config::Config;
use crate::data::{Preprocess, PretrainedCfg};
use crate::model::{Head, ModelConfig, Params};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::atomic::{atomic_write, atomic_write_with};

/// Metadata key holding [`CheckpointMeta`] as JSON.
const META_KEY: &str = "tltui";
/// Key prefix of the head's tensors.
const HEAD_PREFIX: &str = "classifier.";
/// Format version of [`CheckpointMeta`].
pub const FORMAT: u32 = 1;

/// What a checkpoint remembers besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// One class an image, or a sigmoid per label (absent in single-label checkpoints of
    /// older versions).
    #[serde(default)]
    pub task: crate::data::Task,
    pub classes: Vec<String>,
    /// The backbone's Hub id (or local weights path) and the architecture built from it.
    pub backbone: String,
    pub architecture: String,
    pub pretrained_cfg: PretrainedCfg,
    pub preprocess: Preprocess,
    pub phase: Option<Phase>,
    pub epoch: usize,
    pub val_accuracy: Option<f32>,
    /// The split the model was validated on.
    pub class_root: PathBuf,
    pub val_fraction: f64,
    pub seed: u64,
    pub config: Config,
    /// What the run did and measured (empty in checkpoints written before it was recorded).
    #[serde(default)]
    pub record: RunRecord,
    /// How the weights were trained (absent in checkpoints of older versions).
    #[serde(default)]
    pub recipe: Option<Recipe>,
}

/// A run's history as the model card tells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Training and validation images per class, in the order of `classes`.
    pub train_counts: Vec<usize>,
    pub val_counts: Vec<usize>,
    /// The phases trained, in order.
    pub phases: Vec<PhaseRecord>,
    /// The last validation before the checkpoint was written.
    pub validation: Option<ValidationRecord>,
    /// What the data checks found (absent in checkpoints written before they existed).
    #[serde(default)]
    pub copies: CopiesRecord,
    /// Label issues found and corrected (absent in checkpoints written before the finder).
    #[serde(default)]
    pub labels: LabelsRecord,
}

/// What the label-issue finder flagged during the run, and the corrections its data had.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelsRecord {
    /// Images the finder flagged as likely mislabelled, when it ran.
    pub flagged: Option<usize>,
    /// Images the finder found to fit no class, when it ran.
    pub fit_no_class: Option<usize>,
    /// Images relabelled by corrections before training.
    pub relabelled: usize,
    /// Images left out by corrections.
    pub excluded: usize,
}

/// The data checks of the run: copies among the images and leakage across the split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopiesRecord {
    /// Groups of exact or near copies found among the images.
    pub duplicate_groups: usize,
    /// Validation images with an exact or near copy in training.
    pub leaked_val_images: usize,
    /// Whether the dataset brought its own validation folder.
    pub given_split: bool,
}

/// One phase as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    /// Epochs completed.
    pub epochs: usize,
    /// Peak learning rate of the schedule.
    pub lr: f64,
    /// Backbone layer groups that trained, of `groups`.
    pub unfrozen_groups: usize,
    pub groups: usize,
    /// Whether training images were augmented.
    pub augmented: bool,
}

/// A validation's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub phase: Option<Phase>,
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Accuracy on the validation images without a copy in training, when some have one.
    #[serde(default)]
    pub accuracy_clean: Option<f32>,
    /// Multi-label: the scores and each label's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<crate::train::multi_label::MultiLabelScores>,
}

impl CheckpointMeta {
    /// Multi-label: each label's threshold, as the last validation chose them (0.5 without
    /// one); `None` for a single-label model.
    pub fn thresholds(&self) -> Option<Vec<f32>> {
        (self.task == crate::data::Task::MultiLabel).then(|| {
            self.record
                .validation
                .as_ref()
                .and_then(|v| v.multi_label.as_ref())
                .map(|m| m.thresholds())
                .unwrap_or_else(|| vec![0.5; self.classes.len()])
        })
    }

    /// The metadata of the checkpoint at `path`, without building its tensors.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        Self::from_bytes(path, &read(path)?)
    }

    /// The metadata in the header of `bytes`, the checkpoint read from `path`.
    fn from_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a valid checkpoint: {e}", path.display()))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                anyhow::anyhow!("{} is not a tltui checkpoint (no metadata)", path.display())
            })?;
        let meta: Self = serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!("{}: unreadable checkpoint metadata: {e}", path.display())
        })?;
        if meta.format != FORMAT {
            anyhow::bail!(
                "{}: checkpoint format {} is not {FORMAT}",
                path.display(),
                meta.format
            );
        }
        Ok(meta)
    }
}

/// The bytes of the checkpoint at `path`.
fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read checkpoint {}: {e}", path.display()))
}

/// A checkpoint read back: all tensors (backbone and `classifier.*`) and the metadata.
pub struct Checkpoint {
    pub params: Params,
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    /// Reads `path`; anything malformed is an error naming the file.
    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        let bytes = read(path)?;
        let meta = CheckpointMeta::from_bytes(path, &bytes)?;
        let params = Params::from_bytes(&bytes, device)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self { params, meta })
    }

    /// The backbone's tensors: every tensor but the head's `classifier.*`.
    pub fn backbone_params(&self) -> Params {
        let mut params = self.params.clone();
        params.retain(|k| !k.starts_with(HEAD_PREFIX));
        params
    }

    /// The backbone's architecture and `pretrained_cfg`, as its `config.json` gave them.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            architecture: self.meta.architecture.clone(),
            num_features: None,
            pretrained_cfg: self.meta.pretrained_cfg.clone(),
        }
    }

    /// The head stored in the checkpoint.
    pub fn head(&self, dropout: f32) -> anyhow::Result<Head> {
        let k = self.meta.classes.len();
        let w = self.params.get(
            "classifier.weight",
            &[k, self.params.var("classifier.weight").dim(1)?],
        )?;
        let b = self.params.get("classifier.bias", &[k])?;
        Ok(Head::from_tensors(w.as_tensor(), b.as_tensor(), dropout)?)
    }
}

/// Serialises backbone `params`, `head` and `meta` and writes them atomically to `path`.
pub fn save(
    path: &Path,
    params: &Params,
    head: &Head,
    meta: &CheckpointMeta,
) -> anyhow::Result<()> {
    let bytes = serialize(params, head, meta)?;
    atomic_write(path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write checkpoint {}: {e}", path.display()))
}

/// The checkpoint file's bytes.
pub fn serialize(params: &Params, head: &Head, meta: &CheckpointMeta) -> anyhow::Result<Vec<u8>> {
    let mut tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.push(("classifier.weight".into(), head.weight.as_tensor().clone()));
    tensors.push(("classifier.bias".into(), head.bias.as_tensor().clone()));
    let info = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta)?)]);
    Ok(safetensors::serialize(tensors, Some(info))?)
}

/// The recipe stored in a checkpoint's metadata.
pub fn recipe_of(path: &Path) -> anyhow::Result<Recipe> {
    let ckpt = Checkpoint::load(path, &Device::Cpu)?;
    ckpt.meta.recipe.ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no recipe (it was written by an older tltui)",
            path.display()
        )
    })
}

/// `tltui recipe CKPT`: prints the recipe stored in a checkpoint, as TOML.
pub fn print_recipe(checkpoint: &Path) -> anyhow::Result<()> {
    print!("{}", recipe_of(checkpoint)?.to_toml()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn failed_write_leaves_previous_file_and_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("best.safetensors");
        atomic_write(&path, b"first").unwrap();
        let err = atomic_write_with(&path, b"second version", |f, b| {
            f.write_all(&b[..3])?;
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device",
            ))
        })
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn unwritable_places_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(atomic_write(&file.join("under-a-file.safetensors"), b"x").is_err());
    }
}
