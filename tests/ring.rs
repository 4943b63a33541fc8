//! The SPSC ring from outside the crate: the hot path in one process, blocking waits
//! across threads, and producers and consumers SIGKILLed in child processes.
//!
//! Child processes are this test binary re-executed with `--exact <child fn>`: a
//! `child_*` test returns at once unless `TALLY_TEST_ROLE` names it. Children
//! report progress as tagged lines on stdout (`ready`, `committed N`, `reserved`,
//! `peeked V`), which the parent reads with a deadline; nothing here sleeps in place of
//! synchronising. Every test uses its own name and leaves nothing in /dev/shm: a
//! [`Guard`] removes the name and a [`Kid`] SIGKILLs and reaps its child, even when an
//! assertion fails.

use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use tally::{
    ByteRing, Error, Kind, Options, RecvError, RecvTimeoutError, Region, ReserveError,
    ReserveTimeoutError, Ring, SendError, SendTimeoutError, TryRecvError, TrySendError, admin,
};

mod common;
use common::{
    Guard, Kid, Rng, assert_err, assert_gone, child_args, hang, say, shm_exists, shm_path, unique,
};

/// Prefix of this file's object names.
const PREFIX: &str = "rt";

/// (live, dead) holders of `name`, as a process holding no slot sees them.
fn holders(name: &str) -> (usize, usize) {
    let info = admin::inspect(name).expect("inspect");
    let live = info.holders.iter().filter(|h| h.alive).count();
    (live, info.holders.len() - live)
}

// --- child processes ------------------------------------------------------------------

// --- threads --------------------------------------------------------------------------

fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is asleep in a futex wait (where the ring's
/// blocking calls sleep). Falls back to "sleeping" when /proc hides the syscall.
fn asleep_in_futex(tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) {
        Ok(s) => s.split_whitespace().next() == Some(&libc::SYS_futex.to_string()),
        Err(_) => std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .and_then(|s| {
                let after_comm = &s[s.rfind(')')? + 1..];
                after_comm.split_whitespace().next().map(|st| st == "S")
            })
            .unwrap_or(false),
    }
}

