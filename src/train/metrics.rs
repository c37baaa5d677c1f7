//! Loss, class weights and validation metrics.

use candle_core::{Result, Tensor, D};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A debiased exponential moving average (fastai's smoothed loss, the trend of Keras's progress
/// bar): `beta` is the weight of the past.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ema {
    beta: f64,
    average: f64,
    count: i32,
}

impl Ema {
    /// An empty average whose past weighs `beta` (0 < beta < 1).
    pub fn new(beta: f64) -> Self {
        Self {
            beta,
            average: 0.0,
            count: 0,
        }
    }

    /// Adds a value; returns the average so far, debiased for the zero it started from.
    pub fn push(&mut self, value: f64) -> f64 {
        self.average = self.beta * self.average + (1.0 - self.beta) * value;
        self.count += 1;
        self.average / (1.0 - self.beta.powi(self.count))
    }
}

/// Mean cross-entropy of `logits` `[N, K]` against `labels` `[N]` (u32), each sample weighted
/// by its class's weight when `class_weights` is given (PyTorch's weighted mean).
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: Option<&Tensor>,
) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
    match class_weights {
        None => picked.mean_all()?.neg(),
        Some(w) => {
            let w = w.index_select(labels, 0)?;
            (picked.mul(&w)?.sum_all()? / w.sum_all()?)?.neg()
        }
    }
}

/// Inverse-frequency weights `n / (k * n_c)` when the largest class is over 1.5 times the
/// smallest, else `None`.
pub fn balanced_weights(counts: &[usize]) -> Option<Vec<f32>> {
    let max = *counts.iter().max()?;
    let min = *counts.iter().min()?;
    if min == 0 || max as f64 <= 1.5 * min as f64 {
        return None;
    }
    let n: usize = counts.iter().sum();
    let k = counts.len();
    Some(counts.iter().map(|&c| n as f32 / (k * c) as f32).collect())
}

/// Predicted class of each row of `logits`.
pub fn predictions(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1()
}

/// Confusion counts: `matrix[true][predicted]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    pub matrix: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Self {
            matrix: vec![vec![0; classes]; classes],
        }
    }

    pub fn add(&mut self, truth: &[u32], predicted: &[u32]) {
        for (&t, &p) in truth.iter().zip(predicted) {
            self.matrix[t as usize][p as usize] += 1;
        }
    }

    pub fn total(&self) -> usize {
        self.matrix.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f32 {
        let correct: usize = (0..self.matrix.len()).map(|i| self.matrix[i][i]).sum();
        correct as f32 / self.total().max(1) as f32
    }

    /// Recall of each class (accuracy on its samples).
    pub fn per_class_accuracy(&self) -> Vec<f32> {
        self.matrix
            .iter()
            .enumerate()
            .map(|(i, row)| row[i] as f32 / row.iter().sum::<usize>().max(1) as f32)
            .collect()
    }

    /// Precision and recall of each class (0 where nothing was predicted or present).
    pub fn precision_recall(&self) -> Vec<(f32, f32)> {
        let m = &self.matrix;
        (0..m.len())
            .map(|c| {
                let predicted: usize = m.iter().map(|row| row[c]).sum();
                let present: usize = m[c].iter().sum();
                let tp = m[c][c] as f32;
                (tp / predicted.max(1) as f32, tp / present.max(1) as f32)
            })
            .collect()
    }
}

/// One image the model got wrong, or nearly: its loss and what it predicted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLoss {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    /// True class index (multi-label: the indices of the image's labels, maybe none).
    pub truth: Vec<usize>,
    /// Predicted class index (multi-label: the labels at or above their thresholds).
    pub predicted: Vec<usize>,
    /// Probability of the predicted class (multi-label: of the label it gets most wrong).
    pub probability: f32,
    /// Cross-entropy (multi-label: the image's mean binary cross-entropy).
    pub loss: f32,
}

