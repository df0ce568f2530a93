//! L4, the HTTP surface: the handlers' state, the route list, authentication and mutual TLS.

pub mod error;
pub mod extract;
pub mod handlers;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod tls;
