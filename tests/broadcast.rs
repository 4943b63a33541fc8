//! The broadcast ring: every subscriber sees every message (lossless) or every message
//! it was not told it missed (lossy), whole and in order, also when subscribers and
//! publishers are SIGKILLed mid-operation (real processes: the test binary re-executes
//! itself as the child).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tally::{
    Broadcast, BroadcastRecvError, BroadcastRecvTimeoutError, BroadcastTryRecvError, ByteBroadcast,
    Error, Kind, Lagged, PeerState, Policy, ReserveError, SendTimeoutError, Start, TrySendError,
};

mod common;
use common::{Guard, Kid, assert_gone, child_args, hang, say};

/// Prefix of this file's object names.
const PREFIX: &str = "bc";

/// A message whose words all derive from its sequence number, and a checksum over
/// them: a torn message (words of two laps) fails `intact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
#[repr(C)]
struct Tick {
    seq: u64,
    words: [u64; 6],
    sum: u64,
}

fn word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(i as u32 * 7)
        ^ i as u64
}

fn tick(seq: u64) -> Tick {
    let words = std::array::from_fn(|i| word(seq, i));
    Tick {
        seq,
        words,
        sum: checksum(seq, &words),
    }
}

fn checksum(seq: u64, words: &[u64; 6]) -> u64 {
    words
        .iter()
        .fold(seq ^ 0x5bd1_e995, |a, w| a.rotate_left(5) ^ w)
}

fn intact(t: &Tick) -> bool {
    t.sum == checksum(t.seq, &t.words) && (0..6).all(|i| t.words[i] == word(t.seq, i))
}

/// Fills a reserved slot field by field (so a kill can land between the fields).
fn write_fields(slot: &mut Tick, seq: u64) {
    let t = tick(seq);
    slot.seq = t.seq;
    for i in 0..6 {
        slot.words[i] = t.words[i];
    }
    slot.sum = t.sum;
}

// --- one process ---------------------------------------------------------------------

