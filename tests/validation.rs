//! P6 (distrust the segment) and P7 (private by default), from outside the crate.
//!
//! Files are crafted or patched directly in /dev/shm; every bad input must give a typed
//! [`Error`], never a panic, a SIGBUS or an attach to the wrong object.
//!
//! The header offsets patched here are checked against a freshly created segment by
//! `header_offsets_match_a_created_segment`: if that test fails, the layout changed and
//! the offsets below must follow it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tally::{Error, Kind, Options, Region, admin};

mod common;
use common::{Rng, assert_err, shm_path, unique};

/// Prefix of this file's object names.
const PREFIX: &str = "vt";

// Header layout (src/segment/layout.rs, `Header`, repr(C)).
const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 8;
const OFF_KIND: u64 = 12;
const OFF_HEADER_LEN: u64 = 16;
const OFF_TABLE_CAPACITY: u64 = 20;
const OFF_TABLE_OFFSET: u64 = 24;
const OFF_OBJECT_OFFSET: u64 = 32;
const OFF_OBJECT_LEN: u64 = 40;
const OFF_TOTAL_LEN: u64 = 48;
const OFF_CREATOR_PID: u64 = 120;
const OFF_STATE: u64 = 136;
const OFF_REFCOUNT: u64 = 144;
const OFF_SCHEMA_OFFSET: u64 = 160;
const OFF_SCHEMA_LEN: u64 = 168;
/// A byte region's payload schema text, between the table and the object.
const BYTES_SCHEMA: &[u8] = b"bytes";
const HEADER_LEN: usize = 256;
const RECORD_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"TALLYSEG";
const STATE_READY: u32 = 2;
const STATE_DESTROYING: u32 = 3;
const STATE_REMOVED: u32 = 4;

const REGION_LEN: usize = 4096;

/// Removes whatever is left under a name (file, symlink, directory, fifo) and any extra
/// paths, even when the test fails. Declare it before the handles it outlives.
struct Shm {
    name: String,
    extra: Vec<PathBuf>,
}

impl Shm {
    fn new(tag: &str) -> Self {
        Shm {
            name: unique(PREFIX, tag),
            extra: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        shm_path(&self.name)
    }

    /// Writes `bytes` as a new file under the name, mode 0600.
    fn write_file(&self, bytes: &[u8]) {
        write_new(&self.path(), bytes);
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        for p in std::iter::once(self.path()).chain(self.extra.drain(..)) {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir(&p);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}

fn write_new(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).expect("write crafted segment");
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment file to patch");
    f.write_all_at(bytes, offset).expect("patch segment file");
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).expect("open segment file to read");
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset)
        .expect("read segment file");
    buf
}

fn read_u32(path: &Path, offset: u64) -> u32 {
    u32::from_ne_bytes(read_at(path, offset, 4).try_into().unwrap())
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    u64::from_ne_bytes(read_at(path, offset, 8).try_into().unwrap())
}

/// The bytes of a freshly created, valid region segment (its creator has left: the
/// holder table still shows the creator in slot 0, but nobody holds its lock).
fn valid_segment_bytes() -> Vec<u8> {
    let shm = Shm::new("template");
    let r = Region::create(&shm.name, REGION_LEN).expect("create template region");
    let bytes = fs::read(shm.path()).expect("read template segment");
    drop(r);
    bytes
}

fn short_timeout() -> Options {
    Options::default().timeout(Duration::from_millis(100))
}

// --- the layout these tests rely on ---------------------------------------------------

