//! Segment lifecycle with real processes and real SIGKILL: properties P1–P5 of the
//! design (DESIGN.md §2), and what `fork` does to a handle.
//!
//! Holders are `tally hold NAME --create-bytes N` processes whose stdin we hold: closing
//! it is a clean exit, SIGKILL is a crash. Where a test needs code of its own in another
//! process, the test binary re-executes itself (`--exact child_* --nocapture`) with
//! `TALLY_TEST_ROLE` naming the role; those `child_*` tests return at once without it.
//!
//! Every test uses its own name and a [`Scene`] guard that kills its processes and
//! removes its names and creation debris from /dev/shm, also when the test fails.
//! Nothing waits by sleeping: processes are awaited by their output lines, by
//! `waitpid`, or by polling loops with a deadline.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::{Error, Options, Region, admin};

mod common;
use common::{
    Guard, assert_err, child_command, child_role, first_line, init_debris_of,
    remove_init_debris_of, shm_exists, shm_path, spawn_with_lines, unique, wait_within,
};

/// Prefix of this file's object names.
const PREFIX: &str = "lt";

/// Fixes the seed of the randomised tests.
const SEED_ENV: &str = "TALLY_LT_SEED";

/// How long a process may take to start and attach (debug builds on a loaded box).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit once told to.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// Randomness: splitmix64, seeded from the clock unless TALLY_LT_SEED says otherwise.

struct Rng(u64);

impl Rng {
    fn seeded(label: &str) -> Rng {
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => s.parse().expect("TALLY_LT_SEED must be a u64"),
            Err(_) => {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                t ^ (u64::from(std::process::id()) << 40)
            }
        };
        eprintln!("{label}: seed {seed} (rerun with {SEED_ENV}={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------
// Child processes.

/// A child process whose stdin we hold and whose stdout we read line by line.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    status: Option<ExitStatus>,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: String) -> Proc {
        let (mut child, lines) = spawn_with_lines(&mut cmd, Stdio::piped(), None, &what);
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            status: None,
            what,
        }
    }

    /// A process that holds `name` (opening or creating a `bytes`-byte region) until
    /// its stdin ends, like `tally hold NAME --create-bytes BYTES`.
    fn holder(name: &str, bytes: usize) -> Proc {
        let cmd = child_command("child_hold", "hold", name, &bytes.to_string());
        Proc::spawn(cmd, format!("holder of {name}"))
    }

    /// This test binary, running only the test `test` in role `role`.
    fn test_child(test: &str, role: &str, name: &str, arg: &str) -> Proc {
        let cmd = child_command(test, role, name, arg);
        Proc::spawn(cmd, format!("child {test} ({role} {arg})"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line holding `prefix` and returns it from `prefix` on,
    /// skipping other lines. (A test child's first line starts with libtest's
    /// `test NAME ... `, so the match is not anchored to the line start.)
    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let found = first_line(&self.lines, timeout, |line| {
            line.find(prefix).map(|at| line[at..].to_owned())
        });
        match found {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no line {prefix:?} within {timeout:?}", self.what)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let st = self.child.try_wait();
                panic!(
                    "{}: stdout closed before {prefix:?}; status {st:?}",
                    self.what
                )
            }
        }
    }

    fn wait_ready(&mut self) {
        self.expect_line("ready", START_TIMEOUT);
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to child's stdin");
        stdin.flush().expect("flush child's stdin");
    }

    /// End of stdin: a holder's signal to detach and exit cleanly.
    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "{} already reaped", self.what);
        // SAFETY: kill(2) on our own unreaped child: the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.what);
    }

    fn kill9(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Blocks until the child is stopped (after SIGSTOP).
    fn wait_stopped(&self) {
        let mut status = 0;
        // SAFETY: waitpid on our own unreaped child with a valid out pointer;
        // WUNTRACED reports the stop without reaping the child.
        let rc = unsafe { libc::waitpid(self.pid() as libc::pid_t, &mut status, libc::WUNTRACED) };
        assert_eq!(rc, self.pid() as libc::pid_t, "waitpid(WUNTRACED)");
        assert!(libc::WIFSTOPPED(status), "child not stopped: {status:#x}");
    }

    /// Reaps a child that is dying (after SIGKILL): blocks in waitpid.
    fn reap(&mut self) -> ExitStatus {
        let st = self.child.wait().expect("waitpid");
        self.status = Some(st);
        st
    }

    /// Waits for a child told to exit, at most [`EXIT_TIMEOUT`].
    fn wait_exit(&mut self) -> ExitStatus {
        let st = wait_within(&mut self.child, EXIT_TIMEOUT, &self.what);
        self.status = Some(st);
        st
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // std's kill is SIGKILL, and a no-op on an already reaped child.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        remove_init_debris_of(self.pid());
    }
}

/// Owns everything a test leaves in the system; cleans it up on drop, pass or fail:
/// first the processes (fields drop in order), then the names. Declare it before any
/// `Region` so that the handles drop first.
struct Scene {
    /// Dropping one kills and reaps it if it still runs, and closes its stdin.
    procs: Vec<Proc>,
    _names: Vec<Guard>,
}

impl Scene {
    fn new(names: &[&str]) -> Scene {
        Scene {
            procs: Vec::new(),
            _names: names.iter().map(|&n| Guard::named(n)).collect(),
        }
    }

    fn add(&mut self, p: Proc) -> usize {
        self.procs.push(p);
        self.procs.len() - 1
    }
}

