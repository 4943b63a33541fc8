//! `tally bench sync`: hand-off latency between two processes and uncontended cost per
//! operation of tally's mutex, semaphore and event, against POSIX named semaphores, a
//! process-shared robust pthread mutex, a raw futex wake and the two-line floor.
//!
//! Spinning hand-offs are timed as round trip / 2 on one clock, the way `tally bench
//! latency` times the ring and the floors: the other process (forked, pinned to the
//! second CPU, spinning for ever) answers each hand-off with one back, so a round trip is
//! two hand-offs. Semaphores: this side posts A and waits on B, the other waits on A and
//! posts B. Mutexes: a baton over three mutexes (with two, the side that just unlocked one
//! would race the waiter to relock it), so every half round trip is one unlock → lock
//! hand-off. `bench latency`'s two floors (one cache line per direction, the issue's
//! yardstick; and one shared line) are measured in rounds that alternate with these, so
//! a drift of this shared machine touches them alike. Both sides of a hand-off write the
//! same word (the releaser stores it, the waiter takes it with a CAS), so it moves one
//! cache line back and forth like the one-line floor, and where the two CPUs sit in
//! different cache complexes it can beat the two-line floor.
//!
//! Sleeping hand-offs (microseconds) are one-way: this side takes a CLOCK_MONOTONIC
//! timestamp, stores it in shared memory and releases (unlock / post / set / futex wake);
//! the waiter takes its own timestamp when its wait returns. A round starts only once the
//! waiter's state in /proc is `S` (asleep). The two CPUs' clocks may differ by a few
//! hundred ns, which is noise against 10–25 µs but not against a spinning hand-off. The
//! five sleeping contenders run in alternating rounds too, and the uncontended costs in
//! alternating runs (the best of each), so a burst of load lands on all of them alike.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tally::{Event, Mutex, Reset, Semaphore};

use super::{BenchArgs, BenchError, bench_name, new_histogram};

/// Results, in nanoseconds.
#[derive(Debug, Default)]
pub struct Report {
    mutex_uncontended: f64,
    mutex_sleep: u64,
    mutex_spin: u64,
    sem_uncontended: f64,
    sem_sleep: u64,
    sem_spin: u64,
    event_sleep: u64,
    pthread_uncontended: f64,
    posix_uncontended: f64,
    posix_sleep: u64,
    futex_wake: u64,
    two_line: u64,
    one_line: u64,
    /// One-way hand-offs per sleeping measurement.
    rounds: u64,
    /// Round trips timed per spinning measurement (all rounds together).
    round_trips: u64,
}

/// Control words shared with the forked waiter, each on its own cache line.
#[repr(C, align(128))]
struct Line<T>(T);

#[repr(C)]
struct Ctl {
    go: Line<AtomicU64>,
    armed: Line<AtomicU64>,
    t0: Line<AtomicU64>,
    done: Line<AtomicU64>,
    lat: Line<AtomicU64>,
    futex: Line<AtomicU32>,
    pthread: Line<libc::pthread_mutex_t>,
}

/// A shared anonymous mapping inherited by the forked waiter.
struct SharedMap {
    ptr: *mut Ctl,
}

impl SharedMap {
    fn new() -> Result<Self, BenchError> {
        // SAFETY: an anonymous shared mapping of a fresh, zeroed region; no pointer
        // arguments besides the null hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Ctl>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(SharedMap { ptr: p as *mut Ctl })
    }

    fn ctl(&self) -> &Ctl {
        // SAFETY: a live, zeroed mapping of size_of::<Ctl>() bytes, page-aligned; all
        // zeroes is a valid Ctl (atomics, and a pthread mutex initialised before use).
        unsafe { &*self.ptr }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, std::mem::size_of::<Ctl>()) };
    }
}

fn now_ns() -> u64 {
    tally::__private::monotonic_ns()
}

/// Whether process `pid` is asleep (its /proc state is `S`).
fn asleep(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "S")
        })
        .unwrap_or(false)
}

fn wait_for(word: &AtomicU64, v: u64) -> Result<(), BenchError> {
    let start = Instant::now();
    while word.load(Ordering::Acquire) != v {
        std::hint::spin_loop();
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the waiting process stopped answering".into());
        }
    }
    Ok(())
}

