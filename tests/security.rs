//! P7 with a real second user: a child re-executed from this test binary drops to uid and
//! gid 65534 (`nobody`) and meets root's objects, and root meets objects of `nobody`.
//!
//! Needs root (to change uid); every test says so and passes when not run as root.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::Duration;

use tally::{Error, Options, Region, Ring, admin};

mod common;
use common::{
    Rng, TAG, assert_gone, child_command, child_role, first_line, say, shm_path, spawn_with_lines,
    unique,
};

/// Prefix of this file's object names.
const PREFIX: &str = "sec";
const NOBODY: u32 = 65534;
const REGION_LEN: usize = 4096;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return true;
    }
    eprintln!("skipped: acting as a second user (setuid to 65534) needs root");
    false
}

/// In a child: become uid/gid 65534 for good.
fn become_nobody() {
    // SAFETY: setgroups/setresgid/setresuid with plain ids and no pointers but a null
    // list of length 0; glibc applies them to every thread.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(NOBODY, NOBODY, NOBODY), 0, "setresgid");
        assert_eq!(libc::setresuid(NOBODY, NOBODY, NOBODY), 0, "setresuid");
    }
    assert_eq!(rustix::process::geteuid().as_raw(), NOBODY);
}

/// Removes the names at the end, whoever owns them (root may unlink anything).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = admin::remove(n);
        }
    }
}

/// Runs the child test `role` as nobody on `name` with `arg`; returns its progress lines
/// after checking that it exited successfully and said `passed` last.
fn run_as_nobody(role: &str, name: &str, arg: &str) -> Vec<String> {
    let mut cmd = child_command(role, role, name, arg);
    let (mut child, lines) = spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), role);
    let status = common::wait_within(&mut child, CHILD_TIMEOUT, role);
    // Every line the child printed: the forwarder ends at the pipe's end of file.
    let said: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(CHILD_TIMEOUT).ok()).collect();
    assert!(
        status.success() && said.last().map(String::as_str) == Some("passed"),
        "{role} failed (stderr above): {status:?}, said {said:?}"
    );
    said
}

fn line<'a>(said: &'a [String], what: &str) -> &'a str {
    said.iter()
        .find(|l| l.starts_with(&format!("{what} ")))
        .unwrap_or_else(|| panic!("no {what:?} line in {said:?}"))
}

fn assert_mentions(what: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{what}: no {part:?} in {text:?}");
    }
}

fn denied<T>(what: &str, res: tally::Result<T>) {
    match res {
        Err(e @ Error::PermissionDenied { .. }) => say(format_args!("{what} {e}")),
        Err(e) => panic!("{what}: expected PermissionDenied, got {e:?}"),
        Ok(_) => panic!("{what}: expected PermissionDenied, got Ok"),
    }
}

// --- 1. a default (0600) object is closed to another user -------------------------------

#[test]
fn child_nobody_meets_a_private_object() {
    let Some((name, _)) = child_role("child_nobody_meets_a_private_object") else {
        return;
    };
    become_nobody();
    denied("open", Region::open(&name));
    let allow = Options::default().allow_foreign_owner(true);
    denied("open-allowed", Region::open_with(&name, &allow));
    denied("ring-open", Ring::<u64>::open(&name));
    denied("inspect", admin::inspect(&name));
    denied("sweep", admin::sweep(&name));
    denied("remove", admin::remove(&name));
    denied("holder", admin::Holder::open(&name, &Options::default()));
    say("passed");
}

#[test]
fn another_user_cannot_open_sweep_or_remove_a_default_object() {
    if !is_root() {
        return;
    }
    let name = unique(PREFIX, "private");
    let _cleanup = Cleanup(vec![name.clone()]);
    let region = Region::create(&name, REGION_LEN).unwrap();
    region.write(0, b"secret").unwrap();
    let said = run_as_nobody("child_nobody_meets_a_private_object", &name, "");
    let owner = ["owned by uid 0", "mode 0600", "you are uid 65534"];
    for what in [
        "open",
        "open-allowed",
        "ring-open",
        "inspect",
        "sweep",
        "holder",
    ] {
        let text = line(&said, what);
        assert_mentions(what, text, &[&name]);
        assert_mentions(what, text, &owner);
        assert_mentions(what, text, &["Options::allow_foreign_owner"]);
    }
    // `tally rm`: the name is in a sticky directory; say whose it is and who may.
    let text = line(&said, "remove");
    assert_mentions("remove", text, &[&name]);
    assert_mentions("remove", text, &owner);
    // Nothing was attached, swept or removed.
    assert_eq!(region.info().refcount, 1);
    let mut buf = [0u8; 6];
    region.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"secret");
    drop(region);
    assert_gone(&name);
}

// --- 2. both sides opt in: a wider mode and allow_foreign_owner ------------------------------

#[test]
fn child_nobody_joins_a_shared_ring() {
    let Some((name, _)) = child_role("child_nobody_joins_a_shared_ring") else {
        return;
    };
    become_nobody();
    // The mode lets us in, but the owner is foreign: refused until we opt in too.
    denied("open", Ring::<u64>::open(&name));
    let allow = Options::default().allow_foreign_owner(true);
    let ring = Ring::<u64>::open_with(&name, &allow).expect("open with both opt-ins");
    let info = ring.info();
    say(format_args!(
        "opened owner {} refcount {}",
        info.owner_uid, info.refcount
    ));
    let mut p = ring.producer().expect("producer role");
    for v in [7u64, 8, 9] {
        p.try_send(v).expect("send");
    }
    // Sweeping and removing still need the owner's rights: sweep needs the opt-in, and
    // remove is refused by the sticky /dev/shm.
    denied("sweep", admin::sweep(&name));
    denied("remove", admin::remove(&name));
    drop(p);
    drop(ring);
    say("passed");
}

