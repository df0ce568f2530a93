//! The CRD YAML in crds/ is generated from the Rust types; this fails when it is stale.
//! Regenerate with `cargo run -p juki-operator --bin crdgen` (it writes the chart's copy too).

use juki_operator::api::{crd_file_name, crd_yaml, crds};

#[test]
fn crds_in_the_repo_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut stale = Vec::new();
    for crd in crds() {
        let path = dir.join(crd_file_name(&crd));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != crd_yaml(&crd) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs {stale:?}: run `cargo run -p juki-operator --bin crdgen`"
    );
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        crds().len(),
        "crds/ holds a file that no Rust type generates"
    );
}

#[test]
fn every_crd_is_in_the_juki_category_with_a_status_subresource() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert!(name.ends_with(".jukinet.io"), "{name}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["juki".to_string()][..]),
            "{name}"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}"
        );
    }
}

#[test]
fn the_municipality_cel_rule_matches_the_check_digit_function() {
    // Evaluate the CEL arithmetic with Rust for every official code, so the rule the API server
    // runs and juki_codes cannot drift apart.
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "JukiNode")
        .unwrap();
    let json = serde_json::to_string(&crd).unwrap();
    assert!(json.contains("int(self.substring(0,1))*6 + int(self.substring(1,2))*5 + int(self.substring(2,3))*4 + int(self.substring(3,4))*3 + int(self.substring(4,5))*2"));
    assert!(json.contains("(11 - "));
    let csv = include_str!("../../data/municipalities.csv");
    for line in csv.lines().skip(1) {
        let code = line.split(',').next().unwrap();
        let d: Vec<u32> = code.bytes().map(|b| u32::from(b - b'0')).collect();
        let cel = (11 - (d[0] * 6 + d[1] * 5 + d[2] * 4 + d[3] * 3 + d[4] * 2) % 11) % 10;
        assert_eq!(cel, d[5], "{code}");
        assert!(juki_codes::validate_municipality_code(code).is_ok());
    }
}
