//! The runner's checks can fail: each test plants one fault (a hidden `--plant KIND`)
//! and expects the run to report it, exit 1, and leave nothing in /dev/shm. A clean run
//! with kills passes.

use std::process::Command;

use serde_json::Value;

/// Runs `tally-stress` with `args` (small and short), returns (exit code, report).
fn run(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally-stress"))
        .args([
            "--seconds",
            "2",
            "--producers",
            "1",
            "--consumers",
            "1",
            "--spsc",
            "1",
            "--permit-workers",
            "1",
            "--mutex-workers",
            "1",
            "--lifecycle",
            "1",
            // Other test binaries share the two CPUs: only a real hang should stall.
            "--stall-ms",
            "30000",
            "--json",
        ])
        .args(args)
        .output()
        .expect("run tally-stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let prefix = report["prefix"].as_str().expect("prefix").to_owned();
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&prefix))
        .collect();
    assert!(left.is_empty(), "the run left {left:?} in /dev/shm");
    assert!(
        !std::env::temp_dir()
            .join(format!("tally-{prefix}"))
            .exists(),
        "the run left its directory"
    );
    (out.status.code().expect("exited"), report)
}

fn u(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report}"))
}

/// Plants `kind`; expects exactly one `key`, every other check clean, and exit 1.
fn planted(kind: &str, key: &str) {
    planted_with(kind, key, &[]);
}

/// As `planted`, with more arguments.
fn planted_with(kind: &str, key: &str, more: &[&str]) -> Value {
    let mut args = vec!["--plant", kind];
    args.extend_from_slice(more);
    let (code, report) = run(&args);
    assert_eq!(u(&report, key), 1, "{kind}: {report:#}");
    assert_eq!(code, 1, "{kind}: a failed check exits 1: {report:#}");
    assert_eq!(report["passed"], false);
    for other in [
        "lost_committed",
        "duplicated",
        "reordered",
        "torn",
        "leaked_segments",
        "permit_errors",
        "mutex_errors",
        "lifecycle_failures",
    ] {
        if other != key {
            assert_eq!(u(&report, other), 0, "{kind}: {other}: {report:#}");
        }
    }
    report
}

#[test]
fn a_lost_message_is_reported() {
    planted("lost", "lost_committed");
}

#[test]
fn a_duplicated_message_is_reported() {
    planted("duplicated", "duplicated");
}

#[test]
fn a_reordered_message_is_reported() {
    planted("reordered", "reordered");
}

#[test]
fn a_torn_message_is_reported() {
    planted("torn", "torn");
}

#[test]
fn a_leaked_segment_is_reported_and_still_removed() {
    planted("leak", "leaked_segments");
}

#[test]
fn a_lost_permit_is_reported() {
    planted("lost-permit", "permit_errors");
}

#[test]
fn the_watchdog_fires_on_a_stall_and_prints_every_object() {
    let (code, report) = run(&["--plant", "stall", "--stall-ms", "1000", "--seconds", "20"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["watchdog"], true, "{report:#}");
    // Fired past 1000 ms: whole milliseconds, so 1000 when it fired within 1 ms of it.
    assert!(u(&report, "max_stall_ms") >= 1000, "{report:#}");
    let ran = report["seconds"].as_f64().expect("seconds");
    assert!(ran < 15.0, "the watchdog ends the run: {report:#}");
    let failures = report["failures"].to_string();
    assert!(
        failures.contains("MPMC ring made no progress"),
        "{failures}"
    );
    // What `tally inspect` shows: the ring's state and its holders.
    assert!(
        failures.contains(".mpmc") && failures.contains("holders"),
        "{failures}"
    );
}

#[test]
fn a_run_with_kills_passes_every_check() {
    let (code, report) = run(&["--kill-interval-ms", "20..60", "--seed", "11"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["passed"], true);
    assert!(u(&report, "kills") > 0, "{report:#}");
    assert!(u(&report, "messages_delivered") > 0, "{report:#}");
    assert!(u(&report, "lifecycle_cycles") > 0, "{report:#}");
    for key in [
        "seconds",
        "producers",
        "consumers",
        "messages_committed",
        "messages_delivered",
        "lost_committed",
        "duplicated",
        "redelivered",
        "reordered",
        "torn",
        "kills",
        "restarts",
        "lifecycle_cycles",
        "lifecycle_failures",
        "leaked_segments",
        "permit_errors",
        "mutex_errors",
        "max_stall_ms",
    ] {
        assert!(report.get(key).is_some(), "{key} missing in {report}");
    }
}

#[test]
fn a_message_a_subscriber_did_not_log_is_reported() {
    let report = planted_with("broadcast-lost", "lost_committed", &["--subscribers", "1"]);
    assert_eq!(report["broadcast"]["lost_committed"], 1, "{report:#}");
    assert_eq!(report["subscribers"], 1);
    let failures = report["failures"].to_string();
    assert!(failures.contains("subscriber process"), "{failures}");
}

#[test]
fn a_torn_broadcast_message_is_reported() {
    let report = planted_with("broadcast-torn", "torn", &["--subscribers", "1"]);
    assert_eq!(report["broadcast"]["torn"], 1, "{report:#}");
}

#[test]
fn a_broadcast_run_with_kills_passes_every_check() {
    let (code, report) = run(&[
        "--subscribers",
        "2",
        "--kill-interval-ms",
        "20..60",
        "--seed",
        "12",
    ]);
    assert_eq!(code, 0, "{report:#}");
    let b = &report["broadcast"];
    assert!(
        b["messages_committed"].as_u64().expect("committed") > 0,
        "{report:#}"
    );
    assert!(
        b["messages_delivered"].as_u64().expect("delivered") > 0,
        "{report:#}"
    );
    assert!(
        b["subscriber_joins"].as_u64().expect("joins") >= 2,
        "{report:#}"
    );
    for key in [
        "lost_committed",
        "duplicated",
        "reordered",
        "torn",
        "phantom",
        "sequence_breaks",
    ] {
        assert_eq!(b[key], 0, "{key}: {report:#}");
    }
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [
        &["--kill-interval-ms", "200..50"][..],
        &["--seconds", "0"],
        &["--producers", "0"],
        &["--payload", "100000"],
        &["--subscribers", "65"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tally-stress"))
            .args(args)
            .output()
            .expect("run tally-stress");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
