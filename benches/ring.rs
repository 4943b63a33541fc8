//! Criterion benchmarks of the typed ring's hot paths.
//!
//! ```text
//! cargo bench --bench ring              # about half a minute
//! cargo bench --bench ring -- --quick   # a rough pass
//! ```
//!
//! - `ring_single_thread/*`: one thread produces and consumes on the same `Ring<u64>`,
//!   so the cache lines never move between cores. This is the cost of the operations
//!   themselves: `try_send` + `try_recv`, and zero-copy `reserve`/`commit` +
//!   `peek`/`release`.
//! - `ring_batch/*`: the same with 64 messages at a time through
//!   `reserve_many`/`peek_many` (throughput is reported per message).
//! - `ring_round_trip/cross_process`: a message to a peer process (this binary
//!   re-executed) and its echo back over two rings, timed with `iter_custom`. The
//!   pinned, side-by-side comparison against the floor, pipes and sockets is
//!   `tally bench latency`.
//!
//! Ring names include the process id, and every ring is dropped before its benchmark
//! function returns, so nothing is left in `/dev/shm`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use criterion::{Criterion, Throughput, criterion_group};
use tally::{Consumer, Producer, Ring, TryRecvError};

const CAPACITY: usize = 1024;
const BATCH: usize = 64;

fn unique(tag: &str) -> String {
    format!("bench-ring-{tag}-{}", std::process::id())
}

fn single_thread(c: &mut Criterion) {
    let ring = Ring::<u64>::create(&unique("single"), CAPACITY).expect("create ring");
    let mut tx = ring.producer().expect("producer");
    let mut rx = ring.consumer().expect("consumer");

    let mut g = c.benchmark_group("ring_single_thread");
    g.throughput(Throughput::Elements(1));
    g.bench_function("try_send_try_recv", |b| {
        let mut v = 0u64;
        b.iter(|| {
            tx.try_send(black_box(v)).expect("ring has room");
            v = v.wrapping_add(1);
            rx.try_recv().expect("a message is committed")
        })
    });
    g.bench_function("reserve_commit_peek_release", |b| {
        let mut v = 0u64;
        b.iter(|| {
            let mut slot = tx.reserve().expect("ring has room");
            *slot = black_box(v);
            slot.commit();
            v = v.wrapping_add(1);
            let msg = rx.peek().expect("a message is committed");
            let got = *msg;
            msg.release();
            got
        })
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let ring = Ring::<u64>::create(&unique("batch"), CAPACITY).expect("create ring");
    let mut tx = ring.producer().expect("producer");
    let mut rx = ring.consumer().expect("consumer");

    let mut g = c.benchmark_group("ring_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("reserve_many_peek_many_64", |b| {
        let mut base = 0u64;
        b.iter(|| {
            let mut w = tx.reserve_many(BATCH).expect("ring has room");
            assert_eq!(w.len(), BATCH);
            w.fill_with(|i| base + i as u64);
            w.commit();
            base = base.wrapping_add(BATCH as u64);
            let r = rx.peek_many(BATCH).expect("messages are committed");
            let sum = r.iter().fold(0u64, |acc, &v| acc.wrapping_add(v));
            r.release();
            sum
        })
    });
    g.finish();
}

/// Echoes every value from `rx` to `tx`, spinning, until `rx`'s producer goes.
fn echo(mut rx: Consumer<u64>, mut tx: Producer<u64>) {
    loop {
        match rx.try_recv() {
            Ok(v) => {
                let mut v = v;
                loop {
                    match tx.try_send(v) {
                        Ok(()) => break,
                        Err(tally::TrySendError::Full(back)) => {
                            v = back;
                            std::hint::spin_loop();
                        }
                        Err(tally::TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

/// Environment variable that turns this bench binary into the echo peer process.
const PEER_ENV: &str = "TALLY_BENCH_ECHO_PEER";

/// The peer process: opens the two rings named in `PEER_ENV`, says `ready`, echoes.
fn run_peer(names: &str) {
    let (ping, pong) = names.split_once(',').expect("PEER_ENV holds 'ping,pong'");
    let ping = Ring::<u64>::open(ping).expect("open ping");
    let pong = Ring::<u64>::open(pong).expect("open pong");
    let (rx, tx) = (
        ping.consumer().expect("consumer"),
        pong.producer().expect("producer"),
    );
    // Pinned like `tally bench`: the peer on CPU 1, the timing side on CPU 0.
    let _ = tally::__private::pin_to_cpu(1);
    println!("ready");
    echo(rx, tx);
}

fn round_trip(c: &mut Criterion) {
    let (ping_name, pong_name) = (unique("ping"), unique("pong"));
    let ping = Ring::<u64>::create(&ping_name, CAPACITY).expect("create ring");
    let pong = Ring::<u64>::create(&pong_name, CAPACITY).expect("create ring");
    let mut tx = ping.producer().expect("producer");
    let mut rx = pong.consumer().expect("consumer");
    // The peer is this bench binary re-executed, so the round trip crosses processes.
    let mut peer = Command::new(std::env::current_exe().expect("own executable"))
        .env(PEER_ENV, format!("{ping_name},{pong_name}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn echo peer");
    let mut line = String::new();
    BufReader::new(peer.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("peer says ready");
    assert_eq!(line.trim(), "ready", "echo peer failed to start");
    let _ = tally::__private::pin_to_cpu(0);

    let mut g = c.benchmark_group("ring_round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cross_process", |b| {
        let mut v = 0u64;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                tx.try_send(v)
                    .expect("one message in flight: ring has room");
                let echo = loop {
                    match rx.try_recv() {
                        Ok(e) => break e,
                        Err(TryRecvError::Empty) => std::hint::spin_loop(),
                        Err(TryRecvError::Disconnected) => panic!("echo peer went away"),
                    }
                };
                debug_assert_eq!(echo, v);
                v = v.wrapping_add(1);
            }
            start.elapsed()
        })
    });
    g.finish();

    // Dropping our producer ends the echo peer; then every ring handle goes.
    drop(tx);
    assert!(
        peer.wait().expect("wait for echo peer").success(),
        "echo peer failed"
    );
    drop(rx);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_thread, batch, round_trip
}

fn main() {
    if let Ok(names) = std::env::var(PEER_ENV) {
        run_peer(&names);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