/// The `k` multi-label samples with the highest loss, worst first, from each sample's path,
/// label probabilities and labels, predicted at `thresholds`.
pub fn multi_label_top_losses<'a>(
    samples: impl IntoIterator<Item = (&'a Path, &'a [f32], &'a [usize])>,
    thresholds: &[f32],
    k: usize,
) -> Vec<TopLoss> {
    let mut ranked: Vec<TopLoss> = samples
        .into_iter()
        .map(|(path, probs, labels)| {
            let truth = |l: usize| labels.contains(&l);
            let error = |l: usize| (f32::from(u8::from(truth(l))) - probs[l]).abs();
            let worst = (0..probs.len())
                .max_by(|&a, &b| error(a).total_cmp(&error(b)))
                .unwrap_or(0);
            let loss = (0..probs.len())
                .map(|l| -(1.0 - error(l)).max(f32::MIN_POSITIVE).ln())
                .sum::<f32>()
                / probs.len().max(1) as f32;
            TopLoss {
                path: path.to_path_buf(),
                truth: labels.to_vec(),
                predicted: (0..probs.len())
                    .filter(|&l| probs[l] >= thresholds[l])
                    .collect(),
                probability: probs[worst],
                loss,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    ranked.truncate(k);
    ranked
}

/// The `k` samples with the highest loss, worst first, from each sample's path, class
/// probabilities and true class.
pub fn top_losses<'a>(
    samples: impl IntoIterator<Item = (&'a Path, &'a [f32], usize)>,
    k: usize,
) -> Vec<TopLoss> {
    let mut ranked: Vec<TopLoss> = samples
        .into_iter()
        .map(|(path, probs, truth)| {
            let predicted = (0..probs.len())
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap_or(0);
            TopLoss {
                path: path.to_path_buf(),
                truth: vec![truth],
                predicted: vec![predicted],
                probability: probs[predicted],
                loss: -probs[truth].max(f32::MIN_POSITIVE).ln(),
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0]], &dev)?;
        let labels = Tensor::new(&[0u32, 0], &dev)?;
        let l0 = -(2f32.exp() / (2f32.exp() + 1.0)).ln();
        let l1 = -(1.0 / (1.0 + 1f32.exp())).ln();
        let plain = cross_entropy(&logits, &labels, None)?.to_scalar::<f32>()?;
        assert!((plain - (l0 + l1) / 2.0).abs() < 1e-5);
        let labels = Tensor::new(&[0u32, 1], &dev)?;
        let w = Tensor::new(&[1.0f32, 3.0], &dev)?;
        let l1 = -(1f32.exp() / (1.0 + 1f32.exp())).ln();
        let weighted = cross_entropy(&logits, &labels, Some(&w))?.to_scalar::<f32>()?;
        assert!((weighted - (l0 + 3.0 * l1) / 4.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn weights_only_when_imbalanced() {
        assert_eq!(balanced_weights(&[100, 90]), None);
        let w = balanced_weights(&[100, 20]).unwrap();
        assert!((w[0] - 0.6).abs() < 1e-6 && (w[1] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn confusion_metrics() {
        let mut c = Confusion::new(2);
        c.add(&[0, 0, 1, 1], &[0, 1, 1, 1]);
        assert_eq!(c.matrix, vec![vec![1, 1], vec![0, 2]]);
        assert_eq!(c.accuracy(), 0.75);
        assert_eq!(c.per_class_accuracy(), vec![0.5, 1.0]);
        // class 0: 1 of 1 predicted right, 1 of 2 found; class 1: 2 of 3, 2 of 2.
        assert_eq!(c.precision_recall(), vec![(1.0, 0.5), (2.0 / 3.0, 1.0)]);
    }

    #[test]
    fn top_losses_rank_worst_first() {
        let paths = [Path::new("a"), Path::new("b"), Path::new("c")];
        let probs = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]];
        let samples = (0..3).map(|i| (paths[i], probs[i].as_slice(), [0, 0, 1][i]));
        let top = top_losses(samples, 2);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].path.as_path(), top[0].predicted.as_slice()),
            (Path::new("b"), &[1][..])
        );
        assert!((top[0].loss + 0.2f32.ln()).abs() < 1e-6);
        assert!((top[0].probability - 0.8).abs() < 1e-6);
        assert_eq!(
            (top[1].path.as_path(), top[1].truth.as_slice()),
            (Path::new("c"), &[1][..])
        );
    }

    #[test]
    fn multi_label_top_losses_name_the_wrong_tags() {
        let paths = [Path::new("a"), Path::new("b")];
        let probs = [[0.9f32, 0.8], [0.9, 0.1]];
        let labels: [&[usize]; 2] = [&[0], &[0]];
        let samples = (0..2).map(|i| (paths[i], probs[i].as_slice(), labels[i]));
        let top = multi_label_top_losses(samples, &[0.5, 0.5], 2);
        assert_eq!(top[0].path, Path::new("a"), "a's extra tag costs the most");
        assert_eq!(
            (top[0].truth.clone(), top[0].predicted.clone()),
            (vec![0], vec![0, 1])
        );
        assert!((top[0].probability - 0.8).abs() < 1e-6);
        let want = -(0.9f32.ln() + 0.2f32.ln()) / 2.0;
        assert!(
            (top[0].loss - want).abs() < 1e-6,
            "{} vs {want}",
            top[0].loss
        );
        assert_eq!(top[1].predicted, vec![0]);
    }
}
