//! `--broadcast N`: tally's broadcast ring, one publisher (this process) and N
//! subscriber processes, side by side in the same run with the naive alternative: one
//! SPSC `Ring<u64>` per subscriber, the publisher copying every message into each.
//!
//! Every message is a `u64`, its sequence number (the 8-byte payload of every other
//! mode), and the broadcast ring is lossless.
//!
//! Latency, without comparing two CPUs' clocks: ping-pong. The publisher commits message
//! `i`; every subscriber reads it in place and acknowledges it on a return channel of its
//! own (a tiny SPSC `Ring<u64>` per subscriber); the publisher times from just before its
//! commit until it has the last subscriber's acknowledgement, and records half that round
//! trip. With one subscriber this is the one-way time of the usual ping-pong; with N it
//! is half the slowest subscriber's round trip (commit to the last read, plus that
//! subscriber's way back, halved). Rounds alternate with the two-line floor (one cache
//! line per direction, latency.rs) and the SPSC fan-out (the same acknowledgements, the
//! message copied into N rings), so a drift of this shared machine touches them alike.
//!
//! Throughput: the publisher sends `0, 1, 2, ...` for `--seconds` (split into four
//! rounds alternating with the fan-out's four), then a stop value. Every subscriber checks that
//! each message is the one after the last it read (a miss, a repeat or a reorder counts
//! as an error), and reports how many it read and when it read the first and the stop;
//! a subscriber that read fewer or more messages than were sent adds the difference to
//! the errors. Messages per second = messages sent (each delivered to all N) / (the last
//! subscriber's stop − the first subscriber's first message).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tally::{Broadcast, BroadcastTryRecvError, Policy, ReserveError, Ring, Start, TryRecvError};

use super::latency::{self, ROUNDS, WARMUP_DIV};
use super::progress::Progress;
use super::{BenchArgs, BenchError, Mode, Peer, bench_name, new_histogram, summary};

/// Most subscribers of a run (with the parent and the peers' acknowledgement rings, well
/// inside the holder table).
pub const MAX_SUBSCRIBERS: usize = 31;
/// Slots of a throughput run's rings (the broadcast ring and each fan-out ring).
pub const SLOTS: usize = 4096;
/// Slots of a latency run's rings: one message is in flight.
const PING_SLOTS: usize = 64;
/// The value that tells a subscriber to stop.
const STOP: u64 = u64::MAX;
/// How long the publisher waits for its subscribers to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed polls spent spinning before each `sched_yield`: with more processes than CPUs
/// the one being waited for may need this CPU.
const SPINS_BEFORE_YIELD: u32 = 128;
/// Alternating throughput rounds (each `--seconds / THROUGHPUT_ROUNDS` long).
const THROUGHPUT_ROUNDS: u32 = 4;

/// `N`: 1..=31 subscriber processes.
pub fn parse_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number of subscribers ({e})"))?;
    if !(1..=MAX_SUBSCRIBERS).contains(&n) {
        return Err(format!("{n} subscribers is outside 1..={MAX_SUBSCRIBERS}"));
    }
    Ok(n)
}

/// The CPU of each subscriber: the publisher keeps `list[0]` to itself where there is
/// another CPU, and the subscribers take the others in turn (on two CPUs, all of them
/// share the second).
pub fn layout(n: usize, list: &[usize]) -> Vec<usize> {
    let rest = if list.len() > 1 { &list[1..] } else { list };
    (0..n).map(|i| rest[i % rest.len()]).collect()
}

/// Whether some of this run's processes share a CPU: the publisher on `publisher` and
/// one subscriber on each of `subscribers`.
pub fn oversubscribed(publisher: usize, subscribers: &[usize]) -> bool {
    let mut cpus: Vec<usize> = subscribers.to_vec();
    cpus.push(publisher);
    cpus.sort_unstable();
    cpus.dedup();
    subscribers.len() + 1 > cpus.len()
}

