//! Labels from a file that lists images and their classes: fastai's `from_csv`, the Hugging
//! Face `imagefolder` `metadata.csv` / `metadata.jsonl`, Kaggle's `train.csv`.
//!
//! The format follows the extension (`.jsonl`/`.ndjson`: one JSON object per line; anything else
//! is delimited text whose delimiter — comma, tab, semicolon or bar — is the one that splits the
//! first lines into the same number of fields). Columns are found by their values: the path
//! column is the one whose values most often name an existing image (relative to the label file
//! or the dataset folder, with `/` or `\` separators, an image extension added when the value
//! has none); the label column is another column with at least two and the fewest distinct
//! values. A first row whose path does not resolve while later ones do is a header.
//! `--path-column` and `--label-column` (a header name or a 0-based index) say it instead.
//! Rows naming missing files are listed, never fatal; an image listed under two labels keeps its
//! first and is reported.
//!
//! Multi-label files are read as such unasked (see [`tag_delimiter`] and [`one_hot`]): a label
//! column of tag lists (`cat dog`, `"desert,mountains"`, `a;b`, `a|b`), or two or more 0/1
//! columns under a header that names the labels. There an image may carry no label (an empty
//! list, all zeros) and an image listed twice carries both rows' labels. `--multi-label` reads
//! any label column as tag lists.

mod resolve;
mod table;
mod tags;

use super::discovery::ClassFiles;
use super::{is_image_name, Skipped};
use resolve::{Resolved, Resolver};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use table::{parse, Table};
use tags::{one_hot, read_one_hot, split_tags, tag_delimiter};

/// Extensions of files read as label files.
pub const LABEL_FILE_EXTENSIONS: &[&str] = &["csv", "tsv", "txt", "jsonl", "ndjson"];
/// Share of rows that must name an existing image for a label file to be used unasked.
pub const RESOLVE_SHARE: f64 = 0.9;
/// Rows, drawn evenly from the whole file, read to find the path column.
const SNIFF_ROWS: usize = 200;
/// A column most of whose values name one row only (ids, paths, hashes) is no label column; it
/// is judged so from this many rows on.
const DISTINCT_MIN_ROWS: usize = 10;
/// Share of distinct values above which a column holds ids rather than labels.
const DISTINCT_SHARE: f64 = 0.5;

/// Which columns to read, and whether labels are tag lists, when the user says it.
#[derive(Debug, Clone, Default)]
pub struct ColumnChoice {
    pub path: Option<String>,
    pub label: Option<String>,
    /// `--multi-label`: every image may carry any number of labels.
    pub multi_label: bool,
}

/// A label file read against the images it names.
#[derive(Debug, Clone)]
pub struct LabelledFiles {
    pub classes: Vec<ClassFiles>,
    /// Rows whose file is missing, and images listed a second time.
    pub skipped: Vec<Skipped>,
    /// Images listed under more than one label.
    pub conflicts: Vec<String>,
    /// `labels from train.csv (columns path, label)`.
    pub rule: String,
    /// Rows read (header excluded).
    pub rows: usize,
    /// Multi-label: the images listed with no label (`None` for a single-label file).
    pub untagged: Option<Vec<PathBuf>>,
}

impl LabelledFiles {
    /// The images listed, each once.
    pub fn images(&self) -> usize {
        let mut all: HashSet<&PathBuf> = self.classes.iter().flat_map(|c| &c.files).collect();
        all.extend(self.untagged.iter().flatten());
        all.len()
    }
}

