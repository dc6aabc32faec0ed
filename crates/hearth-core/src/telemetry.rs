//! Telemetry events: what a device reports about each request it served.
//!
//! One [`TelemetryEvent`] describes one request: when it ran, how long it
//! took, whether it failed, and the slice it belongs to ([`Dimensions`]).
//! The type carries its `schema_version`; a reader accepts only versions it
//! knows and rejects the others with a reason instead of guessing at fields.
//!
//! Two wire forms exist. JSON ([`parse_json_batch`]) is the readable one. The
//! compact binary batch ([`encode_batch`], [`decode_batch`]) frames every
//! event as a length-prefixed record, so that one corrupt record is reported
//! on its own and the records after it still decode. The binary form of one
//! event ([`encode_event`]) is also the record payload of the watch ingest
//! log, so an event is encoded once on its way to disk.
//!
//! Binary layout (integers are LEB128 varints unless noted; signed ones
//! zig-zag encoded; strings are a varint byte length and UTF-8 bytes):
//!
//! ```text
//! batch  := "HTEV" codec_version:u8 count (record_len record){count}
//! record := schema_version event_id request_id timestamp_ms:zigzag kind:u8
//!           flags:u8 latency_ms:f64le [ttft_ms:f64le] [tokens_per_s:f64le]
//!           [audio_rtf:f64le] [peak_memory_mb:f64le] [failure]
//!           device_model os_version app_version model_version locale network
//! ```
//!
//! Every schema version starts with `schema_version` and `event_id`, so a
//! reader can name (and deduplicate) an event it cannot otherwise read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest `event_id` and `request_id`, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Longest dimension value, in characters.
pub const MAX_DIM_CHARS: usize = 64;
/// Longest failure code, in characters.
pub const MAX_FAILURE_CHARS: usize = 64;
/// The earliest accepted timestamp: 2000-01-01T00:00:00Z in Unix milliseconds.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
/// How far past the receiver's clock a timestamp may lie (one day), to
/// tolerate device clock skew.
pub const MAX_FUTURE_SKEW_MS: i64 = 86_400_000;
/// Longest accepted duration (latency, time to first token): one day, in ms.
pub const MAX_DURATION_MS: f64 = 86_400_000.0;
/// Highest accepted generation rate, in tokens per second.
pub const MAX_TOKENS_PER_S: f64 = 1.0e6;
/// Highest accepted audio real-time factor (processing time / audio time).
pub const MAX_AUDIO_RTF: f64 = 1.0e4;
/// Highest accepted peak memory, in MiB (16 TiB).
pub const MAX_PEAK_MEMORY_MB: f64 = 16_777_216.0;

/// The magic bytes that open a binary batch.
pub const BATCH_MAGIC: [u8; 4] = *b"HTEV";
/// The binary batch framing version this build writes and reads.
pub const CODEC_VERSION: u8 = 1;

/// What kind of request an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Chat,
    Completion,
    Embedding,
    Transcription,
    Speech,
}

impl EventKind {
    /// Every kind, in binary tag order (tag = index + 1).
    pub const ALL: [EventKind; 5] = [
        EventKind::Chat,
        EventKind::Completion,
        EventKind::Embedding,
        EventKind::Transcription,
        EventKind::Speech,
    ];

    /// The name used in JSON and in stored columns.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Chat => "chat",
            EventKind::Completion => "completion",
            EventKind::Embedding => "embedding",
            EventKind::Transcription => "transcription",
            EventKind::Speech => "speech",
        }
    }

    fn tag(self) -> u8 {
        match self {
            EventKind::Chat => 1,
            EventKind::Completion => 2,
            EventKind::Embedding => 3,
            EventKind::Transcription => 4,
            EventKind::Speech => 5,
        }
    }

    fn from_tag(tag: u8) -> Option<EventKind> {
        let index = usize::from(tag).checked_sub(1)?;
        EventKind::ALL.get(index).copied()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The slice an event belongs to. Every value is 1 to [`MAX_DIM_CHARS`]
/// characters without control characters; a device that does not know a
/// value sends `"unknown"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimensions {
    pub device_model: String,
    pub os_version: String,
    pub app_version: String,
    pub model_version: String,
    pub locale: String,
    /// Network at the time of the request, e.g. `wifi`, `cellular`, `offline`.
    pub network: String,
}