#[test]
fn header_offsets_match_a_created_segment() {
    let shm = Shm::new("offsets");
    let r = Region::create(&shm.name, REGION_LEN).unwrap();
    let p = shm.path();
    let file_len = fs::metadata(&p).unwrap().len();
    assert_eq!(read_at(&p, OFF_MAGIC, 8), MAGIC);
    assert_eq!(read_u32(&p, OFF_VERSION), 2, "layout_version");
    assert_eq!(read_u32(&p, OFF_KIND), 1, "kind tag of a byte region");
    assert_eq!(read_u32(&p, OFF_HEADER_LEN), HEADER_LEN as u32);
    assert_eq!(read_u32(&p, OFF_TABLE_CAPACITY), 64, "default holders");
    assert_eq!(read_u64(&p, OFF_TABLE_OFFSET), HEADER_LEN as u64);
    let object_offset = read_u64(&p, OFF_OBJECT_OFFSET);
    let table_end = (HEADER_LEN + 64 * RECORD_LEN) as u64;
    assert_eq!(read_u64(&p, OFF_SCHEMA_OFFSET), table_end);
    assert_eq!(read_u64(&p, OFF_SCHEMA_LEN), BYTES_SCHEMA.len() as u64);
    assert_eq!(read_at(&p, table_end, BYTES_SCHEMA.len()), BYTES_SCHEMA);
    assert_eq!(
        object_offset,
        (table_end + BYTES_SCHEMA.len() as u64).div_ceil(128) * 128
    );
    assert_eq!(read_u64(&p, OFF_OBJECT_LEN), REGION_LEN as u64);
    assert_eq!(read_u64(&p, OFF_TOTAL_LEN), file_len);
    assert_eq!(object_offset + REGION_LEN as u64, file_len);
    assert_eq!(read_u32(&p, OFF_CREATOR_PID), std::process::id());
    assert_eq!(read_u32(&p, OFF_STATE), STATE_READY);
    assert_eq!(read_u32(&p, OFF_REFCOUNT), 1);
    assert_eq!(r.info().size_bytes, file_len);
}

// --- P6: files that are not tally segments ------------------------------------------

#[test]
fn files_shorter_than_the_header_are_corrupted() {
    let valid = valid_segment_bytes();
    for len in [0usize, 1, 10, 255] {
        let shm = Shm::new("short");
        // A prefix of a real header, so only the length is wrong.
        shm.write_file(&valid[..len]);
        assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
        assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
        assert_err!(admin::sweep(&shm.name), Error::Corrupted { .. });
        // Create does not clobber it, and does not crash on it either.
        assert_err!(
            Region::create(&shm.name, REGION_LEN),
            Error::Corrupted { .. }
        );
        assert_eq!(fs::metadata(shm.path()).unwrap().len(), len as u64);
    }
}

#[test]
fn garbage_and_zeroed_files_are_corrupted() {
    let mut rng = Rng(0x5eed_0001);
    let mut garbage = rng.bytes(4096);
    garbage[0] = b'X'; // never the magic by chance
    for bytes in [garbage, vec![0u8; 4096], vec![0xff; 256]] {
        let shm = Shm::new("garbage");
        shm.write_file(&bytes);
        assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
        assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
    }
}

#[test]
fn wrong_magic_is_corrupted() {
    let mut bytes = valid_segment_bytes();
    bytes[7] = b'X';
    let shm = Shm::new("magic");
    shm.write_file(&bytes);
    assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
    assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
}

#[test]
fn file_over_the_one_tib_bound_is_corrupted() {
    let shm = Shm::new("huge-file");
    shm.write_file(&valid_segment_bytes());
    // Sparse: tmpfs allocates nothing for it.
    File::options()
        .write(true)
        .open(shm.path())
        .unwrap()
        .set_len((1 << 40) + 4096)
        .unwrap();
    assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
    assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
}

#[test]
fn file_shorter_than_its_header_says_is_corrupted() {
    let bytes = valid_segment_bytes();
    // Whole header and table, but the object area cut short: mapping what the header
    // claims would SIGBUS on access.
    for len in [HEADER_LEN + 1, bytes.len() - REGION_LEN, bytes.len() - 1] {
        let shm = Shm::new("truncated");
        shm.write_file(&bytes[..len]);
        assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
        assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
    }
}

