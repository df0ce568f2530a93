//! The relay: delivering the outbox to the upstream node (sender side), applying relayed batches
//! idempotently (receiver side), and the final request / final answer exchange.
//!
//! Delivery is at least once and strictly in outbox `seq` order: the sender sends the lowest
//! unsent rows, the receiver applies each `(sender, seq)` at most once (the `inbox` table) and
//! acknowledges the highest seq of the batch, and the sender then marks the rows sent. A crash
//! anywhere repeats at most one batch, which the receiver acknowledges without re-applying.

pub mod calendar_file;
pub mod client;
pub mod extensions;
pub mod final_request;
pub mod mailbox;
pub mod outbox;
pub mod probe;
pub mod receive;
pub mod send;
pub mod wire;

pub use final_request::{FinalAnswer, final_request, status_json};
pub use outbox::{OutboxStatus, mark_sent, outbox_status, pending};
pub use receive::apply_batch;
pub use send::{Rejection, run};
pub use wire::{Envelope, RelayAck, RelayBatch, RelayItem};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use juki_calendar::Tier;
use tokio::sync::Notify;

use calendar_file::CalendarFile;

use crate::domain::identity::{NodeIdentity, Role};

/// Tuning of the sender side.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Most rows per relay request.
    pub batch: i64,
    /// First retry delay; doubled after every failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Timeout of one relay request.
    pub request_timeout: Duration,
    /// How long a final request waits for the upstream's confirmation.
    pub final_timeout: Duration,
    /// How often an idle relay looks at the outbox (new rows also wake it at once).
    pub idle_poll: Duration,
    /// How often the link to the upstream is probed ([`probe`]).
    pub probe_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch: 2000,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            final_timeout: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
            probe_interval: Duration::from_secs(15),
        }
    }
}

/// A capped exponential backoff: the first retry waits `initial`, every failure doubles the
/// wait up to `max`, a success starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The wait before the next retry.
    pub fn delay(&self) -> Duration {
        self.current
    }

    /// Counts a failure: the next wait doubles, up to the cap.
    pub fn fail(&mut self) {
        self.current = (self.current * 2).min(self.max);
    }

    /// Sleeps [`Backoff::delay`], then counts the failure.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.current).await;
        self.fail();
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Waits the longest from now on (a refusal that retrying soon cannot change).
    pub fn to_max(&mut self) {
        self.current = self.max;
    }
}

/// Relay state shared by the handlers and the background task.
#[derive(Debug, Default)]
pub struct RelayControl {
    /// Base URL of the upstream (None: the national server, or no upstream configured).
    pub upstream: Option<String>,
    /// The operating calendar, read again when its file changes (none: the upstream is always
    /// open).
    pub calendar: CalendarFile,
    /// The extensions file (`extensions.json`): while one is in force the upstream chain is
    /// kept up past its window, and so is the relay to it.
    pub extensions: Option<std::path::PathBuf>,
    pub settings: RelaySettings,
    /// Set by a final request: relays from below are refused until resume or restart.
    draining: AtomicBool,
    /// Wakes the relay task (new outbox rows, final request).
    wake: Notify,
    /// Why the last relay attempt did not deliver (None after a success).
    last_error: Mutex<Option<String>>,
    /// The upstream's last permanent refusal (None after a success).
    rejection: Mutex<Option<Rejection>>,
}

impl RelayControl {
    pub fn new(
        upstream: Option<String>,
        calendar: impl Into<CalendarFile>,
        settings: RelaySettings,
    ) -> Self {
        RelayControl {
            upstream,
            calendar: calendar.into(),
            settings,
            ..RelayControl::default()
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Wakes the relay task (call after writing outbox rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The upstream's permanent refusal the outbox is held on, if any.
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejection.lock().map(|r| r.clone()).unwrap_or(None)
    }

    fn set_rejection(&self, rejection: Option<Rejection>) {
        if let Ok(mut r) = self.rejection.lock() {
            *r = rejection;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Records why delivery stalls; logs each new reason once at info (the failures themselves
    /// are logged at warn where they happen) and the recovery.
    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            if *e != error {
                match (&error, &*e) {
                    (Some(reason), _) => tracing::info!(reason = %reason, "relay held"),
                    (None, Some(previous)) => {
                        tracing::info!(previous = %previous, "relay delivering again")
                    }
                    (None, None) => {}
                }
            }
            *e = error;
        }
    }

    /// True when this node's upstream is inside its online window at `now`, or kept up by an
    /// extension in force that covers this node.
    pub fn upstream_open(&self, identity: &NodeIdentity, now: Timestamp) -> bool {
        let Some(calendar) = self.calendar.current() else {
            return true;
        };
        let in_window = match identity.role {
            Role::Cs => calendar.in_online_window(Tier::Prefecture, identity.prefecture, now),
            Role::Prefecture => calendar.in_online_window(Tier::National, None, now),
            Role::National => true,
        };
        in_window
            || extensions::read_extensions(self.extensions.as_deref())
                .iter()
                .any(|e| e.in_force(&calendar, now))
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use super::send::is_permanent;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let mut seen = vec![b.delay()];
        for _ in 0..4 {
            b.fail();
            seen.push(b.delay());
        }
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.delay(), ms(100));
        b.to_max();
        assert_eq!(b.delay(), ms(500));
    }

    #[test]
    fn only_refusals_that_retrying_cannot_change_are_permanent() {
        for status in [400, 403, 404, 413, 422] {
            assert!(is_permanent(status), "{status}");
        }
        for status in [200, 408, 409, 429, 500, 502, 503] {
            assert!(!is_permanent(status), "{status}");
        }
    }
}
