//! Regression tests for bugs of correctness reviews, each with real processes:
//!
//! 1. Threads sharing one handle share its open file description, and an OFD lock does
//!    not exclude them: two sweeps through one `Region` both reclaimed the same dead
//!    holders (the admin section now also takes a per-handle mutex).
//! 2. A forked child dropping an inherited `Producer` released the parent's role
//!    (leaving is now a no-op outside the opening process; claims there fail with
//!    `Error::Inherited`).
//! 3. Crash debris of another kind under a name blocked `open_or_create` with
//!    `KindMismatch` (kind and payload are now checked only once the segment is known
//!    to be live), while an open of a live object of another kind stays a typed error.
//! 5. One `EMFILE` at the first use of /dev/shm was cached for the life of the
//!    process: every later create and open failed.
//! 6. A sweep could only wait out `Options::timeout` while a stopped process held the
//!    admin lock; `sweep_within` and `try_sweep` answer within the caller's bound.
//! 7. `PermissionDenied` from a failed open did not say who owns the file, with what
//!    mode, or what would let the caller in.
//! 8. A create larger than the free space of /dev/shm began reserving it before it
//!    failed; it now fails first, and `NoSpace` says how much was asked and is free.
//!
//! Children are this test binary re-executed with `--exact <child fn>`; a `child_*`
//! test returns at once unless `TALLY_TEST_ROLE` names its role. Children report
//! progress as tagged stdout lines which the parent reads with a deadline; nothing
//! sleeps in place of synchronising. Every test uses its own names and a [`Scene`]
//! guard that SIGKILLs and reaps its children and removes its names, pass or fail.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Barrier, mpsc};
use std::time::{Duration, Instant};

use tally::{Error, Kind, Options, Region, Ring};

mod common;
use common::{
    Guard, TAG, assert_err, assert_gone, child_command, child_role, remove_init_debris_of, say,
    shm_exists, shm_path, spawn_with_lines,
};

/// Prefix of this file's object names.
const PREFIX: &str = "reg";

// --- child processes ------------------------------------------------------------------

/// How long a child may take to start and report (debug builds on a loaded box).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// In a child started for `role`: the object name. `None` in every other process (the
/// `child_*` test then passes at once).
fn child_name(role: &str) -> Option<String> {
    child_role(role).map(|(name, _)| name)
}

/// Blocks until the parent closes our stdin (or kills us): a child never outlives a
/// test that is gone.
fn block_until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// This test binary, re-executed to run only the test `child_fn` in role `role`.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    status: Option<ExitStatus>,
    what: String,
}

impl Kid {
    fn spawn(child_fn: &str, role: &str, name: &str) -> Kid {
        let what = format!("child {child_fn} ({role} {name})");
        let mut cmd = child_command(child_fn, role, name, "");
        let (mut child, lines) = spawn_with_lines(&mut cmd, Stdio::piped(), Some(TAG), &what);
        Kid {
            stdin: child.stdin.take(),
            child,
            lines,
            status: None,
            what,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next progress line, which must start with `word`; returns the
    /// rest of it.
    fn expect(&mut self, word: &str) -> String {
        match self.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => match line.strip_prefix(word) {
                Some(rest) => rest.trim().to_owned(),
                None => panic!("{}: expected {word:?}, got {line:?}", self.what),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: no {word:?} within {START_TIMEOUT:?}", self.what)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "{}: stdout closed before {word:?}; status {:?}",
                self.what,
                self.child.try_wait()
            ),
        }
    }

    /// SIGKILLs the child and reaps it (blocking in waitpid: it is dying).
    fn kill9_and_reap(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped: the pid cannot be reused.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {}", self.what);
        let status = self.child.wait().expect("waitpid");
        self.status = Some(status);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{} must die by SIGKILL, not {status:?}",
            self.what
        );
    }

    /// Collects every progress line until the child closes its stdout, then reaps it.
    fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} did not finish within {START_TIMEOUT:?}; said {lines:?}",
                    self.what
                ),
            }
        }
        self.stdin.take();
        let status = self.child.wait().expect("waitpid");
        self.status = Some(status);
        (status, lines)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        self.stdin.take();
        if self.status.is_none() {
            // std's kill is SIGKILL.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        remove_init_debris_of(self.pid());
    }
}

