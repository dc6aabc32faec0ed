//! The telemetry ingest log: an append-only, checksummed, fsync'd log of
//! accepted events in a directory.
//!
//! An append is acknowledged only once its events are on disk:
//! [`IngestLog::append_batch`] returns after the `write` holding its events
//! and an `fdatasync` issued after that write have both completed.
//! Concurrent appenders share that cost (group commit): batches that arrive
//! while the write slot is busy queue up, and the next thread to take the
//! slot writes all of them with one `write` and syncs them with one
//! `fdatasync`. The slot is freed before the sync, so the next group is
//! written while the previous one syncs ([`IngestOptions::max_concurrent_syncs`]);
//! that is safe because an `fdatasync` covers every write made to the file
//! before it, whichever sync returns first. Validation, encoding and
//! checksums run in the appending threads, outside the lock.
//!
//! The log is a run of segment files (`segment-<seq>.log`), each a header
//! and length-prefixed, CRC-32-checksummed records; the active (newest)
//! segment is synced, sealed and replaced by a new one once it passes
//! [`IngestOptions::segment_bytes`]. Opening the log recovers from a crash:
//! a torn record at the end of the newest segment (a write cut short) is
//! truncated away, which can only drop events that were never acknowledged.
//! Damage anywhere else cannot come from a crash and is reported, not
//! repaired.
//!
//! Events are deduplicated by `event_id` against the ids stored in the
//! newest [`IngestOptions::dedup_segments`] segments, an in-memory window
//! rebuilt on open by scanning them (about 40 bytes per id whatever its
//! length). A duplicate is acknowledged as such only once the copy already
//! stored is durable. An id whose segment has left the window is accepted
//! again.
//!
//! Appends block on disk I/O; async callers should run them on a blocking
//! thread.

mod crc32;
mod dedup;
mod reader;
mod segment;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_core::telemetry::{TelemetryEvent, decode_event_id};

use dedup::{DedupWindow, IdHash, IdHasher};
pub use reader::{LogReader, StoredEvent};
use segment::{Next, RecordReader, frame_event, header_bytes, segment_path};
pub use segment::{SegmentInfo, list_segments};

/// Name of the lock file that keeps a second process from opening the same
/// log directory for writing.
pub const LOCK_FILE: &str = "LOCK";

/// What can go wrong opening, writing or reading an ingest log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is held by another open ingest log")]
    Locked { path: PathBuf },

    #[error("{path}: damaged at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("{path}: the record at byte {offset} does not decode: {reason}")]
    Record {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("the ingest log stopped accepting events after a failed write ({0}); reopen it")]
    Stopped(String),

    #[error("a thread panicked while holding the ingest log")]
    Poisoned,
}