#[test]
fn a_wider_mode_and_allow_foreign_owner_let_another_user_in() {
    if !is_root() {
        return;
    }
    let name = unique(PREFIX, "shared");
    let _cleanup = Cleanup(vec![name.clone()]);
    let wide = Options::default().mode(0o666);
    let ring = Ring::<u64>::create_with(&name, 8, &wide).unwrap();
    let mut c = ring.consumer().unwrap();
    let said = run_as_nobody("child_nobody_joins_a_shared_ring", &name, "");
    assert_mentions(
        "open",
        line(&said, "open"),
        &["owned by uid 0", "you are uid 65534", "allow_foreign_owner"],
    );
    assert_eq!(line(&said, "opened"), "opened owner 0 refcount 2");
    assert_mentions("sweep", line(&said, "sweep"), &["owned by uid 0"]);
    assert_mentions("remove", line(&said, "remove"), &["owned by uid 0"]);
    let got: Vec<u64> = (0..3).map(|_| c.try_recv().expect("message")).collect();
    assert_eq!(got, [7, 8, 9], "what the other user sent");
    assert_eq!(ring.info().refcount, 1, "the other user's handle left");
    drop(c);
    drop(ring);
    assert_gone(&name);
}

// --- 3. a hostile foreign segment cannot hurt the opener --------------------------------------

/// Header offsets (see tests/validation.rs, which checks them against a created segment).
const OFF_MAGIC: u64 = 0;
const OFF_OBJECT_LEN: u64 = 40;
const OFF_TOTAL_LEN: u64 = 48;
const HEADER_LEN: usize = 256;

/// As nobody: creates a 0666 region and a 0666 ring, prints `created`, and holds them
/// until killed (so they stay live and foreign-owned).
#[test]
fn child_nobody_owns_objects() {
    let Some((names, _)) = child_role("child_nobody_owns_objects") else {
        return;
    };
    become_nobody();
    let (region, ring) = names.split_once(',').expect("two names");
    let wide = Options::default().mode(0o666);
    let _r = Region::create_with(region, REGION_LEN, &wide).expect("create region");
    let _q = Ring::<u64>::create_with(ring, 8, &wide).expect("create ring");
    say("created");
    common::hang();
}

fn patch(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .expect("open segment file to patch");
    f.write_all_at(bytes, offset).expect("patch");
}

fn read_header(name: &str) -> Vec<u8> {
    let f = std::fs::File::open(shm_path(name)).unwrap();
    let mut buf = vec![0; HEADER_LEN];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn a_hostile_foreign_segment_cannot_hurt_the_opener() {
    if !is_root() {
        return;
    }
    let region = unique(PREFIX, "foreign-region");
    let ring = unique(PREFIX, "foreign-ring");
    let _cleanup = Cleanup(vec![region.clone(), ring.clone()]);
    let role = "child_nobody_owns_objects";
    let mut cmd = child_command(role, role, &format!("{region},{ring}"), "");
    let (child, lines) = spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), role);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    first_line(&lines, CHILD_TIMEOUT, |l| (l == "created").then_some(()))
        .expect("the other user's objects");
    let allow = Options::default()
        .allow_foreign_owner(true)
        .timeout(Duration::from_millis(100));
    let info = admin::inspect_with(&region, &allow).unwrap();
    assert_eq!(info.owner_uid, NOBODY);
    // Untouched, both sides opted in: the opener gets in.
    let r = Region::open_with(&region, &allow).expect("allowed foreign region");
    assert_eq!(r.len(), REGION_LEN);
    drop(r);

    // The owner turns hostile: a bad magic, then lengths past the file.
    let template = read_header(&region);
    patch(&region, OFF_MAGIC, b"XXXXXXXX");
    match Region::open_with(&region, &allow) {
        Err(Error::Corrupted { detail, .. }) => eprintln!("bad magic: {detail}"),
        other => panic!("bad magic: expected Corrupted, got {:?}", other.map(drop)),
    }
    patch(&region, 0, &template);
    patch(&region, OFF_OBJECT_LEN, &(1u64 << 39).to_ne_bytes());
    patch(&region, OFF_TOTAL_LEN, &(1u64 << 39).to_ne_bytes());
    match Region::open_with(&region, &allow) {
        Err(Error::Corrupted { detail, .. }) => eprintln!("lengths: {detail}"),
        other => panic!("lengths: expected Corrupted, got {:?}", other.map(drop)),
    }
    assert!(matches!(
        admin::inspect_with(&region, &allow),
        Err(Error::Corrupted { .. })
    ));

    // Random headers on the foreign ring: a typed error or a handle that stays inside
    // its mapping, never a panic or a fault.
    let template = read_header(&ring);
    let mut rng = Rng(0x5ec0_0000_0000_0003);
    for i in 0..200 {
        let mut h = template.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(HEADER_LEN);
            h[at] = rng.next() as u8;
        }
        patch(&ring, 0, &h);
        match Ring::<u64>::open_with(&ring, &allow) {
            Ok(q) => {
                // Use it: its consumer sees nothing, or whatever the image says.
                if let Ok(mut c) = q.consumer() {
                    let _ = c.try_recv();
                }
            }
            Err(e) => {
                let _ = format!("iteration {i}: {e}");
            }
        }
        let _ = admin::inspect_with(&ring, &allow);
    }
    patch(&ring, 0, &template);
}