/// Waits: spins, and where processes share a CPU (`share`) yields it now and then, as
/// the one being waited for may need it. A process with a CPU of its own only spins: on
/// a busy machine a yield can hand the CPU to another program for a whole slice.
#[inline]
fn backoff(fails: &mut u32, share: bool) {
    *fails += 1;
    if share && fails.is_multiple_of(SPINS_BEFORE_YIELD) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Which transport a measurement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// One `Broadcast<u64>`, lossless.
    Broadcast,
    /// One SPSC `Ring<u64>` per subscriber, the publisher copying into each.
    Fanout,
}

// --- throughput ---------------------------------------------------------------------

/// One transport's throughput and what its subscribers found wrong.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Messages sent (each to every subscriber).
    pub msgs: u64,
    pub seconds: f64,
    /// Sequence breaks seen by a subscriber, plus every message a subscriber missed or
    /// read more than once by count.
    pub errors: u64,
    /// Messages a subscriber was told it missed (`Lagged`; never on a lossless ring).
    pub lagged: u64,
    /// Messages each subscriber read.
    pub per_subscriber: Vec<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.seconds.max(1e-9)
    }

    /// Adds one round.
    fn add(&mut self, o: Outcome) {
        self.msgs += o.msgs;
        self.seconds += o.seconds;
        self.errors += o.errors;
        self.lagged += o.lagged;
        if self.per_subscriber.is_empty() {
            self.per_subscriber = o.per_subscriber;
        } else {
            for (a, b) in self.per_subscriber.iter_mut().zip(o.per_subscriber) {
                *a += b;
            }
        }
    }

    /// Joins the count sent and the subscribers' reports (as `Check::to_json`).
    fn judge(sent: u64, reports: &[Value]) -> Result<Outcome, BenchError> {
        let num = |v: &Value, k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("subscriber report without {k}: {v}"))
        };
        let mut o = Outcome {
            msgs: sent,
            ..Outcome::default()
        };
        let (mut first, mut end) = (u64::MAX, 0u64);
        for r in reports {
            let msgs = num(r, "msgs")?;
            o.per_subscriber.push(msgs);
            o.errors += num(r, "errors")? + msgs.abs_diff(sent);
            o.lagged += num(r, "lagged")?;
            if let Some(f) = r["first_ns"].as_u64() {
                first = first.min(f);
            }
            end = end.max(num(r, "end_ns")?);
        }
        o.seconds = end.saturating_sub(first) as f64 / 1e9;
        Ok(o)
    }
}

/// One subscriber's check of the stream it read.
#[derive(Debug, Default)]
struct Check {
    next: u64,
    msgs: u64,
    errors: u64,
    lagged: u64,
    first_ns: Option<u64>,
}

impl Check {
    #[inline]
    fn check(&mut self, seq: u64) {
        if self.msgs == 0 {
            self.first_ns = Some(tally::__private::monotonic_ns());
        }
        self.msgs += 1;
        if seq != self.next {
            self.errors += 1;
        }
        self.next = seq.wrapping_add(1);
    }

    /// What a subscriber reports, stamped with the time it read the stop value.
    fn to_json(&self) -> Value {
        json!({
            "msgs": self.msgs,
            "errors": self.errors,
            "lagged": self.lagged,
            "first_ns": self.first_ns,
            "end_ns": tally::__private::monotonic_ns(),
        })
    }
}

pub struct ThroughputReport {
    pub subscribers: usize,
    pub publisher_cpu: usize,
    pub subscriber_cpus: Vec<usize>,
    pub broadcast: Outcome,
    pub fanout: Outcome,
}

/// Measurements of a throughput run, for the progress count.
pub const THROUGHPUT_STEPS: u32 = 2 * THROUGHPUT_ROUNDS;