impl IngestError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
        move |source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Tuning of an [`IngestLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// The active segment is sealed, and a new one started, after the write
    /// that brings it to at least this many bytes.
    pub segment_bytes: u64,
    /// How many of the newest segments (the active one included, at least
    /// one) deduplication remembers. Memory is about 40 bytes per event in
    /// them: with the defaults (8 segments of 64 MiB, ~180-byte records)
    /// about 3 million ids, ~120 MB.
    pub dedup_segments: usize,
    /// How many written groups may be syncing at once (at least one). With
    /// more than one, the next group is written while the previous one
    /// syncs, and disks that overlap cache flushes commit more groups per
    /// second; with one, every group waits for the previous sync.
    pub max_concurrent_syncs: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            segment_bytes: 64 << 20,
            dedup_segments: 8,
            max_concurrent_syncs: 2,
        }
    }
}

/// The outcome of one append, per event of the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Ids of the events stored by this append, in batch order.
    pub accepted: Vec<String>,
    /// Ids of events already stored (by an earlier append, or earlier in
    /// the same batch); nothing new was written for them.
    pub duplicates: Vec<String>,
    /// Position in the batch and the reasons (joined by `"; "`) of every
    /// event that was not stored.
    pub rejected: Vec<(usize, String)>,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the directory.
    pub segments: usize,
    /// Event ids loaded into the deduplication window.
    pub indexed_ids: usize,
    /// Intact records in the window whose id could not be read (written by
    /// another schema's writer); they are not deduplicated against.
    pub unreadable_records: usize,
    /// Where a torn tail was cut off the newest segment, and why.
    pub truncated: Option<Truncation>,
}

/// A torn tail removed from the newest segment on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub path: PathBuf,
    /// The new length of the segment.
    pub offset: u64,
    /// Bytes removed.
    pub removed_bytes: u64,
    pub reason: String,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Events stored.
    pub events: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// Group commits, i.e. `fdatasync` calls on segments.
    pub commits: u64,
    /// Segments started after the one open at open time.
    pub rotations: u64,
}

/// The segment being appended to.
struct ActiveSegment {
    seq: u64,
    path: PathBuf,
    /// Shared with the threads syncing groups already written to it.
    file: Arc<File>,
    len: u64,
}

/// What writing a group left behind.
enum Written {
    /// The segment stays active; the group still needs its sync.
    Open(ActiveSegment),
    /// The segment reached its size limit and was synced (the group with
    /// it) and sealed; the new active segment, unless creating it failed.
    Sealed(Result<ActiveSegment, IngestError>),
}

struct State {
    dedup: DedupWindow,
    /// Framed records accepted but not yet handed to a writer.
    pending: Vec<u8>,
    pending_ids: Vec<IdHash>,
    /// Events in `pending`.
    pending_events: u64,
    /// An empty buffer kept to swap with `pending`, so that allocations are
    /// reused from one group to the next.
    spare: Vec<u8>,
    /// Ticket of the newest batch queued in `pending` or being written;
    /// tickets count up from 1.
    enqueued: u64,
    /// Every batch with a ticket up to this one is durable.
    durable: u64,
    /// `None` while a thread is writing a group (or after a failure).
    writer: Option<ActiveSegment>,
    /// Groups written whose sync has not returned yet.
    syncing: usize,
    failed: Option<String>,
    stats: IngestStats,
}

/// An append-only, durable log of telemetry events; see the module
/// documentation. `IngestLog` is `Sync`: share it (e.g. in an `Arc`)
/// between any number of appending threads.
pub struct IngestLog {
    dir: PathBuf,
    options: IngestOptions,
    hasher: IdHasher,
    state: Mutex<State>,
    committed: Condvar,
    recovery: RecoveryReport,
    /// Held open for the advisory lock on [`LOCK_FILE`].
    _lock: File,
}

impl IngestLog {
    /// Opens the log in `dir` with default options, creating the directory
    /// if needed.
    pub fn open(dir: &Path) -> Result<Self, IngestError> {
        Self::open_with(dir, IngestOptions::default())
    }

    /// Opens (or creates) the log in `dir`: takes the directory's lock,
    /// truncates a torn tail off the newest segment, and rebuilds the
    /// deduplication window.
    pub fn open_with(dir: &Path, options: IngestOptions) -> Result<Self, IngestError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(IngestError::io(dir))?;
            // Make the new directory's own entry durable too.
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
                _ => sync_dir(Path::new("."))?,
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(IngestError::io(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => IngestError::Locked {
                path: lock_path.clone(),
            },
            std::fs::TryLockError::Error(source) => IngestError::Io {
                path: lock_path.clone(),
                source,
            },
        })?;

        let segments = list_segments(dir)?;
        let mut dedup = DedupWindow::new(options.dedup_segments);
        let mut recovery = RecoveryReport {
            segments: segments.len(),
            ..RecoveryReport::default()
        };
        let hasher = IdHasher::new();
        let window_start = segments.len().saturating_sub(options.dedup_segments.max(1));
        let mut newest_len = 0;
        for (index, segment) in segments.iter().enumerate().skip(window_start) {
            let newest = index + 1 == segments.len();
            dedup.start_segment(segment.seq);
            let (valid_len, damage) = index_segment(segment, &hasher, &mut dedup, &mut recovery)?;
            match damage {
                None => {}
                Some(damage) if newest => {
                    recovery.truncated = Some(truncate_tail(segment, valid_len, damage)?);
                }
                Some(damage) => {
                    return Err(IngestError::Corrupt {
                        path: segment.path.clone(),
                        offset: damage.offset,
                        reason: damage.reason,
                    });
                }
            }
            if newest {
                newest_len = valid_len.max(segment::HEADER_LEN);
            }
        }
        recovery.indexed_ids = dedup.len();

        let writer = match segments.last() {
            Some(segment) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(IngestError::io(&segment.path))?;
                ActiveSegment {
                    seq: segment.seq,
                    path: segment.path.clone(),
                    file: Arc::new(file),
                    len: newest_len,
                }
            }
            None => {
                let segment = create_segment(dir, 1)?;
                dedup.start_segment(segment.seq);
                segment
            }
        };

        Ok(IngestLog {
            dir: dir.to_path_buf(),
            options,
            hasher,
            state: Mutex::new(State {
                dedup,
                pending: Vec::new(),
                pending_ids: Vec::new(),
                pending_events: 0,
                spare: Vec::new(),
                enqueued: 0,
                durable: 0,
                writer: Some(writer),
                syncing: 0,
                failed: None,
                stats: IngestStats::default(),
            }),
            committed: Condvar::new(),
            recovery,
            _lock: lock,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the log found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> Result<IngestStats, IngestError> {
        Ok(self.lock()?.stats)
    }

    /// Validates `events` (against the system clock), drops duplicates, and
    /// stores the rest durably. Returns once every accepted event (and the
    /// stored copy of every duplicate) is on disk. An invalid event is
    /// rejected with its reasons; the valid events of the same batch are
    /// still stored.
    ///
    /// An `Err` means nothing in the batch is acknowledged (some of it may
    /// have reached the disk); after an I/O failure the log refuses further
    /// appends until it is reopened.
    pub fn append_batch(&self, events: &[TelemetryEvent]) -> Result<AppendReport, IngestError> {
        self.append_items(events.iter().map(Ok), unix_now_ms())
    }

    /// [`append_batch`](Self::append_batch) for a decoded wire batch
    /// (`hearth_core::telemetry::parse_json_batch` or `decode_batch`): an
    /// item that did not decode is rejected with its reason, and rejection
    /// positions refer to `items`.
    pub fn append_decoded(
        &self,
        items: &[Result<TelemetryEvent, String>],
    ) -> Result<AppendReport, IngestError> {
        self.append_items(
            items
                .iter()
                .map(|item| item.as_ref().map_err(String::as_str)),
            unix_now_ms(),
        )
    }

    /// Like [`append_batch`](Self::append_batch) with `now_ms` (Unix
    /// milliseconds) as the clock that timestamps are checked against.
    pub fn append_batch_at(
        &self,
        events: &[TelemetryEvent],
        now_ms: i64,
    ) -> Result<AppendReport, IngestError> {
        self.append_items(events.iter().map(Ok), now_ms)
    }

    /// Reads every stored event, oldest first (see [`LogReader`]).
    pub fn read_all(&self) -> Result<Vec<TelemetryEvent>, IngestError> {
        LogReader::open(&self.dir)?
            .map(|stored| stored.map(|stored| stored.event))
            .collect()
    }

    /// An iterator over the stored events, oldest first.
    pub fn reader(&self) -> Result<LogReader, IngestError> {
        LogReader::open(&self.dir)
    }

    /// The segment files, oldest first; all but the last are sealed and
    /// never written again.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, IngestError> {
        list_segments(&self.dir)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, IngestError> {
        self.state.lock().map_err(|_| IngestError::Poisoned)
    }

    fn append_items<'a>(
        &self,
        items: impl Iterator<Item = Result<&'a TelemetryEvent, &'a str>>,
        now_ms: i64,
    ) -> Result<AppendReport, IngestError> {
        // Outside the lock: validate, frame, checksum and hash.
        let mut report = AppendReport::default();
        let mut records = Vec::new();
        let mut candidates = Vec::new();
        for (index, item) in items.enumerate() {
            let event = match item {
                Ok(event) => event,
                Err(reason) => {
                    report.rejected.push((index, reason.to_owned()));
                    continue;
                }
            };
            if let Err(reasons) = event.validate(now_ms) {
                report.rejected.push((index, reasons.join("; ")));
                continue;
            }
            let range = frame_event(event, &mut records);
            candidates.push((
                event.event_id.as_str(),
                self.hasher.hash(&event.event_id),
                range,
            ));
        }

        let mut state = self.lock()?;
        if let Some(reason) = &state.failed {
            return Err(IngestError::Stopped(reason.clone()));
        }
        let mut claimed = Vec::with_capacity(candidates.len());
        let mut stored = Vec::with_capacity(candidates.len());
        for (_, hash, _) in &candidates {
            let new = state.dedup.claim(*hash);
            stored.push(new);
            if new {
                claimed.push(*hash);
            }
        }
        let duplicates = candidates.len() - claimed.len();
        let ticket = if !claimed.is_empty() {
            let state = &mut *state;
            if duplicates == 0 {
                state.pending.extend_from_slice(&records);
            } else {
                for ((_, _, range), stored) in candidates.iter().zip(&stored) {
                    if *stored {
                        state.pending.extend_from_slice(&records[range.clone()]);
                    }
                }
            }
            state.pending_events += claimed.len() as u64;
            state.pending_ids.extend_from_slice(&claimed);
            state.enqueued += 1;
            state.enqueued
        } else if duplicates > 0 {
            // The stored copies may still be in a group being written.
            state.enqueued
        } else {
            0
        };
        drop(records);
        self.wait_durable(state, ticket)?;

        report.accepted.reserve(claimed.len());
        report.duplicates.reserve(duplicates);
        for ((id, _, _), stored) in candidates.iter().zip(&stored) {
            if *stored {
                report.accepted.push((*id).to_owned());
            } else {
                report.duplicates.push((*id).to_owned());
            }
        }
        Ok(report)
    }

    /// Returns once batch `ticket` is durable, writing and syncing groups of
    /// queued batches whenever the write slot is free.
    fn wait_durable<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        ticket: u64,
    ) -> Result<(), IngestError> {
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if let Some(reason) = &state.failed {
                return Err(IngestError::Stopped(reason.clone()));
            }
            let may_write = !state.pending.is_empty()
                && state.syncing < self.options.max_concurrent_syncs.max(1);
            let writer = if may_write { state.writer.take() } else { None };
            let Some(writer) = writer else {
                // A thread writing or syncing notifies when it is done.
                state = self
                    .committed
                    .wait(state)
                    .map_err(|_| IngestError::Poisoned)?;
                continue;
            };
            // This thread writes the group: everything queued so far.
            let spare = std::mem::take(&mut state.spare);
            let mut group = std::mem::replace(&mut state.pending, spare);
            let ids = std::mem::take(&mut state.pending_ids);
            state.stats.events += std::mem::take(&mut state.pending_events);
            state.stats.bytes += group.len() as u64;
            state.dedup.commit(writer.seq, ids);
            let group_ticket = state.enqueued;
            state.syncing += 1;
            drop(state);

            let written = self.write_group(writer, &group);
            group.clear();
            state = self.lock()?;
            if state.spare.capacity() < group.capacity() {
                state.spare = group;
            }
            let synced = match written {
                Err(e) => Err(e),
                Ok(Written::Sealed(next)) => {
                    // The sealing sync made every group of the old segment
                    // durable, this one included.
                    state.stats.commits += 1;
                    match next {
                        Ok(next) => {
                            state.stats.rotations += 1;
                            state.dedup.start_segment(next.seq);
                            state.writer = Some(next);
                        }
                        Err(e) => state.failed = Some(e.to_string()),
                    }
                    Ok(())
                }
                Ok(Written::Open(writer)) => {
                    // Free the write slot so the next group can be written
                    // while this one syncs: an fdatasync covers every write
                    // made before it, so a later sync finishing first still
                    // implies this group is durable.
                    let file = Arc::clone(&writer.file);
                    let path = writer.path.clone();
                    state.writer = Some(writer);
                    self.committed.notify_all();
                    drop(state);
                    let synced = file.sync_data().map_err(IngestError::io(&path));
                    state = self.lock()?;
                    if synced.is_ok() {
                        state.stats.commits += 1;
                    }
                    synced
                }
            };
            state.syncing -= 1;
            match synced {
                Ok(()) => state.durable = state.durable.max(group_ticket),
                Err(e) => {
                    if state.failed.is_none() {
                        state.failed = Some(e.to_string());
                    }
                    self.committed.notify_all();
                    return Err(e);
                }
            }
            self.committed.notify_all();
        }
    }

    /// Writes one group with a single `write_all`. A segment that reaches
    /// its size limit is synced, sealed and replaced by a new one.
    fn write_group(&self, mut writer: ActiveSegment, group: &[u8]) -> Result<Written, IngestError> {
        (&*writer.file)
            .write_all(group)
            .map_err(IngestError::io(&writer.path))?;
        writer.len += group.len() as u64;
        if writer.len < self.options.segment_bytes {
            return Ok(Written::Open(writer));
        }
        writer
            .file
            .sync_data()
            .map_err(IngestError::io(&writer.path))?;
        Ok(Written::Sealed(create_segment(&self.dir, writer.seq + 1)))
    }
}

/// Creates segment `seq` with its header, durably (file and directory).
fn create_segment(dir: &Path, seq: u64) -> Result<ActiveSegment, IngestError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(IngestError::io(&path))?;
    file.write_all(&header_bytes())
        .and_then(|()| file.sync_all())
        .map_err(IngestError::io(&path))?;
    sync_dir(dir)?;
    Ok(ActiveSegment {
        seq,
        path,
        file: Arc::new(file),
        len: segment::HEADER_LEN,
    })
}

fn sync_dir(dir: &Path) -> Result<(), IngestError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IngestError::io(dir))
}

/// Loads the ids of `segment` into the window; returns the length of its
/// intact prefix and the damage that ends it, if any.
fn index_segment(
    segment: &SegmentInfo,
    hasher: &IdHasher,
    dedup: &mut DedupWindow,
    recovery: &mut RecoveryReport,
) -> Result<(u64, Option<segment::Damage>), IngestError> {
    let mut reader = RecordReader::open(&segment.path)?;
    let mut ids = Vec::new();
    let mut valid_len = segment::HEADER_LEN;
    let damage = loop {
        match reader.next_record()? {
            Next::Record { offset, payload } => {
                valid_len = offset + (segment::RECORD_HEADER_LEN + payload.len()) as u64;
                match decode_event_id(payload) {
                    Ok(id) => {
                        let hash = hasher.hash(id);
                        if dedup.claim(hash) {
                            ids.push(hash);
                        }
                    }
                    Err(_) => recovery.unreadable_records += 1,
                }
            }
            Next::End => break None,
            Next::Damaged(damage) => {
                valid_len = damage.offset;
                break Some(damage);
            }
        }
    };
    dedup.commit(segment.seq, ids);
    Ok((valid_len, damage))
}

/// Cuts the newest segment back to its intact prefix (rewriting the header
/// if even that was torn) and syncs it.
fn truncate_tail(
    segment: &SegmentInfo,
    valid_len: u64,
    damage: segment::Damage,
) -> Result<Truncation, IngestError> {
    let path = &segment.path;
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(IngestError::io(path))?;
    let file_len = file.metadata().map_err(IngestError::io(path))?.len();
    file.set_len(valid_len).map_err(IngestError::io(path))?;
    let mut new_len = valid_len;
    if valid_len < segment::HEADER_LEN {
        file.write_all(&header_bytes())
            .map_err(IngestError::io(path))?;
        new_len = segment::HEADER_LEN;
    }
    file.sync_all().map_err(IngestError::io(path))?;
    Ok(Truncation {
        path: path.clone(),
        offset: new_len,
        removed_bytes: file_len.saturating_sub(valid_len),
        reason: damage.reason,
    })
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
