//! L3, the wide-area services between CSs: the transfer-out/in special procedure and the
//! wide-area issuance of resident-record copies, carried by the relay's messages
//! (`relay/mailbox.rs`), and the task that pulls them down from the upstream (`pull.rs`).

pub mod issuance;
pub mod pull;
pub mod transfer;

use jiff::Timestamp;
use juki_calendar::Calendar;
use tokio::sync::Notify;

use crate::domain::identity::NodeIdentity;
use crate::domain::trace::TraceParent;
use crate::node::Node;

/// Wide-area state shared by the handlers and the background tasks.
#[derive(Debug, Default)]
pub struct WideArea {
    /// The node's name from the configuration file (the JukiNode's name), if any.
    pub name: Option<String>,
    /// The active ServiceExtensions file (`extensions.json`), if configured.
    pub extensions: Option<std::path::PathBuf>,
    /// New mailbox rows (wakes long polls).
    pub mailbox: Notify,
    /// New issuance answers (wakes waiting `POST /v1/issuances`).
    pub answers: Notify,
}

impl WideArea {
    /// The names an extension may use for this node: the configured name, the sender id
    /// (`cs-131016`, the JukiNode's name as the charts create it) and the municipality code.
    pub fn own_names(&self, identity: &NodeIdentity) -> Vec<String> {
        let mut names = vec![identity.sender_id()];
        names.extend(identity.municipality.clone());
        names.extend(self.name.clone());
        names
    }

    /// What the wide-area transactions of `node` need now; `calendar` is the upstream's
    /// (`RelayControl::calendar`). The extensions file is read when asked for.
    pub fn context(
        &self,
        node: &Node,
        calendar: Option<Calendar>,
        with_extensions: bool,
    ) -> CsContext {
        CsContext {
            identity: node.identity.clone(),
            calendar,
            extensions: if with_extensions {
                issuance::read_extensions(self.extensions.as_deref())
            } else {
                Vec::new()
            },
            own_names: self.own_names(&node.identity),
            now: node.clock.now(),
            trace: None,
        }
    }
}

/// What the CS's handlers need besides the database.
#[derive(Debug, Clone)]
pub struct CsContext {
    pub identity: NodeIdentity,
    pub calendar: Option<juki_calendar::Calendar>,
    pub extensions: Vec<issuance::Extension>,
    pub own_names: Vec<String>,
    pub now: Timestamp,
    /// The trace the work belongs to: the request's, or the message's being handled.
    pub trace: Option<TraceParent>,
}

impl CsContext {
    /// The trace id for log lines ("" without a trace).
    pub fn trace_id(&self) -> &str {
        self.trace.as_ref().map_or("", |t| t.trace_id.as_str())
    }
}
