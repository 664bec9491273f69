//! The dispatchers' commands on the log: routes, stops, outcomes, zones,
//! as units (a reassignment's removal and addition are one) on the
//! subject `lastmile.commands` of the ping log's stream, so a command has
//! one place among every partition's pings and a partition's new owner
//! replays both in the order the old one applied them.
//!
//! The order is decided by the log, not by a node: a node appends a unit
//! only if the log's last command is the one its registry has read last
//! (JetStream's expected last subject sequence), so every unit on the log
//! was checked against the registry that precedes it (see
//! [`lastmile_engine::fleet::command_log`]). Every node's registry follows
//! the log ([`follow`]); each partition's driver applies the commands of
//! its vehicles where the log puts them among their pings.
//!
//! A unit as stored: a [`Unit`], framed (see `framed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::{Command, CommandLog, Engine};
use tokio::runtime::Handle;

pub use lastmile_engine::fleet::AppendError;

use crate::checkpoints::Checkpoints;
use crate::framed;
use crate::member::MemberStats;
use crate::ping_log::PingLog;

/// Bytes a unit may take on the log (NATS refuses a message over 1 MiB by
/// default; a route of a thousand stops takes about 100 kB).
pub const MAX_UNIT_BYTES: usize = 900 * 1024;

/// One command unit as the log holds it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct Unit {
    /// The event time it was issued at.
    pub time: f64,
    pub commands: Vec<Command>,
}