#[test]
fn fifo_and_directory_under_the_name_give_typed_errors() {
    let fifo = Shm::new("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        fifo.path(),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    assert_err!(Region::open(&fifo.name), Error::Corrupted { .. });
    assert_err!(admin::inspect(&fifo.name), Error::Corrupted { .. });

    let dir = Shm::new("dir");
    fs::create_dir(dir.path()).unwrap();
    assert_err!(Region::open(&dir.name), _);
    assert_err!(admin::inspect(&dir.name), _);
    assert_err!(Region::create(&dir.name, REGION_LEN), _);
    assert!(dir.path().is_dir());
}

// --- P6: a valid segment, patched -------------------------------------------------------

/// Creates a live region, patches `bytes` at `offset`, runs `check`, then restores the
/// original bytes and checks the region opens again (so the patch, and nothing the
/// failed open did, was the cause).
fn with_patched(offset: u64, bytes: &[u8], check: impl FnOnce(&str)) {
    let shm = Shm::new("patched");
    let creator = Region::create(&shm.name, REGION_LEN).unwrap();
    let p = shm.path();
    let original = read_at(&p, offset, bytes.len());
    patch(&p, offset, bytes);
    check(&shm.name);
    patch(&p, offset, &original);
    let again = Region::open(&shm.name).expect("open after restoring the header");
    assert_eq!(again.len(), REGION_LEN);
    assert_eq!(
        creator.info().refcount,
        2,
        "failed opens left no holder behind"
    );
    drop(again);
    drop(creator);
    assert!(!p.exists(), "last close unlinks the restored segment");
}

#[test]
fn wrong_magic_on_a_live_segment_is_corrupted() {
    with_patched(OFF_MAGIC, b"TALLYSEH", |name| {
        assert_err!(Region::open(name), Error::Corrupted { .. });
        assert_err!(admin::inspect(name), Error::Corrupted { .. });
        assert_err!(admin::sweep(name), Error::Corrupted { .. });
    });
}

#[test]
fn other_layout_version_is_version_mismatch() {
    for version in [99u32, 0, 1, 3, u32::MAX] {
        with_patched(OFF_VERSION, &version.to_ne_bytes(), |name| {
            assert_err!(
                Region::open(name),
                Error::VersionMismatch { expected: 2, found, .. } if found == version
            );
            assert_err!(admin::inspect(name), Error::VersionMismatch { .. });
        });
    }
}

#[test]
fn other_kind_is_kind_mismatch() {
    for (tag, kind) in [
        (2u32, Kind::SpscRing),
        (77, Kind::Unknown(77)),
        (0, Kind::Unknown(0)),
    ] {
        with_patched(OFF_KIND, &tag.to_ne_bytes(), |name| {
            assert_err!(
                Region::open(name),
                Error::KindMismatch { expected: Kind::Bytes, found, .. } if found == kind
            );
            // inspect accepts any kind and reports the one found.
            let info = admin::inspect(name).expect("inspect a segment of another kind");
            assert_eq!(info.kind, kind);
        });
    }
}

#[test]
fn bad_header_len_is_corrupted() {
    for v in [0u32, 255, 257, 512, u32::MAX] {
        with_patched(OFF_HEADER_LEN, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
            assert_err!(admin::inspect(name), Error::Corrupted { .. });
        });
    }
}

#[test]
fn table_capacity_out_of_range_or_inconsistent_is_corrupted() {
    // 0 and > 4096 are out of range; 1, 60, 65 and 4096 are in range but disagree with
    // the recorded schema and object offsets.
    for v in [0u32, 4097, u32::MAX, 1, 60, 65, 4096] {
        with_patched(OFF_TABLE_CAPACITY, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
            assert_err!(admin::inspect(name), Error::Corrupted { .. });
        });
    }
}

#[test]
fn table_and_object_offsets_are_checked() {
    for v in [0u64, 8, 255, 1 << 40, u64::MAX] {
        with_patched(OFF_TABLE_OFFSET, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
        });
        with_patched(OFF_OBJECT_OFFSET, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
        });
    }
}

