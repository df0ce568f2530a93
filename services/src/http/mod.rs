//! The HTTP surface: the handlers and their state, authentication and mutual TLS.

pub mod openapi;
pub mod routes;
pub mod tls;
