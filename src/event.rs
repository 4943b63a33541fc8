//! Named events with Windows semantics: manual reset and auto reset.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::objects::event::{self as obj, EventView};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment, SegmentInfo, SweepOutcome};
use crate::semaphore::AloneBlocker;
use crate::sys;
use crate::wait::{self, DEFAULT_SPIN, Wait, deadline_after};

/// How an event resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reset {
    /// Stays set, releasing every waiter, until [`Event::reset`].
    Manual,
    /// Releases one waiter and resets itself; a set with nobody waiting stays until one
    /// waiter takes it. Setting a set event does nothing (sets do not accumulate).
    Auto,
}

/// Why a wait for an event failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventWaitError {
    /// `wait_timeout`: the event was not set in time.
    Timeout,
    /// This handle is the event's last live holder and the event is not set: nobody is
    /// left who could set it.
    LastHolder,
}

impl fmt::Display for EventWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timed out waiting for the event",
            Self::LastHolder => "the event is not set and no other live holder could set it",
        })
    }
}

impl std::error::Error for EventWaitError {}

/// A named event in shared memory, alive while any process holds it.
///
/// `set` makes no system call unless someone sleeps. A waiter spins for
/// [`spin`](Event::spin), then sleeps on a futex in slices of at most 10 ms; one that
/// is the event's last live holder fails with [`EventWaitError::LastHolder`] within one
/// slice. A manual-reset waiter that was waiting when `set` happened returns even if a
/// `reset` follows at once (no wake is lost).
///
/// A handle is one holder: `Send`, not `Sync`; give each thread its own with
/// [`try_clone`](Event::try_clone).
///
/// ```
/// # let name = format!("doc-event-{}", std::process::id());
/// use tally::{Event, Reset};
/// let ev = Event::create(&name, Reset::Manual)?;
/// assert!(!ev.is_set());
/// ev.set();
/// ev.wait()?; // returns at once, and the event stays set
/// assert!(ev.is_set());
/// ev.reset();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Event {
    seg: Segment,
    view: EventView,
    opts: Options,
    spin: Duration,
    _not_sync: PhantomData<Cell<()>>,
}

fn spec<'a>(manual: bool) -> ObjectSpec<'a> {
    ObjectSpec {
        kind: Kind::Event,
        fingerprint: Fingerprint::bytes(),
        object_len: obj::object_len(),
        init: Box::new(move |mem| {
            // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned area of
            // `object_len` bytes.
            unsafe { obj::init(mem.ptr, manual, false) }
        }),
        recover: crate::objects::recover_any,
    }
}

impl Event {
    /// Creates an event, not set.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::AlreadyExists`] if a live object has the name;
    /// [`Error::NoSpace`], [`Error::PermissionDenied`] or [`Error::Io`] from the system.
    pub fn create(name: &str, reset: Reset) -> Result<Self> {
        Self::create_with(name, reset, &Options::default())
    }

    /// Creates with explicit [`Options`].
    ///
    /// # Errors
    /// As [`create`](Event::create).
    pub fn create_with(name: &str, reset: Reset, opts: &Options) -> Result<Self> {
        let seg = Segment::create(name, &spec(reset == Reset::Manual), opts)?;
        Self::attach(seg, opts)
    }

