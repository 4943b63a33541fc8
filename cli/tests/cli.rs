//! The `tally` command line, end to end: real `tally hold` processes, killed and
//! signalled, observed through `ls`, `inspect`, `sweep` and `rm` with `--json`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{forward_lines, shm_path, unique, wait_within};

/// Prefix of this file's object names.
const PREFIX: &str = "ct";

const BIN: &str = env!("CARGO_BIN_EXE_tally");
/// How long a `tally` process may take to attach or to exit before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// `tally sweep` with no name sweeps every object, reclaiming dead holders of objects
/// other tests are looking at; tests that count reclaimed holders or run the global
/// sweep take this lock so they do not see each other's sweeps.
static SWEEP_ALL: Mutex<()> = Mutex::new(());

fn sweep_lock() -> MutexGuard<'static, ()> {
    SWEEP_ALL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `tally hold` process.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin, which asks it to let go and exit.
    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig)
            .expect("signal tally hold");
    }

    /// SIGKILL, and reap it: once `wait` returns, its descriptors (and so its liveness
    /// locks) are gone.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL tally hold");
        self.child.wait().expect("reap tally hold");
    }

    /// Waits for it to exit (failing the test after [`DEADLINE`]); returns its status
    /// and what it wrote to stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let what = format!("pid {}", self.child.id());
        let status = wait_within(&mut self.child, DEADLINE, &what);
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

/// A test's object name and its `tally hold` processes. On drop (also when the test
/// fails) it kills and reaps every holder and removes the name.
struct Fixture {
    name: String,
    holders: Vec<Holder>,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        Fixture {
            name: unique(PREFIX, tag),
            holders: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        shm_path(&self.name)
    }

    /// Starts `tally hold NAME EXTRA..` and waits until it prints `ready`; returns its
    /// index in `self.holders`.
    fn hold(&mut self, extra: &[&str]) -> usize {
        let mut child = Command::new(BIN)
            .arg("hold")
            .arg(&self.name)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tally hold");
        let stdin = child.stdin.take();
        let rx = forward_lines(child.stdout.take().unwrap(), None);
        self.holders.push(Holder { child, stdin });
        let i = self.holders.len() - 1;
        expect_ready(&rx, &mut self.holders[i]);
        i
    }
}