pub fn throughput(
    args: &BenchArgs,
    n: usize,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<ThroughputReport, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let list = super::mpmc::cpu_list(cpus, args.cpus.is_some());
    let subscriber_cpus = layout(n, &list);
    let seconds = args.seconds / f64::from(THROUGHPUT_ROUNDS);
    let (mut broadcast, mut fanout) = (Outcome::default(), Outcome::default());
    for k in 1..=THROUGHPUT_ROUNDS {
        progress.step(&format!(
            "throughput: broadcast ring, {n} subscribers, round {k} of {THROUGHPUT_ROUNDS}, {seconds} s"
        ));
        broadcast.add(stream(Via::Broadcast, seconds, cpus.0, &subscriber_cpus)?);
        progress.step(&format!(
            "throughput: SPSC fan-out, {n} rings, round {k} of {THROUGHPUT_ROUNDS}, {seconds} s"
        ));
        fanout.add(stream(Via::Fanout, seconds, cpus.0, &subscriber_cpus)?);
    }
    Ok(ThroughputReport {
        subscribers: n,
        publisher_cpu: cpus.0,
        subscriber_cpus,
        broadcast,
        fanout,
    })
}

/// One throughput round: this process publishes for `seconds` to one subscriber process
/// per entry of `cpus`.
fn stream(via: Via, seconds: f64, publisher: usize, cpus: &[usize]) -> Result<Outcome, BenchError> {
    let share = oversubscribed(publisher, cpus);
    let extra = [("share-cpu", share.to_string())];
    let name = bench_name(if via == Via::Broadcast {
        "bcast"
    } else {
        "fanout"
    });
    let mut fails = 0u32;
    let (sent, peers) = match via {
        Via::Broadcast => {
            let feed = Broadcast::<u64>::create(&name, SLOTS, Policy::Lossless)?;
            let mut tx = feed.publisher()?;
            let mut peers = Vec::new();
            for &cpu in cpus {
                peers.push(Peer::spawn(Mode::BcastSubscribe, &name, 8, cpu, &extra)?);
            }
            if !tx.wait_for_subscribers(cpus.len(), ATTACH_TIMEOUT) {
                return Err("broadcast subscribers did not attach".into());
            }
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let mut seq = 0u64;
            loop {
                for _ in 0..64 {
                    match tx.reserve() {
                        Ok(mut slot) => {
                            *slot = seq;
                            slot.commit();
                            seq += 1;
                            fails = 0;
                        }
                        Err(_) => backoff(&mut fails, share),
                    }
                }
                if Instant::now() >= end {
                    break;
                }
            }
            tx.send(STOP);
            (seq, peers)
        }
        Via::Fanout => {
            let names: Vec<String> = (0..cpus.len()).map(|k| format!("{name}-{k}")).collect();
            let rings = names
                .iter()
                .map(|n| Ring::<u64>::create(n, SLOTS))
                .collect::<Result<Vec<_>, _>>()?;
            let mut txs = rings
                .iter()
                .map(Ring::producer)
                .collect::<Result<Vec<_>, _>>()?;
            let mut peers = Vec::new();
            for (&cpu, n) in cpus.iter().zip(&names) {
                peers.push(Peer::spawn(Mode::FanoutSubscribe, n, 8, cpu, &extra)?);
            }
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            let mut seq = 0u64;
            'outer: loop {
                for _ in 0..64 {
                    // The naive fan-out: the same message copied into every ring, each
                    // waited on in turn while it is full.
                    for tx in &mut txs {
                        loop {
                            match tx.reserve() {
                                Ok(mut slot) => {
                                    *slot = seq;
                                    slot.commit();
                                    fails = 0;
                                    break;
                                }
                                Err(ReserveError::Full) => backoff(&mut fails, share),
                                Err(_) => break 'outer,
                            }
                        }
                    }
                    seq += 1;
                }
                if Instant::now() >= end {
                    break;
                }
            }
            for tx in &mut txs {
                tx.send(STOP).map_err(|_| "fan-out subscriber gone")?;
            }
            (seq, peers)
        }
    };
    let mut reports = Vec::new();
    for mut p in peers {
        reports.push(serde_json::from_str(&p.line()?)?);
        p.finish()?;
    }
    Outcome::judge(sent, &reports)
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b.max(1e-9) * 1000.0).round() / 1000.0
}

