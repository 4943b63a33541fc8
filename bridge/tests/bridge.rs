//! The bridge end to end on one machine: producer -> ring A -> `tally-bridge export`
//! -> Zenoh over localhost TCP -> `tally-bridge import` -> ring B -> consumer, checking
//! every sequence number; each bridge killed with SIGKILL and restarted; a mismatched
//! payload refused; usage errors.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Guard, QUIET, READY, assert_gone, export, free_port, import, kill_and_restart, state_file,
    unique,
};
use tally::{Message, Ring};

/// Opens ring `name` once the importer has created it.
fn open_when_there(name: &str) -> Ring<u64> {
    let deadline = Instant::now() + READY;
    loop {
        match Ring::<u64>::open(name) {
            Ok(r) => return r,
            Err(tally::Error::NotFound(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("ring {name}: {e}"),
        }
    }
}

/// Sends 0..n into ring A (value = its position in the ring) on a thread.
fn produce<'a>(ring: &'a Ring<u64>, n: u64, sent: &'a AtomicU64) -> impl FnOnce() + Send + 'a {
    move || {
        let mut tx = ring.producer().expect("producer of A");
        for i in 0..n {
            // A full ring whose consumer (the exporter) died reports it; the producer
            // waits for the next consumer and goes on: a role changing hands.
            while tx.send(i).is_err() {
                assert!(
                    tx.wait_for_consumer(Duration::from_secs(30)),
                    "no exporter came back"
                );
            }
            sent.store(i + 1, Ordering::Relaxed);
        }
    }
}

/// Receives from ring B until `last` arrives or `timeout` passes: the values in order.
fn consume(
    rx: &mut tally::Consumer<u64>,
    last: u64,
    seen: &AtomicU64,
    timeout: Duration,
) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(v) => {
                got.push(v);
                seen.store(got.len() as u64, Ordering::Relaxed);
                if v == last {
                    return got;
                }
            }
            Err(_) => continue,
        }
    }
    panic!(
        "ring B: {} values within {timeout:?}, the last {:?}; {last} never came",
        got.len(),
        got.last()
    );
}

/// `got` is 0..n, in order, once each (the first difference named, not the whole list).
fn assert_all(got: &[u64], n: u64) {
    if let Some(i) = (0..n as usize).find(|&i| got.get(i) != Some(&(i as u64))) {
        panic!(
            "ring B: at index {i} expected {i}, got {:?} (around it: {:?}); {} values in all",
            got.get(i),
            &got[i.saturating_sub(3)..(i + 3).min(got.len())],
            got.len()
        );
    }
    assert_eq!(got.len() as u64, n, "values after the last");
}