#[test]
fn lossless_basics_full_disconnected_and_info() {
    let g = Guard::new(PREFIX, "basic");
    let feed = Broadcast::<u64>::create(&g.name, 4, Policy::Lossless).unwrap();
    assert_eq!(feed.info().kind, Kind::Broadcast);
    assert_eq!(feed.policy(), Policy::Lossless);
    let mut a = feed.subscribe(Start::Newest).unwrap();
    assert_eq!(a.try_recv(), Err(BroadcastTryRecvError::Empty));
    assert_eq!(a.publisher_state(), PeerState::NotYetConnected);
    let mut tx = feed.publisher().unwrap();
    assert!(matches!(feed.publisher(), Err(Error::RoleTaken { .. })));
    let mut b = feed.subscribe(Start::Newest).unwrap();
    assert_eq!(tx.subscribers(), 2);
    for v in 0..4 {
        tx.try_send(v).unwrap();
    }
    assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
    assert_eq!(tx.reserve().err(), Some(ReserveError::Full));
    // `a` reads everything; `b` is still a ring behind: the publisher waits for it.
    for v in 0..4 {
        assert_eq!(a.try_recv(), Ok(v));
    }
    assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
    let t = Instant::now();
    assert!(matches!(
        tx.send_timeout(9, Duration::from_millis(30)),
        Err(SendTimeoutError::Timeout(9))
    ));
    assert!(t.elapsed() >= Duration::from_millis(30));
    // In place, and batches.
    let m = b.peek().unwrap();
    assert_eq!(*m, 0);
    drop(m); // not released: still there
    let batch = b.peek_many(10).unwrap();
    assert_eq!(batch.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    batch.release_n(3).unwrap();
    let mut w = tx.reserve_many(8).unwrap();
    assert_eq!(w.len(), 3, "b still holds position 3");
    w.fill_with(|i| 10 + i as u64);
    w.commit();
    let info = feed.info().broadcast.unwrap();
    assert_eq!((info.policy, info.tail, info.capacity), ("lossless", 7, 4));
    assert_eq!(info.subscribers.len(), 2);
    assert_eq!(info.publisher.holder_slot, Some(0));
    let lags: Vec<u64> = info.subscribers.iter().map(|s| s.lag).collect();
    assert_eq!(lags, vec![3, 4]);
    // A dropped subscriber stops counting.
    drop(b);
    tx.send(13);
    assert_eq!(a.recv(), Ok(10));
    drop(tx);
    assert_eq!(a.publisher_state(), PeerState::Closed);
    // Drained before Disconnected.
    assert_eq!(a.recv(), Ok(11));
    assert_eq!(a.recv(), Ok(12));
    assert_eq!(a.recv(), Ok(13));
    assert_eq!(a.recv(), Err(BroadcastRecvError::Disconnected));
    assert_eq!(a.try_recv(), Err(BroadcastTryRecvError::Disconnected));
    let t = Instant::now();
    assert_eq!(
        a.recv_timeout(Duration::from_secs(5)),
        Err(BroadcastRecvTimeoutError::Disconnected)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // A successor publisher continues the sequence.
    let mut tx = feed.publisher().unwrap();
    assert_eq!(tx.position(), 8);
    tx.send(14);
    assert_eq!(a.recv(), Ok(14));
    drop((tx, a, feed));
    assert_gone(&g.name);
}

#[test]
fn lossy_lagged_counts_exactly_and_resumes_at_the_oldest() {
    let g = Guard::new(PREFIX, "lag");
    let feed = Broadcast::<Tick>::create(&g.name, 4, Policy::Lossy).unwrap();
    let mut tx = feed.publisher().unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    for s in 0..10 {
        tx.try_send(tick(s)).unwrap(); // never full
    }
    assert_eq!(rx.lag(), 10);
    assert_eq!(rx.try_recv(), Err(BroadcastTryRecvError::Lagged(6)));
    for s in 6..10 {
        assert_eq!(rx.try_recv(), Ok(tick(s)), "oldest left first");
    }
    assert_eq!(rx.try_recv(), Err(BroadcastTryRecvError::Empty));
    assert_eq!(feed.info().broadcast.unwrap().subscribers[0].lagged, 6);
    // Blocking forms report it too.
    for s in 10..15 {
        tx.send(tick(s));
    }
    assert_eq!(rx.recv(), Err(BroadcastRecvError::Lagged(1)));
    assert_eq!(rx.recv().unwrap().seq, 11);
    drop((tx, rx, feed));
    assert_gone(&g.name);
}

#[test]
fn lossy_in_place_read_overwritten_during_the_read_is_reported() {
    let g = Guard::new(PREFIX, "torn");
    let feed = Broadcast::<Tick>::create(&g.name, 2, Policy::Lossy).unwrap();
    let mut tx = feed.publisher().unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    tx.send(tick(0));
    tx.send(tick(1));
    let m = rx.peek().unwrap();
    assert_eq!(m.seq, 0);
    // The publisher laps the reader while it holds message 0 in place.
    tx.send(tick(2));
    assert_eq!(m.seq, 2, "the bytes under the guard changed");
    assert_eq!(m.release(), Err(Lagged(1)), "never reported good");
    assert_eq!(rx.try_recv(), Ok(tick(1)));
    // A batch: overwritten in part, reported as a whole.
    tx.send(tick(3));
    let batch = rx.peek_many(2).unwrap();
    assert_eq!(batch.len(), 2);
    tx.send(tick(4));
    assert_eq!(batch.release(), Err(Lagged(2)));
    assert_eq!(rx.try_recv(), Ok(tick(4)));
    // An overwrite that does not touch the message read leaves it good.
    let m = rx.peek();
    assert!(matches!(m, Err(BroadcastTryRecvError::Empty)));
    tx.send(tick(5));
    let m = rx.peek().unwrap();
    tx.send(tick(6));
    assert_eq!(m.release(), Ok(()));
    drop((tx, rx, feed));
    assert_gone(&g.name);
}

#[test]
fn late_joiners_start_at_the_newest_or_the_oldest() {
    for policy in [Policy::Lossless, Policy::Lossy] {
        let g = Guard::new(PREFIX, "join");
        let feed = Broadcast::<u64>::create(&g.name, 4, policy).unwrap();
        let mut tx = feed.publisher().unwrap();
        for v in 0..6 {
            tx.send(v); // no subscriber: a lossless publisher does not wait either
        }
        let mut newest = feed.subscribe(Start::Newest).unwrap();
        let mut oldest = feed.subscribe(Start::Oldest).unwrap();
        assert_eq!(newest.try_recv(), Err(BroadcastTryRecvError::Empty));
        let first = oldest.try_recv().unwrap();
        assert!(
            (2..6).contains(&first),
            "{policy:?}: oldest starts within the last ring, got {first}"
        );
        tx.send(6);
        assert_eq!(newest.try_recv(), Ok(6));
        let rest: Vec<u64> = std::iter::from_fn(|| oldest.try_recv().ok()).collect();
        assert_eq!(rest, (first + 1..=6).collect::<Vec<_>>(), "{policy:?}");
        // Lossless: an oldest joiner starts where the slowest live subscriber is.
        tx.send(7);
        let mut third = feed.subscribe(Start::Oldest).unwrap();
        let got: Vec<u64> = std::iter::from_fn(|| third.try_recv().ok()).collect();
        assert!(
            got.len() <= 4 && got.last() == Some(&7),
            "{policy:?}: at most a ring back, in order to the end: {got:?}"
        );
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        drop((tx, newest, oldest, third, feed));
        assert_gone(&g.name);
    }
}

#[test]
fn byte_broadcast_round_trips_and_checks_lengths() {
    let g = Guard::new(PREFIX, "bytes");
    let feed = ByteBroadcast::create(&g.name, 4, 16, Policy::Lossless).unwrap();
    assert_eq!(feed.info().kind, Kind::ByteBroadcast);
    let mut tx = feed.publisher().unwrap();
    let mut a = feed.subscribe(Start::Newest).unwrap();
    let mut b = feed.subscribe(Start::Newest).unwrap();
    assert!(matches!(
        tx.try_send(&[0; 17]),
        Err(ReserveError::TooLong { len: 17, max: 16 })
    ));
    tx.try_send(b"hello").unwrap();
    let mut slot = tx.reserve_wait(3).unwrap();
    slot.copy_from_slice(b"abc");
    slot.commit();
    let m = a.peek_wait().unwrap();
    assert_eq!(&*m, b"hello");
    m.release().unwrap();
    let mut buf = Vec::new();
    b.try_recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
    b.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"abc");
    a.recv_timeout_into(&mut buf, Duration::from_secs(1))
        .unwrap();
    assert_eq!(buf, b"abc");
    assert!(matches!(
        ByteBroadcast::open_or_create(&g.name, 4, 16, Policy::Lossy, &Default::default()),
        Err(Error::LayoutMismatch { .. })
    ));
    let other = ByteBroadcast::open(&g.name).unwrap();
    assert_eq!(
        (other.max_message(), other.policy()),
        (16, Policy::Lossless)
    );
    assert!(matches!(
        Broadcast::<u64>::open(&g.name),
        Err(Error::KindMismatch { .. })
    ));
    drop((tx, a, b, other, feed));
    assert_gone(&g.name);
}

#[test]
fn threads_lossless_every_subscriber_gets_every_message_in_order() {
    const N: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let g = Guard::new(PREFIX, "threads");
    let feed = Broadcast::<Tick>::create(&g.name, 64, Policy::Lossless).unwrap();
    let subs: Vec<_> = (0..3)
        .map(|_| feed.subscribe(Start::Newest).unwrap())
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(k, mut rx)| {
            thread::spawn(move || {
                for s in 0..N {
                    let t = if k == 0 {
                        let m = rx.peek_wait().unwrap();
                        let t = *m;
                        m.release().unwrap();
                        t
                    } else {
                        rx.recv().unwrap()
                    };
                    assert!(intact(&t) && t.seq == s, "subscriber {k}: {t:?} at {s}");
                }
                assert_eq!(rx.recv(), Err(BroadcastRecvError::Disconnected));
            })
        })
        .collect();
    let mut tx = feed.publisher().unwrap();
    let mut s = 0;
    while s < N {
        if tx.reserve_many(16).is_err() {
            // Full: wait for one slot, then take what is free.
            drop(tx.reserve_wait());
        }
        let mut batch = tx.reserve_many(16).unwrap();
        let n = batch.len().min((N - s) as usize);
        for i in 0..n {
            *batch.slot(i) = tick(s + i as u64);
        }
        batch.commit_n(n);
        s += n as u64;
    }
    drop(tx);
    for r in readers {
        r.join().unwrap();
    }
    drop(feed);
    assert_gone(&g.name);
}

