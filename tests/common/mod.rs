//! Helpers shared by the integration tests. Every file under `tests/` is a crate of its
//! own that includes this module with `mod common;` and uses a part of it.
//!
//! Names: each test file passes its own prefix to [`unique`], so the files' objects in
//! /dev/shm can be told apart. Child processes: a test file that needs code of its own
//! in another process re-executes its test binary ([`child_command`]) to run one
//! `child_*` test, which returns at once unless [`ROLE_ENV`] names its role
//! ([`child_role`]).

#![allow(dead_code)]

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

// --- names and cleanup ----------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (in this or another process) uses: `PREFIX-TAG-PID-N`, with a
/// prefix of the test file's own.
pub fn unique(prefix: &str, tag: &str) -> String {
    format!(
        "{prefix}-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/tally.{name}"))
}

pub fn shm_exists(name: &str) -> bool {
    std::fs::symlink_metadata(shm_path(name)).is_ok()
}

/// Asserts that nothing is left in /dev/shm under `name` (P1: the last close unlinks).
pub fn assert_gone(name: &str) {
    assert!(
        !shm_exists(name),
        "{} is still there after every handle was dropped",
        shm_path(name).display()
    );
}

/// Owns a test's object name; removes it on drop, whatever happened. Declare it before
/// the handles and children it outlives (locals drop in reverse order).
pub struct Guard {
    pub name: String,
}

impl Guard {
    /// Owns a fresh name made by [`unique`].
    pub fn new(prefix: &str, tag: &str) -> Self {
        Guard::named(unique(prefix, tag))
    }

    /// Owns the name `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Guard { name: name.into() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = tally::admin::remove(&self.name);
    }
}

/// Temporary files of segments that process `pid` began to create.
pub fn init_debris_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!(".tally-init.{pid}.");
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

pub fn remove_init_debris_of(pid: u32) {
    for path in init_debris_of(pid) {
        let _ = std::fs::remove_file(path);
    }
}

// --- assertions -----------------------------------------------------------------------

/// Asserts that `$res` is an `Err` matching `$pat` (which may bind, and may have an
/// `if` guard) and returns the error; works for `Ok` types without `Debug` (the handles
/// have none). Import it with `use common::assert_err;`.
#[allow(unused_macros)] // `dead_code` does not cover macros
macro_rules! assert_err {
    ($res:expr, $pat:pat $(if $guard:expr)?) => {
        match $res {
            Ok(_) => panic!(
                "{}: expected Err({}), got Ok",
                stringify!($res),
                stringify!($pat)
            ),
            Err(e) => {
                assert!(
                    matches!(e, $pat $(if $guard)?),
                    "{}: expected {}, got {e:?}",
                    stringify!($res),
                    stringify!($pat)
                );
                e
            }
        }
    };
}

#[allow(unused_imports)] // like the macro: not every test file uses it
pub(crate) use assert_err;

// --- randomness -----------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// --- child processes ------------------------------------------------------------------

/// Tells a re-executed test binary which child role to play.
pub const ROLE_ENV: &str = "TALLY_TEST_ROLE";
/// The object name a child works on.
pub const NAME_ENV: &str = "TALLY_TEST_NAME";
/// A role-specific argument (empty when the role takes none).
pub const ARG_ENV: &str = "TALLY_TEST_ARG";
/// Marks a child's progress lines (see [`say`]) among libtest's own output.
pub const TAG: &str = "@@child@@ ";

/// This test binary, set to run only the test `test` (on one thread, its output not
/// captured) in role `role`, on the object `name` with the argument `arg`. The caller
/// chooses its stdio.
pub fn child_command(test: &str, role: &str, name: &str, arg: &str) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(NAME_ENV, name)
        .env(ARG_ENV, arg);
    cmd
}

/// In a child started for `role`: its object name and argument. `None` in every other
/// process (the `child_*` test then passes at once).
pub fn child_role(role: &str) -> Option<(String, String)> {
    if std::env::var(ROLE_ENV).ok()? != role {
        return None;
    }
    let name = std::env::var(NAME_ENV).expect("child without an object name");
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    Some((name, arg))
}

