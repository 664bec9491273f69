//! The seam between the engine and durable storage for dispatchers'
//! commands. The engine stays free of I/O: it appends each accepted command
//! to a [`Journal`] (after validating it, in the order it applies them),
//! applies it, and only then waits for the journal to make it durable, so
//! that concurrent dispatchers share one disk flush (group commit) instead
//! of queueing for one each. A command is acknowledged only once durable.
//! On a restart the caller reads its journal back and hands the commands
//! after the checkpoint's [`crate::fleet::Checkpoint::journal_seq`] to
//! [`crate::fleet::Engine::replay`].

use super::{Command, StopPlan};

/// A durable, ordered log of commands.
pub trait Journal: Send + Sync {
    /// Appends `commands` as one unit (all or none; a reassignment is a
    /// removal and an addition) issued at event time `time`, and returns the
    /// unit's sequence number (increasing). `closed` holds the plans of the
    /// stops the unit completes or fails, so the journal can keep a whole
    /// record of each outcome. Called in the engine's command order, under
    /// its registry lock: it must not wait for the disk. An error refuses
    /// the commands: the engine does not apply them.
    fn append(&self, commands: &[Command], closed: &[StopPlan], time: f64) -> Result<u64, String>;

    /// Returns once every unit up to `seq` is durable; units appended
    /// meanwhile may be made durable together with it. An error means the
    /// journal failed: those units may not survive a crash, and a journal
    /// that failed refuses every later [`Journal::append`] (like a database
    /// after a failed fsync, it cannot know what reached the disk).
    fn sync(&self, seq: u64) -> Result<(), String>;
}
