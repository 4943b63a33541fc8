//! `ls`, `inspect`, `sweep`, `rm`, `hold`.

use std::io::{BufRead, Write};

use serde_json::{Value, json};
use tally::admin::{self, Creation, Holder};
use tally::{Kind, Options, Region, Result, SegmentInfo, SyncInfo};

use crate::Failure;
use crate::human;

fn holders_json(info: &SegmentInfo) -> Value {
    info.holders
        .iter()
        .map(|h| {
            json!({
                "slot": h.slot,
                "pid": h.pid,
                "alive": h.alive,
                "start_ticks": h.start_ticks,
                "attached_unix_ms": h.attached_unix_ms,
            })
        })
        .collect()
}

fn info_json(info: &SegmentInfo) -> Value {
    let live = info.holders.iter().filter(|h| h.alive).count();
    json!({
        "name": info.name,
        "kind": info.kind.as_str(),
        "size_bytes": info.size_bytes,
        "object_bytes": info.object_bytes,
        "refcount": info.refcount,
        "state": info.state,
        "live_holders": live,
        "dead_holders": info.holders.len() - live,
        "holders": holders_json(info),
        "payload_type": info.payload_type,
        "payload_size": info.payload_size,
        "payload_schema": info.payload_schema,
        "table_capacity": info.table_capacity,
        "owner_uid": info.owner_uid,
        "mode": format!("{:o}", info.mode),
        "creator_pid": info.creator_pid,
        "created_unix_ms": info.created_unix_ms,
        "reclaimed_total": info.reclaimed_total,
        "ring": info.ring.as_ref().map(ring_json),
        "sync": sync_json(info),
        "broadcast": info.broadcast.as_ref().map(broadcast_json),
    })
}

fn broadcast_json(b: &tally::BroadcastInfo) -> Value {
    json!({
        "policy": b.policy,
        "capacity": b.capacity,
        "slot_bytes": b.slot_bytes,
        "max_message": b.max_message,
        "tail": b.tail,
        "publisher": {
            "holder_slot": b.publisher.holder_slot,
            "claims": b.publisher.claims,
            "last_exit": b.publisher.last_exit,
        },
        "subscribers": b.subscribers.iter().map(|s| json!({
            "line": s.line,
            "holder_slot": s.holder_slot,
            "position": s.position,
            "lag": s.lag,
            "lagged": s.lagged,
        })).collect::<Vec<_>>(),
        "subscribers_ever": b.subscribers_ever,
        "dropped_dead": b.dropped_dead,
    })
}

/// One line of broadcast state for `ls`: policy, publisher, subscribers and the
/// slowest one's lag.
fn broadcast_summary(info: &SegmentInfo) -> String {
    let Some(b) = &info.broadcast else {
        return String::new();
    };
    let publisher = match b.publisher.holder_slot {
        Some(slot) => match pid_of(info, slot) {
            Some(pid) => format!("publisher pid {pid}"),
            None => format!("publisher slot {slot}"),
        },
        None => format!("no publisher (last {})", b.publisher.last_exit),
    };
    let max_lag = b.subscribers.iter().map(|s| s.lag).max().unwrap_or(0);
    format!(
        "{}, {publisher}, {} messages, {} subscribers (max lag {max_lag})",
        b.policy,
        b.tail,
        b.subscribers.len()
    )
}

