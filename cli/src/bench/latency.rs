//! Ping-pong latency: tally against two floors, a pipe and a Unix socket; and the cost
//! of waking a parked peer, tally against a raw futex wake.
//!
//! The floors: one cache line bounced between the two processes (each side reads the
//! line and writes it back), and two lines, one per direction (each side writes its
//! own line and reads the other's), the least a pair of rings can do. Where the two
//! CPUs do not share a cache complex the one-line floor is about twice as fast as the
//! two-line one, so the ring is judged against the two-line floor.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tally::{ByteRing, Region, Ring};

use super::progress::Progress;
use super::{
    BenchArgs, BenchError, Mode, Peer, bench_name, fill_payload, new_histogram, read_payload,
    summary,
};

/// Round trips timed before recording starts, as a fraction of `--iters`.
pub const WARMUP_DIV: u64 = 10;
/// Wake-ups measured for the parked-peer test, and the pause that lets the peer park.
const WAKE_ITERS: u64 = 2_000;
const WAKE_PAUSE: Duration = Duration::from_micros(300);

pub struct Report {
    pub tally: Histogram<u64>,
    pub floor: Histogram<u64>,
    pub two_line: Histogram<u64>,
    pub pipe: Histogram<u64>,
    pub uds: Histogram<u64>,
    pub wake_tally: Value,
    pub wake_futex: Value,
}

/// The floors and tally are measured in alternating rounds whose histograms are
/// merged, so a slow drift of this shared machine touches them alike.
pub const ROUNDS: u64 = 4;

/// Measurements of a latency run, for the progress count: three per round, then pipe,
/// socket and two wake tests.
pub const STEPS: u32 = 3 * ROUNDS as u32 + 4;

/// A one-line floor p50 below this (ns) means the two CPUs share a cache complex
/// (≈ 45 ns on this machine's EPYC); across complexes it is ≈ 110–190 ns.
const SHARED_CACHE_BELOW_NS: u64 = 80;

pub fn run(
    args: &BenchArgs,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let round_args = BenchArgs {
        iters: args.iters.div_ceil(ROUNDS),
        ..args.clone()
    };
    let mut floor_h = new_histogram();
    let mut two_line_h = new_histogram();
    let mut tally_h = new_histogram();
    for r in 1..=ROUNDS {
        progress.step(&format!("latency: floor, round {r} of {ROUNDS}"));
        floor_h.add(floor(&round_args, cpus)?)?;
        progress.step(&format!("latency: two-line floor, round {r} of {ROUNDS}"));
        two_line_h.add(two_line(&round_args, cpus)?)?;
        progress.step(&format!("latency: tally, round {r} of {ROUNDS}"));
        tally_h.add(tally_pingpong(&round_args, cpus)?)?;
    }
    let (floor, two_line, tally) = (floor_h, two_line_h, tally_h);
    progress.step("latency: pipe");
    let pipe = pipe(args, cpus)?;
    progress.step("latency: unix socket");
    let uds = uds(args, cpus)?;
    progress.step("latency: waking a parked tally consumer");
    let wake_tally = wake(Mode::TallyWake, args, cpus)?;
    progress.step("latency: waking a futex waiter");
    let wake_futex = wake(Mode::FutexWake, args, cpus)?;
    Ok(Report {
        tally,
        floor,
        two_line,
        pipe,
        uds,
        wake_tally,
        wake_futex,
    })
}

/// Times `iters` round trips of `round_trip(i)` after a warm-up; records RTT / 2.
pub fn measure(
    args: &BenchArgs,
    mut round_trip: impl FnMut(u64) -> Result<(), BenchError>,
) -> Result<Histogram<u64>, BenchError> {
    let mut h = new_histogram();
    let warmup = args.iters / WARMUP_DIV;
    for i in 0..warmup + args.iters {
        let t0 = Instant::now();
        round_trip(i)?;
        let rtt = t0.elapsed().as_nanos() as u64;
        if i >= warmup {
            h.record((rtt / 2).max(1))?;
        }
    }
    Ok(h)
}

pub(super) fn floor(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
    let name = bench_name("floor");
    let region = Region::create(&name, 128)?;
    // SAFETY: the region is 128-byte aligned and at least 8 bytes long, and lives
    // until the end of this function; the peer only touches it atomically.
    let word = unsafe { &*(region.as_ptr() as *const AtomicU64) };
    let peer = Peer::spawn(Mode::Floor, &name, args.payload, cpus.1, &[])?;
    let h = measure(args, |i| {
        word.store(2 * i + 1, Ordering::Release);
        while word.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
        Ok(())
    })?;
    word.store(u64::MAX, Ordering::Release);
    peer.finish()?;
    Ok(h)
}