/// Polls until thread `tid` sleeps in a futex, so the wake-up that follows is tested.
fn wait_until_asleep(tid: i32, handle: &JoinHandle<impl Sized>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !asleep_in_futex(tid) {
        assert!(
            !handle.is_finished(),
            "{what}: returned instead of blocking"
        );
        assert!(
            Instant::now() < deadline,
            "{what}: thread {tid} never went to sleep"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !handle.is_finished(),
        "{what}: returned instead of blocking"
    );
}

/// Joins `handle`, failing (instead of hanging) if it has not finished within `limit`.
fn join_within<T>(handle: JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: still blocked after {limit:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    handle
        .join()
        .unwrap_or_else(|_| panic!("{what}: thread panicked"))
}

// --- 1. in-process basics -------------------------------------------------------------

#[test]
fn try_send_try_recv_keep_order_over_many_laps() {
    const TOTAL: u64 = 10_000;
    let g = Guard::new(PREFIX, "laps");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    assert_eq!(ring.capacity(), 8);
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert!(rx.is_empty());
    assert_eq!(tx.free_slots(), 8);

    let mut rng = Rng(0x5eed_1234);
    let (mut next_send, mut next_recv, mut fulls) = (0u64, 0u64, 0u32);
    while next_recv < TOTAL {
        // A burst that may run into a full ring; Full hands the value back.
        for _ in 0..rng.below(11) {
            if next_send == TOTAL {
                break;
            }
            let value = next_send * 3 + 1;
            match tx.try_send(value) {
                Ok(()) => next_send += 1,
                Err(TrySendError::Full(back)) => {
                    assert_eq!(back, value, "Full must hand back the value");
                    assert_eq!(next_send - next_recv, 8, "Full before the ring was full");
                    assert_eq!(tx.free_slots(), 0);
                    fulls += 1;
                    break;
                }
                Err(e) => panic!("try_send({value}): {e:?}"),
            }
        }
        assert_eq!(rx.len() as u64, next_send - next_recv);
        for _ in 0..rng.below(11) {
            match rx.try_recv() {
                Ok(v) => {
                    assert_eq!(v, next_recv * 3 + 1, "message {next_recv} out of order");
                    next_recv += 1;
                }
                Err(TryRecvError::Empty) => {
                    assert_eq!(next_recv, next_send, "Empty with messages committed");
                    break;
                }
                Err(e) => panic!("try_recv: {e:?}"),
            }
        }
    }
    assert_eq!(next_send, TOTAL);
    assert!(fulls > 10, "the test never filled the ring ({fulls} times)");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(tx.free_slots(), 8);

    // Exactly `capacity` fit, then Full hands the value back.
    for v in 0..8 {
        tx.try_send(v).unwrap();
    }
    match tx.try_send(99) {
        Err(TrySendError::Full(99)) => {}
        other => panic!("try_send on a full ring: {other:?}"),
    }
    assert_eq!(rx.len(), 8);
    for v in 0..8 {
        assert_eq!(rx.try_recv(), Ok(v));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable, tally::Message)]
#[repr(C)]
struct Sample {
    seq: u64,
    vals: [u32; 6],
}

#[test]
fn reserve_commit_peek_release_in_place() {
    let g = Guard::new(PREFIX, "inplace");
    let ring = Ring::<Sample>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();

    // Several laps of in-place writes and reads.
    for seq in 0..20u64 {
        let mut slot = tx.reserve().unwrap();
        slot.seq = seq;
        for (i, v) in slot.vals.iter_mut().enumerate() {
            *v = (seq as u32) * 10 + i as u32;
        }
        assert_eq!(
            rx.peek().err(),
            Some(TryRecvError::Empty),
            "visible before commit"
        );
        slot.commit();
        let msg = rx.peek().unwrap();
        assert_eq!(msg.seq, seq);
        assert_eq!(
            msg.vals,
            std::array::from_fn(|i| seq as u32 * 10 + i as u32)
        );
        msg.release();
        assert_eq!(
            rx.peek().err(),
            Some(TryRecvError::Empty),
            "released twice?"
        );
    }

    // A full ring refuses a reservation, and a release makes room.
    for seq in 0..4 {
        let mut slot = tx.reserve().unwrap();
        *slot = Sample { seq, vals: [0; 6] };
        slot.commit();
    }
    assert_eq!(tx.reserve().err(), Some(ReserveError::Full));
    rx.peek().unwrap().release();
    tx.reserve().unwrap().commit();
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn dropped_write_slot_publishes_nothing() {
    let g = Guard::new(PREFIX, "dropwrite");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();

    {
        let mut slot = tx.reserve().unwrap();
        *slot = 0xdead;
    } // dropped without commit
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        tx.free_slots(),
        4,
        "an abandoned reservation still holds a slot"
    );

    // The next message takes that slot; the abandoned value never shows.
    tx.try_send(1).unwrap();
    {
        let mut slot = tx.reserve().unwrap();
        *slot = 0xbeef;
    }
    tx.try_send(2).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn dropped_read_slot_leaves_the_message() {
    let g = Guard::new(PREFIX, "dropread");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    for v in [7, 8] {
        tx.try_send(v).unwrap();
    }

    for _ in 0..3 {
        let msg = rx.peek().unwrap();
        assert_eq!(*msg, 7);
        // dropped without release
    }
    assert_eq!(rx.len(), 2);
    // Unreleased messages keep their slots.
    assert_eq!(tx.free_slots(), 2);
    rx.peek().unwrap().release();
    assert_eq!(tx.free_slots(), 3);
    assert_eq!(*rx.peek().unwrap(), 8);
    assert_eq!(rx.try_recv(), Ok(8));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn batches_commit_n_and_release_n() {
    let g = Guard::new(PREFIX, "batch");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.peek_many(4).err(), Some(TryRecvError::Empty));

    // Start at position 6 so the batches below straddle the wrap.
    for v in 0..6 {
        tx.try_send(v).unwrap();
    }
    let batch = rx.peek_many(100).unwrap();
    assert_eq!(batch.len(), 6);
    assert_eq!(
        batch.iter().copied().collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    batch.release();

    // reserve_many gives what is free, up to max; commit_n publishes a prefix only.
    let mut batch = tx.reserve_many(5).unwrap();
    assert_eq!(batch.len(), 5);
    batch.fill_with(|i| 100 + i as u64);
    *batch.slot(3) = 0xdead; // inside the part that will not be committed
    *batch.slot(4) = 0xdead;
    batch.commit_n(3);
    assert_eq!(rx.len(), 3);
    assert_eq!(tx.free_slots(), 5);

    let mut batch = tx.reserve_many(100).unwrap();
    assert_eq!(batch.len(), 5, "reserve_many gives every free slot");
    for i in 0..5 {
        *batch.slot(i) = 103 + i as u64;
    }
    batch.commit();
    assert_eq!(tx.reserve_many(1).err(), Some(ReserveError::Full));
    assert_eq!(rx.len(), 8);

    // peek_many(max) gives at most max; release_n frees a prefix only.
    let batch = rx.peek_many(3).unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(*batch.get(0), 100);
    assert_eq!(*batch.get(2), 102);
    batch.release_n(2);
    let batch = rx.peek_many(100).unwrap();
    assert_eq!(
        batch.iter().copied().collect::<Vec<_>>(),
        (102..108).collect::<Vec<_>>(),
        "release_n(2) freed the wrong prefix, or uncommitted slots leaked"
    );
    batch.release_n(1_000); // clamps to the batch
    assert_eq!(rx.peek_many(1).err(), Some(TryRecvError::Empty));
    assert_eq!(tx.free_slots(), 8);

    // commit_n(0) publishes nothing.
    let batch = tx.reserve_many(2).unwrap();
    batch.commit_n(0);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn byte_ring_carries_every_length_and_refuses_longer() {
    const MAX: usize = 100;
    let g = Guard::new(PREFIX, "bytes");
    let ring = ByteRing::create(&g.name, 3, MAX).unwrap();
    assert_eq!(ring.capacity(), 4);
    assert_eq!(ring.max_message(), MAX);
    let other = ByteRing::open(&g.name).unwrap();
    assert_eq!((other.capacity(), other.max_message()), (4, MAX));
    let mut tx = ring.producer().unwrap();
    let mut rx = other.consumer().unwrap();
    let pattern = |len: usize| (0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<u8>>();

    let mut buf = Vec::new();
    let mut sent = 0;
    let mut received = 0;
    while received <= MAX {
        // Alternate zero-copy and copying on both sides.
        while sent <= MAX && sent - received < 4 {
            let msg = pattern(sent);
            if sent % 2 == 0 {
                tx.try_send(&msg).unwrap();
            } else {
                let mut slot = tx.reserve(sent).unwrap();
                assert_eq!(slot.len(), sent);
                slot.copy_from_slice(&msg);
                slot.commit();
            }
            sent += 1;
        }
        if received % 3 == 0 {
            let msg = rx.peek().unwrap();
            assert_eq!(&*msg, &pattern(received)[..], "message of {received} bytes");
            msg.release();
        } else {
            rx.try_recv_into(&mut buf).unwrap();
            assert_eq!(buf, pattern(received), "message of {received} bytes");
        }
        received += 1;
    }
    assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Empty));

    assert_eq!(
        tx.reserve(MAX + 1).err(),
        Some(ReserveError::TooLong {
            len: MAX + 1,
            max: MAX
        })
    );
    assert_eq!(
        tx.try_send(&[0; MAX + 1]),
        Err(ReserveError::TooLong {
            len: MAX + 1,
            max: MAX
        })
    );
    assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Empty));

    // Full, then a blocking send times out with Timeout, not Full.
    for _ in 0..4 {
        tx.try_send(b"x").unwrap();
    }
    assert_eq!(tx.try_send(b"y"), Err(ReserveError::Full));
    assert_eq!(
        tx.send_timeout(b"y", Duration::from_millis(20)),
        Err(ReserveTimeoutError::Timeout)
    );
    drop((tx, rx, ring, other));
    assert_gone(&g.name);
}

#[test]
fn capacity_rounds_up_to_a_power_of_two() {
    for (asked, got) in [
        (1, 1),
        (2, 2),
        (3, 4),
        (5, 8),
        (8, 8),
        (9, 16),
        (1000, 1024),
    ] {
        let g = Guard::new(PREFIX, "cap");
        let ring = Ring::<u64>::create(&g.name, asked).unwrap();
        assert_eq!(ring.capacity(), got, "capacity {asked}");
        // The rounded capacity is real: exactly `got` messages fit.
        let mut tx = ring.producer().unwrap();
        for v in 0..got as u64 {
            tx.try_send(v)
                .unwrap_or_else(|e| panic!("capacity {asked}: message {v}: {e:?}"));
        }
        assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));
        drop((tx, ring));
        assert_gone(&g.name);
    }
    let g = Guard::new(PREFIX, "cap0");
    assert_err!(Ring::<u64>::create(&g.name, 0), Error::InvalidArgument(_));
    assert_err!(
        Ring::<u64>::create(&g.name, (1 << 30) + 1),
        Error::InvalidArgument(_)
    );
    assert_err!(ByteRing::create(&g.name, 4, 0), Error::InvalidArgument(_));
    assert!(!shm_exists(&g.name), "a refused create left a segment");
}

