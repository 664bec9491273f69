//! Queries, answered without entering a shard: vehicles' snapshots, stops
//! as the registry and their vehicle's snapshot show them, the live index
//! (nearest, in a box), the fleets' zones, and the engine's figures.

use std::sync::Mutex;

use lastmile_roadgraph::LatLon;

use super::latency::Histogram;
use super::snapshot::{self, SnapshotCell, StopEta, VehicleSnapshot};
use super::{Engine, EngineStats, PathPiece, StopBrief, StopId, StopView, VehicleId};
use crate::live_index::Found;

impl Engine {
    /// A vehicle's latest state (from its owner, in a cluster, when this
    /// engine does not hold it).
    pub fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        self.local_vehicle(id).or_else(|| self.remote_vehicle(id))
    }

    /// Reads a vehicle's latest state in place (no copy; a copy from its
    /// owner, in a cluster, when this engine does not hold it).
    pub fn with_vehicle<R>(
        &self,
        id: VehicleId,
        f: impl FnOnce(&VehicleSnapshot) -> R,
    ) -> Option<R> {
        let Some(cell) = self.snapshots.get(&id).map(|c| c.clone()) else {
            return self.remote_vehicle(id).map(|v| f(&v));
        };
        let snapshot = snapshot::read(&cell);
        Some(f(&snapshot))
    }

    /// Every vehicle's id (any order).
    pub fn vehicle_ids(&self) -> Vec<VehicleId> {
        self.snapshots.iter().map(|e| *e.key()).collect()
    }

    /// One stop: its record, ETA and "stops before yours", and where its vehicle is.
    pub fn stop(&self, id: StopId) -> Option<StopView> {
        let record = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            reg.stops.get(&id)?.clone()
        };
        let (eta, vehicle_pos, vehicle_time) = self
            .with_vehicle(record.vehicle, |v| {
                (v.stop(id).copied(), v.pos, v.matched_time)
            })
            .unwrap_or((None, LatLon::new(f64::NAN, f64::NAN), f64::NAN));
        Some(StopView {
            record,
            eta,
            vehicle_pos,
            vehicle_time,
        })
    }

    /// Where each of `stops` is planned and the stars its customer gave
    /// (`None` for a stop the registry no longer holds), under one read of
    /// the registry.
    pub fn stop_briefs(&self, stops: impl IntoIterator<Item = StopId>) -> Vec<Option<StopBrief>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        stops
            .into_iter()
            .map(|s| {
                reg.stops.get(&s).map(|r| StopBrief {
                    pos: r.plan.pos,
                    stars: r.rating.as_ref().map(|r| r.stars),
                })
            })
            .collect()
    }

    /// Every stop the registry holds, with its vehicle (any order).
    pub fn stop_owners(&self) -> Vec<(StopId, VehicleId)> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.stops.iter().map(|(s, r)| (*s, r.vehicle)).collect()
    }

    /// The vehicle's open stops in route order, as the registry has them.
    pub fn route(&self, vehicle: VehicleId) -> Vec<StopId> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.routes.get(&vehicle).cloned().unwrap_or_default()
    }

    /// The `k` vehicles nearest to `p` (as of the last index refresh).
    pub fn nearest(&self, p: LatLon, k: usize, out: &mut Vec<Found>) {
        self.local_nearest(p, k, out);
        self.remote_nearest(p, k, out);
    }

    /// Vehicles in `[min_lon, min_lat, max_lon, max_lat]` (in a cluster,
    /// every node's).
    pub fn in_box(&self, b: [f64; 4], out: &mut Vec<Found>) {
        self.local_in_box(b, out);
        self.remote_in_box(b, out);
    }

    /// Counters and latency so far.
    pub fn stats(&self) -> EngineStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = self
            .coordinator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone();
        for h in &self.shards {
            let r = h.report.lock().unwrap_or_else(|p| p.into_inner());
            s.shards.add(&r.counters);
            s.latency.merge_from(&mut r.latency.clone());
        }
        s.submitted = self.submitted.load(Relaxed);
        s.shed = self.shed.load(Relaxed);
        s.queue_full = self.queue_full.load(Relaxed);
        s
    }

    /// Forgets the latency recorded so far (a benchmark's warm-up).
    pub fn reset_latency(&self) {
        for h in &self.shards {
            h.report.lock().unwrap_or_else(|p| p.into_inner()).latency = Histogram::default();
        }
    }

    /// Bytes of live state per vehicle: the shards' vehicles (as of the last
    /// tick or sync), their snapshots and their live-index entries.
    pub fn bytes_per_vehicle(&self) -> f64 {
        let vehicles = self.snapshots.len().max(1);
        let shard_bytes: u64 = self
            .shards
            .iter()
            .map(|h| {
                h.report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counters
                    .vehicle_bytes
            })
            .sum();
        let snap_bytes: usize = self
            .snapshots
            .iter()
            .map(|e| {
                std::mem::size_of::<(VehicleId, SnapshotCell)>()
                    + std::mem::size_of::<Mutex<VehicleSnapshot>>()
                    + 16
                    + snapshot::read(e.value()).stops.capacity() * std::mem::size_of::<StopEta>()
            })
            .sum();
        let live =
            self.live.len() * (std::mem::size_of::<crate::live_index::LivePosition>() + 8 + 48);
        (shard_bytes as f64 + snap_bytes as f64 + live as f64) / vehicles as f64
    }

    /// Moves the finalised path pieces gathered so far (as of the last
    /// tick; each vehicle's in time order) into `out`. Empty unless
    /// [`FleetConfig::history`] is on.
    pub fn take_history(&self, out: &mut Vec<PathPiece>) {
        out.append(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Adds gathered pieces for [`Self::take_history`] (when history is
    /// on), the oldest dropped and counted beyond the bound.
    pub(crate) fn keep_history(&self, pieces: &mut Vec<PathPiece>) {
        if !self.config.history || pieces.is_empty() {
            return;
        }
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.append(pieces);
        let cap = self.config.max_history_pieces;
        if h.len() > cap {
            let extra = h.len() - cap;
            h.drain(..extra);
            drop(h);
            let mut co = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
            co.stats.history_dropped += extra as u64;
        }
    }

    /// Rebuilds the live-vehicle R-tree from the latest positions (call it
    /// about once a second for nearest/box answers that fresh).
    pub fn refresh_index(&self, now: f64) {
        let positions: Vec<_> = self
            .snapshots
            .iter()
            .filter_map(|e| {
                snapshot::read(e.value())
                    .live_position()
                    .map(|p| (*e.key(), p))
            })
            .collect();
        self.live.rebuild(now, positions);
    }

    // ---------------------------------------------------------------- queries

    /// A fleet's zones as given (by id).
    pub fn zones(&self, fleet: u32) -> Vec<crate::zones::ZoneDef> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.zones.of_fleet(fleet).cloned().collect()
    }

    /// The fleet `vehicle` belongs to, as zones go (see [`fleet_zones`]).
    pub fn fleet_of(&self, vehicle: VehicleId) -> u32 {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.zone_sets.fleet_of(vehicle)
    }
}
