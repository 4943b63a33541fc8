//! Inputs the fuzz targets (`fuzz/`) found crashing, replayed through the same harness in
//! the ordinary suite, and the generator of the targets' seed corpora.
//!
//! An input is `[n][n operation bytes][segment image]` (see `fuzz/src/harness.rs`).

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Target, input, run};
use tally::{ByteRing, Event, MpmcRing, Mutex, Options, Region, Reset, Ring, Semaphore};

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
/// `Semaphore::open_with` runs returns them one `release` (two CASes) at a time:
/// `semaphore::recover` is bounded only by the maximum count, which may be `u32::MAX`,
/// so an open or sweep of a forged semaphore can take seconds to minutes, under the admin
/// lock. Not fixed yet (needs a bulk return of permits in the settle protocol); this test
/// fails until it is, hence ignored.
#[test]
#[ignore = "open finding: semaphore recovery is O(permits held by the dead record)"]
fn a_forged_dead_holder_with_huge_permits_does_not_stall_open() {
    let input = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/semaphore-slow-recover"),
    )
    .expect("the saved input");
    let start = std::time::Instant::now();
    run(Target::Semaphore, &input);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(500), "took {took:?}");
}