#[test]
fn opening_with_another_payload_or_kind_is_a_typed_error() {
    let g = Guard::new(PREFIX, "mismatch");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();

    let e = assert_err!(Ring::<u32>::open(&g.name), Error::LayoutMismatch { .. });
    let Error::LayoutMismatch { name, .. } = e else {
        unreachable!()
    };
    assert_eq!(name, g.name);
    // Same size and alignment, another type: still refused.
    assert_err!(Ring::<i64>::open(&g.name), Error::LayoutMismatch { .. });
    assert_err!(
        ByteRing::open(&g.name),
        Error::KindMismatch {
            expected: Kind::ByteRing,
            found: Kind::SpscRing,
            ..
        }
    );
    assert_err!(
        Region::open(&g.name),
        Error::KindMismatch {
            expected: Kind::Bytes,
            found: Kind::SpscRing,
            ..
        }
    );
    // The right type opens, and the failed opens left no holder behind.
    let same = Ring::<u64>::open(&g.name).unwrap();
    assert_eq!(ring.info().holders.len(), 2);
    drop((same, ring));
    assert_gone(&g.name);

    let g2 = Guard::new(PREFIX, "mismatch-region");
    let region = Region::create(&g2.name, 4096).unwrap();
    assert_err!(
        Ring::<u64>::open(&g2.name),
        Error::KindMismatch {
            expected: Kind::SpscRing,
            found: Kind::Bytes,
            ..
        }
    );
    drop(region);
    assert_gone(&g2.name);
    assert_err!(Ring::<u64>::open(&g.name), Error::NotFound(_));
}

#[test]
fn roles_are_exclusive_and_a_successor_resumes() {
    let g = Guard::new(PREFIX, "roles");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let other = Ring::<u64>::open(&g.name).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = other.consumer().unwrap();

    // From the same handle and from another handle: taken while the holder lives.
    let e = assert_err!(ring.producer(), Error::RoleTaken { .. });
    assert!(matches!(e, Error::RoleTaken { role: "producer", ref name } if *name == g.name));
    assert_err!(
        other.producer(),
        Error::RoleTaken {
            role: "producer",
            ..
        }
    );
    assert_err!(
        ring.consumer(),
        Error::RoleTaken {
            role: "consumer",
            ..
        }
    );
    assert_err!(
        other.consumer(),
        Error::RoleTaken {
            role: "consumer",
            ..
        }
    );

    for v in 0..5 {
        tx.try_send(v).unwrap();
    }
    assert_eq!(rx.try_recv(), Ok(0));
    assert_eq!(rx.try_recv(), Ok(1));
    // An abandoned reservation at the moment the producer goes is not published.
    *tx.reserve().unwrap() = 0xdead;
    drop(tx);
    assert!(rx.is_disconnected());

    // A new producer, on the other handle this time, continues at position 5.
    let mut tx = other.producer().unwrap();
    assert!(!rx.is_disconnected());
    assert_err!(ring.producer(), Error::RoleTaken { .. });
    for v in 5..10 {
        tx.try_send(v).unwrap();
    }
    assert!(matches!(tx.try_send(10), Err(TrySendError::Full(10))));
    let mut got = Vec::new();
    while let Ok(v) = rx.try_recv() {
        got.push(v);
    }
    assert_eq!(
        got,
        (2..10).collect::<Vec<_>>(),
        "lost or duplicated across producers"
    );

    // Disconnected is not sticky: drained with no producer, then a producer again.
    drop(tx);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    let mut tx = ring.producer().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send(10).unwrap();
    assert_eq!(rx.try_recv(), Ok(10));

    // The consumer role passes on the same way, at the consumer's position.
    tx.try_send(11).unwrap();
    tx.try_send(12).unwrap();
    assert_eq!(rx.try_recv(), Ok(11));
    drop(rx);
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.try_recv(), Ok(12));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    drop((tx, rx, ring));
    assert!(shm_exists(&g.name), "unlinked while a handle is still open");
    drop(other);
    assert_gone(&g.name);
}

// --- 2. disconnection and blocking in one process -------------------------------------

#[test]
fn recv_drains_then_reports_disconnected() {
    let g = Guard::new(PREFIX, "disc");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut tx = ring.producer().unwrap();
    for v in [10, 11, 12] {
        tx.try_send(v).unwrap();
    }
    drop(tx);
    assert!(rx.is_disconnected());
    assert_eq!(rx.recv(), Ok(10));
    assert_eq!(rx.recv(), Ok(11));
    assert_eq!(rx.recv(), Ok(12));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.peek().err(), Some(TryRecvError::Disconnected));
    let start = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(3)),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "Disconnected should not wait"
    );
    drop((rx, ring));
    assert_gone(&g.name);
}