/// Forks a child pinned to `cpu` that runs `f` and exits (0 if `f` succeeded); returns
/// the child's pid.
fn fork_pinned(cpu: usize, f: impl FnOnce() -> Result<(), BenchError>) -> Result<i32, BenchError> {
    // SAFETY: this process is single-threaded here (the bench starts no threads), so
    // the child may run ordinary code; it ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let run = || -> Result<(), BenchError> {
            tally::__private::pin_to_cpu(cpu)?;
            f()
        };
        let code = match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tally bench sync: the other process: {e}");
                1
            }
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Reaps child `pid` (killing it first if `result` failed); a child that failed makes
/// the measurement fail.
fn reap<T>(pid: i32, result: Result<T, BenchError>) -> Result<T, BenchError> {
    let mut status = 0;
    // SAFETY: signals and reaps our own child; `status` is a valid out-pointer.
    unsafe {
        if result.is_err() {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
    }
    let v = result?;
    if status != 0 {
        return Err(format!("the other process failed (status {status})").into());
    }
    Ok(v)
}

/// One sleeping contender: what the waiter does, and what the releaser does.
trait Handoff {
    /// In the waiter (child), after fork: open its own handles.
    fn child_setup(&mut self) -> Result<(), BenchError>;
    /// In the waiter: wait (returns when released).
    fn child_wait(&mut self);
    /// In the waiter, after its last round: close its own handles.
    fn child_teardown(&mut self) {}
    /// In the releaser, before arming a round (e.g. take the lock).
    fn prepare(&mut self) {}
    /// In the releaser: release the waiter.
    fn release(&mut self);
}

/// Forks a waiter pinned to `cpus.1` and measures `rounds` one-way hand-offs to it, each
/// once it sleeps.
fn handoff(
    map: &SharedMap,
    h: &mut dyn Handoff,
    rounds: u64,
    cpus: (usize, usize),
) -> Result<Histogram<u64>, BenchError> {
    let ctl = map.ctl();
    for w in [&ctl.go.0, &ctl.armed.0, &ctl.done.0, &ctl.t0.0, &ctl.lat.0] {
        w.store(0, Ordering::Relaxed);
    }
    let pid = fork_pinned(cpus.1, || child(ctl, h, rounds))?;
    let mut hist = new_histogram();
    let result = (|| -> Result<(), BenchError> {
        for r in 1..=rounds {
            h.prepare();
            ctl.go.0.store(r, Ordering::Release);
            wait_for(&ctl.armed.0, r)?;
            let start = Instant::now();
            while !asleep(pid) {
                std::hint::spin_loop();
                if start.elapsed() > Duration::from_secs(10) {
                    return Err("the waiter never fell asleep".into());
                }
            }
            ctl.t0.0.store(now_ns(), Ordering::Release);
            h.release();
            wait_for(&ctl.done.0, r)?;
            let _ = hist.record(ctl.lat.0.load(Ordering::Acquire).max(1));
        }
        Ok(())
    })();
    reap(pid, result)?;
    Ok(hist)
}

fn child(ctl: &Ctl, h: &mut dyn Handoff, rounds: u64) -> Result<(), BenchError> {
    h.child_setup()?;
    for r in 1..=rounds {
        wait_for(&ctl.go.0, r)?;
        ctl.armed.0.store(r, Ordering::Release);
        h.child_wait();
        let t1 = now_ns();
        let t0 = ctl.t0.0.load(Ordering::Acquire);
        ctl.lat.0.store(t1.saturating_sub(t0), Ordering::Relaxed);
        ctl.done.0.store(r, Ordering::Release);
    }
    h.child_teardown();
    Ok(())
}

struct MutexHandoff<'a> {
    name: String,
    parent: &'a Mutex<u64>,
    held: Option<tally::MutexGuard<'a, u64>>,
    child: Option<Mutex<u64>>,
}