/// The broadcast part of `inspect`: policy, the publisher, each subscriber.
fn broadcast_lines(info: &SegmentInfo) -> Vec<String> {
    let Some(b) = &info.broadcast else {
        return Vec::new();
    };
    let mut lines = vec![
        format!(
            "broadcast:   {}, {} slots of {} ({} payload bytes), {} messages committed",
            b.policy,
            b.capacity,
            human::size(b.slot_bytes),
            b.max_message,
            b.tail
        ),
        match b.publisher.holder_slot {
            Some(slot) => format!("publisher:   slot {slot}"),
            None => format!(
                "publisher:   none (claimed {} times, last {})",
                b.publisher.claims, b.publisher.last_exit
            ),
        },
        format!(
            "subscribers: {} now, {} ever, {} dropped after their holder died",
            b.subscribers.len(),
            b.subscribers_ever,
            b.dropped_dead
        ),
    ];
    let alive = |slot: u32| info.holders.iter().any(|h| h.slot == slot && h.alive);
    for s in &b.subscribers {
        lines.push(format!(
            "  line {:>4}  slot {:>4}  position {:>10}  lag {:>8}{}{}",
            s.line,
            s.holder_slot,
            s.position,
            s.lag,
            if s.lagged > 0 {
                format!("  missed {}", s.lagged)
            } else {
                String::new()
            },
            if alive(s.holder_slot) {
                ""
            } else {
                "  (dead: dropped by the next sweep or a waiting publisher)"
            }
        ));
    }
    lines
}

fn ring_json(r: &tally::RingInfo) -> Value {
    let role = |role: &tally::RoleInfo| {
        json!({
            "holder_slot": role.holder_slot,
            "claims": role.claims,
            "last_exit": role.last_exit,
        })
    };
    json!({
        "capacity": r.capacity,
        "slot_bytes": r.slot_bytes,
        "max_message": r.max_message,
        "head": r.head,
        "committed": r.committed,
        "producer": role(&r.producer),
        "consumer": role(&r.consumer),
        "producer_handles": r.producer_handles,
        "consumer_handles": r.consumer_handles,
        "claims": r.claims.iter().map(|c| json!({
            "position": c.position,
            "writing": c.writing,
            "holder_slot": c.holder_slot,
        })).collect::<Vec<_>>(),
        "skipped": r.skipped,
        "redelivered": r.redelivered,
        "orphans": r.orphans,
    })
}

/// A semaphore's, mutex's or event's state as JSON (`null` for other kinds).
fn sync_json(info: &SegmentInfo) -> Value {
    match &info.sync {
        Some(SyncInfo::Semaphore(s)) => json!({
            "flavor": s.flavor,
            "count": s.count,
            "max": s.max,
            "permits": s.permits.iter().map(|&(slot, n)| json!({"slot": slot, "pid": pid_of(info, slot), "held": n})).collect::<Vec<_>>(),
            "pending": s.pending.map(|(slot, op)| json!({"slot": slot, "op": op})),
            "sleepers": s.sleepers,
        }),
        Some(SyncInfo::Mutex(m)) => json!({
            "owner_slot": m.owner_slot,
            "owner_pid": m.owner_slot.and_then(|s| pid_of(info, s)),
            "abandoned": m.abandoned,
            "abandonments": m.abandonments,
            "sleepers": m.sleepers,
        }),
        Some(SyncInfo::Event(e)) => json!({
            "reset": if e.manual_reset { "manual" } else { "auto" },
            "set": e.set,
            "sleepers": e.sleepers,
        }),
        _ => Value::Null,
    }
}

fn pid_of(info: &SegmentInfo, slot: u32) -> Option<u32> {
    info.holders.iter().find(|h| h.slot == slot).map(|h| h.pid)
}

/// One line of a semaphore's, mutex's or event's state (empty for other kinds).
fn sync_summary(info: &SegmentInfo) -> String {
    match &info.sync {
        Some(SyncInfo::Semaphore(s)) => {
            let mut out = format!("{} {}/{} available", s.flavor, s.count, s.max);
            for &(slot, n) in &s.permits {
                let pid = pid_of(info, slot).map_or("?".into(), |p| p.to_string());
                out += &format!(", slot {slot} (pid {pid}) holds {n}");
            }
            if let Some((slot, op)) = s.pending {
                out += &format!(", {op} by slot {slot} pending");
            }
            out + &format!(", {} sleeping", s.sleepers)
        }
        Some(SyncInfo::Mutex(m)) => {
            let owner = match m.owner_slot {
                Some(slot) => {
                    let pid = pid_of(info, slot).map_or("?".into(), |p| p.to_string());
                    format!("locked by slot {slot} (pid {pid})")
                }
                None => "unlocked".into(),
            };
            format!(
                "{owner}{}, {} sleeping",
                if m.abandoned { ", abandoned" } else { "" },
                m.sleepers
            )
        }
        Some(SyncInfo::Event(e)) => format!(
            "{}-reset, {}, {} sleeping",
            if e.manual_reset { "manual" } else { "auto" },
            if e.set { "set" } else { "not set" },
            e.sleepers
        ),
        _ => String::new(),
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values always serialise")
    );
}