/// Offsets of the two words of the two-line floor: 128 bytes apart, so not even an
/// adjacent-line prefetcher pairs them.
pub const TWO_LINE_PING: usize = 0;
pub const TWO_LINE_PONG: usize = 128;

/// Each direction has a cache line of its own, one word in it: this side writes the
/// ping line and polls the pong line, the peer the other way round.
pub fn two_line(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
    let name = bench_name("twoline");
    let region = Region::create(&name, 256)?;
    // SAFETY: the region is 128-byte aligned and 256 bytes long, so both words are in
    // bounds and aligned; it lives until the end of this function and the peer only
    // touches it atomically.
    let (ping, pong) = unsafe {
        (
            &*(region.as_ptr().add(TWO_LINE_PING) as *const AtomicU64),
            &*(region.as_ptr().add(TWO_LINE_PONG) as *const AtomicU64),
        )
    };
    let peer = Peer::spawn(Mode::TwoLine, &name, args.payload, cpus.1, &[])?;
    let h = measure(args, |i| {
        // SYNC POINT: pairs with the peer's Acquire load of ping.
        ping.store(i + 1, Ordering::Release);
        // SYNC POINT: pairs with the peer's Release store of pong.
        while pong.load(Ordering::Acquire) != i + 1 {
            std::hint::spin_loop();
        }
        Ok(())
    })?;
    ping.store(u64::MAX, Ordering::Release);
    peer.finish()?;
    Ok(h)
}

/// An 8-byte payload travels in a typed `Ring<u64>` (the API a user picks for a fixed
/// size); anything larger in a `ByteRing`.
fn tally_pingpong(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
    if args.payload == 8 {
        return tally_pingpong_u64(args, cpus);
    }
    let (ping_name, pong_name) = (bench_name("ping"), bench_name("pong"));
    // Ping-pong keeps one message in flight: a few slots suffice, and large payloads
    // stay within a few MiB.
    let slots = (4 << 20) / args.payload;
    let slots = slots.clamp(2, 64);
    let ping = ByteRing::create(&ping_name, slots, args.payload)?;
    let pong = ByteRing::create(&pong_name, slots, args.payload)?;
    let mut tx = ping.producer()?;
    let mut rx = pong.consumer()?;
    let peer = Peer::spawn(
        Mode::Tally,
        &ping_name,
        args.payload,
        cpus.1,
        &[("name2", pong_name.clone())],
    )?;
    let payload = args.payload;
    let h = measure(args, |i| {
        loop {
            if let Ok(mut slot) = tx.reserve(payload) {
                fill_payload(&mut slot, i);
                slot.commit();
                break;
            }
            std::hint::spin_loop();
        }
        loop {
            if let Ok(msg) = rx.peek() {
                let seq = read_payload(&msg);
                msg.release();
                if seq != i {
                    return Err(format!("tally ping-pong: got seq {seq}, expected {i}").into());
                }
                return Ok(());
            }
            std::hint::spin_loop();
        }
    })?;
    // A zero-length message tells the peer to stop.
    tx.send(&[]).map_err(|e| format!("stop message: {e}"))?;
    peer.finish()?;
    Ok(h)
}

fn tally_pingpong_u64(
    args: &BenchArgs,
    cpus: (usize, usize),
) -> Result<Histogram<u64>, BenchError> {
    let (ping_name, pong_name) = (bench_name("ping"), bench_name("pong"));
    let ping = Ring::<u64>::create(&ping_name, 64)?;
    let pong = Ring::<u64>::create(&pong_name, 64)?;
    let mut tx = ping.producer()?;
    let mut rx = pong.consumer()?;
    let peer = Peer::spawn(
        Mode::TallyU64,
        &ping_name,
        8,
        cpus.1,
        &[("name2", pong_name.clone())],
    )?;
    let h = measure(args, |i| {
        loop {
            if let Ok(mut slot) = tx.reserve() {
                *slot = i;
                slot.commit();
                break;
            }
            std::hint::spin_loop();
        }
        loop {
            if let Ok(msg) = rx.peek() {
                let seq = *msg;
                msg.release();
                if seq != i {
                    return Err(format!("tally ping-pong: got seq {seq}, expected {i}").into());
                }
                return Ok(());
            }
            std::hint::spin_loop();
        }
    })?;
    tx.send(u64::MAX)
        .map_err(|_| "stop message: consumer gone")?;
    peer.finish()?;
    Ok(h)
}