impl Handoff for MutexHandoff<'_> {
    fn child_teardown(&mut self) {
        self.child = None;
    }
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut m = Mutex::<u64>::open(&self.name)?;
        m.set_spin(Duration::ZERO);
        self.child = Some(m);
        Ok(())
    }
    fn child_wait(&mut self) {
        let m = self.child.as_ref().expect("set up");
        let g = m.lock().unwrap_or_else(|e| panic!("lock: {e}"));
        drop(g); // one uncontended swap before the timestamp: the guard borrows `m`
    }
    fn prepare(&mut self) {
        self.held = Some(self.parent.lock().unwrap_or_else(|e| panic!("lock: {e}")));
    }
    fn release(&mut self) {
        self.held = None;
    }
}

struct SemHandoff<'a> {
    name: String,
    parent: &'a Semaphore,
    child: Option<Semaphore>,
}

impl Handoff for SemHandoff<'_> {
    fn child_teardown(&mut self) {
        self.child = None;
    }
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut s = Semaphore::open(&self.name)?;
        s.set_spin(Duration::ZERO);
        self.child = Some(s);
        Ok(())
    }
    fn child_wait(&mut self) {
        let s = self.child.as_ref().expect("set up");
        s.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    }
    fn release(&mut self) {
        self.parent.post(1).unwrap_or_else(|e| panic!("post: {e}"));
    }
}

struct EventHandoff<'a> {
    name: String,
    parent: &'a Event,
    child: Option<Event>,
}

impl Handoff for EventHandoff<'_> {
    fn child_teardown(&mut self) {
        self.child = None;
    }
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut e = Event::open(&self.name)?;
        e.set_spin(Duration::ZERO);
        self.child = Some(e);
        Ok(())
    }
    fn child_wait(&mut self) {
        let e = self.child.as_ref().expect("set up");
        e.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    }
    fn release(&mut self) {
        self.parent.set();
    }
}

struct PosixSem(*mut libc::sem_t);

impl Handoff for PosixSem {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        Ok(()) // the sem_open mapping is inherited through fork
    }
    fn child_wait(&mut self) {
        // SAFETY: a semaphore from sem_open, mapped in this (forked) process.
        while unsafe { libc::sem_wait(self.0) } != 0 {}
    }
    fn release(&mut self) {
        // SAFETY: as above.
        unsafe { libc::sem_post(self.0) };
    }
}

struct Futex<'a> {
    word: &'a AtomicU32,
    round: u32,
}

impl Handoff for Futex<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
    fn child_wait(&mut self) {
        self.round += 1;
        loop {
            let v = self.word.load(Ordering::Acquire);
            if v == self.round {
                return;
            }
            tally::__private::futex_wait(self.word, v, None);
        }
    }
    fn release(&mut self) {
        self.round += 1;
        self.word.store(self.round, Ordering::Release);
        tally::__private::futex_wake(self.word, 1);
    }
}

/// Spinning measurements alternate with the two-line floor in this many rounds, whose
/// histograms are merged (as `bench latency` does).
const ROUNDS: u64 = 4;
/// Round trips timed before recording starts, as a fraction of the recorded ones (as
/// `bench latency`).
const WARMUP_DIV: u64 = 10;

/// Times `iters / WARMUP_DIV + iters` round trips of `round_trip(i)`; records RTT / 2 of
/// the last `iters`.
fn measure(
    iters: u64,
    mut round_trip: impl FnMut(u64) -> Result<(), BenchError>,
) -> Result<Histogram<u64>, BenchError> {
    let mut h = new_histogram();
    let warmup = iters / WARMUP_DIV;
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        round_trip(i)?;
        let rtt = t0.elapsed().as_nanos() as u64;
        if i >= warmup {
            h.record((rtt / 2).max(1))?;
        }
    }
    Ok(h)
}

fn lock(m: &Mutex<u64>) -> Result<tally::MutexGuard<'_, u64>, BenchError> {
    m.lock().map_err(|e| format!("lock: {e}").into())
}

