//! Broadcast rings through the bridge: publisher -> broadcast ring A -> `tally-bridge
//! export` (one subscriber of A) -> Zenoh over localhost TCP -> `tally-bridge import`
//! (the publisher of broadcast ring B) -> two subscribers of B, checking every
//! sequence; the exporter killed with SIGKILL and restarted (at most a ring lost, and
//! every loss counted); a lossy ring overrunning a stopped exporter, where the gap is
//! counted on both sides and nothing else is lost; the importer killed and restarted
//! (nothing lost).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Guard, READY, assert_gone, export, free_port, import, kill_and_restart, state_file, unique,
};
use tally::{
    Broadcast, BroadcastRecvTimeoutError, ByteBroadcast, Message, Policy, Start, Subscriber,
};

/// Opens broadcast ring `name` once the importer has created it.
fn open_when_there<T: Message>(name: &str) -> Broadcast<T> {
    let deadline = Instant::now() + READY;
    loop {
        match Broadcast::<T>::open(name) {
            Ok(r) => return r,
            Err(tally::Error::NotFound(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("broadcast ring {name}: {e}"),
        }
    }
}

/// Publishes 0..n into ring A (value = its position), only while someone subscribes:
/// a publisher whose only subscriber (the exporter) died waits for the next one.
fn publish(ring: &Broadcast<u64>, n: u64) -> impl FnOnce() + Send + '_ {
    move || {
        let mut tx = ring.publisher().expect("publisher of A");
        for i in 0..n {
            while tx.subscribers() == 0 {
                assert!(
                    tx.wait_for_subscribers(1, Duration::from_secs(30)),
                    "no exporter came back"
                );
            }
            tx.send(i);
        }
    }
}

/// Receives from a subscriber of B until `last` arrives: the values in order. The
/// importer (B's publisher) may change hands; `Disconnected` meanwhile is waited out.
fn receive(rx: &mut Subscriber<u64>, last: u64, seen: &AtomicU64) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(v) => {
                got.push(v);
                seen.fetch_max(got.len() as u64, Ordering::Relaxed);
                if v == last {
                    return got;
                }
            }
            Err(BroadcastRecvTimeoutError::Lagged(n)) => {
                panic!("a subscriber of lossless ring B lagged by {n}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    panic!(
        "ring B: {} values, the last {:?}; {last} never came",
        got.len(),
        got.last()
    );
}

/// `got` rises strictly and ends at `n - 1`; returns (messages missing, jumps).
fn missing_and_jumps(got: &[u64], n: u64) -> (u64, u64) {
    let mut jumps = 0;
    let mut expect = got[0];
    for (i, &v) in got.iter().enumerate() {
        assert!(
            v >= expect,
            "ring B: out of order or twice at index {i}: {v} after {}",
            expect - 1
        );
        if v > expect {
            jumps += 1;
        }
        expect = v + 1;
    }
    assert_eq!(expect, n, "the last value");
    (n - got.len() as u64, jumps)
}

#[test]
fn a_broadcast_ring_arrives_in_order_at_every_subscriber() {
    const N: u64 = 20_000;
    let (a, b) = (Guard(unique("ba")), Guard(unique("bb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = Broadcast::<u64>::create(&a.0, 256, Policy::Lossless).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    let ready = importer.expect("ready", READY);
    assert_eq!(ready["schema"], u64::schema().canonical());
    let ring_b = open_when_there::<u64>(&b.0);
    assert_eq!(ring_b.capacity(), 256, "the exporter's capacity");
    assert_eq!(ring_b.policy(), Policy::Lossless, "the exporter's policy");
    let mut rx1 = ring_b.subscribe(Start::Oldest).unwrap();
    let mut rx2 = ring_b.subscribe(Start::Oldest).unwrap();
    let seen = AtomicU64::new(0);
    let (got1, got2) = std::thread::scope(|s| {
        s.spawn(publish(&ring_a, N));
        let one = s.spawn(|| receive(&mut rx1, N - 1, &seen));
        let two = receive(&mut rx2, N - 1, &seen);
        (one.join().unwrap(), two)
    });
    for got in [&got1, &got2] {
        assert_eq!(got.first(), Some(&0));
        assert_eq!(missing_and_jumps(got, N), (0, 0));
    }
    let imp = importer.terminate();
    let exp = exporter.terminate();
    assert_eq!(exp["kind"], "broadcast");
    assert_eq!(exp["published"], N);
    assert_eq!(imp["written"], N);
    assert_eq!(imp["gaps"], 0, "{imp}");
    assert_eq!(imp["missing"], 0, "{imp}");
    drop((rx1, rx2, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn a_restarted_broadcast_exporter_resumes_and_counts_any_loss() {
    const N: u64 = 30_000;
    let (a, b) = (Guard(unique("bxa")), Guard(unique("bxb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = Broadcast::<u64>::create(&a.0, 64, Policy::Lossless).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    importer.expect("ready", READY);
    let ring_b = open_when_there::<u64>(&b.0);
    let mut rx = ring_b.subscribe(Start::Oldest).unwrap();
    let seen = AtomicU64::new(0);
    let (got, exporter) = kill_and_restart(
        &seen,
        N / 3,
        exporter,
        || export(&a.0, &key, port),
        publish(&ring_a, N),
        || receive(&mut rx, N - 1, &seen),
    );
    let imp = importer.terminate();
    let exp = exporter.terminate();
    eprintln!("broadcast exporter restart: importer {imp}, exporter {exp}");
    // In order, never twice; whatever is missing the importer counted as a gap. The
    // dead exporter held the publisher back until its cursor was dropped; from then
    // until the new exporter joined, the publisher could overwrite at most a ring.
    let (missing, jumps) = missing_and_jumps(&got, N);
    assert!(missing <= 64, "more than a ring lost: {missing}");
    assert_eq!(got.first(), Some(&0));
    assert_eq!(imp["missing"], missing, "{imp}");
    assert_eq!(imp["gaps"], jumps, "{imp}");
    assert_eq!(imp["written"], got.len() as u64, "{imp}");
    assert_eq!(imp["sessions"], 2, "{imp}");
    drop((rx, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn a_restarted_broadcast_importer_loses_nothing() {
    const N: u64 = 30_000;
    let (a, b) = (Guard(unique("bia")), Guard(unique("bib")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let (dir, state_arg) = state_file();
    let ring_a = Broadcast::<u64>::create(&a.0, 64, Policy::Lossless).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &["--state", &state_arg]);
    importer.expect("ready", READY);
    let ring_b = open_when_there::<u64>(&b.0);
    let mut rx = ring_b.subscribe(Start::Oldest).unwrap();
    let seen = AtomicU64::new(0);
    let (got, importer) = kill_and_restart(
        &seen,
        N / 3,
        importer,
        || {
            let mut again = import(&b.0, &key, port, &["--state", &state_arg]);
            again.expect("ready", READY);
            again
        },
        publish(&ring_a, N),
        || receive(&mut rx, N - 1, &seen),
    );
    // The exporter held back what was not acknowledged and sends it to the new
    // importer (B's new publisher), which drops what it already wrote.
    assert_eq!(got.first(), Some(&0));
    assert_eq!(missing_and_jumps(&got, N), (0, 0));
    let imp = importer.terminate();
    let exp = exporter.terminate();
    eprintln!("broadcast importer restart: importer {imp}, exporter {exp}");
    assert_eq!(imp["gaps"], 0, "{imp}");
    assert_eq!(imp["missing"], 0, "{imp}");
    drop((rx, ring_b, ring_a));
    let _ = std::fs::remove_dir_all(&dir);
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn a_lossy_ring_overrunning_a_stopped_exporter_is_one_counted_gap() {
    const FIRST: u64 = 100;
    const CAPACITY: usize = 16;
    const OVERRUN: u64 = 3 * CAPACITY as u64;
    let (a, b) = (Guard(unique("bla")), Guard(unique("blb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = ByteBroadcast::create(&a.0, CAPACITY, 32, Policy::Lossy).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    let ready = importer.expect("ready", READY);
    assert_eq!(ready["schema"], "bytes");
    let ring_b = loop {
        match ByteBroadcast::open(&b.0) {
            Ok(r) => break r,
            Err(tally::Error::NotFound(_)) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ring_b.policy(), Policy::Lossy);
    assert_eq!(ring_b.max_message(), 32);
    let mut rx = ring_b.subscribe(Start::Oldest).unwrap();
    let mut tx = ring_a.publisher().unwrap();
    let message = |i: u64| format!("msg {i}").into_bytes();
    let mut buf = Vec::new();
    let mut next = |rx: &mut tally::ByteSubscriber| {
        rx.recv_timeout_into(&mut buf, READY)
            .unwrap_or_else(|e| panic!("ring B: {e}"));
        buf.clone()
    };
    // The exporter must be reading before the first message (a lossy publisher does
    // not wait for anyone).
    assert!(tx.wait_for_subscribers(1, READY), "the exporter subscribes");
    // In lockstep, so the lossy publisher never laps the exporter here.
    for i in 0..FIRST {
        tx.send(&message(i)).unwrap();
        assert_eq!(next(&mut rx), message(i));
    }
    // The exporter stops; the publisher laps it three times over.
    let pid = exporter.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for i in FIRST..FIRST + OVERRUN {
        tx.send(&message(i)).unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let last = FIRST + OVERRUN;
    tx.send(&message(last)).unwrap();
    // What is still in A after the overrun arrives, in order; the rest is one gap.
    let mut got = Vec::new();
    loop {
        let m = next(&mut rx);
        let done = m == message(last);
        got.push(m);
        if done {
            break;
        }
    }
    let first_after = String::from_utf8(got[0].clone()).unwrap();
    let first_after: u64 = first_after["msg ".len()..].parse().unwrap();
    assert!(
        first_after > FIRST && first_after <= last - CAPACITY as u64 + 1,
        "after the overrun the exporter resumes at the oldest message left, got {first_after}"
    );
    for (k, m) in got.iter().enumerate() {
        assert_eq!(
            m,
            &message(first_after + k as u64),
            "in order after the gap"
        );
    }
    let imp = importer.terminate();
    let exp = exporter.terminate();
    eprintln!("lossy overrun: importer {imp}, exporter {exp}");
    assert_eq!(imp["gaps"], 1, "{imp}");
    assert_eq!(imp["missing"], first_after - FIRST, "{imp}");
    assert_eq!(exp["lagged"], first_after - FIRST, "{exp}");
    drop((rx, tx, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}
