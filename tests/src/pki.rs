//! A throwaway project CA and the kubernetes.io/tls Secrets of jukinet identities, made with the
//! openssl command line (installed by scripts/install-deps), for the real pods that serve
//! mutual TLS: EC P-256 keys, serverAuth and clientAuth, the Service DNS names as SANs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const P256: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A CA in its own temporary directory that issues certificates by Common Name.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A new CA (files `ca.pem`, `ca.key`) in a fresh directory named after `tag`.
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("juki-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let args = [
            &["req", "-x509"][..],
            &P256,
            &["-nodes", "-keyout", "ca.key"],
        ]
        .concat();
        let extra = [
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            "/CN=jukinet test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        openssl(&dir, &[&args[..], &extra].concat());
        Pki { dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.pem")).unwrap()
    }

    /// A certificate (PEM) and its key (PEM) for `cn`, with `dns` as its DNS names.
    pub fn issue(&self, cn: &str, dns: &[String]) -> (String, String) {
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        let sans = if sans.is_empty() {
            String::new()
        } else {
            format!("subjectAltName={}\n", sans.join(","))
        };
        std::fs::write(
            self.dir.join(format!("{cn}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n{sans}"
            ),
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{cn}.key"),
            format!("{cn}.csr"),
            format!("{cn}.pem"),
        );
        let request = [
            &["req"][..],
            &P256,
            &["-nodes", "-keyout", &key, "-out", &csr],
        ]
        .concat();
        let subject = format!("/CN={cn}");
        openssl(&self.dir, &[&request[..], &["-subj", &subject]].concat());
        let ext = format!("{cn}.ext");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3",
                "-extfile",
                &ext,
            ],
        );
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        (read(&pem), read(&key))
    }

    /// A kubernetes.io/tls Secret `name` (as cert-manager writes them: tls.crt, tls.key and
    /// ca.crt) with an identity `cn` and DNS names `dns`.
    pub fn secret(&self, name: &str, cn: &str, dns: &[String]) -> serde_json::Value {
        let (crt, key) = self.issue(cn, dns);
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name},
            "stringData": {"tls.crt": crt, "tls.key": key, "ca.crt": self.ca()},
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