/// Spinning semaphore hand-offs: this side posts `a` and waits on `b`; the other
/// process (spinning for ever) waits on `a` and posts `b`. Both start at 0.
fn sem_spin(
    ctl: &Ctl,
    a: &Semaphore,
    b: &Semaphore,
    iters: u64,
    cpu: usize,
) -> Result<Histogram<u64>, BenchError> {
    let total = iters / WARMUP_DIV + iters;
    ctl.armed.0.store(0, Ordering::Relaxed);
    let pid = fork_pinned(cpu, || {
        let mut a = Semaphore::open(a.name())?;
        let mut b = Semaphore::open(b.name())?;
        a.set_spin(Duration::MAX);
        b.set_spin(Duration::MAX);
        // SYNC POINT: Release pairs with the parent's Acquire in `wait_for`.
        ctl.armed.0.store(1, Ordering::Release);
        for _ in 0..total {
            a.wait()?;
            b.post(1)?;
        }
        Ok(())
    })?;
    let result = wait_for(&ctl.armed.0, 1).and_then(|()| {
        measure(iters, |_| {
            a.post(1)?;
            b.wait()?;
            Ok(())
        })
    });
    reap(pid, result)
}

/// Spinning mutex hand-offs: a baton over three mutexes. Hand-off `h` passes `m[h % 3]`,
/// from this side to the other for even `h` and back for odd `h`, so round trip `j` is
/// this side unlocking `m[2j % 3]` and locking `m[(2j + 1) % 3]`, and the other side's
/// step `j` is locking `m[2j % 3]` and unlocking `m[(2j + 1) % 3]`. This side starts
/// holding `m[0]` and `m[2]`, the other `m[1]`. Each lock waits (spinning) on a mutex the
/// other side holds, and no side relocks a mutex before the other has taken it: with two
/// mutexes, the side that just unlocked one would race its waiter to relock it.
fn mutex_spin(
    ctl: &Ctl,
    m: &[Mutex<u64>; 3],
    iters: u64,
    cpu: usize,
) -> Result<Histogram<u64>, BenchError> {
    let total = iters / WARMUP_DIV + iters;
    let mut held = [Some(lock(&m[0])?), None, Some(lock(&m[2])?)];
    ctl.armed.0.store(0, Ordering::Relaxed);
    let pid = fork_pinned(cpu, || {
        let mut mine = Vec::with_capacity(3);
        for x in m {
            let mut h = Mutex::<u64>::open(x.name())?;
            h.set_spin(Duration::MAX);
            mine.push(h);
        }
        let mut held = [None, Some(lock(&mine[1])?), None];
        // SYNC POINT: Release pairs with the parent's Acquire in `wait_for`.
        ctl.armed.0.store(1, Ordering::Release);
        for j in 0..total as usize {
            held[2 * j % 3] = Some(lock(&mine[2 * j % 3])?);
            held[(2 * j + 1) % 3] = None;
        }
        drop(held);
        Ok(())
    })?;
    let result = wait_for(&ctl.armed.0, 1).and_then(|()| {
        measure(iters, |j| {
            let j = j as usize;
            held[2 * j % 3] = None;
            held[(2 * j + 1) % 3] = Some(lock(&m[(2 * j + 1) % 3])?);
            Ok(())
        })
    });
    let h = reap(pid, result);
    drop(held);
    h
}

/// Rounds of the uncontended measurement (each contender once per round).
const UNCONTENDED_ROUNDS: u32 = 5;

/// Nanoseconds per iteration of `f`, over `n` iterations.
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

