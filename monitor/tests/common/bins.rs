//! Finding the workspace's binaries from a test (shared by the monitor's and the shim's
//! integration tests, and ctl's Kubernetes tests: `#[path]`-included by each).

use std::path::{Path, PathBuf};

/// A workspace binary of another package. Missing is a failure, never a skip: cargo builds
/// only a package's own binaries for its tests, and a suite that skipped for want of a build
/// would pass without testing anything. `make test` builds them all first.
///
/// `OCIGUARD_TEST_<NAME>` (upper case, `-` as `_`: `OCIGUARD_TEST_OCIGUARD_HOOK`) names a
/// build to test instead: `make` builds the hook for musl when it can and points there.
pub fn sibling_bin(name: &str) -> PathBuf {
    let var = format!("OCIGUARD_TEST_{}", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "{var}={} does not exist", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<triple>/<profile>/deps/<test> -> target/<triple>/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<triple>/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `make test`, or `cargo build --workspace --bins` with the test's \
         profile (--release for `cargo test --release`) before `cargo test`",
        p.display()
    );
    p
}