/// Reports progress to the parent: one line tagged with [`TAG`], flushed.
pub fn say(msg: impl Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{msg}").expect("write progress line");
    out.flush().expect("flush progress line");
}

/// Sends each line of a child's `stdout` to the returned channel, from a thread of its
/// own, until the child closes it. With a `tag`, only the lines holding it, from after
/// the tag on (libtest may print `test NAME ... ` before it on the same line).
pub fn forward_lines(
    stdout: impl Read + Send + 'static,
    tag: Option<&'static str>,
) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = match tag {
                None => line,
                Some(tag) => match line.find(tag) {
                    Some(at) => line[at + tag.len()..].to_owned(),
                    None => continue,
                },
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Starts `cmd` with `stdin`, its stderr on ours and its stdout read line by line into
/// the returned channel (see [`forward_lines`]); `what` names it if it fails to start.
pub fn spawn_with_lines(
    cmd: &mut Command,
    stdin: Stdio,
    tag: Option<&'static str>,
    what: &str,
) -> (Child, Receiver<String>) {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let lines = forward_lines(child.stdout.take().expect("piped stdout"), tag);
    (child, lines)
}

/// Waits at most `timeout` for a line of `lines` that `pick` takes (returns `Some` for),
/// skipping the others; the error says whether time ran out or the sender is gone.
pub fn first_line<T>(
    lines: &Receiver<String>,
    timeout: Duration,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> Result<T, RecvTimeoutError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(v) = pick(&lines.recv_timeout(left)?) {
            return Ok(v);
        }
    }
}

/// Waits for `child` to exit and returns its status, failing the test after `timeout`.
pub fn wait_within(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

// --- a child process that runs one `child_*` test ----------------------------------

/// A child process running one `child_*` test. Dropping it SIGKILLs and reaps it.
pub struct Kid {
    pub role: &'static str,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    reaped: bool,
}

impl Kid {
    /// Re-executes this test binary to run the test `role` against ring `name`.
    pub fn spawn(role: &'static str, name: &str, arg: u64) -> Kid {
        let mut cmd = child_command(role, role, name, &arg.to_string());
        let what = format!("child {role}");
        let (child, lines) = spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), &what);
        Kid {
            role,
            child,
            lines,
            reaped: false,
        }
    }

    /// Waits for the child's next progress line starting with `word` and returns the
    /// rest of it, trimmed. Panics if the child exits first or `timeout` passes.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> String {
        let found = first_line(&self.lines, timeout, |line| {
            line.strip_prefix(word).map(|rest| rest.trim().to_owned())
        });
        match found {
            Ok(rest) => rest,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "child {} printed no {word:?} line within {timeout:?}",
                self.role
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                self.reaped = true;
                panic!(
                    "child {} exited ({status:?}) before printing {word:?}",
                    self.role
                );
            }
        }
    }

    /// SIGSTOPs the child and polls until the kernel shows it stopped.
    pub fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: as in `kill`: our own unreaped child.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, SIGSTOP): {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("child stat");
            let state = stat[stat.rfind(')').expect("stat comm") + 1..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            if state == "T" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} never stopped (state {state})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs the child and reaps it; returns when the kill was sent.
    pub fn kill(&mut self) -> Instant {
        assert!(!self.reaped, "child {} already reaped", self.role);
        let pid = self.child.id() as libc::pid_t;
        let sent = Instant::now();
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped
        // child, so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, SIGKILL): {}",
            std::io::Error::last_os_error()
        );
        let status = self.child.wait().expect("wait for the killed child");
        self.reaped = true;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "child {} should have died of SIGKILL, ended with {status:?}",
            self.role
        );
        sent
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: as in `kill`: our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// In a child started for `role`: the object name and the numeric argument. `None` in
/// every other process (the `child_*` test then passes at once).
pub fn child_args(role: &str) -> Option<(String, u64)> {
    let (name, arg) = child_role(role)?;
    Some((name, arg.parse().expect("numeric child argument")))
}

/// Blocks the child until it is killed.
pub fn hang() -> ! {
    loop {
        std::thread::park();
    }
}
