//! `ls`, `inspect`, `sweep`, `rm`, `hold`.

use std::io::{BufRead, Write};

use serde_json::{Value, json};
use tally::admin::{self, Holder};
use tally::{Options, Region, Result, SegmentInfo, SyncInfo};

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
        "sync": sync_json(info),
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
    Options {
        allow_foreign_owner: true,
        ..Options::default()
    }
}

pub fn ls(json: bool) -> Result<()> {
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();
    for name in admin::list()? {
        match admin::inspect_with(&name, &read_opts()) {
            Ok(info) => rows.push(info),
            // Unlinked between listing and reading.
            Err(tally::Error::NotFound(_)) => {}
            Err(e) => unreadable.push((name, e.to_string())),
        }
    }
    if json {
        let mut arr: Vec<Value> = rows.iter().map(info_json).collect();
        arr.extend(
            unreadable
                .iter()
                .map(|(name, err)| json!({"name": name, "kind": "unreadable", "error": err})),
        );
        print_json(&Value::Array(arr));
        return Ok(());
    }
    println!(
        "{:<32} {:<10} {:>12} {:>8} {:>5} {:>5}",
        "NAME", "KIND", "SIZE", "REFCOUNT", "LIVE", "DEAD"
    );
    for info in &rows {
        let live = info.holders.iter().filter(|h| h.alive).count();
        println!(
            "{:<32} {:<10} {:>12} {:>8} {:>5} {:>5}",
            info.name,
            info.kind.as_str(),
            info.size_bytes,
            info.refcount,
            live,
            info.holders.len() - live
        );
        let state = sync_summary(info);
        if !state.is_empty() {
            println!("  {state}");
        }
    }
    for (name, err) in &unreadable {
        println!("{name:<32} unreadable: {err}");
    }
    Ok(())
}

pub fn inspect(name: &str, json: bool) -> Result<()> {
    let info = admin::inspect_with(name, &read_opts())?;
    if json {
        print_json(&info_json(&info));
        return Ok(());
    }
    println!("name:        {}", info.name);
    println!("kind:        {}", info.kind);
    println!("state:       {}", info.state);
    println!(
        "size:        {} bytes ({} in the object)",
        info.size_bytes, info.object_bytes
    );
    println!(
        "payload:     {} ({} bytes)",
        info.payload_type, info.payload_size
    );
    // The compared identity (field names, types, offsets): whole if it fits a line.
    if info.payload_schema.len() <= 66 {
        println!("schema:      {}", info.payload_schema);
    } else {
        println!(
            "schema:      {} bytes (see --json)",
            info.payload_schema.len()
        );
    }
    println!("owner:       uid {} mode {:o}", info.owner_uid, info.mode);
    println!(
        "created by:  pid {} at {} ms",
        info.creator_pid, info.created_unix_ms
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
        println!(
            "  slot {:>4}  pid {:>8}  {}",
            h.slot,
            h.pid,
            if h.alive {
                "alive"
            } else {
                "dead (not yet swept)"
            }
        );
    }
    Ok(())
}

pub fn sweep(name: Option<&str>, json: bool) -> Result<()> {
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
    Ok(())
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

pub fn hold(name: &str, create_bytes: Option<usize>, allow_foreign_owner: bool) -> Result<()> {
    // Block the termination signals before any thread starts, so they are taken
    // synchronously below and the handle is dropped (detached) on the way out.
    tally::__private::block_termination_signals()
        .map_err(|e| tally::Error::InvalidArgument(format!("cannot block signals: {e}")))?;
    let opts = Options {
        allow_foreign_owner,
        ..Options::default()
    };
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
    std::thread::spawn(move || {
        let mut line = String::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
        let _ = tx2.send("end of stdin");
    });
    // A reader that went away must not make us panic: keep holding until told to stop.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready").and_then(|()| out.flush());
    let _why = rx.recv();
    drop(held);
    Ok(())
}
