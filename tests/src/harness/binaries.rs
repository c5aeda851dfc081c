//! Finds the real `fluxgate` and `fluxgate-agent` binaries, building them first.
//!
//! Integration tests of one package cannot name another package's binaries
//! (`CARGO_BIN_EXE_*` is per package), so the harness runs `cargo build` for both once per
//! test process, with the same profile as the tests, and takes them from the target
//! directory next to the test executable. An up-to-date build takes about a second.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The target directory's profile folder (`target/debug`), from the running executable: a
/// test (`target/debug/deps/e2e-…`) or a tool such as the benchmark
/// (`target/release/fluxgate-bench`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("the executable lives in a directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    }
}

fn build_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("FLUXGATE_E2E_SKIP_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let profile = profile_dir();
        let mut command = Command::new(cargo);
        // The workspace this harness belongs to, wherever the caller runs from.
        command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        command.args([
            "build",
            "--quiet",
            "-p",
            "fluxgate-server",
            "-p",
            "fluxgate-agent",
            "--bins",
        ]);
        if profile.file_name().is_some_and(|name| name == "release") {
            command.arg("--release");
        }
        if let Some(target_dir) = profile.parent() {
            command.arg("--target-dir").arg(target_dir);
        }
        // Cargo gives the test process its own package's variables; passed on, they would
        // make build scripts that watch them (ring watches CARGO_MANIFEST_DIR) rebuild on
        // every alternation between `cargo test` and this build.
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
        let status = command
            .status()
            .expect("run cargo build for the e2e binaries");
        assert!(
            status.success(),
            "building fluxgate and fluxgate-agent failed"
        );
    });
}

/// The path of a workspace binary, built if needed.
pub fn binary(name: &str) -> PathBuf {
    build_once();
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
