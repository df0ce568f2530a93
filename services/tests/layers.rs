//! The shape of `src/`: its top-level modules are layers (see `src/lib.rs`), and a module may
//! import only from its own layer or the layers below. Reads the sources (outside `#[cfg(test)]`
//! items and comments) and fails, naming the file and line, when
//! - a module names `crate::X` for an `X` in a higher layer,
//! - the modules of one layer import each other in a cycle,
//! - a top-level module is missing from [`LAYERS`],
//! - actix appears outside `http/` (and `main.rs`, which starts the runtime),
//! - diesel, tokio or actix appear in `domain/` (tokio or actix in `error.rs`),
//! - an environment variable is read outside `cli/` (configuration is read in one place).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("domain", 0),
    ("store", 1),
    ("metrics", 1),
    ("node", 1),
    ("relay", 2),
    ("wide_area", 3),
    ("updates", 3),
    ("provision", 3),
    ("delivery", 3),
    ("http", 4),
    ("cli", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// One source file: its top-level module ("" for lib.rs/main.rs) and its code lines (number,
/// text) without comments and `#[cfg(test)]` items.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    top: String,
    lines: Vec<(usize, String)>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` without line comments and without the items marked `#[cfg(test)]`.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skip_item = false;
    let mut depth = 0i64;
    let mut entered = false;
    for (i, raw) in text.lines().enumerate() {
        let line = match raw.find("//") {
            // A `//` inside a string literal ("http://...") is not a comment.
            Some(at) if raw[..at].matches('"').count() % 2 == 0 => &raw[..at],
            _ => raw,
        };
        if line.trim() == "#[cfg(test)]" {
            skip_item = true;
            depth = 0;
            entered = false;
            continue;
        }
        if skip_item {
            for c in line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        entered = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let ends = (entered && depth <= 0) || (!entered && line.trim_end().ends_with(';'));
            if ends {
                skip_item = false;
            }
            continue;
        }
        out.push((i + 1, line.to_owned()));
    }
    out
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default();
            let top = match first.strip_suffix(".rs") {
                Some("lib" | "main") => String::new(),
                Some(m) => m.to_owned(),
                None => first.to_owned(),
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            Source {
                lines: code_lines(&text),
                path: rel.to_path_buf(),
                top,
            }
        })
        .collect()
}

/// The top-level modules `code` names through `crate::` (also inside `use crate::{a, b::c}`,
/// over several lines), each with the byte offset of its `crate::`.
fn imports(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let offset = from + at;
        let after = &code[offset + "crate::".len()..];
        from = offset + "crate::".len();
        if let Some(group) = after.strip_prefix('{') {
            // The first name of each part of the group, split at the commas at depth 0.
            let mut depth = 0;
            let mut part = String::new();
            let mut parts = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(std::mem::take(&mut part));
                        continue;
                    }
                    _ => {}
                }
                part.push(c);
            }
            parts.push(part);
            for p in parts {
                let name: String = p
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((offset, name));
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((offset, name));
            }
        }
    }
    found
}

/// Every violation of the layer rules, as `path:line: message`.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let from = s.top.as_str();
        let from_layer = if from.is_empty() {
            // lib.rs and main.rs sit above every layer.
            u8::MAX
        } else {
            match layer(from) {
                Some(l) => l,
                None => {
                    bad.push(format!(
                        "{}: top-level module {from:?} has no layer: add it to LAYERS in tests/layers.rs and to the table in src/lib.rs",
                        s.path.display()
                    ));
                    continue;
                }
            }
        };
        let mut code = String::new();
        let mut starts = Vec::new();
        for (n, line) in &s.lines {
            starts.push((code.len(), *n));
            code.push_str(line);
            code.push('\n');
        }
        let line_at = |offset: usize| {
            let i = starts.partition_point(|(start, _)| *start <= offset);
            starts[i.saturating_sub(1)].1
        };
        for (offset, to) in imports(&code) {
            let at = format!("{}:{}", s.path.display(), line_at(offset));
            if to == from || ["self", "super"].contains(&to.as_str()) {
                continue;
            }
            let Some(to_layer) = layer(&to) else {
                bad.push(format!("{at}: crate::{to} is not a layer"));
                continue;
            };
            if to_layer > from_layer {
                bad.push(format!(
                    "{at}: {from} (L{from_layer}) imports {to} (L{to_layer}), a layer above it"
                ));
            }
            if to_layer == from_layer {
                edges.entry(from.to_owned()).or_default().insert(to);
            }
        }
        for (n, line) in &s.lines {
            let at = format!("{}:{n}", s.path.display());
            let in_http = from == "http" || from.is_empty();
            if !in_http && line.contains("actix") {
                bad.push(format!("{at}: actix outside http/: {}", line.trim()));
            }
            // The error type keeps its `#[from]` conversions of diesel's errors, nothing else.
            let io: &[&str] = match from {
                "domain" => &["diesel", "tokio", "actix"],
                "error" => &["tokio", "actix"],
                _ => &[],
            };
            if io.iter().any(|c| line.contains(&format!("{c}::"))) {
                bad.push(format!(
                    "{at}: I/O crate in the pure layer: {}",
                    line.trim()
                ));
            }
            if from != "cli" && (line.contains("env::var") || line.contains("env!(\"JUKI")) {
                bad.push(format!(
                    "{at}: environment read outside cli/: {}",
                    line.trim()
                ));
            }
        }
    }
    // Within a layer, the modules' imports must not go round.
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    bad.push(format!(
                        "cycle within a layer: {} -> {start}",
                        path.join(" -> ")
                    ));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let sources = sources();
    assert!(sources.len() > 20, "found only {} sources", sources.len());
    let bad = violations(&sources);
    assert!(
        bad.is_empty(),
        "{} layer violation(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_upward_imports_groups_and_cycles() {
    let source = |path: &str, top: &str, text: &str| Source {
        path: PathBuf::from(path),
        top: top.to_owned(),
        lines: code_lines(text),
    };
    let sources = [
        source(
            "store/mod.rs",
            "store",
            "use crate::{error::Error, http::routes::AppState};\n\
             //! crate::cli is only in a comment\n\
             #[cfg(test)]\nmod tests {\n    use crate::cli::app;\n}\n",
        ),
        source("wide_area/mod.rs", "wide_area", "use crate::updates::X;\n"),
        source("updates.rs", "updates", "use crate::wide_area::Y;\n"),
        source(
            "relay/mod.rs",
            "relay",
            "let w = std::env::var(\"JUKI_X\");\nactix_web::rt::spawn(f);\n",
        ),
        source("domain/mod.rs", "domain", "use diesel::prelude::*;\n"),
        source("jobs.rs", "jobs", "\n"),
    ];
    let bad = violations(&sources);
    let expect = [
        "store/mod.rs:1: store (L1) imports http (L4), a layer above it",
        "cycle within a layer: updates -> wide_area -> updates",
        "cycle within a layer: wide_area -> updates -> wide_area",
        "relay/mod.rs:1: environment read outside cli/",
        "relay/mod.rs:2: actix outside http/",
        "domain/mod.rs:1: I/O crate in the pure layer",
        "jobs.rs: top-level module \"jobs\" has no layer",
    ];
    for e in expect {
        assert!(
            bad.iter().any(|b| b.starts_with(e)),
            "missing {e:?} in {bad:#?}"
        );
    }
    assert_eq!(bad.len(), expect.len(), "{bad:#?}");
}
