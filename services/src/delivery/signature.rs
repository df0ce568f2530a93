//! Signed deliveries: with trusted keys configured, a node stages a file only when one of them
//! signed (file name, sha256). The content itself is checked against the sha256, so the
//! signature over the pair vouches for the bytes and for the name they are applied as.
//!
//! Ed25519 (ring). The signed message is `jukinet-delivery-v1\n<file>\n<sha256>`; keys and
//! signatures are lowercase hex (32 and 64 bytes). `openssl pkeyutl -sign -rawin` makes them.

use ring::signature::{ED25519, UnparsedPublicKey};

use crate::delivery::{FileName, Sha256};
use crate::error::Error;

/// The public keys whose signatures a node accepts; empty: signatures are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryKeys(Vec<[u8; 32]>);

/// The bytes a delivery's signature covers.
pub fn signed_message(file: &str, sha256: &str) -> Vec<u8> {
    format!("jukinet-delivery-v1\n{file}\n{sha256}").into_bytes()
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl DeliveryKeys {
    /// Reads hex public keys (`deliveryKeys` / `--delivery-keys`).
    pub fn parse(keys: &[String]) -> Result<DeliveryKeys, Error> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                hex_bytes::<32>(k).ok_or_else(|| {
                    Error::Config(format!(
                        "delivery keys[{i}]: {:?} is not an Ed25519 public key (64 hex digits)",
                        k.chars().take(80).collect::<String>()
                    ))
                })
            })
            .collect::<Result<_, _>>()
            .map(DeliveryKeys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `file` with content `sha` may be staged, given the request's `signature`.
    pub fn check(
        &self,
        file: &FileName,
        sha: &Sha256,
        signature: Option<&str>,
    ) -> Result<(), Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let refused = |message: String| Error::BadRequest {
            field: "signature",
            rule: "bad_signature",
            message,
        };
        let signature = signature.ok_or_else(|| {
            refused(format!(
                "this node stages only signed deliveries: {} needs a signature by a trusted key",
                file.as_str()
            ))
        })?;
        let signature = hex_bytes::<64>(signature)
            .ok_or_else(|| refused("the signature is not 128 hex digits (Ed25519)".into()))?;
        let message = signed_message(file.as_str(), sha.as_str());
        if self.0.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&message, &signature)
                .is_ok()
        }) {
            Ok(())
        } else {
            Err(refused(format!(
                "the signature of {} ({}) is not by a trusted key; nothing was fetched",
                file.as_str(),
                sha.as_str()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn key_pair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn only_a_signature_by_a_trusted_key_over_this_file_and_content_passes() {
        let (trusted, other) = (key_pair(), key_pair());
        let keys = DeliveryKeys::parse(&[hex(trusted.public_key().as_ref())]).unwrap();
        let file = FileName::parse("code-table").unwrap();
        let sha = Sha256::of("13,東京都\n".as_bytes());
        let signed = |k: &Ed25519KeyPair, file: &str, sha: &Sha256| {
            hex(k.sign(&signed_message(file, sha.as_str())).as_ref())
        };
        assert!(
            keys.check(&file, &sha, Some(&signed(&trusted, "code-table", &sha)))
                .is_ok()
        );
        let tag = |r: Result<(), Error>| r.unwrap_err().tag();
        // Unsigned, signed by another key, for another file name or other content, garbled.
        assert_eq!(tag(keys.check(&file, &sha, None)), "bad_signature");
        assert_eq!(
            tag(keys.check(&file, &sha, Some(&signed(&other, "code-table", &sha)))),
            "bad_signature"
        );
        assert_eq!(
            tag(keys.check(&file, &sha, Some(&signed(&trusted, "allow-list", &sha)))),
            "bad_signature"
        );
        let elsewhere = Sha256::of(b"other");
        assert_eq!(
            tag(keys.check(
                &file,
                &sha,
                Some(&signed(&trusted, "code-table", &elsewhere))
            )),
            "bad_signature"
        );
        assert_eq!(tag(keys.check(&file, &sha, Some("zz"))), "bad_signature");
        // No trusted key: signatures are not checked.
        assert!(DeliveryKeys::default().check(&file, &sha, None).is_ok());
    }

    #[test]
    fn a_key_that_is_not_64_hex_digits_is_a_configuration_error_naming_it() {
        let e = DeliveryKeys::parse(&["ab".repeat(32), "xyz".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: delivery keys[1]: \"xyz\" is not an Ed25519 public key (64 hex digits)"
        );
    }
}