impl Dimensions {
    /// The dimensions as `(name, value)` pairs, in schema order.
    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("device_model", &self.device_model),
            ("os_version", &self.os_version),
            ("app_version", &self.app_version),
            ("model_version", &self.model_version),
            ("locale", &self.locale),
            ("network", &self.network),
        ]
    }
}

/// One request as reported by a device. Durations are milliseconds,
/// timestamps Unix milliseconds (UTC), memory MiB. A `failure` of `None`
/// means the request succeeded.
///
/// Deserialising checks types only; call [`TelemetryEvent::validate`] before
/// trusting the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryEvent {
    /// Must be [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique per event (1 to [`MAX_ID_CHARS`] characters); retries of the
    /// same event reuse it, which is what deduplication keys on.
    pub event_id: String,
    /// The request the event describes (1 to [`MAX_ID_CHARS`] characters).
    pub request_id: String,
    /// When the request started, Unix milliseconds.
    pub timestamp_ms: i64,
    pub kind: EventKind,
    /// Wall time from request to last byte.
    pub latency_ms: f64,
    /// Time to first token (or first audio frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Generated tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Audio real-time factor: processing time over audio duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_rtf: Option<f64>,
    /// Failure code (e.g. `oom`, `timeout`, `model_load`); `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Peak resident memory during the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_mb: Option<f64>,
    pub dims: Dimensions,
}