#[test]
fn threads_lossy_readers_see_whole_messages_or_lagged_counts() {
    const N: u64 = if cfg!(debug_assertions) {
        50_000
    } else {
        500_000
    };
    let g = Guard::new(PREFIX, "lossythreads");
    let feed = Broadcast::<Tick>::create(&g.name, 8, Policy::Lossy).unwrap();
    let subs: Vec<_> = (0..2)
        .map(|_| feed.subscribe(Start::Newest).unwrap())
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(k, mut rx)| thread::spawn(move || lossy_drain(&mut rx, N, k == 0)))
        .collect();
    let mut tx = feed.publisher().unwrap();
    for s in 0..N {
        let mut slot = tx.reserve().unwrap();
        write_fields(&mut slot, s);
        slot.commit();
    }
    drop(tx);
    for r in readers {
        let (good, lagged) = r.join().unwrap();
        assert_eq!(good + lagged, N, "every message read or counted as missed");
    }
    drop(feed);
    assert_gone(&g.name);
}

/// Reads a lossy feed of `n` ticks to the end: every message accepted is intact and
/// the next in sequence after what was accepted or reported lagged. Returns (accepted,
/// lagged).
fn lossy_drain(rx: &mut tally::Subscriber<Tick>, n: u64, in_place: bool) -> (u64, u64) {
    let (mut good, mut lagged, mut next) = (0, 0, 0);
    loop {
        let got = if in_place {
            match rx.peek_wait() {
                Ok(m) => {
                    let t = *m;
                    m.release()
                        .map(|()| t)
                        .map_err(|Lagged(k)| BroadcastRecvError::Lagged(k))
                }
                Err(e) => Err(e),
            }
        } else {
            rx.recv()
        };
        match got {
            Ok(t) => {
                assert!(intact(&t), "torn message delivered as good: {t:?}");
                assert_eq!(t.seq, next, "out of order");
                good += 1;
                next += 1;
            }
            Err(BroadcastRecvError::Lagged(k)) => {
                lagged += k;
                next += k;
            }
            Err(BroadcastRecvError::Disconnected) => break,
        }
    }
    assert_eq!(next, n);
    (good, lagged)
}

