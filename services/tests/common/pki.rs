//! A throwaway project CA and certificates for the mutual-TLS tests, made with the openssl
//! command line (installed by scripts/install-deps): EC P-256 keys, SAN 127.0.0.1 and
//! localhost, serverAuth and clientAuth.

use std::path::{Path, PathBuf};
use std::process::Command;

use juki_node::http::tls::TlsFiles;

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

/// A CA in `dir` that issues certificates by Common Name.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    name: String,
}

impl Pki {
    /// A new CA named `name` (its files are `<name>.pem` and `<name>.key` in `dir`).
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "3",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A certificate for `cn`, signed by this CA.
    pub fn issue(&self, cn: &str) -> TlsFiles {
        let file = format!("{}-{}", self.name, cn.replace(['/', ' '], "_"));
        let ext = format!("{file}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{}.pem", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3",
                "-extfile",
                &ext,
            ],
        );
        TlsFiles {
            cert: self.dir.join(pem),
            key: self.dir.join(key),
            ca: self.dir.join(format!("{}.pem", self.name)),
        }
    }
}
