//! The seam between the engine and durable storage for dispatchers'
//! commands. The engine stays free of I/O: it calls a [`Journal`] with each
//! accepted command (after validating it, before applying it), and applies
//! it only if the journal says it is durable. On a restart the caller reads
//! its journal back and hands the commands after the checkpoint's
//! [`crate::fleet::Checkpoint::journal_seq`] to [`crate::fleet::Engine::replay`].

use super::Command;

/// A durable, ordered log of commands.
pub trait Journal: Send + Sync {
    /// Makes `commands` durable as one unit (all or none; a reassignment is
    /// a removal and an addition) issued at event time `time`, and returns
    /// the unit's sequence number (increasing). An error refuses the
    /// commands: the engine does not apply them.
    fn record(&self, commands: &[Command], time: f64) -> Result<u64, String>;
}
