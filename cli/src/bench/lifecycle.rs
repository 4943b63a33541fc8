//! `tally bench lifecycle`: what creating, opening, closing and sweeping a named object
//! costs, against the raw system calls the same work needs, in one run.
//!
//! * create + destroy of a 4 KiB `Region` and of a `Ring<u64>` of 4096 slots, against
//!   the raw cycle `shm_open(O_CREAT|O_EXCL)`, `ftruncate`, `mmap`, `munmap`, `close`,
//!   `shm_unlink`;
//! * open + close of a live `Region` that 1, 8, 64 and 512 other processes hold,
//!   against the raw cycle `shm_open`, `mmap`, `munmap`, `close`, and POSIX named
//!   semaphores' `sem_open` + `sem_close` (glibc maps and unmaps the semaphore's file);
//! * one sweep of an object with 1 and 64 dead holders (SIGKILLed and reaped).
//!
//! Holder processes are forked from this one: each opens the object with its own
//! handle, reports on a shared pipe, and waits for the end of another pipe, then
//! detaches and exits. Every timed figure is the best (lowest) of [`BATCHES`] batches
//! (as `tally bench sync` takes the best of three): the machine's other work can only
//! add time to a batch, never take it away.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use tally::{Options, Region, Ring};

use super::progress::Progress;
use super::{BenchError, bench_name};

/// Measurements a run makes, for the progress bar.
pub const STEPS: u32 = 6;
/// Timed batches per figure; the best is reported.
pub const BATCHES: usize = 9;
/// Other holder processes of the open + close measurements.
pub const HOLDER_COUNTS: [u32; 4] = [1, 8, 64, 512];
/// Dead holders of the sweep measurements.
pub const DEAD_COUNTS: [u32; 2] = [1, 64];
/// Holder-table capacity of objects with more holders than the default table takes.
pub const LARGE_TABLE: u32 = 1024;
/// Bytes of the regions (and of the raw baselines' files).
const REGION_BYTES: usize = 4096;
/// Slots of the ring.
const RING_SLOTS: usize = 4096;
/// How long holder processes may take to attach.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `tally bench lifecycle`.
#[derive(Args, Clone, Copy, Debug)]
pub struct LifecycleArgs {
    /// Operations per timed batch (9 batches per figure, the best one counts; a sweep
    /// figure is the best of min(N, 15) single sweeps).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ops: u64,
}

impl Default for LifecycleArgs {
    fn default() -> Self {
        LifecycleArgs { ops: 100 }
    }
}

/// Results, in nanoseconds per operation.
#[derive(Debug, Default)]
pub struct Report {
    ops: u64,
    sweep_rounds: u64,
    region: Ns,
    ring: Ns,
    /// (other holders, holder-table capacity, ns)
    open_close: Vec<(u32, u32, Ns)>,
    /// (dead holders, holder-table capacity, ns)
    sweep: Vec<(u32, u32, Ns)>,
    raw_create: Ns,
    raw_open: Ns,
    sem_open_close: Ns,
}

/// Nanoseconds per operation, by the wall clock and by this thread's CPU time (user and
/// system: what the operation costs the machine, which time on a busy machine's run
/// queue does not inflate).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ns {
    wall: f64,
    cpu: f64,
}

impl Ns {
    fn min(self, o: Ns) -> Ns {
        Ns {
            wall: self.wall.min(o.wall),
            cpu: self.cpu.min(o.cpu),
        }
    }
}

/// This thread's CPU time in nanoseconds.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a live timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Times `f` (called `n` times) by both clocks.
fn timed(n: u64, f: &mut impl FnMut() -> Result<(), BenchError>) -> Result<Ns, BenchError> {
    let (c0, t0) = (cpu_now(), Instant::now());
    for _ in 0..n {
        f()?;
    }
    Ok(Ns {
        wall: t0.elapsed().as_nanos() as f64 / n as f64,
        cpu: (cpu_now() - c0) / n as f64,
    })
}

const NO_TIME: Ns = Ns {
    wall: f64::INFINITY,
    cpu: f64::INFINITY,
};

