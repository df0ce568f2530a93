//! The layer rule of `src/lib.rs`: a module imports only the layers below it. Fails when, for
//! example, `domain/` uses `crate::store` or `store/` uses `crate::http`.

use std::path::Path;

/// Layer of each top-level module; a module may `use crate::X` only for X of a lower or equal
/// layer (equal: inside the same module).
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("domain", 0),
    ("store", 1),
    ("search", 1),
    ("metrics", 1),
    ("nodes", 1),
    ("service", 2),
    ("seed", 2),
    ("http", 3),
    ("cli", 4),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|l| l.1)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs"))
}

fn visit(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            visit(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let own = layer(top);
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used.is_empty() || used == top || used == "Error" {
                    continue;
                }
                if layer(&used) > own {
                    violations.push(format!(
                        "{}:{}: {top} (L{own}) uses crate::{used} (L{})",
                        rel.display(),
                        n + 1,
                        layer(&used)
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}
