//! Stratified, seeded train/validation split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Number of validation images taken from a class of `n`: `round(n * fraction)` (halves away from
/// zero), at least one when the fraction is positive and the class has two or more images, and
/// never all of them.
pub fn val_count(n: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || n < 2 {
        return 0;
    }
    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
}

/// Splits each class's files into (train, val). Files are sorted first, then shuffled with a
/// ChaCha8 generator seeded from `seed` and the class index, so the same seed and the same files
/// give the same split on any machine.
pub fn stratified_split(
    classes: &[Vec<PathBuf>],
    fraction: f64,
    seed: u64,
) -> (Vec<Vec<PathBuf>>, Vec<Vec<PathBuf>>) {
    classes
        .iter()
        .enumerate()
        .map(|(i, files)| {
            let mut files = files.clone();
            files.sort();
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            files.shuffle(&mut rng);
            let k = val_count(files.len(), fraction);
            let train = files.split_off(k);
            (train, files)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(prefix: &str, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("{prefix}/{i}.jpg")))
            .collect()
    }

    #[test]
    fn rounding_matches_the_documented_rule() {
        assert_eq!(val_count(700, 0.25), 175);
        assert_eq!(val_count(699, 0.25), 175);
        assert_eq!(val_count(699, 0.2), 140);
        assert_eq!(val_count(3, 0.1), 1);
        assert_eq!(val_count(1, 0.5), 0);
        assert_eq!(val_count(10, 0.0), 0);
    }

    #[test]
    fn stratified_and_disjoint() {
        let classes = vec![class("a", 100), class("b", 40)];
        let (train, val) = stratified_split(&classes, 0.25, 7);
        assert_eq!((train[0].len(), val[0].len()), (75, 25));
        assert_eq!((train[1].len(), val[1].len()), (30, 10));
        for c in 0..2 {
            let mut all: Vec<_> = train[c].iter().chain(&val[c]).cloned().collect();
            all.sort();
            let mut expected = classes[c].clone();
            expected.sort();
            assert_eq!(all, expected);
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_independent_of_input_order() {
        let classes = vec![class("a", 50), class("b", 50)];
        let mut reversed = classes.clone();
        reversed[0].reverse();
        let one = stratified_split(&classes, 0.2, 3);
        assert_eq!(one, stratified_split(&reversed, 0.2, 3));
        assert_ne!(one.1, stratified_split(&classes, 0.2, 4).1);
    }
}
