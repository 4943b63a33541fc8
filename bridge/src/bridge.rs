//! The exporter and the importer: what `export` and `import` run, and what `bench`
//! runs in threads.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tally::{BroadcastRecvTimeoutError, Policy, RecvTimeoutError, Schema};

use crate::local::{Feed, Local, Shape, Source};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

use crate::wire::{self, HEADER_LEN, Header};
use crate::{ExportArgs, Failure, ImportArgs, ZenohArgs};

/// How often a waiting loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// An importer acknowledges at least every this many messages.
const ACK_EVERY: u32 = 64;
/// An importer acknowledges what it wrote once nothing has come for this long.
const ACK_IDLE: Duration = Duration::from_micros(500);
/// An exporter whose unacknowledged messages see no acknowledgement for this long
/// sends them again.
const RESEND_AFTER: Duration = Duration::from_secs(2);

/// The key of the exporter's description queryable under its key expression.
pub fn describe_key(key: &str) -> String {
    format!("{key}/@tally")
}

/// The Zenoh configuration the options describe.
///
/// # Errors
/// A usage failure for an unreadable file or a bad entry.
pub fn zenoh_config(z: &ZenohArgs) -> Result<zenoh::Config, Failure> {
    let mut config = match &z.config {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| Failure::Usage(format!("Zenoh configuration {}: {e}", path.display())))?,
        None => zenoh::Config::default(),
    };
    let mut set = |key: &str, value: String| {
        config
            .insert_json5(key, &value)
            .map_err(|e| Failure::Usage(format!("Zenoh configuration {key}: {value}: {e}")))
    };
    if let Some(mode) = &z.mode {
        set("mode", json!(mode).to_string())?;
    }
    if !z.connect.is_empty() {
        set("connect/endpoints", json!(z.connect).to_string())?;
    }
    if !z.listen.is_empty() {
        set("listen/endpoints", json!(z.listen).to_string())?;
    }
    for entry in &z.cfg {
        let Some((key, value)) = entry.split_once(':') else {
            return Err(Failure::Usage(format!(
                "--cfg {entry:?}: expected KEY:VALUE, e.g. scouting/multicast/enabled:false"
            )));
        };
        set(key, value.to_owned())?;
    }
    Ok(config)
}

/// Opens a Zenoh session.
///
/// # Errors
/// A failure naming what Zenoh said.
pub fn open_session(config: zenoh::Config) -> Result<zenoh::Session, Failure> {
    zenoh::open(config)
        .wait()
        .map_err(|e| Failure::Failed(format!("Zenoh session: {e}")))
}

fn zerr(what: &str) -> impl FnOnce(zenoh::Error) -> Failure + '_ {
    move |e| Failure::Failed(format!("Zenoh {what}: {e}"))
}

/// A random u64 (an exporter's session id).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

// --- export ----------------------------------------------------------------------------

/// The exporter's counters.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Messages read from the ring.
    pub received: AtomicU64,
    /// Samples published.
    pub published: AtomicU64,
    /// Whether an importer (any subscriber) matches the key now.
    pub matching: AtomicBool,
    /// The ring position of the next message.
    pub position: AtomicU64,
    /// Messages published again to a new importer (or after acks stalled).
    pub resent: AtomicU64,
    /// Broadcast rings: messages the publisher overwrote before this exporter read them
    /// (lossy rings); the importer counts them as missing.
    pub lagged: AtomicU64,
}

/// The identity of ring A's incarnation: stable across exporter restarts, new when the
/// ring is recreated.
fn stream_id(ring: &Local) -> u64 {
    let info = ring.info();
    wire::fnv1a(
        format!(
            "{}/{}/{}",
            info.name, info.created_unix_ms, info.creator_pid
        )
        .as_bytes(),
    )
}

/// The key importers acknowledge on: `KEY/@tally/ack`.
pub fn ack_key(key: &str) -> String {
    format!("{key}/@tally/ack")
}

