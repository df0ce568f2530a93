//! Writes the generated CRDs into crds/ and into the operator chart's crds/ (one file per CRD).
//! `operator/tests/crds.rs` and `tests/tests/charts.rs` fail when either copy is stale.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs: Vec<PathBuf> = match std::env::args().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![root.join("crds"), root.join("charts/juki-operator/crds")],
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for crd in juki_operator::api::crds() {
            let path = dir.join(juki_operator::api::crd_file_name(&crd));
            std::fs::write(&path, juki_operator::api::crd_yaml(&crd))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