/// Reads `file` and resolves its paths against its own folder and `dataset`.
pub fn read(file: &Path, dataset: &Path, columns: &ColumnChoice) -> Result<LabelledFiles, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let mut table = parse(file, &text)?;
    let resolver = Resolver::new(file, dataset);
    if table.header.is_none() {
        promote_header(&mut table, &resolver);
    }
    let width = table.rows.iter().map(Vec::len).max().unwrap_or(0);
    let header_names: Option<&Vec<String>> = table.header.as_ref();
    let pick = |given: &Option<String>, what: &str| -> Result<Option<usize>, String> {
        let Some(g) = given else { return Ok(None) };
        if let Some(i) = header_names.and_then(|h| h.iter().position(|n| n == g)) {
            return Ok(Some(i));
        }
        match g.parse::<usize>() {
            Ok(i) if i < width => Ok(Some(i)),
            _ => Err(format!(
                "{} has no {what} column {g:?} (columns: {})",
                file.display(),
                header_names
                    .map(|h| h.join(", "))
                    .unwrap_or_else(|| format!("0..{width}"))
            )),
        }
    };
    let given_path = pick(&columns.path, "path")?;
    let given_label = pick(&columns.label, "label")?;
    let sample = spread(&table.rows, SNIFF_ROWS);
    let resolved_share = |col: usize| {
        let hits = sample
            .iter()
            .filter(|r| r.get(col).is_some_and(|v| resolver.resolve(v).is_some()))
            .count();
        hits as f64 / sample.len().max(1) as f64
    };
    // On a tie (0/1 columns beside images named `0.jpg`, `1.jpg`), the column whose values
    // carry an image extension, then the first.
    let named_share = |col: usize| {
        let named = sample
            .iter()
            .filter(|r| {
                r.get(col)
                    .is_some_and(|v| is_image_name(Path::new(v.trim())))
            })
            .count();
        named as f64 / sample.len().max(1) as f64
    };
    let path_col = match given_path {
        Some(c) => c,
        None => (0..width)
            .map(|c| (c, resolved_share(c), named_share(c)))
            .filter(|(_, s, _)| *s > 0.0)
            .max_by(|a, b| {
                (a.1.total_cmp(&b.1))
                    .then(a.2.total_cmp(&b.2))
                    .then(b.0.cmp(&a.0))
            })
            .map(|(c, _, _)| c)
            .ok_or_else(|| {
                format!(
                    "no column of {} names image files under {} or {} (say which with --path-column)",
                    file.display(),
                    file.parent().unwrap_or(Path::new(".")).display(),
                    dataset.display()
                )
            })?,
    };
    let name_of = |c: usize| {
        header_names
            .and_then(|h| h.get(c).cloned())
            .unwrap_or_else(|| format!("{c}"))
    };
    let rows = table.rows.len();
    let id_like = |d: usize| rows >= DISTINCT_MIN_ROWS && d as f64 > DISTINCT_SHARE * rows as f64;
    // Each column read once as a label column: as tag lists or classes, and how many distinct
    // labels it holds (a column of tag lists is judged by its tags, not their combinations).
    let readings: Vec<(Option<Option<char>>, usize)> = (0..width)
        .map(|col| {
            let values: Vec<&str> = table
                .rows
                .iter()
                .filter_map(|r| r.get(col).map(|v| v.trim()).filter(|v| !v.is_empty()))
                .collect();
            let tags = tag_delimiter(&values, columns.multi_label);
            let distinct = match tags {
                Some(d) => values
                    .iter()
                    .flat_map(|v| split_tags(v, d))
                    .collect::<HashSet<_>>()
                    .len(),
                None => table
                    .rows
                    .iter()
                    .filter_map(|r| r.get(col).filter(|v| !v.is_empty()))
                    .collect::<HashSet<_>>()
                    .len(),
            };
            (tags, distinct)
        })
        .collect();
    let distinct = |col: usize| readings[col].1;
    if given_label.is_none() {
        // 0/1 columns, unless another column holds labels (two flags beside a label column).
        let hot = one_hot(&table, path_col).filter(|hot| {
            !(0..width)
                .filter(|c| *c != path_col && !hot.contains(c))
                .any(|c| distinct(c) >= 2 && !id_like(distinct(c)))
        });
        if let Some(hot) = hot {
            return Ok(read_one_hot(
                file, &table, &resolver, path_col, &hot, &name_of,
            ));
        }
    }
    let label_col = match given_label {
        Some(c) => {
            let d = distinct(c);
            if id_like(d) {
                return Err(format!(
                    "column {} of {} has {d} distinct values in {rows} rows: ids or paths, not \
                     labels (a label names a class that several images share)",
                    name_of(c),
                    file.display()
                ));
            }
            c
        }
        None => (0..width)
            .filter(|&c| c != path_col)
            .map(|c| (c, distinct(c)))
            .filter(|&(_, d)| d >= 2 && !id_like(d))
            .min_by_key(|&(c, d)| (d, c))
            .map(|(c, _)| c)
            .ok_or_else(|| {
                format!(
                    "no column of {} holds labels (one whose values, besides the paths, name at \
                     least two classes that several images share; say which with --label-column)",
                    file.display()
                )
            })?,
    };
    let tags = readings[label_col].0;
    let mut by_label: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut first_label: HashMap<PathBuf, String> = HashMap::new();
    let mut tagged: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut conflicts = Vec::new();
    let line_of = |i: usize| i + 1 + usize::from(table.header.is_some());
    for (i, row) in table.rows.iter().enumerate() {
        let (Some(value), Some(label)) = (row.get(path_col), row.get(label_col)) else {
            skipped.push(Skipped {
                path: file.to_path_buf(),
                reason: format!("row {} has no path or label field", line_of(i)),
            });
            continue;
        };
        let label = label.trim();
        if label.is_empty() && tags.is_none() {
            skipped.push(Skipped {
                path: PathBuf::from(value),
                reason: format!(
                    "row {} of {} has an empty label",
                    line_of(i),
                    file.display()
                ),
            });
            continue;
        }
        let path = match resolve_row(&resolver, file, value, line_of(i)) {
            Ok(path) => path,
            Err(skip) => {
                skipped.push(skip);
                continue;
            }
        };
        if let Some(delimiter) = tags {
            tagged
                .entry(path)
                .or_default()
                .extend(split_tags(label, delimiter));
            continue;
        }
        match first_label.get(&path) {
            Some(first) if first == label => {}
            Some(first) => {
                conflicts.push(format!(
                    "{} is listed under two labels in {}: {first:?} and {label:?} (row {}); kept under {first:?}",
                    path.display(),
                    file.display(),
                    line_of(i)
                ));
            }
            None => {
                first_label.insert(path.clone(), label.to_string());
                by_label.entry(label.to_string()).or_default().push(path);
            }
        }
    }
    let untagged = tags.map(|_| {
        let mut none = Vec::new();
        for (path, labels) in tagged {
            for l in &labels {
                by_label.entry(l.clone()).or_default().push(path.clone());
            }
            if labels.is_empty() {
                none.push(path);
            }
        }
        none
    });
    let how = match tags {
        None => String::new(),
        Some(Some(' ')) => "; tag lists split by spaces".into(),
        Some(Some(d)) => format!("; tag lists split by {d:?}"),
        Some(None) => "; one tag each, read as multi-label".into(),
    };
    Ok(LabelledFiles {
        classes: classes_of(by_label),
        skipped,
        conflicts,
        rule: format!(
            "labels from {} (columns {}, {}{how})",
            short_name(file),
            name_of(path_col),
            name_of(label_col)
        ),
        rows: table.rows.len(),
        untagged,
    })
}

