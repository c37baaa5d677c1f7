//! Stratified, seeded train/validation split, drawn exactly as Python's `random` module draws it.

use rand_mt::Mt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Number of validation images taken from a class of `n`: `round(n * fraction)` (halves to
/// even, as Python rounds), at least one when the fraction is positive and the class has two or
/// more images, and never all of them.
pub fn val_count(n: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || n < 2 {
        return 0;
    }
    ((n as f64 * fraction).round_ties_even() as usize).clamp(1, n - 1)
}

/// Python's `random.Random(seed)`: MT19937 keyed by the seed's 32-bit words, low word first.
fn python_random(seed: u64) -> Mt {
    let (low, high) = (seed as u32, (seed >> 32) as u32);
    if high == 0 {
        Mt::new_with_key([low])
    } else {
        Mt::new_with_key([low, high])
    }
}

/// Python's `random.shuffle`: Fisher-Yates from the end, each index drawn by `_randbelow`
/// (the top `bit_length` bits of a 32-bit draw, redrawn until in range).
fn python_shuffle<T>(items: &mut [T], rng: &mut Mt) {
    for i in (1..items.len()).rev() {
        let n = i as u32 + 1;
        let bits = u32::BITS - n.leading_zeros();
        let j = loop {
            let r = rng.next_u32() >> (32 - bits);
            if r < n {
                break r;
            }
        };
        items.swap(i, j as usize);
    }
}

/// Splits each class's files into (train, val). Each class's files are sorted by path, then
/// shuffled in class order by one generator seeded with `seed`, and the first
/// [`val_count`] go to validation — the split that Python's `random.seed(seed)` followed by
/// `random.shuffle(sorted(files))` per class gives, so a Python script can reproduce it
/// (`../shared/tools/peer_torch.py` does).
///
/// Files that `group_of` puts in one group go to one side: walking the shuffled files, a group
/// seen for the first time goes to validation whole if it fits in what is left of the class's
/// [`val_count`], to training otherwise, and its later files (in this class or another) follow
/// it. Without groups this is the plain split above, file for file.
pub fn stratified_split(
    classes: &[Vec<PathBuf>],
    fraction: f64,
    seed: u64,
    group_of: impl Fn(&Path) -> Option<usize>,
) -> (Vec<Vec<PathBuf>>, Vec<Vec<PathBuf>>) {
    let mut rng = python_random(seed);
    let mut to_val: HashMap<usize, bool> = HashMap::new();
    classes
        .iter()
        .map(|files| {
            let mut files = files.clone();
            files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
            python_shuffle(&mut files, &mut rng);
            let k = val_count(files.len(), fraction);
            let mut sizes: HashMap<usize, usize> = HashMap::new();
            for g in files.iter().filter_map(|f| group_of(f)) {
                *sizes.entry(g).or_default() += 1;
            }
            // Validation files of this class so far, counting whole groups when they are placed.
            let mut planned = 0;
            let mut placed: HashMap<usize, bool> = HashMap::new();
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for file in files {
                let group = group_of(&file);
                let side = match group {
                    None => planned < k,
                    Some(g) => match placed.get(&g) {
                        Some(&side) => side,
                        None => {
                            let side = *to_val.entry(g).or_insert(planned + sizes[&g] <= k);
                            placed.insert(g, side);
                            if side {
                                planned += sizes[&g];
                            }
                            side
                        }
                    },
                };
                if side {
                    if group.is_none() {
                        planned += 1;
                    }
                    val.push(file);
                } else {
                    train.push(file);
                }
            }
            (train, val)
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
        assert_eq!(val_count(10, 0.25), 2);
        assert_eq!(val_count(14, 0.25), 4);
        assert_eq!(val_count(699, 0.2), 140);
        assert_eq!(val_count(3, 0.1), 1);
        assert_eq!(val_count(1, 0.5), 0);
        assert_eq!(val_count(10, 0.0), 0);
    }

    #[test]
    fn shuffles_as_python_random_does() {
        // Python: random.seed(s); x = list(range(n)); random.shuffle(x) (then again for y).
        let shuffled = |rng: &mut Mt, n: usize| {
            let mut x: Vec<usize> = (0..n).collect();
            python_shuffle(&mut x, rng);
            x
        };
        let mut rng = python_random(0);
        assert_eq!(shuffled(&mut rng, 10), [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]);
        let mut rng = python_random(42);
        assert_eq!(shuffled(&mut rng, 7), [1, 3, 4, 2, 6, 0, 5]);
        assert_eq!(shuffled(&mut rng, 5), [4, 3, 2, 0, 1]);
        let mut rng = python_random((1 << 40) + 5);
        assert_eq!(shuffled(&mut rng, 6), [1, 0, 3, 2, 5, 4]);
    }

    #[test]
    fn stratified_and_disjoint() {
        let classes = vec![class("a", 100), class("b", 40)];
        let (train, val) = stratified_split(&classes, 0.25, 7, |_| None);
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
        let one = stratified_split(&classes, 0.2, 3, |_| None);
        assert_eq!(one, stratified_split(&reversed, 0.2, 3, |_| None));
        assert_ne!(one.1, stratified_split(&classes, 0.2, 4, |_| None).1);
    }

    #[test]
    fn groups_stay_on_one_side_and_move_only_what_they_must() {
        let classes = vec![class("a", 40), class("b", 40)];
        let plain = stratified_split(&classes, 0.25, 0, |_| None);
        // Pair a file that went to validation with one that went to training.
        let (v, t) = (plain.1[0][0].clone(), plain.0[0][0].clone());
        let grouped = stratified_split(&classes, 0.25, 0, |p: &Path| {
            (p == v.as_path() || p == t.as_path()).then_some(0)
        });
        let side =
            |split: &(Vec<Vec<PathBuf>>, Vec<Vec<PathBuf>>), p: &PathBuf| split.1[0].contains(p);
        assert_eq!(
            side(&grouped, &v),
            side(&grouped, &t),
            "the pair is on one side"
        );
        let moved: Vec<&PathBuf> = classes[0]
            .iter()
            .filter(|p| side(&plain, p) != side(&grouped, p))
            .collect();
        assert_eq!(
            moved.len(),
            2,
            "one file joins its twin, one makes room: {moved:?}"
        );
        assert_eq!(grouped.1[0].len(), plain.1[0].len());
        assert_eq!(grouped.1[1], plain.1[1], "the other class is untouched");
    }

    #[test]
    fn a_group_spanning_classes_follows_its_first_side() {
        let classes = vec![class("a", 20), class("b", 20)];
        let twin_a = PathBuf::from("a/3.jpg");
        let twin_b = PathBuf::from("b/7.jpg");
        let (train, val) = stratified_split(&classes, 0.3, 5, |p: &Path| {
            (p == twin_a.as_path() || p == twin_b.as_path()).then_some(9)
        });
        let in_val = |p: &PathBuf| val.iter().any(|v| v.contains(p));
        assert_eq!(in_val(&twin_a), in_val(&twin_b));
        assert_eq!(train.iter().chain(&val).map(Vec::len).sum::<usize>(), 40);
    }
}
