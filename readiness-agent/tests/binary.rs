//! The `triton-agent` binary: usage errors exit 2 with the reason, SIGTERM exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The binary with a clean environment and the pod's variables set.
fn agent(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_triton-agent"));
    c.env_clear()
        .env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", "shop")
        .env("POD_UID", "uid-1")
        .env("TRITON_AGENT_CONTROLLER", "http://127.0.0.1:1")
        .args(args);
    c
}

fn usage_error(mut command: Command) -> String {
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_malformed_target_is_a_usage_error_naming_the_problem() {
    let err = usage_error(agent(&["--target", "http://:8080healthz"]));
    assert!(err.contains("--target"), "{err}");
    assert!(err.contains("port is not a number"), "{err}");
}

#[test]
fn a_missing_pod_variable_is_a_usage_error() {
    let mut command = agent(&["--target", "tcp://:5432"]);
    command.env_remove("POD_UID");
    let err = usage_error(command);
    assert!(err.contains("--pod-uid"), "{err}");
}

#[test]
fn a_target_from_the_environment_is_checked_too() {
    let mut command = agent(&[]);
    command.env("TRITON_AGENT_TARGET", "ftp://:21");
    let err = usage_error(command);
    assert!(err.contains("scheme must be http or tcp"), "{err}");
}

#[test]
fn a_ca_for_a_plaintext_controller_is_a_usage_error() {
    let err = usage_error(agent(&[
        "--target",
        "tcp://:1",
        "--controller-ca",
        "/ca.pem",
    ]));
    assert!(err.contains("only for an https:// controller"), "{err}");
}

#[test]
fn sigterm_stops_it_cleanly() {
    let mut child = agent(&["--target", "tcp://127.0.0.1:1", "--period", "50ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Started once it has logged so.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    loop {
        let line = rx
            .recv_timeout(WAIT)
            .expect("the agent logs its start within 10s");
        if line.contains("triton-agent starting") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait().unwrap()));
    let status = exited
        .recv_timeout(WAIT)
        .expect("the agent exits within 10s of SIGTERM");
    assert!(status.success(), "{status}");
}