/// The image that `value`, on line `line` of the label `file`, names; or why the row is
/// skipped (no such image, or two that it could be: never guessed).
fn resolve_row(
    resolver: &Resolver,
    file: &Path,
    value: &str,
    line: usize,
) -> Result<PathBuf, Skipped> {
    let reason = match resolver.lookup(value) {
        Resolved::One(path) => return Ok(path),
        Resolved::Two(a, b) => format!(
            "listed in {} (row {line}), and names two files, {} and {}: not guessed",
            file.display(),
            a.display(),
            b.display()
        ),
        Resolved::None => format!(
            "listed in {} (row {line}) but no such image file",
            file.display()
        ),
    };
    Err(Skipped {
        path: PathBuf::from(value),
        reason,
    })
}

/// The classes of `by_label`, each with its files sorted (and listed once).
pub(super) fn classes_of(by_label: BTreeMap<String, Vec<PathBuf>>) -> Vec<ClassFiles> {
    by_label
        .into_iter()
        .map(|(name, mut files)| {
            files.sort();
            files.dedup();
            ClassFiles { name, files }
        })
        .collect()
}

/// The file name of `file`.
pub(super) fn short_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes the first row the header when, in some column, it names no image while at least half
/// of the later rows do (a header of names such as `id,label` that look like data).
fn promote_header(table: &mut Table, resolver: &Resolver) {
    let Some((first, rest)) = table.rows.split_first() else {
        return;
    };
    let later = spread(rest, SNIFF_ROWS);
    let header = (0..first.len()).any(|col| {
        let hits = later
            .iter()
            .filter(|r| r.get(col).is_some_and(|v| resolver.resolve(v).is_some()))
            .count();
        !later.is_empty() && 2 * hits >= later.len() && resolver.resolve(&first[col]).is_none()
    });
    if header {
        table.header = Some(table.rows.remove(0));
    }
}

