//! Every input kept under `fuzz/regressions/<target>/` (crashers the fuzzers found, minimised,
//! and a few representative inputs) through the same check its fuzz target runs, on stable, in
//! `make test`.

use std::path::Path;

use ociguard_fuzz_harness::TARGETS;

#[test]
fn kept_inputs_pass_their_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regressions");
    let mut ran = 0;
    for (target, check) in TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            check(&data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no inputs under {}", root.display());
}

#[test]
fn shipped_policies_pass_the_policy_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ociguard_fuzz_harness::policy_toml(&std::fs::read(path).unwrap());
        }
    }
}