/// The 64-bit word `i` of a region, shared with every other holder.
fn word(r: &Region, i: usize) -> &AtomicU64 {
    assert!((i + 1) * 8 <= r.len(), "word {i} outside the region");
    // SAFETY: the region is 128-byte aligned and valid for `len()` bytes while `r`
    // lives (the returned borrow is tied to `r`); AtomicU64 is valid for any bits.
    unsafe { &*(r.as_ptr().add(i * 8) as *const AtomicU64) }
}

fn pids(info: &tally::SegmentInfo) -> BTreeSet<u32> {
    info.holders.iter().map(|h| h.pid).collect()
}

/// Polls `f` until it returns `Some`, at most `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------
// P1: last close destroys.

/// Child role `hold`: open or create the region, say `ready`, hold it until stdin ends.
#[test]
fn child_hold() {
    let Some((name, bytes)) = child_role("hold") else {
        return;
    };
    let bytes: usize = bytes.parse().expect("region size");
    let (region, _) =
        Region::open_or_create(&name, bytes, &Options::default()).expect("hold: open_or_create");
    let mut out = std::io::stdout();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("say ready");
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    drop(region);
}

#[test]
fn p1_last_clean_exit_of_many_holders_unlinks() {
    const HOLDERS: usize = 6;
    let name = unique(PREFIX, "p1");
    let mut scene = Scene::new(&[&name]);
    let mut rng = Rng::seeded("p1_last_clean_exit_of_many_holders_unlinks");

    // Started together, so their open_or_create calls race.
    for _ in 0..HOLDERS {
        scene.add(Proc::holder(&name, 4096));
    }
    for p in &mut scene.procs {
        p.wait_ready();
    }
    let mut live: BTreeSet<u32> = scene.procs.iter().map(Proc::pid).collect();
    let info = admin::inspect(&name).expect("inspect with all holders attached");
    assert_eq!(info.refcount as usize, HOLDERS, "{info:?}");
    assert_eq!(pids(&info), live, "one slot per holder: {info:?}");
    assert!(info.holders.iter().all(|h| h.alive), "{info:?}");
    assert_eq!(info.state, "ready");

    // Clean exits in random order; no sweep anywhere: detach alone must do it.
    let mut order: Vec<usize> = (0..HOLDERS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &i in &order {
        let p = &mut scene.procs[i];
        p.close_stdin();
        let st = p.wait_exit();
        assert!(st.success(), "{} exited with {st}", p.what);
        live.remove(&p.pid());
        if live.is_empty() {
            assert!(
                !shm_exists(&name),
                "{} still exists after the last holder exited",
                shm_path(&name).display()
            );
            assert!(matches!(Region::open(&name), Err(Error::NotFound(_))));
        } else {
            let info = admin::inspect(&name).expect("inspect while holders remain");
            assert_eq!(info.refcount as usize, live.len(), "{info:?}");
            assert_eq!(pids(&info), live, "{info:?}");
        }
    }
}

#[test]
fn p1_last_drop_of_in_process_handles_unlinks() {
    let name = unique(PREFIX, "p1-inproc");
    let _scene = Scene::new(&[&name]);
    let a = Region::create(&name, 4096).expect("create");
    assert!(shm_exists(&name));
    a.write(100, b"p1").unwrap();
    let b = Region::open(&name).expect("open b");
    let (c, created) = Region::open_or_create(&name, 4096, &Options::default()).expect("c");
    assert!(!created, "open_or_create must open the live object");
    let d = Region::open(&name).expect("open d");
    let mut buf = [0u8; 2];
    d.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"p1", "handles see the same bytes");
    assert_eq!(a.info().refcount, 4);

    // Drop in an order that is neither creation order nor its reverse.
    drop(b);
    assert_eq!(a.info().refcount, 3);
    drop(a);
    assert_eq!(d.info().refcount, 2);
    drop(d);
    assert_eq!(c.info().refcount, 1);
    assert!(shm_exists(&name));
    drop(c);
    assert!(!shm_exists(&name), "last drop must unlink the name");
    assert!(matches!(Region::open(&name), Err(Error::NotFound(_))));
}

// ---------------------------------------------------------------------------------
// P2: death is a close.

/// Sweeps `name`, then checks that exactly the processes in `live` hold it.
fn assert_held_by(name: &str, live: &BTreeSet<u32>, ctx: &str) {
    match admin::sweep(name) {
        Ok(_) => {}
        Err(Error::NotFound(_)) if live.is_empty() => {}
        Err(e) => panic!("{ctx}: sweep: {e}"),
    }
    if live.is_empty() {
        assert!(
            !shm_exists(name),
            "{ctx}: no live holder, yet the name survived a sweep"
        );
        return;
    }
    let info = admin::inspect(name).unwrap_or_else(|e| panic!("{ctx}: inspect: {e}"));
    assert_eq!(info.state, "ready", "{ctx}: {info:?}");
    assert_eq!(info.refcount as usize, live.len(), "{ctx}: {info:?}");
    assert_eq!(info.holders.len(), live.len(), "{ctx}: {info:?}");
    assert_eq!(&pids(&info), live, "{ctx}: {info:?}");
    assert!(info.holders.iter().all(|h| h.alive), "{ctx}: {info:?}");
}