/// Nanoseconds per call of `f`: the best of [`BATCHES`] batches of `n`, by each clock.
fn per_op(n: u64, mut f: impl FnMut() -> Result<(), BenchError>) -> Result<Ns, BenchError> {
    f()?; // warm-up
    let mut best = NO_TIME;
    for _ in 0..BATCHES {
        best = best.min(timed(n, &mut f)?);
    }
    Ok(best)
}

fn os_err() -> BenchError {
    std::io::Error::last_os_error().into()
}

/// A pipe, both ends close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), BenchError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two descriptors for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forked holder processes of one object. Each reports one byte on the `ready` pipe
/// (`r`: attached, `e`: failed) and holds its handles until `stop` reaches its end.
struct Holders {
    pids: Vec<libc::pid_t>,
    ready_r: OwnedFd,
    ready_w: OwnedFd,
    stop_r: OwnedFd,
    stop_w: Option<OwnedFd>,
}

impl Holders {
    fn new() -> Result<Self, BenchError> {
        let (ready_r, ready_w) = pipe()?;
        let (stop_r, stop_w) = pipe()?;
        Ok(Holders {
            pids: Vec::new(),
            ready_r,
            ready_w,
            stop_r,
            stop_w: Some(stop_w),
        })
    }

    /// Forks `count` processes that each open `name` `handles` times, and waits until
    /// they all hold it.
    fn add(
        &mut self,
        count: u32,
        name: &str,
        handles: u32,
        opts: &Options,
    ) -> Result<(), BenchError> {
        let stop_w = self.stop_w.as_ref().ok_or("holders already stopped")?;
        let (ready_w, stop_r, stop_w) = (
            self.ready_w.as_raw_fd(),
            self.stop_r.as_raw_fd(),
            stop_w.as_raw_fd(),
        );
        for _ in 0..count {
            // SAFETY: this process runs one thread, so the child may allocate and open
            // files; it leaves only through `_exit`, running no destructor of ours.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(os_err());
            }
            if pid == 0 {
                // SAFETY: in the child: close our copy of the stop pipe's write end
                // (its end must come when the parent closes its own), then hold.
                unsafe { libc::close(stop_w) };
                let code = hold(name, handles, opts, ready_w, stop_r);
                // SAFETY: leaving the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            self.pids.push(pid);
        }
        let mut left = count as usize;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 512];
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.ready_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(60_000) as i32) };
            if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if rc <= 0 {
                return Err(format!("{left} holder processes did not attach in time").into());
            }
            let want = left.min(buf.len());
            // SAFETY: reading at most `want` bytes into a live buffer.
            let n = unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), want) };
            if n <= 0 {
                return Err(os_err());
            }
            let got = &buf[..n as usize];
            if got.iter().any(|&b| b != b'r') {
                return Err(format!("a holder process could not open {name}").into());
            }
            left -= got.len();
        }
        Ok(())
    }

    /// SIGKILLs every holder and reaps it.
    fn kill(&mut self) {
        for &pid in &self.pids {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.reap();
    }

    fn reap(&mut self) -> bool {
        let mut ok = true;
        for pid in self.pids.drain(..) {
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child with a live status word.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc == pid {
                    ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                    break;
                }
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    ok = false;
                    break;
                }
            }
        }
        ok
    }

    /// Lets every holder detach and exit, and reaps it.
    fn finish(mut self) -> Result<(), BenchError> {
        drop(self.stop_w.take());
        if !self.reap() {
            return Err("a holder process failed".into());
        }
        Ok(())
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        if !self.pids.is_empty() {
            self.kill();
        }
    }
}

/// The body of a holder process: `handles` handles on `name`, held until `stop` ends.
fn hold(name: &str, handles: u32, opts: &Options, ready: i32, stop: i32) -> i32 {
    let mut held = Vec::with_capacity(handles as usize);
    for _ in 0..handles {
        match Region::open_with(name, opts) {
            Ok(r) => held.push(r),
            Err(_) => {
                // SAFETY: writing one byte from a live buffer.
                unsafe { libc::write(ready, b"e".as_ptr().cast(), 1) };
                return 1;
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::write(ready, b"r".as_ptr().cast(), 1) };
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a live buffer.
        let n = unsafe { libc::read(stop, b.as_mut_ptr().cast(), 1) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            break;
        }
    }
    drop(held);
    0
}

/// Removes `name` on every exit path (after killed holders, say).
struct NameGuard(String);
impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = tally::admin::sweep(&self.0);
    }
}

