//! Stratified, seeded train/validation splits: per class for single-label data, drawn exactly as
//! Python's `random` module draws it; by iterative stratification for multi-label data.

use rand_mt::Mt;
use std::collections::{BTreeMap, HashMap};
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

/// One image, or a group of images that go to one side together, in a multi-label split.
struct Unit {
    members: Vec<usize>,
    /// How many of the members each label tags.
    labels: BTreeMap<usize, isize>,
}

/// What each side of a multi-label split still wants.
struct Wanted {
    /// Per label: images still wanted in `[train, val]`.
    labels: Vec<[isize; 2]>,
    /// Images still wanted in `[train, val]`.
    images: [isize; 2],
    /// Per label: images not yet placed.
    left: Vec<isize>,
}

impl Wanted {
    /// Counts `unit` against `side` (0 train, 1 validation).
    fn place(&mut self, unit: &Unit, side: usize) {
        for (&l, &n) in &unit.labels {
            self.labels[l][side] -= n;
            self.left[l] -= n;
        }
        self.images[side] -= unit.members.len() as isize;
    }

    /// The side that wants more images (training on a tie).
    fn roomier(&self) -> usize {
        usize::from(self.images[1] > self.images[0])
    }
}

/// Multi-label split by iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011, as
/// scikit-multilearn does it): returns, for each of `items` (a path and its labels, indices
/// below `labels`), whether it goes to validation.
///
/// Each label wants [`val_count`] of its images in validation (so a label of two or more
/// images is on both sides) and the rest in training. The images are sorted by path and
/// shuffled with `seed`; then, while any remain, the label with the fewest images left is taken,
/// and each of its images goes to the side that still wants that label most (ties: the side
/// that wants more images), which counts it against every label the image carries. Images with
/// no label fill the side that wants more images. Files `group_of` puts in one group move as
/// one. Last, a label that two or more images carry but one side lacks gets an image moved
/// there, where that leaves no other label missing from the side it leaves.
pub fn iterative_split(
    items: &[(&Path, &[usize])],
    labels: usize,
    fraction: f64,
    seed: u64,
    group_of: impl Fn(&Path) -> Option<usize>,
) -> Vec<bool> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].0.as_os_str().cmp(items[b].0.as_os_str()));
    python_shuffle(&mut order, &mut python_random(seed));
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_of_group: HashMap<usize, usize> = HashMap::new();
    for &i in &order {
        let at = match group_of(items[i].0) {
            Some(g) => *unit_of_group.entry(g).or_insert_with(|| {
                units.push(Unit {
                    members: Vec::new(),
                    labels: BTreeMap::new(),
                });
                units.len() - 1
            }),
            None => {
                units.push(Unit {
                    members: Vec::new(),
                    labels: BTreeMap::new(),
                });
                units.len() - 1
            }
        };
        units[at].members.push(i);
        for &l in items[i].1 {
            *units[at].labels.entry(l).or_default() += 1;
        }
    }
    let mut totals = vec![0usize; labels];
    for (_, ls) in items {
        for &l in *ls {
            totals[l] += 1;
        }
    }
    let val_images = val_count(items.len(), fraction) as isize;
    let mut want = Wanted {
        labels: totals
            .iter()
            .map(|&n| {
                let v = val_count(n, fraction) as isize;
                [n as isize - v, v]
            })
            .collect(),
        images: [items.len() as isize - val_images, val_images],
        left: totals.iter().map(|&n| n as isize).collect(),
    };
    let mut side_of: Vec<Option<usize>> = vec![None; units.len()];
    while let Some(label) = (0..labels)
        .filter(|&l| want.left[l] > 0)
        .min_by_key(|&l| (want.left[l], l))
    {
        for (u, unit) in units.iter().enumerate() {
            if side_of[u].is_some() || !unit.labels.contains_key(&label) {
                continue;
            }
            let [t, v] = want.labels[label];
            let side = if v != t {
                usize::from(v > t)
            } else {
                want.roomier()
            };
            want.place(unit, side);
            side_of[u] = Some(side);
        }
    }
    for (u, unit) in units.iter().enumerate() {
        if side_of[u].is_none() {
            let side = want.roomier();
            want.place(unit, side);
            side_of[u] = Some(side);
        }
    }
    let mut side_of: Vec<usize> = side_of.into_iter().map(|s| s.expect("placed")).collect();
    // Images of each label on each side.
    let mut held = vec![[0isize; 2]; labels];
    for (u, unit) in units.iter().enumerate() {
        for (&l, &n) in &unit.labels {
            held[l][side_of[u]] += n;
        }
    }
    for l in (0..labels).filter(|&l| totals[l] >= 2) {
        for side in 0..2 {
            if held[l][side] > 0 {
                continue;
            }
            let movable = (0..units.len())
                .filter(|&u| side_of[u] != side && units[u].labels.contains_key(&l))
                .filter(|&u| units[u].labels.iter().all(|(&k, &n)| held[k][1 - side] > n))
                .min_by_key(|&u| units[u].members.len());
            if let Some(u) = movable {
                side_of[u] = side;
                for (&k, &n) in &units[u].labels {
                    held[k][1 - side] -= n;
                    held[k][side] += n;
                }
            }
        }
    }
    let mut to_val = vec![false; items.len()];
    for (u, unit) in units.iter().enumerate() {
        for &i in &unit.members {
            to_val[i] = side_of[u] == 1;
        }
    }
    to_val
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` images with labels drawn from `labels` (label `l` on about one image in `l + 2`),
    /// every tenth with none.
    fn tagged(n: usize, labels: usize) -> Vec<(PathBuf, Vec<usize>)> {
        (0..n)
            .map(|i| {
                let tags = if i % 10 == 9 {
                    Vec::new()
                } else {
                    (0..labels).filter(|l| (i + l) % (l + 2) == 0).collect()
                };
                (PathBuf::from(format!("img/{i:04}.jpg")), tags)
            })
            .collect()
    }

    fn split_of(items: &[(PathBuf, Vec<usize>)], labels: usize, seed: u64) -> Vec<bool> {
        let refs: Vec<(&Path, &[usize])> = items
            .iter()
            .map(|(p, l)| (p.as_path(), l.as_slice()))
            .collect();
        iterative_split(&refs, labels, 0.2, seed, |_| None)
    }

    #[test]
    fn each_label_is_split_near_the_fraction_and_on_both_sides() {
        let mut items = tagged(500, 6);
        // A label on two images only, and one on three.
        items[3].1.push(6);
        items[4].1.push(6);
        for i in [5, 6, 7] {
            items[i].1.push(7);
        }
        for (_, l) in &mut items {
            l.sort();
        }
        let to_val = split_of(&items, 8, 0);
        for l in 0..8 {
            let with: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].1.contains(&l))
                .collect();
            let val = with.iter().filter(|&&i| to_val[i]).count();
            assert!(
                val > 0 && val < with.len(),
                "label {l}: {val} of {}",
                with.len()
            );
            if with.len() >= 50 {
                let share = val as f64 / with.len() as f64;
                assert!((share - 0.2).abs() < 0.03, "label {l}: share {share}");
            }
        }
        let val = to_val.iter().filter(|&&v| v).count();
        assert!(
            (val as f64 / 500.0 - 0.2).abs() < 0.02,
            "{val} of 500 in validation"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_split_whatever_the_order() {
        let items = tagged(200, 4);
        let mut reversed = items.clone();
        reversed.reverse();
        let one = split_of(&items, 4, 3);
        let mut two = split_of(&reversed, 4, 3);
        two.reverse();
        assert_eq!(one, two);
        assert_ne!(one, split_of(&items, 4, 4));
    }

    #[test]
    fn a_group_goes_to_one_side() {
        let items = tagged(100, 3);
        let refs: Vec<(&Path, &[usize])> = items
            .iter()
            .map(|(p, l)| (p.as_path(), l.as_slice()))
            .collect();
        let pair = [items[0].0.clone(), items[1].0.clone()];
        let to_val = iterative_split(&refs, 3, 0.3, 1, |p: &Path| {
            pair.iter().any(|q| q == p).then_some(0)
        });
        assert_eq!(to_val[0], to_val[1]);
    }

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