#[test]
fn p2_sigkilled_holders_are_reclaimed_and_never_block_create() {
    const STEPS: usize = 36;
    const MAX_LIVE: usize = 6;
    let name = unique(PREFIX, "p2");
    let mut scene = Scene::new(&[&name]);
    let mut rng = Rng::seeded("p2_sigkilled_holders_are_reclaimed_and_never_block_create");
    let mut live: Vec<usize> = Vec::new(); // indices into scene.procs
    let mut killed_early = 0;

    for step in 0..STEPS {
        let action = rng.below(10);
        let what;
        if (action < 4 || live.is_empty()) && live.len() < MAX_LIVE {
            let i = scene.add(Proc::holder(&name, 4096));
            scene.procs[i].wait_ready();
            live.push(i);
            what = format!("spawned {}", scene.procs[i].pid());
        } else if action < 7 && !live.is_empty() {
            let i = live.swap_remove(rng.below(live.len() as u64) as usize);
            scene.procs[i].kill9();
            scene.procs[i].reap();
            what = format!("killed {}", scene.procs[i].pid());
        } else if action < 9 {
            // Killed at a random moment of its life: maybe before it attached, maybe
            // mid-open or mid-create with the admin lock held, maybe after.
            let i = scene.add(Proc::holder(&name, 4096));
            let delay = Duration::from_micros(rng.below(20_000));
            // Injected timing, not synchronisation: any outcome is acceptable.
            std::thread::sleep(delay);
            scene.procs[i].kill9();
            scene.procs[i].reap();
            killed_early += 1;
            what = format!("killed {} after {delay:?}", scene.procs[i].pid());
        } else {
            for i in live.drain(..) {
                scene.procs[i].kill9();
                scene.procs[i].reap();
            }
            what = "killed every holder".to_owned();
        }
        let live_pids = live.iter().map(|&i| scene.procs[i].pid()).collect();
        assert_held_by(&name, &live_pids, &format!("step {step} ({what})"));
    }
    eprintln!(
        "p2: {} processes, {killed_early} killed at random moments",
        scene.procs.len()
    );

    // Kill everyone; the debris must not stand in the way of a plain create.
    for i in live.drain(..) {
        scene.procs[i].kill9();
        scene.procs[i].reap();
    }
    let r = Region::create(&name, 4096).expect("create over crash debris, with no sweep");
    let info = r.info();
    assert_eq!(info.refcount, 1, "{info:?}");
    assert_eq!(pids(&info), BTreeSet::from([std::process::id()]));
    for p in &scene.procs {
        assert!(
            init_debris_of(p.pid()).is_empty(),
            "create left debris of dead creator {}: {:?}",
            p.pid(),
            init_debris_of(p.pid())
        );
    }
    drop(r);
    assert!(!shm_exists(&name));
}

/// Opens leave dead holders' slots to whoever needs them; an open into a table that
/// is full of dead holders is what needs them: it reclaims them and succeeds.
#[test]
fn p2_open_into_a_full_table_of_dead_holders_reclaims_their_slots() {
    const TABLE: u32 = 4;
    let name = unique(PREFIX, "p2-full");
    let mut scene = Scene::new(&[&name]);
    let opts = Options::default().holders(TABLE);
    let r = Region::create_with(&name, 4096, &opts).expect("create");
    // Fill the table: three holder processes with this process's handle.
    let kids: Vec<usize> = (1..TABLE)
        .map(|_| scene.add(Proc::holder(&name, 4096)))
        .collect();
    for &i in &kids {
        scene.procs[i].wait_ready();
    }
    assert_err!(Region::open_with(&name, &opts), Error::TableFull { .. });
    for &i in &kids {
        scene.procs[i].kill9();
        scene.procs[i].reap();
    }
    // (A concurrent `sweep_all` of another test may reclaim them first; the open must
    // succeed either way.)
    let r2 = Region::open_with(&name, &opts).expect("open into a table of dead holders");
    let info = r2.info();
    assert_eq!(info.holders.len(), 2, "{info:?}");
    assert!(info.holders.iter().all(|h| h.alive), "{info:?}");
    assert_eq!(info.reclaimed_total, u64::from(TABLE - 1), "{info:?}");
    assert_eq!(info.refcount, 2, "{info:?}");
    drop(r2);
    drop(r);
    assert!(!shm_exists(&name), "the last close unlinks");
}

/// Closes do not sweep while other holders live, so dead holders may stay in the
/// table; the close of the last live holder still unlinks, whether it is the creator
/// in this process or another process exiting cleanly.
#[test]
fn p1_last_live_close_unlinks_with_dead_holders_in_the_table() {
    // This process closes last.
    let name = unique(PREFIX, "p1-dead-left");
    let mut scene = Scene::new(&[&name]);
    let r = Region::create(&name, 4096).expect("create");
    let kids: Vec<usize> = (0..2)
        .map(|_| scene.add(Proc::holder(&name, 4096)))
        .collect();
    for &i in &kids {
        scene.procs[i].wait_ready();
    }
    for &i in &kids {
        scene.procs[i].kill9();
        scene.procs[i].reap();
    }
    assert!(shm_exists(&name));
    drop(r);
    assert!(
        !shm_exists(&name),
        "the last live holder closed, dead holders left in the table: still there"
    );
    assert_err!(Region::open(&name), Error::NotFound(_));

    // Another process closes last: a holder that exits cleanly after this process's
    // handle has gone and two other holders were killed.
    let name = unique(PREFIX, "p1-dead-left2");
    let mut scene = Scene::new(&[&name]);
    let r = Region::create(&name, 4096).expect("create");
    let last = scene.add(Proc::holder(&name, 4096));
    scene.procs[last].wait_ready();
    let dead: Vec<usize> = (0..2)
        .map(|_| scene.add(Proc::holder(&name, 4096)))
        .collect();
    for &i in &dead {
        scene.procs[i].wait_ready();
    }
    for &i in &dead {
        scene.procs[i].kill9();
        scene.procs[i].reap();
    }
    drop(r);
    assert!(shm_exists(&name), "a live holder remains");
    scene.procs[last].close_stdin();
    let st = scene.procs[last].wait_exit();
    assert!(st.success(), "holder exited with {st}");
    assert!(
        !shm_exists(&name),
        "the last live holder exited, dead holders left in the table: still there"
    );
}