/// Owns a test's names and children: on drop it SIGKILLs and reaps every child and
/// then force-removes every name (fields drop in order), pass or fail. Declare it
/// before any handle (locals drop in reverse order, so the handles detach first).
struct Scene {
    kids: Vec<Kid>,
    names: Vec<Guard>,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            kids: Vec::new(),
            names: Vec::new(),
        }
    }

    /// A fresh unique name, removed when the scene drops.
    fn name(&mut self, tag: &str) -> String {
        let guard = Guard::new(PREFIX, tag);
        let name = guard.name.clone();
        self.names.push(guard);
        name
    }

    /// Starts a child; returns its index in `kids`.
    fn spawn(&mut self, child_fn: &str, role: &str, name: &str) -> usize {
        self.kids.push(Kid::spawn(child_fn, role, name));
        self.kids.len() - 1
    }
}

/// Returns the error of a result whose `Ok` type has no `Debug`.
fn err_of<T>(what: &str, r: tally::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e,
    }
}

// --- 1. concurrent sweeps through one handle --------------------------------------------

/// Dead holders the child leaves behind.
const DEAD_HOLDERS: usize = 300;

#[test]
fn child_open_many_regions() {
    let Some(name) = child_name("open-many") else {
        return;
    };
    let handles: Vec<Region> = (0..DEAD_HOLDERS)
        .map(|i| Region::open(&name).unwrap_or_else(|e| panic!("open #{i}: {e}")))
        .collect();
    say(format_args!("ready {}", handles.len()));
    block_until_stdin_closes();
    drop(handles);
}

/// Two threads sweeping through the same `Region` must take turns: between them they
/// reclaim each of the dead child's holders exactly once. Before the fix both held the
/// (per open file description) admin lock at once and counted the same dead slots.
#[test]
fn concurrent_sweeps_through_one_handle_reclaim_each_dead_holder_once() {
    for round in 0..3 {
        let mut scene = Scene::new();
        let name = scene.name("sweep2");
        let opts = Options::default().holders(512);
        let region = Region::create_with(&name, 4096, &opts).expect("create");
        let k = scene.spawn("child_open_many_regions", "open-many", &name);
        let kid = &mut scene.kids[k];
        assert_eq!(kid.expect("ready"), DEAD_HOLDERS.to_string());
        let before = region.info();
        assert_eq!(before.refcount as usize, DEAD_HOLDERS + 1, "{before:?}");
        assert_eq!(before.reclaimed_total, 0, "{before:?}");
        kid.kill9_and_reap();

        let barrier = Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let sweep = || {
                barrier.wait();
                region.sweep().expect("sweep")
            };
            let t1 = s.spawn(sweep);
            let t2 = s.spawn(sweep);
            (t1.join().unwrap(), t2.join().unwrap())
        });
        assert_eq!(
            (a.reclaimed + b.reclaimed) as usize,
            DEAD_HOLDERS,
            "round {round}: two sweeps through one handle reclaimed {} + {} of \
             {DEAD_HOLDERS} dead holders",
            a.reclaimed,
            b.reclaimed
        );
        assert_eq!(
            a.reclaimed.min(b.reclaimed),
            0,
            "round {round}: the sweeps must not interleave: {a:?} {b:?}"
        );
        assert_eq!((a.live, a.unlinked), (1, false), "round {round}: {a:?}");
        assert_eq!((b.live, b.unlinked), (1, false), "round {round}: {b:?}");
        let after = region.info();
        assert_eq!(after.refcount, 1, "round {round}: {after:?}");
        assert_eq!(after.holders.len(), 1, "round {round}: {after:?}");
        assert_eq!(
            after.reclaimed_total, DEAD_HOLDERS as u64,
            "round {round}: {after:?}"
        );
        drop(region);
        assert_gone(&name);
    }
}

// --- 2. a forked child dropping an inherited producer -----------------------------------

/// Values sent before the fork.
const BEFORE_FORK: u64 = 5;
/// Values sent after it.
const AFTER_FORK: u64 = 3;

