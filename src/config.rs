//! Configuration: the TOML schema, the built-in defaults, user files layered over them.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The defaults shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every hyper-parameter tltui knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub augment: AugmentConfig,
    pub train: TrainConfig,
    pub hub: HubConfig,
    pub checkpoint: CheckpointConfig,
}

/// Dataset split, decoding and batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub image_size: u32,
    pub val_fraction: f64,
    pub seed: u64,
    pub batch_size: usize,
    pub cache_memory_mb: u64,
    pub max_megapixels: f64,
    /// Absent from configurations saved before it existed: those take the default.
    #[serde(default)]
    pub duplicates: DuplicateMode,
}

impl DataConfig {
    /// `max_megapixels` in pixels.
    pub fn max_pixels(&self) -> u64 {
        (self.max_megapixels * 1e6) as u64
    }
}

/// What the split does with copies of one picture (`data.duplicates`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateMode {
    /// Derived and duplicate files form groups that stay on one side of the split.
    #[default]
    Group,
    /// Files are split one by one; copies across the split are measured and warned about.
    Warn,
    /// No fingerprints, no groups, no report.
    Off,
}

/// Training-time augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    pub warmup: bool,
    pub finetune: bool,
    pub horizontal_flip: bool,
    pub zoom_range: f32,
    pub rotation_degrees: f32,
    pub brightness_range: [f32; 2],
    pub random_resized_crop: bool,
    pub crop_scale: [f32; 2],
    pub crop_ratio: [f32; 2],
}

/// Whether the loss is weighted by class frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    Auto,
    Off,
}

/// The phase the dashboard starts without waiting for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoStart {
    None,
    Warmup,
    Finetune,
}

impl std::str::FromStr for DuplicateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "group" => Ok(Self::Group),
            "warn" => Ok(Self::Warn),
            "off" => Ok(Self::Off),
            _ => Err(format!("{s:?} is not one of group, warn, off")),
        }
    }
}

/// Optimisation of both phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub warmup_epochs: Epochs,
    /// Auto warm-up: epochs without a lower validation loss before it stops.
    pub warmup_patience: usize,
    /// Auto warm-up: the most epochs it runs.
    pub warmup_max_epochs: usize,
    pub finetune_epochs: usize,
    pub warmup_lr: f64,
    pub finetune_lr: f64,
    pub finetune_ramp_fraction: f64,
    pub layer_lr_decay: f64,
    pub finetune_groups: usize,
    pub weight_decay: f64,
    pub dropout: f32,
    pub train_batchnorm: bool,
    pub class_weights: ClassWeights,
    pub auto_start: AutoStart,
}

/// How many epochs a warm-up runs: a number, or `auto` (until validation loss stops improving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epochs {
    Auto,
    Count(usize),
}

impl std::fmt::Display for Epochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Epochs::Auto => f.write_str("auto"),
            Epochs::Count(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Epochs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Epochs::Auto),
            n => n
                .parse()
                .map(Epochs::Count)
                .map_err(|_| format!("{n:?} is neither a number of epochs nor \"auto\"")),
        }
    }
}

impl Serialize for Epochs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Epochs::Auto => s.serialize_str("auto"),
            Epochs::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Epochs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Epochs::Count(n)),
            Raw::Word(w) => w.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Where the backbone comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub backbone: String,
    pub endpoint: String,
    pub timeout_secs: u64,
    pub attempts: u32,
}

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub dir: String,
}

/// A configuration that could not be read or does not fit the schema.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("config: {0}")]
    Invalid(String),
}

/// The flags that layer a file and the dataset's settings over the defaults: the flags of every
/// command that reads a dataset.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML file layered over the defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Share of each class held out for validation (overrides data.val_fraction).
    #[arg(long, value_name = "FRACTION")]
    pub val_fraction: Option<f64>,
    /// Seed for the split, augmentation and initialisation (overrides data.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per training batch (overrides data.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Copies of one picture: group (keep them on one side of the split), warn, or off
    /// (overrides data.duplicates).
    #[arg(long, value_name = "MODE")]
    pub duplicates: Option<DuplicateMode>,
}

impl ConfigArgs {
    /// The configuration: defaults, then `--config`, then these flags, then `more` (another
    /// group of flags), checked.
    pub fn load(&self, more: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(v) = self.val_fraction {
            c.data.val_fraction = v;
        }
        if let Some(v) = self.duplicates {
            c.data.duplicates = v;
        }
        if let Some(v) = self.seed {
            c.data.seed = v;
        }
        if let Some(v) = self.batch_size {
            c.data.batch_size = v;
        }
        more(&mut c);
        c.validate()?;
        Ok(c)
    }
}

/// The flags that plan a training run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlanArgs {
    /// Directory for checkpoints (overrides checkpoint.dir).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Warm-up epochs, or `auto` (until validation loss stops improving); headless: run them;
    /// dashboard: epochs per `w`. Overrides train.warmup_epochs.
    #[arg(long, value_name = "N|auto")]
    pub warmup_epochs: Option<Epochs>,
    /// Fine-tune epochs (headless: run them after warm-up; dashboard: epochs per `f`).
    #[arg(long, value_name = "N")]
    pub finetune_epochs: Option<usize>,
    /// Dashboard: start this phase without waiting for a key (overrides train.auto_start).
    #[arg(long, value_name = "PHASE", value_parser = ["none", "warmup", "finetune"])]
    pub start: Option<String>,
}

