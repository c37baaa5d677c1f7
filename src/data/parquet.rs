//! Images stored in parquet files, as the Hugging Face Hub stores datasets: an image column
//! (a struct of `bytes` + `path`) and a label column (a `ClassLabel` integer, or a string).
//!
//! Nothing is extracted to disk. Each image gets a *virtual path* (`hf://datasets/ORG/NAME/
//! SPLIT/NAME`), registered here with the row that holds it, so every part of tltui that reads
//! an image by path ([`super::decode`]) reads it from the parquet file. The encoded bytes of a
//! row group are read once and kept within a memory budget (the oldest row groups leave
//! first); [`storage_order`] lets bulk passes walk the files row group by row group.

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{get_typed_column_reader, ColumnReader};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

/// Where a registered image lives.
#[derive(Clone)]
struct RowRef {
    shard: Arc<Shard>,
    group: usize,
    index: usize,
}

/// Every registered virtual path.
static ROWS: LazyLock<RwLock<HashMap<PathBuf, RowRef>>> = LazyLock::new(Default::default);

/// One parquet file and its cache of decoded row groups.
pub struct Shard {
    path: PathBuf,
    bytes_column: usize,
    cache: Mutex<GroupCache>,
}

/// The encoded images of recently read row groups, within a byte budget.
struct GroupCache {
    budget: u64,
    used: u64,
    order: VecDeque<usize>,
    groups: HashMap<usize, Arc<Vec<Option<ByteArray>>>>,
}

/// One row of a parquet dataset: its label and the name stored with its image.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Row group and index inside it.
    pub group: usize,
    pub index: usize,
    /// The image's stored `path` (its original file name), when there is one.
    pub name: Option<String>,
    /// The label: the class index of a `ClassLabel`, or the text of a string column.
    pub label: Option<Label>,
}

/// A row's label as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Index(i64),
    Text(String),
    /// A list column's labels (`Sequence(ClassLabel)`, a list of strings), possibly none.
    Many(Vec<Label>),
}

/// The columns of a parquet dataset file and the Hugging Face features in its footer.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Leaf column paths (`image.bytes`, `image.path`, `labels`), in file order.
    pub columns: Vec<String>,
    /// The `huggingface` key of the footer, parsed (`{"info": {"features": …}}`), if present.
    pub features: Option<serde_json::Value>,
    pub rows: usize,
}

fn open(path: &Path) -> Result<SerializedFileReader<std::fs::File>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    SerializedFileReader::new(file)
        .map_err(|e| format!("{} is not a readable parquet file: {e}", path.display()))
}

/// The schema and footer metadata of `path`.
pub fn schema(path: &Path) -> Result<Schema, String> {
    let reader = open(path)?;
    let meta = reader.metadata().file_metadata();
    let columns = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.path().string())
        .collect();
    let features = meta
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "huggingface")
        .and_then(|kv| kv.value.as_deref())
        .and_then(|v| serde_json::from_str(v).ok());
    Ok(Schema {
        columns,
        features,
        rows: meta.num_rows().max(0) as usize,
    })
}

/// Reads the label column and the image name column (if any) of every row, without the image
/// bytes.
pub fn rows(
    path: &Path,
    label_column: &str,
    name_column: Option<&str>,
) -> Result<Vec<Row>, String> {
    let reader = open(path)?;
    let bad = |e: parquet::errors::ParquetError| format!("{}: {e}", path.display());
    let descr = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str| {
        descr
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
            .ok_or_else(|| format!("{} has no column {name}", path.display()))
    };
    let label_at = find(label_column)?;
    let name_at = name_column.map(find).transpose()?;
    let mut out = Vec::new();
    for group in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(group).map_err(bad)?;
        let n = rg.metadata().num_rows().max(0) as usize;
        let column = descr.column(label_at);
        let reader = rg.get_column_reader(label_at).map_err(bad)?;
        let labels = if column.max_rep_level() > 0 {
            read_label_lists(reader, n, column.max_def_level())
        } else {
            read_labels(reader, n, column.max_def_level())
        }
        .map_err(bad)?;
        let names = match name_at {
            Some(c) => read_bytes(
                rg.get_column_reader(c).map_err(bad)?,
                n,
                descr.column(c).max_def_level(),
            )
            .map_err(bad)?
            .into_iter()
            .map(|b| b.map(|b| String::from_utf8_lossy(b.data()).into_owned()))
            .collect(),
            None => vec![None; n],
        };
        out.extend(
            labels
                .into_iter()
                .zip(names)
                .enumerate()
                .map(|(index, (label, name))| Row {
                    group,
                    index,
                    name,
                    label,
                }),
        );
    }
    Ok(out)
}