#[test]
fn lengths_beyond_the_mapping_are_corrupted() {
    let huge = [1u64 << 39, 1 << 40, (1 << 40) + 1, u64::MAX / 2, u64::MAX];
    for v in huge {
        with_patched(OFF_TOTAL_LEN, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
            assert_err!(admin::inspect(name), Error::Corrupted { .. });
        });
        with_patched(OFF_OBJECT_LEN, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
            assert_err!(admin::inspect(name), Error::Corrupted { .. });
        });
    }
    // One byte more than the file, with object_len and total_len kept consistent.
    let shm = Shm::new("one-more");
    let creator = Region::create(&shm.name, REGION_LEN).unwrap();
    let p = shm.path();
    let file_len = fs::metadata(&p).unwrap().len();
    patch(&p, OFF_OBJECT_LEN, &(REGION_LEN as u64 + 1).to_ne_bytes());
    patch(&p, OFF_TOTAL_LEN, &(file_len + 1).to_ne_bytes());
    assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
    assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
    drop(creator);
}

#[test]
fn consistent_header_claiming_more_than_the_file_is_corrupted() {
    // Every field agrees with every other (4096-slot table, offsets to match), but the
    // whole claims far more than the file holds: only the mapped length can catch it.
    let cap = 4096u32;
    let table_end = (HEADER_LEN + cap as usize * RECORD_LEN) as u64;
    let object_offset = (table_end + BYTES_SCHEMA.len() as u64).div_ceil(128) * 128;
    let object_len = 1u64 << 30;
    let mut bytes = valid_segment_bytes();
    bytes[OFF_TABLE_CAPACITY as usize..][..4].copy_from_slice(&cap.to_ne_bytes());
    bytes[OFF_SCHEMA_OFFSET as usize..][..8].copy_from_slice(&table_end.to_ne_bytes());
    bytes[OFF_OBJECT_OFFSET as usize..][..8].copy_from_slice(&object_offset.to_ne_bytes());
    bytes[OFF_OBJECT_LEN as usize..][..8].copy_from_slice(&object_len.to_ne_bytes());
    bytes[OFF_TOTAL_LEN as usize..][..8]
        .copy_from_slice(&(object_offset + object_len).to_ne_bytes());
    let shm = Shm::new("claims-more");
    shm.write_file(&bytes);
    assert_err!(Region::open(&shm.name), Error::Corrupted { .. });
    assert_err!(admin::inspect(&shm.name), Error::Corrupted { .. });
    assert_err!(admin::sweep(&shm.name), Error::Corrupted { .. });
}

#[test]
fn unknown_state_under_a_public_name_is_corrupted() {
    for v in [0u32, 1, 5, u32::MAX] {
        with_patched(OFF_STATE, &v.to_ne_bytes(), |name| {
            assert_err!(Region::open(name), Error::Corrupted { .. });
        });
    }
}

#[test]
fn header_is_read_once_a_later_patch_cannot_widen_an_open_region() {
    let shm = Shm::new("read-once");
    let creator = Region::create(&shm.name, REGION_LEN).unwrap();
    let opener = Region::open(&shm.name).unwrap();
    let size = opener.info().size_bytes;
    let p = shm.path();
    patch(&p, OFF_OBJECT_LEN, &(u64::MAX / 2).to_ne_bytes());
    patch(&p, OFF_TOTAL_LEN, &u64::MAX.to_ne_bytes());
    patch(&p, OFF_TABLE_CAPACITY, &u32::MAX.to_ne_bytes());
    for r in [&creator, &opener] {
        assert_eq!(r.len(), REGION_LEN);
        let info = r.info();
        assert_eq!(info.size_bytes, size);
        assert_eq!(info.object_bytes, REGION_LEN as u64);
        assert_eq!(info.table_capacity, 64);
        let mut buf = [0u8; 1];
        assert_err!(r.read(REGION_LEN, &mut buf), Error::InvalidArgument(_));
        assert_err!(r.write(REGION_LEN, &buf), Error::InvalidArgument(_));
        r.read(REGION_LEN - 1, &mut buf).unwrap();
        r.sweep().expect("sweep uses the validated copy");
    }
    drop(opener);
    drop(creator);
    assert!(!p.exists());
}