fn table_opts(holders: u32) -> Options {
    Options::default().holders(holders)
}

/// The holder-table capacity an object with `others` other holders (and us) needs.
fn table_for(others: u32) -> u32 {
    let default = Options::default().holders;
    if others < default {
        default
    } else {
        LARGE_TABLE
    }
}

pub fn run(
    la: &LifecycleArgs,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let n = la.ops;
    let mut rep = Report {
        ops: n,
        sweep_rounds: n.min(15),
        ..Report::default()
    };

    progress.step("lifecycle: raw baselines");
    rep.raw_create = raw_create(n)?;
    rep.raw_open = raw_open(n)?;
    rep.sem_open_close = sem_open_close(n)?;

    progress.step("lifecycle: create + destroy");
    let name = bench_name("life-create");
    let _g = NameGuard(name.clone());
    rep.region = per_op(n, || {
        drop(Region::create(&name, REGION_BYTES)?);
        Ok(())
    })?;
    rep.ring = per_op(n, || {
        drop(Ring::<u64>::create(&name, RING_SLOTS)?);
        Ok(())
    })?;

    // Open + close with 1 and 8 holders (default table), then 64 and 512 (large table).
    for group in [&HOLDER_COUNTS[..2], &HOLDER_COUNTS[2..]] {
        progress.step(&format!("lifecycle: open + close, {group:?} other holders"));
        let table = table_for(group[group.len() - 1]);
        let opts = table_opts(table);
        let name = bench_name(&format!("life-open{table}"));
        let _g = NameGuard(name.clone());
        let mut creator = Some(Region::create_with(&name, REGION_BYTES, &opts)?);
        let mut holders = Holders::new()?;
        let mut have = 0;
        for &count in group {
            holders.add(count - have, &name, 1, &opts)?;
            have = count;
            // The holders keep it alive; from here on only they hold it.
            drop(creator.take());
            let ns = per_op(n, || {
                drop(Region::open_with(&name, &opts)?);
                Ok(())
            })?;
            rep.open_close.push((count, table, ns));
        }
        holders.finish()?;
    }

    for &dead in &DEAD_COUNTS {
        progress.step(&format!("lifecycle: sweep, {dead} dead holders"));
        let table = table_for(dead);
        let opts = table_opts(table);
        let name = bench_name(&format!("life-sweep{dead}"));
        let _g = NameGuard(name.clone());
        let region = Region::create_with(&name, REGION_BYTES, &opts)?;
        let mut best = NO_TIME;
        let (mut timed_rounds, mut tries) = (0, 0);
        while timed_rounds < rep.sweep_rounds {
            tries += 1;
            if tries > 3 * rep.sweep_rounds + 10 {
                return Err(format!(
                    "sweeps of {dead} dead holders kept finding fewer: another process \
                     sweeps {name} (a global `tally sweep`?)"
                )
                .into());
            }
            let mut h = Holders::new()?;
            h.add(1, &name, dead, &opts)?;
            h.kill();
            let mut out = None;
            let t = timed(1, &mut || {
                out = Some(region.sweep()?);
                Ok(())
            })?;
            // Another process's sweep (`tally sweep` of everything, say) may have taken
            // some first: that round measured less work, so it does not count.
            if out.is_some_and(|o| o.reclaimed == dead) {
                best = best.min(t);
                timed_rounds += 1;
            }
        }
        rep.sweep.push((dead, table, best));
    }
    Ok(rep)
}

/// A POSIX shared-memory name for the raw baselines.
fn raw_name(what: &str) -> Result<std::ffi::CString, BenchError> {
    Ok(std::ffi::CString::new(format!("/{}", bench_name(what)))?)
}