// ---------------------------------------------------------------------------------
// P3: one object per name, also when opens race with the last close.

const P3_PROCS: usize = 3;
const P3_CYCLES: u32 = 10_000;

#[test]
fn p3_open_racing_last_close_always_finds_one_object() {
    let name = unique(PREFIX, "p3");
    let mut scene = Scene::new(&[&name]);
    let start = Instant::now();
    for i in 0..P3_PROCS {
        let arg = format!("{i}:{P3_CYCLES}");
        scene.add(Proc::test_child("child_p3_worker", "p3", &name, &arg));
    }
    for p in &mut scene.procs {
        p.wait_ready();
    }
    for p in &mut scene.procs {
        p.send_line("go");
    }
    let mut errors = 0u64;
    let mut created = 0u64;
    let mut details = Vec::new();
    for p in &mut scene.procs {
        loop {
            let line = p.expect_line("p3-", Duration::from_secs(120));
            if let Some(rest) = line.strip_prefix("p3-error ") {
                details.push(format!("{}: {rest}", p.pid()));
                continue;
            }
            let field = |key: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            };
            errors += field("errors");
            created += field("created");
            assert_eq!(field("cycles"), u64::from(P3_CYCLES));
            eprintln!("p3 worker {}: {line}", p.pid());
            break;
        }
        let st = p.wait_exit();
        assert!(st.success(), "{} exited with {st}", p.what);
    }
    eprintln!(
        "p3: {} cycles in {:?}, {created} objects created",
        P3_PROCS as u32 * P3_CYCLES,
        start.elapsed()
    );
    assert_eq!(errors, 0, "P3 violations (first few): {details:#?}");
    assert!(created >= 1);
    assert!(!shm_exists(&name), "the name outlived its last holder");
}

/// Counts and shows the first few errors of a child.
struct Errors(u64);

impl Errors {
    fn report(&mut self, msg: String) {
        self.0 += 1;
        if self.0 <= 10 {
            println!("p3-error {msg}");
        }
    }
}

#[test]
fn child_p3_worker() {
    let Some((name, arg)) = child_role("p3") else {
        return;
    };
    let (idx, cycles) = arg.split_once(':').expect("IDX:CYCLES");
    let idx: usize = idx.parse().unwrap();
    let cycles: u32 = cycles.parse().unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();

    let me = std::process::id();
    let opts = Options::default();
    let mut rng = Rng(u64::from(me) << 32 ^ Instant::now().elapsed().as_nanos() as u64);
    let mut errors = Errors(0);
    let (mut created, mut zero_waits, mut max_wait) = (0u32, 0u32, Duration::ZERO);
    for cycle in 0..cycles {
        let (r, new) = match Region::open_or_create(&name, 64, &opts) {
            Ok(x) => x,
            Err(e) => {
                errors.report(format!("cycle {cycle}: open_or_create: {e} ({e:?})"));
                continue;
            }
        };
        // The nonce at word 0 identifies the object: its creator writes a fresh one
        // right after create returns, so an opener may briefly see 0 and waits for it.
        let nonce = word(&r, 0);
        let n = if new {
            created += 1;
            let n = rng.next() | 1;
            nonce.store(n, Ordering::Release);
            n
        } else {
            let t = Instant::now();
            let mut n = nonce.load(Ordering::Acquire);
            if n == 0 {
                zero_waits += 1;
                while n == 0 && t.elapsed() < Duration::from_secs(2) {
                    std::thread::yield_now();
                    n = nonce.load(Ordering::Acquire);
                }
                max_wait = max_wait.max(t.elapsed());
            }
            if n == 0 {
                errors.report(format!(
                    "cycle {cycle}: opened an object whose nonce stayed 0 (never initialised)"
                ));
                continue;
            }
            n
        };
        let info = r.info();
        if info.state != "ready" {
            errors.report(format!("cycle {cycle}: attached in state {}", info.state));
        }
        if info.refcount < 1 || !info.holders.iter().any(|h| h.pid == me) {
            errors.report(format!("cycle {cycle}: not listed as a holder: {info:?}"));
        }
        // While we hold it, the name must lead to this very object.
        match Region::open(&name) {
            Ok(r2) => {
                let token = (u64::from(me) << 32) | u64::from(cycle);
                word(&r, 1 + idx).store(token, Ordering::Release);
                let n2 = word(&r2, 0).load(Ordering::Acquire);
                if n2 != n {
                    errors.report(format!(
                        "cycle {cycle}: the name leads to another object (nonce {n2:#x}, ours {n:#x})"
                    ));
                } else if word(&r2, 1 + idx).load(Ordering::Acquire) != token {
                    errors.report(format!("cycle {cycle}: reopened handle sees other bytes"));
                }
                if r.info().refcount < 2 {
                    errors.report(format!("cycle {cycle}: refcount below our two handles"));
                }
            }
            Err(e) => errors.report(format!(
                "cycle {cycle}: reopening while holding it failed: {e} ({e:?})"
            )),
        }
    }
    println!(
        "p3-result errors={} cycles={cycles} created={created} zero_waits={zero_waits} max_wait_us={}",
        errors.0,
        max_wait.as_micros()
    );
    std::io::stdout().flush().unwrap();
}

// ---------------------------------------------------------------------------------
// P4: no false death.