#[test]
fn shrunk_object_len_is_honoured_and_bounds_checked() {
    // A peer may shrink what the header claims (the file is then longer than needed,
    // which is allowed); the opener must use the smaller, validated length.
    let shm = Shm::new("shrunk");
    let creator = Region::create(&shm.name, REGION_LEN).unwrap();
    let p = shm.path();
    let object_offset = read_u64(&p, OFF_OBJECT_OFFSET);
    patch(&p, OFF_OBJECT_LEN, &16u64.to_ne_bytes());
    patch(&p, OFF_TOTAL_LEN, &(object_offset + 16).to_ne_bytes());
    let opener = Region::open(&shm.name).unwrap();
    assert_eq!(opener.len(), 16);
    let mut buf = [0u8; 1];
    assert_err!(opener.read(16, &mut buf), Error::InvalidArgument(_));
    opener.write(15, b"x").unwrap();
    drop(opener);
    drop(creator);
}

// --- P6: fuzzing ----------------------------------------------------------------------

/// Flips random bytes of the header of a valid segment: every open and inspect returns
/// `Ok` or a typed error, and never panics, hangs or faults.
#[test]
fn fuzzed_headers_never_panic() {
    const ITERATIONS: usize = 500;
    let template = valid_segment_bytes();
    let mut rng = Rng(0x7a11_f022_0000_0001);
    let opts = short_timeout();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..ITERATIONS {
        let mut bytes = template.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let at = rng.below(HEADER_LEN);
            // Half the time a random byte, half the time a nearby value, so small
            // changes to lengths and tags (which pass some checks) are common too.
            bytes[at] = if rng.next() & 1 == 0 {
                rng.next() as u8
            } else {
                bytes[at].wrapping_add(1 + rng.below(3) as u8)
            };
        }
        let shm = Shm::new("fuzz");
        shm.write_file(&bytes);
        let start = Instant::now();
        let inspected = admin::inspect_with(&shm.name, &opts);
        if let Ok(info) = &inspected {
            assert!(info.size_bytes <= bytes.len() as u64, "iteration {i}");
        }
        let opened = Region::open_with(&shm.name, &opts);
        if let Ok(r) = &opened {
            // Nobody holds the crafted file, so an attach is unexpected but, if it
            // happens, the region must stay inside the file.
            assert!(r.len() <= bytes.len(), "iteration {i}");
        }
        let key = match &opened {
            Ok(_) => "Ok".to_owned(),
            Err(e) => format!("{e:?}")
                .split([' ', '('])
                .next()
                .unwrap()
                .to_owned(),
        };
        *outcomes.entry(key).or_default() += 1;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "iteration {i}: open took {:?}",
            start.elapsed()
        );
    }
    eprintln!("fuzzed header outcomes: {outcomes:?}");
}

/// Flips random bytes in the holder table of a live segment, as a hostile peer could:
/// opens return `Ok` or a typed error, the creator keeps working, nothing faults.
#[test]
fn fuzzed_holder_tables_never_panic() {
    const ITERATIONS: usize = 200;
    let mut rng = Rng(0x7a11_f022_0000_0002);
    let opts = short_timeout();
    for i in 0..ITERATIONS {
        let shm = Shm::new("fuzz-table");
        let creator = Region::create(&shm.name, REGION_LEN).unwrap();
        let p = shm.path();
        for _ in 0..1 + rng.below(8) {
            let at = HEADER_LEN + rng.below(64 * RECORD_LEN);
            patch(&p, at as u64, &[rng.next() as u8]);
        }
        let inspected = admin::inspect_with(&shm.name, &opts);
        assert!(inspected.is_ok(), "iteration {i}: {:?}", inspected.err());
        match Region::open_with(&shm.name, &opts) {
            Ok(r) => {
                assert_eq!(r.len(), REGION_LEN, "iteration {i}");
                r.write(REGION_LEN - 1, b"z").unwrap();
            }
            Err(e) => {
                // Any typed error; the table is hostile, not the header.
                let _ = format!("{e}");
            }
        }
        creator.write(0, b"still usable").unwrap();
        let _ = creator.sweep();
        drop(creator);
    }
}

