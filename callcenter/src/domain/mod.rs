//! The pure core: no I/O, no clock (callers pass the instants), no diesel, actix or tantivy.

pub mod alert;
pub mod authz;
pub mod clock;
pub mod sla;
pub mod text;
pub mod ticket;

pub use authz::{Caller, Scope};
pub use ticket::{Change, Channel, Kind, NewTicket, State};
