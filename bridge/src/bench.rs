//! `tally-bridge bench`: the bridge pair (ring A -> exporter -> Zenoh over localhost
//! TCP -> importer -> ring B) against a plain Zenoh publisher -> subscriber pair on
//! the same configuration, side by side in alternating rounds, for 8-byte and
//! 4096-byte payloads. The exporter and importer are threads of this process with
//! their own Zenoh sessions, running the same code as the `export` and `import`
//! commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tally::{Options, RecvTimeoutError, Schema, UntypedConsumer, UntypedProducer, UntypedRing};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::bridge::{self, ExportStats, ImportStats};
use crate::local::Local;
use crate::{Failure, ZenohArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object keyed by payload size ("8", "4096").
    #[arg(long)]
    json: bool,
    /// Seconds of each throughput and each latency measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Rounds per payload size (each round measures both pairs, in alternating order);
    /// the figures are the rounds' medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Messages a second in the latency measurement.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Ring capacity of rings A and B.
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
}

const SIZES: [usize; 2] = [8, 4096];
const POLL: Duration = Duration::from_millis(20);

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::Failed(format!("a free port on 127.0.0.1: {e}")))
}

/// The same configuration for both pairs: peer mode, no scouting, one side listening
/// on localhost TCP and the other connecting to it.
fn session_pair() -> Result<(zenoh::Session, zenoh::Session), Failure> {
    let port = free_port()?;
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let base = |listen: bool| ZenohArgs {
        mode: Some("peer".into()),
        listen: if listen {
            vec![endpoint.clone()]
        } else {
            vec![]
        },
        connect: if listen {
            vec![]
        } else {
            vec![endpoint.clone()]
        },
        cfg: vec![
            "scouting/multicast/enabled:false".into(),
            "scouting/gossip/enabled:false".into(),
        ],
        config: None,
    };
    let a = bridge::open_session(bridge::zenoh_config(&base(true))?)?;
    let b = bridge::open_session(bridge::zenoh_config(&base(false))?)?;
    Ok((a, b))
}

/// Nanoseconds since `base` (CLOCK_MONOTONIC, as `Instant` is on Linux).
fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// One measurement's result.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    msgs_per_s: f64,
    p50_ns: f64,
    p99_ns: f64,
}

/// The sending half of a pipe under test.
trait PipeSend: Send {
    /// Sends one payload, waiting while the pipe is full unless `stop` is set.
    fn send_payload(&mut self, payload: &[u8], stop: &AtomicBool) -> bool;
}

/// The receiving half of a pipe under test.
trait PipeRecv: Send {
    /// The next payload's first 8 bytes (its stamp), or `None` after `POLL`.
    fn recv(&mut self) -> Option<u64>;
}

struct BridgeTx(UntypedProducer);
struct BridgeRx(UntypedConsumer);

impl PipeSend for BridgeTx {
    fn send_payload(&mut self, payload: &[u8], stop: &AtomicBool) -> bool {
        while !stop.load(Ordering::Acquire) {
            if let Ok(mut slot) = self.0.reserve_timeout(POLL) {
                slot.copy_from_slice(payload);
                slot.commit();
                return true;
            }
        }
        false
    }
}