// --- children --------------------------------------------------------------------------

/// Child: a lossless subscriber that reads `arg` ticks (recv, or peek/release in place
/// when arg is odd), checking each, and reports `done <count>`.
#[test]
fn child_reader() {
    let Some((name, n)) = child_args("child_reader") else {
        return;
    };
    let feed = Broadcast::<Tick>::open(&name).unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    say("ready");
    for s in 0..n {
        let t = if n % 2 == 1 {
            let m = rx.peek_wait().unwrap();
            let t = *m;
            m.release().unwrap();
            t
        } else {
            rx.recv().unwrap()
        };
        assert!(intact(&t) && t.seq == s, "{t:?} at {s}");
    }
    say(format!("done {n}"));
    hang();
}

/// Child: a subscriber that reads `arg` ticks, then holds the next message in place
/// (mid-read) and waits to be killed.
#[test]
fn child_dies_mid_read() {
    let Some((name, n)) = child_args("child_dies_mid_read") else {
        return;
    };
    let feed = Broadcast::<Tick>::open(&name).unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    say("ready");
    for _ in 0..n {
        rx.recv().unwrap();
    }
    let _held = rx.peek_wait().unwrap();
    say("holding");
    hang();
}

/// Child: as `child_dies_mid_read`, holding a batch.
#[test]
fn child_dies_mid_batch() {
    let Some((name, n)) = child_args("child_dies_mid_batch") else {
        return;
    };
    let feed = Broadcast::<Tick>::open(&name).unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    say("ready");
    for _ in 0..n {
        rx.recv().unwrap();
    }
    while rx.peek_many(4).map(|b| b.len()).unwrap_or(0) < 4 {
        thread::yield_now();
    }
    let _held = rx.peek_many(4).unwrap();
    say("holding");
    hang();
}

