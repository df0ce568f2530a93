//! L5, the wiring: the command line and configuration file, serving, migrations and the batch jobs.

pub mod app;
pub mod batch;
pub mod config;
pub mod logging;
pub mod pgtools;