// --- P6: a destroyer that died ----------------------------------------------------------

/// A segment left `DESTROYING` (or `REMOVED`) under its name by a process that died
/// between marking it and unlinking it, with no holder left, is crash debris: the object
/// is gone, so an open should say `NotFound` promptly (P2, P3), not spin until its
/// timeout and then report `Timeout` while the name stays.
#[test]
fn open_of_dead_destroyer_debris_is_not_found_promptly() {
    let mut template = valid_segment_bytes();
    for st in [STATE_DESTROYING, STATE_REMOVED] {
        template[OFF_STATE as usize..][..4].copy_from_slice(&st.to_ne_bytes());
        let shm = Shm::new("dying");
        shm.write_file(&template);
        let start = Instant::now();
        let res = Region::open(&shm.name);
        let took = start.elapsed();
        assert_err!(res, Error::NotFound(_));
        assert!(
            took < Duration::from_secs(1),
            "state {st}: open took {took:?}"
        );
    }
}

/// P2: crash debris never blocks the next create of the same name.
#[test]
fn create_replaces_dead_destroyer_debris() {
    let mut template = valid_segment_bytes();
    for st in [STATE_DESTROYING, STATE_REMOVED] {
        template[OFF_STATE as usize..][..4].copy_from_slice(&st.to_ne_bytes());
        let shm = Shm::new("dying-create");
        shm.write_file(&template);
        let r = Region::create(&shm.name, REGION_LEN).expect("create over dead debris");
        assert_eq!(r.info().state, "ready");
        assert_eq!(r.info().refcount, 1);
        drop(r);
        assert!(!shm.path().exists());
    }
}

// --- P7: modes, names, links, owners ----------------------------------------------------

fn file_mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn created_segment_is_mode_0600_by_default() {
    let shm = Shm::new("mode-default");
    let r = Region::create(&shm.name, REGION_LEN).unwrap();
    assert_eq!(file_mode(&shm.path()), 0o600);
    assert_eq!(r.info().mode, 0o600);
}

#[test]
fn mode_option_is_applied_exactly() {
    // 0o666 would be 0o644 under the usual umask 022 if the mode were left to it.
    for mode in [0o640u32, 0o666, 0o400] {
        let shm = Shm::new("mode");
        let opts = Options::default().mode(mode);
        let r = Region::create_with(&shm.name, REGION_LEN, &opts).unwrap();
        assert_eq!(file_mode(&shm.path()), mode, "mode {mode:o}");
        assert_eq!(r.info().mode, mode);
        let again = Region::open(&shm.name).unwrap();
        assert_eq!(again.info().refcount, 2);
    }
}

#[test]
fn invalid_names_are_refused() {
    let long = "a".repeat(201);
    let names = [
        "",
        "a/b",
        "/abs",
        "..",
        ".hidden",
        &long,
        "sp ace",
        "ü",
        "a\0b",
        "tab\t",
        "new\nline",
    ];
    for name in names {
        let invalid = |e: &Error| matches!(e, Error::InvalidName { .. });
        let checks: [(&str, Result<(), Error>); 7] = [
            ("create", Region::create(name, REGION_LEN).map(drop)),
            ("open", Region::open(name).map(drop)),
            (
                "open_or_create",
                Region::open_or_create(name, REGION_LEN, &Options::default()).map(drop),
            ),
            ("inspect", admin::inspect(name).map(drop)),
            ("sweep", admin::sweep(name).map(drop)),
            ("remove", admin::remove(name)),
            (
                "holder",
                admin::Holder::open(name, &Options::default()).map(drop),
            ),
        ];
        for (op, res) in checks {
            match res {
                Err(e) if invalid(&e) => {}
                other => panic!("{op}({name:?}): expected InvalidName, got {other:?}"),
            }
        }
    }
    // Nothing was created under any of them (e.g. "a/b" as a path).
    assert!(!Path::new("/dev/shm/tally.a").exists());
}

