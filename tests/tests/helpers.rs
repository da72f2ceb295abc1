//! The developer helpers as a new user meets them: `./dev up` on an emulator port and a state
//! folder of its own, then every command it prints under "Try:", each run exactly as printed in a
//! fresh shell (`env -i`: only `PATH` and `HOME`; no credentials, region or settings of the test's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pbs_e2e::servers::free_port;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// A command in a fresh environment: `PATH` and `HOME` only, plus `extra`.
fn fresh(program: &str, args: &[&str], extra: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo()).env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops what `./dev up` started, whatever happens to the test.
struct Down(Vec<(&'static str, String)>);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = fresh("./dev", &["down"], &self.0).output();
    }
}

#[test]
fn the_commands_dev_up_prints_run_as_printed_in_a_fresh_shell() {
    let state = tempfile::tempdir().unwrap();
    let env = vec![
        ("PBS_EMULATOR_PORT", free_port().unwrap().to_string()),
        ("PBS_STATE", state.path().display().to_string()),
    ];
    let _down = Down(env.clone());
    let up = fresh("./dev", &["up"], &env).output().unwrap();
    assert!(up.status.success(), "./dev up failed:\n{}", text(&up));
    let printed = String::from_utf8(up.stdout.clone()).unwrap();
    let commands: Vec<String> = printed
        .lines()
        .skip_while(|l| l.trim() != "Try:")
        .skip(1)
        .map(|l| l.split("  #").next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands.len(), 3, "{printed}");
    // The sample files landed before up returned.
    let landing = state.path().join("dev/landing");
    assert_eq!(pbs_e2e::files_under(&landing).len(), 2, "{printed}");

    let run = |line: &str| {
        let out = fresh("bash", &["-c", line], &[]).output().unwrap();
        assert!(out.status.success(), "{line}:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let put = run(&commands[0]);
    assert!(put.contains("uploaded README.md to s3://"), "{put}");
    // The sample template delivers it by date, like the sample files.
    let readme = std::fs::read(repo().join("README.md")).unwrap();
    let started = std::time::Instant::now();
    let landed = loop {
        let found = pbs_e2e::files_under(&landing)
            .into_iter()
            .find(|p| p.ends_with("incoming/README.md"));
        if let Some(p) = found {
            break landing.join(p);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "README.md did not land under {}",
            landing.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(std::fs::read(landed).unwrap(), readme);
    let jobs: serde_json::Value = serde_json::from_str(&run(&commands[1])).unwrap();
    assert!(
        jobs["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["first_key"] == "incoming/README.md")),
        "{jobs}"
    );
    run(&commands[2]);
    // Down means down: the emulator no longer answers.
    let port = &env[0].1;
    let probe = std::net::TcpStream::connect(format!("127.0.0.1:{port}"));
    assert!(probe.is_err(), "the emulator still answers on {port}");
}