#[test]
fn every_message_arrives_in_order() {
    const N: u64 = 20_000;
    let (a, b) = (Guard(unique("a")), Guard(unique("b")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = Ring::<u64>::create(&a.0, 256).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    let ready = importer.expect("ready", READY);
    assert_eq!(ready["schema"], u64::schema().canonical());
    let ring_b = open_when_there(&b.0);
    assert_eq!(ring_b.capacity(), 256, "the exporter's capacity");
    let mut rx = ring_b.consumer().unwrap();
    let (sent, seen) = (AtomicU64::new(0), AtomicU64::new(0));
    let got = std::thread::scope(|s| {
        s.spawn(produce(&ring_a, N, &sent));
        consume(&mut rx, N - 1, &seen, Duration::from_secs(60))
    });
    assert_all(&got, N);

    let imp = importer.terminate();
    let exp = exporter.terminate();
    assert_eq!(imp["written"], N);
    assert_eq!(imp["gaps"], 0);
    assert_eq!(imp["missing"], 0);
    assert_eq!(imp["duplicates"], 0);
    assert_eq!(imp["sessions"], 1);
    assert_eq!(exp["published"], N);
    drop((rx, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn exporter_killed_and_restarted_loses_nothing() {
    const N: u64 = 30_000;
    let (a, b) = (Guard(unique("xa")), Guard(unique("xb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = Ring::<u64>::create(&a.0, 64).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    importer.expect("ready", READY);
    let ring_b = open_when_there(&b.0);
    let mut rx = ring_b.consumer().unwrap();
    let (sent, seen) = (AtomicU64::new(0), AtomicU64::new(0));
    let (got, exporter) = kill_and_restart(
        &seen,
        N / 3,
        exporter,
        || export(&a.0, &key, port),
        produce(&ring_a, N, &sent),
        || consume(&mut rx, N - 1, &seen, Duration::from_secs(90)),
    );
    assert_all(&got, N);
    let imp = importer.terminate();
    let exp = exporter.terminate();
    eprintln!("exporter restart: importer {imp}, exporter {exp}");
    assert_eq!(imp["written"], N);
    assert_eq!(imp["gaps"], 0, "{imp}");
    assert_eq!(imp["missing"], 0, "{imp}");
    // Republished by the new exporter: at most a ring A's worth, dropped by sequence.
    assert!(imp["duplicates"].as_u64().unwrap() <= 64, "{imp}");
    assert_eq!(imp["sessions"], 2, "{imp}");
    drop((rx, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn importer_killed_and_restarted_loses_nothing() {
    const N: u64 = 30_000;
    let (a, b) = (Guard(unique("ia")), Guard(unique("ib")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let (dir, state_arg) = state_file();
    let ring_a = Ring::<u64>::create(&a.0, 64).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &["--state", &state_arg]);
    importer.expect("ready", READY);
    let ring_b = open_when_there(&b.0);
    let mut rx = ring_b.consumer().unwrap();
    let (sent, seen) = (AtomicU64::new(0), AtomicU64::new(0));
    let (got, importer) = kill_and_restart(
        &seen,
        N / 3,
        importer,
        || {
            let mut again = import(&b.0, &key, port, &["--state", &state_arg]);
            again.expect("ready", READY);
            again
        },
        produce(&ring_a, N, &sent),
        || consume(&mut rx, N - 1, &seen, Duration::from_secs(90)),
    );
    // The exporter keeps what is not acknowledged and sends it to the new importer,
    // which drops what it already wrote (its state file says where it stopped).
    assert_all(&got, N);
    let imp = importer.terminate();
    let exp = exporter.terminate();
    eprintln!("importer restart: importer {imp}, exporter {exp}");
    assert_eq!(imp["gaps"], 0, "{imp}");
    assert_eq!(imp["missing"], 0, "{imp}");
    drop((rx, ring_b, ring_a));
    let _ = std::fs::remove_dir_all(&dir);
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn a_mismatched_payload_is_refused() {
    let (a, b) = (Guard(unique("ma")), Guard(unique("mb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = Ring::<u64>::create(&a.0, 8).unwrap();
    let ring_b = Ring::<u32>::create(&b.0, 8).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    importer.expect("ready", READY);
    ring_a.producer().unwrap().send(7).unwrap();
    let status = importer.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", importer.stderr());
    let err = importer.stderr();
    assert!(
        err.contains("tally-bridge: error: layout mismatch")
            && err.contains("u32")
            && err.contains("u64"),
        "{err}"
    );
    assert!(
        ring_b.consumer().unwrap().try_recv().is_err(),
        "nothing was written"
    );

    // Told a schema that does not match ring B: refused before anything runs.
    let mut again = import(&b.0, &key, port, &["--schema", "u64", "--capacity", "8"]);
    let status = again.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    assert!(
        again.stderr().contains("LayoutMismatch") || again.stderr().contains("layout"),
        "{}",
        again.stderr()
    );
    exporter.terminate();
    drop((ring_a, ring_b));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        vec!["export", "x"],
        vec!["import", "x"],
        vec!["export", "x", "--key", "k", "--mode", "router"],
        vec!["export", "x", "--key", "k", "--cfg", "nonsense"],
        vec![
            "export",
            "x",
            "--key",
            "k",
            "--config",
            "/nonexistent/zenoh.json5",
        ],
        vec!["import", "--key", "k", "x", "--schema", "u64"],
        vec!["import", "--key", "k", "x", "--wait", "-1"],
        vec![
            "import", "--key", "k", "x", "--kind", "ring", "--policy", "lossy",
        ],
        vec!["import", "--key", "k", "x", "--policy", "sometimes"],
        vec!["import", "--key", "k", "x", "--kind", "mpmc"],
        vec!["frobnicate"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally-bridge"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("tally-bridge: error: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally-bridge"))
        .args(["export", &unique("missing"), "--key", "k"])
        .args(QUIET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn byte_rings_are_bridged_message_by_message() {
    const N: u64 = 5_000;
    let (a, b) = (Guard(unique("ba")), Guard(unique("bb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = tally::ByteRing::create(&a.0, 64, 32).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    let ready = importer.expect("ready", READY);
    assert_eq!(ready["schema"], "bytes");
    let ring_b = tally::ByteRing::open(&b.0).expect("the importer created ring B");
    assert_eq!(ring_b.max_message(), 32);
    assert_eq!(ring_b.capacity(), 64);
    let msg = |i: u64| -> Vec<u8> {
        let text = format!("m{i}");
        text.repeat(1 + (i % 5) as usize).into_bytes()[..]
            .iter()
            .take(32)
            .copied()
            .collect()
    };
    let mut rx = ring_b.consumer().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut tx = ring_a.producer().unwrap();
            for i in 0..N {
                tx.send(&msg(i)).unwrap();
            }
            tx
        });
        for i in 0..N {
            let got = rx
                .peek_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("message {i}: {e:?}"));
            assert_eq!(&*got, &msg(i)[..], "message {i}");
            got.release();
        }
    });
    let imp = importer.terminate();
    let exp = exporter.terminate();
    assert_eq!(imp["written"], N);
    assert_eq!(imp["gaps"], 0);
    assert_eq!(exp["published"], N);
    drop((rx, ring_b, ring_a));
    assert_gone(&a.0);
    assert_gone(&b.0);
}

#[test]
fn a_typed_importer_refuses_a_byte_ring() {
    let (a, b) = (Guard(unique("bma")), Guard(unique("bmb")));
    let key = format!("tally/test/{}", a.0);
    let port = free_port();
    let ring_a = tally::ByteRing::create(&a.0, 8, 16).unwrap();
    let ring_b = Ring::<u64>::create(&b.0, 8).unwrap();
    let exporter = export(&a.0, &key, port);
    let mut importer = import(&b.0, &key, port, &[]);
    importer.expect("ready", READY);
    ring_a.producer().unwrap().send(b"12345678").unwrap();
    let status = importer.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", importer.stderr());
    let err = importer.stderr();
    assert!(
        err.contains("layout mismatch") && err.contains("bytes"),
        "{err}"
    );
    exporter.terminate();
    drop((ring_a, ring_b));
    assert_gone(&a.0);
    assert_gone(&b.0);
}