pub fn run(args: &BenchArgs, cpus: (usize, usize)) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let rounds = (args.iters / 100).clamp(100, 5000);
    let n = 1_000_000;
    let map = SharedMap::new()?;
    let ctl = map.ctl();
    let round_args = BenchArgs {
        iters: args.iters.div_ceil(ROUNDS),
        ..args.clone()
    };
    let mut rep = Report {
        rounds: rounds.div_ceil(ROUNDS) * ROUNDS,
        round_trips: round_args.iters * ROUNDS,
        ..Report::default()
    };

    // Spinning hand-offs against the two-line floor, in alternating rounds.
    let mnames = [bench_name("mtx0"), bench_name("mtx1"), bench_name("mtx2")];
    let mut ms = Vec::with_capacity(3);
    for name in &mnames {
        let mut m = Mutex::<u64>::create(name, 0)?;
        m.set_spin(Duration::MAX);
        ms.push(m);
    }
    let ms: [Mutex<u64>; 3] = ms.try_into().map_err(|_| "three mutexes")?;
    let mut sa = Semaphore::create(&bench_name("sema"), 0, 1)?;
    let mut sb = Semaphore::create(&bench_name("semb"), 0, 1)?;
    sa.set_spin(Duration::MAX);
    sb.set_spin(Duration::MAX);
    let (mut two_h, mut mutex_h, mut sem_h) = (new_histogram(), new_histogram(), new_histogram());
    let mut one_h = new_histogram();
    for _ in 0..ROUNDS {
        one_h.add(super::latency::floor(&round_args, cpus)?)?;
        two_h.add(super::latency::two_line(&round_args, cpus)?)?;
        mutex_h.add(mutex_spin(ctl, &ms, round_args.iters, cpus.1)?)?;
        sem_h.add(sem_spin(ctl, &sa, &sb, round_args.iters, cpus.1)?)?;
    }
    rep.two_line = two_h.value_at_quantile(0.5);
    rep.one_line = one_h.value_at_quantile(0.5);
    rep.mutex_spin = mutex_h.value_at_quantile(0.5);
    rep.sem_spin = sem_h.value_at_quantile(0.5);
    drop((ms, sa, sb));

    // Uncontended cost: the four contenders in alternating rounds, the best round of
    // each, so a burst of load on this shared machine does not land on one of them only.
    let mname = bench_name("mtx");
    let m = Mutex::<u64>::create(&mname, 0)?;
    let sname = bench_name("sem");
    let s = Semaphore::create(&sname, 1, 1)?;
    let pm = PthreadMutex::init(&map.ctl().pthread.0);
    let ps = PosixNamed::open(&bench_name("posix"))?;
    let mut best = [f64::INFINITY; 4];
    for _ in 0..UNCONTENDED_ROUNDS {
        let times = [
            per_op(n, || {
                if let Ok(g) = m.lock() {
                    drop(g);
                }
            }),
            per_op(n, || {
                let _ = std::hint::black_box(s.wait());
                let _ = s.post(1);
            }),
            per_op(n, || pm.lock_unlock()),
            per_op(n, || ps.wait_post()),
        ];
        for (b, t) in best.iter_mut().zip(times) {
            *b = b.min(t);
        }
    }
    drop(pm);
    [
        rep.mutex_uncontended,
        rep.sem_uncontended,
        rep.pthread_uncontended,
        rep.posix_uncontended,
    ] = best;

    // Sleeping hand-offs, one-way, the five contenders in alternating rounds whose
    // histograms are merged. Semaphores at count 0: every round's waiter blocks.
    s.wait()?;
    // SAFETY: a live semaphore from sem_open; count 1 → 0.
    unsafe { libc::sem_wait(ps.sem) };
    let ename = bench_name("evt");
    let e = Event::create(&ename, Reset::Auto)?;
    let mut mutex_h = MutexHandoff {
        name: mname,
        parent: &m,
        held: None,
        child: None,
    };
    let mut sem_h = SemHandoff {
        name: sname,
        parent: &s,
        child: None,
    };
    let mut event_h = EventHandoff {
        name: ename,
        parent: &e,
        child: None,
    };
    let mut posix_h = PosixSem(ps.sem);
    let mut futex_h = Futex {
        word: &ctl.futex.0,
        round: 0,
    };
    let mut contenders: [(&mut dyn Handoff, Histogram<u64>); 5] = [
        (&mut mutex_h, new_histogram()),
        (&mut sem_h, new_histogram()),
        (&mut event_h, new_histogram()),
        (&mut posix_h, new_histogram()),
        (&mut futex_h, new_histogram()),
    ];
    for _ in 0..ROUNDS {
        for (h, hist) in contenders.iter_mut() {
            hist.add(handoff(&map, *h, rounds.div_ceil(ROUNDS), cpus)?)?;
        }
    }
    [
        rep.mutex_sleep,
        rep.sem_sleep,
        rep.event_sleep,
        rep.posix_sleep,
        rep.futex_wake,
    ] = contenders.map(|(_, h)| h.value_at_quantile(0.5));
    Ok(rep)
}

/// A robust, process-shared pthread mutex in our shared mapping; destroyed on drop.
struct PthreadMutex(*mut libc::pthread_mutex_t);

