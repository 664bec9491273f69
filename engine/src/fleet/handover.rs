//! Partitions moving between engines: in a cluster each node's engine
//! drives only the partitions it owns, saves one alone for whoever owns it
//! next, takes over one another node saved, and forgets one it gave up.
//! Each is a message through the partition's shard queue, so it sits at an
//! exact point of that shard's inputs: what was offered before it is in a
//! save, what is offered after an adoption applies to the adopted vehicles.

use crossbeam_channel::bounded;

use super::checkpoint::{self, CheckpointError, RecordsBuf};
use super::shard::Msg;
use super::{Engine, shard_of};

/// A partition saved alone (see [`Engine::save_partition`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSave {
    /// Its vehicles as checkpoint records, for [`Engine::adopt_partition`].
    pub records: Vec<u8>,
    pub vehicles: usize,
    /// Vehicles that could not be serialised (left out).
    pub failed: usize,
}

/// What [`Engine::adopt_partition`] took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    pub vehicles: usize,
    /// Records that did not decode (those vehicles start afresh).
    pub failed: Vec<String>,
}

impl Engine {
    /// Partition `p`'s vehicles after everything offered before the call;
    /// the history they finalised until then is in [`Engine::take_history`]
    /// when it returns.
    pub fn save_partition(&self, p: usize) -> PartitionSave {
        let (tx, rx) = bounded(1);
        let shard = p % self.shards.len();
        self.send_control(
            shard,
            Msg::SavePartition {
                partition: p,
                reply: tx,
            },
        );
        let (records, vehicles, failed, mut history) = rx.recv().unwrap_or_default();
        // Gathered now rather than at the next tick: whoever writes the
        // save down takes the history of what it holds first.
        self.keep_history(&mut history);
        PartitionSave {
            records,
            vehicles,
            failed,
        }
    }

    /// Takes the vehicles of a [`PartitionSave`]'s records (from this node
    /// or another on the same graph), replacing any of the same ids; inputs
    /// offered after the call apply to them. A record that does not decode
    /// is reported and its vehicle starts afresh; a blob cut short is
    /// refused whole.
    pub fn adopt_partition(&self, records: Vec<u8>) -> Result<Adopted, CheckpointError> {
        let n = self.shards.len();
        let mut parts = vec![Vec::new(); n];
        for r in checkpoint::Records(&records) {
            let (id, record) = r?;
            let at = record.as_ptr() as usize - records.as_ptr() as usize;
            parts[shard_of(id, self.partitions, n)].push(at..at + record.len());
        }
        let records = RecordsBuf::new(records);
        let replies: Vec<_> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, ranges)| !ranges.is_empty())
            .map(|(shard, ranges)| {
                let (tx, rx) = bounded(1);
                let msg = Msg::Adopt {
                    records: records.clone(),
                    ranges,
                    reply: tx,
                };
                self.send_control(shard, msg);
                rx
            })
            .collect();
        let mut adopted = Adopted::default();
        for r in replies {
            if let Ok((n, mut errors)) = r.recv() {
                adopted.vehicles += n;
                adopted.failed.append(&mut errors);
            }
        }
        Ok(adopted)
    }

    /// Forgets partition `p`'s vehicles after everything offered before the
    /// call (another node owns them now); returns how many there were.
    pub fn release_partition(&self, p: usize) -> usize {
        let (tx, rx) = bounded(1);
        let shard = p % self.shards.len();
        self.send_control(
            shard,
            Msg::Release {
                partition: p,
                reply: tx,
            },
        );
        rx.recv().unwrap_or(0)
    }
}