#[test]
fn send_reports_a_gone_consumer_only_when_full() {
    let g = Guard::new(PREFIX, "discsend");
    let ring = Ring::<u64>::create(&g.name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    assert!(!tx.is_disconnected());
    drop(rx);
    assert!(tx.is_disconnected());
    tx.try_send(1).unwrap();
    tx.send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
    assert_eq!(tx.reserve().err(), Some(ReserveError::Disconnected));
    assert_eq!(tx.send(4), Err(SendError(4)));
    assert!(matches!(
        tx.send_timeout(5, Duration::from_secs(3)),
        Err(SendTimeoutError::Disconnected(5))
    ));
    drop((tx, ring));
    assert_gone(&g.name);
}

#[test]
fn timeouts_last_about_the_timeout() {
    const T: Duration = Duration::from_millis(300);
    let g = Guard::new(PREFIX, "timeout");
    let ring = Ring::<u64>::create(&g.name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();

    let start = Instant::now();
    assert_eq!(rx.recv_timeout(T), Err(RecvTimeoutError::Timeout));
    let waited = start.elapsed();
    println!("recv_timeout({T:?}) returned Timeout after {waited:?}");
    assert!(waited >= T, "recv_timeout returned early: {waited:?}");
    assert!(
        waited < T + Duration::from_secs(2),
        "recv_timeout overslept: {waited:?}"
    );

    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    let start = Instant::now();
    assert!(matches!(
        tx.send_timeout(3, T),
        Err(SendTimeoutError::Timeout(3))
    ));
    let waited = start.elapsed();
    println!("send_timeout({T:?}) returned Timeout after {waited:?}");
    assert!(waited >= T, "send_timeout returned early: {waited:?}");
    assert!(
        waited < T + Duration::from_secs(2),
        "send_timeout overslept: {waited:?}"
    );

    // A zero timeout is a try.
    assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(1));
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn blocked_recv_is_woken_by_a_send_from_another_thread() {
    let g = Guard::new(PREFIX, "wakerecv");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let r = rx.recv();
        (r, Instant::now())
    });
    let tid = tid_rx.recv().unwrap();
    wait_until_asleep(tid, &receiver, "recv() on an empty ring");
    let sender = thread::spawn(move || {
        let at = Instant::now();
        tx.try_send(42).unwrap();
        (at, tx)
    });
    let (sent_at, tx) = join_within(sender, Duration::from_secs(5), "try_send");
    let (r, woke_at) = join_within(receiver, Duration::from_secs(2), "recv() after a send");
    assert_eq!(r, Ok(42));
    println!("recv() woken by try_send after {:?}", woke_at - sent_at);
    drop((tx, ring));
    assert_gone(&g.name);
}

#[test]
fn blocked_recv_is_woken_by_the_producer_dropping() {
    let g = Guard::new(PREFIX, "wakedrop");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        (rx.recv(), Instant::now())
    });
    wait_until_asleep(tid_rx.recv().unwrap(), &receiver, "recv() on an empty ring");
    let dropped_at = Instant::now();
    drop(tx);
    let (r, woke_at) = join_within(receiver, Duration::from_secs(2), "recv() after the drop");
    assert_eq!(r, Err(RecvError));
    println!(
        "recv() woken by the producer's drop after {:?}",
        woke_at - dropped_at
    );
    drop(ring);
    assert_gone(&g.name);
}

#[test]
fn blocked_send_is_woken_by_a_release() {
    let g = Guard::new(PREFIX, "wakesend");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    for v in 0..4 {
        tx.try_send(v).unwrap();
    }
    let (tid_tx, tid_rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let r = tx.send(100);
        (r, Instant::now(), tx)
    });
    wait_until_asleep(tid_rx.recv().unwrap(), &sender, "send() on a full ring");
    let released_at = Instant::now();
    let msg = rx.peek().unwrap();
    assert_eq!(*msg, 0);
    msg.release();
    let (r, woke_at, tx) = join_within(sender, Duration::from_secs(2), "send() after a release");
    assert_eq!(r, Ok(()));
    println!("send() woken by release after {:?}", woke_at - released_at);
    let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, vec![1, 2, 3, 100]);

    // And a send blocked on a full ring whose consumer goes is told so.
    let mut tx = tx;
    for v in 0..4 {
        tx.try_send(v).unwrap();
    }
    let (tid_tx, tid_rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        (tx.send(200), tx)
    });
    wait_until_asleep(tid_rx.recv().unwrap(), &sender, "send() on a full ring");
    drop(rx);
    let (r, tx) = join_within(
        sender,
        Duration::from_secs(2),
        "send() after the consumer left",
    );
    assert_eq!(r, Err(SendError(200)));
    drop((tx, ring));
    assert_gone(&g.name);
}

// --- 3. a producer SIGKILLed with a reservation in flight ------------------------------

/// Value the killed producer writes into its reserved, never committed, slot.
const UNCOMMITTED: u64 = 0xdead_beef_dead_beef;

#[test]
fn child_producer_reserves_then_hangs() {
    let Some((name, n)) = child_args("child_producer_reserves_then_hangs") else {
        return;
    };
    let ring = Ring::<u64>::open(&name).expect("child: open ring");
    let mut tx = ring.producer().expect("child: claim producer");
    say("ready");
    for v in 0..n {
        tx.send(v).expect("child: send");
    }
    say(format_args!("committed {n}"));
    while tx.free_slots() == 0 {
        thread::yield_now();
    }
    let mut slot = tx.reserve().expect("child: reserve");
    *slot = UNCOMMITTED;
    say("reserved");
    hang();
}