/// The body of the fork test. It forks, so it runs in a re-executed test binary with
/// one test thread: no other test's thread can hold a lock the forked child needs.
#[test]
fn child_fork_inherited_producer() {
    let Some(name) = child_name("fork") else {
        return;
    };
    let ring = Ring::<u64>::create(&name, 8).expect("create");
    let mut tx = ring.producer().expect("producer");
    for v in 0..BEFORE_FORK {
        tx.try_send(v).expect("send before fork");
    }
    let me = std::process::id();
    // SAFETY: the forked child first arms alarm(2) (so it cannot linger), then makes
    // one role claim (a getpid and an allocation for the error: glibc's fork handlers
    // make malloc usable in the child), drops its copy of the producer (getpid again)
    // and leaves with _exit. This process runs no other thread but libtest's main
    // thread, parked in join.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: alarm(2) is async-signal-safe; SIGALRM's default action ends us.
        unsafe { libc::alarm(30) };
        let code = match ring.producer() {
            Err(Error::Inherited { owner, .. }) if owner == me => 0,
            Err(Error::Inherited { .. }) => 1,
            Err(Error::RoleTaken { .. }) => 2,
            Err(_) => 3,
            Ok(p) => {
                // Not a role of ours to give back, whatever the claim said.
                std::mem::forget(p);
                4
            }
        };
        drop(tx);
        // SAFETY: ends the forked child without unwinding, atexit handlers or flushes.
        unsafe { libc::_exit(code) };
    }
    say(format_args!("forked {pid}"));
    let mut status = 0;
    // SAFETY: waitpid on our own forked child, with a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "forked child did not exit: {status:#x}"
    );
    let code = libc::WEXITSTATUS(status);
    say(format_args!("exit {code}"));
    assert_eq!(
        code, 0,
        "the forked child's producer() must fail with Inherited (1: wrong owner, \
         2: RoleTaken, 3: other error, 4: Ok)"
    );

    // The parent's producer is still the live holder of the role.
    let other = Ring::<u64>::open(&name).expect("open a second handle");
    assert_err!(
        other.producer(),
        Error::RoleTaken {
            role: "producer",
            ..
        }
    );
    assert_eq!(other.info().refcount, 2, "{:?}", other.info());
    for v in BEFORE_FORK..BEFORE_FORK + AFTER_FORK {
        tx.try_send(v).expect("the parent's producer still sends");
    }
    let mut rx = other.consumer().expect("consumer");
    let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, (0..BEFORE_FORK + AFTER_FORK).collect::<Vec<_>>());
    assert!(!rx.is_disconnected(), "the producer is still live");
    drop(tx);
    assert!(rx.is_disconnected(), "the parent's drop releases the role");
    drop(rx);
    drop(other);
    drop(ring);
    assert_gone(&name);
    say("passed");
}

#[test]
fn forked_child_dropping_an_inherited_producer_keeps_the_parents_role() {
    let mut scene = Scene::new();
    let name = scene.name("fork");
    let k = scene.spawn("child_fork_inherited_producer", "fork", &name);
    let (status, lines) = scene.kids[k].finish();
    assert!(
        status.success() && lines.last().map(String::as_str) == Some("passed"),
        "the fork scenario failed (its panic message is in stderr above): \
         status {status:?}, said {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "exit 0"),
        "forked child's exit: {lines:?}"
    );
    assert_gone(&name);
}

// --- 3. crash debris of another kind ------------------------------------------------------

#[test]
fn child_hold_region() {
    let Some(name) = child_name("hold-region") else {
        return;
    };
    let r = Region::create(&name, 4096).expect("create region");
    say("ready");
    block_until_stdin_closes();
    drop(r);
}

#[test]
fn child_hold_ring() {
    let Some(name) = child_name("hold-ring") else {
        return;
    };
    let ring = Ring::<u64>::create(&name, 8).expect("create ring");
    let mut tx = ring.producer().expect("producer");
    let rx = ring.consumer().expect("consumer");
    tx.try_send(7).expect("send");
    say("ready");
    block_until_stdin_closes();
    drop((tx, rx, ring));
}