/// `commands` issued at `time` as stored bytes.
pub fn encode(commands: &[Command], time: f64) -> Result<Vec<u8>, String> {
    let unit = Unit {
        time,
        commands: commands.to_vec(),
    };
    let bytes = framed::encode(&unit)?;
    if bytes.len() > MAX_UNIT_BYTES {
        return Err(format!(
            "the command takes {} bytes, more than the cluster's log takes ({MAX_UNIT_BYTES})",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// A stored unit read back; `Err` with the reason if it is not one this
/// build reads (checked whole: a damaged archive is refused, not trusted).
pub fn decode(bytes: &[u8]) -> Result<Unit, String> {
    framed::decode(bytes)
}

/// The engine's [`CommandLog`] on the cluster's log. Its appends block the
/// calling thread for a round trip (see [`crate::block_on`]).
pub struct SharedCommands {
    log: PingLog,
    runtime: Handle,
    /// Message ids: this process's, numbered.
    id_prefix: String,
    next_id: AtomicU64,
    patience: Duration,
    stats: Arc<MemberStats>,
}

impl SharedCommands {
    pub(crate) fn new(
        log: PingLog,
        runtime: Handle,
        id_prefix: String,
        patience: Duration,
        stats: Arc<MemberStats>,
    ) -> Self {
        Self {
            log,
            runtime,
            id_prefix,
            next_id: AtomicU64::new(1),
            patience,
            stats,
        }
    }

    async fn append_async(&self, unit: Bytes, mut after: u64) -> Result<u64, AppendError> {
        let id = format!("{}-c{}", self.id_prefix, self.next_id.fetch_add(1, Relaxed));
        let started = tokio::time::Instant::now();
        loop {
            let tried = tokio::time::timeout(
                self.patience.min(Duration::from_secs(5)),
                self.log.append_command(&id, unit.clone(), after),
            )
            .await
            .unwrap_or_else(|_| Err(AppendError::Failed("no acknowledgement".into())));
            match tried {
                Ok(seq) => {
                    self.stats.commands_appended.fetch_add(1, Relaxed);
                    return Ok(seq);
                }
                Err(AppendError::Moved) => {
                    // The last command this node read may have aged out of
                    // the stream (its byte limit): the log's last is then
                    // older than `after`, and the unit goes after it.
                    match self.log.last_command().await {
                        Ok(last) if last < after => after = last,
                        _ => {
                            self.stats.command_conflicts.fetch_add(1, Relaxed);
                            return Err(AppendError::Moved);
                        }
                    }
                }
                // Unanswered (an election): the same id again, stored once.
                Err(AppendError::Failed(e)) => {
                    if started.elapsed() >= self.patience {
                        self.stats.command_failures.fetch_add(1, Relaxed);
                        return Err(AppendError::Failed(e));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

impl CommandLog for SharedCommands {
    fn append(&self, unit: &[Command], time: f64, after: u64) -> Result<u64, AppendError> {
        let bytes = Bytes::from(encode(unit, time).map_err(AppendError::Failed)?);
        crate::block_on(&self.runtime, self.append_async(bytes, after))
    }
}

/// Keeps `engine`'s registry on the log's commands: from the registry
/// saved last (if the log has moved past it since, the commands before may
/// be gone), then from the log, for as long as the member lives. A unit
/// that does not read back is counted and skipped (every node skips it
/// alike).
pub(crate) async fn follow(
    log: PingLog,
    checkpoints: Checkpoints,
    engine: Arc<Engine>,
    stats: Arc<MemberStats>,
) {
    match checkpoints.get_registry().await {
        Ok(Some(saved)) => {
            let e = engine.clone();
            let taken = tokio::task::spawn_blocking(move || {
                e.adopt_registry(saved.sequence, &saved.records)
            })
            .await;
            match taken {
                Ok(Ok(Some(refused))) if !refused.is_empty() => {
                    tracing::warn!(?refused, "zones of the saved registry left out");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the saved registry is unreadable: reading every command kept");
                    stats.checkpoints_unreadable.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the saved registry is unreadable: reading every command kept");
            stats.checkpoints_unreadable.fetch_add(1, Relaxed);
        }
    }
    loop {
        let from = engine.log_position() + 1;
        let Ok(units) = log.read_commands(from).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut units = std::pin::pin!(units);
        while let Some(Ok(batch)) = units.next().await {
            match decode(&batch.bytes) {
                Ok(unit) => {
                    let e = engine.clone();
                    let seq = batch.sequence;
                    let recorded = tokio::task::spawn_blocking(move || {
                        e.record_logged(seq, &unit.commands, unit.time)
                    })
                    .await;
                    if recorded.is_err() {
                        return;
                    }
                    stats.commands_recorded.fetch_add(1, Relaxed);
                }
                Err(why) => {
                    tracing::warn!(sequence = batch.sequence, %why, "a command unit skipped");
                    stats.bad_batches.fetch_add(1, Relaxed);
                    let e = engine.clone();
                    let seq = batch.sequence;
                    let _ =
                        tokio::task::spawn_blocking(move || e.record_logged(seq, &[], 0.0)).await;
                }
            }
        }
        // The reader ended (the stream's leader moved): read on from where
        // the registry is.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_engine::fleet::StopPlan;
    use lastmile_roadgraph::LatLon;

    fn unit() -> Vec<Command> {
        vec![
            Command::RemoveStop {
                vehicle: 1,
                stop: 9,
            },
            Command::AddStop {
                vehicle: 2,
                stop: StopPlan::new(9, LatLon::new(43.73, 7.42)),
                index: Some(0),
            },
        ]
    }

    #[test]
    fn a_unit_reads_back_as_written() {
        let bytes = encode(&unit(), 1_767_225_600.5).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.commands, unit());
        assert_eq!(back.time, 1_767_225_600.5);
    }

    #[test]
    fn a_damaged_or_foreign_unit_is_refused_whole() {
        let bytes = encode(&unit(), 0.0).unwrap();
        assert!(decode(&[]).is_err());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other).unwrap_err().contains("version 2"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0xff;
        assert!(decode(&flipped).is_err());
    }

    #[test]
    fn a_unit_larger_than_the_log_takes_is_refused() {
        let stops = (0..20_000)
            .map(|i| StopPlan::new(i, LatLon::new(43.73, 7.42)))
            .collect();
        let route = Command::AssignRoute { vehicle: 1, stops };
        assert!(encode(&[route], 0.0).unwrap_err().contains("more than"));
    }
}