#[test]
fn producer_killed_mid_reservation_delivers_exactly_what_it_committed() {
    const N: u64 = 1000;
    let g = Guard::new(PREFIX, "prodkill");
    // Smaller than N: the child blocks on a full ring and is woken across processes.
    let ring = Ring::<u64>::create(&g.name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();

    let consumer = thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(v) => got.push(v),
                Err(e) => return (got, e, Instant::now(), rx),
            }
        }
    });
    let mut kid = Kid::spawn("child_producer_reserves_then_hangs", &g.name, N);
    kid.expect("ready", Duration::from_secs(10));
    assert_eq!(
        kid.expect("committed", Duration::from_secs(10)),
        N.to_string()
    );
    kid.expect("reserved", Duration::from_secs(10));
    assert!(
        !consumer.is_finished(),
        "the consumer stopped while the producer lived"
    );
    assert_eq!(
        holders(&g.name),
        (2, 0),
        "parent and child should both hold the ring"
    );

    let killed_at = kid.kill();
    let (got, end, ended_at, mut rx) =
        join_within(consumer, Duration::from_secs(10), "consumer after the kill");
    let wake = ended_at.saturating_duration_since(killed_at);
    println!("consumer saw the producer's death after {wake:?}");
    assert_eq!(
        end,
        RecvTimeoutError::Disconnected,
        "after {} messages",
        got.len()
    );
    assert!(
        !got.contains(&UNCOMMITTED),
        "the uncommitted reservation was delivered"
    );
    assert_eq!(got.len() as u64, N, "lost or duplicated messages");
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "messages out of order");
    assert!(
        wake < Duration::from_secs(2),
        "death noticed only after {wake:?}"
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert!(rx.is_disconnected());
    assert_eq!(
        holders(&g.name),
        (1, 0),
        "the dead producer's holder slot was not reclaimed"
    );

    // A new producer takes over at the committed frontier.
    let mut tx = ring.producer().expect("claim the dead producer's role");
    assert!(!rx.is_disconnected());
    assert_eq!(
        rx.try_recv(),
        Err(TryRecvError::Empty),
        "reservation leaked"
    );
    for v in N..N + 100 {
        tx.send(v).unwrap();
        assert_eq!(rx.try_recv(), Ok(v));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    drop((tx, rx, ring));
    assert_gone(&g.name);
}

// --- 4. a consumer SIGKILLed holding a peeked slot ------------------------------------

#[test]
fn child_consumer_peeks_then_hangs() {
    let Some((name, k)) = child_args("child_consumer_peeks_then_hangs") else {
        return;
    };
    let ring = Ring::<u64>::open(&name).expect("child: open ring");
    let mut rx = ring.consumer().expect("child: claim consumer");
    for want in 0..k {
        let v = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("child: recv");
        assert_eq!(v, want, "child: message out of order");
    }
    say(format_args!("received {k}"));
    let slot = rx.peek().expect("child: peek");
    say(format_args!("peeked {}", *slot));
    hang();
}

#[test]
fn consumer_killed_holding_a_peek_leaves_the_message_for_the_next() {
    const K: u64 = 4;
    const CAP: u64 = 16;
    let g = Guard::new(PREFIX, "conskill");
    let ring = Ring::<u64>::create(&g.name, CAP as usize).unwrap();
    let mut tx = ring.producer().unwrap();
    for v in 0..10 {
        tx.try_send(v).unwrap();
    }

    let mut kid = Kid::spawn("child_consumer_peeks_then_hangs", &g.name, K);
    assert_eq!(
        kid.expect("received", Duration::from_secs(10)),
        K.to_string()
    );
    assert_eq!(kid.expect("peeked", Duration::from_secs(10)), K.to_string());
    // No false death: the live child keeps its role.
    assert_err!(
        ring.consumer(),
        Error::RoleTaken {
            role: "consumer",
            ..
        }
    );
    assert!(!tx.is_disconnected());
    assert_eq!(tx.free_slots() as u64, CAP - 10 + K);

    kid.kill();
    assert_eq!(
        holders(&g.name),
        (1, 1),
        "the killed child should show as a dead holder until swept"
    );
    // The claim itself reclaims the dead holder's role.
    let mut rx = ring.consumer().expect("claim the dead consumer's role");
    assert!(!tx.is_disconnected());
    assert_eq!(
        holders(&g.name),
        (1, 0),
        "the claim did not reclaim the dead holder"
    );

    // At-least-once for the peeked message, then the rest in order.
    let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, (K..10).collect::<Vec<_>>());

    // Not wedged: a full lap fits, then Full, then it all arrives.
    for v in 10..10 + CAP {
        tx.try_send(v)
            .unwrap_or_else(|e| panic!("send {v} after the recovery: {e:?}"));
    }
    assert!(matches!(tx.try_send(999), Err(TrySendError::Full(999))));
    let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, (10..10 + CAP).collect::<Vec<_>>());
    assert_eq!(tx.free_slots() as u64, CAP);

    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn blocked_send_is_woken_by_the_consumers_death() {
    const CAP: u64 = 4;
    let g = Guard::new(PREFIX, "sendwake");
    let ring = Ring::<u64>::create(&g.name, CAP as usize).unwrap();
    let mut tx = ring.producer().unwrap();
    for v in 0..CAP {
        tx.try_send(v).unwrap();
    }
    // The child takes no message and holds a peek of the first.
    let mut kid = Kid::spawn("child_consumer_peeks_then_hangs", &g.name, 0);
    assert_eq!(kid.expect("peeked", Duration::from_secs(10)), "0");

    let (tid_tx, tid_rx) = mpsc::channel();
    let producer = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        // No timeout: only the consumer's death can end this wait.
        let r = tx.send(CAP);
        (r, Instant::now(), tx)
    });
    wait_until_asleep(tid_rx.recv().unwrap(), &producer, "send() on a full ring");
    let killed_at = kid.kill();
    let (r, woke_at, mut tx) =
        join_within(producer, Duration::from_secs(10), "send() after the kill");
    let wake = woke_at.saturating_duration_since(killed_at);
    println!("blocked send() woke with {r:?} {wake:?} after SIGKILL");
    assert_eq!(
        r,
        Err(SendError(CAP)),
        "send() into a full ring whose consumer died"
    );
    assert!(wake < Duration::from_secs(2), "woken only after {wake:?}");
    assert!(tx.is_disconnected());

    // A new consumer gets everything, the peeked message first; sending resumes.
    let mut rx = ring.consumer().expect("claim the dead consumer's role");
    assert!(!tx.is_disconnected());
    assert_eq!(rx.try_recv(), Ok(0));
    tx.send(CAP).unwrap();
    let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got, (1..=CAP).collect::<Vec<_>>());
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

// --- 5. a blocked consumer woken by the producer's death ------------------------------

