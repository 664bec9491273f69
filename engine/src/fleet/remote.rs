//! Vehicles another engine drives: in a cluster each node's engine holds
//! the vehicles of the partitions it owns, and a query for any other
//! vehicle is asked of its owner through a [`RemoteVehicles`] the cluster
//! provides, so a client may ask any node.

use std::sync::Arc;

use super::snapshot::VehicleSnapshot;
use super::{Engine, VehicleId};

/// Where a vehicle this engine does not hold is looked up.
pub trait RemoteVehicles: Send + Sync {
    /// The vehicle's latest state from the engine that drives it (`None`:
    /// none does, or its owner did not answer in time). Blocks for the
    /// round trip.
    fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot>;
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

    /// A vehicle this engine does not hold, from its owner.
    pub(super) fn remote_vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        self.remote.get()?.vehicle(id)
    }
}
