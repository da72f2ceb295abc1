//! The executor's Debian package (`cargo deb -p pbs-executor`): what it holds (read with
//! `dpkg-deb`, not installed), its systemd unit checked by systemd's own verifier and security
//! analyser, and its maintainer scripts.
//! Packages the debug build the end-to-end run already made (`--no-build --profile dev`): the
//! release package differs only in the binary's optimisation.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pbs_e2e::package::{build_deb, run, text};

/// Copies the host's systemd units into `root`, so the verifier finds the targets ours names.
fn host_units_into(root: &Path) {
    let dest = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if !to.exists() {
            run(Command::new("cp").arg("-a").arg(entry.path()).arg(&to));
        }
    }
}

#[test]
fn the_deb_holds_the_binary_a_verified_hardened_unit_and_a_private_config() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    let listing = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    println!("{listing}");
    let files: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    let unit_path = [
        "/lib/systemd/system/pbs-executor.service",
        "/usr/lib/systemd/system/pbs-executor.service",
    ]
    .into_iter()
    .find(|p| files.contains(*p))
    .unwrap_or_else(|| panic!("no systemd unit in the package: {files:#?}"));
    for expected in [
        "/usr/bin/pbs-executor",
        "/etc/pbs-executor/executor.toml",
        "/usr/share/doc/pbs-executor/install-executor.md",
        "/usr/share/doc/pbs-executor/configuration.md",
        "/usr/share/doc/pbs-executor/examples/executor.toml",
    ] {
        assert!(files.contains(expected), "{expected} missing: {files:#?}");
    }
    // The configuration is private to the service group and kept across upgrades.
    let config_line = listing
        .lines()
        .find(|l| l.ends_with("/etc/pbs-executor/executor.toml"))
        .unwrap();
    assert!(config_line.starts_with("-rw-r-----"), "{config_line}");
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles")));
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/pbs-executor/executor.toml"),
        "{conffiles}"
    );
    let depends = text(&run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Depends")));
    assert!(depends.contains("passwd"), "{depends}");

    // postinst makes the service user; the generated part registers the unit without starting
    // it (the example configuration must be edited first).
    let postinst = text(&run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("postinst")));
    assert!(postinst.contains("useradd --system"), "{postinst}");
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");

    // The unit as installed, beside the binary, verified by systemd itself: no error and no
    // warning (an unknown or misplaced key is only a warning, so stderr must be empty).
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    host_units_into(&root);
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("pbs-executor.service"));
    let warnings = String::from_utf8_lossy(&verify.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );

    // Hardening, scored by systemd from 0 (locked down) to 10 (exposed); the threshold is on the
    // same scale times ten: the command fails above 2.0.
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(root.join(unit_path.trim_start_matches('/'))));
    let score = text(&security);
    println!("{}", score.lines().last().unwrap_or_default());
    assert!(score.contains("Overall exposure level"), "{score}");

    let version = text(&run(
        Command::new(root.join("usr/bin/pbs-executor")).arg("--version")
    ));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
