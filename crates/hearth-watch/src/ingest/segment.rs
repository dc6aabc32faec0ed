//! Segment files: naming, the header, and record framing.
//!
//! ```text
//! segment := "HWINGLOG" format:u32le record*
//! record  := len:u32le crc:u32le payload[len]
//! ```
//!
//! `crc` is the CRC-32 of the four length bytes followed by the payload, so a
//! damaged length is caught as surely as a damaged payload. The payload is
//! one event in `hearth_core::telemetry`'s binary record form.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use hearth_core::telemetry::{TelemetryEvent, encode_event};

use super::IngestError;
use super::crc32::Crc32;

/// The magic bytes that open every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"HWINGLOG";
/// The segment format version this build writes and reads.
pub(crate) const SEGMENT_FORMAT: u32 = 1;
/// Bytes of the segment header.
pub(crate) const HEADER_LEN: u64 = 12;
/// Bytes of a record's length and checksum.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// The longest record payload a reader accepts; a length above it can only
/// come from damage (a valid event encodes to a few hundred bytes).
pub(crate) const MAX_RECORD_LEN: u32 = 1 << 20;

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".log";

/// One segment file of a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number; segments are written in increasing order.
    pub seq: u64,
    pub path: PathBuf,
    /// File length in bytes when listed.
    pub bytes: u64,
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:020}{SUFFIX}"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of `dir`, oldest first. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, IngestError> {
    let entries = std::fs::read_dir(dir).map_err(IngestError::io(dir))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(IngestError::io(dir))?;
        let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        let bytes = entry.metadata().map_err(IngestError::io(&path))?.len();
        segments.push(SegmentInfo { seq, path, bytes });
    }
    segments.sort_by_key(|segment| segment.seq);
    Ok(segments)
}

pub(crate) fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    header
}

/// Appends one framed record holding `event` to `out` and returns the
/// record's byte range in `out`.
pub(crate) fn frame_event(event: &TelemetryEvent, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    encode_event(event, out);
    // Validated events are far below MAX_RECORD_LEN; the reader rejects
    // anything longer, so a saturated length could never pass as valid.
    let len = u32::try_from(out.len() - start - RECORD_HEADER_LEN).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    let mut crc = Crc32::new();
    crc.update(&len_bytes);
    crc.update(&out[start + RECORD_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.finish().to_le_bytes());
    start..out.len()
}

/// What stopped a scan before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where the first unreadable byte is; everything before it is intact.
    pub offset: u64,
    pub reason: String,
}

/// Reads the records of one segment file in order.
pub(crate) struct RecordReader {
    input: BufReader<File>,
    path: PathBuf,
    offset: u64,
    payload: Vec<u8>,
    done: bool,
}

/// One step of a [`RecordReader`].
pub(crate) enum Next<'a> {
    /// An intact record starting at `offset`.
    Record { offset: u64, payload: &'a [u8] },
    /// The file ends cleanly at a record boundary.
    End,
    /// The file is damaged from `Damage::offset` on.
    Damaged(Damage),
}

impl RecordReader {
    /// Opens `path` and checks its header. A file too short for its header
    /// whose bytes are the start of a correct header reads as damaged at
    /// offset 0 (a segment whose creation was cut short); any other header
    /// is an error.
    pub(crate) fn open(path: &Path) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(IngestError::io(path))?;
        let mut reader = RecordReader {
            input: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            offset: 0,
            payload: Vec::new(),
            done: false,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        let got = read_up_to(&mut reader.input, &mut header).map_err(IngestError::io(path))?;
        if header[..got] != header_bytes()[..got] {
            return Err(IngestError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                reason: "not an ingest log segment of a known format".to_owned(),
            });
        }
        if got < header.len() {
            reader.done = true;
        } else {
            reader.offset = HEADER_LEN;
        }
        Ok(reader)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next record, the clean end, or the first damage. After `End` or
    /// `Damaged` every call returns `End`.
    pub(crate) fn next_record(&mut self) -> Result<Next<'_>, IngestError> {
        if self.done {
            return Ok(if self.offset == 0 {
                self.offset = HEADER_LEN;
                Next::Damaged(Damage {
                    offset: 0,
                    reason: "segment header is incomplete".to_owned(),
                })
            } else {
                Next::End
            });
        }
        let start = self.offset;
        let damaged = |reader: &mut Self, reason: &str| {
            reader.done = true;
            Ok(Next::Damaged(Damage {
                offset: start,
                reason: reason.to_owned(),
            }))
        };
        let mut header = [0u8; RECORD_HEADER_LEN];
        let got = read_up_to(&mut self.input, &mut header).map_err(IngestError::io(&self.path))?;
        if got == 0 {
            self.done = true;
            return Ok(Next::End);
        }
        if got < RECORD_HEADER_LEN {
            return damaged(self, "record header is cut short");
        }
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes);
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return damaged(self, &format!("implausible record length {len}"));
        }
        self.payload.resize(len as usize, 0);
        let got =
            read_up_to(&mut self.input, &mut self.payload).map_err(IngestError::io(&self.path))?;
        if got < self.payload.len() {
            return damaged(self, "record is cut short");
        }
        let mut crc = Crc32::new();
        crc.update(&len_bytes);
        crc.update(&self.payload);
        if crc.finish() != stored_crc {
            return damaged(self, "record checksum does not match");
        }
        self.offset = start + RECORD_HEADER_LEN as u64 + u64::from(len);
        Ok(Next::Record {
            offset: start,
            payload: &self.payload,
        })
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_foreign_names_are_ignored() {
        let path = segment_path(Path::new("/x"), 42);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(name, "segment-00000000000000000042.log");
        assert_eq!(parse_segment_name(name), Some(42));
        for foreign in [
            "LOCK",
            "segment-42.log",
            "segment-0000000000000000004x.log",
            "segment-00000000000000000042.log.tmp",
        ] {
            assert_eq!(parse_segment_name(foreign), None, "{foreign}");
        }
    }
}
