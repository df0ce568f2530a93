//! What travels between the tiers: the body of `POST /v1/relay` (a batch of outbox rows), its
//! acknowledgement, and the envelope stored in each row.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::Update;
use crate::error::Error;

/// One relayed update: the sender's outbox seq and the stored envelope, kept as the JSON text
/// it came in (parsed once into an `Envelope`, and forwarded without building a tree of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayItem {
    pub seq: i64,
    pub payload: Box<RawValue>,
}

/// The body of `POST /v1/relay`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayBatch {
    pub sender: String,
    pub items: Vec<RelayItem>,
}

/// What the receiver did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayAck {
    /// The highest seq of the batch: every item up to it is applied.
    pub acked: i64,
    pub applied: u64,
    pub duplicates: u64,
}

/// The envelope stored in an outbox row: the origin (CS sender and seq) and the update.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub(super) sender: String,
    pub(super) seq: i64,
    /// An update (本人確認情報) …
    #[serde(default)]
    pub(super) update: Option<Update>,
    /// … or a message of a wide-area service for another CS (see `mailbox.rs`).
    #[serde(default)]
    pub(crate) message: Option<crate::relay::mailbox::Message>,
    #[serde(default)]
    pub(super) traceparent: Option<String>,
}

impl Envelope {
    /// Who it comes from (`cs-<municipality>`: the CS that filed it) and, for an update, the
    /// municipality it names — what the authorisation checks (authz.rs).
    pub fn origin(&self) -> (String, Option<&str>) {
        match (&self.update, &self.message) {
            (_, Some(m)) => (format!("cs-{}", m.from), None),
            (Some(u), None) => (self.sender.clone(), Some(u.municipality_code.as_str())),
            (None, None) => (self.sender.clone(), None),
        }
    }
}

impl RelayBatch {
    /// Each item's envelope, parsed once (the first bad payload names its seq and index).
    pub fn envelopes(&self) -> Result<Vec<Envelope>, Error> {
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                serde_json::from_str::<Envelope>(item.payload.get()).map_err(|e| {
                    Error::InvalidBody(format!("payload of seq {}: {e}", item.seq))
                        .in_batch(Some(index))
                })
            })
            .collect()
    }

    pub(super) fn check(&self) -> Result<(), Error> {
        if self.sender.is_empty() || self.sender.len() > 64 {
            return Err(Error::InvalidBody("sender must be 1–64 characters".into()));
        }
        if self.items.is_empty() {
            return Err(Error::InvalidBody("a relay batch needs items".into()));
        }
        if self.items.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(Error::InvalidBody(
                "items must be in strictly increasing seq order".into(),
            ));
        }
        Ok(())
    }
}
