//! Bad input to the `murmur` binary: each case exits with code 2 and an error whose
//! first line names the offending value.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use murmur_tests::{AgentSpec, Cluster, murmur_bin, serial};

/// Runs `murmur args`, killing it if it runs longer than 20 s, as an agent that
/// wrongly accepted its input would.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(murmur_bin())
        .args(args)
        .env_remove("MURMUR_CLUSTER_KEY")
        .env_remove("MURMUR_CONFIG")
        .env_remove("MURMUR_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the murmur binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait works").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output can be read")
}

/// Checks exit code 2 and that the first line of stderr is an error naming `value`.
fn assert_bad_input(output: &Output, value: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(first.starts_with("error: "), "first line: {first}");
    assert!(
        first.contains(value),
        "first line does not name {value}: {first}"
    );
}

/// Flags that keep an agent that wrongly starts off the default ports.
const SPARE_PORTS: [&str; 6] = [
    "--gossip",
    "127.0.0.1:0",
    "--rpc",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
];

#[test]
fn unknown_flag_exits_2() {
    let output = run(&["agent", "--dev", "--no-such-flag"]);
    assert_bad_input(&output, "--no-such-flag");
}

#[test]
fn unparsable_address_exits_2() {
    let output = run(&["agent", "--dev", "--gossip", "localhost-7946"]);
    assert_bad_input(&output, "localhost-7946");
}

#[test]
fn missing_key_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.key");
    let missing = missing.to_str().unwrap();
    let mut args = vec!["agent", "--cluster-key-file", missing];
    args.extend(SPARE_PORTS);
    let output = run(&args);
    assert_bad_input(&output, missing);
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}

#[test]
fn short_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.key");
    std::fs::write(&path, "abcd1234\n").unwrap();
    let path = path.to_str().unwrap();
    let mut args = vec!["agent", "--cluster-key-file", path];
    args.extend(SPARE_PORTS);
    let output = run(&args);
    assert_bad_input(&output, path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("64"),
        "the error does not give the expected length: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn malformed_json_exits_2() {
    let output = run(&["call", "calc", "add", "{\"a\": 1,", "--http", "127.0.0.1:9"]);
    assert_bad_input(&output, "{\\\"a\\\": 1,");
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_exits_2() {
    let _serial = serial().await;
    let mut cluster = Cluster::new();
    cluster.start(AgentSpec::loopback("a1", &[])).await;
    let http = cluster.agents[0].spec.http.to_string();
    let output = run(&["call", "no-such-service", "get", "--http", &http]);
    assert_bad_input(&output, "no-such-service");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: NOT_FOUND"), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1);
}