#[test]
fn longest_valid_name_works() {
    let mut shm = Shm::new("long");
    let name = format!("{}{}", shm.name, "x".repeat(200 - shm.name.len()));
    assert_eq!(name.len(), 200);
    shm.name = name;
    let r = Region::create(&shm.name, REGION_LEN).unwrap();
    assert!(shm.path().exists());
    drop(r);
    assert!(!shm.path().exists());
}

#[test]
fn symlink_to_a_file_is_not_followed() {
    let mut shm = Shm::new("symlink");
    let target = PathBuf::from(format!("/dev/shm/vt-target-{}", shm.name));
    shm.extra.push(target.clone());
    // A valid segment's bytes, so following the link would succeed.
    let bytes = valid_segment_bytes();
    write_new(&target, &bytes);
    std::os::unix::fs::symlink(&target, shm.path()).unwrap();

    assert_err!(Region::open(&shm.name), Error::PermissionDenied { .. });
    assert_err!(admin::inspect(&shm.name), Error::PermissionDenied { .. });
    assert_err!(admin::sweep(&shm.name), Error::PermissionDenied { .. });
    assert_err!(
        Region::create(&shm.name, REGION_LEN),
        Error::PermissionDenied { .. }
    );
    assert_eq!(fs::read(&target).unwrap(), bytes, "target left untouched");

    // Force-remove takes the link away, not its target.
    admin::remove(&shm.name).unwrap();
    assert!(fs::symlink_metadata(shm.path()).is_err());
    assert_eq!(fs::read(&target).unwrap(), bytes);
}

#[test]
fn symlink_to_a_live_segment_is_not_followed() {
    let real = Shm::new("symlink-real");
    let link = Shm::new("symlink-link");
    let r = Region::create(&real.name, REGION_LEN).unwrap();
    std::os::unix::fs::symlink(real.path(), link.path()).unwrap();
    assert_err!(Region::open(&link.name), Error::PermissionDenied { .. });
    assert_err!(
        admin::Holder::open(&link.name, &Options::default()),
        Error::PermissionDenied { .. }
    );
    assert_eq!(r.info().refcount, 1, "no holder was added through the link");
    drop(r);
    assert!(!real.path().exists());
}

#[test]
fn foreign_owner_is_refused_unless_allowed() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let shm = Shm::new("foreign");
    let creator = Region::create(&shm.name, REGION_LEN).unwrap();
    std::os::unix::fs::chown(shm.path(), Some(65534), Some(65534)).unwrap();
    assert_eq!(fs::metadata(shm.path()).unwrap().uid(), 65534);

    assert_err!(Region::open(&shm.name), Error::PermissionDenied { .. });
    assert_err!(admin::inspect(&shm.name), Error::PermissionDenied { .. });
    assert_err!(admin::sweep(&shm.name), Error::PermissionDenied { .. });
    assert_err!(
        admin::Holder::open(&shm.name, &Options::default()),
        Error::PermissionDenied { .. }
    );
    assert_eq!(creator.info().refcount, 1);

    let allow = Options::default().allow_foreign_owner(true);
    let info = admin::inspect_with(&shm.name, &allow).unwrap();
    assert_eq!(info.owner_uid, 65534);
    let opened = Region::open_with(&shm.name, &allow).expect("allowed foreign owner");
    assert_eq!(opened.len(), REGION_LEN);
    assert_eq!(creator.info().refcount, 2);
    drop(opened);
    drop(creator);
    assert!(!shm.path().exists());
}

// --- typed errors of the ordinary API -----------------------------------------------------

#[test]
fn create_of_a_live_name_is_already_exists() {
    let shm = Shm::new("exists");
    let r = Region::create(&shm.name, REGION_LEN).unwrap();
    assert_err!(
        Region::create(&shm.name, REGION_LEN),
        Error::AlreadyExists(_)
    );
    assert_err!(Region::create(&shm.name, 8), Error::AlreadyExists(_));
    assert_eq!(r.info().refcount, 1);
}

