//! The names of a run's objects, all under one run-unique prefix.

/// Object names of one run.
#[derive(Clone, Debug)]
pub struct Names {
    /// The prefix every object of the run starts with.
    pub prefix: String,
}

/// Names raced by the lifecycle workers, and what each holds.
pub const LIFECYCLE_NAMES: [&str; 4] = ["life-mpmc", "life-sem", "life-mutex", "life-event"];

impl Names {
    /// The names of the run with this prefix.
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// A fresh prefix: the runner's pid and the time, so parallel runs never meet.
    pub fn fresh_prefix() -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("stress-{}-{}", std::process::id(), ms % 100_000_000)
    }

    /// The MPMC ring.
    pub fn mpmc(&self) -> String {
        format!("{}.mpmc", self.prefix)
    }

    /// SPSC ring number `pair`.
    pub fn spsc(&self, pair: u32) -> String {
        format!("{}.spsc{pair}", self.prefix)
    }

    /// The broadcast ring.
    pub fn broadcast(&self) -> String {
        format!("{}.bcast", self.prefix)
    }

    /// The resource semaphore.
    pub fn semaphore(&self) -> String {
        format!("{}.permits", self.prefix)
    }

    /// The mutex.
    pub fn mutex(&self) -> String {
        format!("{}.mutex", self.prefix)
    }

    /// Lifecycle name `i` (of [`LIFECYCLE_NAMES`]).
    pub fn lifecycle(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, LIFECYCLE_NAMES[i])
    }

    /// Whether `name` belongs to this run.
    pub fn owns(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    }
}
