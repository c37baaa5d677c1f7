//! A label file's rows: delimited text (RFC 4180 quoting) or JSON lines, and its header.

use crate::data::is_image_name;
use std::path::Path;

/// Rows of a label file, with its header when it has one.
pub(super) struct Table {
    pub(super) header: Option<Vec<String>>,
    pub(super) rows: Vec<Vec<String>>,
}

pub(super) fn parse(file: &Path, text: &str) -> Result<Table, String> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut table = if ext == "jsonl" || ext == "ndjson" {
        parse_json_lines(file, text)?
    } else {
        parse_delimited(text).map_err(|e| format!("{}: {e}", file.display()))?
    };
    if table.rows.is_empty() {
        return Err(format!("{} lists no rows", file.display()));
    }
    if table.header.is_none() && looks_like_header(&table.rows) {
        table.header = Some(table.rows.remove(0));
    }
    Ok(table)
}

/// A first row none of whose fields looks like a file name while later rows have one.
fn looks_like_header(rows: &[Vec<String>]) -> bool {
    let has_file = |r: &Vec<String>| {
        r.iter()
            .any(|v| is_image_name(Path::new(v)) || v.contains('/') || v.contains('\\'))
    };
    let numeric = |r: &Vec<String>| r.iter().any(|v| v.trim().parse::<f64>().is_ok());
    match rows {
        [first, rest @ ..] if !rest.is_empty() => {
            let later_files = rest.iter().take(20).any(has_file);
            let later_numbers = rest.iter().take(20).any(numeric);
            (later_files && !has_file(first)) || (later_numbers && !numeric(first))
        }
        _ => false,
    }
}

/// Delimited text (RFC 4180 quoting: a quoted field may hold the delimiter): the delimiter is
/// the one of comma, tab, semicolon and bar that splits the first lines into the same number
/// of fields, the most fields if several do.
fn parse_delimited(text: &str) -> Result<Table, String> {
    let reader = |delimiter: u8| {
        csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes())
    };
    let delimiter = [b',', b'\t', b';', b'|']
        .into_iter()
        .rev() // the first of equals wins
        .filter_map(|d| {
            let widths: Vec<usize> = reader(d)
                .records()
                .filter_map(Result::ok)
                .filter(|r| r.iter().any(|f| !f.trim().is_empty()))
                .take(20)
                .map(|r| r.len())
                .collect();
            let first = *widths.first()?;
            (first > 1 && widths.iter().all(|&w| w == first)).then_some((d, first))
        })
        .max_by_key(|&(_, width)| width)
        .map(|(d, _)| d)
        .ok_or("its lines are not split consistently by a comma, tab, semicolon or bar")?;
    let rows = reader(delimiter)
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(|f| f.trim().to_string()).collect::<Vec<_>>())
        .filter(|r| r.iter().any(|f| !f.is_empty()))
        .collect();
    Ok(Table { header: None, rows })
}

fn parse_json_lines(file: &Path, text: &str) -> Result<Table, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", file.display(), i + 1))?;
        let serde_json::Value::Object(map) = value else {
            return Err(format!(
                "{} line {}: not a JSON object",
                file.display(),
                i + 1
            ));
        };
        for k in map.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        objects.push(map);
    }
    fn text_of(v: Option<&serde_json::Value>) -> String {
        match v {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            // A list of labels (`"tags": ["cat", "dog"]`) reads as a comma-separated tag list.
            Some(serde_json::Value::Array(items)) => {
                let texts: Vec<String> = items.iter().map(|i| text_of(Some(i))).collect();
                texts.join(",")
            }
            Some(other) => other.to_string(),
        }
    }
    let rows = objects
        .iter()
        .map(|o| keys.iter().map(|k| text_of(o.get(k))).collect())
        .collect();
    Ok(Table {
        header: Some(keys),
        rows,
    })
}