pub fn throughput_json(r: &ThroughputReport, args: &BenchArgs) -> Value {
    json!({
        "msgs_per_s": r.broadcast.rate().round(),
        "msgs": r.broadcast.msgs,
        "seconds": r.broadcast.seconds,
        "errors": r.broadcast.errors,
        "lagged": r.broadcast.lagged,
        "per_subscriber_msgs": r.broadcast.per_subscriber,
        "policy": "lossless",
        "subscribers": r.subscribers,
        "message_bytes": 8,
        "slots": SLOTS,
        "requested_seconds": args.seconds,
        "publisher_cpu": r.publisher_cpu,
        "subscriber_cpus": r.subscriber_cpus,
        "baselines": {
            "spsc_fanout": {
                "msgs_per_s": r.fanout.rate().round(),
                "msgs": r.fanout.msgs,
                "seconds": r.fanout.seconds,
                "errors": r.fanout.errors,
                "per_subscriber_msgs": r.fanout.per_subscriber,
            },
        },
        "msgs_per_s_vs_spsc_fanout": ratio(r.broadcast.rate(), r.fanout.rate()),
        "method": "messages sent (each delivered to every subscriber, in order, checked by each) / (last subscriber's end - first subscriber's first read); the publisher is this process, each subscriber a process; in rounds alternating with the SPSC fan-out (one Ring<u64> per subscriber, the publisher copying each message into every ring)",
    })
}

pub fn print_throughput(r: &ThroughputReport, args: &BenchArgs) {
    let mut cpus: Vec<usize> = r.subscriber_cpus.clone();
    cpus.push(r.publisher_cpu);
    cpus.sort_unstable();
    cpus.dedup();
    let procs = r.subscribers + 1;
    println!(
        "Throughput, broadcast to {} subscribers, 8 B messages (sequence numbers), lossless, {} s in {THROUGHPUT_ROUNDS} alternating rounds, {SLOTS} slots; publisher on CPU {}, subscribers on CPUs {:?}{}",
        r.subscribers,
        args.seconds,
        r.publisher_cpu,
        r.subscriber_cpus,
        if procs > cpus.len() {
            format!(
                " ({procs} processes on {} CPUs: oversubscribed)",
                cpus.len()
            )
        } else {
            String::new()
        }
    );
    println!(
        "each subscriber verifies every sequence number; errors: {}, lagged: {}",
        r.broadcast.errors + r.fanout.errors,
        r.broadcast.lagged
    );
    println!();
    println!(
        "{:<44} {:>12} {:>8} {:>18}",
        "", "msgs/s", "errors", "broadcast / this"
    );
    for (name, o) in [
        (
            format!("tally Broadcast, 1 x {} processes", r.subscribers),
            &r.broadcast,
        ),
        (
            format!("SPSC fan-out, {} rings, copied into each", r.subscribers),
            &r.fanout,
        ),
    ] {
        println!(
            "{:<44} {:>12} {:>8} {:>18.2}",
            name,
            format!("{:.1} M", o.rate() / 1e6),
            o.errors,
            r.broadcast.rate() / o.rate().max(1e-9),
        );
    }
    println!();
}

// --- latency ------------------------------------------------------------------------

pub struct LatencyReport {
    pub subscribers: usize,
    pub subscriber_cpus: Vec<usize>,
    pub broadcast: Histogram<u64>,
    pub two_line: Histogram<u64>,
    pub fanout: Histogram<u64>,
}

/// Measurements of a latency run: three per round.
pub const LATENCY_STEPS: u32 = 3 * ROUNDS as u32;

