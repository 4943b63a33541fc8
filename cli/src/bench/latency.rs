//! Ping-pong latency: tally against the floor, a pipe and a Unix socket; and the cost
//! of waking a parked peer, tally against a raw futex wake.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tally::{ByteRing, Region, Ring};

use super::{
    BenchArgs, BenchError, Mode, Peer, bench_name, fill_payload, new_histogram, read_payload,
    summary,
};

/// Round trips timed before recording starts, as a fraction of `--iters`.
const WARMUP_DIV: u64 = 10;
/// Wake-ups measured for the parked-peer test, and the pause that lets the peer park.
const WAKE_ITERS: u64 = 2_000;
const WAKE_PAUSE: Duration = Duration::from_micros(300);

pub struct Report {
    pub tally: Histogram<u64>,
    pub floor: Histogram<u64>,
    pub pipe: Histogram<u64>,
    pub uds: Histogram<u64>,
    pub wake_tally: Value,
    pub wake_futex: Value,
}

/// The floor and tally are measured in alternating rounds whose histograms are
/// merged, so a slow drift of this shared machine touches both alike.
const ROUNDS: u64 = 4;

pub fn run(args: &BenchArgs, cpus: (usize, usize)) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let round_args = BenchArgs {
        iters: args.iters.div_ceil(ROUNDS),
        ..args.clone()
    };
    let mut floor_h = new_histogram();
    let mut tally_h = new_histogram();
    for _ in 0..ROUNDS {
        floor_h.add(floor(&round_args, cpus)?)?;
        tally_h.add(tally_pingpong(&round_args, cpus)?)?;
    }
    let (floor, tally) = (floor_h, tally_h);
    let pipe = pipe(args, cpus)?;
    let uds = uds(args, cpus)?;
    let wake_tally = wake(Mode::TallyWake, args, cpus)?;
    let wake_futex = wake(Mode::FutexWake, args, cpus)?;
    Ok(Report {
        tally,
        floor,
        pipe,
        uds,
        wake_tally,
        wake_futex,
    })
}

/// Times `iters` round trips of `round_trip(i)` after a warm-up; records RTT / 2.
fn measure(
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

fn floor(args: &BenchArgs, cpus: (usize, usize)) -> Result<Histogram<u64>, BenchError> {
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

pub fn to_json(r: &Report, args: &BenchArgs) -> Value {
    let mut v = summary(&r.tally);
    let t50 = r.tally.value_at_quantile(0.5);
    v["payload_bytes"] = json!(args.payload);
    v["iters"] = json!(args.iters);
    v["baselines"] = json!({
        "floor": summary(&r.floor),
        "pipe": summary(&r.pipe),
        "uds": summary(&r.uds),
    });
    v["ratios_p50_vs_tally"] = json!({
        "floor": ratio(r.floor.value_at_quantile(0.5), t50),
        "pipe": ratio(r.pipe.value_at_quantile(0.5), t50),
        "uds": ratio(r.uds.value_at_quantile(0.5), t50),
    });
    v["wake"] = json!({ "tally": r.wake_tally, "futex": r.wake_futex });
    v["method"] = json!(
        "one-way = round trip / 2; the sender writes the whole payload, the receiver reads all of it and echoes it back"
    );
    v
}

pub fn print(r: &Report, args: &BenchArgs, cpus: (usize, usize)) {
    println!(
        "latency: {} B payload, {} round trips (+{} warm-up; floor and tally in {} alternating rounds), one-way = RTT/2, CPUs {},{}",
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
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}   p50 / tally p50",
        "", "p50 ns", "p90 ns", "p99 ns", "p99.9 ns", "max ns", "mean ns"
    );
    let t50 = r.tally.value_at_quantile(0.5);
    for (name, h) in [
        ("floor", &r.floor),
        ("tally", &r.tally),
        ("pipe", &r.pipe),
        ("uds", &r.uds),
    ] {
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9.1}   {}",
            name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean(),
            ratio(h.value_at_quantile(0.5), t50)
        );
    }
    println!(
        "floor = two processes ping-ponging one shared cache line (the physical limit); tally p50 is {:.2} x floor p50",
        ratio(t50, r.floor.value_at_quantile(0.5))
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
