//! Inputs the fuzz targets (`fuzz/`) found crashing, replayed through the same harness in
//! the ordinary suite, and the generator of the targets' seed corpora.
//!
//! An input is `[n][n operation bytes][segment image]` (see `fuzz/src/harness.rs`).

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Target, input, run};
use tally::{
    Broadcast, ByteBroadcast, ByteRing, Event, MpmcByteRing, MpmcRing, Mutex, Options, Policy,
    Region, Reset, Ring, Semaphore, Start,
};

mod common;
use common::{shm_path, unique};

/// Prefix of this file's object names.
const PREFIX: &str = "fzr";

/// Operation bytes of every seed: each operation of every target at least once, with
/// small arguments.
fn seed_ops() -> Vec<u8> {
    (0u8..48)
        .flat_map(|i| [i, i.wrapping_mul(7), 3])
        .take(200)
        .collect()
}

fn small() -> Options {
    Options::default()
        .holders(4)
        .timeout(Duration::from_millis(100))
}

/// The bytes of the live object `name` now.
fn image(name: &str) -> Vec<u8> {
    std::fs::read(shm_path(name)).expect("read a live segment")
}

/// Captures one image per interesting state of each object kind, as
/// `(target directory, state, image)`. Images are taken while this process holds the
/// object, so when replayed its holders, claims and locks belong to a dead process.
fn seed_images() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let o = small();
    let mut out = Vec::new();
    let n = |t| unique(PREFIX, t);

    let name = n("region");
    let r = Region::create_with(&name, 256, &o).unwrap();
    out.push(("region", "fresh", image(&name)));
    r.write(0, b"hello").unwrap();
    out.push(("region", "written", image(&name)));
    drop(r);

    let name = n("ring");
    let r = Ring::<u64>::create_with(&name, 8, &o).unwrap();
    let mut p = r.producer().unwrap();
    let mut c = r.consumer().unwrap();
    out.push(("ring", "empty", image(&name)));
    for i in 0..8 {
        p.try_send(i).unwrap();
    }
    out.push(("ring", "full", image(&name)));
    for _ in 0..6 {
        c.try_recv().unwrap();
    }
    for i in 0..5 {
        p.try_send(i).unwrap();
    }
    out.push(("ring", "wrapped", image(&name)));
    let s = c.peek().unwrap();
    out.push(("ring", "peek-held", image(&name)));
    drop(s);
    c.try_recv().unwrap();
    let s = p.reserve().unwrap();
    out.push(("ring", "producer-claim", image(&name)));
    drop(s);
    drop((p, c, r));

    let name = n("bytes");
    let r = ByteRing::create_with(&name, 8, 64, &o).unwrap();
    let mut p = r.producer().unwrap();
    let mut c = r.consumer().unwrap();
    out.push(("byte_ring", "empty", image(&name)));
    for i in 0..8 {
        p.try_send(&[i as u8; 40][..i * 5]).unwrap();
    }
    out.push(("byte_ring", "full", image(&name)));
    let mut buf = Vec::new();
    for _ in 0..6 {
        c.try_recv_into(&mut buf).unwrap();
    }
    for _ in 0..5 {
        p.try_send(b"wrapped").unwrap();
    }
    out.push(("byte_ring", "wrapped", image(&name)));
    let s = p.reserve(64).unwrap();
    out.push(("byte_ring", "producer-claim", image(&name)));
    drop(s);
    drop((p, c, r));

    let name = n("mpmc");
    let r = MpmcRing::<u64>::create_with(&name, 8, &o).unwrap();
    let mut p = r.producer().unwrap();
    let mut p2 = r.producer().unwrap();
    let mut c = r.consumer().unwrap();
    out.push(("mpmc", "empty", image(&name)));
    for i in 0..8 {
        p.try_send(i).unwrap();
    }
    out.push(("mpmc", "full", image(&name)));
    for _ in 0..6 {
        c.try_recv().unwrap();
    }
    for i in 0..4 {
        p2.try_send(i).unwrap();
    }
    out.push(("mpmc", "wrapped", image(&name)));
    let s = p.reserve().unwrap();
    out.push(("mpmc", "producer-claim", image(&name)));
    drop(s);
    let s = c.peek().unwrap();
    out.push(("mpmc", "consumer-holds", image(&name)));
    drop(s);
    drop((p, p2, c, r));

    let name = n("mpmcb");
    let r = MpmcByteRing::create_with(&name, 8, 64, &o).unwrap();
    let mut p = r.producer().unwrap();
    let mut c = r.consumer().unwrap();
    for i in 0..8 {
        p.try_send(&[i as u8; 40][..i * 5]).unwrap();
    }
    out.push(("mpmc", "bytes-full", image(&name)));
    let s = c.peek().unwrap();
    out.push(("mpmc", "bytes-consumer-holds", image(&name)));
    drop(s);
    drop((p, c, r));

    for (policy, tag) in [(Policy::Lossless, "lossless"), (Policy::Lossy, "lossy")] {
        let name = n("bcast");
        let b = Broadcast::<u64>::create_with(&name, 8, policy, &o).unwrap();
        let mut p = b.publisher().unwrap();
        let mut s1 = b.subscribe(Start::Oldest).unwrap();
        let mut s2 = b.subscribe(Start::Newest).unwrap();
        out.push((
            "broadcast",
            if tag == "lossy" {
                "lossy-empty"
            } else {
                "lossless-empty"
            },
            image(&name),
        ));
        for i in 0..8 {
            p.try_send(i).unwrap();
        }
        out.push((
            "broadcast",
            if tag == "lossy" {
                "lossy-full"
            } else {
                "lossless-full"
            },
            image(&name),
        ));
        for _ in 0..5 {
            s1.try_recv().unwrap();
            s2.try_recv().unwrap();
        }
        let w = p.reserve().unwrap();
        out.push((
            "broadcast",
            if tag == "lossy" {
                "lossy-publisher-claim"
            } else {
                "lossless-publisher-claim"
            },
            image(&name),
        ));
        drop(w);
        drop((p, s1, s2, b));
    }
    let name = n("bbcast");
    let b = ByteBroadcast::create_with(&name, 8, 64, Policy::Lossy, &o).unwrap();
    let mut p = b.publisher().unwrap();
    let mut s1 = b.subscribe(Start::Oldest).unwrap();
    for i in 0..11 {
        p.try_send(&[i as u8; 40][..i * 3]).unwrap();
    }
    out.push(("broadcast", "bytes-wrapped", image(&name)));
    let mut buf = Vec::new();
    let _ = s1.try_recv_into(&mut buf);
    let w = p.reserve(30).unwrap();
    out.push(("broadcast", "bytes-publisher-claim", image(&name)));
    drop(w);
    drop((p, s1, b));

    let name = n("sig");
    let s = Semaphore::create_with(&name, 3, 16, &o).unwrap();
    out.push(("semaphore", "signal-3", image(&name)));
    drop(s);
    let name = n("res");
    let s = Semaphore::create_resource_with(&name, 4, &o).unwrap();
    out.push(("semaphore", "resource-free", image(&name)));
    let a = s.try_acquire().unwrap();
    let b = s.try_acquire().unwrap();
    out.push(("semaphore", "resource-held", image(&name)));
    drop((a, b));
    drop(s);

    let name = n("mutex");
    let m = Mutex::<u64>::create_with(&name, 5, &o).unwrap();
    out.push(("mutex", "unlocked", image(&name)));
    let g = m.try_lock().map_err(|_| ()).unwrap();
    out.push(("mutex", "abandoned", image(&name)));
    drop(g);
    drop(m);

    for (mode, tag) in [(Reset::Auto, "auto"), (Reset::Manual, "manual")] {
        let name = n("event");
        let e = Event::create_with(&name, mode, &o).unwrap();
        out.push((
            "event",
            if tag == "auto" {
                "auto-reset"
            } else {
                "manual-reset"
            },
            image(&name),
        ));
        e.set();
        out.push((
            "event",
            if tag == "auto" {
                "auto-set"
            } else {
                "manual-set"
            },
            image(&name),
        ));
        drop(e);
    }
    out
}

