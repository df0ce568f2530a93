//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one reconciles at a time.
//!
//! Protocol (the same idea as client-go's `leaderelection`):
//!
//! - Every write is a PUT (replace) carrying the `resourceVersion` that was read, so of two
//!   replicas racing for the same lease the API server accepts exactly one; the other gets
//!   409 Conflict, re-reads and finds the lease taken.
//! - A lease may be taken when it has no holder, when we already hold it, or when its holder
//!   has not renewed it for longer than its `leaseDurationSeconds` (see [`may_take`]).
//! - The holder renews every `renew_every` (default 5 s) a lease of `lease_duration` (default
//!   15 s). It gives up leadership when it could not renew for `renew_deadline` (default 10 s,
//!   always below the lease duration), counted from the start of its last successful renewal,
//!   and every attempt is cut off at that deadline: a renewal that hangs (a paused process, a
//!   stalled connection) cannot keep a leader acting after another replica may take the lease. All times are real wall-clock time ([`jiff::Timestamp::now`] and tokio's timer),
//!   never the operator's simulated clock: the lease is shared with other processes.
//!
//! Typical use in the operator binary:
//!
//! ```ignore
//! let elector = LeaderElector::new(client.clone(), &namespace, "juki-operator", &pod_name);
//! elector.acquire().await?;            // blocks while another replica leads
//! tokio::select! {
//!     lost = elector.keep() => {        // only returns when leadership is lost
//!         tracing::error!("{}", lost.unwrap_err());
//!         std::process::exit(1);        // let the Deployment restart us as a follower
//!     }
//!     _ = run_controllers() => {}
//!     _ = shutdown_signal() => elector.release().await,
//! }
//! ```
//!
//! On losing leadership the simplest safe behaviour is to exit the process at once: a replica
//! that keeps reconciling after losing its lease could fight the new leader. Restarting also
//! throws away every in-memory cache that might be stale.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// Default `leaseDurationSeconds` written to the lease.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default interval between renewals (and between attempts while another replica leads).
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);
/// Default renew deadline: the leader stops acting when it has not renewed for this long, well
/// before another replica may take the lease ([`DEFAULT_LEASE_DURATION`] after the last
/// renewal). As client-go's `RenewDeadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// Leadership was lost: the lease is held by someone else, or could not be renewed for longer
/// than the lease duration. The caller should stop reconciling at once; exiting the process is
/// the simplest safe reaction.
#[derive(Debug, thiserror::Error)]
pub enum LeaderLost {
    /// Another identity holds the lease now.
    #[error("leader lease {lease} is now held by {holder:?}")]
    TakenBy {
        /// The lease's name.
        lease: String,
        /// Its new holder (empty if it was released by someone else).
        holder: String,
    },
    /// Renewal kept failing for longer than the lease duration.
    #[error("could not renew leader lease {lease} for {elapsed:?}: {last_error}")]
    RenewFailed {
        /// The lease's name.
        lease: String,
        /// Time since the last successful renewal.
        elapsed: Duration,
        /// The last error seen.
        last_error: String,
    },
}

/// Acquires, keeps and releases one Lease for one identity.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
    renew_deadline: Duration,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("lease_duration", &self.lease_duration)
            .field("renew_every", &self.renew_every)
            .field("renew_deadline", &self.renew_deadline)
            .finish_non_exhaustive()
    }
}

/// What one attempt to take or renew the lease found.
enum Attempt {
    /// We hold the lease now.
    Held,
    /// Someone else holds a live lease.
    HeldBy(String),
    /// We lost a race (409 Conflict / AlreadyExists): read again.
    Raced,
}