/// `shm_open(O_CREAT|O_EXCL)`, `ftruncate`, `mmap`, `munmap`, `close`, `shm_unlink`.
fn raw_create(n: u64) -> Result<Ns, BenchError> {
    let name = raw_name("raw-create")?;
    per_op(n, || {
        // SAFETY: a valid NUL-terminated name; every descriptor and mapping made here is
        // released here.
        unsafe {
            let fd = libc::shm_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            );
            if fd < 0 {
                return Err(os_err());
            }
            let ok = libc::ftruncate(fd, REGION_BYTES as libc::off_t) == 0;
            let p = if ok { map(fd) } else { libc::MAP_FAILED };
            if p != libc::MAP_FAILED {
                libc::munmap(p, REGION_BYTES);
            }
            libc::close(fd);
            libc::shm_unlink(name.as_ptr());
            if p == libc::MAP_FAILED {
                return Err(os_err());
            }
        }
        Ok(())
    })
}

/// # Safety
/// `fd` is an open descriptor of a file of at least `REGION_BYTES` bytes.
unsafe fn map(fd: i32) -> *mut libc::c_void {
    // SAFETY: a fresh shared mapping of an open descriptor; no address hint.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    }
}

/// `shm_open`, `mmap`, `munmap`, `close` of an existing 4 KiB object.
fn raw_open(n: u64) -> Result<Ns, BenchError> {
    let name = raw_name("raw-open")?;
    // SAFETY: a valid NUL-terminated name; the descriptor is closed here.
    unsafe {
        let fd = libc::shm_open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        );
        if fd < 0 {
            return Err(os_err());
        }
        let ok = libc::ftruncate(fd, REGION_BYTES as libc::off_t) == 0;
        libc::close(fd);
        if !ok {
            libc::shm_unlink(name.as_ptr());
            return Err(os_err());
        }
    }
    let r = per_op(n, || {
        // SAFETY: as in raw_create.
        unsafe {
            let fd = libc::shm_open(name.as_ptr(), libc::O_RDWR, 0);
            if fd < 0 {
                return Err(os_err());
            }
            let p = map(fd);
            if p != libc::MAP_FAILED {
                libc::munmap(p, REGION_BYTES);
            }
            libc::close(fd);
            if p == libc::MAP_FAILED {
                return Err(os_err());
            }
        }
        Ok(())
    });
    // SAFETY: a valid NUL-terminated name.
    unsafe { libc::shm_unlink(name.as_ptr()) };
    r
}

/// `sem_open` + `sem_close` of an existing named semaphore that this process does not
/// otherwise hold (glibc then opens, maps, closes the file, and unmaps it at close).
fn sem_open_close(n: u64) -> Result<Ns, BenchError> {
    let name = raw_name("sem")?;
    // SAFETY: a valid NUL-terminated name; O_CREAT|O_EXCL with mode and initial value.
    let s = unsafe { libc::sem_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 0) };
    if s == libc::SEM_FAILED {
        return Err(os_err());
    }
    // SAFETY: a live semaphore from sem_open; the name keeps the object.
    unsafe { libc::sem_close(s) };
    let r = per_op(n, || {
        // SAFETY: a valid name; the semaphore is closed at once.
        unsafe {
            let s = libc::sem_open(name.as_ptr(), 0);
            if s == libc::SEM_FAILED {
                return Err(os_err());
            }
            libc::sem_close(s);
        }
        Ok(())
    });
    // SAFETY: a valid NUL-terminated name.
    unsafe { libc::sem_unlink(name.as_ptr()) };
    r
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        ((a / b) * 100.0).round() / 100.0
    } else {
        f64::NAN
    }
}

fn open_close(r: &Report, holders: u32) -> Ns {
    r.open_close
        .iter()
        .find(|&&(h, _, _)| h == holders)
        .map_or(Ns::default(), |&(_, _, ns)| ns)
}