    /// Opens the live event `name`, of either reset mode.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] if it
    /// is not an event; [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment
    /// this build cannot read; [`Error::TableFull`]; [`Error::PermissionDenied`],
    /// [`Error::Timeout`] or [`Error::Io`] from the system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](Event::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let seg = Segment::open(name, &spec(false), opts)?;
        Self::attach(seg, opts)
    }

    /// Opens `name`, or creates it with this reset mode. Returns whether it created.
    ///
    /// # Errors
    /// As [`create`](Event::create) and [`open`](Event::open);
    /// [`Error::LayoutMismatch`] if the existing event has the other reset mode.
    pub fn open_or_create(name: &str, reset: Reset, opts: &Options) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(name, &spec(reset == Reset::Manual), opts)?;
        let ev = Self::attach(seg, opts)?;
        if ev.reset_mode() != reset {
            return Err(Error::LayoutMismatch {
                name: name.to_owned(),
                detail: format!(
                    "the event is {:?}-reset, this call asked for {reset:?}",
                    ev.reset_mode()
                ),
            });
        }
        Ok((ev, created))
    }

    fn attach(seg: Segment, opts: &Options) -> Result<Self> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let manual =
            unsafe { obj::check(mem.ptr, mem.len) }.map_err(|d| Error::corrupted(seg.name(), d))?;
        Ok(Event {
            // SAFETY: validated just above; `seg` keeps the mapping alive.
            view: unsafe { EventView::new(mem.ptr, manual) },
            seg,
            opts: opts.clone(),
            spin: DEFAULT_SPIN,
            _not_sync: PhantomData,
        })
    }

    /// Opens another handle on the same event (another holder), for another thread.
    ///
    /// # Errors
    /// As [`open`](Event::open).
    pub fn try_clone(&self) -> Result<Self> {
        let mut e = Self::open_with(self.name(), &self.opts)?;
        e.spin = self.spin;
        Ok(e)
    }

    /// The reset mode fixed at creation.
    pub fn reset_mode(&self) -> Reset {
        if self.view.manual {
            Reset::Manual
        } else {
            Reset::Auto
        }
    }

    /// Sets the event: a manual-reset event releases every waiter and stays set; an
    /// auto-reset event releases one waiter (or the next to come). No system call
    /// unless someone sleeps.
    pub fn set(&self) {
        if self.view.set() {
            crate::objects::semaphore::step_hook(crate::objects::semaphore::step::EVENT_SET);
            if self.view.must_wake() {
                let n = if self.view.manual { u32::MAX } else { 1 };
                sys::futex_wake(self.view.word(), n);
            }
        }
    }

    /// Clears the event.
    pub fn reset(&self) {
        self.view.reset();
    }

    /// Whether the event is set now (a snapshot).
    pub fn is_set(&self) -> bool {
        self.view.load() & obj::SET != 0
    }

    /// Returns at once whether the event is set; an auto-reset event is taken (reset)
    /// if so.
    pub fn try_wait(&self) -> bool {
        let start = self.view.load();
        self.view.try_pass(start)
    }

    /// Waits until the event is set (taking it, for auto reset).
    ///
    /// # Errors
    /// [`EventWaitError::LastHolder`] if it is not set and this is the last live holder.
    pub fn wait(&self) -> Result<(), EventWaitError> {
        self.wait_until(None)
    }

    /// Waits at most `timeout` for the event to be set.
    ///
    /// # Errors
    /// [`EventWaitError::Timeout`], or as [`wait`](Event::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), EventWaitError> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<(), EventWaitError> {
        let view = self.view;
        let start = view.load();
        loop {
            if view.try_pass(start) {
                return Ok(());
            }
            let line = view.line();
            let mut b = AloneBlocker {
                seg: &self.seg,
                word: &line.state,
                sleepers: &line.sleepers,
                ready: || view.may_pass(start),
            };
            match wait::block(self.spin, deadline, &mut b) {
                Wait::Retry => {}
                Wait::Gone if view.try_pass(start) => return Ok(()),
                Wait::Gone => return Err(EventWaitError::LastHolder),
                Wait::TimedOut => return Err(EventWaitError::Timeout),
            }
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Describes the segment (its [`SyncInfo`](crate::SyncInfo) says whether it is set).
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }

    /// Reclaims dead holders now.
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

    /// Sets how long a waiting call spins before it sleeps (`Duration::MAX`: for ever).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("reset", &self.reset_mode())
            .field("set", &self.is_set())
            .field("slot", &self.seg.slot())
            .finish()
    }
}