pub fn latency(
    args: &BenchArgs,
    n: usize,
    cpus: (usize, usize),
    progress: &mut Progress,
) -> Result<LatencyReport, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let list = super::mpmc::cpu_list(cpus, args.cpus.is_some());
    let subscriber_cpus = layout(n, &list);
    let round_args = BenchArgs {
        iters: args.iters.div_ceil(ROUNDS),
        ..args.clone()
    };
    let mut r = LatencyReport {
        subscribers: n,
        subscriber_cpus,
        broadcast: new_histogram(),
        two_line: new_histogram(),
        fanout: new_histogram(),
    };
    for k in 1..=ROUNDS {
        progress.step(&format!("latency: two-line floor, round {k} of {ROUNDS}"));
        r.two_line.add(latency::two_line(&round_args, cpus)?)?;
        progress.step(&format!(
            "latency: broadcast ring, {n} subscribers, round {k} of {ROUNDS}"
        ));
        r.broadcast.add(ping_pong(
            Via::Broadcast,
            &round_args,
            cpus.0,
            &r.subscriber_cpus,
        )?)?;
        progress.step(&format!(
            "latency: SPSC fan-out, {n} rings, round {k} of {ROUNDS}"
        ));
        r.fanout.add(ping_pong(
            Via::Fanout,
            &round_args,
            cpus.0,
            &r.subscriber_cpus,
        )?)?;
    }
    Ok(r)
}

/// Waits for every subscriber's acknowledgement of `i`.
fn await_acks(rxs: &mut [tally::Consumer<u64>], i: u64, share: bool) -> Result<(), BenchError> {
    for rx in rxs {
        let mut fails = 0u32;
        loop {
            if let Ok(msg) = rx.peek() {
                let seq = *msg;
                msg.release();
                if seq != i {
                    return Err(format!("acknowledgement of {seq}, expected {i}").into());
                }
                break;
            }
            backoff(&mut fails, share);
        }
    }
    Ok(())
}

/// Ping-pong with one echo process per entry of `cpus`, each acknowledging on a ring of
/// its own.
fn ping_pong(
    via: Via,
    args: &BenchArgs,
    publisher: usize,
    cpus: &[usize],
) -> Result<Histogram<u64>, BenchError> {
    let share = oversubscribed(publisher, cpus);
    let name = bench_name(if via == Via::Broadcast {
        "bping"
    } else {
        "fping"
    });
    let ack_names: Vec<String> = (0..cpus.len()).map(|k| format!("{name}-ack{k}")).collect();
    let acks = ack_names
        .iter()
        .map(|n| Ring::<u64>::create(n, PING_SLOTS))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rxs = acks
        .iter()
        .map(Ring::consumer)
        .collect::<Result<Vec<_>, _>>()?;
    let h = match via {
        Via::Broadcast => {
            let feed = Broadcast::<u64>::create(&name, PING_SLOTS, Policy::Lossless)?;
            let mut tx = feed.publisher()?;
            let mut peers = Vec::new();
            for (&cpu, ack) in cpus.iter().zip(&ack_names) {
                peers.push(Peer::spawn(
                    Mode::BcastEcho,
                    &name,
                    8,
                    cpu,
                    &[("name2", ack.clone()), ("share-cpu", share.to_string())],
                )?);
            }
            if !tx.wait_for_subscribers(cpus.len(), ATTACH_TIMEOUT) {
                return Err("broadcast subscribers did not attach".into());
            }
            let h = latency::measure(args, |i| {
                let mut slot = tx.reserve_wait();
                *slot = i;
                slot.commit();
                await_acks(&mut rxs, i, share)
            })?;
            tx.send(STOP);
            for p in peers {
                p.finish()?;
            }
            h
        }
        Via::Fanout => {
            let ping_names: Vec<String> = (0..cpus.len()).map(|k| format!("{name}-{k}")).collect();
            let pings = ping_names
                .iter()
                .map(|n| Ring::<u64>::create(n, PING_SLOTS))
                .collect::<Result<Vec<_>, _>>()?;
            let mut txs = pings
                .iter()
                .map(Ring::producer)
                .collect::<Result<Vec<_>, _>>()?;
            let mut peers = Vec::new();
            for ((&cpu, ping), ack) in cpus.iter().zip(&ping_names).zip(&ack_names) {
                peers.push(Peer::spawn(
                    Mode::FanoutEcho,
                    ping,
                    8,
                    cpu,
                    &[("name2", ack.clone()), ("share-cpu", share.to_string())],
                )?);
            }
            let h = latency::measure(args, |i| {
                for tx in &mut txs {
                    tx.send(i).map_err(|_| "fan-out echo gone")?;
                }
                await_acks(&mut rxs, i, share)
            })?;
            for tx in &mut txs {
                tx.send(STOP).map_err(|_| "fan-out echo gone")?;
            }
            for p in peers {
                p.finish()?;
            }
            h
        }
    };
    Ok(h)
}

