//! Multi-label training and scores: binary cross-entropy over one sigmoid per label, positive
//! weights for rare labels, and the validation metrics (average precision per label, a best-F1
//! threshold per label, micro and macro F1, exact match).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Mean binary cross-entropy of `logits` `[N, K]` against multi-hot `targets` `[N, K]` (f32),
/// each positive term weighted by its label's `pos_weights` `[K]` when given (PyTorch's
/// `BCEWithLogitsLoss(pos_weight=…)`). Computed as `softplus(-x)·y·w + softplus(x)·(1-y)`,
/// with `softplus(x) = max(x, 0) + ln(1 + e^-|x|)`, which no logit overflows.
pub fn binary_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    pos_weights: Option<&Tensor>,
) -> Result<Tensor> {
    let softplus =
        |x: &Tensor| -> Result<Tensor> { x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()? };
    let positive = softplus(&logits.neg()?)?.mul(targets)?;
    let positive = match pos_weights {
        Some(w) => positive.broadcast_mul(w)?,
        None => positive,
    };
    let negative = softplus(logits)?.mul(&(targets.neg()? + 1.0)?)?;
    (positive + negative)?.mean_all()
}

/// Positive weights `negatives / positives` per label from training counts (`positives` of
/// `images`), capped at `cap`, when some label is on fewer than a third of the images it
/// is absent from; else `None`.
pub fn positive_weights(positives: &[usize], images: usize, cap: f32) -> Option<Vec<f32>> {
    let ratio = |p: usize| (images.saturating_sub(p)) as f32 / p.max(1) as f32;
    positives.iter().any(|&p| ratio(p) > 3.0).then(|| {
        positives
            .iter()
            .map(|&p| ratio(p).clamp(1.0, cap))
            .collect()
    })
}

/// One label's validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub name: String,
    /// Average precision (`None` when no validation image carries the label).
    pub ap: Option<f32>,
    pub f1: f32,
    pub precision: f32,
    pub recall: f32,
    /// The probability from which the label is predicted: the one with the best F1 on
    /// validation (0.5 when no validation image carries the label).
    pub threshold: f32,
    /// Validation images that carry the label.
    pub support: usize,
}

/// A multi-label validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelScores {
    /// Macro mean average precision over the labels that some validation image carries.
    pub map: f32,
    pub f1_micro: f32,
    /// Mean F1 over the labels that some validation image carries.
    pub f1_macro: f32,
    /// Share of images whose predicted labels are exactly their labels.
    pub exact_match: f32,
    pub per_label: Vec<LabelScore>,
}

impl MultiLabelScores {
    /// The thresholds of every label, in label order.
    pub fn thresholds(&self) -> Vec<f32> {
        self.per_label.iter().map(|l| l.threshold).collect()
    }
}

/// Scores of `probabilities` (`[image][label]`) against each image's `labels`, at the given
/// `thresholds` (a trained model's), or with each label's threshold chosen for the best F1.
pub fn scores(
    probabilities: &[Vec<f32>],
    labels: &[Vec<usize>],
    names: &[String],
    thresholds: Option<&[f32]>,
) -> MultiLabelScores {
    let k = names.len();
    let truth = |i: usize, l: usize| labels[i].contains(&l);
    let per_label: Vec<LabelScore> = (0..k)
        .map(|l| {
            let column: Vec<(f32, bool)> = (0..probabilities.len())
                .map(|i| (probabilities[i][l], truth(i, l)))
                .collect();
            label_score(&names[l], &column, thresholds.map(|t| t[l]))
        })
        .collect();
    let predicted = |i: usize, l: usize| probabilities[i][l] >= per_label[l].threshold;
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut exact = 0;
    for i in 0..probabilities.len() {
        let mut all_right = true;
        for l in 0..k {
            match (predicted(i, l), truth(i, l)) {
                (true, true) => tp += 1,
                (true, false) => {
                    fp += 1;
                    all_right = false;
                }
                (false, true) => {
                    fn_ += 1;
                    all_right = false;
                }
                (false, false) => {}
            }
        }
        exact += usize::from(all_right);
    }
    let present: Vec<&LabelScore> = per_label.iter().filter(|s| s.support > 0).collect();
    let mean = |f: &dyn Fn(&LabelScore) -> f32| {
        present.iter().map(|s| f(s)).sum::<f32>() / present.len().max(1) as f32
    };
    MultiLabelScores {
        map: mean(&|s| s.ap.unwrap_or(0.0)),
        f1_micro: f1(tp, fp, fn_),
        f1_macro: mean(&|s| s.f1),
        exact_match: exact as f32 / probabilities.len().max(1) as f32,
        per_label,
    }
}

