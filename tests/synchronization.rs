//! Semaphores, mutexes and events from outside the crate: their semantics in one
//! process, and holders SIGKILLed in child processes at each step of each operation
//! and at random.
//!
//! Children are this test binary re-executed (see tests/common); they report progress
//! as tagged lines, which the parent reads with a deadline. Every test uses its own
//! name and leaves nothing in /dev/shm.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use tally::{
    Event, EventWaitError, Flavor, LockError, Mutex, Options, Reset, Semaphore, SemaphorePostError,
    SemaphoreWaitError, SyncInfo,
};

mod common;
use common::{
    Guard, Rng, TAG, assert_gone, child_command, child_role, first_line, say, spawn_with_lines,
};

const PREFIX: &str = "sy";

/// The bound within which a waiter learns it is the last live holder: one 10 ms slice,
/// plus scheduling slack on a loaded machine.
const LAST_HOLDER_BOUND: Duration = Duration::from_millis(500);

fn hang() -> ! {
    loop {
        thread::park();
    }
}

/// A child process running one `child_*` test. Dropping it SIGKILLs and reaps it.
struct Kid {
    role: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    reaped: bool,
}

impl Kid {
    fn spawn(role: &'static str, name: &str, arg: &str) -> Kid {
        let mut cmd = child_command(role, role, name, arg);
        let (child, lines) =
            spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), &format!("child {role}"));
        Kid {
            role,
            child,
            lines,
            reaped: false,
        }
    }

    fn expect(&mut self, word: &str, timeout: Duration) -> String {
        match first_line(&self.lines, timeout, |l| {
            l.strip_prefix(word).map(|r| r.trim().to_owned())
        }) {
            Ok(rest) => rest,
            Err(e) => {
                let _ = self.child.kill();
                let st = self.child.wait();
                self.reaped = true;
                panic!(
                    "child {} printed no {word:?} line ({e:?}); {st:?}",
                    self.role
                )
            }
        }
    }

    fn kill(&mut self) -> Instant {
        let pid = self.child.id() as libc::pid_t;
        let sent = Instant::now();
        // SAFETY: kill(2) has no memory preconditions; the pid is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let st = self.child.wait().expect("reap the killed child");
        self.reaped = true;
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "{} ended {st:?}",
            self.role
        );
        sent
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: as in `kill`.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn sem_info(s: &Semaphore) -> tally::SemaphoreInfo {
    match s.info().sync {
        Some(SyncInfo::Semaphore(i)) => i,
        other => panic!("no semaphore info: {other:?}"),
    }
}

/// Permits held by live holders, as the table and the records say.
fn held_by_live(s: &Semaphore) -> u32 {
    let info = s.info();
    let SyncInfo::Semaphore(si) = info.sync.clone().expect("sync info") else {
        panic!("not a semaphore")
    };
    si.permits
        .iter()
        .filter(|(slot, _)| info.holders.iter().any(|h| h.slot == *slot && h.alive))
        .map(|&(_, n)| n)
        .sum()
}

/// The conservation law: available + held by live holders = maximum.
fn assert_conserved(s: &Semaphore, when: &str) {
    let (count, held) = (s.count(), held_by_live(s));
    assert_eq!(
        count + held,
        s.max(),
        "{when}: {count} available + {held} held by live holders != max {}",
        s.max()
    );
}

// --- 1. semantics in one process -----------------------------------------------------

