//! Authentication: the caller of a request, from its client certificate (mutual TLS, as in
//! juki-node) or, in development mode only, from the `x-juki-identity` header, the
//! `juki_identity` cookie or a configured default. Development mode is never implied: without
//! TLS files the service refuses to start unless `--dev-mode` is given.
//!
//! Authorisation is the use cases' (domain::authz); the middleware in `http/mod.rs` logs every
//! 401 and 403 with the caller and the route.

use std::future::{Ready, ready};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::domain::Caller;
use crate::error::Error;

/// Without TLS, in development mode, the header a caller names itself in.
pub const IDENTITY_HEADER: &str = "x-juki-identity";
/// The cookie the development login sets.
pub const IDENTITY_COOKIE: &str = "juki_identity";

/// How callers are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Client certificates of the project CA.
    Mtls,
    /// Stated identities (local demos and tests only), with an optional default.
    Development { default: Option<Caller> },
}

/// What the TLS layer learnt about the peer of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Anonymous,
    Known(Caller),
    /// A certificate of the CA whose Common Name is no call-center identity.
    Unknown(String),
}

impl Peer {
    pub fn of(certs: Option<&[CertificateDer<'_>]>) -> Peer {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Peer::Anonymous;
        };
        match common_name(leaf) {
            Some(cn) => Caller::parse(&cn).map_or(Peer::Unknown(cn), Peer::Known),
            None => Peer::Unknown(String::new()),
        }
    }
}

/// The caller of a request, or the 401.
pub fn authenticate(mode: &AuthMode, req: &ServiceRequest) -> Result<Caller, Error> {
    match mode {
        AuthMode::Mtls => match req.conn_data::<Peer>() {
            Some(Peer::Known(c)) => Ok(c.clone()),
            Some(Peer::Unknown(cn)) => Err(Error::Unauthenticated(format!(
                "the client certificate's CN {cn:?} is not a call-center identity"
            ))),
            _ => Err(Error::Unauthenticated(
                "a client certificate of the project CA is required".into(),
            )),
        },
        AuthMode::Development { default } => {
            let stated = req
                .headers()
                .get(IDENTITY_HEADER)
                .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
                .or_else(|| cookie(req, IDENTITY_COOKIE));
            match stated {
                Some(name) => Caller::parse(&name).ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "{:?} is not a call-center identity",
                        name.chars().take(80).collect::<String>()
                    ))
                }),
                None => default.clone().ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "development mode: name yourself in the {IDENTITY_HEADER} header"
                    ))
                }),
            }
        }
    }
}

/// The value of cookie `name` (the Cookie header parsed by hand: actix's cookie feature would
/// bring a date-time crate for one value).
fn cookie(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// The authenticated caller, as a handler argument.
#[derive(Debug, Clone)]
pub struct Authed(pub Caller);

impl FromRequest for Authed {
    type Error = Error;
    type Future = Ready<Result<Authed, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .map(Authed)
                .ok_or_else(|| Error::Unauthenticated("no caller".into())),
        )
    }
}

/// The PEM files of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS {what} {}: {e}", path.display()))
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error("certificate", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("certificate", path, e))?;
    if certs.is_empty() {
        return Err(tls_error("certificate", path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

impl TlsFiles {
    /// The server side: client certificates of the CA asked for (a connection without one gets
    /// through so that probes work and other routes answer a clear 401).
    pub fn server_config(&self) -> Result<ServerConfig, Error> {
        let mut roots = RootCertStore::empty();
        for cert in certs(&self.ca)? {
            roots
                .add(cert)
                .map_err(|e| tls_error("CA certificate", &self.ca, e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error("CA certificate", &self.ca, e))?;
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| tls_error("key", &self.key, e))?;
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.cert)?, key)
            .map_err(|e| tls_error("certificate and key", &self.cert, e))
    }
}

/// Keeps what the TLS handshake learnt about the client for the requests of the connection.
pub fn remember_peer(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        data.insert(Peer::of(session.peer_certificates()));
    }
}

/// One DER element at the start of `der`: (tag, contents, the rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let len = der[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        der = &der[n..];
        len
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

const SEQUENCE: u8 = 0x30;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject's Common Name of a verified X.509 certificate (DER), walked as juki-node does.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if element(rest)?.0 == 0xa0 {
        rest = element(rest)?.2;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut names, _) = element(rest)? else {
        return None;
    };
    while !names.is_empty() {
        let (_, set, next) = element(names)?;
        names = next;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (_, attribute, next) = element(attributes)?;
            attributes = next;
            let (0x06, oid, value) = element(attribute)? else {
                return None;
            };
            if oid == OID_COMMON_NAME {
                let (0x0c | 0x13 | 0x16, text, _) = element(value)? else {
                    return None;
                };
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_refuses_truncation_and_garbage() {
        assert_eq!(element(&[0x02, 0x02, 0x05]), None);
        assert_eq!(common_name(&[]), None);
        let mut x: u32 = 7;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = common_name(&bytes);
        }
    }
}
