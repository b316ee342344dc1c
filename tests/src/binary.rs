//! Finding the `murmur` binary under test.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for tests of the package that owns the binary,
//! and `murmur` belongs to the `murmur` package, not to this one. So the harness builds it
//! once per test process with `cargo build -p murmur --bin murmur`, into the same target
//! directory and profile as the running test executable, and takes the result from
//! `<target>/<profile>/murmur`. When the binary is up to date this costs about a second.
//! Setting `MURMUR_BIN` to a path skips the build and tests that binary instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Returns the path of the `murmur` binary, building it on first use.
///
/// # Panics
///
/// When the build fails or the binary cannot be found; the message shows cargo's output.
pub fn murmur_bin() -> &'static Path {
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("MURMUR_BIN") {
            return PathBuf::from(path);
        }
        build()
    })
}

fn build() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable has a path");
    // The test executable is <target>/<profile>/deps/<name>-<hash>.
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lies in <target>/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory lies in the target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("the profile directory has a UTF-8 name");
    let cargo_profile = match profile {
        "debug" => "dev",
        other => other,
    };

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(cargo);
    // Cargo gives the test process the variables it sets for a crate. Some build scripts
    // (ring's) watch CARGO_MANIFEST_DIR, so passing them on would rebuild those crates on
    // every run and then again in the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .args(["build", "--quiet", "-p", "murmur", "--bin", "murmur"])
        .args(["--profile", cargo_profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the murmur binary failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join("murmur");
    assert!(
        binary.is_file(),
        "cargo built murmur but {} does not exist",
        binary.display()
    );
    binary
}
