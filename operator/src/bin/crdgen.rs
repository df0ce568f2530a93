//! Writes the generated CRDs into crds/ (one file per CRD). `tests/crds.rs` fails when they differ.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    std::fs::create_dir_all(&dir)?;
    for crd in juki_operator::api::crds() {
        let path = dir.join(juki_operator::api::crd_file_name(&crd));
        std::fs::write(&path, juki_operator::api::crd_yaml(&crd))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