#[test]
fn missing_name_is_not_found() {
    let shm = Shm::new("missing");
    assert_err!(Region::open(&shm.name), Error::NotFound(_));
    assert_err!(admin::inspect(&shm.name), Error::NotFound(_));
    assert_err!(admin::sweep(&shm.name), Error::NotFound(_));
    assert_err!(admin::remove(&shm.name), Error::NotFound(_));
    assert_err!(
        admin::Holder::open(&shm.name, &Options::default()),
        Error::NotFound(_)
    );
}

#[test]
fn bad_arguments_are_invalid_argument() {
    let shm = Shm::new("args");
    assert_err!(Region::create(&shm.name, 0), Error::InvalidArgument(_));
    assert_err!(
        Region::open_or_create(&shm.name, 0, &Options::default()),
        Error::InvalidArgument(_)
    );
    for holders in [0u32, 4097] {
        let opts = Options::default().holders(holders);
        assert_err!(
            Region::create_with(&shm.name, REGION_LEN, &opts),
            Error::InvalidArgument(_)
        );
    }
    assert_err!(
        Region::create(&shm.name, usize::MAX),
        Error::InvalidArgument(_)
    );
    assert_err!(
        Region::create(&shm.name, 1 << 40),
        Error::InvalidArgument(_)
    );
    assert!(!shm.path().exists());

    let r = Region::create(&shm.name, REGION_LEN).unwrap();
    let mut buf = [0u8; 8];
    assert_err!(r.read(REGION_LEN, &mut buf[..1]), Error::InvalidArgument(_));
    assert_err!(r.read(REGION_LEN - 7, &mut buf), Error::InvalidArgument(_));
    assert_err!(r.read(usize::MAX, &mut buf), Error::InvalidArgument(_));
    assert_err!(r.write(REGION_LEN - 7, &buf), Error::InvalidArgument(_));
    assert_err!(r.write(usize::MAX - 3, &buf), Error::InvalidArgument(_));
    assert_err!(
        r.write(0, &vec![0u8; REGION_LEN + 1]),
        Error::InvalidArgument(_)
    );
    // The edges themselves are fine.
    r.write(REGION_LEN - 8, &buf).unwrap();
    r.read(REGION_LEN - 8, &mut buf).unwrap();
    r.read(REGION_LEN, &mut []).unwrap();
}

#[test]
fn create_larger_than_dev_shm_is_no_space() {
    let vfs = rustix::fs::statvfs("/dev/shm").unwrap();
    let fs_bytes = vfs.f_blocks.saturating_mul(vfs.f_frsize);
    if fs_bytes == 0 {
        eprintln!("skipped: /dev/shm has no size limit; reserving more than RAM is unsafe");
        return;
    }
    // Comfortably over the file system, under the 1 TiB segment bound.
    let len = (1u64 << 39).max(fs_bytes + (1 << 30));
    if len >= (1 << 40) - (1 << 20) {
        eprintln!("skipped: /dev/shm ({fs_bytes} bytes) is too large to overflow");
        return;
    }
    let shm = Shm::new("nospace");
    let err = assert_err!(
        Region::create(&shm.name, len as usize),
        Error::NoSpace { .. }
    );
    if let Error::NoSpace { bytes, free, .. } = err {
        assert!(bytes >= len && free < bytes, "{err}");
        // The message says how much was asked for and how much is free.
        let msg = err.to_string();
        assert!(msg.contains(&format!("asked for {bytes} bytes")), "{msg}");
        assert!(msg.contains(&format!("{free} bytes free")), "{msg}");
    }
    assert!(!shm.path().exists());
    // The temporary file it was built in is gone too (only it could be this large).
    for entry in fs::read_dir("/dev/shm").unwrap() {
        let entry = entry.unwrap();
        let big = entry.metadata().map(|m| m.len() >= len).unwrap_or(false);
        assert!(!big, "left behind: {:?}", entry.file_name());
    }
}