#[test]
fn signal_semaphore_counts_and_refuses_overflow() {
    let g = Guard::new(PREFIX, "sig");
    let s = Semaphore::create(&g.name, 1, 3).unwrap();
    assert_eq!((s.flavor(), s.count(), s.max()), (Flavor::Signal, 1, 3));
    s.post(2).unwrap();
    assert_eq!(
        s.post(1),
        Err(SemaphorePostError::Overflow { count: 3, max: 3 })
    );
    for _ in 0..3 {
        s.try_wait().unwrap();
    }
    assert_eq!(s.try_wait(), Err(SemaphoreWaitError::WouldBlock));
    assert_eq!(
        s.wait_timeout(Duration::from_millis(20)),
        Err(SemaphoreWaitError::LastHolder),
        "alone, a waiter learns nobody can post"
    );
    let other = s.try_clone().unwrap();
    let t0 = Instant::now();
    assert_eq!(
        s.wait_timeout(Duration::from_millis(30)),
        Err(SemaphoreWaitError::Timeout)
    );
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(s.try_acquire().err(), Some(SemaphoreWaitError::WrongFlavor));
    let t = thread::spawn(move || {
        other.post(1).unwrap();
        other
    });
    s.wait().unwrap();
    drop(t.join().unwrap());
    assert!(Semaphore::create(&g.name, 0, 0).is_err());
    assert!(Semaphore::create_with(&g.name, 2, 1, &Options::default()).is_err());
    drop(s);
    assert_gone(&g.name);
}

#[test]
fn resource_permits_are_recorded_and_come_back_on_drop() {
    let g = Guard::new(PREFIX, "res");
    let s = Semaphore::create_resource(&g.name, 2).unwrap();
    assert_eq!(s.post(1), Err(SemaphorePostError::WrongFlavor));
    assert_eq!(s.try_wait(), Err(SemaphoreWaitError::WrongFlavor));
    let a = s.acquire().unwrap();
    let b = s.acquire_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!((s.count(), s.held()), (0, 2));
    assert_eq!(sem_info(&s).permits, vec![(s.info().holders[0].slot, 2)]);
    assert_eq!(s.try_acquire().err(), Some(SemaphoreWaitError::WouldBlock));
    // Alone and holding both: nobody could return one but us.
    assert_eq!(s.acquire().err(), Some(SemaphoreWaitError::LastHolder));
    drop(a);
    assert_conserved(&s, "after one drop");
    drop(b);
    assert_eq!((s.count(), s.held()), (2, 0));
    let (again, created) =
        Semaphore::open_or_create(&g.name, Flavor::Resource, 2, 2, &Options::default()).unwrap();
    assert!(!created);
    assert!(Semaphore::open_or_create(&g.name, Flavor::Signal, 2, 2, &Options::default()).is_err());
    drop((again, s));
    assert_gone(&g.name);
}

#[derive(Clone, Copy, Pod, Zeroable, Debug, tally::Message)]
#[repr(C)]
struct Shared {
    /// Pid of the process inside the critical section, or 0: checked by every holder.
    inside: u64,
    /// Completed critical sections.
    count: u64,
}

