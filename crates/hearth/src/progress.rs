//! Terminal progress for model pulls: one indicatif bar per phase on stderr.
//!
//! A phase with a known size is a byte bar with rate and time left; one
//! without (waiting for a lock, resolving a download) is a spinner. Finished
//! phases stay on screen as one line each. Nothing is drawn when stderr is not
//! a terminal, so logs and pipes stay clean.

use std::time::Duration;

use hearth_models::store::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const BAR_TEMPLATE: &str =
    "{msg:40!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}";
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {bytes:>10} {elapsed}";
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// Shows [`Progress`] phases as progress bars on stderr.
#[derive(Debug, Default)]
pub struct TerminalProgress {
    bar: Option<ProgressBar>,
}

impl TerminalProgress {
    /// No bar is drawn until a phase starts.
    pub fn new() -> Self {
        Self::default()
    }

    fn style(template: &str) -> ProgressStyle {
        // The templates are constants; the fallback only guards a future edit.
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl Progress for TerminalProgress {
    fn start(&mut self, what: &str, total: Option<u64>) {
        self.finish();
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(Self::style(BAR_TEMPLATE)),
            None => {
                let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(Self::style(SPINNER_TEMPLATE));
                spinner.enable_steady_tick(SPINNER_TICK);
                spinner
            }
        };
        bar.set_message(what.to_owned());
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        // A phase cut short by an error stays visible where it stopped.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}
