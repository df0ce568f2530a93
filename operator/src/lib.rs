//! juki-operator: the custom resources of jukinet, the pure planner that decides each node's
//! phase, the controllers that apply it, and the command-line views of kubectl-juki.

pub mod api;
pub mod clock;
pub mod controller;
pub mod country;
pub mod delivery_plan;
pub mod delivery_report;
pub mod expected;
pub mod forecast;
pub mod http;
pub mod leader;
pub mod merge_patch;
pub mod node_client;
pub mod planner;
pub mod preview;
pub mod program;
pub mod resources;
pub mod schedule;
pub mod service_extension;
pub mod telemetry;
pub mod topology;
pub mod tree;
