//! Confident learning over out-of-fold probabilities (Northcutt, Jiang and Chuang, "Confident
//! Learning", JAIR 2021), and images that fit no class.

use candle_core::{Result, Tensor};
use serde::Serialize;

/// An image whose given label confident learning doubts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspect {
    /// Row of the image.
    pub index: usize,
    pub given: usize,
    pub suggested: usize,
    pub given_probability: f32,
    pub suggested_probability: f32,
}

/// Label issues by confident learning, as cleanlab's `find_label_issues` defines them
/// (`filter_by="prune_by_noise_rate"`): per-class thresholds at the mean self-confidence of the
/// class; the confident joint of given and likely true labels, calibrated to the class counts;
/// from each given class, the calibrated count of images thought to be of another class is
/// pruned, largest margin first; an image the probabilities still put in its given class is
/// kept. Ranked most suspicious first (lowest probability of the given label).
pub fn confident_learning(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
) -> Vec<Suspect> {
    let n = labels.len();
    if n == 0 || classes < 2 {
        return Vec::new();
    }
    let mut count = vec![0usize; classes];
    let mut threshold = vec![0f64; classes];
    for (p, &y) in probabilities.iter().zip(labels) {
        count[y] += 1;
        threshold[y] += p[y] as f64;
    }
    for (t, &c) in threshold.iter_mut().zip(&count) {
        *t = if c > 0 { *t / c as f64 } else { 1.0 };
    }
    // joint[given][true]
    let mut joint = vec![vec![0f64; classes]; classes];
    for (p, &y) in probabilities.iter().zip(labels) {
        let confident: Vec<usize> = (0..classes)
            .filter(|&j| p[j] as f64 >= threshold[j] - 1e-6)
            .collect();
        let guess = match confident.len() {
            0 => continue,
            1 => confident[0],
            _ => argmax(p),
        };
        joint[y][guess] += 1.0;
    }
    for (j, row) in joint.iter_mut().enumerate() {
        row[j] = row[j].max(1.0);
    }
    let calibrated = calibrate(&joint, &count);
    let mut flagged = vec![false; n];
    for given in 0..classes {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == given).collect();
        let keep_at_least = 1usize.min(members.len());
        let mut budget = members.len().saturating_sub(keep_at_least);
        for truth in (0..classes).filter(|&t| t != given) {
            let prune = (calibrated[given][truth].round() as usize).min(budget);
            if prune == 0 {
                continue;
            }
            let mut by_margin: Vec<(f32, usize)> = members
                .iter()
                .filter(|&&i| !flagged[i])
                .map(|&i| {
                    let p = &probabilities[i];
                    (p[truth] - p[given], i)
                })
                .collect();
            by_margin.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, i) in by_margin.iter().take(prune) {
                flagged[i] = true;
            }
            budget -= prune;
        }
    }
    let mut suspects: Vec<Suspect> = (0..n)
        .filter(|&i| flagged[i])
        .filter_map(|i| {
            let p = &probabilities[i];
            let suggested = argmax(p);
            (suggested != labels[i]).then(|| Suspect {
                index: i,
                given: labels[i],
                suggested,
                given_probability: p[labels[i]],
                suggested_probability: p[suggested],
            })
        })
        .collect();
    suspects.sort_by(|a, b| {
        a.given_probability
            .total_cmp(&b.given_probability)
            .then(a.index.cmp(&b.index))
    });
    suspects
}

/// The confident joint rescaled so that each given class's row sums to that class's count.
fn calibrate(joint: &[Vec<f64>], count: &[usize]) -> Vec<Vec<f64>> {
    joint
        .iter()
        .zip(count)
        .map(|(row, &c)| {
            let sum: f64 = row.iter().sum();
            row.iter()
                .map(|&v| if sum > 0.0 { v / sum * c as f64 } else { 0.0 })
                .collect()
        })
        .collect()
}

pub(super) fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(j, _)| j)
}

/// An image that fits no class: far from the mean features of every class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlier {
    /// Row of the image.
    pub index: usize,
    /// Cosine distance to the nearest class mean.
    pub distance: f32,
    /// The class whose mean is nearest.
    pub nearest: usize,
    /// The distance beyond which an image counts as fitting no class.
    pub limit: f32,
}