/// Child: a publisher that sends ticks numbered by position for ever, each written
/// field by field in place (a kill lands anywhere, mid-commit included).
#[test]
fn child_publisher() {
    let Some((name, _)) = child_args("child_publisher") else {
        return;
    };
    let feed = Broadcast::<Tick>::open(&name).unwrap();
    let mut tx = feed.publisher().unwrap();
    say(format!("from {}", tx.position()));
    loop {
        let s = tx.position();
        let mut slot = tx.reserve_wait();
        write_fields(&mut slot, s);
        slot.commit();
    }
}

/// Child: a publisher that sends `arg` ticks, then reserves the next, writes half of
/// it, and waits to be killed (mid-commit).
#[test]
fn child_publisher_dies_mid_commit() {
    let Some((name, n)) = child_args("child_publisher_dies_mid_commit") else {
        return;
    };
    let feed = Broadcast::<Tick>::open(&name).unwrap();
    let mut tx = feed.publisher().unwrap();
    for _ in 0..n {
        let s = tx.position();
        tx.send(tick(s));
    }
    let mut slot = tx.reserve_wait();
    slot.seq = n;
    slot.words[0] = 0xdead;
    say("mid");
    hang();
}

// --- crashes ----------------------------------------------------------------------------

/// Lossless: two subscribers killed mid-read and mid-batch stop holding the publisher
/// back within a bound, while two live subscribers (in other processes) see every
/// message exactly once, in order, intact.
#[test]
fn lossless_subscribers_killed_mid_read_stop_holding_the_publisher() {
    const N: u64 = 20_001;
    const CAP: usize = 64;
    let g = Guard::new(PREFIX, "killsub");
    let feed = Broadcast::<Tick>::create(&g.name, CAP, Policy::Lossless).unwrap();
    let mut tx = feed.publisher().unwrap();
    let mut live = [
        Kid::spawn("child_reader", &g.name, N),
        Kid::spawn("child_reader", &g.name, N - 1),
    ];
    // Killed in this order: the batch holder is the slowest (position 50), then the
    // reader holding message 100.
    let mut doomed = [
        Kid::spawn("child_dies_mid_batch", &g.name, 50),
        Kid::spawn("child_dies_mid_read", &g.name, 100),
    ];
    for k in live.iter_mut().chain(doomed.iter_mut()) {
        k.expect("ready", Duration::from_secs(10));
    }
    assert!(tx.wait_for_subscribers(4, Duration::from_secs(10)));
    let stuck_at = Arc::new(AtomicU64::new(0));
    let stuck = stuck_at.clone();
    let sender = thread::spawn(move || {
        for s in 0..N {
            tx.send(tick(s));
            stuck.store(s + 1, Ordering::Relaxed);
        }
        tx
    });
    for k in doomed.iter_mut() {
        k.expect("holding", Duration::from_secs(10));
    }
    // The publisher is held back by the slowest: a ring past its position.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stuck_at.load(Ordering::Relaxed) < 50 + CAP as u64 {
        assert!(
            Instant::now() < deadline,
            "publisher never reached the stuck reader"
        );
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        stuck_at.load(Ordering::Relaxed),
        50 + CAP as u64,
        "held back by the live (if stuck) batch holder"
    );
    let mut released = Vec::new();
    for k in doomed.iter_mut() {
        // Held here (checked above for the first; the second holds it a ring past its
        // read once the first is gone): read before the kill, which may release it at once.
        let was = wait_stuck(&stuck_at);
        let killed = k.kill();
        while stuck_at.load(Ordering::Relaxed) <= was {
            assert!(
                killed.elapsed() < Duration::from_secs(2),
                "a dead subscriber held the publisher for 2 s (kid {}, at {was}): {:?}",
                k.role,
                feed.info()
            );
            thread::yield_now();
        }
        released.push(killed.elapsed());
    }
    say(format!(
        "publisher released after subscriber kills: {released:?}"
    ));
    eprintln!(
        "broadcast kill figures: publisher released {released:?} after each subscriber SIGKILL"
    );
    let tx = sender.join().unwrap();
    for (k, n) in live.iter_mut().zip([N, N - 1]) {
        assert_eq!(k.expect("done", Duration::from_secs(60)), n.to_string());
    }
    let info = feed.info().broadcast.unwrap();
    assert_eq!(info.dropped_dead, 2, "both dead cursors dropped: {info:?}");
    drop((tx, live, feed));
    assert_gone(&g.name);
}