#[test]
fn p4_stopped_holder_is_not_reclaimed() {
    let name = unique(PREFIX, "p4-stop");
    let mut scene = Scene::new(&[&name]);
    let a = scene.add(Proc::holder(&name, 4096));
    scene.procs[a].wait_ready();
    let a_pid = scene.procs[a].pid();
    let r = Region::open(&name).expect("open");

    scene.procs[a].signal(libc::SIGSTOP);
    scene.procs[a].wait_stopped();

    let out = r.sweep().expect("sweep from a handle");
    assert_eq!((out.reclaimed, out.live, out.unlinked), (0, 2, false));
    let rep = admin::sweep(&name).expect("admin sweep");
    assert_eq!(rep.reclaimed_holders, 0, "{rep:?}");
    assert!(rep.unlinked.is_empty(), "{rep:?}");
    // An open runs a sweep too, and must attach alongside the stopped holder.
    let r2 = Region::open(&name).expect("open while a holder is stopped");
    assert_eq!(r2.info().refcount, 3);
    drop(r2);
    let info = admin::inspect(&name).unwrap();
    assert_eq!(info.refcount, 2, "{info:?}");
    let ha = info.holders.iter().find(|h| h.pid == a_pid);
    assert!(ha.is_some_and(|h| h.alive), "stopped holder lost: {info:?}");

    scene.procs[a].signal(libc::SIGCONT);
    scene.procs[a].close_stdin();
    let st = scene.procs[a].wait_exit();
    assert!(st.success(), "holder exited with {st}");
    let out = r.sweep().unwrap();
    assert_eq!(
        (out.reclaimed, out.live),
        (0, 1),
        "clean exit is no reclaim"
    );
    assert_eq!(r.info().refcount, 1);
    drop(r);
    assert!(!shm_exists(&name));
}

/// Rewrites the identity of the (dead) holder in `slot` of the segment file, as if its
/// pid had been reused by process `pid` (start time `ticks`). Writes the holder table
/// directly: header of 256 bytes, then 32-byte records of `state: u32, pid: u32,
/// start_ticks: u64, ...` (src/segment/layout.rs); checks the old contents first.
fn forge_holder_identity(name: &str, slot: u32, old: (u32, u64), new: (u32, u64)) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .expect("open segment file");
    let map = memmap2::MmapOptions::new()
        .map_raw(&file)
        .expect("map segment file");
    let off = 256 + slot as usize * 32;
    assert!(off + 32 <= map.len());
    // SAFETY: `off..off+32` is inside the mapping, which outlives these references;
    // the offsets are 4- and 8-aligned (page-aligned base); atomics accept any bits.
    let (state, pid, ticks) = unsafe {
        let base = map.as_mut_ptr().add(off);
        (
            &*(base as *const AtomicU32),
            &*(base.add(4) as *const AtomicU32),
            &*(base.add(8) as *const AtomicU64),
        )
    };
    assert_eq!(
        (state.load(Ordering::Acquire), pid.load(Ordering::Relaxed)),
        (1, old.0),
        "holder record layout changed? (slot {slot})"
    );
    assert_eq!(ticks.load(Ordering::Relaxed), old.1);
    pid.store(new.0, Ordering::Relaxed);
    ticks.store(new.1, Ordering::Relaxed);
}

#[test]
fn p4_liveness_ignores_pids_and_own_process_handles_survive() {
    let name = unique(PREFIX, "p4-pid");
    let mut scene = Scene::new(&[&name]);
    let a = scene.add(Proc::holder(&name, 4096));
    scene.procs[a].wait_ready();
    let b = scene.add(Proc::holder(&name, 4096));
    scene.procs[b].wait_ready();
    let c = scene.add(Proc::holder(&name, 4096));
    scene.procs[c].wait_ready();
    let (a_pid, b_pid, c_pid) = (
        scene.procs[a].pid(),
        scene.procs[b].pid(),
        scene.procs[c].pid(),
    );
    let me = std::process::id();
    // Two handles in this process: the sweeper's own and another one.
    let r = Region::open(&name).expect("open r");
    let r2 = Region::open(&name).expect("open r2");
    assert_eq!(r.info().refcount, 5);

    // A plain SIGKILL: reclaimed by the first sweep after waitpid.
    scene.procs[c].kill9();
    scene.procs[c].reap();
    let out = r.sweep().unwrap();
    assert_eq!((out.reclaimed, out.live), (1, 4), "dead holder {c_pid}");

    // B dies; its record is then made to name live process A (pid and start time), as
    // if B's pid had been reused. The kernel lock says dead, and that must decide.
    let info = admin::inspect(&name).unwrap();
    let hb = info
        .holders
        .iter()
        .find(|h| h.pid == b_pid)
        .unwrap()
        .clone();
    let ha = info
        .holders
        .iter()
        .find(|h| h.pid == a_pid)
        .unwrap()
        .clone();
    scene.procs[b].kill9();
    scene.procs[b].reap();
    forge_holder_identity(
        &name,
        hb.slot,
        (b_pid, hb.start_ticks),
        (a_pid, ha.start_ticks),
    );
    assert!(tally::__private::pid_exists(a_pid));
    assert_eq!(
        tally::__private::process_start_ticks(a_pid),
        Some(ha.start_ticks)
    );
    let info = admin::inspect(&name).unwrap();
    let forged = info.holders.iter().find(|h| h.slot == hb.slot).unwrap();
    assert_eq!(forged.pid, a_pid);
    assert!(!forged.alive, "liveness must come from the lock: {info:?}");
    let out = r.sweep().unwrap();
    assert_eq!((out.reclaimed, out.live), (1, 3), "forged dead holder");
    let info = admin::inspect(&name).unwrap();
    assert!(info.holders.iter().all(|h| h.slot != hb.slot), "{info:?}");
    assert_eq!(info.refcount, 3);
    assert_eq!(info.holders.len(), 3, "A, r and r2: {info:?}");
    assert_eq!(pids(&info), BTreeSet::from([a_pid, me]));
    assert!(info.holders.iter().all(|h| h.alive), "{info:?}");

    // Sweeps from this process, through either handle or by name, never take the
    // other handle of the same process.
    for _ in 0..3 {
        assert_eq!(r.sweep().unwrap().reclaimed, 0);
        assert_eq!(r2.sweep().unwrap().reclaimed, 0);
        assert_eq!(admin::sweep(&name).unwrap().reclaimed_holders, 0);
    }
    assert_eq!(r2.info().refcount, 3);
    drop(r);
    assert_eq!(r2.sweep().unwrap().live, 2, "r2 and holder A");
    scene.procs[a].close_stdin();
    assert!(scene.procs[a].wait_exit().success());
    assert_eq!(r2.info().refcount, 1);
    drop(r2);
    assert!(!shm_exists(&name));
}

