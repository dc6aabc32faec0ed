//! Webhook delivery of alert transitions: one JSON POST per transition,
//! retried with exponential backoff.
//!
//! Transport errors, `429` and `5xx` answers are retried (the receiver may
//! be restarting or shedding load); any other answer is final, since
//! sending the same body again cannot change it. The wait between tries is
//! injected, so the policy is tested without sleeping.

use std::time::Duration;

use serde::Serialize;

use crate::alerts::{AlertRecord, AlertState};

/// Where and how persistently to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    /// Tries in all, at least 1.
    pub attempts: u32,
    /// Wait after the first failed try; doubles after each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }

    /// The wait after failed try `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// What can stop a delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("webhook answered {status} after {attempts} tries")]
    Status { status: u16, attempts: u32 },
    #[error("webhook unreachable after {attempts} tries: {message}")]
    Transport { message: String, attempts: u32 },
    #[error("cannot encode the webhook body: {0}")]
    Json(#[from] serde_json::Error),
}

/// A delivered notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub status: u16,
    pub attempts: u32,
}

/// The body posted for an alert.
#[derive(Debug, Serialize)]
pub struct Notification<'a> {
    /// What happened: `opened`, `reopened`, `updated`, `acknowledged`,
    /// `resolved`.
    pub event: &'a str,
    pub id: &'a str,
    pub state: AlertState,
    pub summary: String,
    pub alert: &'a crate::pipeline::Alert,
}

impl<'a> Notification<'a> {
    pub fn new(event: &'a str, record: &'a AlertRecord) -> Self {
        let alert = &record.alert;
        Notification {
            event,
            id: &record.id,
            state: record.state,
            summary: format!(
                "{} {:+.0} % ({} → {}), cause {}",
                alert.metric,
                alert.relative_change * 100.0,
                alert.baseline,
                alert.current,
                alert.root_cause_label()
            ),
            alert,
        }
    }
}

/// Posts `body` as JSON, retrying as the module documentation says;
/// `sleep` waits between tries.
pub fn post_json_with(
    config: &WebhookConfig,
    body: &impl Serialize,
    mut sleep: impl FnMut(Duration),
) -> Result<Delivery, WebhookError> {
    let text = serde_json::to_string(body)?;
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let attempts = config.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = agent
            .post(&config.url)
            .set("Content-Type", "application/json")
            .send_string(&text);
        match result {
            Ok(response) => {
                return Ok(Delivery {
                    status: response.status(),
                    attempts: attempt,
                });
            }
            Err(ureq::Error::Status(status, _)) => {
                let retryable = status == 429 || status >= 500;
                if !retryable || attempt >= attempts {
                    return Err(WebhookError::Status {
                        status,
                        attempts: attempt,
                    });
                }
            }
            Err(ureq::Error::Transport(transport)) => {
                if attempt >= attempts {
                    return Err(WebhookError::Transport {
                        message: transport.to_string(),
                        attempts: attempt,
                    });
                }
            }
        }
        sleep(config.backoff(attempt));
    }
}

/// [`post_json_with`] sleeping for real.
pub fn post_json(config: &WebhookConfig, body: &impl Serialize) -> Result<Delivery, WebhookError> {
    post_json_with(config, body, std::thread::sleep)
}

/// Notifies the webhook of `event` on `record`.
pub fn notify(
    config: &WebhookConfig,
    event: &str,
    record: &AlertRecord,
) -> Result<Delivery, WebhookError> {
    post_json(config, &Notification::new(event, record))
}