/// Waits until the publisher's progress counter stops moving for 50 ms; returns it.
fn wait_stuck(progress: &AtomicU64) -> u64 {
    let mut last = progress.load(Ordering::Relaxed);
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = progress.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A stopped subscriber holds a lossless publisher back (no false death), and lets it
/// go on when it continues.
#[test]
fn stopped_subscriber_holds_the_publisher_back() {
    const CAP: usize = 8;
    let g = Guard::new(PREFIX, "stopped");
    let feed = Broadcast::<Tick>::create(&g.name, CAP, Policy::Lossless).unwrap();
    let mut tx = feed.publisher().unwrap();
    let mut kid = Kid::spawn("child_reader", &g.name, 100);
    kid.expect("ready", Duration::from_secs(10));
    assert!(tx.wait_for_subscribers(1, Duration::from_secs(10)));
    kid.stop();
    for s in 0..CAP as u64 {
        tx.send(tick(s));
    }
    // Many sleep slices (each probes liveness): still held back.
    assert!(matches!(
        tx.send_timeout(tick(CAP as u64), Duration::from_millis(300)),
        Err(SendTimeoutError::Timeout(_))
    ));
    assert_eq!(feed.info().broadcast.unwrap().subscribers.len(), 1);
    assert_eq!(
        feed.sweep().unwrap().reclaimed,
        0,
        "a stopped holder is alive"
    );
    let pid = kid.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own unreaped child.
    let rc = unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(rc, 0);
    for s in CAP as u64..100 {
        tx.send(tick(s));
    }
    assert_eq!(kid.expect("done", Duration::from_secs(10)), "100");
    drop((tx, kid, feed));
    assert_gone(&g.name);
}

/// Publishers killed at arbitrary points (mid-commit included) and successors: a
/// subscriber sees one unbroken sequence, every message intact, exactly once.
#[test]
fn publishers_killed_mid_commit_successors_continue() {
    for policy in [Policy::Lossless, Policy::Lossy] {
        let g = Guard::new(PREFIX, "killpub");
        let feed = Broadcast::<Tick>::create(&g.name, 16, policy).unwrap();
        let mut rx = feed.subscribe(Start::Newest).unwrap();
        let end = Arc::new(AtomicU64::new(u64::MAX));
        let seen = Arc::new(Mutex::new((0u64, 0u64))); // (good, lagged)
        let (e, s2) = (end.clone(), seen.clone());
        let reader = thread::spawn(move || {
            let mut next = 0;
            while next < e.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(t) => {
                        assert!(intact(&t), "{policy:?}: torn message delivered: {t:?}");
                        assert_eq!(t.seq, next, "{policy:?}: out of sequence");
                        next += 1;
                        s2.lock().unwrap().0 += 1;
                    }
                    Err(BroadcastRecvTimeoutError::Lagged(k)) => {
                        assert_eq!(policy, Policy::Lossy, "lossless never lags");
                        next += k;
                        s2.lock().unwrap().1 += k;
                    }
                    Err(_) => {}
                }
            }
            next
        });
        let mut starts = Vec::new();
        for round in 0..4u64 {
            let mut kid = Kid::spawn("child_publisher", &g.name, 0);
            starts.push(kid.expect("from", Duration::from_secs(10)));
            // Let it run a while, then kill it wherever it is.
            let target = feed.info().broadcast.unwrap().tail + 2_000 + round * 777;
            let deadline = Instant::now() + Duration::from_secs(20);
            while feed.info().broadcast.unwrap().tail < target {
                assert!(Instant::now() < deadline, "publisher made no progress");
                thread::sleep(Duration::from_millis(1));
            }
            kid.kill();
        }
        // The last successor is the parent: it continues the sequence after a sweep.
        let mut tx = feed.publisher().unwrap();
        let last = tx.position();
        for _ in 0..100 {
            let s = tx.position();
            tx.send(tick(s));
        }
        end.store(last + 100, Ordering::Relaxed);
        drop(tx);
        let next = reader.join().unwrap();
        assert_eq!(next, last + 100, "{policy:?}: the reader reached the end");
        let (good, lagged) = *seen.lock().unwrap();
        assert_eq!(
            good + lagged,
            next,
            "{policy:?}: every position accounted for"
        );
        if policy == Policy::Lossless {
            assert_eq!(lagged, 0);
        }
        eprintln!(
            "broadcast kill figures ({policy:?}): 4 publishers killed, successors started at {starts:?}, {good} delivered, {lagged} lagged"
        );
        let positions: Vec<u64> = starts.iter().map(|s| s.parse().unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        drop(feed);
        assert_gone(&g.name);
    }
}

