//! Named counting semaphores: signal flavour (permits without owners) and resource
//! flavour (permits recorded against their holder and returned when it dies).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::objects::semaphore::{
    self as obj, FLAVOR_RESOURCE, FLAVOR_SIGNAL, MAX_RECORDS, Params, SemView,
};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment, SegmentInfo, SweepOutcome};
use crate::sys;
use crate::wait::{self, Blocker, DEFAULT_SPIN, Wait, deadline_after};

/// What a semaphore's permits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Flavor {
    /// A plain counter: [`post`](Semaphore::post) adds permits, [`wait`](Semaphore::wait)
    /// takes one; nobody owns a permit.
    Signal,
    /// A pool: [`acquire`](Semaphore::acquire) takes a [`Permit`], recorded against this
    /// handle's holder slot and returned on drop — or by the sweep if the process dies.
    Resource,
}

/// Why a wait for a permit failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SemaphoreWaitError {
    /// `try_*`: no permit is available now.
    WouldBlock,
    /// `*_timeout`: no permit came in time.
    Timeout,
    /// This handle is the semaphore's last live holder and no permit is available:
    /// nobody is left who could post one, so the wait would last for ever.
    LastHolder,
    /// `wait`/`try_wait` on a resource semaphore, or `acquire` on a signal semaphore.
    WrongFlavor,
}

impl fmt::Display for SemaphoreWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WouldBlock => "no permit is available",
            Self::Timeout => "timed out waiting for a permit",
            Self::LastHolder => "no permit is available and no other live holder could post one",
            Self::WrongFlavor => "the operation does not fit the semaphore's flavour",
        })
    }
}

impl std::error::Error for SemaphoreWaitError {}

/// Why a post failed; nothing was posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SemaphorePostError {
    /// The count would exceed the maximum fixed at creation (as in Windows).
    Overflow {
        /// Permits available when the post was refused.
        count: u32,
        /// The maximum count.
        max: u32,
    },
    /// `post` on a resource semaphore (its permits come back by dropping a [`Permit`]).
    WrongFlavor,
}

impl fmt::Display for SemaphorePostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow { count, max } => {
                write!(
                    f,
                    "post would exceed the maximum count {max} (count {count})"
                )
            }
            Self::WrongFlavor => f.write_str("post on a resource semaphore"),
        }
    }
}

impl std::error::Error for SemaphorePostError {}

/// A named counting semaphore in shared memory, alive while any process holds it.
///
/// Blocking calls spin for [`spin`](Semaphore::spin), then sleep on a futex in slices of
/// at most 10 ms; a post makes no system call unless someone sleeps. A waiter that is the
/// semaphore's last live holder fails with [`SemaphoreWaitError::LastHolder`] within one
/// slice instead of sleeping for ever.
///
/// A handle is one holder (one slot of the holder table): it may move between threads
/// but not be shared by them (it is `Send`, not `Sync`); give each thread its own
/// with [`try_clone`](Semaphore::try_clone).
///
/// ```
/// # let name = format!("doc-sem-{}", std::process::id());
/// use tally::Semaphore;
/// // A pool of 2 resources: permits come back on drop, or when their holder dies.
/// let pool = Semaphore::create_resource(&name, 2)?;
/// let a = pool.acquire()?;
/// let b = pool.try_acquire()?;
/// assert_eq!(pool.count(), 0);
/// assert!(pool.try_acquire().is_err());
/// drop((a, b));
/// assert_eq!(pool.count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Semaphore {
    seg: Segment,
    view: SemView,
    opts: Options,
    spin: Duration,
    _not_sync: PhantomData<Cell<()>>,
}

fn spec<'a>(flavor: u32, initial: u32, max: u32, records: u32) -> ObjectSpec<'a> {
    ObjectSpec {
        kind: Kind::Semaphore,
        fingerprint: Fingerprint::bytes(),
        object_len: obj::object_len(records),
        init: Box::new(move |mem| {
            // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned area of
            // `object_len` bytes.
            unsafe { obj::init(mem.ptr, flavor, initial, max, records) }
        }),
        recover: crate::objects::recover_any,
    }
}

fn check_counts(flavor: Flavor, initial: u32, max: u32) -> Result<()> {
    if max == 0 || initial > max {
        return Err(Error::InvalidArgument(format!(
            "semaphore count {initial} of maximum {max}: the maximum must be at least 1 and the count at most the maximum"
        )));
    }
    if flavor == Flavor::Resource && initial != max {
        return Err(Error::InvalidArgument(format!(
            "a resource semaphore starts with every permit available: count {initial} != maximum {max}"
        )));
    }
    Ok(())
}