/// `2tp / (2tp + fp + fn)`, 0 when all are 0.
fn f1(tp: usize, fp: usize, fn_: usize) -> f32 {
    let d = 2 * tp + fp + fn_;
    if d == 0 {
        0.0
    } else {
        (2 * tp) as f32 / d as f32
    }
}

/// One label's scores from each validation image's (probability, carries the label), at
/// `fixed` or at the best threshold.
///
/// Average precision as scikit-learn's `average_precision_score`: the sum over the distinct
/// probabilities, highest first, of the precision there times the recall it adds. The threshold
/// is the distinct probability whose "at least this" prediction has the best F1 (the higher on
/// a tie).
fn label_score(name: &str, column: &[(f32, bool)], fixed: Option<f32>) -> LabelScore {
    let support = column.iter().filter(|c| c.1).count();
    let mut sorted: Vec<(f32, bool)> = column.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0f64;
    let mut last_recall = 0.0f64;
    let mut best = (f1(0, 0, support), 1.0f32 + f32::EPSILON, 0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let p = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == p {
            if sorted[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        if support > 0 {
            let recall = tp as f64 / support as f64;
            ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
            last_recall = recall;
        }
        let score = f1(tp, fp, support - tp);
        if score > best.0 {
            best = (score, p, tp, fp);
        }
    }
    // With no validation image carrying the label there is nothing to tune.
    let (f1_best, threshold, tp, fp) = match fixed {
        Some(t) => {
            let tp = column.iter().filter(|c| c.0 >= t && c.1).count();
            let fp = column.iter().filter(|c| c.0 >= t && !c.1).count();
            (f1(tp, fp, support - tp), t, tp, fp)
        }
        None if support == 0 => (0.0, 0.5, 0, 0),
        None => best,
    };
    let precision = tp as f32 / (tp + fp).max(1) as f32;
    let recall = tp as f32 / support.max(1) as f32;
    LabelScore {
        name: name.to_string(),
        ap: (support > 0).then_some(ap as f32),
        f1: f1_best,
        precision,
        recall,
        threshold: threshold.min(1.0),
        support,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333…
        let s = label_score(
            "a",
            &[(0.1, false), (0.4, false), (0.35, true), (0.8, true)],
            None,
        );
        assert!((s.ap.unwrap() - 0.833_333).abs() < 1e-5, "{s:?}");
        // Best F1: predict from 0.35 up (tp 2, fp 1): 0.8.
        assert!((s.f1 - 0.8).abs() < 1e-6 && s.threshold == 0.35, "{s:?}");
        assert_eq!(s.support, 2);
    }

    #[test]
    fn micro_macro_and_exact_match() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        let probabilities = vec![
            vec![0.9, 0.1],
            vec![0.8, 0.7],
            vec![0.2, 0.9],
            vec![0.1, 0.2],
        ];
        let labels = vec![vec![0], vec![0, 1], vec![1], vec![]];
        let s = scores(&probabilities, &labels, &names, None);
        assert_eq!(
            (s.map, s.f1_micro, s.f1_macro, s.exact_match),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(s.thresholds(), vec![0.8, 0.7]);
        let wrong = vec![vec![1], vec![0, 1], vec![1], vec![]];
        let s = scores(&probabilities, &wrong, &names, None);
        let fixed = scores(&probabilities, &labels, &names, Some(&[0.95, 0.95]));
        assert_eq!(fixed.thresholds(), vec![0.95, 0.95]);
        assert_eq!(
            fixed.exact_match, 0.25,
            "only the image with no label: {fixed:?}"
        );
        assert!(s.exact_match < 1.0 && s.map < 1.0, "{s:?}");
    }

    #[test]
    fn binary_cross_entropy_matches_its_definition_and_weights_positives() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[2.0f32, -1.0], [0.5, 30.0]], &d).unwrap();
        let y = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0]], &d).unwrap();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want =
            -((sig(2.0).ln() + (1.0 - sig(-1.0)).ln() + (1.0 - sig(0.5)).ln() + sig(30.0).ln())
                / 4.0);
        let got = binary_cross_entropy(&x, &y, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        let w = Tensor::new(&[3.0f32, 1.0], &d).unwrap();
        let weighted = binary_cross_entropy(&x, &y, Some(&w))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = want + 2.0 * -(sig(2.0).ln()) / 4.0;
        assert!(
            (weighted as f64 - want).abs() < 1e-6,
            "{weighted} vs {want}"
        );
    }

    #[test]
    fn rare_labels_get_positive_weights() {
        assert_eq!(positive_weights(&[50, 40], 100, 10.0), None);
        assert_eq!(positive_weights(&[50, 5], 100, 10.0), Some(vec![1.0, 10.0]));
    }
}
