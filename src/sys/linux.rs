//! Linux implementation of the `sys` layer.
//!
//! POSIX shared memory on Linux is a tmpfs mounted at `/dev/shm`; `shm_open(3)` is
//! `open(2)` there. Opening the directory ourselves lets us pass `O_NOFOLLOW`, use
//! `linkat(2)` to publish a fully built segment atomically, and list names.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags};

/// Where the shared-memory namespace lives.
pub const SHM_DIR: &str = "/dev/shm";

fn shm_dir() -> io::Result<BorrowedFd<'static>> {
    // Only success is cached: a failure (EMFILE, ENFILE, ENOMEM) is transient, and a
    // cached one would fail every later create and open for the life of the process.
    static DIR: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DIR.get() {
        return Ok(fd.as_fd());
    }
    let fd = rustix::fs::open(
        SHM_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // A racing thread may have stored its descriptor first; ours is then closed here.
    let _ = DIR.set(fd);
    DIR.get()
        .map(AsFd::as_fd)
        .ok_or_else(|| io::Error::other("shared-memory directory descriptor not stored"))
}

/// Bytes free in the shared-memory file system for an unprivileged caller (`statvfs`:
/// `f_bavail` × `f_frsize`). `None` when the file system reports no size (a tmpfs
/// mounted without a limit), where free space means nothing.
pub fn shm_free_bytes() -> io::Result<Option<u64>> {
    let vfs = rustix::fs::fstatvfs(shm_dir()?)?;
    if vfs.f_blocks == 0 {
        return Ok(None);
    }
    Ok(Some(vfs.f_bavail.saturating_mul(vfs.f_frsize)))
}

/// Creates `name` exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) with exactly `mode`, and
/// returns it with its identity (one `fstat`, which also tells whether the umask cleared
/// bits the caller asked for; only then is the mode set again with `fchmod`).
pub fn create_exclusive(name: &str, mode: u32) -> io::Result<(File, FileId)> {
    let fd = rustix::fs::openat(
        shm_dir()?,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    let file = File::from(fd);
    let mut id = match fstat(&file) {
        Ok(id) => id,
        Err(e) => {
            let _ = unlink(name);
            return Err(e);
        }
    };
    if id.mode != mode & 0o7777 {
        if let Err(e) = rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)) {
            let _ = unlink(name);
            return Err(e.into());
        }
        id.mode = mode & 0o7777;
    }
    Ok((file, id))
}

/// Opens an existing `name` for reading and writing, never through a symbolic link.
pub fn open_existing(name: &str) -> io::Result<File> {
    let fd = rustix::fs::openat(
        shm_dir()?,
        name,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Sizes `file` to `len` bytes and reserves its pages now, so a full tmpfs answers
/// `ENOSPC` here rather than with `SIGBUS` at first touch. One `fallocate`, which also
/// extends the file (a file system without `fallocate` gets `ftruncate` first).
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Err(rustix::io::Errno::OPNOTSUPP) => {
            rustix::fs::ftruncate(file, len)?;
            rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len)?;
        }
        other => other?,
    }
    Ok(())
}

/// Gives the inode behind `from` a second name `to`; fails with `EEXIST` if `to` exists.
/// This is the atomic "publish if absent" step of segment creation.
pub fn link(from: &str, to: &str) -> io::Result<()> {
    let dir = shm_dir()?;
    rustix::fs::linkat(dir, from, dir, to, AtFlags::empty())?;
    Ok(())
}

/// Removes `name` from the namespace. Mappings and open descriptors stay valid.
pub fn unlink(name: &str) -> io::Result<()> {
    rustix::fs::unlinkat(shm_dir()?, name, AtFlags::empty())?;
    Ok(())
}

/// Identity and ownership of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Length in bytes.
    pub len: u64,
    /// Bytes actually allocated (`st_blocks` × 512): less than `len` for a sparse file.
    pub allocated: u64,
    /// Number of names (hard links) the file has.
    pub nlink: u64,
}

fn file_id(st: &rustix::fs::Stat) -> FileId {
    FileId {
        dev: st.st_dev,
        ino: st.st_ino,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
        len: st.st_size as u64,
        allocated: st.st_blocks as u64 * 512,
        #[allow(clippy::unnecessary_cast)] // u32 on some targets (aarch64)
        nlink: st.st_nlink as u64,
    }
}

/// Identity of an open file.
pub fn fstat(file: &File) -> io::Result<FileId> {
    Ok(file_id(&rustix::fs::fstat(file)?))
}