/// Segments owned by other users are listed too: `ls` only reads.
fn read_opts() -> Options {
    Options::default().allow_foreign_owner(true)
}

/// What to do about a name that holds something `inspect` cannot read, if there is
/// an obvious answer: a file that is not a tally segment at all (bad magic, shorter
/// than the header) is in the way of the name and nothing else.
fn unreadable_hint(name: &str, e: &tally::Error) -> Option<String> {
    match e {
        tally::Error::Corrupted { detail, .. }
            if detail.starts_with("bad magic") || detail.contains("shorter than") =>
        {
            Some(format!("not a tally object; tally rm {name} removes it"))
        }
        _ => None,
    }
}

/// Segments being created, and creation debris, as the library sees them (a listing
/// error shows as none: `ls` reports the objects it can read either way).
fn creations() -> Vec<Creation> {
    let mut out = admin::creations().unwrap_or_default();
    out.sort_by(|a, b| a.temp_name.cmp(&b.temp_name));
    out
}

fn creation_json(c: &Creation) -> Value {
    json!({
        "name": c.temp_name,
        "kind": "creation",
        "state": if c.builder_alive { "creating" } else { "debris" },
        "builder_pid": c.builder_pid,
        "builder_alive": c.builder_alive,
        "bytes": c.bytes,
        "allocated_bytes": c.allocated_bytes,
        "age_ms": c.age_ms,
        "published": c.published,
        "removable": c.would_sweep,
    })
}

fn creation_note(c: &Creation) -> String {
    if c.builder_alive {
        match c.builder_pid {
            Some(pid) => format!("(creating, pid {pid})"),
            None => "(creating)".to_owned(),
        }
    } else {
        "(debris of a dead create; tally sweep removes it)".to_owned()
    }
}

pub fn ls(json: bool) -> std::result::Result<(), Failure> {
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();
    for name in admin::list()? {
        match admin::inspect_with(&name, &read_opts()) {
            Ok(info) => rows.push(info),
            // Unlinked between listing and reading.
            Err(tally::Error::NotFound(_)) => {}
            Err(e) => {
                let hint = unreadable_hint(&name, &e);
                unreadable.push((name, e.to_string(), hint));
            }
        }
    }
    let creating = creations();
    if json {
        let mut arr: Vec<Value> = rows.iter().map(info_json).collect();
        arr.extend(unreadable.iter().map(|(name, err, hint)| {
            json!({"name": name, "kind": "unreadable", "error": err, "hint": hint})
        }));
        arr.extend(creating.iter().map(creation_json));
        print_json(&Value::Array(arr));
        return Ok(());
    }
    println!(
        "{:<32} {:<10} {:>10} {:>8} {:>5} {:>5}",
        "NAME", "KIND", "SIZE", "REFCOUNT", "LIVE", "DEAD"
    );
    for info in &rows {
        let live = info.holders.iter().filter(|h| h.alive).count();
        println!(
            "{:<32} {:<10} {:>10} {:>8} {:>5} {:>5}",
            info.name,
            info.kind.as_str(),
            human::size(info.size_bytes),
            info.refcount,
            live,
            info.holders.len() - live
        );
        let state = sync_summary(info);
        if !state.is_empty() {
            println!("  {state}");
        }
        let state = broadcast_summary(info);
        if !state.is_empty() {
            println!("  {state}");
        }
    }
    for (name, err, hint) in &unreadable {
        match hint {
            Some(h) => println!("{name:<32} unreadable: {err} ({h})"),
            None => println!("{name:<32} unreadable: {err}"),
        }
    }
    for c in &creating {
        println!(
            "{:<32} {:<10} {:>10}   {}, {} old",
            c.temp_name,
            "creation",
            human::size(c.bytes),
            creation_note(c),
            c.age_ms.map_or("?".to_owned(), human::duration_ms)
        );
    }
    Ok(())
}