#[test]
fn child_producer_commits_one_then_hangs() {
    let Some((name, value)) = child_args("child_producer_commits_one_then_hangs") else {
        return;
    };
    let ring = Ring::<u64>::open(&name).expect("child: open ring");
    let mut tx = ring.producer().expect("child: claim producer");
    tx.try_send(value).expect("child: send");
    say("committed 1");
    hang();
}

#[test]
fn blocked_recv_is_woken_by_the_producers_death() {
    let g = Guard::new(PREFIX, "deathwake");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Kid::spawn("child_producer_commits_one_then_hangs", &g.name, 77);
    kid.expect("committed 1", Duration::from_secs(10));

    let (tid_tx, tid_rx) = mpsc::channel();
    let consumer = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        let first = rx.recv();
        // No timeout: only the producer's death can end this wait.
        let second = rx.recv();
        (first, second, Instant::now(), rx)
    });
    wait_until_asleep(
        tid_rx.recv().unwrap(),
        &consumer,
        "recv() with a live producer",
    );
    let killed_at = kid.kill();
    let (first, second, woke_at, rx) =
        join_within(consumer, Duration::from_secs(10), "recv() after the kill");
    let wake = woke_at.saturating_duration_since(killed_at);
    println!("blocked recv() woke with {second:?} {wake:?} after SIGKILL");
    assert_eq!(first, Ok(77));
    assert_eq!(second, Err(RecvError));
    assert!(wake < Duration::from_secs(2), "woken only after {wake:?}");
    drop((rx, ring));
    assert_gone(&g.name);
}

#[test]
fn a_stopped_producer_is_not_taken_for_dead() {
    let g = Guard::new(PREFIX, "stopped");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Kid::spawn("child_producer_commits_one_then_hangs", &g.name, 5);
    kid.expect("committed 1", Duration::from_secs(10));
    kid.stop();

    assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(5));
    // Stopped is not dead (P4): the wait times out, the role stays taken.
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(!rx.is_disconnected());
    assert_err!(
        ring.producer(),
        Error::RoleTaken {
            role: "producer",
            ..
        }
    );
    assert_eq!(holders(&g.name), (2, 0));

    kid.kill();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(RecvTimeoutError::Disconnected)
    );
    drop((rx, ring));
    assert_gone(&g.name);
}

/// A consumer polling while the first producer claims the role must never read
/// "vacant" together with "claimed once" (a spurious `Disconnected`): `role_vacated`
/// loads the claim count before the role word, `claim` bumps the count after taking it.
/// A race, so this is a time-bounded stress (`TALLY_RING_STRESS_SECS`, default 3).
#[test]
fn the_first_producer_claim_never_looks_like_a_disconnect() {
    let secs = std::env::var("TALLY_RING_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0u32;
    while Instant::now() < deadline {
        let g = Guard::new(PREFIX, "firstclaim");
        let ring = Ring::<u64>::create(&g.name, 8).unwrap();
        let mut rx = ring.consumer().unwrap();
        let start = Arc::new(Barrier::new(2));
        let claimer = thread::spawn({
            let (name, start) = (g.name.clone(), start.clone());
            move || {
                let other = Ring::<u64>::open(&name).unwrap();
                start.wait();
                let tx = other.producer().unwrap();
                (tx, other)
            }
        });
        start.wait();
        let mut disconnected = false;
        for _ in 0..20_000 {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
                Ok(v) => panic!("received {v} from a producer that sent nothing"),
            }
        }
        let (tx, other) = join_within(claimer, Duration::from_secs(5), "producer claim");
        assert!(
            !disconnected,
            "round {rounds}: try_recv() said Disconnected while the first producer was \
             claiming the role (it is still held: is_disconnected() = {})",
            rx.is_disconnected()
        );
        drop((tx, other, rx, ring));
        assert_gone(&g.name);
        rounds += 1;
    }
    println!("{rounds} rounds without a spurious Disconnected");
}

// --- 6. attach and detach leave nothing -----------------------------------------------

#[test]
fn attach_detach_in_any_order_leaves_nothing() {
    // Creator last, creator first, and roles held by the last handle to go.
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let g = Guard::new(PREFIX, "attach");
        let mut handles = vec![Some(Ring::<u64>::create(&g.name, 4).unwrap())];
        handles.push(Some(Ring::<u64>::open(&g.name).unwrap()));
        handles.push(Some(Ring::<u64>::open(&g.name).unwrap()));
        let info = handles[0].as_ref().unwrap().info();
        assert_eq!((info.holders.len(), info.refcount), (3, 3));
        {
            let mut tx = handles[1].as_ref().unwrap().producer().unwrap();
            let mut rx = handles[2].as_ref().unwrap().consumer().unwrap();
            tx.try_send(5).unwrap();
            assert_eq!(rx.try_recv(), Ok(5));
        }
        for (n, &i) in order.iter().enumerate() {
            assert!(
                shm_exists(&g.name),
                "order {order:?}: gone before the last drop"
            );
            handles[i].take();
            if n < 2 {
                let live = handles.iter().flatten().next().unwrap();
                assert_eq!(live.info().refcount, 2 - n as u32, "order {order:?}");
            }
        }
        assert_gone(&g.name);
        assert_err!(Ring::<u64>::open(&g.name), Error::NotFound(_));
    }

    // A role handle keeps the segment alive after its Ring is dropped.
    let g = Guard::new(PREFIX, "attach-role");
    let ring = ByteRing::create(&g.name, 4, 16).unwrap();
    let mut tx = ring.producer().unwrap();
    drop(ring);
    assert!(shm_exists(&g.name), "unlinked under a live producer");
    let reader = ByteRing::open(&g.name).unwrap();
    let mut rx = reader.consumer().unwrap();
    tx.try_send(b"still here").unwrap();
    let mut buf = Vec::new();
    rx.try_recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"still here");
    drop((tx, reader));
    assert!(shm_exists(&g.name), "unlinked under a live consumer");
    drop(rx);
    assert_gone(&g.name);
}

