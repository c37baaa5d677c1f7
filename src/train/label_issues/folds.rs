//! The folds of the label-issue finder and the heads trained on them: every image's class
//! probabilities from a head that never saw it.

use crate::model::Head;
use crate::train::metrics::{balanced_weights, cross_entropy};
use crate::train::optim::{cosine_with_ramp, AdamW};
use candle_core::{Device, Result, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How the out-of-fold heads are trained.
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// Number of folds: each image's probabilities come from the head that did not see it.
    pub folds: usize,
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub dropout: f32,
    pub batch_size: usize,
    pub seed: u64,
}

/// The fold of each image: stratified by label, every group (copies, crops of one source) kept
/// inside one fold. Groups are dealt class by class, largest first, each to the fold that holds
/// the fewest images of its class, so folds stay balanced whatever the group sizes.
pub fn assign_folds(labels: &[usize], groups: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(i);
    }
    let mut units: Vec<Vec<usize>> = members.into_values().collect();
    units.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    units.sort_by_key(|u| (labels[u[0]], std::cmp::Reverse(u.len())));
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut per_class = vec![vec![0usize; folds]; classes];
    let mut total = vec![0usize; folds];
    let mut fold_of = vec![0; labels.len()];
    for unit in units {
        let class = labels[unit[0]];
        let f = (0..folds)
            .min_by_key(|&f| (per_class[class][f], total[f]))
            .expect("at least one fold");
        per_class[class][f] += unit.len();
        total[f] += unit.len();
        for i in unit {
            fold_of[i] = f;
        }
    }
    fold_of
}

/// Softmax probabilities `[N][K]` for every row of `features`, each from a head trained on the
/// other folds (as the warm-up head is trained: AdamW, cosine schedule, balanced class weights
/// when the classes are imbalanced).
pub fn out_of_fold_probabilities(
    features: &Tensor,
    labels: &[usize],
    fold_of: &[usize],
    classes: usize,
    options: &FoldOptions,
) -> Result<Vec<Vec<f32>>> {
    let device = features.device();
    let width = features.dim(1)?;
    let mut probabilities = vec![Vec::new(); labels.len()];
    for fold in 0..options.folds {
        let (train, held): (Vec<usize>, Vec<usize>) =
            (0..labels.len()).partition(|&i| fold_of[i] != fold);
        if held.is_empty() || train.is_empty() {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed.wrapping_add(fold as u64));
        let head = Head::new(width, classes, options.dropout, &mut rng, device)?;
        let mut counts = vec![0; classes];
        for &i in &train {
            counts[labels[i]] += 1;
        }
        let weights = balanced_weights(&counts)
            .map(|w| Tensor::new(w.as_slice(), device))
            .transpose()?;
        let mut optimizer = AdamW::new(
            head.vars().into_iter().map(|v| (v, 1.0)).collect(),
            options.weight_decay,
        )?;
        let steps_per_epoch = train.len().div_ceil(options.batch_size);
        let total = steps_per_epoch * options.epochs;
        let mut order = train.clone();
        for epoch in 0..options.epochs {
            order.shuffle(&mut rng);
            for (step, batch) in order.chunks(options.batch_size).enumerate() {
                let x = rows(features, batch, device)?;
                let y: Vec<u32> = batch.iter().map(|&i| labels[i] as u32).collect();
                let y = Tensor::new(y.as_slice(), device)?;
                let logits = head.forward(&x, Some(&mut rng))?;
                let loss = cross_entropy(&logits, &y, weights.as_ref())?;
                let lr = cosine_with_ramp(options.lr, epoch * steps_per_epoch + step, total, 0);
                optimizer.step(&loss.backward()?, lr)?;
            }
        }
        let logits = head.forward(&rows(features, &held, device)?, None::<&mut ChaCha8Rng>)?;
        let p: Vec<Vec<f32>> = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2()?;
        for (i, row) in held.into_iter().zip(p) {
            probabilities[i] = row;
        }
    }
    Ok(probabilities)
}

fn rows(features: &Tensor, idx: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    features.index_select(&Tensor::new(idx.as_slice(), device)?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_and_keep_groups_whole() {
        let labels: Vec<usize> = (0..40).map(|i| usize::from(i >= 30)).collect();
        // Pairs of copies share a group.
        let groups: Vec<usize> = (0..40).map(|i| i / 2).collect();
        let fold_of = assign_folds(&labels, &groups, 5, 7);
        for pair in fold_of.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
        for f in 0..5 {
            let of = |c| {
                (0..40)
                    .filter(|&i| fold_of[i] == f && labels[i] == c)
                    .count()
            };
            assert_eq!(of(0), 6, "fold {f}");
            assert_eq!(of(1), 2, "fold {f}");
        }
        assert_eq!(fold_of, assign_folds(&labels, &groups, 5, 7));
    }

    #[test]
    fn heads_trained_out_of_fold_learn_separable_features() {
        let device = Device::Cpu;
        let n = 60;
        let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let data: Vec<f32> = labels
            .iter()
            .flat_map(|&y| {
                (0..6)
                    .map(|d| {
                        f32::from(u8::from(d / 2 == y)) * 3.0
                            + rand::Rng::random_range(&mut rng, -0.5..0.5)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let features = Tensor::from_vec(data, (n, 6), &device).unwrap();
        let groups: Vec<usize> = (0..n).collect();
        let options = FoldOptions {
            folds: 5,
            epochs: 30,
            lr: 0.05,
            weight_decay: 0.0,
            dropout: 0.0,
            batch_size: 8,
            seed: 0,
        };
        let fold_of = assign_folds(&labels, &groups, 5, 0);
        let p = out_of_fold_probabilities(&features, &labels, &fold_of, 3, &options).unwrap();
        let right = p
            .iter()
            .zip(&labels)
            .filter(|(row, &y)| super::super::confident::argmax(row) == y)
            .count();
        assert!(right >= 57, "{right} of {n}");
        assert!(p
            .iter()
            .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-4));
    }
}