/// Publishes every message of `ring` on `key` until `stop`, keeping each in the ring
/// until an importer acknowledges it (`KEY/@tally/ack`): messages are read ahead
/// (up to the ring's capacity) and released only once acknowledged, so a killed
/// exporter loses nothing: its successor starts at the first unacknowledged message
/// and republishes what the importer may already have, which the importer drops as
/// duplicates by their sequence. While nothing subscribes to `key`, or nothing is
/// acknowledged for a ring's worth of messages, the exporter waits and the ring fills,
/// so its producer waits too.
///
/// Without `ack` each message is released once published (for subscribers that do not
/// acknowledge): a killed exporter may then lose what Zenoh had queued.
///
/// A lossless broadcast ring is read the same way by one more subscriber, which holds
/// the publisher back until the importer acknowledges; its successor joins at the
/// oldest message still in the ring (where the dead one held it, unless other
/// subscribers let the publisher on meanwhile). A lossy one is read by
/// [`export_broadcast`].
///
/// # Errors
/// A failure if the consumer role cannot be claimed or Zenoh fails.
pub fn run_export(
    ring: &Local,
    session: &zenoh::Session,
    key: &str,
    stats: &ExportStats,
    stop: &AtomicBool,
    ack: bool,
) -> Result<(), Failure> {
    let description = ring.describe().to_string();
    let _queryable = session
        .declare_queryable(describe_key(key))
        .callback(move |query| {
            let _ = query
                .reply(query.key_expr().clone(), description.clone())
                .wait();
        })
        .wait()
        .map_err(zerr("queryable"))?;
    let stream = stream_id(ring);
    // The highest sequence acknowledged + 1, for this stream.
    let acked = Arc::new(AtomicU64::new(0));
    let sink = acked.clone();
    let _acks = session
        .declare_subscriber(ack_key(key))
        .callback(move |sample| {
            if let Some(ack) = wire::Ack::read(&sample.payload().to_bytes())
                && ack.stream == stream
            {
                // SYNC POINT: Release pairs with the exporter loop's Acquire load.
                sink.fetch_max(ack.next, Ordering::Release);
            }
        })
        .wait()
        .map_err(zerr("ack subscriber"))?;
    let publisher = session
        .declare_publisher(key.to_owned())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(zerr("publisher"))?;
    let matching = Arc::new(AtomicBool::new(false));
    // Counts the times an importer appeared: each one gets every unacknowledged
    // message again.
    let arrivals = Arc::new(AtomicU64::new(0));
    let (flag, count) = (matching.clone(), arrivals.clone());
    let _listener = publisher
        .matching_listener()
        .callback(move |status| {
            if status.matching() {
                count.fetch_add(1, Ordering::Release);
            }
            flag.store(status.matching(), Ordering::Release);
        })
        .wait()
        .map_err(zerr("matching listener"))?;
    if publisher
        .matching_status()
        .wait()
        .map_err(zerr("matching status"))?
        .matching()
    {
        matching.store(true, Ordering::Release);
    }
    let header = Header {
        flags: ring.flags(),
        type_id: ring.type_id(),
        seq: 0,
        len: 0,
        stream,
        session: random_u64(),
    };
    let link = Link {
        publisher: &publisher,
        matching: &matching,
        arrivals: &arrivals,
        acked: &acked,
        ack,
    };
    match (ring.consumer()?, ring.subscribe()?) {
        (Some(consumer), _) => {
            export_ring(consumer, ring.capacity() as u64, &link, header, stats, stop)
        }
        (None, Some(feed)) => {
            export_broadcast(feed, ring.message_size(), &link, header, stats, stop)
        }
        (None, None) => unreachable!("a ring has a consumer or a subscriber"),
    }
}

/// What the export loops share: the publisher and what the callbacks report.
struct Link<'a> {
    publisher: &'a zenoh::pubsub::Publisher<'a>,
    /// Whether an importer (any subscriber) matches the key.
    matching: &'a AtomicBool,
    /// How many times an importer appeared.
    arrivals: &'a AtomicU64,
    /// The highest sequence acknowledged + 1, for this stream.
    acked: &'a AtomicU64,
    /// Whether messages wait for acknowledgements.
    ack: bool,
}