impl PthreadMutex {
    fn init(at: &libc::pthread_mutex_t) -> Self {
        let pm = at as *const _ as *mut libc::pthread_mutex_t;
        // SAFETY: initialising a mutex in our shared mapping (zeroed, unused) with a
        // fresh attribute object; every pointer is to live, writable memory.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutex_init(pm, &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        PthreadMutex(pm)
    }

    #[inline]
    fn lock_unlock(&self) {
        // SAFETY: an initialised robust mutex in live shared memory.
        unsafe {
            libc::pthread_mutex_lock(self.0);
            libc::pthread_mutex_unlock(self.0);
        }
    }
}

impl Drop for PthreadMutex {
    fn drop(&mut self) {
        // SAFETY: initialised, unlocked, and no longer used.
        unsafe { libc::pthread_mutex_destroy(self.0) };
    }
}

/// A POSIX named semaphore (count 1 at creation); closed and unlinked on drop, so an
/// error anywhere in the run leaves nothing in /dev/shm.
struct PosixNamed {
    sem: *mut libc::sem_t,
    name: std::ffi::CString,
}

impl PosixNamed {
    fn open(name: &str) -> Result<Self, BenchError> {
        let name = std::ffi::CString::new(format!("/{name}"))?;
        // SAFETY: a valid NUL-terminated name; O_CREAT|O_EXCL with mode and initial value.
        let sem = unsafe { libc::sem_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 1) };
        if sem == libc::SEM_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(PosixNamed { sem, name })
    }

    #[inline]
    fn wait_post(&self) {
        // SAFETY: a live semaphore from sem_open.
        unsafe {
            libc::sem_wait(self.sem);
            libc::sem_post(self.sem);
        }
    }
}

impl Drop for PosixNamed {
    fn drop(&mut self) {
        // SAFETY: closes and unlinks what `open` opened, once.
        unsafe {
            libc::sem_close(self.sem);
            libc::sem_unlink(self.name.as_ptr());
        }
    }
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `a / b` to two decimals; NaN (JSON null) when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        f64::NAN
    }
}

/// How each column is measured, for the JSON and the table.
const METHOD_SPIN: &str = "round trip / 2 on one clock: the other process (forked, pinned, spinning) answers each hand-off with one back (semaphores A and B; a baton over three mutexes); p50 over all round trips, in rounds alternating with bench latency's two floors (one shared cache line; one line per direction), timed the same way";
const METHOD_SLEEP: &str = "one-way: the releaser's CLOCK_MONOTONIC stamp to the waiter's, taken on two CPUs, each hand-off once the waiter sleeps (/proc state S); p50, the five contenders in alternating rounds";
const METHOD_UNCONTENDED: &str = "ns per pair (lock+unlock, wait+post) in one process: the best of 5 runs of 1,000,000, the four contenders in alternating runs";

pub fn to_json(r: &Report) -> Value {
    let f = |x: u64| x as f64;
    json!({
        "mutex": {
            "uncontended_ns": r1(r.mutex_uncontended),
            "handoff_sleep_p50_ns": r.mutex_sleep,
            "handoff_spin_p50_ns": r.mutex_spin,
        },
        "semaphore": {
            "uncontended_ns": r1(r.sem_uncontended),
            "handoff_sleep_p50_ns": r.sem_sleep,
            "handoff_spin_p50_ns": r.sem_spin,
        },
        "event": { "handoff_sleep_p50_ns": r.event_sleep },
        "baselines": {
            "pthread_robust_mutex": { "uncontended_ns": r1(r.pthread_uncontended) },
            "posix_semaphore": {
                "uncontended_ns": r1(r.posix_uncontended),
                "handoff_sleep_p50_ns": r.posix_sleep,
            },
            "futex": { "wake_p50_ns": r.futex_wake },
            "two_line": { "p50_ns": r.two_line },
            "floor": { "p50_ns": r.one_line },
        },
        "ratios": {
            "mutex_uncontended_vs_pthread_robust": ratio(r.mutex_uncontended, r.pthread_uncontended),
            "semaphore_uncontended_vs_posix": ratio(r.sem_uncontended, r.posix_uncontended),
            "mutex_sleep_vs_futex_wake": ratio(f(r.mutex_sleep), f(r.futex_wake)),
            "semaphore_sleep_vs_futex_wake": ratio(f(r.sem_sleep), f(r.futex_wake)),
            "event_sleep_vs_futex_wake": ratio(f(r.event_sleep), f(r.futex_wake)),
            "posix_semaphore_sleep_vs_futex_wake": ratio(f(r.posix_sleep), f(r.futex_wake)),
            "mutex_spin_vs_two_line": ratio(f(r.mutex_spin), f(r.two_line)),
            "semaphore_spin_vs_two_line": ratio(f(r.sem_spin), f(r.two_line)),
            "mutex_spin_vs_floor": ratio(f(r.mutex_spin), f(r.one_line)),
            "semaphore_spin_vs_floor": ratio(f(r.sem_spin), f(r.one_line)),
        },
        "targets": {
            "mutex_uncontended_vs_pthread_robust": 1.2,
            "sleep_vs_futex_wake": 1.1,
            "spin_vs_two_line": 1.3,
        },
        "method": {
            "spin": METHOD_SPIN,
            "sleep": METHOD_SLEEP,
            "uncontended": METHOD_UNCONTENDED,
        },
        "spin_round_trips": r.round_trips,
        "sleep_handoffs": r.rounds,
    })
}