/// Up to `n` of `rows`, drawn at even steps over the whole list (a file sorted by class shows
/// every class).
fn spread<T>(rows: &[T], n: usize) -> Vec<&T> {
    if rows.len() <= n {
        return rows.iter().collect();
    }
    (0..n).map(|i| &rows[i * rows.len() / n]).collect()
}

/// The one label file in `dataset` that resolves to its images (read with `columns`), if there
/// is exactly one, with what it labels.
pub fn find_in(dataset: &Path, columns: &ColumnChoice) -> Option<(PathBuf, LabelledFiles)> {
    let entries = std::fs::read_dir(dataset).ok()?;
    let mut found: Vec<(PathBuf, LabelledFiles)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .is_some_and(|e| LABEL_FILE_EXTENSIONS.contains(&e.as_str()))
        })
        .filter_map(|p| read(&p, dataset, columns).ok().map(|l| (p, l)))
        .filter(|(_, l)| {
            let used = l.images();
            let least = if l.untagged.is_some() { 1 } else { 2 };
            l.classes.len() >= least && used as f64 >= RESOLVE_SHARE * l.rows as f64
        })
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn dataset() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("images/sub")).unwrap();
        for n in ["a1", "a2", "b1", "b2"] {
            std::fs::write(t.path().join(format!("images/sub/{n}.jpg")), b"x").unwrap();
        }
        t
    }

    pub(super) fn counts(l: &LabelledFiles) -> Vec<(String, usize)> {
        l.classes
            .iter()
            .map(|c| (c.name.clone(), c.files.len()))
            .collect()
    }

    #[test]
    fn csv_with_header_and_tsv_without() {
        let t = dataset();
        let csv = t.path().join("train.csv");
        std::fs::write(
            &csv,
            "id,file,label\n1,images/sub/a1.jpg,ant\n2,images/sub/a2.jpg,ant\n3,images/sub/b1.jpg,bee\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("ant".into(), 2), ("bee".into(), 1)]);
        assert_eq!(l.rule, "labels from train.csv (columns file, label)");
        let tsv = t.path().join("labels.tsv");
        std::fs::write(&tsv, "images/sub/a1.jpg\tant\nimages/sub/b2.jpg\tbee\n").unwrap();
        let l = read(&tsv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("ant".into(), 1), ("bee".into(), 1)]);
        assert_eq!(l.rule, "labels from labels.tsv (columns 0, 1)");
    }

    #[test]
    fn semicolons_backslashes_missing_files_and_conflicts() {
        let t = dataset();
        let f = t.path().join("images/list.txt");
        std::fs::write(
            &f,
            "name;class\nsub\\a1.jpg;ant\nsub\\a2;ant\nsub\\gone.jpg;ant\nsub\\b1.jpg;bee\nsub\\b1.jpg;ant\n",
        )
        .unwrap();
        let l = read(&f, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("ant".into(), 2), ("bee".into(), 1)]);
        assert_eq!(l.skipped.len(), 1);
        assert!(l.skipped[0].reason.contains("row 4"), "{:?}", l.skipped);
        assert_eq!(l.conflicts.len(), 1);
        assert!(l.conflicts[0].contains("\"bee\" and \"ant\""));
    }

    #[test]
    fn json_lines_and_named_columns() {
        let t = dataset();
        let f = t.path().join("metadata.jsonl");
        std::fs::write(
            &f,
            "{\"file_name\": \"images/sub/a1.jpg\", \"label\": \"ant\", \"n\": 1}\n{\"file_name\": \"images/sub/b1.jpg\", \"label\": \"bee\", \"n\": 1}\n",
        )
        .unwrap();
        let l = read(&f, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(
            l.rule,
            "labels from metadata.jsonl (columns file_name, label)"
        );
        let chosen = ColumnChoice {
            path: Some("file_name".into()),
            label: Some("n".into()),
            ..ColumnChoice::default()
        };
        assert_eq!(read(&f, t.path(), &chosen).unwrap().classes.len(), 1);
        let wrong = ColumnChoice {
            label: Some("nope".into()),
            ..ColumnChoice::default()
        };
        assert!(read(&f, t.path(), &wrong)
            .unwrap_err()
            .contains("no label column"));
        assert_eq!(
            find_in(t.path(), &ColumnChoice::default()).map(|(p, _)| p),
            Some(f)
        );
    }

    pub(super) fn touch_all(root: &Path, names: &[String]) {
        for n in names {
            let p = root.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    #[test]
    fn a_sorted_file_with_an_absolute_path_first_reads_its_label_column() {
        let t = tempfile::tempdir().unwrap();
        let mut rows = String::new();
        let mut files = Vec::new();
        for class in ["cat", "dog"] {
            for i in 0..300 {
                files.push(format!("dataset/{class}/{i:04}.jpg"));
                rows += &format!(
                    "C:\\Users\\someone\\Desktop\\repo\\dataset\\{class}\\{i:04}.jpg;dataset\\{class}\\{i:04}.jpg;{class}\n"
                );
            }
        }
        touch_all(t.path(), &files);
        let csv = t.path().join("dataset_csv.csv");
        std::fs::write(&csv, &rows).unwrap();
        let (found, l) = find_in(t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(found, csv);
        assert_eq!(counts(&l), vec![("cat".into(), 300), ("dog".into(), 300)]);
        assert_eq!(l.rule, "labels from dataset_csv.csv (columns 1, 2)");
        let ids = ColumnChoice {
            label: Some("0".into()),
            ..ColumnChoice::default()
        };
        let err = read(&csv, t.path(), &ids).unwrap_err();
        assert!(
            err.contains("column 0") && err.contains("600 distinct values"),
            "{err}"
        );
    }

    #[test]
    fn quoted_fields_hold_the_delimiter() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["odd names/img, 3.jpg", "odd names/b.jpg", "c.jpg", "d.jpg"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        touch_all(t.path(), &names);
        let csv = t.path().join("labels.csv");
        std::fs::write(
            &csv,
            "file,label,tags\n\"odd names/img, 3.jpg\",Cat,\"desert,mountains\"\nodd names/b.jpg,Cat,sea\nc.jpg,Dog,\"desert,sea\"\nd.jpg,Dog,sea\n",
        )
        .unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("Cat".into(), 2), ("Dog".into(), 2)]);
        std::fs::write(&csv, "a.jpg,x\nb.jpg;y\nc.jpg|z,w\n").unwrap();
        let err = read(&csv, t.path(), &ColumnChoice::default()).unwrap_err();
        assert!(
            err.contains("labels.csv") && err.contains("not split consistently"),
            "{err}"
        );
    }

    #[test]
    fn names_relative_to_an_image_folder_below_and_ambiguous_names() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = [
            "train/a1.png",
            "train/a2.png",
            "train/b1.png",
            "train/b2.png",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["train/twin.jpg".to_string(), "extra/twin.jpg".to_string()])
        .collect();
        touch_all(t.path(), &names);
        let csv = t.path().join("train.csv");
        std::fs::write(&csv, "id,label\na1,ant\na2,ant\nb1,bee\nb2,bee\ntwin,bee\n").unwrap();
        let l = read(&csv, t.path(), &ColumnChoice::default()).unwrap();
        assert_eq!(counts(&l), vec![("ant".into(), 2), ("bee".into(), 2)]);
        assert_eq!(l.classes[0].files[0], t.path().join("train/a1.png"));
        assert_eq!(l.skipped.len(), 1, "{:?}", l.skipped);
        let why = &l.skipped[0].reason;
        assert!(
            why.contains("names two files") && why.contains("extra/twin.jpg"),
            "{why}"
        );
    }
}
