//! juki-operator: the custom resources of jukinet, the pure planner that decides each node's
//! phase, and the command-line views of kubectl-juki.

pub mod api;
pub mod forecast;
pub mod planner;
pub mod preview;
pub mod topology;
