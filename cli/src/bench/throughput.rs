//! One-way streaming rate: zero-copy per message, zero-copy in batches, and the
//! copying helpers (copy in, copy out) for comparison.

use std::time::Instant;

use serde_json::{Value, json};
use tally::{ByteRing, Ring, TryRecvError};

use super::progress::Progress;
use super::{BenchArgs, BenchError, Mode, Peer, bench_name, read_payload};

/// Messages per batch for the batch API.
const BATCH: usize = 256;
/// Bytes of ring memory aimed for (slots × payload), bounded to 4..=4096 slots: small
/// enough to stay in this machine's 2 MiB per-core L2 with room for both sides.
const RING_BYTES: usize = 512 << 10;

pub struct Run {
    pub msgs: u64,
    pub seconds: f64,
    pub errors: u64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.seconds.max(1e-9)
    }
}

pub struct Report {
    pub single: Run,
    pub batch: Run,
    pub copy: Run,
}

/// Measurements of a throughput run, for the progress count.
pub const STEPS: u32 = 3;

pub fn run(
    args: &BenchArgs,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    progress.step(&format!("throughput: zero-copy, {} s", args.seconds));
    let single = stream(Mode::Stream, args, cpus)?;
    progress.step(&format!(
        "throughput: batches of {BATCH}, {} s",
        args.seconds
    ));
    let batch = stream(Mode::StreamBatch, args, cpus)?;
    progress.step(&format!("throughput: copying, {} s", args.seconds));
    let copy = stream(Mode::StreamCopy, args, cpus)?;
    Ok(Report {
        single,
        batch,
        copy,
    })
}

fn capacity(payload: usize) -> usize {
    (RING_BYTES / payload).clamp(4, 4096)
}

/// The consumer side of an 8-byte stream (see `stream`).
fn stream_u64(mode: Mode, args: &BenchArgs, cpus: (usize, usize)) -> Result<Run, BenchError> {
    let name = bench_name("stream");
    let ring = Ring::<u64>::create(&name, capacity(args.payload))?;
    let mut rx = ring.consumer()?;
    let peer = spawn_producer(mode, &name, args, cpus)?;
    let t = drain(|t| match mode {
        Mode::StreamBatch => rx.peek_many(BATCH).map(|batch| {
            for i in 0..batch.len() {
                t.check(*batch.get(i));
            }
            batch.release();
        }),
        Mode::StreamCopy => rx.try_recv().map(|v| t.check(v)),
        _ => rx.peek().map(|msg| {
            t.check(*msg);
            msg.release();
        }),
    });
    peer.finish()?;
    Ok(t.finish())
}

/// Counts messages and sequence errors on the consumer side; the rate runs from the
/// first message to the last.
struct Tally {
    expect: u64,
    errors: u64,
    first: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            expect: 0,
            errors: 0,
            first: None,
        }
    }

    #[inline]
    fn check(&mut self, seq: u64) {
        if seq != self.expect {
            self.errors += 1;
        }
        self.expect = seq + 1;
    }

    fn finish(self) -> Run {
        Run {
            msgs: self.expect,
            seconds: self.first.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            errors: self.errors,
        }
    }
}

/// Polls `next` until the producer has gone, spinning while the ring is empty.
fn drain(mut next: impl FnMut(&mut Tally) -> Result<(), TryRecvError>) -> Tally {
    let mut t = Tally::new();
    loop {
        match next(&mut t) {
            Ok(()) => {
                t.first.get_or_insert_with(Instant::now);
            }
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return t,
        }
    }
}

fn spawn_producer(
    mode: Mode,
    name: &str,
    args: &BenchArgs,
    cpus: (usize, usize),
) -> Result<Peer, BenchError> {
    Peer::spawn(
        mode,
        name,
        args.payload,
        cpus.1,
        &[
            ("seconds", args.seconds.to_string()),
            ("batch", BATCH.to_string()),
        ],
    )
}

/// An 8-byte payload streams through a typed `Ring<u64>` (four messages per cache
/// line), as in the latency run; larger payloads through a `ByteRing`.
fn stream(mode: Mode, args: &BenchArgs, cpus: (usize, usize)) -> Result<Run, BenchError> {
    if args.payload == 8 {
        return stream_u64(mode, args, cpus);
    }
    let name = bench_name("stream");
    let ring = ByteRing::create(&name, capacity(args.payload), args.payload)?;
    let mut rx = ring.consumer()?;
    let peer = spawn_producer(mode, &name, args, cpus)?;
    let mut buf = Vec::with_capacity(args.payload);
    let t = drain(|t| match mode {
        Mode::StreamBatch => rx.peek_many(BATCH).map(|batch| {
            for i in 0..batch.len() {
                t.check(read_payload(batch.get(i)));
            }
            batch.release();
        }),
        Mode::StreamCopy => rx
            .try_recv_into(&mut buf)
            .map(|()| t.check(read_payload(&buf))),
        _ => rx.peek().map(|msg| {
            t.check(read_payload(&msg));
            msg.release();
        }),
    });
    peer.finish()?;
    Ok(t.finish())
}

pub fn to_json(r: &Report, args: &BenchArgs) -> Value {
    let p = args.payload as f64;
    json!({
        "payload_bytes": args.payload,
        "seconds": args.seconds,
        "msgs_per_s": r.single.rate().round(),
        "bytes_per_s": (r.single.rate() * p).round(),
        "batch_msgs_per_s": r.batch.rate().round(),
        "batch_bytes_per_s": (r.batch.rate() * p).round(),
        "copy_msgs_per_s": r.copy.rate().round(),
        "copy_bytes_per_s": (r.copy.rate() * p).round(),
        "batch_size": BATCH,
        "ring_slots": capacity(args.payload),
        "errors": r.single.errors + r.batch.errors + r.copy.errors,
    })
}

/// The rows of the throughput table and plot: README's names, in README's order.
pub fn rows(r: &Report) -> [(String, &Run); 3] {
    [
        ("zero-copy reserve/commit, peek/release".into(), &r.single),
        (format!("zero-copy batches of {BATCH}"), &r.batch),
        ("copying try_send/try_recv".into(), &r.copy),
    ]
}

pub fn print(r: &Report, args: &BenchArgs, cpus: (usize, usize)) {
    let errors = r.single.errors + r.batch.errors + r.copy.errors;
    println!(
        "Throughput, {} B payload, {} s per run ({}, {} slots, CPUs {},{}; consumer verifies every sequence number; errors: {errors})",
        args.payload,
        args.seconds,
        if args.payload == 8 {
            "tally: Ring<u64>"
        } else {
            "tally: ByteRing"
        },
        capacity(args.payload),
        cpus.0,
        cpus.1
    );
    println!();
    println!("{:<40} {:>12} {:>8}", "", "msgs/s", "GB/s");
    for (name, run) in rows(r) {
        println!(
            "{:<40} {:>12} {:>8.2}",
            name,
            format!("{:.1} M", run.rate() / 1e6),
            run.rate() * args.payload as f64 / 1e9,
        );
    }
    println!();
}
