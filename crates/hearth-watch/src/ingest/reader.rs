//! Reading stored events back, oldest first.

use std::collections::VecDeque;
use std::path::Path;

use hearth_core::telemetry::{TelemetryEvent, decode_event};

use super::IngestError;
use super::segment::{Next, RecordReader, SegmentInfo, list_segments};

/// An event as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Sequence number of the segment holding the event.
    pub segment: u64,
    /// Byte offset of the event's record in its segment.
    pub offset: u64,
    pub event: TelemetryEvent,
}

/// Iterates over the events of a log directory in the order they were
/// stored.
///
/// The newest segment may be in use by a writer, so damage at its end is
/// read as the end of the log (a write in progress or a torn tail that the
/// next open truncates). Damage inside an older segment, and a record that
/// is intact but does not decode, come back as errors; iteration goes on
/// after a record that does not decode and stops at damage.
///
/// Events appended while the iterator runs may or may not be seen; records
/// the writer has written but not yet synced can be.
pub struct LogReader {
    segments: VecDeque<SegmentInfo>,
    newest: Option<u64>,
    current: Option<(u64, RecordReader)>,
}

impl LogReader {
    /// Lists the segments of `dir`; files are opened as iteration reaches
    /// them.
    pub fn open(dir: &Path) -> Result<Self, IngestError> {
        let segments: VecDeque<SegmentInfo> = list_segments(dir)?.into();
        let newest = segments.back().map(|segment| segment.seq);
        Ok(LogReader {
            segments,
            newest,
            current: None,
        })
    }

    fn step(&mut self) -> Option<Result<StoredEvent, IngestError>> {
        loop {
            let (seq, reader) = match &mut self.current {
                Some((seq, reader)) => (*seq, reader),
                None => {
                    let segment = self.segments.pop_front()?;
                    match RecordReader::open(&segment.path) {
                        Ok(reader) => self.current.insert((segment.seq, reader)),
                        Err(e) => return Some(Err(e)),
                    };
                    continue;
                }
            };
            match reader.next_record() {
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
                Ok(Next::Record { offset, payload }) => {
                    return Some(match decode_event(payload) {
                        Ok(event) => Ok(StoredEvent {
                            segment: seq,
                            offset,
                            event,
                        }),
                        Err(reason) => Err(IngestError::Record {
                            path: reader.path().to_path_buf(),
                            offset,
                            reason,
                        }),
                    });
                }
                Ok(Next::End) => self.current = None,
                Ok(Next::Damaged(damage)) => {
                    let path = reader.path().to_path_buf();
                    self.current = None;
                    if Some(seq) != self.newest {
                        return Some(Err(IngestError::Corrupt {
                            path,
                            offset: damage.offset,
                            reason: damage.reason,
                        }));
                    }
                }
            }
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<StoredEvent, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step()
    }
}
