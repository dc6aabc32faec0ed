//! Alert lifecycle: open → acknowledged → resolved, deduplicated and
//! flap-damped, persisted as one JSON file.
//!
//! The policy is pure: [`AlertBook::observe`] and [`AlertBook::tick`] take
//! the time as an argument, so every rule is tested without a clock.
//! Records are keyed by the alert's stable id (metric and root cause), so a
//! re-detection updates the record instead of adding one. An alert resolves
//! only after a quiet period without detections, and one detected again
//! within a cool-down after resolving reopens the same record (one more
//! occurrence) rather than starting a new episode; this keeps a flapping
//! signal from paging over and over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::Alert;

/// The file an [`AlertBook`] is kept in, inside its directory.
pub const ALERTS_FILE: &str = "alerts.json";

/// What can go wrong loading, saving or changing alerts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid alerts file")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no alert with id {0:?}")]
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

/// Timing of the lifecycle, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// An alert resolves after this long without a detection.
    pub quiet_ms: i64,
    /// A detection this soon after resolving reopens the same episode.
    pub cooldown_ms: i64,
}

impl LifecyclePolicy {
    /// Resolve after `quiet` buckets, reopen within `cooldown` buckets.
    pub fn in_buckets(bucket_ms: i64, quiet: i64, cooldown: i64) -> Self {
        LifecyclePolicy {
            quiet_ms: bucket_ms.saturating_mul(quiet),
            cooldown_ms: bucket_ms.saturating_mul(cooldown),
        }
    }
}

impl Default for LifecyclePolicy {
    /// With 5-minute buckets: quiet for 12 buckets (1 h), cool-down 6 h.
    fn default() -> Self {
        LifecyclePolicy::in_buckets(300_000, 12, 72)
    }
}

/// One alert's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub state: AlertState,
    /// The latest detection's alert.
    pub alert: Alert,
    /// When the current episode opened, Unix ms.
    pub opened_ms: i64,
    /// Last detection, Unix ms.
    pub last_seen_ms: i64,
    pub acknowledged_ms: Option<i64>,
    pub resolved_ms: Option<i64>,
    /// Detections merged into the record (updates and reopenings included).
    pub occurrences: u32,
    /// Times it was reopened within the cool-down.
    pub reopened: u32,
    /// Episodes: 1, plus one per detection after a cool-down had passed.
    pub episode: u32,
}

/// What [`AlertBook::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A new alert (or a new episode of one resolved long ago).
    Opened,
    /// An open or acknowledged alert was detected again.
    Updated,
    /// A resolved alert detected again within the cool-down.
    Reopened,
}

/// All alerts, in the order they first opened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertBook {
    pub records: Vec<AlertRecord>,
}

impl AlertBook {
    /// Records a detection of `alert` at `now_ms`.
    pub fn observe(&mut self, alert: &Alert, now_ms: i64, policy: &LifecyclePolicy) -> Transition {
        let Some(record) = self.records.iter_mut().find(|record| record.id == alert.id) else {
            self.records.push(AlertRecord {
                id: alert.id.clone(),
                state: AlertState::Open,
                alert: alert.clone(),
                opened_ms: now_ms,
                last_seen_ms: now_ms,
                acknowledged_ms: None,
                resolved_ms: None,
                occurrences: 1,
                reopened: 0,
                episode: 1,
            });
            return Transition::Opened;
        };
        let mut merged = alert.clone();
        merged.onset_ms = merged.onset_ms.min(record.alert.onset_ms);
        record.occurrences += 1;
        record.last_seen_ms = record.last_seen_ms.max(now_ms);
        let transition = match (record.state, record.resolved_ms) {
            (AlertState::Resolved, Some(resolved))
                if now_ms.saturating_sub(resolved) <= policy.cooldown_ms =>
            {
                record.state = AlertState::Open;
                record.resolved_ms = None;
                record.acknowledged_ms = None;
                record.reopened += 1;
                Transition::Reopened
            }
            (AlertState::Resolved, _) => {
                record.state = AlertState::Open;
                record.resolved_ms = None;
                record.acknowledged_ms = None;
                record.opened_ms = now_ms;
                record.episode += 1;
                merged.onset_ms = alert.onset_ms;
                Transition::Opened
            }
            _ => Transition::Updated,
        };
        record.alert = merged;
        transition
    }

    /// Resolves every open or acknowledged alert quiet since
    /// `policy.quiet_ms` before `now_ms`; returns the ids resolved.
    pub fn tick(&mut self, now_ms: i64, policy: &LifecyclePolicy) -> Vec<String> {
        let mut resolved = Vec::new();
        for record in &mut self.records {
            if record.state != AlertState::Resolved
                && now_ms.saturating_sub(record.last_seen_ms) >= policy.quiet_ms
            {
                record.state = AlertState::Resolved;
                record.resolved_ms = Some(now_ms);
                resolved.push(record.id.clone());
            }
        }
        resolved
    }

    /// Marks an open alert acknowledged (no change for other states).
    pub fn acknowledge(&mut self, id: &str, now_ms: i64) -> Result<AlertState, AlertError> {
        let record = self.get_mut(id)?;
        if record.state == AlertState::Open {
            record.state = AlertState::Acknowledged;
            record.acknowledged_ms = Some(now_ms);
        }
        Ok(record.state)
    }

    pub fn get(&self, id: &str) -> Option<&AlertRecord> {
        self.records.iter().find(|record| record.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut AlertRecord, AlertError> {
        self.records
            .iter_mut()
            .find(|record| record.id == id)
            .ok_or_else(|| AlertError::NotFound(id.to_owned()))
    }

    /// Records whose id starts with `prefix`.
    pub fn find_prefix(&self, prefix: &str) -> Vec<&AlertRecord> {
        self.records
            .iter()
            .filter(|record| record.id.starts_with(prefix))
            .collect()
    }

    /// Loads `dir/alerts.json`; an absent file is an empty book.
    pub fn load(dir: &Path) -> Result<Self, AlertError> {
        let path = dir.join(ALERTS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AlertBook::default());
            }
            Err(source) => return Err(AlertError::Io { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| AlertError::Json { path, source })
    }

    /// Saves to `dir/alerts.json`, replacing it atomically (write a
    /// temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<(), AlertError> {
        let path = dir.join(ALERTS_FILE);
        let temporary = dir.join(format!("{ALERTS_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| AlertError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&temporary, text).map_err(|source| AlertError::Io {
            path: temporary.clone(),
            source,
        })?;
        std::fs::rename(&temporary, &path).map_err(|source| AlertError::Io { path, source })
    }
}
