//! The MPMC ring: ordering and exactly-once delivery across threads, and what happens
//! when producers and consumers are SIGKILLed mid-operation (real processes: the test
//! binary re-executes itself as the child).

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tally::{
    Error, Kind, MpmcByteRing, MpmcRing, Options, PeerState, RecvError, RecvTimeoutError,
    ReserveError, ReserveTimeoutError, SendError, TryRecvError, TrySendError,
};

mod common;
use common::{Guard, Kid, Rng, assert_gone, child_args, hang, say};

/// Prefix of this file's object names.
const PREFIX: &str = "mp";

/// A message: which producer sent it and its sequence number in that producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
#[repr(C)]
struct Msg {
    producer: u64,
    seq: u64,
}

#[test]
fn one_thread_round_trips_and_reports_full_empty_disconnected() {
    let g = Guard::new(PREFIX, "basic");
    let ring = MpmcRing::<u64>::create(&g.name, 4).unwrap();
    assert_eq!(ring.info().kind, Kind::MpmcRing);
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "no producer yet");
    assert_eq!(rx.producer_state(), PeerState::NotYetConnected);
    let mut tx = ring.producer().unwrap();
    for v in 0..4 {
        tx.try_send(v).unwrap();
    }
    assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
    assert_eq!(rx.len(), 4);
    for v in 0..4 {
        assert_eq!(rx.try_recv(), Ok(v));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.send(5).unwrap();
    drop(tx);
    assert_eq!(rx.producer_state(), PeerState::Closed);
    assert_eq!(rx.recv(), Ok(5), "drains before reporting the disconnect");
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    let t = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // A new producer reconnects the ring.
    let mut tx = ring.producer().unwrap();
    tx.send(6).unwrap();
    assert_eq!(rx.recv(), Ok(6));
    drop(rx);
    for v in 0..4 {
        tx.try_send(v).unwrap();
    }
    assert!(matches!(tx.try_send(7), Err(TrySendError::Disconnected(7))));
    assert_eq!(tx.send(8), Err(SendError(8)));
    drop((tx, ring));
    assert_gone(&g.name);
}