impl Link<'_> {
    /// Whether an importer matches the key now (also in `stats`).
    fn matching(&self, stats: &ExportStats) -> bool {
        // SYNC POINT: Acquire pairs with the Release stores of the matching callback.
        let m = self.matching.load(Ordering::Acquire);
        stats.matching.store(m, Ordering::Relaxed);
        m
    }

    /// Publishes `sample`: `header` with `seq`, then the payload already in it.
    fn publish(&self, sample: &mut Vec<u8>, header: &mut Header, seq: u64) -> Result<(), Failure> {
        header.seq = seq;
        header.len = (sample.len() - HEADER_LEN) as u32;
        header.write(&mut sample[..HEADER_LEN]);
        self.publisher
            .put(std::mem::take(sample))
            .wait()
            .map_err(zerr("put"))
    }
}

/// A fresh sample buffer with room for the header and `size` payload bytes.
fn sample_buffer(size: usize) -> Vec<u8> {
    let mut sample = Vec::with_capacity(HEADER_LEN + size);
    sample.resize(HEADER_LEN, 0);
    sample
}

/// The export loop of an SPSC ring or a lossless broadcast ring: read ahead, release
/// what was acknowledged.
fn export_ring(
    mut consumer: Source,
    capacity: u64,
    link: &Link<'_>,
    mut header: Header,
    stats: &ExportStats,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let mut seen_arrivals = link.arrivals.load(Ordering::Acquire);
    let mut last_progress = Instant::now();
    // The next sequence to publish; consumer.position() is the oldest unacknowledged.
    let mut sent = consumer.position();
    stats.position.store(sent, Ordering::Relaxed);
    while !stop.load(Ordering::Acquire) {
        // SYNC POINT: Acquire pairs with the ack callback's Release.
        let a = if link.ack {
            link.acked.load(Ordering::Acquire)
        } else {
            sent
        };
        let head = consumer.position();
        if a > head && consumer.release_n(a - head) > 0 {
            last_progress = Instant::now();
        }
        let head = consumer.position();
        // Acknowledged beyond what this exporter sent: a predecessor sent it.
        sent = sent.max(head);
        let m = link.matching(stats);
        let now_arrivals = link.arrivals.load(Ordering::Acquire);
        let ahead = sent.wrapping_sub(head);
        let stalled = ahead >= capacity && last_progress.elapsed() > RESEND_AFTER;
        if now_arrivals != seen_arrivals || stalled {
            // A new importer (or one whose acks stopped): send it everything not yet
            // acknowledged; what it already wrote it drops by sequence.
            seen_arrivals = now_arrivals;
            if sent != head {
                stats.resent.fetch_add(sent - head, Ordering::Relaxed);
            }
            sent = head;
            last_progress = Instant::now();
        }
        let ahead = sent.wrapping_sub(head);
        if !m || ahead >= capacity {
            // No importer, or a ring's worth unacknowledged: wait for acks.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let Some(msg) = consumer.peek_at(ahead) else {
            match consumer.wait_at(ahead, POLL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                // The producer has gone; a new one may come.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
            continue;
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let mut sample = sample_buffer(msg.len());
        sample.extend_from_slice(msg);
        link.publish(&mut sample, &mut header, sent)?;
        sent += 1;
        stats.published.fetch_add(1, Ordering::Relaxed);
        stats.position.store(sent, Ordering::Relaxed);
    }
    Ok(())
}

/// The export loop of a lossy broadcast ring: one subscriber among the ring's others,
/// which moves on once a message is published (a lossy publisher waits for no one, so
/// holding messages back for acknowledgements would protect nothing). What the
/// publisher overwrote before this exporter read it the importer reports as a gap, and
/// `lagged` counts it here.
fn export_broadcast(
    mut feed: Feed,
    size: usize,
    link: &Link<'_>,
    mut header: Header,
    stats: &ExportStats,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    stats.position.store(feed.position(), Ordering::Relaxed);
    let mut sample = sample_buffer(size);
    while !stop.load(Ordering::Acquire) {
        if !link.matching(stats) {
            // No importer: wait; what the publisher overwrites meanwhile is `lagged`.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        match feed.read_into(&mut sample, POLL) {
            Ok(position) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                link.publish(&mut sample, &mut header, position)?;
                sample = sample_buffer(size);
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(BroadcastRecvTimeoutError::Lagged(n)) => {
                stats.lagged.fetch_add(n, Ordering::Relaxed);
            }
            Err(BroadcastRecvTimeoutError::Timeout) => {}
            // The publisher has gone; a new one may come.
            Err(BroadcastRecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
        stats.position.store(feed.position(), Ordering::Relaxed);
    }
    Ok(())
}

/// `tally-bridge export`.
pub fn export_command(args: &ExportArgs, stop: Arc<AtomicBool>) -> Result<(), Failure> {
    let config = zenoh_config(&args.zenoh)?;
    let ring = Local::open(&args.name)?;
    let session = open_session(config)?;
    let stats = Arc::new(ExportStats::default());
    let zid = session.zid().to_string();
    let status = {
        let stats = stats.clone();
        let (name, key) = (args.name.clone(), args.key.clone());
        let kind = ring.kind_name();
        move |event: &str| {
            json!({
                "event": event,
                "role": "export",
                "name": name,
                "key": key,
                "zid": zid,
                "received": stats.received.load(Ordering::Relaxed),
                "published": stats.published.load(Ordering::Relaxed),
                "position": stats.position.load(Ordering::Relaxed),
                "matching": stats.matching.load(Ordering::Relaxed),
                "resent": stats.resent.load(Ordering::Relaxed),
                "lagged": stats.lagged.load(Ordering::Relaxed),
                "kind": kind,
            })
        }
    };
    with_status(args.json, &stop, status, || {
        run_export(&ring, &session, &args.key, &stats, &stop, !args.no_ack)
    })
}

/// Runs `work`, printing `status` as a JSON line at the start ("ready"), once a second
/// ("status") and at the end ("exit") when `json`.
fn with_status<S, W>(json: bool, stop: &AtomicBool, status: S, work: W) -> Result<(), Failure>
where
    S: Fn(&str) -> serde_json::Value + Send + Sync,
    W: FnOnce() -> Result<(), Failure> + Send,
{
    let done = AtomicBool::new(false);
    let print = |event: &str| {
        if json {
            println!("{}", status(event));
        }
    };
    print("ready");
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = Instant::now() + Duration::from_secs(1);
            while !done.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                std::thread::sleep(POLL);
                if Instant::now() >= next {
                    print("status");
                    next += Duration::from_secs(1);
                }
            }
        });
        let r = work();
        // SYNC POINT: Release pairs with the status thread's Acquire load.
        done.store(true, Ordering::Release);
        r
    });
    print("exit");
    result
}

