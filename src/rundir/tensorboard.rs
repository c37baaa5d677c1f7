//! TensorBoard's event files, written directly: each record is the length of an `Event`
//! protobuf (little-endian u64), the masked CRC-32C of those eight bytes, the protobuf, and its
//! masked CRC-32C. The first event names the file version (`brain.Event:2`); each later one
//! carries a `Summary` of scalar values at a step. The messages below are the fields of
//! TensorFlow's `event.proto` and `summary.proto` that scalars use, under their own tags.

use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tensorflow.Event`: wall time, step, and what happened.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfEvent {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// The `what` of an `Event` that this writer uses.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of a file: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Values at the event's step.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: values, each with its tag.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with its `simple_value` (a scalar); always encoded, zero too, so
/// that readers see which kind of value it is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The file version TensorBoard expects in a file's first event.
const FILE_VERSION: &str = "brain.Event:2";

/// TFRecord's CRC mask.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record: length, its masked CRC, data, the data's masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch, as event files stamp their events.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's host name, for the file name as TensorFlow forms it.
fn hostname() -> String {
    let safe: String = system_hostname()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if !safe.is_empty() {
        safe
    } else {
        "localhost".into()
    }
}

/// The host name the system reports.
#[cfg(unix)]
fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The host name the system reports.
#[cfg(not(unix))]
fn system_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

/// An event file being written; each event reaches the file as one write, so a killed run
/// leaves every event before the last whole.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `events.out.tfevents.TIME.HOST.PID.0` in `dir` (made if missing) and writes the
    /// file-version event.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let name = format!(
            "events.out.tfevents.{}.{}.{}.0",
            now() as u64,
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = std::fs::File::create(&path)?;
        let mut writer = Self { file, path };
        writer.write(&TfEvent {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        Ok(writer)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `values` (tag, value) as one summary at `step`.
    pub fn scalars(&mut self, step: usize, values: &[(&str, f32)]) -> std::io::Result<()> {
        let summary = Summary {
            value: values
                .iter()
                .map(|(tag, v)| SummaryValue {
                    tag: tag.to_string(),
                    simple_value: Some(*v),
                })
                .collect(),
        };
        self.write(&TfEvent {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(summary)),
        })
    }

    fn write(&mut self, event: &TfEvent) -> std::io::Result<()> {
        self.file.write_all(&record(&event.encode_to_vec()))?;
        self.file.flush()
    }
}

/// Reads an event file back, checking every CRC; a truncated last record (a run killed
/// mid-write) ends the list as TensorBoard's reader does. An error names the first corrupt
/// record.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<TfEvent>> {
    let bytes = std::fs::read(path)?;
    let mut events = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let len_bytes = &bytes[at..at + 8];
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into()?);
        anyhow::ensure!(
            crc == masked_crc(len_bytes),
            "record {} of {}: length CRC mismatch",
            events.len(),
            path.display()
        );
        let len = u64::from_le_bytes(len_bytes.try_into()?) as usize;
        let start = at + 12;
        let Some(end) = start.checked_add(len).filter(|e| e + 4 <= bytes.len()) else {
            break;
        };
        let data = &bytes[start..end];
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into()?);
        anyhow::ensure!(
            crc == masked_crc(data),
            "record {} of {}: data CRC mismatch",
            events.len(),
            path.display()
        );
        events.push(TfEvent::decode(data)?);
        at = end + 4;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_tensorflows() {
        // CRC-32C of "123456789" is 0xe3069283 (RFC 3720's check value); the mask rotates it
        // right by 15 and adds 0xa282ead8.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // Written out as shifts, as TensorFlow's crc32c::Mask does.
        #[allow(clippy::manual_rotate)]
        let masked = ((0xe306_9283u32 >> 15) | (0xe306_9283u32 << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"123456789"), masked);
    }

    #[test]
    fn events_read_back_and_zero_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, &[("val/loss", 0.25), ("val/accuracy", 0.0)])
            .unwrap();
        let events = read_events(w.path()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        let Some(What::Summary(s)) = &events[1].what else {
            panic!("a summary: {:?}", events[1]);
        };
        assert_eq!(events[1].step, 3);
        assert_eq!(s.value[1].tag, "val/accuracy");
        assert_eq!(s.value[1].simple_value, Some(0.0));
        // A record cut short (a killed run) ends the list; the ones before it stay.
        let bytes = std::fs::read(w.path()).unwrap();
        std::fs::write(w.path(), &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(read_events(w.path()).unwrap().len(), 1);
    }
}