impl LeaderElector {
    /// An elector for the Lease `lease_name` in `namespace`, as `identity` (the pod name is a
    /// good choice: unique per replica), with a 15 s lease renewed every 5 s.
    pub fn new(client: Client, namespace: &str, lease_name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: lease_name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_every: DEFAULT_RENEW_EVERY,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
        }
    }

    /// Overrides the lease duration and the renewal interval (tests use seconds, not tens of
    /// seconds). `renew_every` should be well below `lease_duration`; the lease duration is
    /// written in whole seconds, at least 1. The renew deadline becomes two thirds of the lease
    /// duration (as 10 s of 15 s), and the renewal interval at most half of that.
    pub fn with_durations(mut self, lease_duration: Duration, renew_every: Duration) -> Self {
        self.lease_duration = lease_duration.max(Duration::from_secs(1));
        self.renew_deadline = self.lease_duration * 2 / 3;
        self.renew_every = renew_every
            .max(Duration::from_millis(10))
            .min(self.renew_deadline / 2);
        self
    }

    /// The renew deadline: how long the leader may go without a successful renewal before it
    /// gives up leadership; always below the lease duration.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// This elector's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The Lease's name.
    pub fn lease_name(&self) -> &str {
        &self.name
    }

    /// Waits until this identity holds the lease. Returns an error only for API errors other
    /// than lost races (409); while another replica holds a live lease it keeps polling every
    /// `renew_every`.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.attempt().await? {
                Attempt::Held => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "acquired leader lease");
                    return Ok(());
                }
                Attempt::Raced => continue,
                Attempt::HeldBy(holder) => {
                    tracing::debug!(lease = %self.name, %holder, "leader lease held by another replica");
                    tokio::time::sleep(self.renew_every).await;
                }
            }
        }
    }

    /// One attempt to take the lease: `Ok(true)` if we hold it afterwards, `Ok(false)` if
    /// another identity holds a live lease or won a race against us.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        Ok(matches!(self.attempt().await?, Attempt::Held))
    }

    /// Renews the lease every `renew_every` for as long as we hold it. Never returns `Ok`: it
    /// returns [`LeaderLost`] as soon as another identity holds the lease, or when no renewal
    /// succeeded for the renew deadline (API errors, lost races, or an attempt that hangs: each
    /// is cut off at the deadline). That is always before another replica may take the lease,
    /// so the caller must stop reconciling at once, most simply by exiting the process.
    pub async fn keep(&self) -> Result<(), LeaderLost> {
        // Counted from when the last successful renewal started: the renewTime it wrote is at
        // or after that instant, so the lease cannot expire before deadline + margin.
        let mut last_renewed = tokio::time::Instant::now();
        let mut last_error = String::new();
        loop {
            let deadline = last_renewed + self.renew_deadline;
            let lost = |last_error: String| LeaderLost::RenewFailed {
                lease: self.name.clone(),
                elapsed: last_renewed.elapsed(),
                last_error,
            };
            tokio::time::sleep_until(
                (tokio::time::Instant::now() + self.renew_every).min(deadline),
            )
            .await;
            let started = tokio::time::Instant::now();
            if started >= deadline {
                return Err(lost(if last_error.is_empty() {
                    "no renewal in time".to_owned()
                } else {
                    last_error
                }));
            }
            let outcome = match tokio::time::timeout_at(deadline, self.attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(lost(format!(
                        "a renewal did not finish within the renew deadline of {:?}",
                        self.renew_deadline
                    )));
                }
            };
            match outcome {
                Ok(Attempt::Held) => {
                    last_renewed = started;
                    last_error.clear();
                }
                Ok(Attempt::HeldBy(holder)) => {
                    return Err(LeaderLost::TakenBy {
                        lease: self.name.clone(),
                        holder,
                    });
                }
                Ok(Attempt::Raced) => {
                    tracing::warn!(lease = %self.name, "lost a race renewing the leader lease");
                    last_error = "renewal lost races".to_owned();
                    // Re-read at once rather than after a full interval: if somebody else won,
                    // the next attempt sees it.
                    if let Ok(Ok(Attempt::HeldBy(holder))) =
                        tokio::time::timeout_at(deadline, self.attempt()).await
                    {
                        return Err(LeaderLost::TakenBy {
                            lease: self.name.clone(),
                            holder,
                        });
                    }
                }
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "renewing the leader lease failed");
                    last_error = err.to_string();
                }
            }
        }
    }

    /// Best effort, for graceful shutdown: if we still hold the lease, clears its holder so
    /// another replica takes over at once instead of waiting for the lease to expire. Errors
    /// are logged, never returned.
    pub async fn release(&self) {
        for _ in 0..3 {
            let mut lease = match self.api.get_opt(&self.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "releasing the leader lease: read failed");
                    return;
                }
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "released leader lease");
                    return;
                }
                Err(err) if is_race(&err) => continue,
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "releasing the leader lease failed");
                    return;
                }
            }
        }
    }

    /// Reads the lease and takes or renews it if [`may_take`] allows.
    async fn attempt(&self) -> Result<Attempt, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(take_spec(None, &self.identity, now, self.lease_duration)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(err) if is_race(&err) => Ok(Attempt::Raced),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if !may_take(&spec, &self.identity, now) {
            return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default()));
        }
        // `lease.metadata.resource_version` stays as read: the PUT fails with 409 if anyone
        // wrote the lease since.
        lease.spec = Some(take_spec(
            Some(&spec),
            &self.identity,
            now,
            self.lease_duration,
        ));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(err) if is_race(&err) => Ok(Attempt::Raced),
            Err(err) => Err(err),
        }
    }
}

/// 409: Conflict on a replace (stale resourceVersion) or AlreadyExists on a create.
fn is_race(err: &Error) -> bool {
    matches!(err, Error::Api(status) if status.code == 409 || status.is_conflict() || status.is_already_exists())
}

