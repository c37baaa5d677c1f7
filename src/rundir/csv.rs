//! A CSV file appended a row at a time: the header when it is created, then each row written
//! and flushed at once, so that an interrupted run keeps every row it finished.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A CSV file being written.
pub struct CsvFile {
    file: std::fs::File,
    path: PathBuf,
    columns: usize,
}

/// A field as CSV writes it: quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl CsvFile {
    /// Creates (or empties) `path` and writes the header.
    pub fn create(path: &Path, header: &[&str]) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut csv = Self {
            file: std::fs::File::create(path)?,
            path: path.to_path_buf(),
            columns: header.len(),
        };
        csv.row(header)?;
        Ok(csv)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row (as many fields as the header) in a single write.
    pub fn row<S: AsRef<str>>(&mut self, fields: &[S]) -> std::io::Result<()> {
        debug_assert_eq!(
            fields.len(),
            self.columns,
            "a row of {}",
            self.path.display()
        );
        let mut line = fields
            .iter()
            .map(|f| field(f.as_ref()))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_at_once_and_fields_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.csv");
        let mut csv = CsvFile::create(&path, &["a", "b"]).unwrap();
        csv.row(&["1", "x,\"y\""]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "a,b\n1,\"x,\"\"y\"\"\"\n"
        );
    }
}