/// Definition levels, repetition levels and non-null values of a column chunk.
type Levels<V> = (Vec<i16>, Vec<i16>, Vec<V>);

/// The levels and values of `rows` records of one row group's column of type `T` (repetition
/// levels only when `repeated`); the caller has checked that `reader` is of that type.
fn read_levels<T: DataType>(
    reader: ColumnReader,
    rows: usize,
    repeated: bool,
) -> parquet::errors::Result<Levels<T::T>> {
    let mut reader = get_typed_column_reader::<T>(reader);
    let (mut defs, mut reps, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut read = 0;
    while read < rows {
        let (records, _, _) = reader.read_records(
            rows - read,
            Some(&mut defs),
            repeated.then_some(&mut reps),
            &mut values,
        )?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok((defs, reps, values))
}

/// The values of one row group's column of type `T`, `None` where null; the caller has
/// checked that `reader` is of that type.
fn read_column<T: DataType>(
    reader: ColumnReader,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<Vec<Option<T::T>>> {
    let (defs, _, values) = read_levels::<T>(reader, rows, false)?;
    let mut values = values.into_iter();
    Ok(spread(&defs, max_def, rows, || values.next()))
}

/// The values of a byte-array column in one row group, `None` where null (slices of the
/// decoded pages, not copies).
fn read_bytes(
    reader: ColumnReader,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<Vec<Option<ByteArray>>> {
    match reader {
        r @ ColumnReader::ByteArrayColumnReader(_) => {
            read_column::<ByteArrayType>(r, rows, max_def)
        }
        _ => Err(parquet::errors::ParquetError::General(
            "not a byte-array column".into(),
        )),
    }
}

/// The labels of one row group: integers (a `ClassLabel`) or text.
fn read_labels(
    reader: ColumnReader,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<Vec<Option<Label>>> {
    let index = |v: Vec<Option<i64>>| v.into_iter().map(|v| v.map(Label::Index)).collect();
    match reader {
        r @ ColumnReader::Int64ColumnReader(_) => {
            Ok(index(read_column::<Int64Type>(r, rows, max_def)?))
        }
        r @ ColumnReader::Int32ColumnReader(_) => Ok(index(
            read_column::<Int32Type>(r, rows, max_def)?
                .into_iter()
                .map(|v| v.map(i64::from))
                .collect(),
        )),
        r @ ColumnReader::ByteArrayColumnReader(_) => Ok(read_bytes(r, rows, max_def)?
            .into_iter()
            .map(|b| b.map(|b| Label::Text(String::from_utf8_lossy(b.data()).into_owned())))
            .collect()),
        _ => Err(parquet::errors::ParquetError::General(
            "the label column is neither an integer nor a string".into(),
        )),
    }
}

/// The labels of one row group of a list column (rows start where the repetition level is 0;
/// a level below `max_def` is a null or empty list, or a null element: no label).
fn read_label_lists(
    reader: ColumnReader,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<Vec<Option<Label>>> {
    let lists = |defs: Vec<i16>, reps: Vec<i16>, values: Vec<Label>| {
        let mut values = values.into_iter();
        let mut out: Vec<Option<Label>> = Vec::with_capacity(rows);
        for (d, r) in defs.into_iter().zip(reps) {
            if r == 0 {
                out.push(Some(Label::Many(Vec::new())));
            }
            if d == max_def {
                if let (Some(Some(Label::Many(list))), Some(v)) = (out.last_mut(), values.next()) {
                    list.push(v);
                }
            }
        }
        out
    };
    match reader {
        r @ ColumnReader::Int64ColumnReader(_) => {
            let (d, r, v) = read_levels::<Int64Type>(r, rows, true)?;
            Ok(lists(d, r, v.into_iter().map(Label::Index).collect()))
        }
        r @ ColumnReader::Int32ColumnReader(_) => {
            let (d, r, v) = read_levels::<Int32Type>(r, rows, true)?;
            Ok(lists(
                d,
                r,
                v.into_iter().map(|i| Label::Index(i.into())).collect(),
            ))
        }
        r @ ColumnReader::ByteArrayColumnReader(_) => {
            let (d, r, v) = read_levels::<ByteArrayType>(r, rows, true)?;
            let texts = v
                .into_iter()
                .map(|b| Label::Text(String::from_utf8_lossy(b.data()).into_owned()))
                .collect();
            Ok(lists(d, r, texts))
        }
        _ => Err(parquet::errors::ParquetError::General(
            "the label list holds neither integers nor strings".into(),
        )),
    }
}

/// One value per row from the non-null `next` values and the definition levels.
fn spread<T>(
    defs: &[i16],
    max_def: i16,
    rows: usize,
    mut next: impl FnMut() -> Option<T>,
) -> Vec<Option<T>> {
    if max_def == 0 {
        return (0..rows).map(|_| next()).collect();
    }
    defs.iter()
        .take(rows)
        .map(|&d| if d == max_def { next() } else { None })
        .collect()
}

/// Whether the leaf column `name` of `path` holds byte arrays.
pub fn is_bytes_column(path: &Path, name: &str) -> bool {
    open(path).is_ok_and(|r| {
        r.metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .any(|c| c.path().string() == name && c.physical_type() == PhysicalType::BYTE_ARRAY)
    })
}

/// Registers the images of `rows` (of the file `path`, bytes in the leaf column
/// `bytes_column`) under their virtual paths, with a row-group cache of `budget_bytes`.
pub fn register(
    path: &Path,
    bytes_column: &str,
    rows: impl IntoIterator<Item = (PathBuf, usize, usize)>,
    budget_bytes: u64,
) -> Result<(), String> {
    let reader = open(path)?;
    let bytes_column = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == bytes_column)
        .ok_or_else(|| format!("{} has no column {bytes_column}", path.display()))?;
    let shard = Arc::new(Shard {
        path: path.to_path_buf(),
        bytes_column,
        cache: Mutex::new(GroupCache {
            budget: budget_bytes,
            used: 0,
            order: VecDeque::new(),
            groups: HashMap::new(),
        }),
    });
    let mut map = ROWS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (virtual_path, group, index) in rows {
        map.insert(
            virtual_path,
            RowRef {
                shard: shard.clone(),
                group,
                index,
            },
        );
    }
    Ok(())
}

fn lookup(path: &Path) -> Option<RowRef> {
    ROWS.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(path)
        .cloned()
}

/// The encoded image behind a virtual path, or `None` when `path` is not one.
pub fn image_bytes(path: &Path) -> Option<Result<Vec<u8>, String>> {
    let row = lookup(path)?;
    Some(row.shard.group(row.group).and_then(|g| {
        g.get(row.index)
            .and_then(|b| b.as_ref())
            .map(|b| b.data().to_vec())
            .ok_or_else(|| {
                format!(
                    "row {} of {} has no image bytes",
                    row.index,
                    row.shard.path.display()
                )
            })
    }))
}

/// What identifies a virtual path's content for caches: the parquet file (named by its
/// content hash in the Hugging Face cache), its size, row group and row.
pub fn identity(path: &Path) -> Option<String> {
    let row = lookup(path)?;
    let real = std::fs::canonicalize(&row.shard.path).unwrap_or_else(|_| row.shard.path.clone());
    let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
    Some(format!(
        "{}:{size}:{}:{}",
        real.display(),
        row.group,
        row.index
    ))
}

/// `paths` reordered so that images of one row group are next to each other (files first,
/// then parquet rows by file, row group and row): bulk passes then read each row group once.
pub fn storage_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let map = ROWS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Files first (no key), then parquet rows by file, row group and row.
    type Key = Option<(PathBuf, usize, usize)>;
    let mut keyed: Vec<(Key, &PathBuf)> = paths
        .iter()
        .map(|p| {
            (
                map.get(p).map(|r| (r.shard.path.clone(), r.group, r.index)),
                p,
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, p)| p.clone()).collect()
}

impl Shard {
    /// The encoded images of row group `group`, from the cache or the file.
    fn group(&self, group: usize) -> Result<Arc<Vec<Option<ByteArray>>>, String> {
        if let Some(g) = self.lock().groups.get(&group) {
            return Ok(g.clone());
        }
        let reader = open(&self.path)?;
        let bad = |e: parquet::errors::ParquetError| {
            format!("{} row group {group}: {e}", self.path.display())
        };
        let rg = reader.get_row_group(group).map_err(bad)?;
        let rows = rg.metadata().num_rows().max(0) as usize;
        let max_def = rg
            .metadata()
            .schema_descr()
            .column(self.bytes_column)
            .max_def_level();
        let images = Arc::new(
            read_bytes(
                rg.get_column_reader(self.bytes_column).map_err(bad)?,
                rows,
                max_def,
            )
            .map_err(bad)?,
        );
        let size: u64 = images.iter().flatten().map(|b| b.len() as u64).sum();
        let mut cache = self.lock();
        if !cache.groups.contains_key(&group) {
            while cache.used + size > cache.budget && cache.order.len() > 1 {
                let Some(old) = cache.order.pop_front() else {
                    break;
                };
                if let Some(g) = cache.groups.remove(&old) {
                    cache.used -= g.iter().flatten().map(|b| b.len() as u64).sum::<u64>();
                }
            }
            cache.used += size;
            cache.order.push_back(group);
            cache.groups.insert(group, images.clone());
        }
        Ok(images)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupCache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