/// Whether `me` may take (or renew) a lease with this spec at `now`: yes if it has no holder,
/// if `me` holds it, or if its holder has not renewed it within `leaseDurationSeconds`
/// (strictly: `renewTime + leaseDurationSeconds < now`). A lease with a holder but no renew
/// or acquire time counts as expired; a missing duration counts as
/// [`DEFAULT_LEASE_DURATION`].
pub fn may_take(lease: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let Some(MicroTime(renewed)) = lease.renew_time.as_ref().or(lease.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = lease
        .lease_duration_seconds
        .map_or(DEFAULT_LEASE_DURATION.as_secs() as i64, i64::from);
    match renewed.checked_add(SignedDuration::from_secs(seconds)) {
        Ok(expiry) => expiry < now,
        Err(_) => false,
    }
}

/// The spec that `me` writes when taking or renewing a lease whose current spec is `old`:
/// holder `me`, renewed `now`; acquire time `now` and one more transition when the holder
/// changes (including from no holder), both kept when we renew our own lease.
pub fn take_spec(
    old: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> LeaseSpec {
    let old = old.cloned().unwrap_or_default();
    let renewing = old.holder_identity.as_deref() == Some(me);
    let duration_seconds = i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let (acquire_time, transitions) = if renewing {
        (
            old.acquire_time.clone().unwrap_or(MicroTime(now)),
            old.lease_transitions.unwrap_or(0),
        )
    } else if old.holder_identity.is_none() && old.lease_transitions.is_none() {
        // A brand-new lease: the first holder is not a transition.
        (MicroTime(now), 0)
    } else {
        (
            MicroTime(now),
            old.lease_transitions.unwrap_or(0).saturating_add(1),
        )
    };
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(duration_seconds),
        lease_transitions: Some(transitions),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn held(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            acquire_time: Some(MicroTime(t(0))),
            renew_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn leader_may_take_free_own_or_expired_leases_only() {
        // No holder (fresh or released).
        assert!(may_take(&LeaseSpec::default(), "a", t(0)));
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held("x", 0, 15)
        };
        assert!(may_take(&released, "a", t(1)));
        // Our own lease: renew whenever.
        assert!(may_take(&held("a", 0, 15), "a", t(1)));
        assert!(may_take(&held("a", 0, 15), "a", t(100)));
        // Someone else's live lease.
        assert!(!may_take(&held("b", 0, 15), "a", t(0)));
        assert!(!may_take(&held("b", 0, 15), "a", t(14)));
        // Exactly at expiry it is still live (strict <), one second after it is free.
        assert!(!may_take(&held("b", 0, 15), "a", t(15)));
        assert!(may_take(&held("b", 0, 15), "a", t(16)));
        // Renewal pushes expiry.
        assert!(!may_take(&held("b", 10, 15), "a", t(20)));
        // No renew time: fall back to acquire time; neither: expired.
        let no_renew = LeaseSpec {
            renew_time: None,
            ..held("b", 0, 15)
        };
        assert!(!may_take(&no_renew, "a", t(5)));
        assert!(may_take(&no_renew, "a", t(16)));
        let no_times = LeaseSpec {
            renew_time: None,
            acquire_time: None,
            ..held("b", 0, 15)
        };
        assert!(may_take(&no_times, "a", t(0)));
        // No duration: the default 15 s.
        let no_duration = LeaseSpec {
            lease_duration_seconds: None,
            ..held("b", 0, 15)
        };
        assert!(!may_take(&no_duration, "a", t(15)));
        assert!(may_take(&no_duration, "a", t(16)));
    }

    #[test]
    fn leader_take_spec_counts_transitions_only_on_holder_change() {
        let fresh = take_spec(None, "a", t(0), Duration::from_secs(15));
        assert_eq!(fresh.holder_identity.as_deref(), Some("a"));
        assert_eq!(fresh.lease_transitions, Some(0));
        assert_eq!(fresh.lease_duration_seconds, Some(15));
        assert_eq!(fresh.acquire_time, Some(MicroTime(t(0))));
        assert_eq!(fresh.renew_time, Some(MicroTime(t(0))));

        let renewed = take_spec(Some(&fresh), "a", t(5), Duration::from_secs(15));
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(5))));

        let taken = take_spec(Some(&renewed), "b", t(30), Duration::from_secs(3));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(t(30))));
        assert_eq!(taken.lease_duration_seconds, Some(3));

        let released = LeaseSpec {
            holder_identity: None,
            ..taken.clone()
        };
        let retaken = take_spec(Some(&released), "a", t(31), Duration::from_secs(15));
        assert_eq!(retaken.lease_transitions, Some(2));

        // Sub-second durations are written as 1 s.
        let short = take_spec(None, "a", t(0), Duration::from_millis(200));
        assert_eq!(short.lease_duration_seconds, Some(1));
    }

    #[test]
    fn leader_lost_messages_name_the_lease() {
        let lost = LeaderLost::TakenBy {
            lease: "juki-operator".into(),
            holder: "b".into(),
        };
        assert_eq!(
            lost.to_string(),
            r#"leader lease juki-operator is now held by "b""#
        );
    }
}