/// Writes the seed corpora to `fuzz/corpus/<target>/seed-<state>`:
/// `cargo test --test fuzz_regressions -- --ignored write_seed_corpora`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand before fuzzing"]
fn write_seed_corpora() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let ops = seed_ops();
    for (dir, state, img) in seed_images() {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{state}")), input(&ops, &img)).unwrap();
    }
}

/// Every seed image, replayed through every target (so each kind also meets the others'
/// images), returns without a panic and leaves nothing in /dev/shm.
#[test]
fn seed_images_replay_through_every_target() {
    let ops = seed_ops();
    for (dir, state, img) in seed_images() {
        for (target, _) in Target::ALL {
            run(target, &input(&ops, &img));
            let _ = (dir, state);
        }
    }
    let pid = std::process::id();
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tally.fz-") && n.contains(&format!("-{pid}-")))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

// --- inputs the fuzzers found -------------------------------------------------------------

/// Found by the `semaphore` target (a libFuzzer timeout): the image's dead holder record
/// claims a huge number of permits and the header a huge maximum, so the sweep that
/// `Semaphore::open_with` runs used to return them one `release` at a time, bounded only
/// by the maximum count (up to `u32::MAX`): an open of a forged semaphore took minutes,
/// under the admin lock. The sweep now returns a dead record in one intent (three CASes).
/// A hang regression, so the bound is generous: the fixed code takes well under a
/// millisecond here, the old code minutes.
#[test]
fn a_forged_dead_holder_with_huge_permits_does_not_stall_open() {
    let input = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/semaphore-slow-recover"),
    )
    .expect("the saved input");
    let start = std::time::Instant::now();
    run(Target::Semaphore, &input);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