/// Debris of a dead holder of one kind does not stop `open_or_create` of another: the
/// dead object is swept and a fresh one created. Before the fix the kind check ran
/// before the sweep and returned `KindMismatch`.
#[test]
fn crash_debris_of_another_kind_does_not_block_open_or_create() {
    let mut scene = Scene::new();

    // A dead Region holder's debris, then a ring under the same name.
    let name = scene.name("debris-region");
    let k = scene.spawn("child_hold_region", "hold-region", &name);
    scene.kids[k].expect("ready");
    scene.kids[k].kill9_and_reap();
    assert!(shm_exists(&name), "SIGKILL leaves the segment behind");
    let (ring, created) =
        Ring::<u64>::open_or_create(&name, 8, &Options::default()).expect("open_or_create");
    assert!(created, "the dead region is gone: a ring must be created");
    let info = ring.info();
    assert_eq!(info.kind, Kind::SpscRing, "{info:?}");
    assert_eq!((info.refcount, info.holders.len()), (1, 1), "{info:?}");
    assert_eq!(info.holders[0].pid, std::process::id(), "{info:?}");
    // A live ring of another payload is still an error, and registers nothing.
    assert_err!(Ring::<u32>::open(&name), Error::LayoutMismatch { .. });
    assert_eq!(ring.info().refcount, 1, "{:?}", ring.info());
    let mut tx = ring.producer().expect("producer");
    let mut rx = ring.consumer().expect("consumer");
    tx.try_send(42).expect("send");
    assert_eq!(rx.try_recv(), Ok(42));
    drop((tx, rx, ring));
    assert_gone(&name);

    // The reverse: a dead ring holder's debris, then a region under the same name.
    let name = scene.name("debris-ring");
    let k = scene.spawn("child_hold_ring", "hold-ring", &name);
    scene.kids[k].expect("ready");
    scene.kids[k].kill9_and_reap();
    assert!(shm_exists(&name), "SIGKILL leaves the segment behind");
    let (region, created) =
        Region::open_or_create(&name, 4096, &Options::default()).expect("open_or_create");
    assert!(created, "the dead ring is gone: a region must be created");
    let info = region.info();
    assert_eq!(info.kind, Kind::Bytes, "{info:?}");
    assert_eq!((info.refcount, info.holders.len()), (1, 1), "{info:?}");
    assert_eq!(region.len(), 4096);
    let mut buf = [0xffu8; 16];
    region.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 16], "a fresh region is zeroed");
    drop(region);
    assert_gone(&name);
}

// --- 4. live objects of another kind --------------------------------------------------

/// Moving the kind check after the sweep must not let an open attach to a live object
/// of another kind: it fails with `KindMismatch` and leaves no holder behind.
#[test]
fn open_of_a_live_object_of_another_kind_is_still_a_typed_error() {
    let mut scene = Scene::new();

    let name = scene.name("live-region");
    let region = Region::create(&name, 4096).expect("create region");
    assert_err!(
        Ring::<u64>::open(&name),
        Error::KindMismatch {
            expected: Kind::SpscRing,
            found: Kind::Bytes,
            ..
        }
    );
    assert_err!(
        Ring::<u64>::open_or_create(&name, 8, &Options::default()),
        Error::KindMismatch {
            expected: Kind::SpscRing,
            found: Kind::Bytes,
            ..
        }
    );
    let info = region.info();
    assert_eq!(
        (info.refcount, info.holders.len()),
        (1, 1),
        "a failed open registered a holder: {info:?}"
    );
    assert_eq!(info.kind, Kind::Bytes);
    drop(region);
    assert_gone(&name);

    let name = scene.name("live-ring");
    let ring = Ring::<u64>::create(&name, 8).expect("create ring");
    let e = err_of("Region::open of a live ring", Region::open(&name));
    assert!(
        matches!(
            e,
            Error::KindMismatch {
                expected: Kind::Bytes,
                found: Kind::SpscRing,
                ..
            }
        ),
        "{e:?}"
    );
    let info = ring.info();
    assert_eq!(
        (info.refcount, info.holders.len()),
        (1, 1),
        "a failed open registered a holder: {info:?}"
    );
    drop(ring);
    assert_gone(&name);
}

