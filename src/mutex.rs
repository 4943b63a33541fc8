//! Named mutexes protecting a value in shared memory, aware of their owner's death.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::objects::mutex::{self as obj, MutexView, OWNER_MASK, Take};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment, SegmentInfo, SweepOutcome};
use crate::sys;
use crate::wait::{self, Blocker, DEFAULT_SPIN, Probe, Wait, deadline_after};

/// Why a lock attempt did not simply succeed.
#[non_exhaustive]
pub enum LockError<'a, T: Message> {
    /// The lock is yours, but an owner died holding it: `T` may be half-updated. The
    /// guard is inside; see [`MutexGuard::clear_abandoned`].
    Abandoned(MutexGuard<'a, T>),
    /// `try_lock`: a live owner holds the lock.
    WouldBlock,
    /// `lock_timeout`: the lock did not come free in time.
    Timeout,
    /// This handle itself holds the lock (a guard of it is alive): waiting would last
    /// for ever.
    LastHolder,
}

impl<'a, T: Message> LockError<'a, T> {
    /// The guard of an [`Abandoned`](LockError::Abandoned) outcome, as std's
    /// `PoisonError::into_inner`; `None` for the other errors.
    pub fn into_guard(self) -> Option<MutexGuard<'a, T>> {
        match self {
            LockError::Abandoned(g) => Some(g),
            _ => None,
        }
    }
}

impl<T: Message> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Abandoned(_) => f.write_str("Abandoned(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::LastHolder => f.write_str("LastHolder"),
        }
    }
}

impl<T: Message> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::Abandoned(_) => "the previous owner died holding the lock",
            LockError::WouldBlock => "the lock is held",
            LockError::Timeout => "timed out waiting for the lock",
            LockError::LastHolder => "this handle holds the lock already",
        })
    }
}

impl<T: Message> std::error::Error for LockError<'_, T> {}

/// A named mutex protecting a `T` that lives in shared memory.
///
/// Uncontended `lock` and unlock are one atomic each, with no system call. A contended
/// locker spins for [`spin`](Mutex::spin), then sleeps on the lock word in slices of at
/// most 10 ms, checking the owner's liveness each slice: an owner that dies holding the
/// lock is found within one slice, and the lock passes to the next locker as
/// [`LockError::Abandoned`], which still hands over the guard.
///
/// **What `T` holds after an abandonment:** whatever the dead owner had written —
/// possibly half of an update; every byte pattern is a valid `T` (`T: Pod`), so reading
/// it is safe, but its invariants are the program's to check. Repair it, then call
/// [`MutexGuard::clear_abandoned`]; until then every locker is told.
///
/// A handle is one holder: `Send`, not `Sync`; give each thread its own with
/// [`try_clone`](Mutex::try_clone).
///
/// ```
/// # let name = format!("doc-mutex-{}", std::process::id());
/// use tally::{LockError, Mutex};
/// let m = Mutex::<u64>::create(&name, 0)?;
/// *m.lock().unwrap() += 1;
/// // After an owner's death: repair, then clear the mark.
/// let mut guard = match m.lock() {
///     Ok(g) => g,
///     Err(LockError::Abandoned(mut g)) => {
///         g.clear_abandoned();
///         g
///     }
///     Err(e) => panic!("{e}"),
/// };
/// assert_eq!(*guard, 1);
/// # drop(guard);
/// # Ok::<(), tally::Error>(())
/// ```
pub struct Mutex<T: Message> {
    seg: Segment,
    view: MutexView,
    opts: Options,
    spin: Duration,
    probe: RefCell<Probe>,
    _t: PhantomData<fn(T) -> T>,
    _not_sync: PhantomData<Cell<()>>,
}

fn spec<'a, T: Message>(init: Option<T>) -> Result<ObjectSpec<'a>> {
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    if align > obj::DATA_ALIGN {
        return Err(Error::InvalidArgument(format!(
            "payload {} is aligned to {align} bytes; tally lays out payloads aligned up to {}",
            std::any::type_name::<T>(),
            obj::DATA_ALIGN
        )));
    }
    let object_len = obj::object_len(size)
        .ok_or_else(|| Error::InvalidArgument("mutex payload too large".into()))?;
    Ok(ObjectSpec {
        kind: Kind::Mutex,
        fingerprint: Fingerprint::of::<T>(),
        object_len,
        init: Box::new(move |mem| {
            // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned area of
            // `object_len` bytes; the data offset is a multiple of 128 >= align_of::<T>().
            unsafe {
                obj::init(mem.ptr, size as u32, align as u32);
                if let Some(v) = init {
                    (mem.ptr.add(obj::data_offset()) as *mut T).write(v);
                }
            }
        }),
        recover: crate::objects::recover_any,
    })
}

