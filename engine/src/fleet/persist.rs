//! The engine's durable state: checkpoints (every shard's vehicles, the
//! registry and the learnt traffic, taken at one point of the command
//! order) written and restored, and the journal's commands replayed
//! after a restore.

use std::ops::Range;
use std::sync::Arc;

use crossbeam_channel::{Receiver, bounded};

use super::checkpoint::{self, Checkpoint, CheckpointError};
use super::fleet_zones::ZoneBook;
use super::learning::customize;
use super::registry::{StopRecord, apply};
use super::shard::{self, Msg};
use super::{Command, Engine, StopId, VehicleId, partition, shard_of};

/// What [`Engine::write_checkpoint`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Saving {
    pub bytes: u64,
    pub vehicles: usize,
    /// Vehicles that could not be serialised (left out).
    pub failed: usize,
    /// The last journalled command it includes.
    pub journal_seq: u64,
}

/// What [`Engine::restore`] put back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    pub vehicles: usize,
    pub stops: usize,
    /// Zones of every fleet.
    pub zones: usize,
    /// Vehicles whose record did not decode, and zones this build refuses
    /// (the rest are restored).
    pub failed: Vec<String>,
    /// Edges of learnt traffic the new metric carries.
    pub traffic_edges: usize,
    /// The event time the engine had reached (its last tick): a server's
    /// clock resumes from here rather than jumping to the wall clock.
    pub event_time: f64,
}

impl Engine {
    /// Re-applies commands read back from the journal after a restore (those
    /// after the checkpoint's [`Checkpoint::journal_seq`], in order). Their
    /// events were published before the restart and are not repeated. A
    /// command the registry no longer accepts is skipped; the number of those
    /// is returned.
    pub fn replay(&self, cmds: &[Command], time: f64) -> usize {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let n = self.shards.len();
        let mut skipped = 0;
        for cmd in cmds {
            let valid = match cmd {
                // The second half of a reassignment names a stop that the
                // first half has just freed; its plan was checked when added.
                Command::AddStop { stop, .. } => !reg.stops.contains_key(&stop.id),
                c => self.validate(&reg, c).is_ok(),
            };
            if !valid {
                skipped += 1;
                continue;
            }
            apply(&mut reg, cmd, time);
            let Some(v) = cmd.vehicle() else {
                self.send_zones(&mut reg, cmd);
                continue;
            };
            let msg = Msg::Replay {
                cmd: cmd.clone(),
                time,
            };
            self.send_control(shard_of(v, self.partitions, n), msg);
        }
        skipped
    }