fn pipe(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
    let mut peer = Peer::spawn(Mode::Pipe, "pipe", args.payload, cpus.1, &[])?;
    let mut buf = vec![0u8; args.payload];
    let h = {
        let stdin = peer.stdin.as_mut().ok_or("peer stdin")?;
        let stdout = &mut peer.stdout;
        measure(args, |i| {
            fill_payload(&mut buf, i);
            stdin.write_all(&buf)?;
            stdout.read_exact(&mut buf)?;
            if read_payload(&buf) != i {
                return Err("pipe: sequence mismatch".into());
            }
            Ok(())
        })?
    };
    peer.finish()?;
    Ok(h)
}

fn uds(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
    let path = std::env::temp_dir().join(format!("{}.sock", bench_name("uds")));
    let listener = UnixListener::bind(&path)?;
    let peer = Peer::spawn(
        Mode::Uds,
        "uds",
        args.payload,
        cpus.1,
        &[("path", path.display().to_string())],
    );
    let accepted = peer.and_then(|p| Ok((p, listener.accept()?.0)));
    let _ = std::fs::remove_file(&path);
    let (peer, mut stream) = accepted?;
    let mut buf = vec![0u8; args.payload];
    let h = measure(args, |i| {
        fill_payload(&mut buf, i);
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        if read_payload(&buf) != i {
            return Err("uds: sequence mismatch".into());
        }
        Ok(())
    })?;
    drop(stream);
    peer.finish()?;
    Ok(h)
}

/// Wake-up of a parked peer: the sender pauses long enough for the receiver to sleep,
/// stamps CLOCK_MONOTONIC into the message, and the receiver records arrival − stamp.
fn wake(mode: Mode, args: &BenchArgs, cpus: (usize, usize)) -> Result<Value, BenchError> {
    let name = bench_name(if mode == Mode::TallyWake {
        "wake"
    } else {
        "futex"
    });
    let iters = WAKE_ITERS.min(args.iters);
    let mut peer;
    if mode == Mode::TallyWake {
        let ring = ByteRing::create(&name, 64, 8)?;
        let mut tx = ring.producer()?;
        peer = Peer::spawn(mode, &name, 8, cpus.1, &[])?;
        for _ in 0..iters {
            std::thread::sleep(WAKE_PAUSE);
            tx.send(&tally::__private::monotonic_ns().to_le_bytes())
                .map_err(|e| format!("wake send: {e}"))?;
        }
        tx.send(&[]).map_err(|e| format!("wake stop: {e}"))?;
        let line = peer.line()?;
        peer.finish()?;
        return Ok(serde_json::from_str(&line)?);
    }
    let region = Region::create(&name, 128)?;
    // SAFETY: 128-aligned region of 128 bytes: a u32 at 0 and a u64 at 8, both in
    // bounds and aligned; shared only through atomic operations.
    let (word, stamp) = unsafe {
        (
            &*(region.as_ptr() as *const AtomicU32),
            &*(region.as_ptr().add(8) as *const AtomicU64),
        )
    };
    peer = Peer::spawn(mode, &name, 8, cpus.1, &[])?;
    for i in 0..=iters {
        std::thread::sleep(WAKE_PAUSE);
        stamp.store(
            if i == iters {
                u64::MAX
            } else {
                tally::__private::monotonic_ns()
            },
            Ordering::Relaxed,
        );
        word.fetch_add(1, Ordering::Release);
        tally::__private::futex_wake(word, 1);
    }
    let line = peer.line()?;
    peer.finish()?;
    Ok(serde_json::from_str(&line)?)
}

fn ratio(a: u64, b: u64) -> f64 {
    let r = a as f64 / b.max(1) as f64;
    // Three significant digits, so 0.000125 does not print as 0.00.
    let scale = 10f64.powi(2 - r.abs().max(1e-12).log10().floor() as i32);
    (r * scale).round() / scale
}

/// Where the two CPUs sat relative to each other, judged by the one-line floor.
pub fn placement(r: &Report) -> &'static str {
    if r.floor.value_at_quantile(0.5) < SHARED_CACHE_BELOW_NS {
        "shared-cache"
    } else {
        "cross-complex"
    }
}