fn flavor_tag(f: Flavor) -> u32 {
    match f {
        Flavor::Signal => FLAVOR_SIGNAL,
        Flavor::Resource => FLAVOR_RESOURCE,
    }
}

impl Semaphore {
    /// Creates a signal semaphore with `initial` permits and maximum count `max`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `max` is 0 or `initial > max`; otherwise as
    /// [`Ring::create`](crate::Ring::create): [`Error::InvalidName`],
    /// [`Error::AlreadyExists`], [`Error::NoSpace`], [`Error::PermissionDenied`],
    /// [`Error::Io`].
    pub fn create(name: &str, initial: u32, max: u32) -> Result<Self> {
        Self::create_with(name, initial, max, &Options::default())
    }

    /// Creates a signal semaphore with explicit [`Options`].
    ///
    /// # Errors
    /// As [`create`](Semaphore::create).
    pub fn create_with(name: &str, initial: u32, max: u32, opts: &Options) -> Result<Self> {
        Self::create_flavor(name, Flavor::Signal, initial, max, opts)
    }

    /// Creates a resource semaphore of `permits` permits, all available.
    ///
    /// # Errors
    /// As [`create`](Semaphore::create).
    pub fn create_resource(name: &str, permits: u32) -> Result<Self> {
        Self::create_resource_with(name, permits, &Options::default())
    }

    /// Creates a resource semaphore with explicit [`Options`].
    ///
    /// # Errors
    /// As [`create`](Semaphore::create).
    pub fn create_resource_with(name: &str, permits: u32, opts: &Options) -> Result<Self> {
        Self::create_flavor(name, Flavor::Resource, permits, permits, opts)
    }

    fn create_flavor(
        name: &str,
        flavor: Flavor,
        initial: u32,
        max: u32,
        opts: &Options,
    ) -> Result<Self> {
        check_counts(flavor, initial, max)?;
        let records = opts.holders.min(MAX_RECORDS);
        let seg = Segment::create(name, &spec(flavor_tag(flavor), initial, max, records), opts)?;
        Self::attach(seg, opts)
    }