/// The figures by one clock, in the layout `tally bench lifecycle --json` promises.
fn figures(r: &Report, clock: fn(&Ns) -> f64) -> Value {
    let keyed = |v: &[(u32, u32, Ns)]| -> Value {
        Value::Object(
            v.iter()
                .map(|(k, _, ns)| (k.to_string(), json!(r1(clock(ns)))))
                .collect(),
        )
    };
    let (one, most) = (clock(&open_close(r, 1)), clock(&open_close(r, 512)));
    json!({
        "create_destroy_ns": { "region": r1(clock(&r.region)), "ring": r1(clock(&r.ring)) },
        "open_close_ns": keyed(&r.open_close),
        "sweep_ns": keyed(&r.sweep),
        "baselines": {
            "raw_create_ns": r1(clock(&r.raw_create)),
            "raw_open_ns": r1(clock(&r.raw_open)),
            "sem_open_close_ns": r1(clock(&r.sem_open_close)),
        },
        "ratios": {
            "region_create_destroy_per_raw_create": ratio(clock(&r.region), clock(&r.raw_create)),
            "open_close_1_per_raw_open": ratio(one, clock(&r.raw_open)),
            "open_close_512_per_1": ratio(most, one),
        },
    })
}

/// Wall-clock figures at the top level; the same by CPU time under `cpu`.
pub fn to_json(r: &Report) -> Value {
    let tables = |v: &[(u32, u32, Ns)]| -> Value {
        Value::Object(
            v.iter()
                .map(|&(k, t, _)| (k.to_string(), json!(t)))
                .collect(),
        )
    };
    let mut v = figures(r, |n| n.wall);
    if let Value::Object(m) = &mut v {
        m.insert("cpu".into(), figures(r, |n| n.cpu));
        m.insert(
            "holder_table".into(),
            json!({ "open_close": tables(&r.open_close), "sweep": tables(&r.sweep) }),
        );
        m.insert("ops_per_batch".into(), json!(r.ops));
        m.insert("batches".into(), json!(BATCHES));
        m.insert("sweep_rounds".into(), json!(r.sweep_rounds));
    }
    v
}

pub fn print(r: &Report) {
    println!(
        "Object lifecycle, ns per operation, best of {BATCHES} batches of {} (sweeps: best \
         of {} single sweeps), by the wall clock and by CPU time; 4 KiB Region, Ring<u64> \
         of {RING_SLOTS} slots",
        r.ops, r.sweep_rounds
    );
    println!();
    println!(
        "{:<58} {:>10} {:>10} {:>8} {:>8}",
        "", "wall ns", "cpu ns", "/ base", "(cpu)"
    );
    let row = |what: &str, ns: Ns, base: Option<Ns>| {
        let rel = |a: f64, b: Option<f64>| {
            b.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", ratio(a, b)))
        };
        println!(
            "{what:<58} {:>10.0} {:>10.0} {:>8} {:>8}",
            ns.wall,
            ns.cpu,
            rel(ns.wall, base.map(|b| b.wall)),
            rel(ns.cpu, base.map(|b| b.cpu)),
        );
    };
    row(
        "raw shm_open+ftruncate+mmap+munmap+close+unlink",
        r.raw_create,
        None,
    );
    row("Region create + destroy", r.region, Some(r.raw_create));
    row("Ring<u64> create + destroy", r.ring, Some(r.raw_create));
    row("raw shm_open+mmap+munmap+close", r.raw_open, None);
    row(
        "POSIX sem_open + sem_close",
        r.sem_open_close,
        Some(r.raw_open),
    );
    for &(h, t, ns) in &r.open_close {
        row(
            &format!("Region open + close, {h} other holders ({t}-slot table)"),
            ns,
            Some(r.raw_open),
        );
    }
    for &(d, t, ns) in &r.sweep {
        row(
            &format!("sweep, {d} dead holders ({t}-slot table)"),
            ns,
            None,
        );
    }
    println!();
    let (one, most) = (open_close(r, 1), open_close(r, 512));
    let both = |a: Ns, b: Ns| {
        format!(
            "{:.2} (cpu {:.2})",
            ratio(a.wall, b.wall),
            ratio(a.cpu, b.cpu)
        )
    };
    println!(
        "create + destroy / raw create cycle: {} (target <= 2)",
        both(r.region, r.raw_create)
    );
    println!(
        "open + close with 1 other holder / raw open cycle: {} (target <= 3)",
        both(one, r.raw_open)
    );
    println!(
        "open + close with 512 other holders / with 1: {} (target <= 1.5)",
        both(most, one)
    );
    println!();
}
