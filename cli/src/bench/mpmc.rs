//! `--mpmc P,C`: tally's MPMC ring between P producer and C consumer processes, side
//! by side in the same run with tally's SPSC ring (one producer, one consumer process)
//! and crossbeam's `ArrayQueue` (P + C threads of one process, the best in-process
//! bounded MPMC queue: the bar a cross-process ring should come close to).
//!
//! Every transport carries the same 16-byte [`Msg`] (producer id, sequence number) in
//! the same number of slots, and every consumer runs the same check ([`Verify`]).
//!
//! Throughput: the parent starts the producer and consumer processes, says `go` to all
//! of them at once, and collects what each saw. Each consumer checks that the sequence
//! numbers of each producer rise (it receives a subsequence of each producer's stream,
//! in order); at the end the parent checks that the union of what the consumers got is
//! each producer's stream exactly once, by count and by an order-free fingerprint of
//! the sequence numbers (a sum of hashes), so a loss hidden by a duplicate still shows.
//!
//! Latency (1,1 only): ping-pong over a pair of MPMC rings, round trip / 2, in rounds
//! that alternate with the two-line floor, the SPSC ring and an `ArrayQueue` pair.
//! Latency across P producers and C consumers has no such floor to compare with: a
//! commit-to-receipt time under load is queueing delay, so `--mpmc P,C` with P or C
//! above 1 is refused for latency (exit 2).

use std::io::Write;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tally::{MpmcRing, ReserveError, Ring, TryRecvError};

use super::latency::{self, ROUNDS, WARMUP_DIV};
use super::progress::Progress;
use super::{BenchArgs, BenchError, Mode, Peer, bench_name, new_histogram, summary};

/// The message of every `--mpmc` run: which producer sent it, and its place in that
/// producer's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable, tally::Message)]
#[repr(C)]
pub struct Msg {
    pub producer: u64,
    pub seq: u64,
}

/// Bytes of a [`Msg`].
pub const MSG_BYTES: usize = std::mem::size_of::<Msg>();
/// Slots of every queue of a throughput run (MPMC, SPSC, `ArrayQueue`).
pub const SLOTS: usize = 4096;
/// Slots of a latency run's queues: one message is in flight.
const PING_SLOTS: usize = 64;
/// Most producers, and most consumers, of a run: with the parent, every process fits
/// the ring's 64-slot holder table.
pub const MAX_SIDE: usize = 31;
/// The `seq` that tells a latency echo to stop.
const STOP: u64 = u64::MAX;
/// Failed polls (ring full or empty) spent spinning before each `sched_yield`: with
/// more processes than CPUs the one being waited for may need this CPU.
const SPINS_BEFORE_YIELD: u32 = 128;

/// Producer and consumer counts of `--mpmc P,C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub producers: usize,
    pub consumers: usize,
}

impl Spec {
    pub fn is_one_one(self) -> bool {
        self.producers == 1 && self.consumers == 1
    }
}

/// `P,C`, each 1..=31.
pub fn parse_spec(s: &str) -> Result<Spec, String> {
    let parts: Vec<&str> = s.split(',').collect();
    let [p, c] = parts[..] else {
        return Err("takes producers,consumers, e.g. 2,2".into());
    };
    let side = |x: &str, what: &str| {
        let n: usize = x
            .trim()
            .parse()
            .map_err(|e| format!("{x:?} is not a number of {what} ({e})"))?;
        if !(1..=MAX_SIDE).contains(&n) {
            return Err(format!("{n} {what} is outside 1..={MAX_SIDE}"));
        }
        Ok(n)
    };
    Ok(Spec {
        producers: side(p, "producers")?,
        consumers: side(c, "consumers")?,
    })
}

/// The CPU of each producer and each consumer: consumer 0, producer 0, consumer 1,
/// producer 1, ... take the CPUs of `list` in turn (the extra ones of the larger side
/// last). With the two CPUs of `--cpus` the 1,1 run sits as the SPSC run does
/// (consumer on the first CPU, producer on the second), and on two CPUs every
/// producer shares a CPU with producers only, so a producer and a consumer always run.
pub fn layout(spec: Spec, list: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let (mut prod, mut cons) = (Vec::new(), Vec::new());
    let mut k = 0;
    let mut next = || {
        let cpu = list[k % list.len()];
        k += 1;
        cpu
    };
    for i in 0..spec.producers.max(spec.consumers) {
        if i < spec.consumers {
            cons.push(next());
        }
        if i < spec.producers {
            prod.push(next());
        }
    }
    (prod, cons)
}