/// `Mapped::info` (src/segment/mod.rs) probes every slot with `slot_alive`, an
/// `F_OFD_GETLK` through the handle's own open file description, which never sees its
/// own lock: a handle's `info()` reports its own holder as dead.
#[test]
fn info_shows_the_callers_own_holder_alive() {
    let g = Guard::new(PREFIX, "info");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let other = Ring::<u64>::open(&g.name).unwrap();
    let info = ring.info();
    assert_eq!(info.holders.len(), 2);
    for h in &info.holders {
        assert!(h.alive, "Ring::info() shows live holder {h:?} as dead");
    }
    drop((ring, other));
    assert_gone(&g.name);
}

// --- the API review of issue 6 -------------------------------------------------------

/// A Pod payload aligned beyond what a segment lays out (128 bytes).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
#[repr(C, align(256))]
struct Over([u8; 256]);

/// Regression: `open` and `open_or_create` used to skip the alignment check `create`
/// made, handing out a `&mut Over` that was only 128-aligned.
#[test]
fn every_constructor_refuses_a_payload_it_cannot_align() {
    let g = Guard::new(PREFIX, "align");
    let _bytes = Ring::<[u8; 256]>::create(&g.name, 4).unwrap();
    let refused = |r: Result<Ring<Over>, Error>, what: &str| match r {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("256"), "{what}: {msg}"),
        other => panic!(
            "{what}: expected InvalidArgument, got {:?}",
            other.map(|_| ())
        ),
    };
    refused(Ring::<Over>::create(&unique(PREFIX, "align2"), 4), "create");
    refused(Ring::<Over>::open(&g.name), "open");
    refused(
        Ring::<Over>::open_or_create(&g.name, 4, &Options::default()).map(|(r, _)| r),
        "open_or_create",
    );
}

/// File offset of a ring's role word (`producer` true: the producer's).
fn role_word_offset(info: &tally::SegmentInfo, producer: bool) -> u64 {
    // The object area ends the file; the ring's control line is its second 128 bytes.
    let object_offset = info.size_bytes - info.object_bytes;
    object_offset + 128 + if producer { 0 } else { 8 }
}

fn poke_u64(name: &str, offset: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open the segment file");
    f.write_all_at(&value.to_le_bytes(), offset)
        .expect("poke the segment file");
}

/// Regression: a role word naming a free or out-of-range holder slot was never
/// vacated; the role answered `RoleTaken` for ever.
#[test]
fn a_role_naming_no_live_slot_is_vacated_by_the_next_claim() {
    let g = Guard::new(PREFIX, "ghostrole");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let info = ring.info();
    // Slot 10 is free; 5000 is past the 64-slot table. One claim so far.
    for holder in [11u64, 5001] {
        poke_u64(&g.name, role_word_offset(&info, true), holder | (1 << 32));
        let rx = ring.consumer().unwrap();
        assert!(rx.is_disconnected(), "holder {holder}: no live producer");
        let tx = ring
            .producer()
            .unwrap_or_else(|e| panic!("holder {holder}: {e}"));
        assert!(!rx.is_disconnected());
        drop((tx, rx));
    }
    drop(ring);
    assert_gone(&g.name);
}

/// Takes `name`'s admin lock (an OFD lock on byte 0) through a descriptor of its own,
/// as a process stopped inside an admin section would hold it.
fn hold_admin_lock(name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .expect("open the segment file");
    // SAFETY: a zeroed flock is a valid argument; fcntl only reads it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = 0;
    fl.l_len = 1;
    // SAFETY: a valid descriptor and a valid flock.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(rc, 0, "lock: {}", std::io::Error::last_os_error());
    f
}

/// Regression: with the admin lock held by a stopped process, `recv_timeout(10 ms)`
/// took 5 s and `is_disconnected()` 5 s (the role check swept, and the sweep waited
/// for the lock). Deadlines hold, and quick checks are quick.
#[test]
fn deadlines_hold_while_the_admin_lock_is_held() {
    let g = Guard::new(PREFIX, "adminheld");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Kid::spawn("child_producer_commits_one_then_hangs", &g.name, 5);
    kid.expect("committed 1", Duration::from_secs(10));
    assert_eq!(rx.try_recv(), Ok(5));
    kid.kill();
    let lock = hold_admin_lock(&g.name);

    let t = Instant::now();
    assert!(rx.is_disconnected());
    let quick = t.elapsed();
    let t = Instant::now();
    let r = rx.recv_timeout(Duration::from_millis(10));
    let took = t.elapsed();
    assert_eq!(r, Err(RecvTimeoutError::Disconnected));
    assert_eq!(rx.producer_state(), tally::PeerState::Crashed);
    assert!(
        quick < Duration::from_millis(500),
        "is_disconnected took {quick:?}"
    );
    assert!(
        took < Duration::from_millis(500),
        "recv_timeout(10 ms) took {took:?}"
    );
    drop(lock);
    drop((rx, ring));
    assert_gone(&g.name);
}

#[test]
fn peer_states_tell_a_clean_close_from_a_crash() {
    use tally::PeerState;
    let g = Guard::new(PREFIX, "peerstate");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let rx = ring.consumer().unwrap();
    assert_eq!(rx.producer_state(), PeerState::NotYetConnected);
    assert!(!rx.is_disconnected(), "no producer yet is not a disconnect");
    let tx = ring.producer().unwrap();
    assert_eq!(rx.producer_state(), PeerState::Connected);
    assert_eq!(tx.consumer_state(), PeerState::Connected);
    drop(tx);
    assert_eq!(rx.producer_state(), PeerState::Closed);
    let mut kid = Kid::spawn("child_producer_commits_one_then_hangs", &g.name, 1);
    kid.expect("committed 1", Duration::from_secs(10));
    assert_eq!(rx.producer_state(), PeerState::Connected);
    kid.kill();
    assert_eq!(rx.producer_state(), PeerState::Crashed);
    ring.sweep().unwrap();
    assert_eq!(
        rx.producer_state(),
        PeerState::Crashed,
        "still after the sweep"
    );
    drop((rx, ring));
    assert_gone(&g.name);
}

