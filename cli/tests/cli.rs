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
        self.hold_with(extra, Stdio::piped())
    }

    /// As [`Fixture::hold`], with the given stdin (`Stdio::null()`: a background job).
    fn hold_with(&mut self, extra: &[&str], stdin: Stdio) -> usize {
        let mut child = Command::new(BIN)
            .arg("hold")
            .arg(&self.name)
            .args(extra)
            .stdin(stdin)
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

/// `tally sweep --json` of every object. Other processes on this machine may leave
/// unreadable names about, so errors are allowed; the exit code must say whether
/// there were any (1 with errors, 0 without).
fn sweep_all_json() -> Value {
    let out = tally(&["sweep", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sweep --json: stdout is not JSON ({e}); stderr: {}",
            stderr_of(&out)
        )
    });
    let errors = v["errors"].as_array().expect("errors array");
    let want = if errors.is_empty() { 0 } else { 1 };
    assert_eq!(
        out.status.code(),
        Some(want),
        "{v}; stderr: {}",
        stderr_of(&out)
    );
    v
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
    let s = sweep_all_json();
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
    let hint = format!("not a tally object; tally rm {} removes it", fx.name);

    let entry = ls_entry(&fx.name).expect("ls lists the unreadable name");
    assert_eq!(entry["kind"], "unreadable", "{entry}");
    assert!(
        entry["error"].as_str().unwrap().contains("corrupted"),
        "{entry}"
    );
    assert_eq!(entry["hint"], hint.as_str(), "{entry}");
    let out = tally(&["ls"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&fx.name))
        .unwrap_or_else(|| panic!("ls lists {}: {text}", fx.name));
    assert!(
        line.contains("unreadable") && line.contains(&hint),
        "{line}"
    );

    for json in [true, false] {
        let mut args = vec!["inspect", &fx.name];
        if json {
            args.push("--json");
        }
        let out = tally(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
        assert!(out.stdout.is_empty());
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("tally: error:") && err.contains("corrupted") && err.contains(&hint),
            "{err}"
        );
    }

    // The global sweep reports it, leaves it alone (it is not a tally segment) and
    // exits 1, with one error line naming it.
    let out = tally(&["sweep", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let s: Value = serde_json::from_slice(&out.stdout).expect("sweep --json prints JSON");
    let errors = s["errors"].as_array().expect("errors array");
    assert!(errors.iter().any(|e| e["name"] == fx.name.as_str()), "{s}");
    let err = stderr_of(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tally: error: could not sweep") && err.contains(&fx.name),
        "{err}"
    );
    assert!(fx.path().exists());
    // Without --json too.
    let out = tally(&["sweep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
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

    // 2: usage errors, reported by the argument parser, and values out of range; each
    // one line, and a benchmark refuses before it measures anything.
    for args in [
        &["frobnicate"][..],
        &[],
        &["inspect"],
        &["ls", "--bogus"],
        &["hold", "x", "--create-bytes", "lots"],
        &["bench", "--payload", "4"],
        &["bench", "--payload", "2000000"],
        &["bench", "latency", "--payload", "4"],
        &["bench", "--cpus", "0,0"],
        &["bench", "--cpus", "0"],
        &["bench", "--cpus", "0,1,2"],
        &["bench", "--cpus", "0,100000"],
        &["bench", "--seconds", "0"],
        &["bench", "throughput", "--seconds", "-1"],
        &["bench", "--seconds", "NaN"],
        &["bench", "--iters", "0"],
        &["bench", "--plot", "/nonexistent-dir/x.svg"],
    ] {
        expect_error_line(args, 2);
    }
}

#[test]
fn plot_error_names_the_path_before_the_run() {
    let dir = std::env::temp_dir().join(unique(PREFIX, "noplotdir"));
    let path = dir.join("plot.svg");
    let p = path.to_str().unwrap();
    for args in [
        &["bench", "--plot", p][..],
        &["bench", "throughput", "--plot", p],
    ] {
        expect_error_line(args, 2);
        let err = stderr_of(&tally(args));
        assert!(err.contains(p), "names the path: {err}");
    }
    assert!(!dir.exists());
}

#[test]
fn help_and_version_succeed() {
    for args in [&["--help"][..], &["--version"], &["hold", "--help"]] {
        let out = tally(args);
        assert!(out.status.success(), "tally {args:?}: {}", out.status);
        assert!(!out.stdout.is_empty());
    }
    let help = String::from_utf8(tally(&["--help"]).stdout).unwrap();
    for code in [
        "Exit codes:",
        "0  success",
        "1  failure",
        "2  usage error",
        "3  object not found",
    ] {
        assert!(help.contains(code), "--help documents {code:?}: {help}");
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

/// A script's background job: stdin is /dev/null, which must not end the hold.
#[test]
fn hold_until_signal_ignores_stdin_and_detaches_on_sigterm() {
    let mut fx = Fixture::new("bg");
    let i = fx.hold_with(&["--create-bytes", "4096", "--until-signal"], Stdio::null());
    let pid = fx.holders[i].pid() as u64;
    // Without --until-signal the end of stdin would have made it detach and exit by
    // the time a second process has started and read the object.
    let v = inspect(&fx.name);
    assert_eq!(holders(&v), vec![(pid, true)], "{v}");
    assert!(
        fx.holders[i].child.try_wait().unwrap().is_none(),
        "tally hold --until-signal exited with stdin at end of file"
    );

    fx.holders[i].signal(rustix::process::Signal::TERM);
    let (st, err) = fx.holders[i].wait();
    assert!(st.success(), "tally hold: {st}; stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
    assert!(
        !fx.path().exists(),
        "it detached: the last holder's exit unlinks"
    );
}

/// A file of /dev/shm, removed on drop, with a write lock on all its bytes through
/// `_lock` so a concurrent `tally sweep` (of any test on this machine) leaves it alone:
/// the sweep removes a temporary file only once it can lock it.
struct ShmFile {
    path: PathBuf,
    _lock: std::fs::File,
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes an open-file-description write lock on the whole of `file`.
fn lock_whole(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: `fl` is a valid flock for the duration of the call; the fd is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(rc, 0, "lock {file:?}: {}", std::io::Error::last_os_error());
}

/// A temporary segment file as the library's builder names it. `building`: hold its
/// admin lock, as a live builder does (the library judges a builder alive by it).
fn fake_creation(pid: u32, bytes: usize, building: bool) -> ShmFile {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // A counter far above any the builder in this process reaches.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(3_000_000_000);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = PathBuf::from(format!("/dev/shm/.tally-init.{pid}.{n}.{now_ms}"));
    std::fs::write(&path, vec![0u8; bytes]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    if building {
        lock_whole(&file);
    }
    ShmFile { path, _lock: file }
}

#[test]
fn ls_shows_creations_and_their_debris() {
    // The debris file holds no lock, so a global sweep of another test here would
    // remove it: keep them out.
    let _sweeps = sweep_lock();
    let mut dead = Command::new("true").spawn().expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let creating = fake_creation(std::process::id(), 4096, true);
    let temp = |f: &ShmFile| f.path.file_name().unwrap().to_str().unwrap().to_owned();
    let creating_name = temp(&creating);
    // Any create anywhere removes a dead builder's file (that is what debris is for),
    // and other tests here create objects: make the debris file afresh for each look,
    // and accept a look that lost it to such a create (it is retried).
    let look = |args: &[&str], check: &dyn Fn(&str, &str) -> Option<()>| {
        for _ in 0..20 {
            let debris = fake_creation(dead_pid, 8192, false);
            let out = tally(args);
            assert!(out.status.success(), "{}", stderr_of(&out));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let found = check(&text, &temp(&debris));
            drop(debris);
            if found.is_some() {
                return;
            }
        }
        panic!("`tally {}` never listed the debris file", args.join(" "));
    };
    look(&["ls", "--json"], &|text, debris_name| {
        let arr: Value = serde_json::from_str(text).expect("ls --json parses");
        let arr = arr.as_array().expect("ls --json gives an array");
        let entry = |n: &str| arr.iter().find(|e| e["name"] == n).cloned();
        let c = entry(&creating_name).unwrap_or_else(|| panic!("lists {creating_name}"));
        assert_eq!(c["kind"], "creation", "{c}");
        assert_eq!(c["state"], "creating", "{c}");
        assert_eq!(
            c["builder_pid"].as_u64(),
            Some(std::process::id() as u64),
            "{c}"
        );
        assert_eq!(c["builder_alive"], true, "{c}");
        assert_eq!(c["removable"], false, "{c}");
        assert_eq!(c["bytes"], 4096, "{c}");
        assert!(c["age_ms"].as_u64().unwrap() < 600_000, "{c}");
        let d = entry(debris_name)?;
        assert_eq!(d["kind"], "creation", "{d}");
        assert_eq!(d["state"], "debris", "{d}");
        assert_eq!(d["builder_pid"].as_u64(), Some(dead_pid as u64), "{d}");
        assert_eq!(d["builder_alive"], false, "{d}");
        assert_eq!(d["removable"], true, "{d}");
        assert_eq!(d["bytes"], 8192, "{d}");
        Some(())
    });
    look(&["ls"], &|text, debris_name| {
        let line = |n: &str| text.lines().find(|l| l.starts_with(n)).map(str::to_owned);
        let c = line(&creating_name).unwrap_or_else(|| panic!("ls lists {creating_name}: {text}"));
        assert!(
            c.contains(&format!("(creating, pid {})", std::process::id())),
            "{text}"
        );
        let d = line(debris_name)?;
        assert!(
            d.contains("(debris of a dead create; tally sweep removes it)"),
            "{text}"
        );
        Some(())
    });
    drop(creating);
}

#[test]
fn inspect_shows_readable_times_and_sizes() {
    let mut fx = Fixture::new("human");
    fx.hold(&["--create-bytes", "65536"]);
    let out = tally(&["inspect", &fx.name]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("inspect shows {key}: {text}"))
            .to_owned()
    };
    assert!(line("size:").contains("64 KiB in the object"), "{text}");
    // `2026-12-07 04:01:02 UTC (850 ms ago) by pid N`
    let created = line("created:");
    assert!(
        created.contains(" UTC (") && created.contains(" ago) by pid "),
        "{created}"
    );
    let date = created["created:".len()..].trim_start();
    let b = date.as_bytes();
    assert!(
        b.len() > 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':',
        "{created}"
    );
    assert!(
        line("  slot").contains("attached ") && line("  slot").contains(" ago)"),
        "{text}"
    );
}

/// Benchmarks pin two processes to CPUs 0 and 1.
fn two_cpus() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

#[test]
fn bench_json_records_machine_version_and_two_line_floor() {
    if !two_cpus() {
        return;
    }
    let dir = std::env::temp_dir().join(unique(PREFIX, "plot"));
    std::fs::create_dir(&dir).unwrap();
    let svg = dir.join("both.svg");
    let out = tally(&[
        "bench",
        "--iters",
        "400",
        "--seconds",
        "0.05",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{}; stderr: {err}", out.status);
    // Progress, as plain lines: stderr is not a terminal here.
    let steps: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tally bench: "))
        .collect();
    assert!(steps.len() >= 19, "{err}");
    assert!(steps[0].starts_with("tally bench: 1/19 latency"), "{err}");
    assert!(err.contains("19/19 throughput"), "{err}");
    assert!(!err.contains('\r'), "no bar off a terminal: {err:?}");

    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    assert_eq!(v["tally_version"], env!("CARGO_PKG_VERSION"), "{v}");
    let m = &v["machine"];
    assert!(!m["cpu_model"].as_str().unwrap().is_empty(), "{m}");
    assert_eq!(m["cpus"], serde_json::json!([0, 1]), "{m}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(m["kernel"], kernel.trim(), "{m}");

    let lat = &v["latency"];
    let p50 = |b: &str| lat["baselines"][b]["p50_ns"].as_u64().unwrap();
    for b in ["floor", "two_line", "pipe", "uds"] {
        assert!(p50(b) > 0, "{b}: {lat}");
        for k in ["p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns"] {
            assert!(lat["baselines"][b][k].is_number(), "{b}.{k}: {lat}");
        }
    }
    assert!(lat["ratios_p50_vs_tally"]["two_line"].is_number(), "{lat}");
    assert!(
        lat["tally_p50_vs_two_line_p50"].as_f64().unwrap() > 0.0,
        "{lat}"
    );
    let want = if p50("floor") < 80 {
        "shared-cache"
    } else {
        "cross-complex"
    };
    assert_eq!(lat["placement"], want, "{lat}");
    assert!(v["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{v}");

    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.contains("<svg") && drawn.contains("M msgs/s"),
        "{drawn}"
    );
    assert!(
        drawn.contains("two lines (one per direction)"),
        "latency CDF drawn too"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // With a subcommand: that object, still with the machine and version.
    let out = tally(&[
        "bench",
        "throughput",
        "--seconds",
        "0.05",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "--quiet: {}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["msgs_per_s"].is_number() && v["machine"]["kernel"].is_string(),
        "{v}"
    );
    assert_eq!(v["tally_version"], env!("CARGO_PKG_VERSION"), "{v}");
}

#[test]
fn bench_tables_use_the_readme_names_and_units() {
    if !two_cpus() {
        return;
    }
    let out = tally(&["bench", "--iters", "400", "--seconds", "0.05"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "p50 / floor p50",
        "p50 / two-line p50",
        "floor (one shared cache line)",
        "two lines (one per direction)",
        "unix socket",
        "placement: ",
        "x the two-line floor",
        "msgs/s",
        "GB/s",
        "zero-copy batches of 256",
    ] {
        assert!(text.contains(want), "{want:?} in: {text}");
    }
    let zero_copy = text
        .lines()
        .find(|l| l.starts_with("zero-copy reserve/commit"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(zero_copy.contains(" M "), "rates in M msgs/s: {zero_copy}");
}

#[test]
fn bench_sync_json_has_the_issue_keys_and_times_spinning_hand_offs_as_rtt_half() {
    if !two_cpus() {
        return;
    }
    let child = Command::new(BIN)
        .args(["bench", "sync", "--iters", "400", "--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tally");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}; {}", out.status, stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench sync --json prints JSON");
    let num = |path: &str| {
        let x = path.split('.').fold(&v, |v, k| &v[k]);
        x.as_f64()
            .unwrap_or_else(|| panic!("{path} is not a number: {v}"))
    };
    for key in [
        "mutex.uncontended_ns",
        "mutex.handoff_sleep_p50_ns",
        "mutex.handoff_spin_p50_ns",
        "semaphore.uncontended_ns",
        "semaphore.handoff_sleep_p50_ns",
        "semaphore.handoff_spin_p50_ns",
        "event.handoff_sleep_p50_ns",
        "baselines.pthread_robust_mutex.uncontended_ns",
        "baselines.posix_semaphore.uncontended_ns",
        "baselines.posix_semaphore.handoff_sleep_p50_ns",
        "baselines.futex.wake_p50_ns",
        "baselines.two_line.p50_ns",
        "baselines.floor.p50_ns",
    ] {
        assert!(num(key) > 0.0, "{key}: {v}");
    }
    for key in [
        "mutex_uncontended_vs_pthread_robust",
        "mutex_sleep_vs_futex_wake",
        "semaphore_sleep_vs_futex_wake",
        "event_sleep_vs_futex_wake",
        "mutex_spin_vs_two_line",
        "semaphore_spin_vs_two_line",
    ] {
        assert!(v["ratios"][key].as_f64().unwrap_or(0.0) > 0.0, "{key}: {v}");
    }
    let spin = v["method"]["spin"].as_str().unwrap_or_default();
    assert!(spin.starts_with("round trip / 2 on one clock"), "{v}");
    let unc = v["method"]["uncontended"].as_str().unwrap_or_default();
    assert!(unc.contains("alternating runs"), "{v}");
    // 400 round trips, split over 4 rounds of each spinning measurement.
    assert_eq!(v["spin_round_trips"], 400, "{v}");
    assert_eq!(v["machine"]["cpus"], serde_json::json!([0, 1]), "{v}");
    // Every object the run created is gone.
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(&format!("bench-{pid}-")))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");

    let out = tally(&["bench", "sync", "--iters", "400", "--quiet"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "spin RTT/2",
        "spin: round trip / 2 on one clock",
        "two lines, one per direction",
        "spinning hand-off (RTT/2) / two-line floor (RTT/2)",
        "sleeping hand-off / futex wake",
    ] {
        assert!(text.contains(want), "{want:?} in: {text}");
    }
}

#[test]
fn inspect_shows_ring_capacity_fill_and_roles() {
    let name = unique(PREFIX, "ringinfo");
    let ring = tally::Ring::<u64>::create(&name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    for v in 0..2 {
        tx.send(v).unwrap();
    }
    let out = tally(&["inspect", &name]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ring:        8 slots"), "{text}");
    assert!(text.contains("2 waiting (25% full)"), "{text}");
    assert!(text.contains("producer:   slot 0"), "{text}");
    assert!(text.contains("consumer:   none (claimed 0 times"), "{text}");
    let v = tally_json(&["inspect", &name, "--json"]);
    assert_eq!(v["ring"]["capacity"], 8, "{v}");
    assert_eq!(v["ring"]["committed"], 2, "{v}");
    assert_eq!(v["ring"]["producer"]["holder_slot"], 0, "{v}");

    let mname = unique(PREFIX, "mpmcinfo");
    let mpmc = tally::MpmcRing::<u64>::create(&mname, 4).unwrap();
    let (_p1, _p2, _c) = (
        mpmc.producer().unwrap(),
        mpmc.producer().unwrap(),
        mpmc.consumer().unwrap(),
    );
    let text = String::from_utf8_lossy(&tally(&["inspect", &mname]).stdout).into_owned();
    assert!(
        text.contains("handles:     2 producers, 1 consumers attached"),
        "{text}"
    );
    assert_eq!(
        tally_json(&["ls", "--json"]).as_array().map(|a| a
            .iter()
            .any(|e| e["name"] == mname.as_str() && e["kind"] == "mpmc-ring")),
        Some(true)
    );
}

#[test]
fn bench_mpmc_usage_errors_exit_2_before_measuring() {
    let dir = std::env::temp_dir().join(unique(PREFIX, "mpmcbad"));
    std::fs::create_dir(&dir).unwrap();
    let svg = dir.join("never.svg");
    let svg = svg.to_str().unwrap();
    for args in [
        &["bench", "--mpmc", "0,1"][..],
        &["bench", "throughput", "--mpmc", "1,0"],
        &["bench", "throughput", "--mpmc", "1"],
        &["bench", "throughput", "--mpmc", "1,2,3"],
        &["bench", "throughput", "--mpmc", "32,1"],
        &["bench", "throughput", "--mpmc", "x,1"],
        &["bench", "throughput", "--mpmc"],
        // Latency is ping-pong of one producer and one consumer.
        &["bench", "latency", "--mpmc", "2,2"],
        &["bench", "--mpmc", "2,1", "--plot", svg],
        &["bench", "sync", "--mpmc", "1,1"],
        &["bench", "throughput", "--mpmc", "1,1", "--payload", "64"],
    ] {
        expect_error_line(args, 2);
    }
    let err = stderr_of(&tally(&["bench", "latency", "--mpmc", "2,2"]));
    assert!(
        err.contains("throughput --mpmc 2,2"),
        "says what works: {err}"
    );
    let err = stderr_of(&tally(&["bench", "--mpmc", "0,1"]));
    assert!(err.contains("--mpmc") && err.contains("1..=31"), "{err}");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "no plot file for a refused run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_mpmc_throughput_json_has_the_script_keys_and_no_errors() {
    if !two_cpus() {
        return;
    }
    let v = tally_json(&[
        "bench",
        "throughput",
        "--mpmc",
        "2,2",
        "--seconds",
        "0.05",
        "--json",
        "--quiet",
    ]);
    let rate = |x: &Value| x["msgs_per_s"].as_f64().unwrap_or(-1.0);
    assert!(rate(&v) > 0.0, "{v}");
    assert!(rate(&v["baselines"]["spsc"]) > 0.0, "{v}");
    assert!(rate(&v["baselines"]["array_queue"]) > 0.0, "{v}");
    for run in [&v, &v["baselines"]["spsc"], &v["baselines"]["array_queue"]] {
        assert_eq!(run["errors"], 0, "{v}");
        assert!(run["msgs"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(
        (v["producers"].as_u64(), v["consumers"].as_u64()),
        (Some(2), Some(2))
    );
    // Two consumers, and each message counted once between them.
    let per: Vec<u64> = v["per_consumer_msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(per.len(), 2, "{v}");
    assert_eq!(per.iter().sum::<u64>(), v["msgs"].as_u64().unwrap(), "{v}");
    assert_eq!(v["machine"]["cpus"], serde_json::json!([0, 1]), "{v}");
    assert_eq!(
        v["machine"]["load_average"].as_array().map(Vec::len),
        Some(3),
        "the load the figures were taken under: {v}"
    );
    assert_eq!(v["tally_version"], env!("CARGO_PKG_VERSION"), "{v}");
}

#[test]
fn bench_mpmc_latency_json_has_p50_and_the_two_line_floor() {
    if !two_cpus() {
        return;
    }
    let v = tally_json(&[
        "bench", "latency", "--mpmc", "1,1", "--iters", "400", "--json", "--quiet",
    ]);
    assert!(v["p50_ns"].as_u64().unwrap() > 0, "{v}");
    for b in ["two_line", "spsc", "array_queue"] {
        assert!(
            v["baselines"][b]["p50_ns"].as_u64().unwrap() > 0,
            "{b}: {v}"
        );
    }
    assert!(v["mpmc_p50_vs_two_line_p50"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["iters"], 400, "{v}");
}

#[test]
fn bench_mpmc_plain_run_prints_both_tables_progress_and_plot() {
    if !two_cpus() {
        return;
    }
    let dir = std::env::temp_dir().join(unique(PREFIX, "mpmcplot"));
    std::fs::create_dir(&dir).unwrap();
    let svg = dir.join("mpmc.svg");
    let out = tally(&[
        "bench",
        "--mpmc",
        "1,1",
        "--iters",
        "400",
        "--seconds",
        "0.05",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{}; stderr: {err}", out.status);
    let steps: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tally bench: "))
        .collect();
    assert!(steps[0].starts_with("tally bench: 1/19 latency"), "{err}");
    assert!(err.contains("19/19 throughput: ArrayQueue"), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "p50 / two-line p50",
        "two lines (one per direction)",
        "tally MpmcRing, 1 x 1 processes",
        "tally Ring (SPSC)",
        "crossbeam ArrayQueue, threads",
        "x the two-line floor",
        "msgs/s",
        "crossbeam ArrayQueue, 1 + 1 threads",
        "errors: 0",
    ] {
        assert!(text.contains(want), "{want:?} in: {text}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("tally MpmcRing, 1 x 1 processes") && l.contains(" M "))
        .unwrap_or_else(|| panic!("rates in M msgs/s: {text}"));
    assert!(row.contains(" 0 "), "no errors: {row}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.contains("M msgs/s") && drawn.contains("MpmcRing 1x1"),
        "{drawn}"
    );
    assert!(
        drawn.contains("two lines (one per direction)"),
        "latency CDF drawn too"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tally bench lifecycle --json` with tiny counts: every figure the issue names is
/// there and positive, and the run leaves nothing behind in /dev/shm (its objects, the
/// raw baselines' files and the POSIX semaphore are all named `bench-PID-...`).
#[test]
fn bench_lifecycle_json_has_every_figure_and_leaves_nothing() {
    if !two_cpus() {
        return;
    }
    // Its hundreds of creates each remove dead builders' debris (P5), which
    // `ls_shows_creations_and_their_debris` plants and then looks for: keep apart.
    let _sweeps = sweep_lock();
    let child = Command::new(BIN)
        .args(["bench", "lifecycle", "--ops", "2", "--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tally bench lifecycle");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for tally");
    assert!(out.status.success(), "{}; {}", out.status, stderr_of(&out));
    assert!(out.stderr.is_empty(), "--quiet: {}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let keys = [
        "create_destroy_ns.region",
        "create_destroy_ns.ring",
        "open_close_ns.1",
        "open_close_ns.8",
        "open_close_ns.64",
        "open_close_ns.512",
        "sweep_ns.1",
        "sweep_ns.64",
        "baselines.raw_create_ns",
        "baselines.raw_open_ns",
        "baselines.sem_open_close_ns",
    ];
    for key in keys {
        let (group, k) = key.split_once('.').unwrap();
        let x = &v[group][k];
        assert!(x.as_f64().is_some_and(|ns| ns > 0.0), "{key}: {x} in {v}");
        let x = &v["cpu"][group][k];
        assert!(
            x.as_f64().is_some_and(|ns| ns > 0.0),
            "cpu.{key}: {x} in {v}"
        );
    }
    assert_eq!(v["holder_table"]["open_close"]["512"], 1024, "{v}");
    assert!(v["machine"]["kernel"].is_string(), "{v}");
    let mark = format!("bench-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(&mark))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

#[test]
fn bench_broadcast_usage_errors_exit_2_before_measuring() {
    for args in [
        &["bench", "--broadcast", "0"][..],
        &["bench", "throughput", "--broadcast", "32"],
        &["bench", "throughput", "--broadcast", "x"],
        &["bench", "throughput", "--broadcast"],
        &["bench", "throughput", "--broadcast", "2", "--mpmc", "1,1"],
        &["bench", "latency", "--broadcast", "1", "--mpmc", "1,1"],
        &["bench", "sync", "--broadcast", "1"],
        &["bench", "lifecycle", "--broadcast", "1"],
        &["bench", "throughput", "--broadcast", "1", "--payload", "64"],
    ] {
        expect_error_line(args, 2);
    }
    let err = stderr_of(&tally(&["bench", "--broadcast", "0"]));
    assert!(
        err.contains("--broadcast") && err.contains("1..=31"),
        "{err}"
    );
    let err = stderr_of(&tally(&["bench", "--broadcast", "2", "--mpmc", "2,2"]));
    assert!(
        err.contains("--broadcast") && err.contains("--mpmc"),
        "{err}"
    );
}

#[test]
fn bench_broadcast_json_has_the_script_keys_and_no_errors() {
    if !two_cpus() {
        return;
    }
    let v = tally_json(&[
        "bench",
        "--broadcast",
        "2",
        "--iters",
        "400",
        "--seconds",
        "0.05",
        "--json",
        "--quiet",
    ]);
    let lat = &v["latency"];
    assert!(lat["p50_ns"].as_u64().unwrap() > 0, "{v}");
    for b in ["two_line", "spsc_fanout"] {
        assert!(
            lat["baselines"][b]["p50_ns"].as_u64().unwrap() > 0,
            "{b}: {v}"
        );
    }
    assert_eq!(
        (lat["subscribers"].as_u64(), lat["iters"].as_u64()),
        (Some(2), Some(400))
    );
    let thr = &v["throughput"];
    let rate = |x: &Value| x["msgs_per_s"].as_f64().unwrap_or(-1.0);
    assert!(rate(thr) > 0.0, "{v}");
    assert!(rate(&thr["baselines"]["spsc_fanout"]) > 0.0, "{v}");
    assert_eq!(thr["errors"], 0, "{v}");
    assert_eq!(thr["lagged"], 0, "lossless: {v}");
    assert_eq!(thr["baselines"]["spsc_fanout"]["errors"], 0, "{v}");
    // Every subscriber read every message sent.
    let sent = thr["msgs"].as_u64().unwrap();
    assert!(sent > 0, "{v}");
    assert_eq!(
        thr["per_subscriber_msgs"],
        serde_json::json!([sent, sent]),
        "{v}"
    );
    assert!(v.get("lifecycle").is_none(), "{v}");
    assert_eq!(v["tally_version"], env!("CARGO_PKG_VERSION"), "{v}");
}