#[test]
fn mutex_locks_unlocks_and_refuses_to_wait_on_itself() {
    let g = Guard::new(PREFIX, "mtx");
    let m = Mutex::<u64>::create(&g.name, 5).unwrap();
    {
        let mut guard = m.lock().unwrap();
        *guard += 1;
        assert!(!guard.is_abandoned());
        assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
        let t0 = Instant::now();
        assert!(matches!(m.lock(), Err(LockError::LastHolder)));
        assert!(t0.elapsed() < LAST_HOLDER_BOUND);
        let other = m.try_clone().unwrap();
        assert!(matches!(
            other.lock_timeout(Duration::from_millis(20)),
            Err(LockError::Timeout)
        ));
    }
    assert_eq!(*m.try_lock().unwrap(), 6);
    assert!(matches!(
        Mutex::<u32>::open(&g.name),
        Err(tally::Error::LayoutMismatch { .. })
    ));
    // Threads each with their own handle: no increment is lost.
    let handles: Vec<_> = (0..3).map(|_| m.try_clone().unwrap()).collect();
    let ts: Vec<_> = handles
        .into_iter()
        .map(|h| {
            thread::spawn(move || {
                for _ in 0..2000 {
                    *h.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!(*m.lock().unwrap(), 6 + 6000);
    drop(m);
    assert_gone(&g.name);
}

#[test]
fn events_follow_windows_semantics() {
    let g = Guard::new(PREFIX, "evm");
    let ev = Event::create(&g.name, Reset::Manual).unwrap();
    assert_eq!(
        ev.wait(),
        Err(EventWaitError::LastHolder),
        "alone and not set"
    );
    let other = ev.try_clone().unwrap();
    assert_eq!(
        ev.wait_timeout(Duration::from_millis(20)),
        Err(EventWaitError::Timeout)
    );
    other.set();
    ev.wait().unwrap();
    ev.wait().unwrap();
    assert!(ev.is_set() && other.try_wait());
    ev.reset();
    assert!(!other.try_wait());
    drop((ev, other));
    assert_gone(&g.name);

    let g = Guard::new(PREFIX, "eva");
    let ev = Event::create(&g.name, Reset::Auto).unwrap();
    let other = ev.try_clone().unwrap();
    ev.set();
    ev.set(); // sets do not accumulate
    assert!(other.try_wait());
    assert!(!other.try_wait(), "an auto-reset event releases one waiter");
    let t = thread::spawn(move || {
        other.wait().unwrap();
        other
    });
    ev.set();
    let other = t.join().unwrap();
    assert!(!ev.is_set());
    assert!(matches!(
        Event::open_or_create(&g.name, Reset::Manual, &Options::default()),
        Err(tally::Error::LayoutMismatch { .. })
    ));
    drop((ev, other));
    assert_gone(&g.name);
}

// --- 2. resource semaphore: a kill at each step ---------------------------------------

static STOP_AT: OnceLock<u32> = OnceLock::new();

/// The step hook of a child told to stop: report the step, then wait to be killed.
fn stop_at_step(step: u32) {
    if STOP_AT.get() == Some(&step) {
        say(format_args!("at {step}"));
        hang();
    }
}

#[test]
fn child_semaphore_stops_at_step() {
    let Some((name, arg)) = child_role("child_semaphore_stops_at_step") else {
        return;
    };
    let step: u32 = arg.parse().unwrap();
    let s = Semaphore::open(&name).unwrap();
    // A permit it keeps, so a death also leaves a settled record to return.
    let kept = s.acquire().unwrap();
    STOP_AT.set(step).unwrap();
    tally::__private::set_sync_step_hook(stop_at_step);
    let p = s.acquire().unwrap(); // steps 1-3
    drop(p); // steps 11-13
    say("passed");
    drop(kept);
    hang();
}

#[test]
fn resource_semaphore_killed_at_each_step_loses_no_permit() {
    for step in [1, 2, 3, 11, 12, 13] {
        let g = Guard::new(PREFIX, "step");
        let s = Semaphore::create_resource(&g.name, 3).unwrap();
        let mut kid = Kid::spawn("child_semaphore_stops_at_step", &g.name, &step.to_string());
        assert_eq!(kid.expect("at", Duration::from_secs(10)), step.to_string());
        kid.kill();
        // The next operator settles whatever the dead holder left pending ...
        let p = s.acquire().unwrap();
        drop(p);
        // ... and the sweep returns what its record holds.
        let out = s.sweep().unwrap();
        assert_eq!(out.reclaimed, 1, "step {step}");
        assert_conserved(&s, &format!("killed at step {step}"));
        assert_eq!(s.count(), 3, "step {step}: every permit is back");
        assert!(sem_info(&s).permits.is_empty() && sem_info(&s).pending.is_none());
        drop(s);
        assert_gone(&g.name);
    }
}

#[test]
fn child_semaphore_worker() {
    let Some((name, _)) = child_role("child_semaphore_worker") else {
        return;
    };
    let s = Semaphore::open(&name).unwrap();
    say("ready");
    loop {
        let p = s.acquire().unwrap();
        std::hint::black_box(&p);
        drop(p);
    }
}

#[test]
fn resource_semaphore_random_kills_conserve_permits() {
    const WORKERS: usize = 3;
    const KILLS: usize = 25;
    let g = Guard::new(PREFIX, "rand");
    let s = Semaphore::create_resource(&g.name, 2).unwrap();
    let mut rng = Rng(0x5eed_0000_0000_0008);
    let mut kids: Vec<Kid> = (0..WORKERS)
        .map(|_| Kid::spawn("child_semaphore_worker", &g.name, ""))
        .collect();
    for k in &mut kids {
        k.expect("ready", Duration::from_secs(10));
    }
    for _ in 0..KILLS {
        // Randomised kill timing (not synchronisation): 0-2000 µs of the workers' churn.
        thread::sleep(Duration::from_micros(rng.below(2000) as u64));
        let i = rng.below(WORKERS);
        kids[i].kill();
        kids[i] = Kid::spawn("child_semaphore_worker", &g.name, "");
        kids[i].expect("ready", Duration::from_secs(10));
    }
    for k in &mut kids {
        k.kill();
    }
    s.sweep().unwrap();
    // Settle anything left pending by the last victims.
    drop(s.acquire().unwrap());
    assert_conserved(&s, "after every worker died");
    assert_eq!(s.count(), 2);
    drop(s);
    assert_gone(&g.name);
}

#[test]
fn child_semaphore_waits() {
    let Some((name, _)) = child_role("child_semaphore_waits") else {
        return;
    };
    let s = Semaphore::open(&name).unwrap();
    say("ready");
    match s.wait() {
        Ok(()) => say("got"),
        Err(e) => say(format_args!("error {e:?}")),
    }
    hang();
}

#[test]
fn a_semaphore_waiter_left_alone_fails_within_a_slice() {
    let g = Guard::new(PREFIX, "alone");
    let s = Semaphore::create(&g.name, 0, 1).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.wait(), Err(SemaphoreWaitError::LastHolder));
    assert!(t0.elapsed() < LAST_HOLDER_BOUND, "took {:?}", t0.elapsed());
    // A waiter in another process is woken by a post across processes ...
    let mut kid = Kid::spawn("child_semaphore_waits", &g.name, "");
    kid.expect("ready", Duration::from_secs(10));
    s.post(1).unwrap();
    kid.expect("got", Duration::from_secs(10));
    kid.kill();
    // ... and a waiter whose only peer dies learns so within a bound.
    let mut kid = Kid::spawn("child_semaphore_waits", &g.name, "");
    kid.expect("ready", Duration::from_secs(10));
    let waiter = thread::spawn(move || {
        let r = s.wait();
        (r, Instant::now(), s)
    });
    let killed = kid.kill();
    let (r, at, s) = waiter.join().unwrap();
    assert_eq!(r, Err(SemaphoreWaitError::LastHolder));
    let took = at.saturating_duration_since(killed);
    println!("semaphore waiter learnt it was alone {took:?} after the kill");
    assert!(took < LAST_HOLDER_BOUND, "took {took:?}");
    drop(s);
    assert_gone(&g.name);
}

// --- 3. mutex: owner death ------------------------------------------------------------

#[test]
fn child_mutex_dies_holding() {
    let Some((name, _)) = child_role("child_mutex_dies_holding") else {
        return;
    };
    let m = Mutex::<Shared>::open(&name).unwrap();
    let mut g = m.lock().unwrap();
    g.inside = std::process::id() as u64; // half an update: count never follows
    say("locked");
    hang();
}

#[test]
fn a_dead_owner_hands_the_lock_on_abandoned_within_a_bound() {
    let g = Guard::new(PREFIX, "dead");
    let m = Mutex::<Shared>::create(&g.name, Shared::zeroed()).unwrap();
    let mut kid = Kid::spawn("child_mutex_dies_holding", &g.name, "");
    kid.expect("locked", Duration::from_secs(10));
    let info = m.info();
    let Some(SyncInfo::Mutex(mi)) = &info.sync else {
        panic!("no mutex info")
    };
    let owner = mi.owner_slot.expect("locked by the child");
    assert!(info.holders.iter().any(|h| h.slot == owner && h.alive));
    let waiter = thread::spawn(move || {
        let abandoned = match m.lock() {
            Err(LockError::Abandoned(mut guard)) => {
                assert_ne!(guard.inside, 0, "the dead owner's half update is visible");
                guard.inside = 0; // repair
                guard.clear_abandoned();
                true
            }
            Ok(_) => false,
            Err(e) => panic!("{e:?}"),
        };
        (abandoned, Instant::now(), m)
    });
    let killed = kid.kill();
    let (abandoned, at, m) = waiter.join().unwrap();
    let took = at.saturating_duration_since(killed);
    println!("mutex waiter took over from the dead owner {took:?} after the kill");
    assert!(abandoned, "the next locker must be told");
    assert!(took < LAST_HOLDER_BOUND, "took {took:?}");
    assert!(!m.is_abandoned(), "the mark was cleared");
    assert!(m.lock().is_ok());
    drop(m);
    assert_gone(&g.name);
}

#[test]
fn the_sweep_releases_a_dead_owners_lock_marked() {
    let g = Guard::new(PREFIX, "swept");
    let m = Mutex::<Shared>::create(&g.name, Shared::zeroed()).unwrap();
    let mut kid = Kid::spawn("child_mutex_dies_holding", &g.name, "");
    kid.expect("locked", Duration::from_secs(10));
    kid.kill();
    assert_eq!(m.sweep().unwrap().reclaimed, 1);
    assert!(m.is_abandoned());
    let guard = m.try_lock().err().and_then(LockError::into_guard);
    let guard = guard.expect("abandoned, with the guard");
    assert!(guard.is_abandoned());
    drop(guard);
    assert!(m.is_abandoned(), "the mark stays until cleared");
    let mut guard = m.lock().unwrap_err().into_guard().unwrap();
    guard.clear_abandoned();
    drop(guard);
    assert!(m.lock().is_ok());
    drop(m);
    assert_gone(&g.name);
}

#[test]
fn child_mutex_worker() {
    let Some((name, _)) = child_role("child_mutex_worker") else {
        return;
    };
    let m = Mutex::<Shared>::open(&name).unwrap();
    let me = std::process::id() as u64;
    say("ready");
    loop {
        let mut g = match m.lock() {
            Ok(g) => g,
            Err(LockError::Abandoned(mut g)) => {
                // A dead holder may have left `inside` set: repair, then clear.
                g.inside = 0;
                g.clear_abandoned();
                g
            }
            Err(e) => panic!("{e:?}"),
        };
        if g.inside != 0 {
            say(format_args!("violation: {} inside with {me}", g.inside));
            std::process::exit(3);
        }
        g.inside = me;
        for _ in 0..50 {
            std::hint::spin_loop();
        }
        if g.inside != me {
            say("violation: changed under us");
            std::process::exit(3);
        }
        g.inside = 0;
        g.count += 1;
    }
}

#[test]
fn mutex_random_kills_never_admit_two_live_holders() {
    const WORKERS: usize = 3;
    const KILLS: usize = 25;
    let g = Guard::new(PREFIX, "mrand");
    let m = Mutex::<Shared>::create(&g.name, Shared::zeroed()).unwrap();
    let mut rng = Rng(0x5eed_0000_0000_0007);
    let mut kids: Vec<Kid> = (0..WORKERS)
        .map(|_| Kid::spawn("child_mutex_worker", &g.name, ""))
        .collect();
    for k in &mut kids {
        k.expect("ready", Duration::from_secs(10));
    }
    for _ in 0..KILLS {
        thread::sleep(Duration::from_micros(rng.below(3000) as u64));
        let i = rng.below(WORKERS);
        // A worker that found a violation has exited 3 instead of dying of the kill.
        kids[i].kill();
        kids[i] = Kid::spawn("child_mutex_worker", &g.name, "");
        kids[i].expect("ready", Duration::from_secs(10));
    }
    for k in &mut kids {
        k.kill();
    }
    m.sweep().unwrap();
    let guard = match m.lock() {
        Ok(g) => g,
        Err(e) => e.into_guard().expect("abandoned at worst"),
    };
    println!("{} critical sections across {KILLS} kills", guard.count);
    assert!(guard.count > 0);
    drop(guard);
    drop(m);
    assert_gone(&g.name);
}

// --- 4. events across processes ---------------------------------------------------------

#[test]
fn child_event_echo() {
    let Some((name, arg)) = child_role("child_event_echo") else {
        return;
    };
    let ping = Event::open(&name).unwrap();
    let pong = Event::open(&arg).unwrap();
    say("ready");
    loop {
        ping.wait().unwrap();
        pong.set();
    }
}

#[test]
fn auto_events_lose_no_wake_across_processes() {
    const ROUNDS: usize = 2000;
    let g1 = Guard::new(PREFIX, "ping");
    let g2 = Guard::new(PREFIX, "pong");
    let ping = Event::create(&g1.name, Reset::Auto).unwrap();
    let pong = Event::create(&g2.name, Reset::Auto).unwrap();
    let mut kid = Kid::spawn("child_event_echo", &g1.name, &g2.name);
    kid.expect("ready", Duration::from_secs(10));
    for i in 0..ROUNDS {
        // Alternate spinning and sleeping waits on both sides of the wake.
        ping.set();
        pong.wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {i}: wake lost ({e:?})"));
    }
    kid.kill();
    drop((ping, pong));
    assert_gone(&g1.name);
    assert_gone(&g2.name);
}

#[test]
fn child_event_setter_stops() {
    let Some((name, _)) = child_role("child_event_setter_stops") else {
        return;
    };
    let ev = Event::open(&name).unwrap();
    STOP_AT.set(21).unwrap();
    tally::__private::set_sync_step_hook(stop_at_step);
    say("ready");
    // The parent says go once its waiter sleeps.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    ev.set(); // stops between the word's change and the wake
    hang();
}

#[test]
fn a_setter_killed_before_its_wake_still_releases_the_waiter() {
    for reset in [Reset::Manual, Reset::Auto] {
        let g = Guard::new(PREFIX, "evkill");
        let mut ev = Event::create(&g.name, reset).unwrap();
        ev.set_spin(Duration::ZERO); // sleep at once: the wake is what is tested
        let mut cmd = child_command(
            "child_event_setter_stops",
            "child_event_setter_stops",
            &g.name,
            "",
        );
        let (child, lines) = spawn_with_lines(&mut cmd, Stdio::piped(), Some(TAG), "setter");
        let mut kid = Kid {
            role: "child_event_setter_stops",
            child,
            lines,
            reaped: false,
        };
        kid.expect("ready", Duration::from_secs(10));
        let waiter = thread::spawn(move || {
            let r = ev.wait_timeout(Duration::from_secs(5));
            (r, ev)
        });
        // Let the waiter fall asleep first, so only the (never sent) wake could reach it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info = tally::admin::inspect(&g.name).unwrap();
            if let Some(SyncInfo::Event(e)) = info.sync
                && e.sleepers > 0
            {
                break;
            }
            assert!(Instant::now() < deadline, "the waiter never slept");
            thread::yield_now();
        }
        use std::io::Write;
        let mut stdin = kid.child.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
        kid.expect("at 21", Duration::from_secs(10));
        kid.kill();
        let (r, ev) = waiter.join().unwrap();
        assert_eq!(r, Ok(()), "{reset:?}: the set was lost with its setter");
        drop(ev);
        assert_gone(&g.name);
    }
}

#[test]
fn child_event_holds() {
    let Some((name, _)) = child_role("child_event_holds") else {
        return;
    };
    let _ev = Event::open(&name).unwrap();
    say("ready");
    hang();
}

#[test]
fn an_event_waiter_left_alone_fails_within_a_slice() {
    let g = Guard::new(PREFIX, "evalone");
    let ev = Event::create(&g.name, Reset::Auto).unwrap();
    let mut kid = Kid::spawn("child_event_holds", &g.name, "");
    kid.expect("ready", Duration::from_secs(10));
    let waiter = thread::spawn(move || {
        let r = ev.wait();
        (r, Instant::now(), ev)
    });
    let killed = kid.kill();
    let (r, at, ev) = waiter.join().unwrap();
    assert_eq!(r, Err(EventWaitError::LastHolder));
    let took = at.saturating_duration_since(killed);
    println!("event waiter learnt it was alone {took:?} after the kill");
    assert!(took < LAST_HOLDER_BOUND, "took {took:?}");
    drop(ev);
    assert_gone(&g.name);
}