/// A publisher killed with a half-written reservation: the blocked subscriber wakes
/// with `Disconnected` after draining what was committed, never sees the half-written
/// message, and reads the successor's message at that position.
#[test]
fn publisher_death_wakes_subscribers_with_disconnected_after_draining() {
    let g = Guard::new(PREFIX, "pubdeath");
    let feed = Broadcast::<Tick>::create(&g.name, 8, Policy::Lossless).unwrap();
    let mut rx = feed.subscribe(Start::Newest).unwrap();
    let mut kid = Kid::spawn("child_publisher_dies_mid_commit", &g.name, 5);
    kid.expect("mid", Duration::from_secs(10));
    let waiter = thread::spawn(move || {
        let got: Vec<u64> = (0..5).map(|_| rx.recv().unwrap().seq).collect();
        let t = Instant::now();
        let end = rx.recv();
        (rx, got, end, t.elapsed())
    });
    thread::sleep(Duration::from_millis(20));
    let killed = kid.kill();
    let (mut rx, got, end, _) = waiter.join().unwrap();
    let woke = killed.elapsed();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(end, Err(BroadcastRecvError::Disconnected));
    assert!(
        woke < Duration::from_secs(1),
        "woke {woke:?} after the kill"
    );
    eprintln!(
        "broadcast kill figures: blocked subscriber woke Disconnected {woke:?} after the publisher's SIGKILL"
    );
    assert_eq!(rx.publisher_state(), PeerState::Crashed);
    let mut tx = feed.publisher().unwrap();
    assert_eq!(
        tx.position(),
        5,
        "the half-written message was never committed"
    );
    tx.send(tick(5));
    assert_eq!(rx.recv().unwrap(), tick(5));
    let info = feed.info().broadcast.unwrap();
    assert_eq!(info.publisher.claims, 2);
    drop((tx, rx, feed));
    assert_gone(&g.name);
}