// --- import ----------------------------------------------------------------------------

/// The importer's counters.
#[derive(Debug, Default)]
pub struct ImportStats {
    /// Samples received.
    pub received: AtomicU64,
    /// Messages written into the ring.
    pub written: AtomicU64,
    /// Sequence jumps seen (each one a gap).
    pub gaps: AtomicU64,
    /// Messages the gaps skipped: lost in flight.
    pub missing: AtomicU64,
    /// Samples dropped as already written (an exporter's restart republishes one).
    pub duplicates: AtomicU64,
    /// Samples that were not tally-bridge samples.
    pub malformed: AtomicU64,
    /// Exporter sessions seen.
    pub sessions: AtomicU64,
    /// Exported ring incarnations seen (a recreated ring A starts a new stream).
    pub streams: AtomicU64,
}

/// Where a restarted importer continues, kept in a 32-byte file when `--state` names
/// one: the stream, the sequence being written, and ring B's producer position before
/// it was written. Saved before each commit; on restart, ring B's position says
/// whether that commit happened (it moved past the saved one) or not, so nothing is
/// written twice and nothing is skipped.
pub struct StateFile {
    file: File,
}

const STATE_MAGIC: u64 = u64::from_le_bytes(*b"TLYBST02");

impl StateFile {
    /// Opens or creates `path`.
    ///
    /// # Errors
    /// A failure naming the file.
    pub fn open(path: &std::path::Path) -> Result<Self, Failure> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Failure::Failed(format!("state file {}: {e}", path.display())))?;
        Ok(StateFile { file })
    }

    /// The stream and the next sequence to write, given ring B's producer position now.
    pub fn load(&self, ring_position: u64) -> Option<(u64, u64)> {
        let mut b = [0u8; 32];
        self.file.read_exact_at(&mut b, 0).ok()?;
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if word(0) != STATE_MAGIC {
            return None;
        }
        let (stream, seq, before) = (word(8), word(16), word(24));
        Some((stream, if ring_position > before { seq + 1 } else { seq }))
    }

    /// Saves that `seq` of `stream` is about to be written at ring position `before`.
    ///
    /// # Errors
    /// A failure if the file cannot be written.
    pub fn save(&self, stream: u64, seq: u64, before: u64) -> Result<(), Failure> {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&STATE_MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&stream.to_le_bytes());
        b[16..24].copy_from_slice(&seq.to_le_bytes());
        b[24..32].copy_from_slice(&before.to_le_bytes());
        self.file
            .write_all_at(&b, 0)
            .map_err(|e| Failure::Failed(format!("state file: {e}")))
    }
}

