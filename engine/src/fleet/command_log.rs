//! Commands ordered by a log shared by several engines (a cluster's), not
//! by one engine's registry lock. Every engine's registry follows the log
//! in its order ([`Engine::record_logged`]), and each engine drives the
//! vehicle commands of its own partitions where the log puts them among
//! their pings ([`Engine::offer_command`]).
//!
//! A dispatcher's command is checked against this engine's registry as it
//! stood after log position `after`, and appended only if the log still
//! ends there (compare and swap: [`CommandLog::append`]). Every command on
//! the log was thus checked against exactly the registry that precedes it,
//! so every engine applies it without checking again and all agree. When
//! another engine's command got in first, this registry catches up with
//! the log and the command is checked again.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rkyv::rancor;

use super::fleet_zones::ZoneBook;
use super::registry::{Registry, StopRecord, apply};
use super::shard::Msg;
use super::{Admission, Command, CommandError, Engine, StopId, VehicleId, shard_of};
use crate::zones::ZoneDef;

/// How long a dispatcher's command waits for the log, and for this
/// engine's registry to read its own command back.
const PATIENCE: Duration = Duration::from_secs(10);

/// Why [`CommandLog::append`] did not append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The log holds commands after `after`: catch up and check again.
    Moved,
    /// The log did not take it (unreachable, refused); it may or may not
    /// hold it.
    Failed(String),
}

/// An ordered, replicated log of command units.
pub trait CommandLog: Send + Sync {
    /// Appends `unit` (applied all or none) issued at event time `time`,
    /// if the log's last command is still at position `after` (0: none
    /// yet); returns the unit's position. Blocks for the round trip.
    fn append(&self, unit: &[Command], time: f64, after: u64) -> Result<u64, AppendError>;
}

/// The log position this engine's registry has read up to, for a
/// dispatcher waiting to see its command recorded.
#[derive(Default)]
pub(super) struct Recorded {
    position: Mutex<u64>,
    moved: Condvar,
    /// Held by one dispatcher's command from its check until its registry
    /// has it back: this node's commands then never race each other for
    /// the log's end, only other nodes' do.
    appending: Mutex<()>,
}

impl Recorded {
    fn set(&self, position: u64) {
        let mut p = self.position.lock().unwrap_or_else(|p| p.into_inner());
        *p = (*p).max(position);
        self.moved.notify_all();
    }

    /// This node's turn to append, waited for until `deadline`.
    fn turn(&self, deadline: Instant) -> Result<std::sync::MutexGuard<'_, ()>, CommandError> {
        loop {
            match self.appending.try_lock() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Err(CommandError::Overloaded),
            }
        }
    }

    /// Waits until the registry has read position `position`.
    fn wait(&self, position: u64, deadline: Instant) -> Result<(), CommandError> {
        let mut p = self.position.lock().unwrap_or_else(|p| p.into_inner());
        while *p < position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommandError::Journal(format!(
                    "this node has not read the cluster's command log up to {position} yet"
                )));
            }
            p = self
                .moved
                .wait_timeout(p, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }
}

impl Engine {
    /// Orders every dispatcher's command through `log` from now on (once;
    /// false if a log was already set): the registry then changes only by
    /// [`Engine::record_logged`], the shards only by
    /// [`Engine::offer_command`].
    pub fn set_command_log(&self, log: std::sync::Arc<dyn CommandLog>) -> bool {
        self.command_log.set(log).is_ok()
    }

    /// Whether commands go through a shared log.
    pub(super) fn logged(&self) -> Option<&dyn CommandLog> {
        self.command_log.get().map(|l| l.as_ref())
    }