// ---------------------------------------------------------------------------------
// P5: no half-made object; a creator dead mid-init is replaced in bounded time.

static PAUSE_AT: AtomicU32 = AtomicU32::new(0);

fn pause_hook(step: u32) {
    if step == PAUSE_AT.load(Ordering::Relaxed) {
        println!("paused {step}");
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::park();
        }
    }
}

#[test]
fn child_p5_creator() {
    let Some((name, arg)) = child_role("p5") else {
        return;
    };
    PAUSE_AT.store(arg.parse().expect("step"), Ordering::Relaxed);
    tally::__private::set_create_hook(pause_hook);
    let r = Region::create(&name, 4096);
    panic!("create returned without pausing: {:?}", r.map(|_| ()));
}

#[test]
fn p5_creator_killed_at_each_init_step_is_replaced_quickly() {
    for step in 1..=5u32 {
        for reopen_first in [false, true] {
            let name = unique(PREFIX, &format!("p5-{step}"));
            let mut scene = Scene::new(&[&name]);
            let i = scene.add(Proc::test_child(
                "child_p5_creator",
                "p5",
                &name,
                &step.to_string(),
            ));
            let line = scene.procs[i].expect_line("paused", START_TIMEOUT);
            assert_eq!(line, format!("paused {step}"));
            let pid = scene.procs[i].pid();
            scene.procs[i].kill9();
            scene.procs[i].reap();
            // (Its temporary file may already be gone: any concurrent create in this
            // process sweeps debris of dead creators.)
            // Only step 5 comes after publication.
            assert_eq!(shm_exists(&name), step == 5, "step {step}");

            let t = Instant::now();
            let r = if reopen_first {
                // An opener never gets the half-made (or creator-orphaned) object.
                match Region::open(&name) {
                    Err(Error::NotFound(_)) => {}
                    Ok(_) => panic!("step {step}: opened a dead creator's object"),
                    Err(e) => panic!("step {step}: open: {e}"),
                }
                Region::create(&name, 4096)
                    .unwrap_or_else(|e| panic!("step {step}: create after open: {e}"))
            } else {
                let (r, created) = Region::open_or_create(&name, 4096, &Options::default())
                    .unwrap_or_else(|e| panic!("step {step}: open_or_create: {e}"));
                assert!(created, "step {step}: revived the dead creator's object");
                r
            };
            let took = t.elapsed();
            assert!(took < Duration::from_secs(1), "step {step}: took {took:?}");
            let info = r.info();
            assert_eq!(info.refcount, 1, "step {step}: {info:?}");
            assert_eq!(pids(&info), BTreeSet::from([std::process::id()]));
            assert_eq!(word(&r, 0).load(Ordering::Relaxed), 0, "fresh, zeroed");

            // A sweep finds the dead creator's file unlocked and removes it. Another
            // test's sweep may hold that file's lock at this moment (it is about to
            // remove it itself), so sweep again until a deadline rather than once.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let _ = admin::sweep_all().expect("sweep_all");
                if init_debris_of(pid).is_empty() || Instant::now() >= deadline {
                    break;
                }
                std::thread::yield_now();
            }
            assert!(
                init_debris_of(pid).is_empty(),
                "step {step}: debris left: {:?}",
                init_debris_of(pid)
            );
            drop(r);
            assert!(!shm_exists(&name));
        }
    }
}

/// The temporary file of the segment that process `pid` is building (or left).
fn creation_of(pid: u32) -> Option<admin::Creation> {
    admin::creations()
        .expect("creations")
        .into_iter()
        .find(|c| c.builder_pid == Some(pid))
}

