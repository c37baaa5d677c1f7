//! Multi-label label files: a label column of tag lists, or one 0/1 column per label.

use super::resolve::Resolver;
use super::table::Table;
use super::{classes_of, resolve_row, short_name, LabelledFiles};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Tag delimiters tried in a label column, the first of equals winning.
const TAG_DELIMITERS: [char; 4] = [',', ';', '|', ' '];

/// The tags of one label field split by `delimiter` (the whole field when `None`), trimmed,
/// without empty ones.
pub(super) fn split_tags(field: &str, delimiter: Option<char>) -> Vec<String> {
    let parts: Vec<&str> = match delimiter {
        Some(d) => field.split(d).collect(),
        None => vec![field],
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Whether a label column's `values` are tag lists, and split by what: `Some(delimiter)` when
/// they are (`Some(None)`: forced by `force` with no delimiter in any value), `None` for one
/// class a value.
///
/// The delimiter is the one of [`TAG_DELIMITERS`] that the most distinct values hold. The values
/// are tag lists when most values of two or more tags are made only of tags that recur in other
/// values, and either some tag also stands alone as a value or there are fewer than half as many
/// tags as distinct values. So `cat`, `dog`, `cat dog` are tags, and so are Planet's
/// `clear primary`, `haze primary water`…; breed names such as `golden retriever` or a grid of
/// classes such as `red car`, `blue car`, `red truck`, `blue truck` stay classes.
pub(super) fn tag_delimiter(values: &[&str], force: bool) -> Option<Option<char>> {
    let distinct: BTreeSet<&str> = values.iter().copied().collect();
    let delimiter = TAG_DELIMITERS
        .iter()
        .map(|&d| (d, distinct.iter().filter(|v| v.contains(d)).count()))
        .filter(|&(_, n)| n > 0)
        .fold(None, |best: Option<(char, usize)>, (d, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((d, n)),
        })
        .map(|(d, _)| d);
    let Some(d) = delimiter else {
        return force.then_some(None);
    };
    if force {
        return Some(Some(d));
    }
    let sets: Vec<Vec<String>> = distinct.iter().map(|v| split_tags(v, Some(d))).collect();
    let mut seen_in: HashMap<&str, usize> = HashMap::new();
    for set in &sets {
        for t in set.iter().collect::<BTreeSet<_>>() {
            *seen_in.entry(t.as_str()).or_default() += 1;
        }
    }
    let lists: Vec<&Vec<String>> = sets.iter().filter(|s| s.len() >= 2).collect();
    let recurring = lists
        .iter()
        .filter(|s| s.iter().all(|t| seen_in[t.as_str()] >= 2))
        .count();
    let alone = sets
        .iter()
        .any(|s| s.len() == 1 && lists.iter().any(|l| l.contains(&s[0])));
    let combinatorial = 2 * seen_in.len() < distinct.len();
    (2 * recurring > lists.len() && (alone || combinatorial)).then_some(Some(d))
}

/// Two or more columns besides `path_col`, named by a header, whose every value is 0 or 1
/// (`0.0`, `true`…): one column per label, unless every row has exactly one 1 (a single-label
/// file written one-hot). Their indices, in column order.
pub(super) fn one_hot(table: &Table, path_col: usize) -> Option<Vec<usize>> {
    table.header.as_ref()?;
    let width = table.rows.iter().map(Vec::len).max().unwrap_or(0);
    let columns: Vec<usize> = (0..width)
        .filter(|&c| c != path_col)
        .filter(|&c| {
            table
                .rows
                .iter()
                .all(|r| r.get(c).is_some_and(|v| binary(v).is_some()))
        })
        .collect();
    (columns.len() >= 2).then_some(columns)
}

/// `Some(true)` for 1, `1.0`, `true`; `Some(false)` for 0, `0.0`, `false`; else `None`.
fn binary(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" => Some(true),
        "0" | "0.0" | "false" => Some(false),
        _ => None,
    }
}

/// The images of a one-hot label file: a class per column (single-label, when every row has
/// exactly one 1), else a label per column and the rows without a 1 as untagged images.
pub(super) fn read_one_hot(
    file: &Path,
    table: &Table,
    resolver: &Resolver,
    path_col: usize,
    columns: &[usize],
    name_of: &dyn Fn(usize) -> String,
) -> LabelledFiles {
    let ones = |r: &Vec<String>| -> Vec<usize> {
        columns
            .iter()
            .copied()
            .filter(|&c| r.get(c).and_then(|v| binary(v)) == Some(true))
            .collect()
    };
    let single = table.rows.iter().all(|r| ones(r).len() == 1);
    let mut by_label: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut untagged = Vec::new();
    let mut skipped = Vec::new();
    let line_of = |i: usize| i + 2;
    for (i, row) in table.rows.iter().enumerate() {
        let value = row.get(path_col).map(String::as_str).unwrap_or("");
        let path = match resolve_row(resolver, file, value, line_of(i)) {
            Ok(path) => path,
            Err(skip) => {
                skipped.push(skip);
                continue;
            }
        };
        let labels = ones(row);
        if labels.is_empty() {
            untagged.push(path.clone());
        }
        for c in labels {
            by_label.entry(name_of(c)).or_default().push(path.clone());
        }
    }
    untagged.sort();
    untagged.dedup();
    let names: Vec<String> = columns.iter().map(|&c| name_of(c)).collect();
    LabelledFiles {
        classes: classes_of(by_label),
        skipped,
        conflicts: Vec::new(),
        rule: format!(
            "labels from {} (column {} and one 0/1 column per {}: {})",
            short_name(file),
            name_of(path_col),
            if single { "class" } else { "label" },
            names.join(", ")
        ),
        rows: table.rows.len(),
        untagged: (!single).then_some(untagged),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, touch_all};
    use super::super::{read, ColumnChoice};

    #[test]
    fn tag_lists_are_read_as_multi_label_and_class_names_with_spaces_are_not() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("{i}.jpg")).collect();
        touch_all(t.path(), &names);
        let csv = t.path().join("labels.csv");
        std::fs::write(
            &csv,
            "file_name,tags\n0.jpg,cat\n1.jpg,dog\n2.jpg,cat dog\n3.jpg,\n4.jpg,dog\n5.jpg,cat\n6.jpg,dog cat\n7.jpg,cat\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("cat".into(), 5), ("dog".into(), 4)]);
        assert_eq!(l.untagged, Some(vec![t.path().join("3.jpg")]));
        assert!(l.rule.contains("tag lists split by spaces"), "{}", l.rule);
        assert_eq!(l.images(), 8);
        // Quoted comma lists, as pandas writes a list column joined by commas.
        std::fs::write(
            &csv,
            "file_name,tags\n0.jpg,sea\n1.jpg,\"desert,sea\"\n2.jpg,desert\n3.jpg,\"sea, desert\"\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("desert".into(), 3), ("sea".into(), 3)]);
        // Breed names and a grid of classes stay classes.
        std::fs::write(
            &csv,
            "file_name,breed\n0.jpg,golden retriever\n1.jpg,labrador retriever\n2.jpg,poodle\n3.jpg,golden retriever\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(l.untagged, None);
        assert_eq!(l.classes.len(), 3);
        std::fs::write(
            &csv,
            "file_name,kind\n0.jpg,red car\n1.jpg,blue car\n2.jpg,red truck\n3.jpg,blue truck\n4.jpg,red car\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!((l.untagged, l.classes.len()), (None, 4));
        // --multi-label reads them as tags, and a second row of an image adds its labels.
        std::fs::write(
            &csv,
            "file_name,kind\n0.jpg,red car\n1.jpg,blue car\n0.jpg,old\n",
        )
        .unwrap();
        let forced = ColumnChoice {
            multi_label: true,
            ..ColumnChoice::default()
        };
        let l = read(&csv, t.path(), &forced).unwrap();
        assert_eq!(
            counts(&l),
            vec![
                ("blue".into(), 1),
                ("car".into(), 2),
                ("old".into(), 1),
                ("red".into(), 1)
            ]
        );
    }

    #[test]
    fn json_lists_are_tag_lists() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("img_{i}.jpg")).collect();
        touch_all(t.path(), &names);
        let f = t.path().join("metadata.jsonl");
        std::fs::write(
            &f,
            "{\"file_name\": \"img_0.jpg\", \"tags\": [\"cat\"]}\n{\"file_name\": \"img_1.jpg\", \"tags\": [\"dog\"]}\n{\"file_name\": \"img_2.jpg\", \"tags\": [\"dog\", \"cat\"]}\n{\"file_name\": \"img_3.jpg\", \"tags\": []}\n",
        )
        .unwrap();
        let l = read(&f, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("cat".into(), 2), ("dog".into(), 2)]);
        assert_eq!(l.untagged, Some(vec![t.path().join("img_3.jpg")]));
    }

    #[test]
    fn zero_one_columns_are_labels_or_one_hot_classes() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("{i}.jpg")).collect();
        touch_all(t.path(), &names);
        let csv = t.path().join("labels.csv");
        std::fs::write(
            &csv,
            "image,sky,sea,sand\n0.jpg,1,1,0\n1.jpg,0,1,1\n2.jpg,0,0,0\n3.jpg,1,0,0\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(
            counts(&l),
            vec![("sand".into(), 1), ("sea".into(), 2), ("sky".into(), 2)]
        );
        assert_eq!(l.untagged, Some(vec![t.path().join("2.jpg")]));
        assert!(l.rule.contains("one 0/1 column per label"), "{}", l.rule);
        // Exactly one 1 a row: single-label classes written one-hot.
        std::fs::write(
            &csv,
            "image,healthy,rust,scab\n0.jpg,1,0,0\n1.jpg,0,1,0\n2.jpg,0,0,1\n3.jpg,1,0,0\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(l.untagged, None);
        assert_eq!(
            counts(&l),
            vec![
                ("healthy".into(), 2),
                ("rust".into(), 1),
                ("scab".into(), 1)
            ]
        );
        // Two flags beside a label column are flags.
        std::fs::write(
            &csv,
            "image,label,is_valid,hard\n0.jpg,cat,0,1\n1.jpg,dog,1,0\n2.jpg,cat,0,0\n3.jpg,dog,0,1\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("cat".into(), 2), ("dog".into(), 2)]);
        assert_eq!(l.untagged, None);
    }
}