    /// Appends the unit `unit` builds from the registry, checked there, and
    /// returns once this engine's registry has recorded it (so the caller
    /// sees its own command at once, on this node).
    pub(super) fn append_logged(
        &self,
        log: &dyn CommandLog,
        time: f64,
        unit: impl Fn(&Registry) -> Result<Vec<Command>, CommandError>,
    ) -> Result<(), CommandError> {
        let deadline = Instant::now() + PATIENCE;
        let _turn = self.recorded.turn(deadline)?;
        loop {
            let (cmds, after) = {
                let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
                (unit(&reg)?, reg.log_position)
            };
            match log.append(&cmds, time, after) {
                Ok(position) => return self.recorded.wait(position, deadline),
                // Another node's command got in first: check again against
                // the registry once it has read that one.
                Err(AppendError::Moved) => self.recorded.wait(after + 1, deadline)?,
                Err(AppendError::Failed(e)) => return Err(CommandError::Journal(e)),
            }
        }
    }

    /// Records the unit at log position `position` in the registry (zones
    /// go to every shard); the vehicles' shards get their commands from
    /// whoever drives their partition. A position already read is ignored.
    pub fn record_logged(&self, position: u64, unit: &[Command], time: f64) {
        {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            if position <= reg.log_position {
                return;
            }
            for cmd in unit {
                apply(&mut reg, cmd, time);
                if cmd.vehicle().is_none() {
                    self.send_zones(&mut reg, cmd);
                }
            }
            reg.log_position = position;
        }
        self.recorded.set(position);
    }

    /// The log position the registry has read up to.
    pub fn log_position(&self) -> u64 {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .log_position
    }

    /// Queues a vehicle's command from the log for its shard, in order with
    /// the pings offered around it; false (nothing queued) when the shard's
    /// queue is full: offer it again. A command for no vehicle (zones) is
    /// the registry's alone and queues nothing.
    pub fn offer_command(&self, cmd: &Command, time: f64) -> bool {
        let Some(v) = cmd.vehicle() else {
            return true;
        };
        let shard = shard_of(v, self.partitions, self.shards.len());
        let msg = Msg::Command {
            cmd: cmd.clone(),
            time,
        };
        self.send(shard, msg, Admission::Shed).is_ok()
    }
}

/// The registry alone, as a log follower saves it for nodes that start
/// after the log has dropped its oldest commands.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct RegistryRecords {
    stops: Vec<(StopId, StopRecord)>,
    routes: Vec<(VehicleId, Vec<StopId>)>,
    zones: Vec<(u32, Vec<ZoneDef>)>,
}

impl Engine {
    /// The registry as of log position `.0` (see [`Engine::adopt_registry`]).
    pub fn save_registry(&self) -> (u64, Vec<u8>) {
        let (position, records) = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            let records = RegistryRecords {
                stops: reg.stops.iter().map(|(k, v)| (*k, v.clone())).collect(),
                routes: reg.routes.iter().map(|(k, v)| (*k, v.clone())).collect(),
                zones: reg.zones.all(),
            };
            (reg.log_position, records)
        };
        let bytes =
            rkyv::to_bytes::<rancor::Error>(&records).map_or_else(|_| Vec::new(), |b| b.to_vec());
        (position, bytes)
    }

    /// Takes a registry another node saved at log position `position`, if
    /// this one has read less of the log; the log is then read on from the
    /// position after. `None`: not taken (this registry is as far);
    /// `Some`: taken, with the zones this build refuses (left out). Refused
    /// whole if it does not read back.
    pub fn adopt_registry(
        &self,
        position: u64,
        bytes: &[u8],
    ) -> Result<Option<Vec<String>>, String> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let saved = rkyv::from_bytes::<RegistryRecords, rancor::Error>(&aligned)
            .map_err(|e| format!("a saved registry that does not read back: {e}"))?;
        let refused = {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            if position <= reg.log_position {
                return Ok(None);
            }
            reg.stops = saved.stops.into_iter().collect();
            reg.routes = saved.routes.into_iter().collect();
            let (zones, refused) = ZoneBook::restore(saved.zones);
            reg.zones = zones;
            let margin = self.config.detect.zone_margin_m;
            let sets = std::sync::Arc::new(reg.zones.publish(&reg.zone_sets, None, margin));
            reg.zone_sets = sets.clone();
            for shard in 0..self.shards.len() {
                self.send_control(shard, Msg::Zones(sets.clone()));
            }
            reg.log_position = position;
            refused
        };
        self.recorded.set(position);
        Ok(Some(refused))
    }
}
