//! Label issues: out-of-fold class probabilities from heads trained on the cached features
//! ([`folds`]), confident learning over them and images that fit no class ([`confident`]), and the
//! report both front ends show.

pub mod confident;
pub mod folds;

use crate::config::{Config, Epochs};
use crate::data::discovery::relative_to;
use crate::data::{Dataset, Sample};
use crate::train::FeatureStatus;
use candle_core::Tensor;
use confident::{confident_learning, outliers};
use folds::{assign_folds, out_of_fold_probabilities, FoldOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Folds when none are asked for.
pub const DEFAULT_FOLDS: usize = 5;

/// Why the finder does not run on a multi-label dataset.
pub const MULTI_LABEL_FINDER: &str = "the label-issue finder works on datasets with one class an image; this one is read as multi-label";
/// Heads trained per fold when the warm-up's epochs are `auto` (its plateau needs a validation
/// split that the folds do not have).
const AUTO_FOLD_EPOCHS: usize = 10;
/// An image whose features are farther from every class mean than the median distance plus this
/// many robust standard deviations fits no class.
const OUTLIER_SPREAD: f32 = 6.0;

/// What the finder found, as `label_issues` in `inspect --json` and the `label_issues` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelIssues {
    /// `confident learning (prune by noise rate) on out-of-fold probabilities`.
    pub method: String,
    pub folds: usize,
    pub images: usize,
    /// Share of images whose out-of-fold prediction is their given label.
    pub out_of_fold_accuracy: f32,
    /// Most suspicious first.
    pub flagged: Vec<Flagged>,
    /// Images that fit no class well, farthest first.
    pub outliers: Vec<Misfit>,
    /// Where the features came from.
    pub features: FeatureStatus,
    /// The finder's own time, the features aside.
    pub seconds: f64,
}

/// An image whose label looks wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flagged {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    pub given: String,
    pub suggested: String,
    pub given_probability: f32,
    pub suggested_probability: f32,
}

/// An image that fits no class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Misfit {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    pub given: String,
    pub reason: String,
}

impl LabelIssues {
    /// The findings for a person, paths relative to `dataset`.
    pub fn write_text(&self, dataset: &Path, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let source = match &self.features {
            FeatureStatus::Loaded { .. } => "from the feature cache".to_string(),
            FeatureStatus::Computed { seconds, .. } => format!("computed in {seconds:.1} s"),
        };
        writeln!(
            out,
            "\nlabel issues: {} of {} images flagged, {} fit no class ({}-fold heads, out-of-fold \
         accuracy {:.4}; features {source}; {:.2} s)",
            self.flagged.len(),
            self.images,
            self.outliers.len(),
            self.folds,
            self.out_of_fold_accuracy,
            self.seconds
        )?;
        for f in &self.flagged {
            writeln!(
                out,
                "  {}: given {} ({:.2}), looks like {} ({:.2})",
                relative_to(dataset, &f.path).display(),
                f.given,
                f.given_probability,
                f.suggested,
                f.suggested_probability
            )?;
        }
        if !self.outliers.is_empty() {
            writeln!(out, "fit no class:")?;
            for m in &self.outliers {
                writeln!(
                    out,
                    "  {} (given {}): {}",
                    relative_to(dataset, &m.path).display(),
                    m.given,
                    m.reason
                )?;
            }
        }
        Ok(())
    }
}

/// The finder on the features `all` of `samples` (a row each, in that order) of `ds`: `folds`
/// heads trained as `config`'s warm-up trains its head, confident learning, and misfits.
pub fn find(
    ds: &Dataset,
    samples: &[&Sample],
    all: &Tensor,
    features: FeatureStatus,
    config: &Config,
    folds: usize,
) -> anyhow::Result<LabelIssues> {
    let started = std::time::Instant::now();
    let labels: Vec<usize> = samples.iter().map(|s| s.class()).collect();
    let groups: Vec<usize> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| ds.groups.get(&s.path).copied().unwrap_or(usize::MAX - i))
        .collect();
    let classes = ds.class_names.len();
    let t = &config.train;
    let options = FoldOptions {
        folds,
        epochs: match t.warmup_epochs {
            Epochs::Count(n) if n > 0 => n,
            _ => AUTO_FOLD_EPOCHS,
        },
        lr: t.warmup_lr,
        weight_decay: t.weight_decay,
        dropout: t.dropout,
        batch_size: config.data.batch_size,
        seed: config.data.seed,
    };
    let fold_of = assign_folds(&labels, &groups, folds, config.data.seed);
    let probabilities = out_of_fold_probabilities(all, &labels, &fold_of, classes, &options)?;
    let right = probabilities
        .iter()
        .zip(&labels)
        .filter(|(p, &y)| p.iter().enumerate().all(|(j, &v)| j == y || v <= p[y]))
        .count();
    let name = |c: usize| ds.class_names[c].clone();
    let flagged = confident_learning(&probabilities, &labels, classes)
        .into_iter()
        .map(|s| Flagged {
            path: samples[s.index].path.clone(),
            given: name(s.given),
            suggested: name(s.suggested),
            given_probability: s.given_probability,
            suggested_probability: s.suggested_probability,
        })
        .collect();
    let misfits = outliers(all, &labels, classes, OUTLIER_SPREAD)?
        .into_iter()
        .map(|o| Misfit {
            path: samples[o.index].path.clone(),
            given: name(labels[o.index]),
            reason: format!(
                "far from every class: its features lie {:.3} from the nearest class mean \
                 ({}), where most images lie within {:.3}; best out-of-fold probability {:.2}",
                o.distance,
                name(o.nearest),
                o.limit,
                probabilities[o.index].iter().copied().fold(0.0, f32::max)
            ),
        })
        .collect();
    Ok(LabelIssues {
        method: "confident learning (prune by noise rate) on out-of-fold probabilities".into(),
        folds,
        images: samples.len(),
        out_of_fold_accuracy: right as f32 / samples.len().max(1) as f32,
        flagged,
        outliers: misfits,
        features,
        seconds: started.elapsed().as_secs_f64(),
    })
}