/// The sweep drops a dead subscriber's cursor (and its sleeper count) with no publisher
/// waiting; the cursor lines are bounded by the holder table and come back.
#[test]
fn sweep_drops_dead_subscribers_and_lines_are_bounded() {
    let g = Guard::new(PREFIX, "sweepsub");
    let opts = tally::Options::default().holders(3);
    let feed = Broadcast::<Tick>::create_with(&g.name, 8, Policy::Lossless, &opts).unwrap();
    let mut kid = Kid::spawn("child_reader", &g.name, 10);
    kid.expect("ready", Duration::from_secs(10));
    let _a = feed.subscribe(Start::Newest).unwrap();
    let b = feed.subscribe(Start::Newest).unwrap();
    assert!(matches!(
        feed.subscribe(Start::Newest),
        Err(Error::TableFull { capacity: 3, .. })
    ));
    drop(b);
    let b = feed.subscribe(Start::Oldest).unwrap();
    assert_eq!(feed.info().broadcast.unwrap().subscribers.len(), 3);
    kid.kill();
    assert_eq!(feed.sweep().unwrap().reclaimed, 1);
    let info = feed.info().broadcast.unwrap();
    assert_eq!((info.subscribers.len(), info.dropped_dead), (2, 1));
    let _c = feed.subscribe(Start::Newest).unwrap();
    drop((b, feed));
    drop(_a);
    drop(_c);
    assert_gone(&g.name);
}

/// Every cursor line and slot overwritten with garbage under live handles (P6): no
/// panic, no hang, no read outside the mapping; a lossless publisher drops lines that
/// name no live holder, and a lossy reader is told it lagged rather than handed a
/// message the sequence words do not vouch for.
#[test]
fn garbage_cursors_and_slots_give_wrong_data_never_a_crash() {
    use std::os::unix::fs::FileExt;
    for policy in [Policy::Lossless, Policy::Lossy] {
        let g = Guard::new(PREFIX, "garbage");
        let feed = Broadcast::<Tick>::create(&g.name, 8, policy).unwrap();
        let mut tx = feed.publisher().unwrap();
        let mut rx = feed.subscribe(Start::Newest).unwrap();
        for s in 0..4 {
            tx.send(tick(s));
        }
        let path = common::shm_path(&g.name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, 32).unwrap(); // the segment header's object offset
        let object = u64::from_ne_bytes(word);
        let len = file.metadata().unwrap().len();
        // Past the broadcast header (512 bytes): the cursor lines and the slots.
        let from = object + 512;
        file.write_all_at(&vec![0xab; (len - from) as usize], from)
            .unwrap();
        for _ in 0..100 {
            let _ = tx.try_send(tick(9));
            let _ = rx.try_recv();
            let _ = rx.recv_timeout(Duration::from_millis(1));
        }
        let _ = tx.send_timeout(tick(9), Duration::from_millis(50));
        let info = feed.info().broadcast.unwrap();
        assert_eq!(info.policy, policy.as_str());
        drop((tx, rx));
        // A fresh subscriber and publisher still work on the repaired cursor lines.
        let mut rx = feed.subscribe(Start::Newest).unwrap();
        let mut tx = feed.publisher().unwrap();
        let _ = tx.send_timeout(tick(100), Duration::from_millis(50));
        let _ = rx.try_recv();
        drop((tx, rx, feed));
        assert_gone(&g.name);
    }
}