#[test]
fn a_handle_waits_for_its_peer_to_appear() {
    let g = Guard::new(PREFIX, "waitpeer");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let rx = ring.consumer().unwrap();
    assert!(
        !rx.wait_for_producer(Duration::from_millis(20)),
        "nobody came"
    );
    let name = g.name.clone();
    let claimer = thread::spawn(move || {
        let ring = Ring::<u64>::open(&name).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.send(9).unwrap();
        // Stay until the consumer has the message.
        tx.wait_for_consumer(Duration::from_secs(10));
        while tx.free_slots() < tx.capacity() {
            thread::yield_now();
        }
    });
    assert!(rx.wait_for_producer(Duration::from_secs(10)));
    let mut rx = rx;
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(9));
    join_within(claimer, Duration::from_secs(10), "the producer thread");
    drop((rx, ring));
    assert_gone(&g.name);
}

#[test]
fn zero_copy_calls_wait_too() {
    let g = Guard::new(PREFIX, "zcwait");
    let ring = Ring::<u64>::create(&g.name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    assert_eq!(
        rx.peek_timeout(Duration::from_millis(5)).err(),
        Some(RecvTimeoutError::Timeout)
    );
    for v in 0..2 {
        let mut slot = tx.reserve_wait().unwrap();
        *slot = v;
        slot.commit();
    }
    assert_eq!(
        tx.reserve_timeout(Duration::from_millis(5)).err(),
        Some(ReserveTimeoutError::Timeout)
    );
    // A blocked reserve_wait is freed by a release on another thread.
    let waiter = thread::spawn(move || {
        let mut slot = tx.reserve_wait().map_err(|e| e.to_string())?;
        *slot = 2;
        slot.commit();
        Ok::<_, String>(tx)
    });
    let first = rx.peek_wait().unwrap();
    assert_eq!(*first, 0);
    first.release();
    let tx = join_within(waiter, Duration::from_secs(10), "reserve_wait").unwrap();
    for v in 1..3 {
        let m = rx.peek_wait().unwrap();
        assert_eq!(*m, v);
        m.release();
    }
    drop(tx);
    assert_eq!(rx.peek_wait().err(), Some(RecvError));
    assert_eq!(
        rx.peek_timeout(Duration::from_secs(5)).err(),
        Some(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn a_handle_can_spin_for_ever_and_still_sees_deadlines_and_departures() {
    let g = Guard::new(PREFIX, "spinforever");
    let ring = Ring::<u64>::create(&g.name, 2).unwrap();
    let tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    rx.set_spin(Duration::MAX);
    assert_eq!(rx.spin(), Duration::MAX);
    let t = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    let spinner = thread::spawn(move || rx.recv());
    drop(tx);
    assert_eq!(
        join_within(spinner, Duration::from_secs(10), "spinning recv"),
        Err(RecvError)
    );
}

#[test]
fn open_or_create_refuses_another_capacity_unless_told_any_will_do() {
    let g = Guard::new(PREFIX, "capmismatch");
    let (ring, created) = Ring::<u64>::open_or_create(&g.name, 64, &Options::default()).unwrap();
    assert!(created);
    match Ring::<u64>::open_or_create(&g.name, 128, &Options::default()) {
        Err(Error::LayoutMismatch { detail, .. }) => {
            assert!(detail.contains("64") && detail.contains("128"), "{detail}")
        }
        other => panic!("expected LayoutMismatch, got {:?}", other.map(|_| ())),
    }
    let any = Options::default().any_capacity(true);
    let (again, created) = Ring::<u64>::open_or_create(&g.name, 128, &any).unwrap();
    assert!(!created);
    assert_eq!(again.capacity(), 64);

    let b = unique(PREFIX, "bytecap");
    let (bytes, _) = ByteRing::open_or_create(&b, 8, 100, &Options::default()).unwrap();
    assert!(matches!(
        ByteRing::open_or_create(&b, 8, 200, &Options::default()),
        Err(Error::LayoutMismatch { .. })
    ));
    let (same, _) = ByteRing::open_or_create(&b, 16, 200, &any).unwrap();
    assert_eq!((same.capacity(), same.max_message()), (8, 100));
    drop((ring, again, bytes, same));
    assert_gone(&g.name);
    assert_gone(&b);
}

#[test]
fn byte_handles_have_the_typed_methods() {
    let g = Guard::new(PREFIX, "bytemethods");
    let ring = ByteRing::create(&g.name, 4, 16).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    assert!(rx.is_empty() && !tx.is_disconnected());
    assert_eq!(rx.len(), 0);
    tx.send(b"ab").unwrap();
    tx.send_timeout(b"cd", Duration::from_millis(5)).unwrap();
    assert_eq!((rx.len(), rx.is_empty()), (2, false));
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"ab");
    assert_eq!(
        tx.send(&[0; 17]),
        Err(ReserveTimeoutError::TooLong { len: 17, max: 16 })
    );
    drop(rx);
    assert!(tx.is_disconnected());
    let _ = format!("{tx:?} {ring:?}");
}

#[test]
fn info_shows_capacity_fill_and_roles() {
    let g = Guard::new(PREFIX, "ringinfo");
    let ring = Ring::<u64>::create(&g.name, 8).unwrap();
    let r = ring.info().ring.expect("a ring reports ring details");
    assert_eq!((r.capacity, r.max_message, r.committed), (8, 8, 0));
    assert_eq!((r.producer.holder_slot, r.producer.claims), (None, 0));
    let mut tx = ring.producer().unwrap();
    for v in 0..3 {
        tx.send(v).unwrap();
    }
    let r = ring.info().ring.unwrap();
    assert_eq!((r.committed, r.head), (3, 0));
    assert_eq!(r.producer.holder_slot, Some(0), "{r:?}");
    assert_eq!(r.consumer.holder_slot, None);
    drop(tx);
    let r = ring.info().ring.unwrap();
    assert_eq!(
        (r.producer.holder_slot, r.producer.last_exit),
        (None, "closed")
    );
    let b = unique(PREFIX, "ringinfo-bytes");
    let bytes = ByteRing::create(&b, 4, 100).unwrap();
    let info = bytes.info();
    assert_eq!(info.kind, Kind::ByteRing);
    assert_eq!(info.ring.unwrap().max_message, 100);
    assert!(
        Region::create(&unique(PREFIX, "ringinfo-r"), 64)
            .unwrap()
            .info()
            .ring
            .is_none()
    );
    drop((ring, bytes));
    assert_gone(&g.name);
    assert_gone(&b);
}