fn p50(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.5)
}

pub fn latency_json(r: &LatencyReport, args: &BenchArgs) -> Value {
    let mut v = summary(&r.broadcast);
    let b50 = p50(&r.broadcast) as f64;
    v["subscribers"] = json!(r.subscribers);
    v["policy"] = json!("lossless");
    v["message_bytes"] = json!(8);
    v["iters"] = json!(args.iters);
    v["subscriber_cpus"] = json!(r.subscriber_cpus);
    v["baselines"] = json!({
        "two_line": summary(&r.two_line),
        "spsc_fanout": summary(&r.fanout),
    });
    v["p50_vs_two_line_p50"] = json!(ratio(b50, p50(&r.two_line) as f64));
    v["p50_vs_spsc_fanout_p50"] = json!(ratio(b50, p50(&r.fanout) as f64));
    v["method"] = json!(
        "ping-pong, no cross-CPU clock comparison: the publisher (this process) commits message i to a lossless Broadcast<u64>; each subscriber process reads it in place and acknowledges on its own SPSC Ring<u64>; recorded = (time until the last acknowledgement) / 2, i.e. one-way for 1 subscriber, half the slowest subscriber's round trip for N; in rounds alternating with the two-line floor (one cache line per direction) and the SPSC fan-out (the message sent into one Ring<u64> per subscriber, same acknowledgements)"
    );
    v
}

pub fn print_latency(r: &LatencyReport, args: &BenchArgs, cpus: (usize, usize)) {
    println!(
        "Latency, broadcast to {} subscribers, 8 B messages, lossless, {} round trips (ns; +{} warm-up; in {ROUNDS} alternating rounds); commit to the last subscriber's acknowledgement / 2; publisher on CPU {}, subscribers on CPUs {:?} (two-line floor: CPUs {},{})",
        r.subscribers,
        args.iters,
        args.iters / WARMUP_DIV,
        cpus.0,
        r.subscriber_cpus,
        cpus.0,
        cpus.1
    );
    println!();
    let two50 = p50(&r.two_line);
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>19}",
        "", "p50", "p90", "p99", "p99.9", "max", "mean", "p50 / two-line p50"
    );
    for (name, h) in [
        ("two lines (one per direction)".to_owned(), &r.two_line),
        (
            format!("tally Broadcast, 1 x {} processes", r.subscribers),
            &r.broadcast,
        ),
        (format!("SPSC fan-out, {} rings", r.subscribers), &r.fanout),
    ] {
        let p = p50(h);
        println!(
            "{:<40} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9.1} {:>19.2}",
            name,
            p,
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean(),
            ratio(p as f64, two50 as f64),
        );
    }
    println!();
    println!(
        "Broadcast p50 is {:.2} x the two-line floor and {:.2} x the SPSC fan-out",
        ratio(p50(&r.broadcast) as f64, two50 as f64),
        ratio(p50(&r.broadcast) as f64, p50(&r.fanout) as f64),
    );
    println!();
}

// --- the peer processes ---------------------------------------------------------------