/// The CPUs a run spreads over: the two of `--cpus` if given, else `cpus` first and then
/// every other online CPU (so 4,4 uses eight CPUs where there are eight).
pub fn cpu_list(cpus: (usize, usize), explicit: bool) -> Vec<usize> {
    let mut list = vec![cpus.0, cpus.1];
    if !explicit {
        list.extend((0..super::online_cpus()).filter(|c| *c != cpus.0 && *c != cpus.1));
    }
    list
}

/// A 64-bit mix (splitmix64's finaliser): the fingerprint of one message.
#[inline]
fn mix(producer: u64, seq: u64) -> u64 {
    let mut z = seq ^ producer.rotate_left(40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Waits politely: spins, then yields the CPU now and then.
#[inline]
fn backoff(fails: &mut u32) {
    *fails += 1;
    if fails.is_multiple_of(SPINS_BEFORE_YIELD) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// One consumer's check of what it received.
#[derive(Debug)]
pub struct Verify {
    /// Per producer: the least sequence number that may come next.
    next: Vec<u64>,
    /// Per producer: messages received.
    counts: Vec<u64>,
    /// Per producer: the sum of `mix(p, seq)` over what was received.
    fps: Vec<u64>,
    msgs: u64,
    /// A sequence number not above one this consumer already had from that producer.
    reordered: u64,
    /// A producer id that does not exist.
    foreign: u64,
    first_ns: Option<u64>,
}

impl Verify {
    pub fn new(producers: usize) -> Self {
        Verify {
            next: vec![0; producers],
            counts: vec![0; producers],
            fps: vec![0; producers],
            msgs: 0,
            reordered: 0,
            foreign: 0,
            first_ns: None,
        }
    }

    #[inline]
    pub fn check(&mut self, m: Msg) {
        if self.msgs == 0 {
            self.first_ns = Some(tally::__private::monotonic_ns());
        }
        self.msgs += 1;
        let Some(next) = self.next.get_mut(m.producer as usize) else {
            self.foreign += 1;
            return;
        };
        let p = m.producer as usize;
        if m.seq < *next {
            self.reordered += 1;
        } else {
            *next = m.seq + 1;
        }
        self.counts[p] += 1;
        self.fps[p] = self.fps[p].wrapping_add(mix(m.producer, m.seq));
    }

    /// What a consumer reports, stamped with the time it saw the end of the stream.
    pub fn to_json(&self) -> Value {
        json!({
            "msgs": self.msgs,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "first_ns": self.first_ns,
            "end_ns": tally::__private::monotonic_ns(),
            "counts": self.counts,
            "fps": self.fps,
        })
    }
}

/// One transport's throughput and what its consumers found wrong.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub msgs: u64,
    pub seconds: f64,
    /// Sent but received by no consumer.
    pub lost: u64,
    /// Received more often than sent.
    pub duplicated: u64,
    /// Received out of the producer's order by one consumer.
    pub reordered: u64,
    /// With an unknown producer id.
    pub foreign: u64,
    /// Messages per consumer.
    pub per_consumer: Vec<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.seconds.max(1e-9)
    }

    pub fn errors(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.foreign
    }

    /// Joins the producers' counts and the consumers' reports (as `Verify::to_json`).
    fn judge(sent: &[u64], consumers: &[Value]) -> Result<Outcome, BenchError> {
        let num = |v: &Value, k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("consumer report without {k}: {v}"))
        };
        let mut o = Outcome::default();
        let (mut first, mut end) = (u64::MAX, 0u64);
        let mut counts = vec![0u64; sent.len()];
        let mut fps = vec![0u64; sent.len()];
        for c in consumers {
            let msgs = num(c, "msgs")?;
            o.msgs += msgs;
            o.per_consumer.push(msgs);
            o.reordered += num(c, "reordered")?;
            o.foreign += num(c, "foreign")?;
            if let Some(f) = c["first_ns"].as_u64() {
                first = first.min(f);
                end = end.max(num(c, "end_ns")?);
            }
            for (p, (n, fp)) in counts.iter_mut().zip(fps.iter_mut()).enumerate() {
                *n += c["counts"][p].as_u64().ok_or("consumer report: counts")?;
                *fp = fp.wrapping_add(c["fps"][p].as_u64().ok_or("consumer report: fps")?);
            }
        }
        for (p, &s) in sent.iter().enumerate() {
            let want = (0..s).fold(0u64, |a, q| a.wrapping_add(mix(p as u64, q)));
            let n = counts[p];
            if n > s {
                o.duplicated += n - s;
            } else if n < s {
                o.lost += s - n;
            } else if fps[p] != want {
                // The same count but other numbers: at least one lost and one twice.
                o.lost += 1;
                o.duplicated += 1;
            }
        }
        o.seconds = end.saturating_sub(first) as f64 / 1e9;
        Ok(o)
    }
}

// --- throughput ---------------------------------------------------------------------

