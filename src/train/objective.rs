//! What the head is trained for: one class an image (softmax and cross-entropy, classes
//! weighted when imbalanced) or any number of labels (a sigmoid per label and binary
//! cross-entropy, rare labels' positives weighted).

use super::metrics::{cross_entropy, predictions};
use super::multi_label::binary_cross_entropy;
use crate::data::{Sample, Task};
use candle_core::{DType, Device, Result, Tensor};

/// The loss the head is trained on, with its weights.
pub enum Objective {
    SingleLabel { class_weights: Option<Tensor> },
    MultiLabel { pos_weights: Option<Tensor> },
}

impl Objective {
    /// The task this objective trains for.
    pub fn task(&self) -> Task {
        match self {
            Self::SingleLabel { .. } => Task::SingleLabel,
            Self::MultiLabel { .. } => Task::MultiLabel,
        }
    }

    /// The targets of `samples` over `classes` outputs: `[N]` u32 classes, or `[N, classes]`
    /// f32 multi-hot rows.
    pub fn targets(&self, samples: &[&Sample], classes: usize, device: &Device) -> Result<Tensor> {
        match self {
            Self::SingleLabel { .. } => {
                let labels: Vec<u32> = samples.iter().map(|s| s.class() as u32).collect();
                Tensor::new(labels.as_slice(), device)
            }
            Self::MultiLabel { .. } => multi_hot(samples, classes, device),
        }
    }

    /// The training loss of `logits` against `targets` (from [`Objective::targets`]).
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Self::SingleLabel { class_weights } => {
                cross_entropy(logits, targets, class_weights.as_ref())
            }
            Self::MultiLabel { pos_weights } => {
                binary_cross_entropy(logits, targets, pos_weights.as_ref())
            }
        }
    }

    /// The unweighted loss, as validation reports it.
    pub fn plain_loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Self::SingleLabel { .. } => cross_entropy(logits, targets, None),
            Self::MultiLabel { .. } => binary_cross_entropy(logits, targets, None),
        }
    }

    /// How many rows of `logits` are right for `samples`: the class, or (multi-label) exactly
    /// the labels with a probability of at least 0.5.
    pub fn correct(&self, logits: &Tensor, samples: &[&Sample]) -> Result<usize> {
        Ok(match self {
            Self::SingleLabel { .. } => predictions(logits)?
                .iter()
                .zip(samples)
                .filter(|(p, s)| **p as usize == s.class())
                .count(),
            Self::MultiLabel { .. } => {
                let positive = logits.ge(0f32)?.to_dtype(DType::U8)?.to_vec2::<u8>()?;
                positive
                    .iter()
                    .zip(samples)
                    .filter(|(row, s)| {
                        row.iter()
                            .enumerate()
                            .all(|(l, &p)| (p == 1) == s.labels.contains(&l))
                    })
                    .count()
            }
        })
    }
}

/// `[N, classes]` f32 rows with a 1 at each label of each sample.
pub fn multi_hot(samples: &[&Sample], classes: usize, device: &Device) -> Result<Tensor> {
    let mut rows = vec![0f32; samples.len() * classes];
    for (i, s) in samples.iter().enumerate() {
        for &l in &s.labels {
            rows[i * classes + l] = 1.0;
        }
    }
    Tensor::from_vec(rows, (samples.len(), classes), device)
}
