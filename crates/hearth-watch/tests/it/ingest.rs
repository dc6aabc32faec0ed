//! The ingest log: durability across SIGKILL, deduplication across reopen,
//! per-event rejection, torn-tail recovery, rotation and concurrency.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_core::telemetry::{
    Dimensions, EventKind, SCHEMA_VERSION, TelemetryEvent, encode_batch, parse_json_batch,
};
use hearth_watch::ingest::{IngestError, IngestLog, IngestOptions};

/// Set in the re-executed test binary: the log directory the child appends to.
const CHILD_DIR_ENV: &str = "HEARTH_INGEST_CRASH_CHILD_DIR";
/// Set in the re-executed test binary: which kill round the child is in.
const CHILD_ROUND_ENV: &str = "HEARTH_INGEST_CRASH_CHILD_ROUND";
/// Options shared by the crash child and the parent that reopens its log:
/// small segments so that kills also land around rotations, and a window
/// large enough to remember every id the test writes.
fn crash_options() -> IngestOptions {
    IngestOptions {
        segment_bytes: 1 << 20,
        dedup_segments: 1 << 10,
        ..IngestOptions::default()
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "hearth-ingest-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn event(id: &str) -> TelemetryEvent {
    let n = id.bytes().map(u64::from).sum::<u64>();
    TelemetryEvent {
        schema_version: SCHEMA_VERSION,
        event_id: id.to_owned(),
        request_id: format!("req-{id}"),
        timestamp_ms: now_ms() - 60_000,
        kind: EventKind::Chat,
        latency_ms: 500.0 + (n % 400) as f64,
        ttft_ms: Some(80.0 + (n % 50) as f64),
        tokens_per_s: Some(30.5),
        audio_rtf: None,
        failure: n.is_multiple_of(17).then(|| "timeout".to_owned()),
        peak_memory_mb: Some(350.0),
        dims: Dimensions {
            device_model: ["Pixel 7", "Galaxy S21", "iPhone 13"][(n % 3) as usize].to_owned(),
            os_version: "Android 14".to_owned(),
            app_version: "3.2.0".to_owned(),
            model_version: "smollm2-360m-q8@1.4".to_owned(),
            locale: "en-US".to_owned(),
            network: "wifi".to_owned(),
        },
    }
}

fn events(prefix: &str, count: usize) -> Vec<TelemetryEvent> {
    (0..count)
        .map(|i| event(&format!("{prefix}-{i}")))
        .collect()
}

fn stored_ids(log: &IngestLog) -> Vec<String> {
    log.read_all()
        .expect("log reads")
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

fn last_segment(log: &IngestLog) -> PathBuf {
    log.segments()
        .expect("segments list")
        .last()
        .expect("a segment exists")
        .path
        .clone()
}

/// Child mode of the crash test: appends batches from two threads until
/// killed, printing `ACK <id>` for every id once `append_batch` has returned
/// (accepted and duplicate ids alike: both are on disk by then).
#[test]
#[ignore = "child process of acknowledged_events_survive_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND_ENV).unwrap_or_default();
    let log =
        Arc::new(IngestLog::open_with(Path::new(&dir), crash_options()).expect("child opens"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads: Vec<_> = (0..2)
        .map(|thread| {
            let log = Arc::clone(&log);
            let round = round.clone();
            std::thread::spawn(move || {
                let mut previous_first = None;
                for batch in 0.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut batch_events = events(&format!("r{round}-t{thread}-b{batch}"), 500);
                    // A retry of an event already acknowledged, and a bad event.
                    if let Some(id) = previous_first.replace(batch_events[0].event_id.clone()) {
                        batch_events.push(event(&id));
                    }
                    let mut bad = event(&format!("r{round}-t{thread}-b{batch}-bad"));
                    bad.latency_ms = f64::NAN;
                    batch_events.push(bad);
                    let report = log.append_batch(&batch_events).expect("append");
                    let mut out = String::new();
                    for id in report.accepted.iter().chain(&report.duplicates) {
                        out.push_str("ACK ");
                        out.push_str(id);
                        out.push('\n');
                    }
                    if report.rejected.len() != 1 || report.rejected[0].0 != batch_events.len() - 1
                    {
                        out.push_str(&format!(
                            "ERR unexpected rejections {:?}\n",
                            report.rejected
                        ));
                    }
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(out.as_bytes()).expect("stdout");
                    stdout.flush().expect("stdout");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("child thread");
    }
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().expect("test binary path");
    // Kill points after the first acknowledgement, in ms: right away, inside
    // the first groups, and after several segment rotations.
    let delays_ms = [0u64, 7, 23, 61, 150];
    let mut acked_total = 0;
    let mut truncations = 0;
    for (round, base_ms) in delays_ms.iter().enumerate() {
        // Up to 10 ms of jitter from the clock, so that runs kill at
        // different points of the write, sync and rotation cycle.
        let jitter_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_micros() % 10_000)
            .unwrap_or_default();
        let delay = Duration::from_millis(*base_ms) + Duration::from_micros(u64::from(jitter_us));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "ingest::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        // Wait for the first acknowledgement, then let it run a while more.
        let start = Instant::now();
        while !lines.iter().any(|l: &String| l.starts_with("ACK ")) {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(60).saturating_sub(start.elapsed()))
                .expect("child acknowledges within a minute");
            lines.push(line);
        }
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        lines.extend(lines_rx.try_iter());

        let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("ERR")).collect();
        assert!(
            errors.is_empty(),
            "round {round}: child reported {errors:?}"
        );
        let acked: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ACK "))
            .collect();
        assert!(!acked.is_empty());
        acked_total += acked.len();

        let log = IngestLog::open_with(dir.path(), crash_options()).expect("reopen after kill");
        truncations += usize::from(log.recovery().truncated.is_some());
        let stored = stored_ids(&log);
        let unique: HashSet<&str> = stored.iter().map(String::as_str).collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "round {round}: an id is stored twice"
        );
        let missing: Vec<_> = acked.iter().filter(|id| !unique.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged ids lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        // The recovered log takes appends again.
        let report = log
            .append_batch(&events(&format!("after-r{round}"), 3))
            .expect("append");
        assert_eq!(report.accepted.len(), 3);
        eprintln!(
            "round {round}: killed {delay:?} after the first ack; {} ids acked, {} stored, {} segments",
            acked.len(),
            stored.len(),
            log.recovery().segments
        );
    }
    eprintln!("{acked_total} acknowledged ids checked; {truncations} torn tails truncated");
}

#[test]
fn duplicates_are_recognised_across_reopen() {
    let dir = TempDir::new("dedup");
    let first = events("a", 20);
    {
        let log = IngestLog::open(dir.path()).expect("open");
        let report = log.append_batch(&first).expect("append");
        assert_eq!(report.accepted.len(), 20);
        assert!(report.duplicates.is_empty() && report.rejected.is_empty());
        // The same id twice in one batch is stored once.
        let twice = vec![event("b-0"), event("b-0")];
        let report = log.append_batch(&twice).expect("append");
        assert_eq!(report.accepted, vec!["b-0"]);
        assert_eq!(report.duplicates, vec!["b-0"]);
    }
    let log = IngestLog::open(dir.path()).expect("reopen");
    assert_eq!(log.recovery().indexed_ids, 21);
    assert_eq!(log.recovery().truncated, None);
    let mut retry = first[5..15].to_vec();
    retry.extend(events("c", 5));
    let report = log.append_batch(&retry).expect("append");
    assert_eq!(report.duplicates.len(), 10);
    assert_eq!(report.duplicates[0], "a-5");
    assert_eq!(report.accepted, vec!["c-0", "c-1", "c-2", "c-3", "c-4"]);
    let stored = stored_ids(&log);
    assert_eq!(stored.len(), 26);
    assert_eq!(stored.iter().collect::<HashSet<_>>().len(), 26);
}

#[test]
fn bad_events_are_rejected_with_reasons_and_good_ones_kept() {
    let dir = TempDir::new("reject");
    let log = IngestLog::open(dir.path()).expect("open");
    let mut batch = events("good", 4);
    let mut nan = event("nan");
    nan.latency_ms = f64::NAN;
    let mut empty_id = event("x");
    empty_id.event_id.clear();
    empty_id.dims.network = "a".repeat(100);
    let mut future = event("future");
    future.timestamp_ms = now_ms() + 3 * 86_400_000;
    let mut version = event("v2");
    version.schema_version = 2;
    batch.insert(1, nan);
    batch.insert(3, empty_id);
    batch.push(future);
    batch.push(version);
    let report = log.append_batch(&batch).expect("append");
    assert_eq!(
        report.accepted,
        vec!["good-0", "good-1", "good-2", "good-3"]
    );
    let positions: Vec<usize> = report.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, vec![1, 3, 6, 7]);
    let reason = |i: usize| report.rejected[i].1.as_str();
    assert!(
        reason(0).contains("latency_ms: must be a finite number"),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains("event_id: must not be empty"),
        "{}",
        reason(1)
    );
    assert!(
        reason(1).contains("; network: 100 bytes is longer than 64"),
        "{}",
        reason(1)
    );
    assert!(reason(2).contains("more than a day after"), "{}", reason(2));
    assert!(
        reason(3).contains("schema_version: 2 is not supported"),
        "{}",
        reason(3)
    );
    assert_eq!(
        stored_ids(&log),
        vec!["good-0", "good-1", "good-2", "good-3"]
    );
}

#[test]
fn wire_batches_keep_positions_of_undecodable_events() {
    let dir = TempDir::new("wire");
    let log = IngestLog::open(dir.path()).expect("open");

    let binary = encode_batch(&events("bin", 3));
    let mut items = hearth_core::telemetry::decode_batch(&binary).expect("decodes");
    items.insert(1, Err("kind: unknown tag 9".to_owned()));
    let report = log.append_decoded(&items).expect("append");
    assert_eq!(report.accepted, vec!["bin-0", "bin-1", "bin-2"]);
    assert_eq!(report.rejected, vec![(1, "kind: unknown tag 9".to_owned())]);

    let mut wrong = serde_json::to_value(event("json-1")).expect("json");
    wrong["tokens_per_s"] = "fast".into();
    let body = serde_json::json!({ "events": [event("json-0"), wrong, event("bin-0")] });
    let items = parse_json_batch(body.to_string().as_bytes()).expect("envelope parses");
    let report = log.append_decoded(&items).expect("append");
    assert_eq!(report.accepted, vec!["json-0"]);
    assert_eq!(report.duplicates, vec!["bin-0"]);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, 1);
    assert!(
        report.rejected[0]
            .1
            .contains("invalid type: string \"fast\"")
    );
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_survive() {
    let dir = TempDir::new("torn");
    let written: Vec<TelemetryEvent> = events("t", 30);
    let segment = {
        let log = IngestLog::open(dir.path()).expect("open");
        for chunk in written.chunks(10) {
            log.append_batch(chunk).expect("append");
        }
        last_segment(&log)
    };

    // A write cut short inside the last record.
    let len = std::fs::metadata(&segment).expect("segment").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    file.set_len(len - 5).expect("truncate");
    drop(file);
    {
        let log = IngestLog::open(dir.path()).expect("reopen");
        let truncated = log.recovery().truncated.clone().expect("tail truncated");
        assert_eq!(truncated.reason, "record is cut short");
        assert!(truncated.removed_bytes > 0 && truncated.removed_bytes < 300);
        assert_eq!(truncated.offset + truncated.removed_bytes, len - 5);
        let stored = log.read_all().expect("reads");
        assert_eq!(stored, written[..29].to_vec());
        // The lost event was never acknowledged, so a retry stores it.
        let report = log.append_batch(&written[29..]).expect("append");
        assert_eq!(report.accepted, vec!["t-29"]);
    }

    // Garbage after the last record (a write of which only noise landed).
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment");
    file.write_all(&[0x20, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .expect("write");
    drop(file);
    {
        let log = IngestLog::open(dir.path()).expect("reopen");
        let truncated = log.recovery().truncated.clone().expect("tail truncated");
        assert_eq!(truncated.removed_bytes, 11);
        assert_eq!(log.read_all().expect("reads"), written);
    }

    // A new segment whose header never made it to disk.
    let next = dir.path().join("segment-00000000000000000002.log");
    std::fs::write(&next, b"HWIN").expect("write");
    let log = IngestLog::open(dir.path()).expect("reopen");
    assert_eq!(
        log.recovery().truncated.as_ref().map(|t| t.reason.as_str()),
        Some("segment header is incomplete")
    );
    let report = log.append_batch(&events("u", 2)).expect("append");
    assert_eq!(report.accepted.len(), 2);
    assert!(std::fs::metadata(&next).expect("segment 2").len() > 12);
    assert_eq!(stored_ids(&log).len(), 32);
}

#[test]
fn segments_rotate_and_old_ids_leave_the_dedup_window() {
    let dir = TempDir::new("rotate");
    let options = IngestOptions {
        segment_bytes: 2048,
        dedup_segments: 2,
        ..IngestOptions::default()
    };
    let written = events("r", 100);
    {
        let log = IngestLog::open_with(dir.path(), options.clone()).expect("open");
        for chunk in written.chunks(10) {
            let report = log.append_batch(chunk).expect("append");
            assert_eq!(report.accepted.len(), 10);
        }
        let stats = log.stats().expect("stats");
        assert_eq!(stats.events, 100);
        assert_eq!(stats.commits, 10);
        assert!(stats.rotations >= 3, "{stats:?}");
        let segments = log.segments().expect("segments");
        assert_eq!(segments.len() as u64, stats.rotations + 1);
        assert!(
            segments[..segments.len() - 1]
                .iter()
                .all(|s| s.bytes >= 2048)
        );
        assert_eq!(log.read_all().expect("reads"), written);
    }
    let log = IngestLog::open_with(dir.path(), options).expect("reopen");
    // The newest two segments are remembered, the first is not.
    let report = log
        .append_batch(&[written[99].clone(), written[0].clone()])
        .expect("append");
    assert_eq!(report.duplicates, vec!["r-99"]);
    assert_eq!(report.accepted, vec!["r-0"]);
}

#[test]
fn damage_inside_a_sealed_segment_is_reported() {
    let dir = TempDir::new("sealed");
    let options = IngestOptions {
        segment_bytes: 2048,
        dedup_segments: 100,
        ..IngestOptions::default()
    };
    {
        let log = IngestLog::open_with(dir.path(), options.clone()).expect("open");
        for chunk in events("s", 40).chunks(10) {
            log.append_batch(chunk).expect("append");
        }
        assert!(log.segments().expect("segments").len() >= 3);
    }
    let first = dir.path().join("segment-00000000000000000001.log");
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[100] ^= 0x40;
    std::fs::write(&first, &bytes).expect("write");

    match IngestLog::open_with(dir.path(), options) {
        Err(IngestError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, first);
            assert_eq!(reason, "record checksum does not match");
        }
        other => panic!("expected a corruption error, got {:?}", other.map(|_| ())),
    }
    // A window that skips the damaged segment opens; reading reports it.
    let log = IngestLog::open_with(
        dir.path(),
        IngestOptions {
            segment_bytes: 2048,
            dedup_segments: 1,
            ..IngestOptions::default()
        },
    )
    .expect("opens without scanning the damaged segment");
    let results: Vec<_> = log.reader().expect("reader").collect();
    let errors = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(errors, 1);
    assert!(matches!(
        results.iter().find(|r| r.is_err()),
        Some(Err(IngestError::Corrupt { .. }))
    ));
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = TempDir::new("lock");
    let _log = IngestLog::open(dir.path()).expect("open");
    assert!(matches!(
        IngestLog::open(dir.path()),
        Err(IngestError::Locked { .. })
    ));
}

#[test]
fn concurrent_appenders_lose_nothing() {
    let dir = TempDir::new("concurrent");
    let log = Arc::new(IngestLog::open(dir.path()).expect("open"));
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut accepted = 0;
                for batch in 0..25 {
                    let mut batch_events = events(&format!("c{thread}-{batch}"), 100);
                    // Every thread also sends one id that all threads share.
                    batch_events.push(event(&format!("shared-{batch}")));
                    let report = log.append_batch(&batch_events).expect("append");
                    assert_eq!(report.accepted.len() + report.duplicates.len(), 101);
                    accepted += report.accepted.len();
                }
                accepted
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(accepted, 4 * 25 * 100 + 25);
    let stored = stored_ids(&log);
    assert_eq!(stored.len(), accepted);
    assert_eq!(stored.iter().collect::<HashSet<_>>().len(), accepted);
    let stats = log.stats().expect("stats");
    assert!(stats.commits <= 100, "{stats:?}");
    eprintln!(
        "100 batches from 4 threads in {} group commits",
        stats.commits
    );
}
