//! Vehicles another engine drives: in a cluster each node's engine holds
//! the vehicles of the partitions it owns, and a query for any other
//! vehicle is asked of its owner through a [`RemoteVehicles`] the cluster
//! provides, so a client may ask any node; a spatial query ("nearest", "in
//! a box") asks every other node and merges their answers with its own.

use std::sync::Arc;

use lastmile_roadgraph::LatLon;

use super::snapshot::VehicleSnapshot;
use super::{Engine, VehicleId};
use crate::live_index::Found;

/// Where a vehicle this engine does not hold is looked up.
pub trait RemoteVehicles: Send + Sync {
    /// The vehicle's latest state from the engine that drives it (`None`:
    /// none does, or its owner did not answer in time). Blocks for the
    /// round trip.
    fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot>;

    /// The `k` vehicles nearest to `p` that each other engine holds.
    fn nearest(&self, p: LatLon, k: usize) -> Vec<Found>;

    /// The vehicles each other engine holds in `[min_lon, min_lat,
    /// max_lon, max_lat]`.
    fn in_box(&self, b: [f64; 4]) -> Vec<Found>;
}

impl Engine {
    /// Looks vehicles this engine does not hold up through `remote` from
    /// now on (once; false if one was set already).
    pub fn set_remote_vehicles(&self, remote: Arc<dyn RemoteVehicles>) -> bool {
        self.remote.set(remote).is_ok()
    }

    /// A vehicle's latest state if this engine holds it (never asking
    /// another): what a node answers another node with.
    pub fn local_vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        let cell = self.snapshots.get(&id)?.clone();
        let snapshot = super::snapshot::read(&cell).clone();
        Some(snapshot)
    }

    /// The `k` vehicles nearest to `p` that this engine holds (never
    /// asking another).
    pub fn local_nearest(&self, p: LatLon, k: usize, out: &mut Vec<Found>) {
        self.live.nearest(p, k, out);
    }

    /// The vehicles this engine holds in the box (never asking another).
    pub fn local_in_box(&self, b: [f64; 4], out: &mut Vec<Found>) {
        self.live.in_box(b, out);
    }

    /// Adds the other engines' nearest to `out` and keeps the `k` nearest.
    pub(super) fn remote_nearest(&self, p: LatLon, k: usize, out: &mut Vec<Found>) {
        let Some(remote) = self.remote.get() else {
            return;
        };
        out.extend(remote.nearest(p, k));
        out.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        out.truncate(k);
    }

    /// Adds the other engines' vehicles in the box to `out`.
    pub(super) fn remote_in_box(&self, b: [f64; 4], out: &mut Vec<Found>) {
        if let Some(remote) = self.remote.get() {
            out.extend(remote.in_box(b));
        }
    }

    /// A vehicle this engine does not hold, from its owner.
    pub(super) fn remote_vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        self.remote.get()?.vehicle(id)
    }
}