impl TelemetryEvent {
    /// Checks the values against the schema's limits, with `now_ms` (Unix
    /// milliseconds) as the receiver's clock. On failure returns every reason,
    /// each naming its field.
    pub fn validate(&self, now_ms: i64) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.schema_version != SCHEMA_VERSION {
            reasons.push(unsupported_version(u64::from(self.schema_version)));
        }
        check_text(&mut reasons, "event_id", &self.event_id, MAX_ID_CHARS);
        check_text(&mut reasons, "request_id", &self.request_id, MAX_ID_CHARS);
        if self.timestamp_ms < MIN_TIMESTAMP_MS {
            reasons.push(format!(
                "timestamp_ms: {} is before 2000-01-01",
                self.timestamp_ms
            ));
        } else if self.timestamp_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            reasons.push(format!(
                "timestamp_ms: {} is more than a day after the receiver's clock ({now_ms})",
                self.timestamp_ms
            ));
        }
        check_measure(&mut reasons, "latency_ms", self.latency_ms, MAX_DURATION_MS);
        let optional = [
            ("ttft_ms", self.ttft_ms, MAX_DURATION_MS),
            ("tokens_per_s", self.tokens_per_s, MAX_TOKENS_PER_S),
            ("audio_rtf", self.audio_rtf, MAX_AUDIO_RTF),
            ("peak_memory_mb", self.peak_memory_mb, MAX_PEAK_MEMORY_MB),
        ];
        for (field, value, max) in optional {
            if let Some(value) = value {
                check_measure(&mut reasons, field, value, max);
            }
        }
        if let Some(ttft) = self.ttft_ms
            && ttft.is_finite()
            && self.latency_ms.is_finite()
            && self.latency_ms >= 0.0
            && ttft > self.latency_ms
        {
            reasons.push(format!(
                "ttft_ms: {ttft} exceeds latency_ms {}",
                self.latency_ms
            ));
        }
        if let Some(failure) = &self.failure {
            check_failure_code(&mut reasons, failure);
        }
        for (name, value) in self.dims.pairs() {
            check_text(&mut reasons, name, value, MAX_DIM_CHARS);
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

fn unsupported_version(found: u64) -> String {
    format!("schema_version: {found} is not supported (this build reads version {SCHEMA_VERSION})")
}

fn check_text(reasons: &mut Vec<String>, field: &str, value: &str, max_chars: usize) {
    if value.is_empty() {
        reasons.push(format!("{field}: must not be empty"));
        return;
    }
    // A UTF-8 character is at most 4 bytes: skip counting a huge string.
    let chars = if value.len() > 4 * max_chars {
        value.len()
    } else {
        value.chars().count()
    };
    if chars > max_chars {
        reasons.push(format!(
            "{field}: {} bytes is longer than {max_chars} characters",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        reasons.push(format!("{field}: contains a control character"));
    }
}

fn check_measure(reasons: &mut Vec<String>, field: &str, value: f64, max: f64) {
    if !value.is_finite() {
        reasons.push(format!("{field}: must be a finite number, got {value}"));
    } else if value < 0.0 {
        reasons.push(format!("{field}: must not be negative, got {value}"));
    } else if value > max {
        reasons.push(format!("{field}: {value} is above the limit {max}"));
    }
}

fn check_failure_code(reasons: &mut Vec<String>, code: &str) {
    if code.is_empty() {
        reasons.push("failure: must not be empty (omit it for a success)".to_owned());
    } else if code.len() > MAX_FAILURE_CHARS {
        reasons.push(format!(
            "failure: {} bytes is longer than {MAX_FAILURE_CHARS} characters",
            code.len()
        ));
    } else if !code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        reasons.push(format!(
            "failure: {code:?} is not a code (letters, digits, '_', '-', '.', ':')"
        ));
    }
}

/// Why a batch as a whole could not be read. Problems with single events are
/// not errors of the batch: they come back per event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("not a binary telemetry batch (expected magic \"HTEV\")")]
    BadMagic,
    #[error("binary batch version {found} is not supported (this build reads {CODEC_VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("batch truncated at byte {offset}: {what} is incomplete")]
    Truncated { offset: usize, what: &'static str },
    #[error("batch has a malformed varint at byte {offset}")]
    BadVarint { offset: usize },
    #[error("batch has {count} bytes after its last record")]
    TrailingBytes { count: usize },
    #[error("invalid JSON batch: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JSON form of a batch: `{"events": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatch {
    pub events: Vec<TelemetryEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseBatch {
    events: Vec<serde_json::Value>,
}

/// Parses a JSON batch (`{"events": [...]}`). Invalid JSON or a malformed
/// envelope is an error of the whole batch; an event of the wrong shape
/// (missing field, wrong type, unknown kind or schema version) comes back as
/// `Err(reason)` in its position while the others parse. The values are not
/// validated here (see [`TelemetryEvent::validate`]).
pub fn parse_json_batch(bytes: &[u8]) -> Result<Vec<Result<TelemetryEvent, String>>, CodecError> {
    // Typed parsing is the fast path; only a batch with a malformed event
    // pays for the second, per-event pass.
    if let Ok(batch) = serde_json::from_slice::<TelemetryBatch>(bytes) {
        return Ok(batch.events.into_iter().map(Ok).collect());
    }
    let loose: LooseBatch = serde_json::from_slice(bytes)?;
    Ok(loose.events.into_iter().map(event_from_json).collect())
}

fn event_from_json(value: serde_json::Value) -> Result<TelemetryEvent, String> {
    match value.get("schema_version").map(serde_json::Value::as_u64) {
        Some(Some(version)) if version != u64::from(SCHEMA_VERSION) => {
            return Err(unsupported_version(version));
        }
        _ => {}
    }
    match TelemetryEvent::deserialize(&value) {
        Ok(event) => Ok(event),
        Err(e) => Err(field_error(&value).unwrap_or_else(|| e.to_string())),
    }
}

/// Names the first field of a JSON event that does not have its schema
/// type, e.g. `latency_ms: invalid type: string "slow", expected f64`
/// (serde's own message for a `Value` carries no path).
fn field_error(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    fn check<'de, T: Deserialize<'de>>(field: &str, value: &'de Value) -> Option<String> {
        T::deserialize(value).err().map(|e| format!("{field}: {e}"))
    }
    let object = value.as_object()?;
    for (key, field) in object {
        let problem = match key.as_str() {
            "schema_version" => check::<u32>(key, field),
            "event_id" | "request_id" => check::<String>(key, field),
            "timestamp_ms" => check::<i64>(key, field),
            "kind" => check::<EventKind>(key, field),
            "latency_ms" => check::<f64>(key, field),
            "ttft_ms" | "tokens_per_s" | "audio_rtf" | "peak_memory_mb" => {
                check::<Option<f64>>(key, field)
            }
            "failure" => check::<Option<String>>(key, field),
            "dims" => match field.as_object() {
                Some(dims) => dims
                    .iter()
                    .find_map(|(name, dim)| check::<String>(&format!("dims.{name}"), dim)),
                None => check::<Dimensions>(key, field),
            },
            _ => None,
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

const FLAG_TTFT: u8 = 1;
const FLAG_TOKENS_PER_S: u8 = 1 << 1;
const FLAG_AUDIO_RTF: u8 = 1 << 2;
const FLAG_PEAK_MEMORY: u8 = 1 << 3;
const FLAG_FAILURE: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = 0b1_1111;

/// Encodes a batch in the binary form (see the module documentation).
pub fn encode_batch(events: &[TelemetryEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + events.len() * 192);
    out.extend_from_slice(&BATCH_MAGIC);
    out.push(CODEC_VERSION);
    put_varint(&mut out, events.len() as u64);
    let mut record = Vec::with_capacity(256);
    for event in events {
        record.clear();
        encode_event(event, &mut record);
        put_varint(&mut out, record.len() as u64);
        out.extend_from_slice(&record);
    }
    out
}

/// Appends the binary form of one event (one batch record, without its
/// length prefix) to `out`. Every event encodes, valid or not; the encoding
/// round-trips bit for bit through [`decode_event`].
pub fn encode_event(event: &TelemetryEvent, out: &mut Vec<u8>) {
    put_varint(out, u64::from(event.schema_version));
    put_str(out, &event.event_id);
    put_str(out, &event.request_id);
    put_varint(out, zigzag(event.timestamp_ms));
    out.push(event.kind.tag());
    let optional = [
        (FLAG_TTFT, event.ttft_ms),
        (FLAG_TOKENS_PER_S, event.tokens_per_s),
        (FLAG_AUDIO_RTF, event.audio_rtf),
        (FLAG_PEAK_MEMORY, event.peak_memory_mb),
    ];
    let mut flags = 0u8;
    for (flag, value) in optional {
        if value.is_some() {
            flags |= flag;
        }
    }
    if event.failure.is_some() {
        flags |= FLAG_FAILURE;
    }
    out.push(flags);
    out.extend_from_slice(&event.latency_ms.to_le_bytes());
    for value in optional.iter().filter_map(|(_, value)| *value) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    if let Some(failure) = &event.failure {
        put_str(out, failure);
    }
    for (_, value) in event.dims.pairs() {
        put_str(out, value);
    }
}

/// Decodes one record written by [`encode_event`]. The whole of `bytes` must
/// be the record. Errors name the field that could not be read.
pub fn decode_event(bytes: &[u8]) -> Result<TelemetryEvent, String> {
    let mut reader = Reader::new(bytes);
    let version = reader.varint("schema_version")?;
    if version != u64::from(SCHEMA_VERSION) {
        return Err(unsupported_version(version));
    }
    let event_id = reader.string("event_id")?;
    let request_id = reader.string("request_id")?;
    let timestamp_ms = unzigzag(reader.varint("timestamp_ms")?);
    let tag = reader.byte("kind")?;
    let kind = EventKind::from_tag(tag).ok_or_else(|| format!("kind: unknown tag {tag}"))?;
    let flags = reader.byte("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("flags: unknown bits in {flags:#04x}"));
    }
    let latency_ms = reader.f64("latency_ms")?;
    let mut optional = |flag: u8, field: &'static str| -> Result<Option<f64>, String> {
        if flags & flag != 0 {
            reader.f64(field).map(Some)
        } else {
            Ok(None)
        }
    };
    let ttft_ms = optional(FLAG_TTFT, "ttft_ms")?;
    let tokens_per_s = optional(FLAG_TOKENS_PER_S, "tokens_per_s")?;
    let audio_rtf = optional(FLAG_AUDIO_RTF, "audio_rtf")?;
    let peak_memory_mb = optional(FLAG_PEAK_MEMORY, "peak_memory_mb")?;
    let failure = if flags & FLAG_FAILURE != 0 {
        Some(reader.string("failure")?)
    } else {
        None
    };
    let dims = Dimensions {
        device_model: reader.string("device_model")?,
        os_version: reader.string("os_version")?,
        app_version: reader.string("app_version")?,
        model_version: reader.string("model_version")?,
        locale: reader.string("locale")?,
        network: reader.string("network")?,
    };
    if reader.remaining() != 0 {
        return Err(format!(
            "record has {} bytes after its last field",
            reader.remaining()
        ));
    }
    Ok(TelemetryEvent {
        schema_version: SCHEMA_VERSION,
        event_id,
        request_id,
        timestamp_ms,
        kind,
        latency_ms,
        ttft_ms,
        tokens_per_s,
        audio_rtf,
        failure,
        peak_memory_mb,
        dims,
    })
}

/// Reads the `event_id` of a record of any schema version (every version
/// starts with `schema_version` and `event_id`).
pub fn decode_event_id(bytes: &[u8]) -> Result<&str, String> {
    let mut reader = Reader::new(bytes);
    reader.varint("schema_version")?;
    reader.str("event_id")
}

/// Decodes a binary batch. A broken frame (bad magic or version, a record
/// length past the end, missing records, trailing bytes) is an error of the
/// batch; a record that is framed but does not decode comes back as
/// `Err(reason)` in its position while the others decode.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Result<TelemetryEvent, String>>, CodecError> {
    let magic_len = bytes.len().min(BATCH_MAGIC.len());
    if bytes[..magic_len] != BATCH_MAGIC[..magic_len] {
        return Err(CodecError::BadMagic);
    }
    let Some(&version) = bytes.get(BATCH_MAGIC.len()) else {
        return Err(CodecError::Truncated {
            offset: bytes.len(),
            what: "header",
        });
    };
    if version != CODEC_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let mut offset = BATCH_MAGIC.len() + 1;
    let count = frame_varint(bytes, &mut offset, "record count")?;
    // Every record takes at least one byte, which bounds the allocation.
    let capacity = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(bytes.len() - offset);
    let mut events = Vec::with_capacity(capacity);
    for _ in 0..count {
        let start = offset;
        let len = frame_varint(bytes, &mut offset, "record length")?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .filter(|&end| end <= bytes.len())
            .ok_or(CodecError::Truncated {
                offset: start,
                what: "record",
            })?;
        events.push(decode_event(&bytes[offset..end]));
        offset = end;
    }
    if offset != bytes.len() {
        return Err(CodecError::TrailingBytes {
            count: bytes.len() - offset,
        });
    }
    Ok(events)
}

fn frame_varint(bytes: &[u8], offset: &mut usize, what: &'static str) -> Result<u64, CodecError> {
    match read_varint(&bytes[*offset..]) {
        Varint::Value(value, used) => {
            *offset += used;
            Ok(value)
        }
        Varint::Truncated => Err(CodecError::Truncated {
            offset: *offset,
            what,
        }),
        Varint::Malformed => Err(CodecError::BadVarint { offset: *offset }),
    }
}

enum Varint {
    Value(u64, usize),
    Truncated,
    Malformed,
}

fn read_varint(bytes: &[u8]) -> Varint {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may carry only the top bit of a u64.
        if i == 9 && bits > 1 {
            return Varint::Malformed;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Varint::Value(value, i + 1);
        }
    }
    if bytes.len() >= 10 {
        Varint::Malformed
    } else {
        Varint::Truncated
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A cursor over one record; every read names its field on failure.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn varint(&mut self, field: &str) -> Result<u64, String> {
        match read_varint(&self.bytes[self.offset..]) {
            Varint::Value(value, used) => {
                self.offset += used;
                Ok(value)
            }
            Varint::Truncated => Err(format!("{field}: record ends inside it")),
            Varint::Malformed => Err(format!("{field}: malformed varint")),
        }
    }

    fn take(&mut self, field: &str, len: usize) -> Result<&'a [u8], String> {
        if len > self.remaining() {
            return Err(format!("{field}: record ends inside it"));
        }
        let all: &'a [u8] = self.bytes;
        let bytes = &all[self.offset..self.offset + len];
        self.offset += len;
        Ok(bytes)
    }

    fn byte(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.take(field, 1)?[0])
    }

    fn f64(&mut self, field: &str) -> Result<f64, String> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(field, 8)?);
        Ok(f64::from_le_bytes(raw))
    }

    fn str(&mut self, field: &str) -> Result<&'a str, String> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).map_err(|_| format!("{field}: length {len} too large"))?;
        let bytes = self.take(field, len)?;
        std::str::from_utf8(bytes).map_err(|_| format!("{field}: not valid UTF-8"))
    }

    fn string(&mut self, field: &str) -> Result<String, String> {
        self.str(field).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01

    fn sample() -> TelemetryEvent {
        TelemetryEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "ev-0001".into(),
            request_id: "req-0001".into(),
            timestamp_ms: NOW_MS - 5_000,
            kind: EventKind::Chat,
            latency_ms: 812.5,
            ttft_ms: Some(143.25),
            tokens_per_s: Some(31.0),
            audio_rtf: None,
            failure: None,
            peak_memory_mb: Some(412.0),
            dims: Dimensions {
                device_model: "Pixel 7".into(),
                os_version: "Android 14".into(),
                app_version: "3.2.0".into(),
                model_version: "smollm2-360m-q8@1.4".into(),
                locale: "en-US".into(),
                network: "wifi".into(),
            },
        }
    }

    /// Events compare bit for bit, so NaN payloads count as equal to themselves.
    fn same_bits(a: &TelemetryEvent, b: &TelemetryEvent) -> bool {
        let bits = |v: Option<f64>| v.map(f64::to_bits);
        a.schema_version == b.schema_version
            && a.event_id == b.event_id
            && a.request_id == b.request_id
            && a.timestamp_ms == b.timestamp_ms
            && a.kind == b.kind
            && a.latency_ms.to_bits() == b.latency_ms.to_bits()
            && bits(a.ttft_ms) == bits(b.ttft_ms)
            && bits(a.tokens_per_s) == bits(b.tokens_per_s)
            && bits(a.audio_rtf) == bits(b.audio_rtf)
            && bits(a.peak_memory_mb) == bits(b.peak_memory_mb)
            && a.failure == b.failure
            && a.dims == b.dims
    }

    fn reasons_of(event: &TelemetryEvent) -> Vec<String> {
        event.validate(NOW_MS).err().unwrap_or_default()
    }

    #[test]
    fn sample_event_is_valid() {
        assert_eq!(sample().validate(NOW_MS), Ok(()));
    }

    #[test]
    fn each_bad_value_is_named_in_a_reason() {
        type Mutation = fn(&mut TelemetryEvent);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |e| e.schema_version = 2,
                "schema_version: 2 is not supported",
            ),
            (|e| e.event_id.clear(), "event_id: must not be empty"),
            (
                |e| e.event_id = "x".repeat(65),
                "event_id: 65 bytes is longer than 64",
            ),
            (
                |e| e.request_id = "a\nb".into(),
                "request_id: contains a control",
            ),
            (
                |e| e.timestamp_ms = 0,
                "timestamp_ms: 0 is before 2000-01-01",
            ),
            (
                |e| e.timestamp_ms = NOW_MS + MAX_FUTURE_SKEW_MS + 1,
                "more than a day after",
            ),
            (
                |e| e.latency_ms = f64::NAN,
                "latency_ms: must be a finite number",
            ),
            (|e| e.latency_ms = -1.0, "latency_ms: must not be negative"),
            (
                |e| e.latency_ms = 1e12,
                "latency_ms: 1000000000000 is above",
            ),
            (
                |e| e.ttft_ms = Some(f64::INFINITY),
                "ttft_ms: must be a finite",
            ),
            (
                |e| e.ttft_ms = Some(900.0),
                "ttft_ms: 900 exceeds latency_ms 812.5",
            ),
            (
                |e| e.tokens_per_s = Some(-3.0),
                "tokens_per_s: must not be negative",
            ),
            (
                |e| e.audio_rtf = Some(f64::NAN),
                "audio_rtf: must be a finite",
            ),
            (
                |e| e.peak_memory_mb = Some(1e9),
                "peak_memory_mb: 1000000000 is above",
            ),
            (
                |e| e.failure = Some(String::new()),
                "failure: must not be empty",
            ),
            (
                |e| e.failure = Some("out of memory".into()),
                "is not a code",
            ),
            (
                |e| e.dims.locale = "é".repeat(65),
                "locale: 130 bytes is longer",
            ),
            (|e| e.dims.network.clear(), "network: must not be empty"),
        ];
        for (mutate, expected) in cases {
            let mut event = sample();
            mutate(&mut event);
            let reasons = reasons_of(&event);
            assert_eq!(reasons.len(), 1, "{expected}: {reasons:?}");
            assert!(reasons[0].contains(expected), "{expected}: {reasons:?}");
        }
    }

    #[test]
    fn every_problem_of_an_event_is_reported() {
        let mut event = sample();
        event.event_id.clear();
        event.latency_ms = f64::NAN;
        event.dims.device_model.clear();
        assert_eq!(reasons_of(&event).len(), 3);
    }

    #[test]
    fn multibyte_dimension_counts_characters_not_bytes() {
        let mut event = sample();
        event.dims.locale = "é".repeat(MAX_DIM_CHARS);
        assert_eq!(event.validate(NOW_MS), Ok(()));
    }

    #[test]
    fn json_round_trip_omits_absent_measures() {
        let event = sample();
        let json = serde_json::to_string(&event).expect("serialise");
        assert!(!json.contains("audio_rtf") && !json.contains("failure"));
        let back: TelemetryEvent = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, event);
    }

    #[test]
    fn json_batch_keeps_good_events_beside_malformed_ones() {
        let good = serde_json::to_value(sample()).expect("serialise");
        let mut wrong_type = good.clone();
        wrong_type["latency_ms"] = "slow".into();
        let mut future = good.clone();
        future["schema_version"] = 7.into();
        future["new_field"] = 1.into();
        let mut unknown_kind = good.clone();
        unknown_kind["kind"] = "dance".into();
        let mut bad_dim = good.clone();
        bad_dim["dims"]["locale"] = 5.into();
        let mut missing = good.clone();
        if let Some(object) = missing.as_object_mut() {
            object.remove("request_id");
        }
        let body = serde_json::json!({
            "events": [good, wrong_type, future, unknown_kind, 42, bad_dim, missing]
        });
        let parsed = parse_json_batch(body.to_string().as_bytes()).expect("batch parses");
        assert_eq!(parsed.len(), 7);
        assert_eq!(parsed[0].as_ref().ok(), Some(&sample()));
        let reasons: Vec<&str> = parsed[1..]
            .iter()
            .map(|r| r.as_ref().err().map_or("", String::as_str))
            .collect();
        assert_eq!(
            reasons,
            [
                "latency_ms: invalid type: string \"slow\", expected f64",
                "schema_version: 7 is not supported (this build reads version 1)",
                "kind: unknown variant `dance`, expected one of `chat`, `completion`, \
                 `embedding`, `transcription`, `speech`",
                "invalid type: integer `42`, expected struct TelemetryEvent",
                "dims.locale: invalid type: integer `5`, expected a string",
                "missing field `request_id`",
            ]
        );
    }

    #[test]
    fn json_batch_with_broken_envelope_is_an_error() {
        for body in [&b"{\"events\": [}"[..], b"[]", b"{\"event\": []}"] {
            assert!(matches!(parse_json_batch(body), Err(CodecError::Json(_))));
        }
    }

    #[test]
    fn binary_batch_reports_a_corrupt_record_and_decodes_the_rest() {
        let mut events = vec![sample(), sample(), sample()];
        events[1].event_id = "ev-0002".into();
        events[2].event_id = "ev-0003".into();
        let mut bytes = encode_batch(&events);
        // The second record's kind tag sits after its varints and strings;
        // find it by re-encoding the first record.
        let mut first = Vec::new();
        encode_event(&events[0], &mut first);
        let header = BATCH_MAGIC.len() + 2; // magic, version, count (one byte)
        let second = header + 1 + first.len() + 1; // skip first record and second length
        let kind_at = second + 1 + 1 + 7 + 1 + 8 + 6; // version, id, request id, timestamp
        assert_eq!(bytes[kind_at], EventKind::Chat.tag());
        bytes[kind_at] = 99;
        let decoded = decode_batch(&bytes).expect("framing intact");
        assert_eq!(decoded[0].as_ref().ok(), Some(&events[0]));
        assert_eq!(
            decoded[1].as_ref().err().map(String::as_str),
            Some("kind: unknown tag 99")
        );
        assert_eq!(decoded[2].as_ref().ok(), Some(&events[2]));
    }

    #[test]
    fn binary_batch_framing_errors() {
        let bytes = encode_batch(&[sample(), sample()]);
        for cut in [0, 3, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    decode_batch(&bytes[..cut]),
                    Err(CodecError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode_batch(&extra),
            Err(CodecError::TrailingBytes { count: 1 })
        ));
        let mut other_version = bytes.clone();
        other_version[4] = 2;
        assert!(matches!(
            decode_batch(&other_version),
            Err(CodecError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            decode_batch(b"{\"events\":[]}"),
            Err(CodecError::BadMagic)
        ));
        let huge_count = [&BATCH_MAGIC[..], &[1, 0xff, 0xff, 0xff, 0xff, 0x0f]].concat();
        assert!(matches!(
            decode_batch(&huge_count),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn future_schema_version_record_is_rejected_but_named() {
        let mut event = sample();
        event.schema_version = 2;
        let mut record = Vec::new();
        encode_event(&event, &mut record);
        assert_eq!(decode_event_id(&record), Ok("ev-0001"));
        let reason = decode_event(&record).expect_err("version 2 is unknown");
        assert!(
            reason.contains("schema_version: 2 is not supported"),
            "{reason}"
        );
    }

    #[test]
    fn varint_and_zigzag_edges() {
        for value in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert!(
                matches!(read_varint(&out), Varint::Value(v, n) if v == value && n == out.len())
            );
        }
        for value in [0i64, -1, 1, i64::MIN, i64::MAX, NOW_MS, -NOW_MS] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
        // An eleven-byte or overflowing varint is malformed, not a panic.
        assert!(matches!(read_varint(&[0xff; 11]), Varint::Malformed));
        assert!(matches!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Varint::Malformed
        ));
    }

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
    }

    fn arb_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            0.0..1e6f64
        ]
    }

    prop_compose! {
        fn arb_event()(
            schema_version in prop_oneof![Just(SCHEMA_VERSION), any::<u32>()],
            ids in (arb_text(70), arb_text(70)),
            timestamp_ms in any::<i64>(),
            kind in proptest::sample::select(EventKind::ALL.to_vec()),
            latency_ms in arb_f64(),
            measures in proptest::collection::vec(proptest::option::of(arb_f64()), 4),
            failure in proptest::option::of(arb_text(20)),
            dims in proptest::collection::vec(arb_text(12), 6),
        ) -> TelemetryEvent {
            TelemetryEvent {
                schema_version,
                event_id: ids.0,
                request_id: ids.1,
                timestamp_ms,
                kind,
                latency_ms,
                ttft_ms: measures[0],
                tokens_per_s: measures[1],
                audio_rtf: measures[2],
                peak_memory_mb: measures[3],
                failure,
                dims: Dimensions {
                    device_model: dims[0].clone(),
                    os_version: dims[1].clone(),
                    app_version: dims[2].clone(),
                    model_version: dims[3].clone(),
                    locale: dims[4].clone(),
                    network: dims[5].clone(),
                },
            }
        }
    }

    proptest! {
        #[test]
        fn binary_batch_round_trips(events in proptest::collection::vec(arb_event(), 0..8)) {
            let decoded = decode_batch(&encode_batch(&events)).expect("own encoding decodes");
            prop_assert_eq!(decoded.len(), events.len());
            for (event, back) in events.iter().zip(&decoded) {
                if event.schema_version == SCHEMA_VERSION {
                    let back = back.as_ref().expect("current version decodes");
                    prop_assert!(same_bits(event, back), "{:?} != {:?}", event, back);
                } else {
                    prop_assert!(back.is_err());
                    let mut record = Vec::new();
                    encode_event(event, &mut record);
                    prop_assert_eq!(decode_event_id(&record), Ok(event.event_id.as_str()));
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_batch(&bytes);
            let _ = decode_event(&bytes);
            let _ = decode_event_id(&bytes);
            let _ = parse_json_batch(&bytes);
        }

        #[test]
        fn corrupted_batches_never_panic(
            events in proptest::collection::vec(arb_event(), 1..4),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode_batch(&events);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
            let _ = decode_batch(&bytes);
            let len = cut.index(bytes.len() + 1);
            let _ = decode_batch(&bytes[..len]);
        }
    }
}