impl PlanArgs {
    /// Applies these flags to `c`.
    pub fn apply(&self, c: &mut Config) {
        if let Some(n) = self.warmup_epochs {
            c.train.warmup_epochs = n;
        }
        if let Some(n) = self.finetune_epochs {
            c.train.finetune_epochs = n;
        }
        if let Some(dir) = &self.checkpoint_dir {
            c.checkpoint.dir = dir.display().to_string();
        }
        if let Some(start) = &self.start {
            c.train.auto_start = match start.as_str() {
                "warmup" => AutoStart::Warmup,
                "finetune" => AutoStart::Finetune,
                _ => AutoStart::None,
            };
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_layers(None).expect("the built-in config/default.toml is valid")
    }
}

impl Config {
    /// The defaults with the TOML file at `user` (if any) layered over them.
    pub fn load(user: Option<&Path>) -> Result<Self, ConfigError> {
        let layer = match user {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Some((path, text))
            }
        };
        Self::from_layers(layer.as_ref().map(|(p, t)| (*p, t.as_str())))
    }

    /// The defaults with `layer` (a file's path and text) merged over them.
    pub fn from_layers(layer: Option<(&Path, &str)>) -> Result<Self, ConfigError> {
        let parse = |path: &Path, text: &str| {
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_string(),
                })
        };
        let default_path = Path::new("config/default.toml");
        let mut merged = parse(default_path, DEFAULT_TOML)?;
        let path = match layer {
            Some((path, text)) => {
                merge(&mut merged, parse(path, text)?);
                path
            }
            None => default_path,
        };
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Key {
                    path: path.to_owned(),
                    key: e.path().to_string(),
                    message: e.inner().to_string(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        let d = &self.data;
        if !(0.0..1.0).contains(&d.val_fraction) {
            return fail("data.val_fraction must be in [0, 1)");
        }
        if d.batch_size == 0 {
            return fail("data.batch_size must be at least 1");
        }
        let a = &self.augment;
        if a.brightness_range[0] <= 0.0 || a.brightness_range[0] > a.brightness_range[1] {
            return fail("augment.brightness_range must be [low, high] with 0 < low <= high");
        }
        if !(0.0..1.0).contains(&a.zoom_range) {
            return fail("augment.zoom_range must be in [0, 1)");
        }
        if a.crop_scale[0] <= 0.0 || a.crop_scale[0] > a.crop_scale[1] || a.crop_scale[1] > 1.0 {
            return fail("augment.crop_scale must be [low, high] with 0 < low <= high <= 1");
        }
        if a.crop_ratio[0] <= 0.0 || a.crop_ratio[0] > a.crop_ratio[1] {
            return fail("augment.crop_ratio must be [low, high] with 0 < low <= high");
        }
        let t = &self.train;
        if t.warmup_lr <= 0.0 || t.finetune_lr <= 0.0 {
            return fail("train.warmup_lr and train.finetune_lr must be positive");
        }
        if t.warmup_patience == 0 || t.warmup_max_epochs == 0 {
            return fail("train.warmup_patience and train.warmup_max_epochs must be at least 1");
        }
        if !(0.0..1.0).contains(&t.dropout) {
            return fail("train.dropout must be in [0, 1)");
        }
        if self.hub.attempts == 0 || self.hub.timeout_secs == 0 {
            return fail("hub.attempts and hub.timeout_secs must be at least 1");
        }
        Ok(())
    }
}

/// Merges `over` into `base`, recursing into tables so a layer may set single keys.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layered(text: &str) -> Result<Config, ConfigError> {
        Config::from_layers(Some((Path::new("user.toml"), text)))
    }

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::default();
        assert_eq!(c.data.val_fraction, 0.2);
        assert_eq!(c.hub.backbone, "timm/tf_efficientnet_lite0.in1k");
    }

    #[test]
    fn a_layer_overrides_single_keys() {
        let c = layered("[data]\nbatch_size = 8\n").unwrap();
        assert_eq!(c.data.batch_size, 8);
        assert_eq!(c.data.val_fraction, 0.2);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = layered("[data]\nbatch_sise = 8\n").unwrap_err().to_string();
        assert!(e.contains("user.toml"), "{e}");
        assert!(e.contains("batch_sise"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let e = layered("[train]\nwarmup_lr = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("user.toml") && e.contains("train.warmup_lr"),
            "{e}"
        );
    }

    #[test]
    fn warmup_epochs_are_a_number_or_auto() {
        assert_eq!(Config::default().train.warmup_epochs, Epochs::Auto);
        let c = layered("[train]\nwarmup_epochs = 7\n").unwrap();
        assert_eq!(c.train.warmup_epochs, Epochs::Count(7));
        let e = layered("[train]\nwarmup_epochs = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.warmup_epochs") && e.contains("auto"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(layered("[data]\nval_fraction = 1.5\n").is_err());
        assert!(layered("[data]\nbatch_size = 0\n").is_err());
    }
}