pub fn print(r: &Report) {
    let f = |x: u64| x as f64;
    println!(
        "sync objects (ns): uncontended = ns per op pair; sleep = p50 of {} one-way hand-offs; spin = p50 of RTT/2 over {} round trips",
        r.rounds, r.round_trips
    );
    println!(
        "{:<34} {:>11} {:>12} {:>12}",
        "", "uncontended", "sleep", "spin RTT/2"
    );
    println!(
        "{:<34} {:>11.1} {:>12} {:>12}",
        "tally mutex (lock+unlock)", r.mutex_uncontended, r.mutex_sleep, r.mutex_spin
    );
    println!(
        "{:<34} {:>11.1} {:>12} {:>12}",
        "tally semaphore (wait+post)", r.sem_uncontended, r.sem_sleep, r.sem_spin
    );
    println!(
        "{:<34} {:>11} {:>12} {:>12}",
        "tally event (set)", "-", r.event_sleep, "-"
    );
    println!(
        "{:<34} {:>11.1} {:>12} {:>12}",
        "pthread robust mutex", r.pthread_uncontended, "-", "-"
    );
    println!(
        "{:<34} {:>11.1} {:>12} {:>12}",
        "POSIX named semaphore", r.posix_uncontended, r.posix_sleep, "-"
    );
    println!(
        "{:<34} {:>11} {:>12} {:>12}",
        "raw futex wake", "-", r.futex_wake, "-"
    );
    println!(
        "{:<34} {:>11} {:>12} {:>12}",
        "two lines, one per direction", "-", "-", r.two_line
    );
    println!(
        "{:<34} {:>11} {:>12} {:>12}",
        "floor (one shared cache line)", "-", "-", r.one_line
    );
    println!();
    println!("spin: {METHOD_SPIN}");
    println!(
        "      (both sides of a hand-off write one word, so it moves one line like the one-line floor)"
    );
    println!("sleep: {METHOD_SLEEP}");
    println!("uncontended: {METHOD_UNCONTENDED}");
    println!();
    println!(
        "mutex uncontended / pthread robust: {:.2} (target <= 1.2)",
        ratio(r.mutex_uncontended, r.pthread_uncontended)
    );
    for (what, v) in [
        ("mutex", r.mutex_sleep),
        ("semaphore", r.sem_sleep),
        ("event", r.event_sleep),
    ] {
        println!(
            "{what} sleeping hand-off / futex wake: {:.2} (target <= 1.1)",
            ratio(f(v), f(r.futex_wake))
        );
    }
    for (what, v) in [("mutex", r.mutex_spin), ("semaphore", r.sem_spin)] {
        println!(
            "{what} spinning hand-off (RTT/2) / two-line floor (RTT/2): {:.2} (target <= 1.3); / one-line floor: {:.2}",
            ratio(f(v), f(r.two_line)),
            ratio(f(v), f(r.one_line))
        );
    }
}