/// Producers that hand the role back and forth must never lose a message: a leaving
/// producer used to mark the seq word at its tail after releasing the role, and could
/// overwrite the message its successor had just committed there; the consumer then
/// waited on that position for ever. Three threads take turns as producer (one
/// message each) while the consumer checks the sequence for 5 s (the race needs a few hundred
/// thousand hand-overs to show).
#[test]
fn producer_hand_over_never_loses_a_committed_message() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let guard = Guard::new(PREFIX, "handover");
    let ring = Arc::new(Ring::<u64>::create(&guard.name, 1024).expect("create"));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let (ring, next, stop) = (ring.clone(), next.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Only the role holder touches `next`, so values go out in order.
                    if let Ok(mut p) = ring.producer() {
                        let v = next.load(Ordering::Relaxed);
                        if p.send_timeout(v, Duration::from_millis(200)).is_ok() {
                            next.store(v + 1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut rx = ring.consumer().expect("consumer");
    let end = Instant::now() + Duration::from_secs(5);
    let mut expect = 0u64;
    let mut failure = None;
    let mut progress = Instant::now();
    while Instant::now() < end {
        // Between two holders the role is vacant and an empty ring reads as
        // `Disconnected`; keep polling. A lost message stalls the ring for good:
        // 2 s without progress, with three producers taking turns, is that stall.
        match rx.try_recv() {
            Ok(v) if v == expect => {
                expect += 1;
                progress = Instant::now();
            }
            Ok(v) => {
                failure = Some(format!("got {v}, expected {expect}"));
                break;
            }
            Err(_) if progress.elapsed() > Duration::from_secs(2) => {
                failure = Some(format!("stalled at {expect}"));
                break;
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    for p in producers {
        p.join().expect("producer thread");
    }
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
    assert!(
        expect > 1000,
        "only {expect} messages in 3 s: the hand-over barely ran"
    );
    drop(ring);
    assert_gone(&guard.name);
}

// --- 5. a failed open of the shm directory is not cached -------------------------------

/// In a fresh process (the directory descriptor is opened once per process): the first
/// create runs out of descriptors, the limit is raised, and the next create works.
#[test]
fn child_create_after_emfile() {
    let Some(name) = child_name("emfile") else {
        return;
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid out pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    // The lowest free descriptor number: with the soft limit there, no open succeeds.
    // SAFETY: dup and close of descriptors this process owns.
    let lowest = unsafe { libc::dup(0) };
    assert!(lowest >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: closes the descriptor dup just made.
    unsafe { libc::close(lowest) };
    let low = libc::rlimit {
        rlim_cur: lowest as libc::rlim_t,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit with a valid rlimit; the soft limit stays under the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let first = Region::create(&name, 4096).map(drop);
    // SAFETY: as above, restoring the limit read at the start.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    match first {
        Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EMFILE) => {}
        other => panic!("create without descriptors: expected Io(EMFILE), got {other:?}"),
    }
    let r = Region::create(&name, 4096).expect("create once descriptors are free again");
    r.write(0, b"ok").expect("write");
    drop(r);
    assert_gone(&name);
    say("passed");
}

/// One `EMFILE` at the first use of /dev/shm used to be cached for the life of the
/// process: every later create and open failed with "Too many open files".
#[test]
fn a_descriptor_shortage_at_first_use_does_not_fail_later_creates() {
    let mut scene = Scene::new();
    let name = scene.name("emfile");
    let k = scene.spawn("child_create_after_emfile", "emfile", &name);
    let (status, lines) = scene.kids[k].finish();
    assert!(
        status.success() && lines.last().map(String::as_str) == Some("passed"),
        "the EMFILE scenario failed (its panic message is in stderr above): \
         status {status:?}, said {lines:?}"
    );
    assert_gone(&name);
}

// --- 6. bounded sweeps while a stopped process holds the admin lock --------------------

/// Takes the admin lock of segment `name` (an OFD lock on byte 0 of its file, as the
/// library does: src/segment/layout.rs) and holds it until stdin closes.
#[test]
fn child_hold_admin_lock() {
    let Some(name) = child_name("admin-lock") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .expect("open the segment file");
    // SAFETY: flock is plain data; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an open descriptor with a valid, exclusively borrowed flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(rc, 0, "lock: {}", std::io::Error::last_os_error());
    say("locked");
    block_until_stdin_closes();
    drop(file);
}

/// A stopped process holding an object's admin lock must not make a quick check wait
/// out `Options::timeout` (5 s): `try_sweep` answers "busy" at once and
/// `sweep_within(bound)` returns `Timeout` within its bound, both changing nothing.
#[test]
fn bounded_sweeps_return_in_time_while_a_stopped_process_holds_the_admin_lock() {
    let mut scene = Scene::new();
    let name = scene.name("admin-stopped");
    let region = Region::create(&name, 4096).expect("create");
    let holder = tally::admin::Holder::open(&name, &Options::default()).expect("holder");
    let k = scene.spawn("child_hold_admin_lock", "admin-lock", &name);
    scene.kids[k].expect("locked");
    let pid = scene.kids[k].pid() as libc::pid_t;
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out pointer; WUNTRACED reports the
    // stop without reaping it.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    assert!(
        rc == pid && libc::WIFSTOPPED(status),
        "not stopped: {status:#x}"
    );

    let t = Instant::now();
    let busy = holder.try_sweep().expect("try_sweep");
    let took = t.elapsed();
    assert_eq!(busy, None, "the admin lock is held");
    assert!(
        took < Duration::from_millis(100),
        "try_sweep waited {took:?}"
    );

    for bound in [
        Duration::ZERO,
        Duration::from_millis(10),
        Duration::from_millis(50),
    ] {
        let t = Instant::now();
        let e = err_of("sweep_within", holder.sweep_within(bound));
        let took = t.elapsed();
        assert!(matches!(e, Error::Timeout { .. }), "{bound:?}: {e:?}");
        assert!(
            took >= bound && took < bound + Duration::from_millis(100),
            "sweep_within({bound:?}) took {took:?}"
        );
    }
    assert_eq!(region.info().refcount, 2, "nothing changed");

    // Once the lock is free again the same calls sweep.
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    scene.kids[k].stdin.take();
    let (status, _) = scene.kids[k].finish();
    assert!(status.success(), "lock holder: {status:?}");
    let out = holder.try_sweep().expect("try_sweep").expect("lock free");
    assert_eq!((out.reclaimed, out.live), (0, 2), "{out:?}");
    let out = holder
        .sweep_within(Duration::from_millis(10))
        .expect("sweep_within");
    assert_eq!((out.reclaimed, out.live), (0, 2), "{out:?}");
    drop(holder);
    drop(region);
    assert_gone(&name);
}

// --- 7. permission errors say who owns the file and what to do ----------------------

/// The user every test that needs another one acts as.
const NOBODY: libc::uid_t = 65534;

/// As user `nobody`: opens `name` (root's, mode 0600), then creates and opens an object
/// of its own with mode 0400; reports each `PermissionDenied` reason.
#[test]
fn child_open_as_nobody() {
    let Some((name, own)) = child_role("nobody") else {
        return;
    };
    // SAFETY: setresgid/setresuid with plain ids; glibc applies them to every thread.
    unsafe {
        assert_eq!(libc::setresgid(NOBODY, NOBODY, NOBODY), 0);
        assert_eq!(libc::setresuid(NOBODY, NOBODY, NOBODY), 0);
    }
    for (what, res) in [
        ("open", Region::open(&name).map(drop)),
        ("inspect", tally::admin::inspect(&name).map(drop)),
    ] {
        match res {
            Err(e @ Error::PermissionDenied { .. }) => say(format_args!("{what} {e}")),
            other => panic!("{what} of root's object: {other:?}"),
        }
    }
    let opts = Options::default().mode(0o400);
    let mine = Region::create_with(&own, 4096, &opts).expect("create with mode 0400");
    match Region::open(&own) {
        Err(e @ Error::PermissionDenied { .. }) => say(format_args!("own {e}")),
        other => panic!("open of our own 0400 object: {:?}", other.map(drop)),
    }
    drop(mine);
    assert_gone(&own);
    say("passed");
}

/// `PermissionDenied` from a failed open used to say only "Permission denied (os error
/// 13)"; it now names the file's owner uid and mode and what would let the caller in.
#[test]
fn permission_denied_names_the_owner_the_mode_and_a_way_out() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let mut scene = Scene::new();
    let name = scene.name("perm");
    let own = scene.name("perm-own");
    let region = Region::create(&name, 4096).expect("create (mode 0600)");
    let what = "child_open_as_nobody".to_owned();
    let mut cmd = child_command(&what, "nobody", &name, &own);
    let (mut child, lines) = spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), &what);
    let status = common::wait_within(&mut child, START_TIMEOUT, &what);
    let said: Vec<String> = lines.try_iter().collect();
    assert!(
        status.success() && said.last().map(String::as_str) == Some("passed"),
        "the child failed (stderr above): {status:?}, said {said:?}"
    );
    for what in ["open", "inspect"] {
        let line = said
            .iter()
            .find(|l| l.starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no {what} line in {said:?}"));
        for part in [
            name.as_str(),
            "owned by uid 0",
            "mode 0600",
            "you are uid 65534",
            "Options::allow_foreign_owner",
            "ask its owner",
        ] {
            assert!(line.contains(part), "{what}: no {part:?} in {line:?}");
        }
    }
    let line = said
        .iter()
        .find(|l| l.starts_with("own "))
        .expect("own line");
    for part in ["it is yours", "mode 0400", "Options::mode"] {
        assert!(line.contains(part), "own: no {part:?} in {line:?}");
    }
    assert_eq!(region.info().refcount, 1, "no holder was added");
    drop(region);
    assert_gone(&name);
}

// --- 8. a create larger than the free space fails before it allocates -----------------

static CREATE_STEPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn count_steps(_step: u32) {
    CREATE_STEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// In a private mount namespace with an 8 MiB tmpfs on /dev/shm, 5 MiB of it used: a
/// 4 MiB create (under the size of the file system, over its free space) must fail with
/// `NoSpace` before it creates or reserves anything (no create step is reached).
#[test]
fn child_create_over_free_space() {
    let Some(name) = child_name("small-shm") else {
        return;
    };
    let c = |s: &str| std::ffi::CString::new(s).expect("C string");
    // SAFETY: unshare and mount with valid NUL-terminated strings (or null where the
    // call allows it); CLONE_NEWNS gives this thread a mount namespace of its own, so
    // the tmpfs below is seen only here and vanishes with the process.
    let rc = unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            -1
        } else if libc::mount(
            std::ptr::null(),
            c("/").as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            -2
        } else {
            libc::mount(
                c("tmpfs").as_ptr(),
                c("/dev/shm").as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                c("size=8m,mode=1777").as_ptr().cast(),
            )
        }
    };
    if rc != 0 {
        say(format_args!(
            "skipped: private tmpfs ({rc}): {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    let filler = std::fs::File::create("/dev/shm/filler").expect("filler");
    filler.set_len(5 << 20).expect("size filler");
    use std::os::unix::fs::FileExt;
    filler
        .write_all_at(&vec![1u8; 5 << 20], 0)
        .expect("fill 5 MiB");
    let vfs = rustix::fs::statvfs("/dev/shm").expect("statvfs");
    let (free, total) = (vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize);
    let len = 4usize << 20;
    assert!(free < len as u64 && (len as u64) < total, "{free} {total}");

    tally::__private::set_create_hook(count_steps);
    let t = Instant::now();
    let e = err_of("create over free space", Region::create(&name, len));
    let took = t.elapsed();
    let Error::NoSpace {
        bytes, free: told, ..
    } = e
    else {
        panic!("expected NoSpace, got {e:?}");
    };
    assert!(bytes >= len as u64 && told < bytes, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&bytes.to_string()) && msg.contains(&told.to_string()),
        "the message must give both figures: {msg}"
    );
    assert_eq!(
        CREATE_STEPS.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "it began building the segment before failing"
    );
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != "filler")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // And a create that fits still works.
    let r = Region::create(&name, 1 << 20).expect("create 1 MiB");
    drop(r);
    say(format_args!("passed in {took:?}"));
}

#[test]
fn create_over_the_free_space_fails_fast_with_both_figures() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: a private tmpfs needs root");
        return;
    }
    let mut scene = Scene::new();
    let name = scene.name("nospace");
    let k = scene.spawn("child_create_over_free_space", "small-shm", &name);
    let (status, lines) = scene.kids[k].finish();
    eprintln!("child said {lines:?}");
    if let Some(why) = lines.iter().find(|l| l.starts_with("skipped")) {
        eprintln!("{why}");
        return;
    }
    assert!(
        status.success() && lines.last().is_some_and(|l| l.starts_with("passed")),
        "the no-space scenario failed (stderr above): status {status:?}, said {lines:?}"
    );
}