/// Which ring a process run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ipc {
    Mpmc,
    Spsc,
}

pub struct ThroughputReport {
    pub spec: Spec,
    pub prod_cpus: Vec<usize>,
    pub cons_cpus: Vec<usize>,
    pub mpmc: Outcome,
    pub spsc: Outcome,
    pub array_queue: Outcome,
}

/// Measurements of a throughput run, for the progress count.
pub const THROUGHPUT_STEPS: u32 = 3;

pub fn throughput(
    args: &BenchArgs,
    spec: Spec,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<ThroughputReport, BenchError> {
    let list = cpu_list(cpus, args.cpus.is_some());
    let (prod_cpus, cons_cpus) = layout(spec, &list);
    let one = layout(
        Spec {
            producers: 1,
            consumers: 1,
        },
        &list,
    );
    progress.step(&format!(
        "throughput: MPMC ring, {} x {} processes, {} s",
        spec.producers, spec.consumers, args.seconds
    ));
    let mpmc = processes(Ipc::Mpmc, args, &prod_cpus, &cons_cpus)?;
    progress.step(&format!("throughput: SPSC ring, {} s", args.seconds));
    let spsc = processes(Ipc::Spsc, args, &one.0, &one.1)?;
    progress.step(&format!(
        "throughput: ArrayQueue, {} + {} threads, {} s",
        spec.producers, spec.consumers, args.seconds
    ));
    let array_queue = threads(args, &prod_cpus, &cons_cpus)?;
    Ok(ThroughputReport {
        spec,
        prod_cpus,
        cons_cpus,
        mpmc,
        spsc,
        array_queue,
    })
}

/// One producer process per entry of `prod_cpus`, one consumer per `cons_cpus`.
fn processes(
    ipc: Ipc,
    args: &BenchArgs,
    prod_cpus: &[usize],
    cons_cpus: &[usize],
) -> Result<Outcome, BenchError> {
    let name = bench_name(if ipc == Ipc::Mpmc { "mpmc" } else { "spsc" });
    // Held until every peer has gone: the peers open it by name.
    let _ring: Box<dyn std::any::Any> = match ipc {
        Ipc::Mpmc => Box::new(MpmcRing::<Msg>::create(&name, SLOTS)?),
        Ipc::Spsc => Box::new(Ring::<Msg>::create(&name, SLOTS)?),
    };
    let (produce, consume) = match ipc {
        Ipc::Mpmc => (Mode::MpmcProduce, Mode::MpmcConsume),
        Ipc::Spsc => (Mode::SpscProduce, Mode::SpscConsume),
    };
    let producers = prod_cpus.len().to_string();
    let mut consumers = Vec::new();
    for &cpu in cons_cpus {
        consumers.push(Peer::spawn(
            consume,
            &name,
            MSG_BYTES,
            cpu,
            &[("producers", producers.clone())],
        )?);
    }
    let mut prods = Vec::new();
    for (id, &cpu) in prod_cpus.iter().enumerate() {
        prods.push(Peer::spawn(
            produce,
            &name,
            MSG_BYTES,
            cpu,
            &[
                ("id", id.to_string()),
                ("seconds", args.seconds.to_string()),
            ],
        )?);
    }
    for peer in consumers.iter_mut().chain(prods.iter_mut()) {
        let stdin = peer.stdin.as_mut().ok_or("peer stdin")?;
        writeln!(stdin, "go")?;
        stdin.flush()?;
    }
    let mut sent = Vec::new();
    for mut p in prods {
        let v: Value = serde_json::from_str(&p.line()?)?;
        sent.push(v["sent"].as_u64().ok_or("producer report without sent")?);
        p.finish()?;
    }
    let mut reports = Vec::new();
    for mut c in consumers {
        reports.push(serde_json::from_str(&c.line()?)?);
        c.finish()?;
    }
    Outcome::judge(&sent, &reports)
}

/// A scoped thread's result.
fn join<T>(r: std::thread::Result<Result<T, String>>) -> Result<T, BenchError> {
    r.map_err(|_| BenchError::from("ArrayQueue thread panicked"))?
        .map_err(BenchError::from)
}

/// The same run with an `ArrayQueue` shared by threads of this process.
fn threads(
    args: &BenchArgs,
    prod_cpus: &[usize],
    cons_cpus: &[usize],
) -> Result<Outcome, BenchError> {
    let q = ArrayQueue::<Msg>::new(SLOTS);
    let start = Barrier::new(prod_cpus.len() + cons_cpus.len());
    let producing = AtomicUsize::new(prod_cpus.len());
    let seconds = Duration::from_secs_f64(args.seconds);
    let producers = prod_cpus.len();
    let (sent, reports) = std::thread::scope(|s| -> Result<_, BenchError> {
        let cons: Vec<_> = cons_cpus
            .iter()
            .map(|&cpu| {
                let (q, start, producing) = (&q, &start, &producing);
                s.spawn(move || -> Result<Value, String> {
                    let pinned = tally::__private::pin_to_cpu(cpu);
                    // Everyone meets at the barrier, even a thread that failed to pin.
                    start.wait();
                    pinned.map_err(|e| e.to_string())?;
                    let mut v = Verify::new(producers);
                    let mut fails = 0;
                    loop {
                        match q.pop() {
                            Some(m) => {
                                v.check(m);
                                fails = 0;
                            }
                            // SYNC POINT: Acquire pairs with the producers' Release
                            // decrement: their last pushes are visible to the pop below.
                            None if producing.load(Ordering::Acquire) == 0 => match q.pop() {
                                Some(m) => v.check(m),
                                None => break,
                            },
                            None => backoff(&mut fails),
                        }
                    }
                    Ok(v.to_json())
                })
            })
            .collect();
        let prods: Vec<_> = prod_cpus
            .iter()
            .enumerate()
            .map(|(id, &cpu)| {
                let (q, start, producing) = (&q, &start, &producing);
                s.spawn(move || -> Result<u64, String> {
                    let pinned = tally::__private::pin_to_cpu(cpu);
                    start.wait();
                    if let Err(e) = pinned {
                        producing.fetch_sub(1, Ordering::Release);
                        return Err(e.to_string());
                    }
                    let end = Instant::now() + seconds;
                    let (mut seq, mut fails) = (0u64, 0);
                    loop {
                        for _ in 0..64 {
                            match q.push(Msg {
                                producer: id as u64,
                                seq,
                            }) {
                                Ok(()) => {
                                    seq += 1;
                                    fails = 0;
                                }
                                Err(_) => backoff(&mut fails),
                            }
                        }
                        if Instant::now() >= end {
                            break;
                        }
                    }
                    // SYNC POINT: Release pairs with the consumers' Acquire load.
                    producing.fetch_sub(1, Ordering::Release);
                    Ok(seq)
                })
            })
            .collect();
        let sent = prods
            .into_iter()
            .map(|h| join(h.join()))
            .collect::<Result<Vec<u64>, _>>()?;
        let reports = cons
            .into_iter()
            .map(|h| join(h.join()))
            .collect::<Result<Vec<Value>, _>>()?;
        Ok((sent, reports))
    })?;
    Outcome::judge(&sent, &reports)
}

fn outcome_json(o: &Outcome) -> Value {
    json!({
        "msgs_per_s": o.rate().round(),
        "msgs": o.msgs,
        "seconds_measured": (o.seconds * 1e6).round() / 1e6,
        "errors": o.errors(),
        "lost": o.lost,
        "duplicated": o.duplicated,
        "reordered": o.reordered,
        "foreign": o.foreign,
        "per_consumer_msgs": o.per_consumer,
    })
}

pub fn throughput_json(r: &ThroughputReport, args: &BenchArgs) -> Value {
    let mut v = outcome_json(&r.mpmc);
    let cpus_in_use = {
        let mut all: Vec<usize> = r.prod_cpus.iter().chain(&r.cons_cpus).copied().collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    let ratio = |a: f64, b: f64| (a / b.max(1e-9) * 1000.0).round() / 1000.0;
    v["producers"] = json!(r.spec.producers);
    v["consumers"] = json!(r.spec.consumers);
    v["message_bytes"] = json!(MSG_BYTES);
    v["seconds"] = json!(args.seconds);
    v["ring_slots"] = json!(SLOTS);
    v["producer_cpus"] = json!(r.prod_cpus);
    v["consumer_cpus"] = json!(r.cons_cpus);
    v["oversubscribed"] = json!(r.prod_cpus.len() + r.cons_cpus.len() > cpus_in_use);
    let mut spsc = outcome_json(&r.spsc);
    spsc["producers"] = json!(1);
    spsc["consumers"] = json!(1);
    let mut aq = outcome_json(&r.array_queue);
    aq["producer_threads"] = json!(r.spec.producers);
    aq["consumer_threads"] = json!(r.spec.consumers);
    v["baselines"] = json!({ "spsc": spsc, "array_queue": aq });
    v["mpmc_vs_spsc"] = json!(ratio(r.mpmc.rate(), r.spsc.rate()));
    v["mpmc_vs_array_queue"] = json!(ratio(r.mpmc.rate(), r.array_queue.rate()));
    v["method"] = json!(
        "P producer and C consumer processes on one MpmcRing<Msg> (16 B: producer id, sequence) for --seconds; each consumer checks that every producer's sequence numbers rise, the parent that the union is each stream exactly once (count and fingerprint); rate = messages / (last consumer's end - first consumer's first message). Baselines: tally's SPSC Ring<Msg> with 1 producer and 1 consumer process; crossbeam ArrayQueue<Msg> with P + C threads of one process on the same CPUs. Same slots, same check, spin then sched_yield every 128 failed polls."
    );
    v
}

/// The rows of the throughput table and plot: (name, short name, outcome).
pub fn throughput_rows(r: &ThroughputReport) -> [(String, String, &Outcome); 3] {
    let (p, c) = (r.spec.producers, r.spec.consumers);
    [
        (
            format!("tally MpmcRing, {p} x {c} processes"),
            format!("MpmcRing {p}x{c}"),
            &r.mpmc,
        ),
        (
            "tally Ring (SPSC), 1 x 1 processes".into(),
            "Ring (SPSC) 1x1".into(),
            &r.spsc,
        ),
        (
            format!("crossbeam ArrayQueue, {p} + {c} threads"),
            format!("ArrayQueue {p}+{c} threads"),
            &r.array_queue,
        ),
    ]
}

pub fn print_throughput(r: &ThroughputReport, args: &BenchArgs) {
    let n = r.prod_cpus.len() + r.cons_cpus.len();
    let mut cpus: Vec<usize> = r.prod_cpus.iter().chain(&r.cons_cpus).copied().collect();
    cpus.sort_unstable();
    cpus.dedup();
    let errors = r.mpmc.errors() + r.spsc.errors() + r.array_queue.errors();
    println!(
        "Throughput, MPMC {} producers x {} consumers, {MSG_BYTES} B messages (producer id, sequence), {} s per run, {SLOTS} slots; producers on CPUs {:?}, consumers on CPUs {:?}{}",
        r.spec.producers,
        r.spec.consumers,
        args.seconds,
        r.prod_cpus,
        r.cons_cpus,
        if n > cpus.len() {
            format!(" ({n} processes on {} CPUs: oversubscribed)", cpus.len())
        } else {
            String::new()
        }
    );
    println!(
        "each consumer verifies every producer's order, the union is checked exactly-once; errors: {errors} (lost {}, duplicated {}, reordered {})",
        r.mpmc.lost + r.spsc.lost + r.array_queue.lost,
        r.mpmc.duplicated + r.spsc.duplicated + r.array_queue.duplicated,
        r.mpmc.reordered + r.spsc.reordered + r.array_queue.reordered,
    );
    println!();
    println!(
        "{:<44} {:>12} {:>8} {:>16}",
        "", "msgs/s", "errors", "MPMC / this"
    );
    for (name, _, o) in throughput_rows(r) {
        println!(
            "{:<44} {:>12} {:>8} {:>16.2}",
            name,
            format!("{:.1} M", o.rate() / 1e6),
            o.errors(),
            r.mpmc.rate() / o.rate().max(1e-9),
        );
    }
    println!();
}

// --- latency ------------------------------------------------------------------------

pub struct LatencyReport {
    pub mpmc: Histogram<u64>,
    pub two_line: Histogram<u64>,
    pub spsc: Histogram<u64>,
    pub array_queue: Histogram<u64>,
}

/// Measurements of a latency run: four per round.
pub const LATENCY_STEPS: u32 = 4 * ROUNDS as u32;

pub fn latency(
    args: &BenchArgs,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<LatencyReport, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let round_args = BenchArgs {
        iters: args.iters.div_ceil(ROUNDS),
        ..args.clone()
    };
    let mut r = LatencyReport {
        mpmc: new_histogram(),
        two_line: new_histogram(),
        spsc: new_histogram(),
        array_queue: new_histogram(),
    };
    for k in 1..=ROUNDS {
        progress.step(&format!("latency: two-line floor, round {k} of {ROUNDS}"));
        r.two_line.add(latency::two_line(&round_args, cpus)?)?;
        progress.step(&format!("latency: MPMC ring 1 x 1, round {k} of {ROUNDS}"));
        r.mpmc.add(ping_pong(Ipc::Mpmc, &round_args, cpus)?)?;
        progress.step(&format!("latency: SPSC ring, round {k} of {ROUNDS}"));
        r.spsc.add(ping_pong(Ipc::Spsc, &round_args, cpus)?)?;
        progress.step(&format!(
            "latency: ArrayQueue threads, round {k} of {ROUNDS}"
        ));
        r.array_queue
            .add(array_queue_ping_pong(&round_args, cpus)?)?;
    }
    Ok(r)
}

/// Ping-pong with the peer process over a pair of rings of `ipc`.
fn ping_pong(
    ipc: Ipc,
    args: &BenchArgs,
    cpus: (usize, usize),
) -> Result<Histogram<u64>, BenchError> {
    let (ping_name, pong_name) = (bench_name("mping"), bench_name("mpong"));
    let extra = [("name2", pong_name.clone())];
    let mismatch = |seq: u64, i: u64| format!("{ipc:?} ping-pong: got seq {seq}, expected {i}");
    let h = match ipc {
        Ipc::Mpmc => {
            let ping = MpmcRing::<Msg>::create(&ping_name, PING_SLOTS)?;
            let pong = MpmcRing::<Msg>::create(&pong_name, PING_SLOTS)?;
            let (mut tx, mut rx) = (ping.producer()?, pong.consumer()?);
            let peer = Peer::spawn(Mode::MpmcEcho, &ping_name, MSG_BYTES, cpus.1, &extra)?;
            let h = latency::measure(args, |i| {
                loop {
                    if let Ok(mut slot) = tx.reserve() {
                        *slot = Msg {
                            producer: 0,
                            seq: i,
                        };
                        slot.commit();
                        break;
                    }
                    std::hint::spin_loop();
                }
                loop {
                    if let Ok(msg) = rx.peek() {
                        let seq = msg.seq;
                        msg.release();
                        return if seq == i {
                            Ok(())
                        } else {
                            Err(mismatch(seq, i).into())
                        };
                    }
                    std::hint::spin_loop();
                }
            })?;
            tx.send(Msg {
                producer: 0,
                seq: STOP,
            })
            .map_err(|_| "stop message: echo gone")?;
            peer.finish()?;
            h
        }
        Ipc::Spsc => {
            let ping = Ring::<Msg>::create(&ping_name, PING_SLOTS)?;
            let pong = Ring::<Msg>::create(&pong_name, PING_SLOTS)?;
            let (mut tx, mut rx) = (ping.producer()?, pong.consumer()?);
            let peer = Peer::spawn(Mode::SpscEcho, &ping_name, MSG_BYTES, cpus.1, &extra)?;
            let h = latency::measure(args, |i| {
                loop {
                    if let Ok(mut slot) = tx.reserve() {
                        *slot = Msg {
                            producer: 0,
                            seq: i,
                        };
                        slot.commit();
                        break;
                    }
                    std::hint::spin_loop();
                }
                loop {
                    if let Ok(msg) = rx.peek() {
                        let seq = msg.seq;
                        msg.release();
                        return if seq == i {
                            Ok(())
                        } else {
                            Err(mismatch(seq, i).into())
                        };
                    }
                    std::hint::spin_loop();
                }
            })?;
            tx.send(Msg {
                producer: 0,
                seq: STOP,
            })
            .map_err(|_| "stop message: echo gone")?;
            peer.finish()?;
            h
        }
    };
    Ok(h)
}

/// Ping-pong between two threads of this process over a pair of `ArrayQueue`s.
fn array_queue_ping_pong(
    args: &BenchArgs,
    cpus: (usize, usize),
) -> Result<Histogram<u64>, BenchError> {
    let (ping, pong) = (
        ArrayQueue::<Msg>::new(PING_SLOTS),
        ArrayQueue::<Msg>::new(PING_SLOTS),
    );
    std::thread::scope(|s| {
        let echo = s.spawn(|| -> Result<(), String> {
            tally::__private::pin_to_cpu(cpus.1).map_err(|e| e.to_string())?;
            loop {
                let Some(m) = ping.pop() else {
                    std::hint::spin_loop();
                    continue;
                };
                if m.seq == STOP {
                    return Ok(());
                }
                let mut m = m;
                while let Err(back) = pong.push(m) {
                    m = back;
                    std::hint::spin_loop();
                }
            }
        });
        let h = latency::measure(args, |i| {
            let mut m = Msg {
                producer: 0,
                seq: i,
            };
            while let Err(back) = ping.push(m) {
                m = back;
                std::hint::spin_loop();
            }
            loop {
                if let Some(m) = pong.pop() {
                    return if m.seq == i {
                        Ok(())
                    } else {
                        Err(format!("ArrayQueue ping-pong: got seq {}, expected {i}", m.seq).into())
                    };
                }
                std::hint::spin_loop();
            }
        });
        // Stop the echo whatever happened, so the scope can end.
        let mut stop = Msg {
            producer: 0,
            seq: STOP,
        };
        while let Err(back) = ping.push(stop) {
            stop = back;
            let _ = pong.pop();
        }
        echo.join()
            .map_err(|_| BenchError::from("ArrayQueue echo panicked"))?
            .map_err(BenchError::from)?;
        h
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    (a as f64 / b.max(1) as f64 * 1000.0).round() / 1000.0
}

pub fn latency_json(r: &LatencyReport, args: &BenchArgs) -> Value {
    let mut v = summary(&r.mpmc);
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5);
    let m50 = p50(&r.mpmc);
    v["producers"] = json!(1);
    v["consumers"] = json!(1);
    v["message_bytes"] = json!(MSG_BYTES);
    v["iters"] = json!(args.iters);
    v["baselines"] = json!({
        "two_line": summary(&r.two_line),
        "spsc": summary(&r.spsc),
        "array_queue": summary(&r.array_queue),
    });
    v["mpmc_p50_vs_two_line_p50"] = json!(ratio(m50, p50(&r.two_line)));
    v["mpmc_p50_vs_spsc_p50"] = json!(ratio(m50, p50(&r.spsc)));
    v["mpmc_p50_vs_array_queue_p50"] = json!(ratio(m50, p50(&r.array_queue)));
    v["method"] = json!(
        "one-way = round trip / 2 over a pair of MpmcRing<Msg> (16 B) between two processes; in rounds alternating with the two-line floor (one cache line per direction), a pair of SPSC Ring<Msg> between two processes, and a pair of crossbeam ArrayQueue<Msg> between two threads of one process"
    );
    v
}

/// The rows of the latency table and plot.
pub fn latency_rows(r: &LatencyReport) -> [(&'static str, &Histogram<u64>); 4] {
    [
        ("two lines (one per direction)", &r.two_line),
        ("tally MpmcRing, 1 x 1 processes", &r.mpmc),
        ("tally Ring (SPSC), processes", &r.spsc),
        ("crossbeam ArrayQueue, threads", &r.array_queue),
    ]
}

pub fn print_latency(r: &LatencyReport, args: &BenchArgs, cpus: (usize, usize)) {
    println!(
        "Latency, MPMC 1 producer x 1 consumer, {MSG_BYTES} B messages, {} round trips (ns; +{} warm-up; in {ROUNDS} alternating rounds); one-way = RTT/2, CPUs {},{}",
        args.iters,
        args.iters / WARMUP_DIV,
        cpus.0,
        cpus.1
    );
    println!();
    let two50 = r.two_line.value_at_quantile(0.5);
    println!(
        "{:<34} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>19}",
        "", "p50", "p90", "p99", "p99.9", "max", "mean", "p50 / two-line p50"
    );
    for (name, h) in latency_rows(r) {
        let p50 = h.value_at_quantile(0.5);
        println!(
            "{:<34} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9.1} {:>19.2}",
            name,
            p50,
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean(),
            ratio(p50, two50),
        );
    }
    println!();
    println!(
        "MpmcRing p50 is {:.2} x the two-line floor and {:.2} x the SPSC ring",
        ratio(r.mpmc.value_at_quantile(0.5), two50),
        ratio(r.mpmc.value_at_quantile(0.5), r.spsc.value_at_quantile(0.5)),
    );
    println!();
}

// --- the peer processes ---------------------------------------------------------------

/// Waits for the parent's `go` line; false if stdin closed first.
fn wait_go() -> Result<bool, BenchError> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end() == "go")
}

fn report(v: &Value) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// A producer process: sends `Msg { id, 0.. }` for `seconds`, then drops its handle (so
/// the consumers see `Disconnected` once every producer has) and reports how many.
pub fn peer_produce(mode: Mode, name: &str, id: u64, seconds: f64) -> Result<(), BenchError> {
    macro_rules! produce {
        ($tx:expr) => {{
            let mut tx = $tx;
            super::peer::ready()?;
            if !wait_go()? {
                return Ok(());
            }
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let (mut seq, mut fails) = (0u64, 0);
            'outer: loop {
                for _ in 0..64 {
                    match tx.reserve() {
                        Ok(mut slot) => {
                            *slot = Msg { producer: id, seq };
                            slot.commit();
                            seq += 1;
                            fails = 0;
                        }
                        Err(ReserveError::Full) => backoff(&mut fails),
                        Err(_) => break 'outer,
                    }
                }
                if Instant::now() >= end {
                    break;
                }
            }
            drop(tx);
            seq
        }};
    }
    let sent = if mode == Mode::MpmcProduce {
        let ring = MpmcRing::<Msg>::open(name)?;
        produce!(ring.producer()?)
    } else {
        let ring = Ring::<Msg>::open(name)?;
        produce!(ring.producer()?)
    };
    report(&json!({ "sent": sent }))
}

/// A consumer process: receives in place until every producer has gone, checking each
/// message, and reports what it saw.
pub fn peer_consume(mode: Mode, name: &str, producers: usize) -> Result<(), BenchError> {
    macro_rules! consume {
        ($rx:expr) => {{
            let mut rx = $rx;
            super::peer::ready()?;
            if !wait_go()? {
                return Ok(());
            }
            let mut v = Verify::new(producers);
            let mut fails = 0;
            loop {
                match rx.peek() {
                    Ok(msg) => {
                        let m = *msg;
                        msg.release();
                        v.check(m);
                        fails = 0;
                    }
                    Err(TryRecvError::Empty) => backoff(&mut fails),
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            v.to_json()
        }};
    }
    let v = if mode == Mode::MpmcConsume {
        let ring = MpmcRing::<Msg>::open(name)?;
        consume!(ring.consumer()?)
    } else {
        let ring = Ring::<Msg>::open(name)?;
        consume!(ring.consumer()?)
    };
    report(&v)
}

/// The echo of a latency run: receives on `name`, sends back on `name2`, until `STOP`.
pub fn peer_echo(mode: Mode, name: &str, name2: &str) -> Result<(), BenchError> {
    macro_rules! echo {
        ($rx:expr, $tx:expr) => {{
            let (mut rx, mut tx) = ($rx, $tx);
            super::peer::ready()?;
            loop {
                let Ok(msg) = rx.peek() else {
                    std::hint::spin_loop();
                    continue;
                };
                let m = *msg;
                if m.seq == STOP {
                    break;
                }
                let mut reply = loop {
                    match tx.reserve() {
                        Ok(slot) => break slot,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                *reply = m;
                reply.commit();
                msg.release();
            }
        }};
    }
    if mode == Mode::MpmcEcho {
        let (ping, pong) = (MpmcRing::<Msg>::open(name)?, MpmcRing::<Msg>::open(name2)?);
        echo!(ping.consumer()?, pong.producer()?);
    } else {
        let (ping, pong) = (Ring::<Msg>::open(name)?, Ring::<Msg>::open(name2)?);
        echo!(ping.consumer()?, pong.producer()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_refuses() {
        assert_eq!(
            parse_spec("2,3"),
            Ok(Spec {
                producers: 2,
                consumers: 3
            })
        );
        for bad in ["0,1", "1,0", "1", "1,2,3", "x,1", "32,1", "-1,1"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_pairs_consumers_with_the_first_cpu() {
        let one = Spec {
            producers: 1,
            consumers: 1,
        };
        assert_eq!(layout(one, &[0, 1]), (vec![1], vec![0]));
        let two = Spec {
            producers: 2,
            consumers: 2,
        };
        assert_eq!(layout(two, &[0, 1]), (vec![1, 1], vec![0, 0]));
        assert_eq!(layout(two, &[0, 1, 2, 3]), (vec![1, 3], vec![0, 2]));
        let three_one = Spec {
            producers: 3,
            consumers: 1,
        };
        assert_eq!(layout(three_one, &[0, 1]), (vec![1, 0, 1], vec![0]));
    }

    fn report_of(v: &Verify) -> Value {
        v.to_json()
    }

    #[test]
    fn judge_finds_loss_duplicates_and_reorders() {
        // Two consumers split producer 0's stream 0..4 and producer 1's 0..2.
        let (mut a, mut b) = (Verify::new(2), Verify::new(2));
        let msg = |seq| Msg { producer: 0, seq };
        a.check(msg(0));
        b.check(msg(1));
        a.check(msg(3));
        b.check(msg(2));
        for s in 0..2 {
            a.check(Msg {
                producer: 1,
                seq: s,
            });
        }
        let ok = Outcome::judge(&[4, 2], &[report_of(&a), report_of(&b)]).unwrap();
        assert_eq!((ok.msgs, ok.errors()), (6, 0), "{ok:?}");
        // Producer 1 sent 3: one lost.
        let lost = Outcome::judge(&[4, 3], &[report_of(&a), report_of(&b)]).unwrap();
        assert_eq!((lost.lost, lost.duplicated), (1, 0));
        // Seq 2 of producer 0 twice and seq 3 never: same count, other numbers.
        let (mut c, mut d) = (Verify::new(1), Verify::new(1));
        for s in [0, 2] {
            c.check(Msg {
                producer: 0,
                seq: s,
            });
        }
        for s in [1, 2] {
            d.check(Msg {
                producer: 0,
                seq: s,
            });
        }
        let swapped = Outcome::judge(&[4], &[report_of(&c), report_of(&d)]).unwrap();
        assert_eq!((swapped.lost, swapped.duplicated), (1, 1), "{swapped:?}");
        // Out of order within one consumer, and an unknown producer.
        let mut e = Verify::new(1);
        for (p, s) in [(0, 1), (0, 0), (7, 0)] {
            e.check(Msg {
                producer: p,
                seq: s,
            });
        }
        let bad = Outcome::judge(&[2], &[report_of(&e)]).unwrap();
        assert_eq!((bad.reordered, bad.foreign, bad.lost), (1, 1, 0), "{bad:?}");
    }
}
