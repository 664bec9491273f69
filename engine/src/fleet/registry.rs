//! The command registry: which stops exist, whose they are and what
//! became of them, every vehicle's open route, and every fleet's zones.
//! Commands are checked against it before they are journalled and sent
//! to a shard, and applied to it in journal order.

use std::collections::HashMap;
use std::sync::Arc;

use super::fleet_zones::{FleetZones, ZoneBook};
use super::stops::{Command, Rating, StopOutcome, StopPlan};
use super::{CommandError, Engine, StopId, VehicleId, legs, upkeep};

/// A stop as the registry knows it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct StopRecord {
    pub vehicle: VehicleId,
    pub plan: StopPlan,
    pub outcome: Option<StopOutcome>,
    /// When it was completed or failed (event time).
    pub closed_at: Option<f64>,
    /// The customer's rating, once given (completed stops only).
    pub rating: Option<Rating>,
}

/// The authority on which stops exist and who has them.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) stops: HashMap<StopId, StopRecord>,
    /// Each vehicle's open stops, in route order.
    pub(super) routes: HashMap<VehicleId, Vec<StopId>>,
    /// Every fleet's zones, and what the shards were last sent of them.
    pub(super) zones: ZoneBook,
    pub(super) zone_sets: Arc<FleetZones>,
    /// With a shared command log: the position of the last unit recorded.
    pub(super) log_position: u64,
}

/// Records an accepted command in the registry.
pub(super) fn apply(reg: &mut Registry, cmd: &Command, time: f64) {
    match cmd {
        Command::AssignRoute { vehicle, stops } => {
            let old = reg.routes.remove(vehicle).unwrap_or_default();
            for id in old {
                reg.stops.remove(&id);
            }
            for s in stops {
                reg.stops.insert(
                    s.id,
                    StopRecord {
                        vehicle: *vehicle,
                        plan: s.clone(),
                        outcome: None,
                        closed_at: None,
                        rating: None,
                    },
                );
            }
            reg.routes
                .insert(*vehicle, stops.iter().map(|s| s.id).collect());
        }
        Command::AddStop {
            vehicle,
            stop,
            index,
        } => {
            reg.stops.insert(
                stop.id,
                StopRecord {
                    vehicle: *vehicle,
                    plan: stop.clone(),
                    outcome: None,
                    closed_at: None,
                    rating: None,
                },
            );
            let route = reg.routes.entry(*vehicle).or_default();
            let at = index.unwrap_or(route.len()).min(route.len());
            route.insert(at, stop.id);
        }
        Command::RemoveStop { vehicle, stop } => {
            reg.stops.remove(stop);
            if let Some(r) = reg.routes.get_mut(vehicle) {
                r.retain(|s| s != stop);
            }
        }
        Command::Reorder { vehicle, order } => {
            reg.routes.insert(*vehicle, order.clone());
        }
        Command::Complete {
            vehicle,
            stop,
            proof,
        } => {
            close(
                reg,
                *vehicle,
                *stop,
                StopOutcome::Completed(proof.clone()),
                time,
            );
        }
        Command::Fail {
            vehicle,
            stop,
            reason,
        } => {
            close(
                reg,
                *vehicle,
                *stop,
                StopOutcome::Failed {
                    reason: reason.clone(),
                },
                time,
            );
        }
        Command::Rate { stop, rating, .. } => {
            if let Some(r) = reg.stops.get_mut(stop) {
                r.rating = Some(rating.clone());
            }
        }
        Command::PutZones { .. } | Command::RemoveZones { .. } => {
            reg.zones.apply(cmd);
        }
        // The vehicle's own counters: its shard's.
        Command::Upkeep { .. } => {}
    }
}

fn close(reg: &mut Registry, vehicle: VehicleId, stop: StopId, outcome: StopOutcome, time: f64) {
    if let Some(r) = reg.stops.get_mut(&stop) {
        r.outcome = Some(outcome);
        r.closed_at = Some(time);
    }
    if let Some(r) = reg.routes.get_mut(&vehicle) {
        r.retain(|s| *s != stop);
    }
}

impl Engine {
    pub(super) fn validate(&self, reg: &Registry, cmd: &Command) -> Result<(), CommandError> {
        let owned_open = |stop: StopId, vehicle: VehicleId| -> Result<(), CommandError> {
            let r = reg
                .stops
                .get(&stop)
                .ok_or(CommandError::UnknownStop(stop))?;
            if r.vehicle != vehicle {
                return Err(CommandError::WrongVehicle {
                    stop,
                    vehicle: r.vehicle,
                });
            }
            if r.outcome.is_some() {
                return Err(CommandError::StopClosed(stop));
            }
            Ok(())
        };
        let snaps = |plan: &StopPlan| -> Result<(), CommandError> {
            let mut near = Vec::new();
            let max_m = self.config.eta.stop_snap_m;
            legs::StopPlace::snap(&self.graph, plan.pos, max_m, &mut near)
                .map(|_| ())
                .ok_or(CommandError::OffRoad {
                    stop: plan.id,
                    max_m,
                })
        };
        match cmd {
            Command::AssignRoute { vehicle, stops } => {
                let mut seen = std::collections::HashSet::new();
                for s in stops {
                    if !seen.insert(s.id) {
                        return Err(CommandError::DuplicateStop(s.id));
                    }
                    if let Some(r) = reg.stops.get(&s.id) {
                        if r.vehicle != *vehicle {
                            return Err(CommandError::WrongVehicle {
                                stop: s.id,
                                vehicle: r.vehicle,
                            });
                        }
                        if r.outcome.is_some() {
                            return Err(CommandError::StopClosed(s.id));
                        }
                    }
                    snaps(s)?;
                }
                Ok(())
            }
            Command::AddStop { stop, .. } => {
                if reg.stops.contains_key(&stop.id) {
                    return Err(CommandError::DuplicateStop(stop.id));
                }
                snaps(stop)
            }
            Command::RemoveStop { vehicle, stop } => owned_open(*stop, *vehicle),
            Command::Complete { vehicle, stop, .. } | Command::Fail { vehicle, stop, .. } => {
                owned_open(*stop, *vehicle)
            }
            Command::Rate {
                vehicle,
                stop,
                rating,
            } => {
                let r = reg
                    .stops
                    .get(stop)
                    .filter(|r| r.vehicle == *vehicle)
                    .ok_or(CommandError::UnknownStop(*stop))?;
                if !matches!(r.outcome, Some(StopOutcome::Completed(_))) {
                    Err(CommandError::NotCompleted(*stop))
                } else if r.rating.is_some() {
                    Err(CommandError::AlreadyRated(*stop))
                } else if !rating.is_valid() {
                    Err(CommandError::BadRating)
                } else {
                    Ok(())
                }
            }
            Command::Reorder { vehicle, order } => {
                let mut want = reg.routes.get(vehicle).cloned().unwrap_or_default();
                let mut got = order.clone();
                want.sort_unstable();
                got.sort_unstable();
                if want == got {
                    Ok(())
                } else {
                    Err(CommandError::BadOrder)
                }
            }
            Command::PutZones { .. } | Command::RemoveZones { .. } => reg.zones.validate(cmd),
            Command::Upkeep { odometer_m, .. } => match odometer_m {
                Some(m) if !m.is_finite() => Err(CommandError::NotFinite),
                Some(m) if !(0.0..=upkeep::MAX_ODOMETER_M).contains(m) => {
                    Err(CommandError::BadOdometer)
                }
                _ => Ok(()),
            },
        }
    }
}