pub fn to_json(r: &Report, args: &BenchArgs) -> Value {
    let mut v = summary(&r.tally);
    let t50 = r.tally.value_at_quantile(0.5);
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5);
    v["payload_bytes"] = json!(args.payload);
    v["iters"] = json!(args.iters);
    v["baselines"] = json!({
        "floor": summary(&r.floor),
        "two_line": summary(&r.two_line),
        "pipe": summary(&r.pipe),
        "uds": summary(&r.uds),
    });
    v["ratios_p50_vs_tally"] = json!({
        "floor": ratio(p50(&r.floor), t50),
        "two_line": ratio(p50(&r.two_line), t50),
        "pipe": ratio(p50(&r.pipe), t50),
        "uds": ratio(p50(&r.uds), t50),
    });
    v["tally_p50_vs_two_line_p50"] = json!(ratio(t50, p50(&r.two_line)));
    v["tally_p50_vs_floor_p50"] = json!(ratio(t50, p50(&r.floor)));
    v["placement"] = json!(placement(r));
    v["wake"] = json!({ "tally": r.wake_tally, "futex": r.wake_futex });
    v["method"] = json!(
        "one-way = round trip / 2; the sender writes the whole payload, the receiver reads all of it and echoes it back"
    );
    v
}

/// The rows of the latency table: README's names, in README's order.
fn rows(r: &Report) -> [(&'static str, &Histogram<u64>); 5] {
    [
        ("floor (one shared cache line)", &r.floor),
        ("two lines (one per direction)", &r.two_line),
        ("tally", &r.tally),
        ("pipe", &r.pipe),
        ("unix socket", &r.uds),
    ]
}

pub fn print(r: &Report, args: &BenchArgs, cpus: (usize, usize)) {
    println!(
        "Latency, {} B payload, {} round trips (ns; +{} warm-up; floors and tally in {} alternating rounds); one-way = RTT/2, CPUs {},{}",
        args.payload,
        args.iters,
        args.iters / WARMUP_DIV,
        ROUNDS,
        cpus.0,
        cpus.1
    );
    println!(
        "the sender writes the whole payload; the receiver reads all of it and echoes it ({})",
        if args.payload == 8 {
            "tally: Ring<u64>"
        } else {
            "tally: ByteRing"
        }
    );
    println!();
    let floor50 = r.floor.value_at_quantile(0.5);
    let two50 = r.two_line.value_at_quantile(0.5);
    println!(
        "{:<30} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>16} {:>19}",
        "", "p50", "p90", "p99", "p99.9", "max", "mean", "p50 / floor p50", "p50 / two-line p50"
    );
    for (name, h) in rows(r) {
        let p50 = h.value_at_quantile(0.5);
        println!(
            "{:<30} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9.1} {:>16.2} {:>19.2}",
            name,
            p50,
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean(),
            ratio(p50, floor50),
            ratio(p50, two50),
        );
    }
    println!();
    let t50 = r.tally.value_at_quantile(0.5);
    println!(
        "placement: {} (one-line floor p50 {floor50} ns, {} {SHARED_CACHE_BELOW_NS} ns: {})",
        placement(r),
        if floor50 < SHARED_CACHE_BELOW_NS {
            "below"
        } else {
            "at or above"
        },
        if floor50 < SHARED_CACHE_BELOW_NS {
            "the two CPUs share a cache complex"
        } else {
            "the two CPUs sit in different cache complexes, where one line is about twice as fast as a line per direction"
        }
    );
    println!(
        "tally p50 is {:.2} x the two-line floor (each direction its own cache line, the least a ring pair can do) and {:.2} x the one-line floor",
        ratio(t50, two50),
        ratio(t50, floor50)
    );
    let w = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "wake of a parked peer (sender stamps, receiver subtracts; {} wakes): tally p50 {} ns, p99 {} ns; raw futex p50 {} ns, p99 {} ns ({:.2} x)",
        WAKE_ITERS.min(args.iters),
        w(&r.wake_tally, "p50_ns"),
        w(&r.wake_tally, "p99_ns"),
        w(&r.wake_futex, "p50_ns"),
        w(&r.wake_futex, "p99_ns"),
        ratio(w(&r.wake_tally, "p50_ns"), w(&r.wake_futex, "p50_ns"))
    );
    println!();
}
