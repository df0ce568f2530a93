//! The PostgreSQL client tools the backup and restore of a PostgreSQL database run (`pg_dump`,
//! `pg_restore`), and the connection-URL handling they need (the password goes to the tool in
//! `PGPASSWORD`, never on its command line, and never into a manifest).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// One of the client tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    PgDump,
    PgRestore,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::PgDump => "pg_dump",
            Tool::PgRestore => "pg_restore",
        }
    }

    /// The environment variable that overrides the lookup.
    pub fn env(self) -> &'static str {
        match self {
            Tool::PgDump => "JUKI_PG_DUMP",
            Tool::PgRestore => "JUKI_PG_RESTORE",
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The major version of a `/usr/lib/postgresql/<version>/bin` directory (0 when not numeric).
fn dir_version(dir: &Path) -> u32 {
    dir.parent()
        .and_then(|p| p.file_name())
        .and_then(|v| v.to_str())
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Locates `tool`: the override in its environment variable (which must name an executable),
/// else the newest `/usr/lib/postgresql/*/bin` (a newer pg_dump reads older servers, an older
/// one refuses newer servers), else `PATH`.
pub fn locate(tool: Tool) -> Result<PathBuf, Error> {
    let over = std::env::var_os(tool.env()).filter(|v| !v.is_empty());
    locate_in(
        tool,
        over.map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
    )
}

fn locate_in(tool: Tool, over: Option<PathBuf>, versioned: &Path) -> Result<PathBuf, Error> {
    if let Some(path) = over {
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::Batch(format!(
                "{} not found: {}={} is not an executable file",
                tool.name(),
                tool.env(),
                path.display()
            )))
        };
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(versioned)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|d| d.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| std::cmp::Reverse(dir_version(d)));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(on_path)
        .map(|d| d.join(tool.name()))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::Batch(format!(
                "{} not found (looked in {}/*/bin and on PATH): install the PostgreSQL client \
                 (Debian: postgresql-client) or set {}",
                tool.name(),
                versioned.display(),
                tool.env()
            ))
        })
}

/// Runs `program args…` with `PGPASSWORD` set when given; an exit other than 0 is an error
/// carrying the tool's stderr.
pub fn run(
    tool: Tool,
    program: &Path,
    args: &[String],
    password: Option<&str>,
) -> Result<(), Error> {
    let mut cmd = Command::new(program);
    // Never prompt for a password (the tool would hang on a terminal).
    cmd.arg("--no-password")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Batch(format!("run {}: {e}", program.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(Error::Batch(format!(
            "{} failed ({}): {}",
            tool.name(),
            out.status,
            stderr.trim()
        )))
    }
}

/// The parts of a `postgres://` URL: the password (percent-decoded) and the URL without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL without the password of its user info (`password=` query parameters stay).
    pub without_password: String,
    pub password: Option<String>,
}

/// Splits the user info's password off `url`.
pub fn split_password(url: &str) -> PgUrl {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return PgUrl {
            without_password: url.to_owned(),
            password: None,
        };
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return PgUrl {
            without_password: url.to_owned(),
            password: None,
        };
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return PgUrl {
            without_password: url.to_owned(),
            password: None,
        };
    };
    PgUrl {
        without_password: format!(
            "{}{}{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &url[scheme_end + at..]
        ),
        password: Some(percent_decode(&userinfo[colon + 1..])),
    }
}

/// `url` with every password (user info and `password=` parameters) replaced by `***`, for
/// manifests and logs.
pub fn redact(url: &str) -> String {
    let parts = split_password(url);
    let mut out = match parts.password {
        Some(_) => {
            let scheme_end = url.find("://").map_or(0, |i| i + 3);
            let rest = &url[scheme_end..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let at = rest[..authority_end].rfind('@').unwrap_or(0);
            let colon = rest[..at].find(':').unwrap_or(at);
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{base}{query}");
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_split_and_redacted() {
        let u = split_password("postgres://juki:s%40cret@db:5432/node?sslmode=disable");
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(
            u.without_password,
            "postgres://juki@db:5432/node?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://juki:s%40cret@db:5432/node?sslmode=disable"),
            "postgres://juki:***@db:5432/node?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://u@h/d?password=x&sslmode=require"),
            "postgresql://u@h/d?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(split_password("postgres://h/d").password, None);
        // An '@' in the path is not user info.
        assert_eq!(split_password("postgres://h/d@x").password, None);
    }

    #[test]
    fn tools_are_found_newest_first_or_named_clearly() {
        let root = std::env::temp_dir().join(format!("juki-pgtools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for v in ["9.6", "15", "13"] {
            let bin = root.join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let tool = bin.join("pg_dump");
            std::fs::write(&tool, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(
            locate_in(Tool::PgDump, None, &root).unwrap(),
            root.join("15/bin/pg_dump")
        );
        let err = locate_in(Tool::PgDump, Some(root.join("nope")), &root).unwrap_err();
        assert!(err.to_string().contains("JUKI_PG_DUMP="), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