impl<T: Message> Mutex<T> {
    /// Creates a mutex holding `value`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or a payload
    /// aligned above 128 bytes; [`Error::AlreadyExists`] if a live object has the name;
    /// [`Error::NoSpace`], [`Error::PermissionDenied`] or [`Error::Io`] from the system.
    pub fn create(name: &str, value: T) -> Result<Self> {
        Self::create_with(name, value, &Options::default())
    }

    /// Creates with explicit [`Options`].
    ///
    /// # Errors
    /// As [`create`](Mutex::create).
    pub fn create_with(name: &str, value: T, opts: &Options) -> Result<Self> {
        let seg = Segment::create(name, &spec::<T>(Some(value))?, opts)?;
        Self::attach(seg, opts)
    }

    /// Opens the live mutex `name`; its payload type must be `T`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build cannot
    /// read; [`Error::TableFull`]; [`Error::PermissionDenied`], [`Error::Timeout`] or
    /// [`Error::Io`] from the system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](Mutex::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let seg = Segment::open(name, &spec::<T>(None)?, opts)?;
        Self::attach(seg, opts)
    }

    /// Opens `name`, or creates it holding `value`. Returns whether it created.
    ///
    /// # Errors
    /// As [`create`](Mutex::create) and [`open`](Mutex::open).
    pub fn open_or_create(name: &str, value: T, opts: &Options) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(name, &spec::<T>(Some(value))?, opts)?;
        Ok((Self::attach(seg, opts)?, created))
    }

    fn attach(seg: Segment, opts: &Options) -> Result<Self> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let (size, _) =
            unsafe { obj::check(mem.ptr, mem.len) }.map_err(|d| Error::corrupted(seg.name(), d))?;
        if size as usize != std::mem::size_of::<T>() {
            return Err(Error::corrupted(
                seg.name(),
                format!(
                    "mutex data of {size} bytes for a {}-byte payload",
                    std::mem::size_of::<T>()
                ),
            ));
        }
        Ok(Mutex {
            // SAFETY: validated just above; `seg` keeps the mapping alive.
            view: unsafe { MutexView::new(mem.ptr) },
            seg,
            opts: opts.clone(),
            spin: DEFAULT_SPIN,
            probe: RefCell::new(Probe::default()),
            _t: PhantomData,
            _not_sync: PhantomData,
        })
    }

    /// Opens another handle on the same mutex (another holder), for another thread.
    ///
    /// # Errors
    /// As [`open`](Mutex::open).
    pub fn try_clone(&self) -> Result<Self> {
        let mut m = Self::open_with(self.name(), &self.opts)?;
        m.spin = self.spin;
        Ok(m)
    }

    /// Locks, waiting while a live owner holds the lock.
    ///
    /// # Errors
    /// [`LockError::Abandoned`] (with the guard: the lock is ours) if an owner died
    /// holding it; [`LockError::LastHolder`] if this handle holds it already.
    #[inline]
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        let slot = self.seg.slot();
        if self.view.try_lock_fast(slot) {
            return Ok(self.guard(false));
        }
        self.lock_slow(None)
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::Timeout`], or as [`lock`](Mutex::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        if self.view.try_lock_fast(self.seg.slot()) {
            return Ok(self.guard(false));
        }
        self.lock_slow(deadline_after(timeout))
    }

    /// Locks if the lock is free now. An owner found dead (probed at most every few
    /// milliseconds) is taken over at once.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] if a live owner holds it (this handle included);
    /// [`LockError::Abandoned`] as for [`lock`](Mutex::lock).
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        let slot = self.seg.slot();
        match self.view.try_lock(slot, false) {
            Take::Locked { abandoned } => self.outcome(abandoned),
            Take::Held(w) => {
                let owner = (w & OWNER_MASK) - 1;
                let mut probe = self.probe.borrow_mut();
                if owner != slot
                    && (probe.dead == Some(w as u64) || probe.due())
                    && !self.seg.holder_alive(owner)
                {
                    probe.dead = Some(w as u64);
                    if self.view.take_over(w, slot, false) {
                        return self.outcome(true);
                    }
                }
                Err(LockError::WouldBlock)
            }
        }
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        let slot = self.seg.slot();
        let mut slept = false;
        loop {
            if let Take::Locked { abandoned } = self.view.try_lock(slot, slept) {
                return self.outcome(abandoned);
            }
            let line = &self.view.header().lock;
            let mut b = MutexBlocker {
                mutex: self,
                sleepers: &line.sleepers,
                slept: Cell::new(false),
                why: None,
            };
            let w = wait::block(self.spin, deadline, &mut b);
            slept |= b.slept.get();
            match w {
                Wait::Retry => {}
                Wait::TimedOut => return Err(LockError::Timeout),
                Wait::Gone => match b.why {
                    Some(Gone::Mine) => return Err(LockError::LastHolder),
                    Some(Gone::Dead(seen)) if self.view.take_over(seen, slot, slept) => {
                        return self.outcome(true);
                    }
                    _ => {}
                },
            }
        }
    }

    fn outcome(&self, abandoned: bool) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        let g = self.guard(abandoned);
        if abandoned {
            Err(LockError::Abandoned(g))
        } else {
            Ok(g)
        }
    }

    #[inline]
    fn guard(&self, abandoned: bool) -> MutexGuard<'_, T> {
        MutexGuard {
            mutex: self,
            keep: if abandoned { obj::ABANDONED } else { 0 },
        }
    }

    /// Whether the abandoned mark is set (an owner died holding the lock, and no guard
    /// has cleared the mark since).
    pub fn is_abandoned(&self) -> bool {
        self.view.state().abandoned
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Describes the segment (its [`SyncInfo`](crate::SyncInfo) has the owner and mark).
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }

    /// Reclaims dead holders now (a dead owner's lock is released, marked abandoned).
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if the admin lock stays
    /// held longer than [`Options::timeout`].
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.seg.sweep()
    }

    /// How long a contended lock spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a contended lock spins before it sleeps (`Duration::MAX`: for
    /// ever; a spinner still notices a dead owner and its deadline).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<T: Message> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.view.state();
        f.debug_struct("Mutex")
            .field("name", &self.name())
            .field("owner_slot", &st.owner.checked_sub(1))
            .field("abandoned", &st.abandoned)
            .field("slot", &self.seg.slot())
            .finish()
    }
}

enum Gone {
    /// This handle owns the lock.
    Mine,
    /// The owner in this lock word is dead.
    Dead(u32),
}

struct MutexBlocker<'a, T: Message> {
    mutex: &'a Mutex<T>,
    sleepers: &'a AtomicU32,
    slept: Cell<bool>,
    why: Option<Gone>,
}

impl<T: Message> Blocker for MutexBlocker<'_, T> {
    fn ready(&mut self) -> bool {
        self.mutex.view.word().load(Ordering::Relaxed) & OWNER_MASK == 0
    }
    fn gone_fast(&mut self) -> bool {
        false
    }
    fn gone_probe(&mut self) -> bool {
        let w = self.mutex.view.word().load(Ordering::Relaxed);
        let Some(owner) = (w & OWNER_MASK).checked_sub(1) else {
            return false;
        };
        let seg = &self.mutex.seg;
        if owner == seg.slot() {
            self.why = Some(Gone::Mine);
            return true;
        }
        if seg.holder_alive(owner) {
            return false;
        }
        self.why = Some(Gone::Dead(w));
        true
    }
    fn word(&self) -> &AtomicU32 {
        self.mutex.view.word()
    }
    fn enter_sleep(&self) {
        self.slept.set(true);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        self.mutex.view.announce_sleeper();
    }
    fn leave_sleep(&self) {
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Exclusive access to a [`Mutex`]'s value; unlocks on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: Message> {
    mutex: &'a Mutex<T>,
    /// What unlock leaves in the word: 0, or ABANDONED while the mark stays.
    keep: u32,
}

impl<T: Message> MutexGuard<'_, T> {
    /// Whether the lock carries the abandoned mark (an owner died holding it).
    pub fn is_abandoned(&self) -> bool {
        self.keep != 0
    }

    /// Clears the abandoned mark: say that `T` is consistent again. Later lockers are no
    /// longer told.
    pub fn clear_abandoned(&mut self) {
        self.mutex.view.clear_mark(self.mutex.seg.slot());
        self.keep = 0;
    }
}

impl<T: Message> std::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no other holder touches the data; it is aligned
        // for T (offset multiple of 128, align checked) and any bytes are a valid T (Pod).
        unsafe { &*(self.mutex.view.data() as *const T) }
    }
}

impl<T: Message> std::ops::DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is borrowed mutably, so this is the only
        // reference in this process.
        unsafe { &mut *(self.mutex.view.data() as *mut T) }
    }
}

impl<T: Message> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.mutex.view.unlock(self.keep) {
            sys::futex_wake(self.mutex.view.word(), 1);
        }
    }
}

impl<T: Message + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("value", &**self)
            .field("abandoned", &self.is_abandoned())
            .finish()
    }
}
