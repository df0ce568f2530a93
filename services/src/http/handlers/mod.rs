//! One file of handlers per resource; `http/routes.rs` holds the route list.

pub mod deliveries;
pub mod probes;
pub mod provision;
pub mod relay;
pub mod residents;
pub mod wide_area;