    /// Opens the live semaphore `name`, of either flavour.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] if it
    /// is not a semaphore; [`Error::VersionMismatch`] or [`Error::Corrupted`] for a
    /// segment this build cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](Semaphore::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let seg = Segment::open(name, &spec(FLAVOR_SIGNAL, 0, 1, 0), opts)?;
        Self::attach(seg, opts)
    }

    /// Opens `name`, or creates it with this flavour and counts. Returns whether it
    /// created. An existing semaphore must have the same flavour and maximum.
    ///
    /// # Errors
    /// As [`create`](Semaphore::create) and [`open`](Semaphore::open);
    /// [`Error::LayoutMismatch`] if the existing semaphore's flavour or maximum differ.
    pub fn open_or_create(
        name: &str,
        flavor: Flavor,
        initial: u32,
        max: u32,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        check_counts(flavor, initial, max)?;
        let records = opts.holders.min(MAX_RECORDS);
        let (seg, created) =
            Segment::open_or_create(name, &spec(flavor_tag(flavor), initial, max, records), opts)?;
        let sem = Self::attach(seg, opts)?;
        if sem.flavor() != flavor || sem.max() != max {
            return Err(Error::LayoutMismatch {
                name: name.to_owned(),
                detail: format!(
                    "the semaphore is {:?} with maximum {}, this call asked for {flavor:?} with maximum {max}",
                    sem.flavor(),
                    sem.max()
                ),
            });
        }
        Ok((sem, created))
    }

    fn attach(seg: Segment, opts: &Options) -> Result<Self> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let params: Params = unsafe { obj::read_params(mem.ptr, mem.len) }
            .map_err(|d| Error::corrupted(seg.name(), d))?;
        // SAFETY: validated just above; `seg` (owned by the handle) keeps it mapped.
        let view = unsafe { SemView::new(mem.ptr, params) };
        Ok(Semaphore {
            seg,
            view,
            opts: opts.clone(),
            spin: DEFAULT_SPIN,
            _not_sync: PhantomData,
        })
    }

    /// Opens another handle on the same semaphore (another holder), for another thread.
    ///
    /// # Errors
    /// As [`open`](Semaphore::open).
    pub fn try_clone(&self) -> Result<Self> {
        let mut s = Self::open_with(self.name(), &self.opts)?;
        s.spin = self.spin;
        Ok(s)
    }

    /// The flavour fixed at creation.
    pub fn flavor(&self) -> Flavor {
        if self.view.params.flavor == FLAVOR_RESOURCE {
            Flavor::Resource
        } else {
            Flavor::Signal
        }
    }

    /// The maximum count fixed at creation.
    pub fn max(&self) -> u32 {
        self.view.params.max
    }

    /// Permits available now (a snapshot).
    pub fn count(&self) -> u32 {
        self.view.state().avail
    }

    /// Permits this handle holds (resource flavour; 0 for signal).
    pub fn held(&self) -> u32 {
        self.view.settle_pending();
        self.view.held(self.seg.slot())
    }

    /// Adds `n` permits (signal flavour) and wakes up to `n` sleepers. No system call
    /// unless someone sleeps.
    ///
    /// # Errors
    /// [`SemaphorePostError::Overflow`] if the count would exceed the maximum (nothing
    /// is posted); [`SemaphorePostError::WrongFlavor`] on a resource semaphore.
    pub fn post(&self, n: u32) -> Result<(), SemaphorePostError> {
        if self.view.params.flavor != FLAVOR_SIGNAL {
            return Err(SemaphorePostError::WrongFlavor);
        }
        if n == 0 {
            return Ok(());
        }
        self.view
            .post(n)
            .map_err(|count| SemaphorePostError::Overflow {
                count,
                max: self.view.params.max,
            })?;
        self.wake(n);
        Ok(())
    }

    #[inline]
    fn wake(&self, n: u32) {
        if self.view.must_wake() {
            wake_sleepers(&self.view, n);
        }
    }

    /// Takes a permit if one is available now (signal flavour).
    ///
    /// # Errors
    /// [`SemaphoreWaitError::WouldBlock`] if none is; [`SemaphoreWaitError::WrongFlavor`]
    /// on a resource semaphore.
    pub fn try_wait(&self) -> Result<(), SemaphoreWaitError> {
        self.signal_only()?;
        if self.view.try_take() {
            Ok(())
        } else {
            Err(SemaphoreWaitError::WouldBlock)
        }
    }

    /// Takes a permit, waiting while none is available (signal flavour).
    ///
    /// # Errors
    /// [`SemaphoreWaitError::LastHolder`] if none is available and this is the last
    /// live holder; [`SemaphoreWaitError::WrongFlavor`] on a resource semaphore.
    pub fn wait(&self) -> Result<(), SemaphoreWaitError> {
        self.signal_only()?;
        self.wait_until(None, || self.view.try_take())
    }

    /// Takes a permit, waiting at most `timeout` (signal flavour).
    ///
    /// # Errors
    /// [`SemaphoreWaitError::Timeout`], or as [`wait`](Semaphore::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), SemaphoreWaitError> {
        self.signal_only()?;
        self.wait_until(deadline_after(timeout), || self.view.try_take())
    }

    /// Takes a permit now if one is available (resource flavour).
    ///
    /// # Errors
    /// [`SemaphoreWaitError::WouldBlock`] if none is; [`SemaphoreWaitError::WrongFlavor`]
    /// on a signal semaphore.
    pub fn try_acquire(&self) -> Result<Permit<'_>, SemaphoreWaitError> {
        self.resource_only()?;
        if self.view.try_acquire(self.seg.slot()) {
            Ok(Permit { sem: self })
        } else {
            Err(SemaphoreWaitError::WouldBlock)
        }
    }

    /// Takes a permit, waiting while none is available (resource flavour). The permit is
    /// returned when the [`Permit`] drops, or by the sweep if this process dies.
    ///
    /// # Errors
    /// [`SemaphoreWaitError::LastHolder`] if none is available and this is the last
    /// live holder; [`SemaphoreWaitError::WrongFlavor`] on a signal semaphore.
    pub fn acquire(&self) -> Result<Permit<'_>, SemaphoreWaitError> {
        self.resource_only()?;
        let slot = self.seg.slot();
        self.wait_until(None, || self.view.try_acquire(slot))?;
        Ok(Permit { sem: self })
    }

    /// Takes a permit, waiting at most `timeout` (resource flavour).
    ///
    /// # Errors
    /// [`SemaphoreWaitError::Timeout`], or as [`acquire`](Semaphore::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, SemaphoreWaitError> {
        self.resource_only()?;
        let slot = self.seg.slot();
        self.wait_until(deadline_after(timeout), || self.view.try_acquire(slot))?;
        Ok(Permit { sem: self })
    }

    fn signal_only(&self) -> Result<(), SemaphoreWaitError> {
        if self.view.params.flavor == FLAVOR_SIGNAL {
            Ok(())
        } else {
            Err(SemaphoreWaitError::WrongFlavor)
        }
    }

    fn resource_only(&self) -> Result<(), SemaphoreWaitError> {
        if self.view.params.flavor == FLAVOR_RESOURCE {
            Ok(())
        } else {
            Err(SemaphoreWaitError::WrongFlavor)
        }
    }

    fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut take: impl FnMut() -> bool,
    ) -> Result<(), SemaphoreWaitError> {
        let view = self.view;
        loop {
            if take() {
                return Ok(());
            }
            let wake = &view.header().wake;
            let mut b = AloneBlocker {
                seg: &self.seg,
                word: &wake.seq,
                sleepers: &wake.sleepers,
                ready: || {
                    let st = view.state();
                    st.avail > 0 || st.pending != 0
                },
            };
            match wait::block(self.spin, deadline, &mut b) {
                Wait::Retry => {}
                // One last look: the sweep that found us alone may have returned permits.
                Wait::Gone if take() => return Ok(()),
                Wait::Gone => return Err(SemaphoreWaitError::LastHolder),
                Wait::TimedOut => return Err(SemaphoreWaitError::Timeout),
            }
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Describes the segment (its [`SyncInfo`](crate::SyncInfo) has the count, maximum
    /// and each holder's permits).
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }

    /// Reclaims dead holders now, returning their permits.
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if the admin lock stays
    /// held longer than [`Options::timeout`].
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.seg.sweep()
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps (`Duration::MAX`: for ever;
    /// a spinner still notices deadlines and being the last holder).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

/// Wakes up to `n` sleepers of a semaphore.
#[cold]
fn wake_sleepers(view: &SemView, n: u32) {
    let wake = &view.header().wake;
    // SYNC POINT: Release pairs with the sleeper's Acquire load of `seq` in `wait::sleep`;
    // changing the word makes a sleeper about to wait on its old value return at once.
    wake.seq.fetch_add(1, Ordering::Release);
    sys::futex_wake(&wake.seq, n);
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name())
            .field("flavor", &self.flavor())
            .field("count", &self.count())
            .field("max", &self.max())
            .field("slot", &self.seg.slot())
            .finish()
    }
}

/// A permit of a resource [`Semaphore`], recorded against its holder; returned on drop.
#[must_use = "the permit is returned as soon as it is dropped"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Permit<'_> {
    /// The semaphore it came from.
    pub fn semaphore(&self) -> &Semaphore {
        self.sem
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.sem.view.release(self.sem.seg.slot()) {
            self.sem.wake(1);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("semaphore", &self.sem.name())
            .finish()
    }
}

/// Whether this handle is the object's last live holder: no other slot of its holder
/// table is alive. A sweep (only if the admin lock is free now: never waits) decides,
/// reclaiming dead holders on the way.
pub(crate) fn last_live_holder(seg: &Segment) -> bool {
    matches!(seg.try_sweep(), Ok(Some(out)) if out.live <= 1)
}

/// A waiter whose wait ends when the condition may hold or it is the last live holder.
pub(crate) struct AloneBlocker<'a, F> {
    pub seg: &'a Segment,
    pub word: &'a AtomicU32,
    pub sleepers: &'a AtomicU32,
    pub ready: F,
}

impl<F: FnMut() -> bool> Blocker for AloneBlocker<'_, F> {
    fn ready(&mut self) -> bool {
        (self.ready)()
    }
    fn gone_fast(&mut self) -> bool {
        false
    }
    fn gone_probe(&mut self) -> bool {
        last_live_holder(self.seg)
    }
    fn word(&self) -> &AtomicU32 {
        self.word
    }
    fn enter_sleep(&self) {
        // SYNC POINT: SeqCst pairs with the poster's SeqCst load of `sleepers` (with the
        // fence in `wait::sleep`): either it sees us, or we see its post.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }
    fn leave_sleep(&self) {
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}