    /// Notes the journal position a restored engine continues from.
    pub fn set_journal_seq(&self, seq: u64) {
        self.journal_seq
            .store(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a consistent checkpoint in memory (for tests and small fleets;
    /// a server streams it to disk with [`Engine::write_checkpoint`]).
    pub fn checkpoint(&self) -> Checkpoint {
        let mut blob = Vec::new();
        let (meta, vehicles, _) = self
            .save(|chunk| {
                blob.extend_from_slice(chunk);
                Ok(())
            })
            .expect("writing to memory does not fail");
        Checkpoint {
            meta,
            records: checkpoint::RecordsBuf::new(blob),
            vehicles,
        }
    }

    /// Streams a consistent checkpoint in the file format to `w`, holding
    /// no more than a few chunks of it in memory at a time.
    pub fn write_checkpoint(&self, w: &mut impl std::io::Write) -> std::io::Result<Saving> {
        let mut out = checkpoint::Writer::start(w)?;
        let (meta, vehicles, failed) = self.save(|chunk| out.records(chunk))?;
        Ok(Saving {
            bytes: out.finish(&meta, vehicles)?,
            vehicles,
            failed,
            journal_seq: meta.journal_seq,
        })
    }

    /// Takes a consistent checkpoint: every shard saves its vehicles at the
    /// same point of the command order (commands are held meanwhile, pings
    /// are not), with the registry and the learnt traffic as of then. The
    /// shards pause their pings while they serialise, handing their records
    /// to `records` in chunks; an error there abandons the checkpoint.
    pub(super) fn save(
        &self,
        mut records: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<(checkpoint::Meta, usize, usize)> {
        use std::sync::atomic::Ordering::Relaxed;
        // A few chunks per shard in flight: enough to keep the shards
        // serialising while one is written.
        let (parts_tx, parts) = bounded::<shard::Saved>(2 * self.shards.len());
        let (journal_seq, stops, routes, zones) = {
            let reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Checkpoint(parts_tx.clone()));
            }
            let stops: Vec<(StopId, StopRecord)> =
                reg.stops.iter().map(|(k, v)| (*k, v.clone())).collect();
            let routes: Vec<(VehicleId, Vec<StopId>)> =
                reg.routes.iter().map(|(k, v)| (*k, v.clone())).collect();
            let zones = reg.zones.all();
            (self.journal_seq.load(Relaxed), stops, routes, zones)
        };
        // Only the shards hold senders now: the stream ends when all are done.
        drop(parts_tx);
        let (traffic, errors, metric_version, published_at, installed, pending, event_time) = {
            let co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            let installed: Vec<(u32, u32)> = (0..self.graph.num_edges() as u32)
                .filter_map(|e| {
                    let w = co.current.edge_weight(e);
                    (w != self.graph.travel_time_ms(e)).then_some((e, w))
                })
                .collect();
            let pending = if co.job.is_some() {
                co.job_changes.clone()
            } else {
                Vec::new()
            };
            (
                co.traffic.learnt(),
                [co.errors.clone(), co.errors_published.clone()],
                co.stats.metric_updates,
                co.published_at,
                installed,
                pending,
                co.last_tick,
            )
        };
        let (mut vehicles, mut failed) = (0, 0);
        let (mut observations, mut outcomes) = (Vec::new(), Vec::new());
        for part in &parts {
            match part {
                shard::Saved::Records(chunk) => records(&chunk)?,
                shard::Saved::Done(partition::SavedRest {
                    observations: mut o,
                    outcomes: mut e,
                    vehicles: v,
                    failed: f,
                }) => {
                    vehicles += v;
                    failed += f;
                    observations.append(&mut o);
                    outcomes.append(&mut e);
                }
            }
        }
        let meta = checkpoint::Meta {
            graph_fingerprint: self.graph.fingerprint(),
            journal_seq,
            event_time,
            metric_version,
            published_at,
            installed,
            pending,
            observations,
            outcomes,
            errors,
            stops,
            routes,
            zones,
            traffic,
        };
        Ok((meta, vehicles, failed))
    }

    /// Puts a checkpoint's state into this freshly started engine: the
    /// registry, the learnt traffic (and the metric it implies), and every
    /// vehicle, published at once so queries answer before the next ping.
    /// Refused whole if the checkpoint was taken on another graph.
    pub fn restore(&self, ckpt: Checkpoint) -> Result<Restored, CheckpointError> {
        if ckpt.meta.graph_fingerprint != self.graph.fingerprint() {
            return Err(CheckpointError::GraphMismatch);
        }
        let meta = ckpt.meta;
        let mut report = Restored {
            stops: meta.stops.len(),
            ..Restored::default()
        };
        {
            let mut co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            if !co.traffic.restore(&meta.traffic) {
                return Err(CheckpointError::Traffic);
            }
            co.published_at = meta.published_at;
            co.last_tick = meta.event_time;
            report.event_time = meta.event_time;
            report.traffic_edges = meta.installed.len();
            if !meta.installed.is_empty() {
                let done = customize(&self.graph, &co.current, meta.installed);
                co.current = done.metric.clone();
                for i in 0..self.shards.len() {
                    self.send_control(i, Msg::Metric(done.metric.clone()));
                }
            }
            // A customization that was under way is under way again, and
            // goes in at the next tick as it would have.
            if !meta.pending.is_empty() {
                self.start_customization(&mut co, meta.pending);
            }
            co.stats.metric_updates = meta.metric_version;
            let [errors, published] = meta.errors;
            co.errors = errors;
            co.errors_published = published;
            let windows = Arc::new(
                co.errors_published
                    .publish(&self.config.eta.window_params()),
            );
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Windows(windows.clone()));
            }
        }
        {
            let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
            reg.stops = meta.stops.into_iter().collect();
            reg.routes = meta.routes.into_iter().collect();
            let (zones, mut refused) = ZoneBook::restore(meta.zones);
            report.zones = zones.count();
            report.failed.append(&mut refused);
            reg.zones = zones;
            let margin = self.config.detect.zone_margin_m;
            let sets = Arc::new(reg.zones.publish(&reg.zone_sets, None, margin));
            reg.zone_sets = sets.clone();
            for i in 0..self.shards.len() {
                self.send_control(i, Msg::Zones(sets.clone()));
            }
        }
        self.set_journal_seq(meta.journal_seq);
        // Records go to the shard each vehicle lives on now: where each
        // one is in the shared buffer, not a copy.
        let n = self.shards.len();
        let mut parts: Vec<Vec<Range<usize>>> = vec![Vec::new(); n];
        let all = ckpt.records.as_slice();
        for r in checkpoint::Records(all) {
            let (id, record) = r?;
            let at = record.as_ptr() as usize - all.as_ptr() as usize;
            parts[shard_of(id, self.partitions, n)].push(at..at + record.len());
        }
        // The next tick sorts observations, so which shard holds them is moot.
        let mut observations = Some(meta.observations);
        let mut outcomes = Some(meta.outcomes);
        let replies: Vec<Receiver<(usize, Vec<String>)>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, ranges)| {
                let (tx, rx) = bounded(1);
                self.send_control(
                    i,
                    Msg::Restore {
                        records: ckpt.records.clone(),
                        ranges,
                        observations: observations.take().unwrap_or_default(),
                        outcomes: outcomes.take().unwrap_or_default(),
                        metric_version: meta.metric_version,
                        reply: tx,
                    },
                );
                rx
            })
            .collect();
        for r in replies {
            if let Ok((n, mut errors)) = r.recv() {
                report.vehicles += n;
                report.failed.append(&mut errors);
            }
        }
        Ok(report)
    }
}
