//! One connection's standing after HELLO: who it acts for, the protocol
//! version agreed, how it names things (its fleet's names, [`crate::ids`]),
//! and its ping aliases (version 2: a ping record carries a number the
//! client bound to a vehicle's name with BIND, so records stay 32 bytes).

use std::collections::HashMap;
use std::sync::RwLock;

use lastmile_engine::fleet::{StopId, VehicleId};

use std::sync::Arc;

use lastmile_node::dispatch::{self, Save};

use super::Shared;
use crate::auth::Principal;
use crate::ids::Kind;
use crate::protocol::{ErrorCode, Version};

/// An ERROR's code and message.
pub type Refusal = (ErrorCode, String);

pub struct Session {
    pub who: Principal,
    pub version: Version,
    aliases: RwLock<HashMap<u64, VehicleId>>,
}

/// Aliases one connection may hold.
pub const MAX_ALIASES: usize = 1_000_000;

impl Session {
    pub fn new(who: Principal, version: Version) -> Self {
        Self {
            who,
            version,
            aliases: RwLock::default(),
        }
    }

    /// The engine id of a vehicle the caller names (it must exist by that name).
    pub fn vehicle_of(&self, shared: &Shared, name: &str) -> Result<VehicleId, Refusal> {
        shared.vehicle_of(&self.who, name).map_err(wire)
    }

    /// The engine id of a stop the caller names (it must exist by that name).
    pub fn stop_of(&self, shared: &Shared, name: &str) -> Result<StopId, Refusal> {
        shared.stop_of(&self.who, name).map_err(wire)
    }

    /// The engine id of a name, given one if new (see [`create_all`](Self::create_all)).
    pub async fn create(
        &self,
        shared: &Arc<Shared>,
        kind: Kind,
        name: &str,
        save: Save,
    ) -> Result<u64, Refusal> {
        Ok(self.create_all(shared, [(kind, name)], save).await?[0])
    }

    /// The engine ids of names, new ones given ids and written to the
    /// store together, durably as `save` says, before this returns.
    pub async fn create_all<'a>(
        &self,
        shared: &Arc<Shared>,
        names: impl IntoIterator<Item = (Kind, &'a str)>,
        save: Save,
    ) -> Result<Vec<u64>, Refusal> {
        match save {
            Save::WithCommand => shared.create_names(&self.who, names, save).map_err(wire),
            Save::Now => {
                // A synced write: off the async threads.
                let names: Vec<(Kind, String)> =
                    names.into_iter().map(|(k, n)| (k, n.to_string())).collect();
                let (node, who) = (shared.node.clone(), self.who.clone());
                tokio::task::spawn_blocking(move || {
                    node.create_names(&who, names.iter().map(|(k, n)| (*k, n.as_str())), save)
                })
                .await
                .map_err(|e| (ErrorCode::Internal, e.to_string()))?
                .map_err(wire)
            }
        }
    }

    /// How the caller sees the engine id `id`: its fleet's name for it
    /// (numbers only in version 1).
    pub fn name(&self, shared: &Shared, kind: Kind, id: u64) -> String {
        shared.name_of(&self.who, kind, id, self.version == Version::V1)
    }

    /// How this connection's ping records name vehicles, for one batch
    /// (the alias table is read-locked once per batch, not per record).
    pub fn ping_vehicles<'a>(&'a self, shared: &'a Shared) -> PingVehicles<'a> {
        match self.version {
            Version::V1 => PingVehicles::Numbers {
                shared,
                scope: shared.auth.scope(&self.who),
            },
            Version::V2 | Version::V3 | Version::V4 => {
                PingVehicles::Aliases(self.aliases.read().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }

    /// Binds aliases; refused whole if the connection would hold too many.
    pub fn bind(&self, pairs: &[(u64, VehicleId)]) -> Result<(), Refusal> {
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        let added = pairs
            .iter()
            .filter(|(a, _)| !aliases.contains_key(a))
            .count();
        if aliases.len() + added > MAX_ALIASES {
            return Err((
                ErrorCode::LimitExceeded,
                format!("a connection holds at most {MAX_ALIASES} ping aliases"),
            ));
        }
        aliases.extend(pairs.iter().copied());
        Ok(())
    }
}

/// The vehicles a batch's records may name.
pub enum PingVehicles<'a> {
    /// Version 1: the number as a name of the caller's fleet (which pings
    /// never make).
    Numbers {
        shared: &'a Shared,
        scope: crate::ids::Scope<'a>,
    },
    /// Version 2: the aliases BIND set.
    Aliases(std::sync::RwLockReadGuard<'a, HashMap<u64, VehicleId>>),
}

impl PingVehicles<'_> {
    /// The vehicle a record's `vehicle` field stands for, if any.
    pub fn get(&self, wire: u64) -> Option<VehicleId> {
        match self {
            Self::Numbers { shared, scope } => {
                if scope.reaches(Kind::Vehicle, wire) {
                    return Some(wire);
                }
                let name = crate::protocol::records::v1_name(wire);
                shared.ids.find(scope, Kind::Vehicle, &name).ok().flatten()
            }
            Self::Aliases(aliases) => aliases.get(&wire).copied(),
        }
    }
}

/// The answer about a vehicle the caller's fleet does not have.
pub fn no_vehicle(name: &str) -> Refusal {
    wire(dispatch::no_vehicle(name))
}

/// A refusal of the node's as a QUIC ERROR's code and message.
pub fn wire(r: dispatch::Refusal) -> Refusal {
    (ErrorCode::of_refusal(r.kind), r.message)
}
