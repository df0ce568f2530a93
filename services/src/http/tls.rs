//! Mutual TLS between the tiers: the server and client configurations from PEM files (the
//! node's certificate chain and key, the project CA), and the caller's identity from its client
//! certificate's Common Name (see `authz.rs` for the names).
//!
//! The server asks for a client certificate but lets a connection without one through, so that
//! probes and `/metrics` work and every other route can answer a clear 401 instead of a failed
//! handshake. A certificate that does not chain to the project CA fails the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::domain::authz::Caller;
use crate::error::Error;

/// The PEM files of one party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The project CA that signs every node, operator and agency certificate.
    pub ca: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS {what} {}: {e}", path.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error("certificate", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("certificate", path, e))?;
    if certs.is_empty() {
        return Err(tls_error("certificate", path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error("key", path, e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error("CA certificate", path, e))?;
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    /// The server side: this node's certificate, client certificates of the CA asked for.
    pub fn server_config(&self) -> Result<ServerConfig, Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&self.ca)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error("CA certificate", &self.ca, e))?;
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| tls_error("certificate and key", &self.cert, e))
    }

    /// The client side: servers must chain to the CA; this party shows its own certificate.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots(&self.ca)?)
            .with_client_auth_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| tls_error("certificate and key", &self.cert, e))
    }
}

/// What the TLS layer learnt about the peer of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate.
    Anonymous,
    /// A certificate of the CA whose Common Name is a jukinet identity.
    Known(Caller),
    /// A certificate of the CA without a usable Common Name (the text, for the 401 message).
    Unknown(String),
}

impl Peer {
    /// The peer of a verified client certificate chain (leaf first).
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

/// The subject's Common Name of an X.509 certificate (DER). The chain was verified by rustls
/// already; this only walks Certificate → TBSCertificate → subject → the CN attribute.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version is optional; then serial, signature algorithm, issuer, validity, subject.
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
                // UTF8String, PrintableString or IA5String.
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
    fn der_elements_refuse_truncation() {
        assert_eq!(
            element(&[0x02, 0x01, 0x05, 0xff]),
            Some((2, &[5u8][..], &[0xffu8][..]))
        );
        assert_eq!(element(&[0x02, 0x02, 0x05]), None);
        assert_eq!(element(&[0x30, 0x81]), None);
        assert_eq!(element(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x00]), None);
        // Random bytes never panic.
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