/// Asks the exporter on `key` to describe its ring, retrying until `wait` has passed.
///
/// # Errors
/// A failure if no exporter answered in time, or the answer is unreadable.
pub fn ask_exporter(
    session: &zenoh::Session,
    key: &str,
    wait: Duration,
    stop: &AtomicBool,
) -> Result<serde_json::Value, Failure> {
    let deadline = Instant::now() + wait;
    loop {
        let replies = session
            .get(describe_key(key))
            .timeout(Duration::from_millis(500))
            .wait()
            .map_err(zerr("query"))?;
        while let Ok(reply) = replies.recv() {
            if let Ok(sample) = reply.result() {
                let bytes = sample.payload().to_bytes();
                return serde_json::from_slice(&bytes).map_err(|e| {
                    Failure::Failed(format!("the exporter's description on {key}: {e}"))
                });
            }
        }
        if Instant::now() >= deadline || stop.load(Ordering::Acquire) {
            return Err(Failure::Failed(format!(
                "no exporter answered on {} within {:.1} s (start `tally-bridge export` first, or give --schema and --capacity)",
                describe_key(key),
                wait.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kind of ring an importer creates: `--kind` and `--policy`, else what the
/// exporter described (`kind`, `policy`), else an SPSC ring.
fn import_shape(
    args: &ImportArgs,
    described: Option<&serde_json::Value>,
) -> Result<Shape, Failure> {
    let kind = match (&args.kind, described) {
        (Some(kind), _) => kind.as_str(),
        (None, Some(d)) => match d["kind"].as_str() {
            Some("broadcast" | "byte_broadcast") => "broadcast",
            _ => "ring",
        },
        (None, None) => "ring",
    };
    if kind == "ring" {
        if args.policy.is_some() {
            return Err(Failure::Usage(
                "--policy is for broadcast rings (--kind broadcast)".into(),
            ));
        }
        return Ok(Shape::Ring);
    }
    let policy = match (&args.policy, described) {
        (Some(p), _) => p.as_str(),
        (None, Some(d)) => d["policy"].as_str().unwrap_or("lossless"),
        (None, None) => "lossless",
    };
    match policy {
        "lossless" => Ok(Shape::Broadcast(Policy::Lossless)),
        "lossy" => Ok(Shape::Broadcast(Policy::Lossy)),
        other => Err(Failure::Failed(format!(
            "the exporter describes an unknown broadcast policy {other:?}"
        ))),
    }
}

/// Opens ring `name`, or creates it with the payload, capacity and kind given or
/// described by the exporter.
///
/// # Errors
/// A failure (a layout mismatch among them) from tally, or from asking the exporter.
pub fn import_ring(
    args: &ImportArgs,
    session: &zenoh::Session,
    stop: &AtomicBool,
) -> Result<Local, Failure> {
    if args.schema.is_none() {
        match Local::open(&args.name) {
            Ok(ring) => {
                let broadcast = ring.policy().is_some();
                return match args.kind.as_deref() {
                    Some("ring") if broadcast => Err(Failure::Failed(format!(
                        "--kind ring: {} is a broadcast ring",
                        args.name
                    ))),
                    Some("broadcast") if !broadcast => Err(Failure::Failed(format!(
                        "--kind broadcast: {} is an SPSC ring",
                        args.name
                    ))),
                    _ => Ok(ring),
                };
            }
            Err(tally::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (schema, capacity, size, shape) = match &args.schema {
        Some(text) => {
            let capacity = args.capacity.ok_or_else(|| {
                Failure::Usage("--schema needs --capacity (the ring's slots)".into())
            })?;
            (
                text.clone(),
                capacity,
                args.max_message,
                import_shape(args, None)?,
            )
        }
        None => {
            let wait = crate::seconds("--wait", args.wait)?;
            let d = ask_exporter(session, &args.key, wait, stop)?;
            let bad = || Failure::Failed(format!("the exporter's description is unusable: {d}"));
            let schema = d["schema"].as_str().ok_or_else(bad)?.to_owned();
            let capacity = match args.capacity {
                Some(c) => c,
                None => d["capacity"].as_u64().ok_or_else(bad)? as usize,
            };
            let size = d["message_size"].as_u64().ok_or_else(bad)? as usize;
            match d["kind"].as_str() {
                Some("byte_ring" | "byte_broadcast") if schema == "bytes" => {}
                Some("ring" | "broadcast") => {
                    let align = d["align"].as_u64().ok_or_else(bad)?;
                    let decoded = Schema::from_canonical(&schema)?;
                    if decoded.align() as u64 != align {
                        return Err(Failure::Failed(format!(
                            "the exported payload {schema} is aligned to {align} bytes, above its fields' {}: create ring {} yourself",
                            decoded.align(),
                            args.name
                        )));
                    }
                }
                _ => return Err(bad()),
            }
            (schema, capacity, Some(size), import_shape(args, Some(&d))?)
        }
    };
    let max = if schema == "bytes" {
        size.ok_or_else(|| {
            Failure::Usage("--schema bytes needs --max-message (the longest message)".into())
        })?
    } else {
        0
    };
    Ok(Local::open_or_create(
        &args.name, shape, &schema, capacity, max,
    )?)
}

/// The importer's writing side, run in Zenoh's receive callback: each sample goes
/// straight into ring B, with no hand-off to another thread.
struct Writer {
    producer: Option<crate::local::Sink>,
    type_id: u64,
    flags: u8,
    /// A typed ring's message size, or a byte ring's largest message.
    size: usize,
    bytes: bool,
    /// (stream, next sequence expected)
    expect: Option<(u64, u64)>,
    session_id: Option<u64>,
    warned_malformed: bool,
    /// Messages written (or dropped as duplicates) since the last acknowledgement.
    unacked: u32,
    last_write: Instant,
    /// A sample of another payload type: (key, its type id, its length).
    mismatch: Option<(String, u64, usize)>,
    /// The state file failed.
    failure: Option<Failure>,
}

impl Writer {
    fn acknowledge(&mut self, acks: &zenoh::pubsub::Publisher<'_>) {
        if let Some((stream, next)) = self.expect.filter(|_| self.unacked > 0) {
            let _ = acks
                .put(wire::Ack { stream, next }.to_bytes().to_vec())
                .wait();
        }
        self.unacked = 0;
    }

    fn write(
        &mut self,
        sample: &zenoh::sample::Sample,
        key: &str,
        stats: &ImportStats,
        stop: &AtomicBool,
        state: Option<&StateFile>,
    ) {
        if self.mismatch.is_some() || self.failure.is_some() {
            return;
        }
        let Some(producer) = self.producer.as_mut() else {
            return;
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let bytes = sample.payload().to_bytes();
        let (h, payload) = match Header::read(&bytes) {
            Ok(x) => x,
            Err(why) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                if !self.warned_malformed {
                    eprintln!(
                        "tally-bridge: warning: dropping a sample on {}: {why}",
                        sample.key_expr()
                    );
                    self.warned_malformed = true;
                }
                return;
            }
        };
        let size_ok = if self.bytes {
            payload.len() <= self.size
        } else {
            payload.len() == self.size
        };
        if h.type_id != self.type_id || h.flags != self.flags || !size_ok {
            self.mismatch = Some((sample.key_expr().to_string(), h.type_id, payload.len()));
            return;
        }
        if self.session_id != Some(h.session) {
            self.session_id = Some(h.session);
            stats.sessions.fetch_add(1, Ordering::Relaxed);
        }
        match self.expect {
            Some((stream, _)) if stream != h.stream => {
                eprintln!(
                    "tally-bridge: stream restarted on {key}: the exported ring was recreated; continuing at its sequence {}",
                    h.seq
                );
                stats.streams.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                stats.streams.fetch_add(1, Ordering::Relaxed);
            }
            Some((_, next)) if h.seq < next => {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                self.unacked += 1;
                self.last_write = Instant::now();
                return;
            }
            Some((_, next)) if h.seq > next => {
                let missing = h.seq - next;
                eprintln!(
                    "tally-bridge: gap on {key}: sequence jumped from {next} to {}: {missing} message(s) lost",
                    h.seq
                );
                stats.gaps.fetch_add(1, Ordering::Relaxed);
                stats.missing.fetch_add(missing, Ordering::Relaxed);
            }
            Some(_) => {}
        }
        if let Some(state) = state
            && let Err(e) = state.save(h.stream, h.seq, producer.position())
        {
            self.failure = Some(e);
            return;
        }
        if !producer.write(payload, stop) {
            return;
        }
        stats.written.fetch_add(1, Ordering::Relaxed);
        self.unacked += 1;
        self.last_write = Instant::now();
        self.expect = Some((h.stream, h.seq + 1));
    }
}

/// Writes every sample on `key` into `ring` until `stop`, in order, blocking while the
/// ring is full (so Zenoh's reliable channel and the exporter's ring wait too). It
/// writes in Zenoh's receive callback. Sequence jumps are gaps (counted, and reported on
/// stderr); sequences already written are duplicates and dropped. What is written is
/// acknowledged on `KEY/@tally/ack` every [`ACK_EVERY`] messages and once nothing has
/// come for [`ACK_IDLE`].
///
/// # Errors
/// A layout mismatch when a sample carries another payload type than the ring's; a
/// failure if the producer role cannot be claimed, the state file cannot be written or
/// Zenoh fails.
pub fn run_import(
    ring: &Local,
    session: &zenoh::Session,
    key: &str,
    stats: &Arc<ImportStats>,
    stop: &Arc<AtomicBool>,
    state: Option<StateFile>,
) -> Result<(), Failure> {
    let acks = Arc::new(
        session
            .declare_publisher(ack_key(key))
            .wait()
            .map_err(zerr("ack publisher"))?,
    );
    let producer = ring.producer()?;
    let expect = state.as_ref().and_then(|st| st.load(producer.position()));
    let writer = Arc::new(std::sync::Mutex::new(Writer {
        producer: Some(producer),
        type_id: ring.type_id(),
        flags: ring.flags(),
        size: ring.message_size(),
        bytes: ring.is_bytes(),
        expect,
        session_id: None,
        warned_malformed: false,
        unacked: 0,
        last_write: Instant::now(),
        mismatch: None,
        failure: None,
    }));
    let subscriber = {
        let (writer, stats, stop, acks) =
            (writer.clone(), stats.clone(), stop.clone(), acks.clone());
        let key = key.to_owned();
        session
            .declare_subscriber(key.clone())
            .callback(move |sample| {
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                w.write(&sample, &key, &stats, &stop, state.as_ref());
                if w.unacked >= ACK_EVERY {
                    w.acknowledge(&acks);
                }
            })
            .wait()
            .map_err(zerr("subscriber"))?
    };
    enum End {
        Stop,
        Failed(Failure),
        Mismatch(String, u64, usize),
    }
    let end = loop {
        if stop.load(Ordering::Acquire) {
            break End::Stop;
        }
        std::thread::sleep(ACK_IDLE);
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = w.failure.take() {
            break End::Failed(f);
        }
        if let Some((sample_key, id, len)) = w.mismatch.take() {
            break End::Mismatch(sample_key, id, len);
        }
        if w.unacked > 0 && w.last_write.elapsed() >= ACK_IDLE {
            w.acknowledge(&acks);
        }
    };
    drop(subscriber);
    // Release the producer role now, whatever Zenoh still holds of the callback.
    let producer = writer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .producer
        .take();
    drop(producer);
    match end {
        End::Stop => Ok(()),
        End::Failed(f) => Err(f),
        End::Mismatch(sample_key, id, len) => {
            let theirs = ask_exporter(session, key, Duration::from_secs(1), stop)
                .ok()
                .and_then(|d| d["schema"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            Err(Failure::Failed(format!(
                "layout mismatch: ring {} holds {} (type id {:016x}); the samples on {sample_key} carry {len} bytes of type id {id:016x} (the exporter's payload: {theirs}); nothing was written",
                ring.name(),
                if ring.is_bytes() {
                    format!("byte messages of up to {} bytes", ring.message_size())
                } else {
                    format!(
                        "{}-byte payloads {}",
                        ring.message_size(),
                        ring.schema_text()
                    )
                },
                ring.type_id(),
            )))
        }
    }
}

/// `tally-bridge import`.
pub fn import_command(args: &ImportArgs, stop: Arc<AtomicBool>) -> Result<(), Failure> {
    let config = zenoh_config(&args.zenoh)?;
    crate::seconds("--wait", args.wait)?;
    if args.kind.as_deref() == Some("ring") && args.policy.is_some() {
        return Err(Failure::Usage(
            "--policy is for broadcast rings (--kind broadcast)".into(),
        ));
    }
    if args.schema.is_some() && args.capacity.is_none() {
        return Err(Failure::Usage(
            "--schema needs --capacity (the ring's slots)".into(),
        ));
    }
    let state = args.state.as_deref().map(StateFile::open).transpose()?;
    let session = open_session(config)?;
    let ring = import_ring(args, &session, &stop)?;
    let stats = Arc::new(ImportStats::default());
    let zid = session.zid().to_string();
    let schema = ring.schema_text();
    let status = {
        let stats = stats.clone();
        let (name, key) = (args.name.clone(), args.key.clone());
        move |event: &str| {
            let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
            json!({
                "event": event,
                "role": "import",
                "name": name,
                "key": key,
                "zid": zid,
                "schema": schema,
                "received": n(&stats.received),
                "written": n(&stats.written),
                "gaps": n(&stats.gaps),
                "missing": n(&stats.missing),
                "duplicates": n(&stats.duplicates),
                "malformed": n(&stats.malformed),
                "sessions": n(&stats.sessions),
                "streams": n(&stats.streams),
            })
        }
    };
    with_status(args.json, &stop, status, || {
        run_import(&ring, &session, &args.key, &stats, &stop, state)
    })
}