/// `tally ls` sees objects being created and their debris through `admin::creations`:
/// a live builder's file is never sweepable, a dead builder's is. Step 2 is before
/// publication; step 5 is after `link`, when the temporary file is also the object's
/// second name.
#[test]
fn creations_show_live_builders_and_debris() {
    for step in [2u32, 5] {
        let name = unique(PREFIX, &format!("creations-{step}"));
        let mut scene = Scene::new(&[&name]);
        let i = scene.add(Proc::test_child(
            "child_p5_creator",
            "p5",
            &name,
            &step.to_string(),
        ));
        assert_eq!(
            scene.procs[i].expect_line("paused", START_TIMEOUT),
            format!("paused {step}")
        );
        let pid = scene.procs[i].pid();
        let c = creation_of(pid).unwrap_or_else(|| panic!("step {step}: builder {pid} not listed"));
        assert!(
            c.temp_name.starts_with(&format!(".tally-init.{pid}.")),
            "{c:?}"
        );
        assert!(c.builder_alive, "step {step}: {c:?}");
        assert!(!c.would_sweep, "step {step}: a live builder's file: {c:?}");
        assert_eq!(c.published, step == 5, "step {step}: {c:?}");
        assert!(c.bytes > 4096, "header, table and region: {c:?}");
        assert!(
            c.allocated_bytes >= c.bytes,
            "reserved before step 2: {c:?}"
        );
        assert!(c.age_ms.is_some_and(|ms| ms < 60_000), "{c:?}");
        // A sweep leaves a live builder's file alone. (Not at step 5: `sweep_all` would
        // wait out its timeout for the published object's admin lock, which the paused
        // builder holds.)
        if step == 2 {
            admin::sweep_all().expect("sweep_all");
            assert!(!init_debris_of(pid).is_empty(), "swept a live builder");
        }

        scene.procs[i].kill9();
        scene.procs[i].reap();
        // Any create on this machine may sweep the dead builder's file at any moment,
        // so it is checked only while it is still there.
        if let Some(c) = creation_of(pid) {
            assert!(!c.builder_alive, "step {step}: dead builder: {c:?}");
            assert!(c.would_sweep, "step {step}: dead builder's file: {c:?}");
        }
        let _ = admin::sweep_all().expect("sweep_all");
        assert!(
            creation_of(pid).is_none(),
            "step {step}: left after a sweep"
        );
        assert!(init_debris_of(pid).is_empty());
    }
}

/// P1 when the creator is killed between publishing its segment (`link`) and unlinking
/// the temporary name: that second name pinned the memory after the object was gone.
/// Now the destroy that follows the last holder's death removes both names, with no
/// global sweep (`open` sweeps only its own object).
#[test]
fn creator_killed_between_link_and_unlink_leaves_no_name_behind() {
    let name = unique(PREFIX, "p1-temp");
    let mut scene = Scene::new(&[&name]);
    let i = scene.add(Proc::test_child("child_p5_creator", "p5", &name, "5"));
    assert_eq!(
        scene.procs[i].expect_line("paused", START_TIMEOUT),
        "paused 5"
    );
    let pid = scene.procs[i].pid();
    let temps = init_debris_of(pid);
    assert_eq!(temps.len(), 1, "{temps:?}");
    let public = std::fs::symlink_metadata(shm_path(&name)).expect("published");
    let temp = std::fs::symlink_metadata(&temps[0]).expect("temporary name");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (public.ino(), public.nlink()),
        (temp.ino(), 2),
        "one file, two names"
    );

    scene.procs[i].kill9();
    scene.procs[i].reap();
    // The creator was the only holder: the next open finds the object dead.
    match Region::open(&name) {
        Err(Error::NotFound(_)) => {}
        Ok(_) => panic!("opened an object whose only holder died"),
        Err(e) => panic!("open: {e}"),
    }
    // Another test's global sweep may be destroying it concurrently (between marking
    // it DESTROYING, which makes our open say NotFound, and unlinking): allow that
    // sweep a bounded moment to finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (shm_exists(&name) || !init_debris_of(pid).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!shm_exists(&name), "the public name is still there");
    assert!(
        init_debris_of(pid).is_empty(),
        "the temporary name still pins the dead object's memory: {:?}",
        init_debris_of(pid)
    );
}

/// A folder of this process's open descriptors names the file `path`.
fn fd_open_to(path: &std::path::Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok())
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == path))
}

/// `admin::sweep` of an object whose name was replaced while the sweep waited for the
/// old object's admin lock: the dead old object is destroyed, but its name belongs to
/// the new object and is left alone, and the report says so. It used to say
/// `unlinked: [name]`.
#[test]
fn sweep_does_not_report_unlinking_a_name_it_left_to_a_new_object() {
    let name = unique(PREFIX, "sweep-replaced");
    let mut scene = Scene::new(&[&name]);
    // The creator stops after publishing, holding the object's admin lock.
    let i = scene.add(Proc::test_child("child_p5_creator", "p5", &name, "5"));
    assert_eq!(
        scene.procs[i].expect_line("paused", START_TIMEOUT),
        "paused 5"
    );
    let pid = scene.procs[i].pid();
    let path = shm_path(&name);
    assert!(!fd_open_to(&path), "this process has not opened it yet");
    std::thread::scope(|s| {
        let sweeper = s.spawn(|| admin::sweep(&name));
        // The sweeper has opened the old object and waits for its admin lock.
        poll("the sweeper's open", START_TIMEOUT, || {
            fd_open_to(&path).then_some(())
        });
        // Forced removal (the lock is busy) and a new object under the name.
        admin::remove(&name).expect("rm");
        let new = Region::create(&name, 4096).expect("create the new object");
        new.write(0, b"new").unwrap();
        // The old object's only holder dies: the sweeper gets the lock.
        scene.procs[i].kill9();
        scene.procs[i].reap();
        let rep = sweeper.join().expect("sweeper thread").expect("sweep");
        // (0 if a concurrent `sweep_all`, of another test, took the lock first.)
        assert!(rep.reclaimed_holders <= 1, "only the dead creator: {rep:?}");
        assert!(
            rep.unlinked.is_empty(),
            "reports an unlink it did not do: {rep:?}"
        );
        let again = Region::open(&name).expect("the new object is intact");
        let mut buf = [0u8; 3];
        again.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"new");
        assert_eq!(again.info().refcount, 2);
        drop(again);
        drop(new);
    });
    assert!(!shm_exists(&name));
    assert!(init_debris_of(pid).is_empty(), "{:?}", init_debris_of(pid));
}

// ---------------------------------------------------------------------------------
// Fork: a handle belongs to the process that made it.

fn wait_forked(pid: libc::pid_t) -> libc::c_int {
    poll("forked child exit", EXIT_TIMEOUT, || {
        let mut status = 0;
        // SAFETY: waitpid on our own forked child with a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid: {}", std::io::Error::last_os_error());
        (rc == pid).then_some(status)
    })
}