/// Identity of the file `name` currently refers to, without following links.
pub fn stat_name(name: &str) -> io::Result<FileId> {
    Ok(file_id(&rustix::fs::statat(
        shm_dir()?,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// Every name in the namespace that starts with `prefix`, sorted. Reads the directory
/// through a fresh descriptor opened relative to the cached one (no path walk).
pub fn list_names(prefix: &str) -> io::Result<Vec<String>> {
    let dir = rustix::fs::openat(
        shm_dir()?,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut entries = rustix::fs::RawDir::new(&dir, buf.spare_capacity_mut());
    let mut names = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry?;
        if let Ok(name) = entry.file_name().to_str()
            && name.starts_with(prefix)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Maps `len` bytes of `file` shared, readable and writable. With `populate`, the
/// page tables are filled in now (`MAP_POPULATE`), so first touches on the hot path do
/// not fault into the kernel; only ask for it when the file's pages are all allocated
/// (populating a sparse file would allocate every hole).
pub fn map(file: &File, len: usize, populate: bool) -> io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    opts.map_raw(file)
}

fn ofd_lock(
    fd: &File,
    byte: u64,
    kind: libc::c_short,
    cmd: libc::c_int,
) -> io::Result<libc::flock> {
    ofd_lock_range(fd, byte, 1, kind, cmd)
}

fn ofd_lock_range(
    fd: &File,
    start: u64,
    len: u64,
    kind: libc::c_short,
    cmd: libc::c_int,
) -> io::Result<libc::flock> {
    // SAFETY: `flock` is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl.l_pid = 0; // required to be 0 for OFD locks
    // SAFETY: `fd` is an open descriptor and `fl` a valid, exclusively borrowed flock.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// Tries to take an exclusive open-file-description lock on one byte of `file`.
///
/// Returns `Ok(false)` if another open file description holds it. The kernel drops the
/// lock when the last descriptor of this description closes, including at death, and
/// a lock is never inherited by a reused PID.
pub fn try_lock_byte(file: &File, byte: u64) -> io::Result<bool> {
    match ofd_lock(file, byte, libc::F_WRLCK as _, libc::F_OFD_SETLK) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a lock taken with [`try_lock_byte`].
pub fn unlock_byte(file: &File, byte: u64) -> io::Result<()> {
    ofd_lock(file, byte, libc::F_UNLCK as _, libc::F_OFD_SETLK).map(|_| ())
}

/// Whether some other open file description holds a lock on `byte` of the file.
/// Locks held through `file` itself are not reported.
pub fn byte_locked_by_other(file: &File, byte: u64) -> io::Result<bool> {
    let fl = ofd_lock(file, byte, libc::F_WRLCK as _, libc::F_OFD_GETLK)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether some other open file description holds a lock on any of the `len` bytes
/// from `start` (one `F_OFD_GETLK` over the whole range, however many locks there are).
/// Locks held through `file` itself are not reported.
pub fn range_locked_by_other(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let fl = ofd_lock_range(file, start, len, libc::F_WRLCK as _, libc::F_OFD_GETLK)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Who a process is: pid plus what makes the pid unambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Process id in this PID namespace.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// A hash of this boot's `/proc/sys/kernel/random/boot_id`.
    pub boot_id: u64,
}

/// The calling process's identity. The pid is read fresh on every call; the start
/// time is read from /proc once per process and again only when the pid differs from
/// the one it was read for (a `fork`ed child), and the boot id once.
pub fn current_process() -> ProcessIdentity {
    // (pid, start ticks) packed as pid in the low 32 bits and ticks above; ticks that do
    // not fit in 32 bits are not cached (read from /proc every time). 0: nothing cached.
    static CACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = getpid();
    let c = CACHED.load(std::sync::atomic::Ordering::Relaxed);
    let start_ticks = if c != 0 && c as u32 == pid {
        c >> 32
    } else {
        let ticks = process_start_ticks(pid).unwrap_or(0);
        if ticks < 1 << 32 {
            // Relaxed: a value for this pid only; a racing thread stores the same value.
            CACHED.store(
                ticks << 32 | u64::from(pid),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        ticks
    };
    ProcessIdentity {
        pid,
        start_ticks,
        boot_id: boot_id(),
    }
}

/// The calling process's pid.
pub fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The effective uid of the caller.
pub fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Start time of `pid` in clock ticks since boot, if the process exists.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may itself contain spaces or ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name; field 22 is starttime.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A stable 64-bit hash of this boot's id (0 if unreadable).
pub fn boot_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| fnv1a(s.trim().as_bytes()))
            .unwrap_or(0)
    })
}

/// FNV-1a, used for fingerprints and ids that must agree across processes and builds.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Sleeps while `word` equals `expected`, at most `timeout`. Returns early on a wake,
/// a changed word or a signal; the caller re-checks its condition either way.
/// The word may be in memory shared between processes.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| rustix::thread::futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    // EAGAIN (word changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        ts.as_ref(),
    );
}

/// Wakes up to `count` sleepers on `word`, in any process.
pub fn futex_wake(word: &AtomicU32, count: u32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), count);
}

/// Whether a process with this pid exists (diagnostics only, never used for liveness).
pub fn pid_exists(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

/// Pins the calling thread to one CPU (benchmarks only).
///
/// # Errors
/// The OS error of `sched_setaffinity`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and the threads it starts
/// later, so that [`wait_termination_signal`] can take them synchronously.
///
/// # Errors
/// The OS error of `pthread_sigmask`.
pub fn block_termination_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the
    // pointers are to live locals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Waits for one of the signals blocked by [`block_termination_signals`]; returns it.
pub fn wait_termination_signal() -> i32 {
    // SAFETY: as in block_termination_signals; `sig` is a live local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes on one machine.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Restores the default SIGPIPE action (Rust ignores it), so a command whose reader
/// went away ends quietly instead of failing on every write.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
