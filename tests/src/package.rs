//! The executor's Debian package for the packaging and install suites, and the command helpers
//! they share.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::workspace_root;

/// Runs `cmd`, failing the test with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command's standard output.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cargo deb -p pbs-executor` of the debug build the end-to-end run already made (the release
/// package differs only in the binary's optimisation), written into `dir`.
pub fn build_deb(dir: &Path) -> PathBuf {
    let deb = dir.join("pbs-executor.deb");
    run(Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "deb",
            "-p",
            "pbs-executor",
            "--no-build",
            "--profile",
            "dev",
            "--output",
        ])
        .arg(&deb));
    deb
}
