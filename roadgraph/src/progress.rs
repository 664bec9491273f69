//! Progress reporting for long-running work (import, generation). The library
//! reports stages and amounts; the CLI draws them with indicatif. Tests and
//! servers pass [`NoProgress`].

pub trait Progress: Sync {
    /// A new stage starts; `total` is its amount of work (0 when unknown).
    fn stage(&self, _name: &str, _total: u64) {}
    /// Work done so far in the current stage.
    fn set(&self, _done: u64) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