/// Images whose features lie far from every class's mean: cosine distance to the nearest class
/// mean beyond the median plus `spread` robust standard deviations (1.4826 × the median absolute
/// deviation) of that distance over all images. Linear in the number of images. Farthest first.
pub fn outliers(
    features: &Tensor,
    labels: &[usize],
    classes: usize,
    spread: f32,
) -> Result<Vec<Outlier>> {
    let x: Vec<Vec<f32>> = features.to_vec2()?;
    let unit = |v: &[f32]| -> Vec<f32> {
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter().map(|a| a / norm).collect()
    };
    let x: Vec<Vec<f32>> = x.iter().map(|v| unit(v)).collect();
    let width = x.first().map_or(0, Vec::len);
    let mut means = vec![vec![0f32; width]; classes];
    for (v, &y) in x.iter().zip(labels) {
        for (m, a) in means[y].iter_mut().zip(v) {
            *m += a;
        }
    }
    let means: Vec<Vec<f32>> = means.iter().map(|m| unit(m)).collect();
    let nearest: Vec<(f32, usize)> = x
        .iter()
        .map(|v| {
            (0..classes)
                .map(|c| {
                    let dot: f32 = v.iter().zip(&means[c]).map(|(a, b)| a * b).sum();
                    (1.0 - dot, c)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((0.0, 0))
        })
        .collect();
    let mut distances: Vec<f32> = nearest.iter().map(|d| d.0).collect();
    let median = median_of(&mut distances);
    let mut deviations: Vec<f32> = nearest.iter().map(|d| (d.0 - median).abs()).collect();
    let limit = median + spread * 1.4826 * median_of(&mut deviations);
    let mut found: Vec<Outlier> = nearest
        .iter()
        .enumerate()
        .filter(|(_, d)| d.0 > limit)
        .map(|(index, &(distance, nearest))| Outlier {
            index,
            distance,
            nearest,
            limit,
        })
        .collect();
    found.sort_by(|a, b| b.distance.total_cmp(&a.distance));
    Ok(found)
}

fn median_of(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Confident probabilities for two classes (0.8 to 0.95 for the true class), with rows
    /// `wrong` given the other label; the model is sure of those (0.97), as a head trained on
    /// other folds is of a picture plainly of the other class.
    fn flipped(n: usize, wrong: &[usize]) -> (Vec<Vec<f32>>, Vec<usize>) {
        let truth: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let probabilities = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let sure = if wrong.contains(&i) {
                    0.97
                } else {
                    0.8 + 0.15 * (i as f32 / n as f32)
                };
                if t == 0 {
                    vec![sure, 1.0 - sure]
                } else {
                    vec![1.0 - sure, sure]
                }
            })
            .collect();
        let labels = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| if wrong.contains(&i) { 1 - t } else { t })
            .collect();
        (probabilities, labels)
    }

    #[test]
    fn confident_learning_finds_the_flipped_labels_and_nothing_else() {
        let (p, y) = flipped(100, &[3, 10, 41, 88]);
        let found = confident_learning(&p, &y, 2);
        let mut rows: Vec<usize> = found.iter().map(|s| s.index).collect();
        rows.sort();
        assert_eq!(rows, vec![3, 10, 41, 88]);
        for s in &found {
            assert_eq!(s.suggested, 1 - s.given);
            assert!(s.suggested_probability > s.given_probability);
        }
        let ranked: Vec<f32> = found.iter().map(|s| s.given_probability).collect();
        assert!(ranked.windows(2).all(|w| w[0] <= w[1]), "{ranked:?}");
        let (p, y) = flipped(100, &[]);
        assert!(confident_learning(&p, &y, 2).is_empty());
    }

    #[test]
    fn an_uncertain_image_in_its_own_class_is_not_flagged() {
        let (mut p, y) = flipped(40, &[5]);
        // Row 6 is of class 0 and leans only slightly towards it.
        p[6] = vec![0.52, 0.48];
        let found = confident_learning(&p, &y, 2);
        assert_eq!(found.iter().map(|s| s.index).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn an_image_far_from_every_class_is_an_outlier() {
        let device = Device::Cpu;
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let y = i % 2;
            let wobble = (i as f32 * 0.37).sin() * 0.1;
            let mut v = vec![0.1 + wobble, 0.1 - wobble, 0.0];
            v[y] += 1.0;
            rows.extend(v);
            labels.push(y);
        }
        rows.extend([0.0, 0.0, 1.0]);
        labels.push(0);
        let features = Tensor::from_vec(rows, (41, 3), &device).unwrap();
        let found = outliers(&features, &labels, 2, 6.0).unwrap();
        assert_eq!(found.iter().map(|o| o.index).collect::<Vec<_>>(), vec![40]);
        assert!(found[0].distance > found[0].limit);
    }
}