fn report(v: &Value) -> Result<(), BenchError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// A throughput subscriber: reads in place until the stop value, checking each
/// message, and reports what it saw.
pub fn peer_subscribe(mode: Mode, name: &str, share: bool) -> Result<(), BenchError> {
    let mut c = Check::default();
    let mut fails = 0u32;
    if mode == Mode::BcastSubscribe {
        let feed = Broadcast::<u64>::open(name)?;
        let mut rx = feed.subscribe(Start::Oldest)?;
        super::peer::ready()?;
        loop {
            match rx.peek() {
                Ok(msg) => {
                    let seq = *msg;
                    if let Err(l) = msg.release() {
                        c.lagged += l.0;
                    }
                    if seq == STOP {
                        break;
                    }
                    c.check(seq);
                    fails = 0;
                }
                Err(BroadcastTryRecvError::Empty) => backoff(&mut fails, share),
                Err(BroadcastTryRecvError::Lagged(n)) => c.lagged += n,
                Err(BroadcastTryRecvError::Disconnected) => break,
            }
        }
    } else {
        let ring = Ring::<u64>::open(name)?;
        let mut rx = ring.consumer()?;
        super::peer::ready()?;
        loop {
            match rx.peek() {
                Ok(msg) => {
                    let seq = *msg;
                    msg.release();
                    if seq == STOP {
                        break;
                    }
                    c.check(seq);
                    fails = 0;
                }
                Err(TryRecvError::Empty) => backoff(&mut fails, share),
                Err(TryRecvError::Disconnected) => break,
            }
        }
    }
    report(&c.to_json())
}

/// A latency echo: reads each message on `name` in place and acknowledges it on the
/// ring `ack`, until the stop value.
pub fn peer_echo(mode: Mode, name: &str, ack: &str, share: bool) -> Result<(), BenchError> {
    let ack = Ring::<u64>::open(ack)?;
    let mut tx = ack.producer()?;
    let mut fails = 0u32;
    macro_rules! echo {
        ($rx:expr) => {{
            let mut rx = $rx;
            super::peer::ready()?;
            loop {
                let Ok(msg) = rx.peek() else {
                    backoff(&mut fails, share);
                    continue;
                };
                let seq = *msg;
                if seq == STOP {
                    break;
                }
                // Acknowledge first, then move past: the publisher's clock stops on
                // the acknowledgement.
                tx.send(seq).map_err(|_| "publisher gone")?;
                let _ = msg.release();
                fails = 0;
            }
        }};
    }
    if mode == Mode::BcastEcho {
        let feed = Broadcast::<u64>::open(name)?;
        echo!(feed.subscribe(Start::Newest)?);
    } else {
        let ring = Ring::<u64>::open(name)?;
        echo!(ring.consumer()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_parses_and_refuses() {
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count("31"), Ok(31));
        for bad in ["0", "32", "-1", "x", "", "1,2"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_keeps_the_publisher_cpu_free() {
        assert_eq!(layout(1, &[0, 1]), vec![1]);
        assert_eq!(layout(3, &[0, 1]), vec![1, 1, 1]);
        assert_eq!(layout(3, &[0, 1, 2]), vec![1, 2, 1]);
        assert_eq!(layout(2, &[0]), vec![0, 0]);
    }

    #[test]
    fn oversubscribed_counts_the_publisher() {
        assert!(!oversubscribed(0, &[1]));
        assert!(oversubscribed(0, &[1, 1]));
        assert!(oversubscribed(0, &[0]));
        assert!(!oversubscribed(0, &[1, 2]));
    }

    #[test]
    fn judge_counts_breaks_and_missing_messages() {
        let mut a = Check::default();
        (0..4).for_each(|s| a.check(s));
        let mut b = Check::default();
        for s in [0, 1, 3] {
            b.check(s);
        }
        let ok = Outcome::judge(4, &[a.to_json()]).unwrap();
        assert_eq!((ok.msgs, ok.errors, ok.lagged), (4, 0, 0));
        // b skipped 2: one break in the sequence and one message short.
        let bad = Outcome::judge(4, &[a.to_json(), b.to_json()]).unwrap();
        assert_eq!(bad.errors, 2, "{bad:?}");
        assert_eq!(bad.per_subscriber, vec![4, 3]);
    }
}