/// The ring part of `inspect`: capacity, fill, and which holder has which role.
/// `SegmentInfo` does not describe a ring's state yet; when it gains
/// `ring: Option<RingInfo>`, this function prints it.
fn ring_lines(info: &SegmentInfo) -> Vec<String> {
    let Some(r) = &info.ring else {
        return Vec::new();
    };
    let mut lines = vec![format!(
        "ring:        {} slots of {} ({} payload bytes), {} waiting ({:.0}% full)",
        r.capacity,
        human::size(r.slot_bytes),
        r.max_message,
        r.committed,
        100.0 * r.committed as f64 / r.capacity.max(1) as f64
    )];
    match info.kind {
        Kind::MpmcRing | Kind::MpmcByteRing => {
            lines.push(format!(
                "handles:     {} producers, {} consumers attached",
                r.producer_handles, r.consumer_handles
            ));
            let alive = |slot: u32| info.holders.iter().any(|h| h.slot == slot && h.alive);
            for c in &r.claims {
                lines.push(format!(
                    "claim:       position {} {} by slot {}{}",
                    c.position,
                    if c.writing {
                        "being written"
                    } else {
                        "held for reading"
                    },
                    c.holder_slot,
                    if alive(c.holder_slot) {
                        ""
                    } else {
                        " (dead: the next sweep or a blocked peer skips or redelivers it)"
                    }
                ));
            }
            lines.push(format!(
                "recovered:   {} positions skipped, {} messages redelivered, {} waiting to be",
                r.skipped, r.redelivered, r.orphans
            ));
        }
        _ => {
            let role = |name: &str, role: &tally::RoleInfo| match role.holder_slot {
                Some(slot) => format!("{name}:{}slot {slot}", " ".repeat(12 - name.len() - 1)),
                None => format!(
                    "{name}:{}none (claimed {} times, last {})",
                    " ".repeat(12 - name.len() - 1),
                    role.claims,
                    role.last_exit
                ),
            };
            lines.push(role("producer", &r.producer));
            lines.push(role("consumer", &r.consumer));
        }
    }
    lines
}

/// The role (producer, consumer) the holder in `slot` has in an SPSC ring.
fn role_of(info: &SegmentInfo, slot: u32) -> Option<&'static str> {
    let r = info.ring.as_ref()?;
    match (
        r.producer.holder_slot == Some(slot),
        r.consumer.holder_slot == Some(slot),
    ) {
        (true, true) => Some("producer, consumer"),
        (true, false) => Some("producer"),
        (false, true) => Some("consumer"),
        (false, false) => None,
    }
}

