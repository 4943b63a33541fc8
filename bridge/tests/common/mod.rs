//! Helpers for the bridge's tests: unique names, free ports, and bridge processes whose
//! JSON status lines and stderr the test reads.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test uses: `bridge-TAG-PID-N`.
pub fn unique(tag: &str) -> String {
    format!(
        "bridge-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Options every test session gets: no scouting, so tests only meet their own peers.
pub const QUIET: [&str; 4] = [
    "--cfg",
    "scouting/multicast/enabled:false",
    "--cfg",
    "scouting/gossip/enabled:false",
];

/// Removes a tally object on drop, whatever happened.
pub struct Guard(pub String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = tally::admin::remove(&self.0);
    }
}

/// Asserts that nothing is left in /dev/shm under `name`.
pub fn assert_gone(name: &str) {
    let path = format!("/dev/shm/tally.{name}");
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "{path} is still there"
    );
}

/// A running `tally-bridge`, killed on drop.
pub struct Bridge {
    pub child: Child,
    pub lines: Receiver<serde_json::Value>,
    pub stderr: Arc<Mutex<String>>,
    pub what: String,
}

impl Bridge {
    /// Starts `tally-bridge ARGS... --json`.
    pub fn spawn(args: &[&str]) -> Bridge {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally-bridge"))
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tally-bridge");
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("status line {line:?} is not JSON: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                eprint!("[bridge stderr] {text}");
                sink.lock().unwrap().push_str(&text);
            }
        });
        Bridge {
            child,
            lines,
            stderr,
            what: args.join(" "),
        }
    }

    /// The next status line whose event is `event`, waiting at most `timeout`.
    pub fn expect(&mut self, event: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`tally-bridge {}`: no {event:?} line within {timeout:?}; stderr: {}",
                    self.what,
                    self.stderr.lock().unwrap()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "`tally-bridge {}` ended before a {event:?} line: {:?}; stderr: {}",
                    self.what,
                    self.child.try_wait(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Sends SIGTERM and returns its final ("exit") status line.
    pub fn terminate(mut self) -> serde_json::Value {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let last = self.expect("exit", Duration::from_secs(20));
        let status = self.wait(Duration::from_secs(20));
        assert!(status.success(), "`tally-bridge {}`: {status}", self.what);
        last
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`tally-bridge {}` still running after {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a bridge may take to start.
pub const READY: Duration = Duration::from_secs(20);

/// Starts `tally-bridge export NAME --key KEY`, listening on 127.0.0.1:PORT; waits
/// for its ready line.
pub fn export(name: &str, key: &str, port: u16) -> Bridge {
    let listen = format!("tcp/127.0.0.1:{port}");
    let mut args = vec!["export", name, "--key", key, "--listen", &listen];
    args.extend(QUIET);
    let mut b = Bridge::spawn(&args);
    b.expect("ready", READY);
    b
}

/// Starts `tally-bridge import --key KEY NAME EXTRA...`, connecting to 127.0.0.1:PORT.
pub fn import(name: &str, key: &str, port: u16, extra: &[&str]) -> Bridge {
    let connect = format!("tcp/127.0.0.1:{port}");
    let mut args = vec!["import", "--key", key, name, "--connect", &connect];
    args.extend(QUIET);
    args.extend(extra);
    Bridge::spawn(&args)
}

/// While `produce` runs on one thread and `receive` on this one, a third waits until
/// `seen` reaches `at`, kills `victim` with SIGKILL and starts its successor with
/// `restart`. Returns what `receive` returned, and the successor.
pub fn kill_and_restart<R>(
    seen: &AtomicU64,
    at: u64,
    victim: Bridge,
    restart: impl FnOnce() -> Bridge + Send,
    produce: impl FnOnce() + Send,
    receive: impl FnOnce() -> R,
) -> (R, Bridge) {
    std::thread::scope(|s| {
        s.spawn(produce);
        let restarter = s.spawn(move || {
            while seen.load(Ordering::Relaxed) < at {
                std::thread::sleep(Duration::from_millis(1));
            }
            victim.kill9();
            restart()
        });
        let got = receive();
        (got, restarter.join().expect("the restarting thread"))
    })
}

/// A fresh directory, and the path of a state file in it for `import --state`.
pub fn state_file() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("state"));
    std::fs::create_dir_all(&dir).expect("a state directory");
    let path = dir.join("import.state");
    (dir, path.to_str().expect("a UTF-8 temp path").to_owned())
}