impl PipeRecv for BridgeRx {
    fn recv(&mut self) -> Option<u64> {
        match self.0.peek_timeout(POLL) {
            Ok(msg) => {
                let stamp = u64::from_ne_bytes(msg[..8].try_into().expect("8 bytes"));
                msg.release();
                Some(stamp)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }
}

struct ZenohTx(zenoh::pubsub::Publisher<'static>);
type FifoSubscriber =
    zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>;
struct ZenohRx(FifoSubscriber);

impl PipeSend for ZenohTx {
    fn send_payload(&mut self, payload: &[u8], _: &AtomicBool) -> bool {
        self.0.put(payload.to_vec()).wait().is_ok()
    }
}

impl PipeRecv for ZenohRx {
    fn recv(&mut self) -> Option<u64> {
        let sample = self.0.recv_timeout(POLL).ok()??;
        let bytes = sample.payload().to_bytes();
        Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?))
    }
}

/// Sends for `secs` (at `rate` a second, or as fast as possible) and receives on
/// another thread: throughput over the window, and latency percentiles.
fn measure(
    tx: &mut dyn PipeSend,
    rx: &mut dyn PipeRecv,
    size: usize,
    secs: Duration,
    rate: Option<u32>,
    base: Instant,
) -> Figures {
    let stop = AtomicBool::new(false);
    let sender_done = AtomicBool::new(false);
    let start_ns = now_ns(base);
    let warmup = secs / 5;
    let (count, mut lat) = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut lat = Vec::new();
            let mut count = 0u64;
            let window_start = start_ns + warmup.as_nanos() as u64;
            let window_end = start_ns + (warmup + secs).as_nanos() as u64;
            loop {
                let Some(stamp) = rx.recv() else {
                    if now_ns(base) >= window_end {
                        stop.store(true, Ordering::Release);
                    }
                    // Drain until the sender has stopped, so it is never left blocked.
                    if sender_done.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                };
                let now = now_ns(base);
                if stamp < start_ns {
                    continue; // left over from an earlier measurement
                }
                if now >= window_start && now < window_end {
                    count += 1;
                    lat.push(now - stamp);
                }
                if now >= window_end {
                    // SYNC POINT: Release pairs with the sender's Acquire load.
                    stop.store(true, Ordering::Release);
                }
            }
            (count, lat)
        });
        let mut payload = vec![0u8; size];
        let period = rate.map(|r| Duration::from_secs(1) / r.max(1));
        let mut next = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if let Some(p) = period {
                next += p;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            payload[..8].copy_from_slice(&now_ns(base).to_ne_bytes());
            if !tx.send_payload(&payload, &stop) {
                break;
            }
        }
        // SYNC POINT: Release pairs with the receiver's Acquire load.
        sender_done.store(true, Ordering::Release);
        receiver.join().expect("receiver thread")
    });
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize] as f64
        }
    };
    Figures {
        msgs_per_s: count as f64 / secs.as_secs_f64(),
        p50_ns: pct(0.5),
        p99_ns: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Medians over rounds of (throughput, latency) figures.
#[derive(Default)]
struct Rounds {
    tput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Rounds {
    fn add(&mut self, tput: Figures, lat: Figures) {
        self.tput.push(tput.msgs_per_s);
        self.p50.push(lat.p50_ns);
        self.p99.push(lat.p99_ns);
    }
    fn summary(&self) -> (f64, f64, f64) {
        (
            median(self.tput.clone()),
            median(self.p50.clone()),
            median(self.p99.clone()),
        )
    }
}

/// Benchmarks one payload size.
fn bench_size(args: &BenchArgs, size: usize, base: Instant) -> Result<serde_json::Value, Failure> {
    let secs = crate::seconds("--seconds", args.seconds)?;
    let stop = Arc::new(AtomicBool::new(false));
    let pid = std::process::id();
    let schema = Schema::from_canonical(&format!("[u8;{size}]"))?;
    let name_a = format!("bridge-bench-a-{pid}-{size}");
    let name_b = format!("bridge-bench-b-{pid}-{size}");
    let ring_a = Local::Typed(UntypedRing::create(
        &name_a,
        &schema,
        args.capacity,
        &Options::default(),
    )?);
    let ring_b = Local::Typed(UntypedRing::create(
        &name_b,
        &schema,
        args.capacity,
        &Options::default(),
    )?);
    let key = format!("tally/bench/{pid}/{size}");
    let plain_key = format!("tally/bench/{pid}/{size}/plain");

    let (exp_session, imp_session) = session_pair()?;
    let (pub_session, sub_session) = session_pair()?;
    let export_stats = ExportStats::default();
    let import_stats = Arc::new(ImportStats::default());

    std::thread::scope(|s| -> Result<serde_json::Value, Failure> {
        let exporter =
            s.spawn(|| bridge::run_export(&ring_a, &exp_session, &key, &export_stats, &stop, true));
        let importer =
            s.spawn(|| bridge::run_import(&ring_b, &imp_session, &key, &import_stats, &stop, None));
        let result = (|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !export_stats.matching.load(Ordering::Relaxed) {
                if Instant::now() > deadline || exporter.is_finished() || importer.is_finished() {
                    return Err(Failure::Failed(
                        "the bridge pair did not connect within 10 s".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let publisher = pub_session
                .declare_publisher(plain_key.clone())
                .congestion_control(CongestionControl::Block)
                .wait()
                .map_err(|e| Failure::Failed(format!("Zenoh publisher: {e}")))?;
            let subscriber = sub_session
                .declare_subscriber(plain_key.clone())
                .wait()
                .map_err(|e| Failure::Failed(format!("Zenoh subscriber: {e}")))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !publisher
                .matching_status()
                .wait()
                .is_ok_and(|m| m.matching())
            {
                if Instant::now() > deadline {
                    return Err(Failure::Failed(
                        "the plain Zenoh pair did not connect within 10 s".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut btx = BridgeTx(UntypedRing::open(&name_a)?.producer()?);
            let mut brx = BridgeRx(UntypedRing::open(&name_b)?.consumer()?);
            let mut ztx = ZenohTx(publisher);
            let mut zrx = ZenohRx(subscriber);
            let (mut bridge_r, mut zenoh_r) = (Rounds::default(), Rounds::default());
            for round in 0..args.rounds {
                let bridge_first = round % 2 == 0;
                for which in [bridge_first, !bridge_first] {
                    if which {
                        let t = measure(&mut btx, &mut brx, size, secs, None, base);
                        let l = measure(&mut btx, &mut brx, size, secs, Some(args.rate), base);
                        bridge_r.add(t, l);
                    } else {
                        let t = measure(&mut ztx, &mut zrx, size, secs, None, base);
                        let l = measure(&mut ztx, &mut zrx, size, secs, Some(args.rate), base);
                        zenoh_r.add(t, l);
                    }
                }
            }
            let (bt, b50, b99) = bridge_r.summary();
            let (zt, z50, z99) = zenoh_r.summary();
            Ok(json!({
                "msgs_per_s": bt.round(),
                "p50_ns": b50,
                "p99_ns": b99,
                "throughput_ratio": bt / zt,
                "p50_ratio": b50 / z50,
                "targets": {
                    "throughput_ratio_min": 0.8,
                    "p50_ratio_max": 1.2,
                    "met": bt >= 0.8 * zt && b50 <= 1.2 * z50,
                },
                "rounds": args.rounds,
                "seconds": args.seconds,
                "latency_rate_per_s": args.rate,
                "rounds_msgs_per_s": bridge_r.tput,
                "rounds_p50_ns": bridge_r.p50,
                "baselines": {
                    "zenoh": {
                        "msgs_per_s": zt.round(),
                        "p50_ns": z50,
                        "p99_ns": z99,
                        "rounds_msgs_per_s": zenoh_r.tput,
                        "rounds_p50_ns": zenoh_r.p50,
                    }
                },
                "dropped": {
                    "gaps": import_stats.gaps.load(Ordering::Relaxed),
                    "missing": import_stats.missing.load(Ordering::Relaxed),
                },
            }))
        })();
        stop.store(true, Ordering::Release);
        let e = exporter.join().expect("exporter thread");
        let i = importer.join().expect("importer thread");
        let v = result?;
        e?;
        i?;
        Ok(v)
    })
}

/// `tally-bridge bench`.
pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    if args.rounds == 0 || args.rate == 0 {
        return Err(Failure::Usage(
            "--rounds and --rate must be at least 1".into(),
        ));
    }
    let base = Instant::now();
    let mut out = serde_json::Map::new();
    out.insert(
        "machine".into(),
        json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "load_1m": std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok())),
            "transport": "tcp/127.0.0.1",
        }),
    );
    for size in SIZES {
        let v = bench_size(args, size, base)?;
        if !args.json {
            let z = &v["baselines"]["zenoh"];
            println!(
                "{size:>5} B  bridge {:>10.0} msg/s  p50 {:>8.0} ns   zenoh {:>10.0} msg/s  p50 {:>8.0} ns   ratio tput {:.2} (>= 0.8)  p50 {:.2} (<= 1.2)",
                v["msgs_per_s"].as_f64().unwrap_or(f64::NAN),
                v["p50_ns"].as_f64().unwrap_or(f64::NAN),
                z["msgs_per_s"].as_f64().unwrap_or(f64::NAN),
                z["p50_ns"].as_f64().unwrap_or(f64::NAN),
                v["throughput_ratio"].as_f64().unwrap_or(f64::NAN),
                v["p50_ratio"].as_f64().unwrap_or(f64::NAN),
            );
        }
        out.insert(size.to_string(), v);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}
