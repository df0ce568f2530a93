//! juki-operator: the custom resources of jukinet and the command-line views of kubectl-juki.

pub mod api;
pub mod preview;