pub fn inspect(name: &str, json: bool) -> std::result::Result<(), Failure> {
    let info =
        admin::inspect_with(name, &read_opts()).map_err(|e| match unreadable_hint(name, &e) {
            Some(hint) => Failure::Failed(format!("{e}; {hint}")),
            None => Failure::from(e),
        })?;
    if json {
        print_json(&info_json(&info));
        return Ok(());
    }
    let now = human::now_unix_ms();
    println!("name:        {}", info.name);
    println!("kind:        {}", info.kind);
    println!("state:       {}", info.state);
    println!(
        "size:        {} ({} bytes; {} in the object)",
        human::size(info.size_bytes),
        info.size_bytes,
        human::size(info.object_bytes)
    );
    match info.payload_size {
        0 => println!("payload:     {}", info.payload_type),
        n => println!(
            "payload:     {} ({})",
            info.payload_type,
            human::size(u64::from(n))
        ),
    }
    // The compared identity (field names, types, offsets): whole if it fits a line.
    if info.payload_schema.len() <= 66 {
        println!("schema:      {}", info.payload_schema);
    } else {
        println!(
            "schema:      {} bytes (see --json)",
            info.payload_schema.len()
        );
    }
    for line in ring_lines(&info) {
        println!("{line}");
    }
    for line in broadcast_lines(&info) {
        println!("{line}");
    }
    println!("owner:       uid {}, mode {:o}", info.owner_uid, info.mode);
    println!(
        "created:     {} by pid {}",
        human::time(info.created_unix_ms, now),
        info.creator_pid
    );
    let state = sync_summary(&info);
    if !state.is_empty() {
        println!("state:       {state}");
    }
    println!("refcount:    {}", info.refcount);
    println!("reclaimed:   {} dead holders so far", info.reclaimed_total);
    println!(
        "holders:     {} of {} slots used",
        info.holders.len(),
        info.table_capacity
    );
    for h in &info.holders {
        let role = role_of(&info, h.slot).map_or(String::new(), |r| format!("  {r}"));
        println!(
            "  slot {:>4}  pid {:>8}  {:<20}  attached {}{role}",
            h.slot,
            h.pid,
            if h.alive {
                "alive"
            } else {
                "dead (not yet swept)"
            },
            human::time(h.attached_unix_ms, now),
        );
    }
    Ok(())
}

pub fn sweep(name: Option<&str>, json: bool) -> std::result::Result<(), Failure> {
    let report = match name {
        Some(n) => admin::sweep(n)?,
        None => admin::sweep_all()?,
    };
    if json {
        print_json(&json!({
            "reclaimed_holders": report.reclaimed_holders,
            "unlinked": report.unlinked,
            "init_debris_removed": report.init_debris_removed,
            "errors": report.errors.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "reclaimed {} dead holder(s); unlinked {} object(s){}{}",
            report.reclaimed_holders,
            report.unlinked.len(),
            if report.unlinked.is_empty() {
                String::new()
            } else {
                format!(": {}", report.unlinked.join(", "))
            },
            if report.init_debris_removed > 0 {
                format!(
                    "; removed {} half-created segment(s)",
                    report.init_debris_removed
                )
            } else {
                String::new()
            }
        );
        for (n, e) in &report.errors {
            println!("could not sweep {n}: {e}");
        }
    }
    if report.errors.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = report.errors.iter().map(|(n, _)| n.as_str()).collect();
    Err(Failure::Failed(format!(
        "could not sweep {} object(s): {}",
        names.len(),
        names.join(", ")
    )))
}

pub fn rm(name: &str, json: bool) -> Result<()> {
    admin::remove(name)?;
    if json {
        print_json(&json!({ "removed": name }));
    } else {
        println!("removed {name}");
    }
    Ok(())
}

enum Held {
    // Kept for their Drop: the handle is what holds the object.
    Any(#[allow(dead_code)] Holder),
    Bytes(#[allow(dead_code)] Region),
}

pub fn hold(
    name: &str,
    create_bytes: Option<usize>,
    allow_foreign_owner: bool,
    until_signal: bool,
) -> Result<()> {
    // Block the termination signals before any thread starts, so they are taken
    // synchronously below and the handle is dropped (detached) on the way out.
    tally::__private::block_termination_signals()
        .map_err(|e| tally::Error::InvalidArgument(format!("cannot block signals: {e}")))?;
    let opts = Options::default().allow_foreign_owner(allow_foreign_owner);
    let held = match create_bytes {
        Some(n) => Held::Bytes(Region::open_or_create(name, n, &opts)?.0),
        None => Held::Any(Holder::open(name, &opts)?),
    };
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let sig = tally::__private::wait_termination_signal();
        let _ = tx.send(if sig == 2 { "SIGINT" } else { "signal" });
    });
    if !until_signal {
        std::thread::spawn(move || {
            let mut line = String::new();
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
            }
            let _ = tx2.send("end of stdin");
        });
    } else {
        drop(tx2);
    }
    // A reader that went away must not make us panic: keep holding until told to stop.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready").and_then(|()| out.flush());
    let _why = rx.recv();
    drop(held);
    Ok(())
}