#[test]
fn fork_child_dropping_inherited_handle_does_not_detach_parent() {
    let name = unique(PREFIX, "fork");
    let _scene = Scene::new(&[&name]);
    let r = Region::create(&name, 4096).expect("create");
    // SAFETY: the child only drops the handle (munmap, close, free: glibc's fork
    // handlers make malloc usable in the child) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.write(64, b"child").unwrap();
            drop(r);
        })) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: ends the forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let status = wait_forked(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    let mut buf = [0u8; 5];
    r.read(64, &mut buf).unwrap();
    assert_eq!(&buf, b"child", "the child wrote through the shared mapping");
    let info = admin::inspect(&name).expect("name must survive the child's drop");
    assert_eq!(info.refcount, 1, "{info:?}");
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].pid, std::process::id());
    assert!(info.holders[0].alive, "{info:?}");
    let out = r.sweep().unwrap();
    assert_eq!((out.reclaimed, out.live, out.unlinked), (0, 1, false));
    drop(r);
    assert!(!shm_exists(&name));
}

#[test]
fn child_forker() {
    let Some((name, _)) = child_role("forker") else {
        return;
    };
    let r = Region::create(&name, 4096).expect("create");
    // SAFETY: the child calls only read(2) and _exit(2), both async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Lives until the test closes our shared stdin (or dies): never a stray.
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live local buffer of the given length.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // SAFETY: ends the forked child at once, without unwinding or atexit.
                unsafe { libc::_exit(0) };
            }
        }
    }
    println!("ready {pid}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(r);
}

/// What fork does when the forked child outlives its parent: the child shares the
/// parent's open file description, hence its liveness lock, so the parent's slot stays
/// alive until the child exits too (unless it execs: the descriptor is close-on-exec).
#[test]
fn fork_child_outliving_holder_keeps_its_slot_alive_until_it_exits() {
    let name = unique(PREFIX, "fork-outlive");
    let mut scene = Scene::new(&[&name]);
    let a = scene.add(Proc::test_child("child_forker", "forker", &name, ""));
    let line = scene.procs[a].expect_line("ready ", START_TIMEOUT);
    let g: u32 = line["ready ".len()..].parse().expect("grandchild pid");
    let a_pid = scene.procs[a].pid();

    scene.procs[a].kill9();
    scene.procs[a].reap();
    let rep = admin::sweep(&name).expect("sweep");
    assert_eq!(rep.reclaimed_holders, 0, "{rep:?}");
    let info = admin::inspect(&name).unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].pid, a_pid);
    assert!(
        info.holders[0].alive,
        "kept alive by the forked child: {info:?}"
    );
    assert!(tally::__private::pid_exists(g), "the forked child runs on");

    // End of its stdin makes the forked child _exit (no drop, no detach). It is not
    // our child, so it cannot be awaited: poll the sweep.
    scene.procs[a].close_stdin();
    poll(
        "reclaim after the forked child exited",
        EXIT_TIMEOUT,
        || match admin::sweep(&name) {
            Ok(rep) if !rep.unlinked.is_empty() => Some(()),
            Ok(_) => None,
            Err(Error::NotFound(_)) => Some(()),
            Err(e) => panic!("sweep: {e}"),
        },
    );
    assert!(!shm_exists(&name));
}

// ---------------------------------------------------------------------------------
// How long a dead holder takes to be reclaimed.

#[test]
fn reclaim_latency_after_sigkill() {
    const TRIALS: usize = 5;
    let name = unique(PREFIX, "latency");
    let mut scene = Scene::new(&[&name]);
    let r = Region::create(&name, 4096).expect("create");
    let mut reaped = Vec::new();
    let mut reclaimed = Vec::new();
    let mut max_sweeps = 0;
    for _ in 0..TRIALS {
        let i = scene.add(Proc::holder(&name, 4096));
        scene.procs[i].wait_ready();
        assert_eq!(r.info().refcount, 2);
        scene.procs[i].kill9();
        let t0 = Instant::now(); // kill() has returned
        scene.procs[i].reap();
        let t_reaped = t0.elapsed();
        let mut sweeps = 0;
        poll("reclaim of a SIGKILLed holder", EXIT_TIMEOUT, || {
            sweeps += 1;
            (r.sweep().unwrap().reclaimed == 1).then_some(())
        });
        reclaimed.push(t0.elapsed());
        reaped.push(t_reaped);
        max_sweeps = max_sweeps.max(sweeps);
        assert_eq!(r.info().refcount, 1);
    }
    reaped.sort();
    reclaimed.sort();
    eprintln!(
        "reclaim latency over {TRIALS} SIGKILLs: kill->reaped median {:?} (max {:?}); \
         kill->reclaimed median {:?} (min {:?}, max {:?}); sweeps needed after waitpid: at most {max_sweeps}",
        reaped[TRIALS / 2],
        reaped[TRIALS - 1],
        reclaimed[TRIALS / 2],
        reclaimed[0],
        reclaimed[TRIALS - 1],
    );
    drop(r);
    assert!(!shm_exists(&name));
}

// ---------------------------------------------------------------------------------
// Diagnostics seen from a holder.

#[test]
fn info_from_a_handle_reports_its_own_slot_alive() {
    let name = unique(PREFIX, "info-self");
    let _scene = Scene::new(&[&name]);
    let r = Region::create(&name, 4096).expect("create");
    let info = r.info();
    assert_eq!(info.holders.len(), 1);
    assert!(
        info.holders[0].alive,
        "a handle reports itself dead: {info:?}"
    );
}