fn expect_ready(rx: &Receiver<String>, h: &mut Holder) {
    match rx.recv_timeout(DEADLINE) {
        Ok(line) => assert_eq!(line, "ready", "first line of tally hold"),
        Err(_) => {
            let _ = h.child.kill();
            let (st, err) = h.wait();
            panic!("tally hold never printed ready ({st}); stderr: {err}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for h in &mut self.holders {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
        let _ = tally::admin::remove(&self.name);
        let _ = std::fs::remove_file(self.path());
    }
}

fn tally(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tally")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `tally ARGS`, which must succeed quietly, and parses its stdout as JSON.
fn tally_json(args: &[&str]) -> Value {
    let out = tally(args);
    assert!(
        out.status.success(),
        "tally {args:?}: {}; stderr: {}",
        out.status,
        stderr_of(&out)
    );
    assert!(out.stderr.is_empty(), "tally {args:?}: {}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tally {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn inspect(name: &str) -> Value {
    let v = tally_json(&["inspect", name, "--json"]);
    assert!(v.is_object(), "inspect --json gives one object: {v}");
    v
}

fn ls_entry(name: &str) -> Option<Value> {
    let v = tally_json(&["ls", "--json"]);
    let arr = v.as_array().expect("ls --json gives an array");
    let mut found = arr.iter().filter(|e| e["name"] == name);
    let first = found.next().cloned();
    assert!(found.next().is_none(), "{name} listed twice");
    first
}

fn holders(v: &Value) -> Vec<(u64, bool)> {
    let mut hs: Vec<(u64, bool)> = v["holders"]
        .as_array()
        .expect("holders array")
        .iter()
        .map(|h| {
            assert!(h["slot"].is_u64() && h["start_ticks"].is_u64(), "{h}");
            assert!(h["attached_unix_ms"].as_u64().unwrap() > 0, "{h}");
            (h["pid"].as_u64().unwrap(), h["alive"].as_bool().unwrap())
        })
        .collect();
    hs.sort();
    hs
}

fn sorted(mut v: Vec<(u64, bool)>) -> Vec<(u64, bool)> {
    v.sort();
    v
}

/// The fields every view of a freshly held 4096-byte region shows.
fn check_region_entry(v: &Value, name: &str) {
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["kind"], "bytes", "{v}");
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(v["object_bytes"], 4096, "{v}");
    let file_len = std::fs::metadata(shm_path(name)).unwrap().len();
    assert_eq!(v["size_bytes"].as_u64(), Some(file_len), "{v}");
    assert_eq!(v["mode"], "600", "{v}");
    assert_eq!(
        v["owner_uid"].as_u64(),
        Some(rustix::process::geteuid().as_raw() as u64),
        "{v}"
    );
}

#[test]
fn hold_ls_inspect_kill_and_sweep() {
    let _serial = sweep_lock();
    let mut fx = Fixture::new("life");
    let name = fx.name.clone();
    let a = fx.hold(&["--create-bytes", "4096"]);
    let pid_a = fx.holders[a].pid() as u64;
    assert!(fx.path().exists());

    let entry = ls_entry(&name).expect("ls --json lists the held object");
    check_region_entry(&entry, &name);
    assert_eq!(entry["refcount"], 1, "{entry}");
    assert_eq!(entry["creator_pid"].as_u64(), Some(pid_a), "{entry}");
    assert_eq!(holders(&entry), vec![(pid_a, true)]);
    assert_eq!(entry["live_holders"], 1);
    assert_eq!(entry["dead_holders"], 0);

    let v = inspect(&name);
    check_region_entry(&v, &name);
    assert_eq!(v["refcount"], 1, "{v}");
    assert_eq!(holders(&v), vec![(pid_a, true)]);

    // A second holder, attaching to the existing object.
    let b = fx.hold(&[]);
    let pid_b = fx.holders[b].pid() as u64;
    let v = inspect(&name);
    assert_eq!(v["refcount"], 2, "{v}");
    assert_eq!(holders(&v), sorted(vec![(pid_a, true), (pid_b, true)]));
    assert_eq!(ls_entry(&name).unwrap()["refcount"], 2);

    // SIGKILL one: inspect shows it dead (inspect does not sweep).
    fx.holders[a].kill();
    let v = inspect(&name);
    assert_eq!(holders(&v), sorted(vec![(pid_a, false), (pid_b, true)]));
    assert_eq!(v["live_holders"], 1, "{v}");
    assert_eq!(v["dead_holders"], 1, "{v}");

    // Sweeping the name reclaims it and keeps the object.
    let s = tally_json(&["sweep", &name, "--json"]);
    assert_eq!(s["reclaimed_holders"], 1, "{s}");
    assert_eq!(s["unlinked"], serde_json::json!([]), "{s}");
    let v = inspect(&name);
    assert_eq!(v["refcount"], 1, "{v}");
    assert_eq!(v["reclaimed_total"], 1, "{v}");
    assert_eq!(holders(&v), vec![(pid_b, true)]);

    // Kill the last one: the name stays until a sweep finds no one alive.
    fx.holders[b].kill();
    assert!(fx.path().exists());
    let s = tally_json(&["sweep", "--json"]);
    let unlinked = s["unlinked"].as_array().expect("unlinked array");
    assert!(unlinked.iter().any(|n| n == &name), "{s}");
    assert!(s["reclaimed_holders"].as_u64().unwrap() >= 1, "{s}");
    assert!(!fx.path().exists(), "swept object's name is gone");
    assert!(ls_entry(&name).is_none());
    let out = tally(&["inspect", &name]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn hold_exits_zero_when_stdin_closes() {
    let mut fx = Fixture::new("stdin");
    let i = fx.hold(&["--create-bytes", "4096"]);
    assert!(fx.path().exists());
    fx.holders[i].close_stdin();
    let (st, err) = fx.holders[i].wait();
    assert!(st.success(), "tally hold: {st}; stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
    assert!(!fx.path().exists(), "last holder's exit unlinks the name");
}

#[test]
fn hold_exits_zero_on_sigterm_and_sigint() {
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut fx = Fixture::new("signal");
        let i = fx.hold(&["--create-bytes", "4096"]);
        let j = fx.hold(&[]);
        assert_eq!(inspect(&fx.name)["refcount"], 2);

        fx.holders[j].signal(sig);
        let (st, err) = fx.holders[j].wait();
        assert!(st.success(), "{sig:?}: tally hold: {st}; stderr: {err}");
        assert!(err.is_empty(), "stderr: {err}");
        // It detached: nothing dead is left for a sweep.
        let v = inspect(&fx.name);
        assert_eq!(v["refcount"], 1, "{v}");
        assert_eq!(holders(&v), vec![(fx.holders[i].pid() as u64, true)]);

        fx.holders[i].signal(sig);
        let (st, err) = fx.holders[i].wait();
        assert!(st.success(), "{sig:?}: tally hold: {st}; stderr: {err}");
        assert!(err.is_empty(), "stderr: {err}");
        assert!(
            !fx.path().exists(),
            "{sig:?}: name gone after the last exit"
        );
    }
}

#[test]
fn rm_unlinks_a_held_object_and_its_holder_still_exits_cleanly() {
    let mut fx = Fixture::new("rm");
    let name = fx.name.clone();
    let i = fx.hold(&["--create-bytes", "4096"]);

    let v = tally_json(&["rm", &name, "--json"]);
    assert_eq!(v["removed"], name.as_str(), "{v}");
    assert!(!fx.path().exists(), "rm removes the name");
    assert!(
        fx.holders[i].child.try_wait().unwrap().is_none(),
        "the holder lives on"
    );
    assert_eq!(tally(&["inspect", &name]).status.code(), Some(3));

    // A new object may take the name at once; the old holder's exit must leave it.
    let fresh = tally::Region::create(&name, 64).expect("create after rm");
    fresh.write(0, b"fresh").unwrap();

    fx.holders[i].close_stdin();
    let (st, err) = fx.holders[i].wait();
    assert!(st.success(), "tally hold after rm: {st}; stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");

    assert!(fx.path().exists(), "the new object survives the old holder");
    let v = inspect(&name);
    assert_eq!(v["object_bytes"], 64, "{v}");
    assert_eq!(v["refcount"], 1, "{v}");
    assert_eq!(
        holders(&v),
        vec![(std::process::id() as u64, true)],
        "only this process holds the new object"
    );
    drop(fresh);
    assert!(!fx.path().exists());
}

#[test]
fn ls_and_inspect_report_an_unreadable_segment() {
    let _serial = sweep_lock();
    let fx = Fixture::new("garbage");
    std::fs::write(fx.path(), vec![0x5a_u8; 4096]).unwrap();

    let entry = ls_entry(&fx.name).expect("ls lists the unreadable name");
    assert_eq!(entry["kind"], "unreadable", "{entry}");
    assert!(
        entry["error"].as_str().unwrap().contains("corrupted"),
        "{entry}"
    );

    let out = tally(&["inspect", &fx.name, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    let err = stderr_of(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tally: error:") && err.contains("corrupted"),
        "{err}"
    );

    // The global sweep reports it and leaves it alone (it is not a tally segment).
    let s = tally_json(&["sweep", "--json"]);
    let errors = s["errors"].as_array().expect("errors array");
    assert!(errors.iter().any(|e| e["name"] == fx.name.as_str()), "{s}");
    assert!(fx.path().exists());
}

/// Runs `tally ARGS` expecting exit `code` and a single `tally: error:` line.
fn expect_error_line(args: &[&str], code: i32) {
    let out = tally(args);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "tally {args:?}; stderr: {err}"
    );
    assert!(out.stdout.is_empty(), "tally {args:?}: stdout not empty");
    assert_eq!(err.lines().count(), 1, "tally {args:?}; stderr: {err}");
    assert!(
        err.starts_with("tally: error:"),
        "tally {args:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "tally {args:?}; stderr: {err}");
}

#[test]
fn error_exit_codes() {
    let missing = unique(PREFIX, "missing");
    // 3: not found.
    expect_error_line(&["inspect", &missing], 3);
    expect_error_line(&["inspect", &missing, "--json"], 3);
    expect_error_line(&["sweep", &missing], 3);
    expect_error_line(&["rm", &missing], 3);
    expect_error_line(&["hold", &missing], 3);
    // 2: invalid names.
    for bad in ["../x", "a/b", ".hidden", "", "sp ace"] {
        expect_error_line(&["inspect", bad], 2);
        expect_error_line(&["rm", bad], 2);
        expect_error_line(&["sweep", bad], 2);
        expect_error_line(&["hold", bad, "--create-bytes", "16"], 2);
    }
    // 2: a region of zero bytes.
    expect_error_line(&["hold", &unique(PREFIX, "zero"), "--create-bytes", "0"], 2);
    assert!(!shm_path(&missing).exists());

    // 2: usage errors, reported by the argument parser.
    for args in [
        &["frobnicate"][..],
        &[],
        &["inspect"],
        &["ls", "--bogus"],
        &["hold", "x", "--create-bytes", "lots"],
    ] {
        let out = tally(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "tally {args:?}; stderr: {err}");
        assert!(!err.is_empty(), "tally {args:?}: usage error explained");
        assert!(!err.contains("panicked"), "tally {args:?}; stderr: {err}");
    }
}

#[test]
fn help_and_version_succeed() {
    for args in [&["--help"][..], &["--version"], &["hold", "--help"]] {
        let out = tally(args);
        assert!(out.status.success(), "tally {args:?}: {}", out.status);
        assert!(!out.stdout.is_empty());
    }
}

/// `tally ls | head -0` and the like: a reader that has gone away is not a crash.
/// Whether tally then exits quietly or by SIGPIPE, it must not panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let fx = Fixture::new("pipe");
    let region = tally::Region::create(&fx.name, 64).unwrap();
    for args in [
        &["ls"][..],
        &["ls", "--json"],
        &["inspect", &fx.name],
        &["inspect", &fx.name, "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run tally");
        let err = stderr_of(&out);
        assert!(
            !err.contains("panicked"),
            "tally {args:?}: {}; stderr: {err}",
            out.status
        );
        assert_ne!(
            out.status.code(),
            Some(101),
            "tally {args:?}; stderr: {err}"
        );
    }
    drop(region);
}