#[test]
fn in_place_slots_and_their_guards() {
    let g = Guard::new(PREFIX, "inplace");
    let ring = MpmcRing::<u64>::create(&g.name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    // A dropped write slot keeps its position for the next reservation.
    let slot = tx.reserve().unwrap();
    drop(slot);
    let mut slot = tx.reserve_wait().unwrap();
    *slot = 11;
    slot.commit();
    // A dropped read slot keeps its message for the next peek.
    let m = rx.peek().unwrap();
    assert_eq!(*m, 11);
    drop(m);
    let m = rx.peek_timeout(Duration::from_millis(10)).unwrap();
    assert_eq!(*m, 11);
    m.release();
    assert_eq!(
        rx.peek_timeout(Duration::from_millis(5)).err(),
        Some(RecvTimeoutError::Timeout)
    );
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert_eq!(
        tx.reserve_timeout(Duration::from_millis(5)).err(),
        Some(ReserveTimeoutError::Timeout)
    );
    assert_eq!(tx.reserve().err(), Some(ReserveError::Full));
    // A consumer handle dropped holding a message gives it to another consumer.
    let mut other = ring.consumer().unwrap();
    let held = rx.peek().unwrap();
    assert_eq!(*held, 1);
    drop(held);
    drop(rx);
    assert_eq!(other.recv(), Ok(1), "given back, redelivered");
    assert_eq!(other.recv(), Ok(2));
    assert_eq!(ring.info().ring.unwrap().redelivered, 1);
    // A producer handle dropped holding a reservation gives the position up.
    let mut tx2 = ring.producer().unwrap();
    let _unwritten = tx2.reserve().unwrap();
    drop(_unwritten);
    drop(tx2);
    tx.send(3).unwrap();
    assert_eq!(other.recv(), Ok(3), "the given-up position is stepped over");
    assert_eq!(ring.info().ring.unwrap().skipped, 1);
    drop((tx, other, ring));
    assert_gone(&g.name);
}

/// `P` producer threads and `C` consumer threads: every message exactly once, and each
/// consumer sees each producer's messages in the order they were sent.
fn threads_deliver_exactly_once(p: u64, c: usize, per: u64) {
    let g = Guard::new(PREFIX, &format!("threads{p}x{c}"));
    let ring = Arc::new(MpmcRing::<Msg>::create(&g.name, 64).unwrap());
    let start = Arc::new(Barrier::new(p as usize + c));
    let consumers: Vec<_> = (0..c)
        .map(|_| {
            let (ring, start) = (ring.clone(), start.clone());
            let mut rx = ring.consumer().unwrap();
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                while let Ok(m) = rx.recv() {
                    got.push(m);
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = (0..p)
        .map(|id| {
            let (ring, start) = (ring.clone(), start.clone());
            let mut tx = ring.producer().unwrap();
            thread::spawn(move || {
                start.wait();
                for seq in 0..per {
                    if seq % 3 == 0 {
                        let mut slot = tx.reserve_wait().unwrap();
                        *slot = Msg { producer: id, seq };
                        slot.commit();
                    } else {
                        tx.send(Msg { producer: id, seq }).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in producers {
        h.join().unwrap();
    }
    let mut all: HashMap<u64, Vec<u64>> = HashMap::new();
    for h in consumers {
        let got = h.join().unwrap();
        let mut last: HashMap<u64, u64> = HashMap::new();
        for m in &got {
            if let Some(&prev) = last.get(&m.producer) {
                assert!(
                    m.seq > prev,
                    "producer {} reordered: {prev} then {}",
                    m.producer,
                    m.seq
                );
            }
            last.insert(m.producer, m.seq);
            all.entry(m.producer).or_default().push(m.seq);
        }
    }
    for id in 0..p {
        let mut seqs = all.remove(&id).unwrap_or_default();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..per).collect::<Vec<_>>(),
            "producer {id}: lost or duplicated"
        );
    }
    drop(ring);
    assert_gone(&g.name);
}

#[test]
fn two_producers_two_consumers_exactly_once_in_order() {
    threads_deliver_exactly_once(2, 2, 20_000);
}

#[test]
fn four_producers_one_consumer_exactly_once_in_order() {
    threads_deliver_exactly_once(4, 1, 10_000);
}

#[test]
fn byte_ring_carries_lengths_and_refuses_longer() {
    let g = Guard::new(PREFIX, "bytes");
    let ring = MpmcByteRing::create(&g.name, 8, 32).unwrap();
    assert_eq!(ring.info().kind, Kind::MpmcByteRing);
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut buf = Vec::new();
    for len in [0usize, 1, 31, 32] {
        let msg: Vec<u8> = (0..len as u8).collect();
        tx.send(&msg).unwrap();
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf, msg);
    }
    assert_eq!(
        tx.try_send(&[0; 33]),
        Err(ReserveError::TooLong { len: 33, max: 32 })
    );
    let opened = MpmcByteRing::open(&g.name).unwrap();
    assert_eq!((opened.capacity(), opened.max_message()), (8, 32));
    assert!(matches!(
        MpmcByteRing::open_or_create(&g.name, 8, 64, &Options::default()),
        Err(Error::LayoutMismatch { .. })
    ));
    assert!(matches!(
        MpmcRing::<u64>::open(&g.name),
        Err(Error::KindMismatch { .. })
    ));
    drop((tx, rx, ring, opened));
    assert_gone(&g.name);
}

// --- crashes ---------------------------------------------------------------------------

/// Child: a producer that commits `n` messages, claims one more position, and hangs
/// holding the claim.
#[test]
fn child_mpmc_producer_claims_then_hangs() {
    let Some((name, n)) = child_args("child_mpmc_producer_claims_then_hangs") else {
        return;
    };
    let ring = MpmcRing::<u64>::open(&name).expect("child: open");
    let mut tx = ring.producer().expect("child: producer");
    for v in 0..n {
        tx.send(v).expect("child: send");
    }
    let mut slot = tx.reserve_wait().expect("child: reserve");
    *slot = u64::MAX; // never committed
    say("claimed");
    hang();
}

/// Child: a consumer that peeks one message and hangs holding it.
#[test]
fn child_mpmc_consumer_peeks_then_hangs() {
    let Some((name, _)) = child_args("child_mpmc_consumer_peeks_then_hangs") else {
        return;
    };
    let ring = MpmcRing::<u64>::open(&name).expect("child: open");
    let mut rx = ring.consumer().expect("child: consumer");
    let m = rx.peek_wait().expect("child: peek");
    say(format!("holding {}", *m));
    hang();
}

#[test]
fn a_producer_killed_holding_a_claim_is_skipped_and_the_ring_moves_on() {
    let g = Guard::new(PREFIX, "killclaim");
    let ring = MpmcRing::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut live = ring.producer().unwrap();
    let mut kid = Kid::spawn("child_mpmc_producer_claims_then_hangs", &g.name, 3);
    kid.expect("claimed", Duration::from_secs(10));
    // Behind the claim: a live producer's message.
    live.send(100).unwrap();
    for v in 0..3 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(v));
    }
    assert_eq!(
        rx.try_recv(),
        Err(TryRecvError::Empty),
        "the claim is in flight while its holder lives"
    );
    let claims = ring.info().ring.unwrap().claims;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert!(claims[0].writing);
    let killed = kid.kill();
    // The blocked consumer finds the claimer dead and steps over its position.
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(100));
    println!(
        "stepped over the dead claim {:?} after the kill",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(2));
    let info = ring.info().ring.unwrap();
    assert_eq!((info.skipped, info.claims.len()), (1, 0), "{info:?}");
    // Nothing wedged: the ring keeps going for many laps.
    for v in 0..100 {
        live.send(v).unwrap();
        assert_eq!(rx.recv(), Ok(v));
    }
    drop((live, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn a_consumer_killed_holding_a_message_gets_it_redelivered() {
    let g = Guard::new(PREFIX, "killpeek");
    let ring = MpmcRing::<u64>::create(&g.name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.send(42).unwrap();
    let mut kid = Kid::spawn("child_mpmc_consumer_peeks_then_hangs", &g.name, 0);
    assert_eq!(kid.expect("holding", Duration::from_secs(10)), "42");
    tx.send(43).unwrap();
    assert_eq!(rx.recv(), Ok(43));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    kid.kill();
    // The sweep (here: explicit; also on open, claim or a blocked peer) redelivers it.
    let out = ring.sweep().unwrap();
    assert_eq!(out.reclaimed, 1);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(42));
    assert_eq!(ring.info().ring.unwrap().redelivered, 1);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn a_full_ring_behind_a_dead_reader_frees_itself() {
    // The consumer that held the oldest message died; a producer blocked on the full
    // ring finds it, the message goes back to the live consumer, and space frees up.
    let g = Guard::new(PREFIX, "deadreader");
    let ring = MpmcRing::<u64>::create(&g.name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.send(1).unwrap();
    let mut kid = Kid::spawn("child_mpmc_consumer_peeks_then_hangs", &g.name, 0);
    assert_eq!(kid.expect("holding", Duration::from_secs(10)), "1");
    tx.send(2).unwrap();
    kid.kill();
    // Ring: the slot of 1 is held by the dead reader, the slot of 2 is committed. A
    // live consumer takes 2, then is blocked behind the dead reader's slot, as is a
    // producer on the full ring; between them they redeliver 1 and free the slot.
    let mut rx = ring.consumer().unwrap();
    let consumer = thread::spawn(move || {
        let got: Vec<u64> = (0..4).map(|_| rx.recv().unwrap()).collect();
        (got, rx)
    });
    let t = Instant::now();
    tx.send_timeout(3, Duration::from_secs(5)).unwrap();
    tx.send_timeout(4, Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (mut got, rx) = consumer.join().unwrap();
    // 1 comes first or second: the producer and the consumer race to find the dead
    // reader, and an orphan is adopted before the message at head.
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4], "1 is redelivered, nothing is lost");
    assert_eq!(ring.info().ring.unwrap().redelivered, 1);
    drop((tx, rx, ring));
    assert_gone(&g.name);
}

#[test]
fn waiters_wake_with_disconnected_when_every_peer_died() {
    let g = Guard::new(PREFIX, "alldead");
    let ring = MpmcRing::<u64>::create(&g.name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kids: Vec<Kid> = (0..2)
        .map(|_| Kid::spawn("child_mpmc_producer_claims_then_hangs", &g.name, 1))
        .collect();
    for k in &mut kids {
        k.expect("claimed", Duration::from_secs(10));
    }
    let waiter = thread::spawn(move || {
        let mut got = Vec::new();
        let r = loop {
            match rx.recv() {
                Ok(v) => got.push(v),
                Err(e) => break e,
            }
        };
        (got, r, Instant::now())
    });
    let mut killed = Instant::now();
    for k in &mut kids {
        killed = k.kill();
    }
    let (got, r, woke) = waiter.join().unwrap();
    assert_eq!(got, [0, 0], "each committed its one message");
    assert_eq!(r, RecvError);
    let after = woke.saturating_duration_since(killed);
    println!("consumer woke {after:?} after the last producer's death");
    assert!(after < Duration::from_secs(2), "woke only after {after:?}");
    drop(ring);
    assert_gone(&g.name);
}

/// Child: producer number `id` (the argument's low 32 bits) that sends
/// `Msg { producer: id, seq }` for ever. Every other message is written in place; the
/// argument's high bits are microseconds it then spends filling it before the commit
/// (a producer building a large message), which widens the window in which a kill
/// leaves a claimed position behind.
#[test]
fn child_mpmc_streaming_producer() {
    let Some((name, arg)) = child_args("child_mpmc_streaming_producer") else {
        return;
    };
    let (id, fill) = (arg & 0xffff_ffff, Duration::from_micros(arg >> 32));
    let ring = MpmcRing::<Msg>::open(&name).expect("child: open");
    let mut tx = ring.producer().expect("child: producer");
    say("ready");
    for seq in 0.. {
        if seq % 2 == 0 {
            let mut slot = tx.reserve_wait().expect("child: reserve");
            let filling = Instant::now();
            while filling.elapsed() < fill {
                std::hint::spin_loop();
            }
            *slot = Msg { producer: id, seq };
            slot.commit();
        } else {
            tx.send(Msg { producer: id, seq }).expect("child: send");
        }
    }
    unreachable!()
}

#[test]
fn random_producer_kills_lose_nothing_committed_and_duplicate_nothing() {
    const ROUNDS: u64 = 12;
    let g = Guard::new(PREFIX, "chaos");
    let ring = MpmcRing::<Msg>::create(&g.name, 64).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let mut rx = ring.consumer().unwrap();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(m) = rx.recv_timeout(Duration::from_secs(3)) {
                    got.push(m);
                }
                got
            })
        })
        .collect();
    // Two producers at a time, each killed after a random moment and replaced.
    let mut next_id = 0;
    let spawn = |next_id: &mut u64| {
        *next_id += 1;
        let mut k = Kid::spawn("child_mpmc_streaming_producer", &g.name, *next_id);
        k.expect("ready", Duration::from_secs(10));
        k
    };
    let mut kids = vec![spawn(&mut next_id), spawn(&mut next_id)];
    for round in 0..ROUNDS {
        thread::sleep(Duration::from_millis(rng.below(30) as u64 + 3));
        let i = (round % 2) as usize;
        kids[i].kill();
        kids[i] = spawn(&mut next_id);
    }
    for k in &mut kids {
        k.kill();
    }
    let mut per: HashMap<u64, Vec<u64>> = HashMap::new();
    for h in consumers {
        let got = h.join().unwrap();
        let mut last: HashMap<u64, u64> = HashMap::new();
        for m in got {
            if let Some(&prev) = last.get(&m.producer) {
                assert!(
                    m.seq > prev,
                    "producer {}: {prev} then {}",
                    m.producer,
                    m.seq
                );
            }
            last.insert(m.producer, m.seq);
            per.entry(m.producer).or_default().push(m.seq);
        }
    }
    let mut total = 0;
    for (id, mut seqs) in per {
        seqs.sort_unstable();
        // A producer commits in order, so what it committed is a prefix 0..k: a gap is
        // a lost committed message, a repeat a duplicate.
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "producer {id}: lost or duplicated"
        );
        total += seqs.len();
    }
    let info = ring.info().ring.unwrap();
    println!(
        "{} producers killed, {total} messages checked, {} positions skipped",
        ROUNDS + 2,
        info.skipped
    );
    assert!(total > 0);
    drop(ring);
    assert_gone(&g.name);
}

/// Where recording consumer `id` of ring `name` appends what it takes: one file per
/// consumer process, named after the (unique) ring.
fn record_path(name: &str, id: u64) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tally-{name}-consumer-{id}.rec"))
}

/// One record: a message's producer and sequence number, little-endian.
const RECORD: usize = 16;

/// Child: consumer number `id` that, for every message, peeks it, copies it, appends it
/// to its record file and only then releases it, for ever. Killed between the append
/// and the release, it leaves the message recorded and the ring redelivers it (a
/// duplicate); killed between the peek and the append, the message is redelivered and
/// recorded once.
#[test]
fn child_mpmc_recording_consumer() {
    use std::io::Write;
    let Some((name, id)) = child_args("child_mpmc_recording_consumer") else {
        return;
    };
    let ring = MpmcRing::<Msg>::open(&name).expect("child: open");
    let mut rx = ring.consumer().expect("child: consumer");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record_path(&name, id))
        .expect("child: record file");
    say("ready");
    loop {
        // Every producer gone (the test kills them all before the consumers): wait
        // for the kill like the others.
        let Ok(slot) = rx.peek_wait() else { hang() };
        let m = *slot;
        let mut rec = [0u8; RECORD];
        rec[..8].copy_from_slice(&m.producer.to_le_bytes());
        rec[8..].copy_from_slice(&m.seq.to_le_bytes());
        // One write(2) on an O_APPEND file: a kill leaves it whole or absent (a torn
        // tail is counted and ignored by the reader).
        file.write_all(&rec).expect("child: record");
        slot.release();
    }
}

/// Removes the record files of a test's consumers, whatever happened.
struct Records {
    paths: Vec<std::path::PathBuf>,
}

impl Drop for Records {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Producers and consumers, all separate processes, SIGKILLed at random moments and
/// replaced; then a live consumer drains the ring. Every committed message arrives
/// (each producer's delivered set is a prefix 0..k), a message appears twice only
/// because a killed consumer recorded it and died before releasing it (so duplicates
/// are at most the consumer kills, and at most the ring's redeliveries), and each
/// consumer sees each producer's messages in order, but for redelivered ones.
#[test]
fn random_producer_and_consumer_kills_lose_nothing_and_duplicate_only_redeliveries() {
    const KILLS: usize = 40;
    const PRODUCERS: usize = 2;
    const CONSUMERS: usize = 2;
    /// Microseconds a producer spends filling each in-place message it claimed.
    const FILL_US: u64 = 5;
    let g = Guard::new(PREFIX, "chaos2");
    let ring = MpmcRing::<Msg>::create(&g.name, 16).unwrap();
    let mut records = Records { paths: Vec::new() };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();

    // Producer ids and consumer ids each count up from 1; a replacement gets a new one.
    let (mut next_producer, mut next_consumer) = (0, 0);
    let mut producer = || {
        next_producer += 1;
        let arg = next_producer | (FILL_US << 32);
        let mut k = Kid::spawn("child_mpmc_streaming_producer", &g.name, arg);
        k.expect("ready", Duration::from_secs(10));
        k
    };
    let mut consumer = |records: &mut Records| {
        next_consumer += 1;
        records.paths.push(record_path(&g.name, next_consumer));
        let mut k = Kid::spawn("child_mpmc_recording_consumer", &g.name, next_consumer);
        k.expect("ready", Duration::from_secs(10));
        k
    };
    let mut producers: Vec<Kid> = (0..PRODUCERS).map(|_| producer()).collect();
    let mut consumers: Vec<Kid> = (0..CONSUMERS).map(|_| consumer(&mut records)).collect();
    let (mut producer_kills, mut consumer_kills) = (0, 0);
    for _ in 0..KILLS {
        thread::sleep(Duration::from_millis(rng.below(70) as u64 + 10));
        if rng.below(2) == 0 {
            let i = rng.below(PRODUCERS);
            producers[i].kill();
            producer_kills += 1;
            producers[i] = producer();
        } else {
            let i = rng.below(CONSUMERS);
            consumers[i].kill();
            consumer_kills += 1;
            consumers[i] = consumer(&mut records);
        }
    }
    // Everyone dies; the sweep repairs what they held; a live consumer drains.
    for k in &mut producers {
        k.kill();
        producer_kills += 1;
    }
    for k in &mut consumers {
        k.kill();
        consumer_kills += 1;
    }
    ring.sweep().unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut drained = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => drained.push((m.producer, m.seq)),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the drain wedged after {} messages", drained.len())
            }
        }
    }

    // What each consumer process took, in its order; the drain is one more consumer.
    let mut torn = 0;
    let mut lists: Vec<Vec<(u64, u64)>> = records
        .paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap_or_default();
            torn += usize::from(bytes.len() % RECORD != 0);
            bytes
                .chunks_exact(RECORD)
                .map(|r| {
                    (
                        u64::from_le_bytes(r[..8].try_into().unwrap()),
                        u64::from_le_bytes(r[8..].try_into().unwrap()),
                    )
                })
                .collect()
        })
        .collect();
    lists.push(drained);

    let info = ring.info().ring.unwrap();
    // Order: within one consumer, each producer's sequence numbers increase, except a
    // redelivered message, which may come after later ones.
    let mut late = 0u64;
    let mut per: HashMap<u64, Vec<u64>> = HashMap::new();
    for list in &lists {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(p, seq) in list {
            match last.get(&p) {
                Some(&prev) if seq <= prev => late += 1,
                _ => {
                    last.insert(p, seq);
                }
            }
            per.entry(p).or_default().push(seq);
        }
    }
    let mut checked = 0;
    let mut duplicates = 0;
    for (id, seqs) in &mut per {
        assert!(
            (1..=next_producer).contains(id),
            "a message from no producer: {id}"
        );
        checked += seqs.len();
        seqs.sort_unstable();
        let before = seqs.len();
        seqs.dedup();
        duplicates += before - seqs.len();
        // A producer commits in order, so what it committed is a prefix 0..k: a gap is
        // a lost committed message.
        assert_eq!(
            *seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "producer {id}: a committed message was lost"
        );
    }
    println!(
        "{producer_kills} producer and {consumer_kills} consumer processes SIGKILLed, \
         {checked} messages checked from {} producers over {} consumers: \
         0 lost, {duplicates} duplicated (at-least-once redelivery of a recorded message), \
         {} redelivered, {late} redelivered out of order, {} positions skipped, \
         {torn} torn records, in {:?}",
        per.len(),
        lists.len(),
        info.redelivered,
        info.skipped,
        started.elapsed()
    );
    assert!(
        duplicates <= consumer_kills,
        "{duplicates} duplicates but only {consumer_kills} consumers killed"
    );
    assert!(
        duplicates as u64 <= info.redelivered && late <= info.redelivered,
        "{duplicates} duplicates and {late} out of order, {} redelivered",
        info.redelivered
    );
    assert!(checked > 0);
    drop((rx, ring));
    drop(records);
    assert_gone(&g.name);
}
