//! Every fleet's zones and rules: the definitions the registry keeps (what the
//! journal and the checkpoint hold, changed by [`Command::PutZones`] and
//! [`Command::RemoveZones`]) and the indexed sets the shards read. A
//! change rebuilds its fleet's set and reaches every shard as one message
//! in command order, so every shard count sees the same zones at the same
//! pings.
//!
//! A vehicle's fleet is the slot its allocated id carries, or, for a
//! vehicle numbered inside a fleet's configured ranges, that fleet's
//! ([`FleetConfig::vehicle_fleets`](super::FleetConfig)), or for any other
//! number `unranged_fleet`: the zones of one fleet are never judged for
//! another's vehicles. The fleets' configured rules (working hours,
//! service intervals) are read through the same lookup.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::upkeep::ServiceInterval;
use super::window::fleet_slot;
use super::{Command, CommandError, FleetConfig, VehicleId};
use crate::zones::{Outline, WorkingHours, ZoneDef, ZoneId, ZoneSet};

/// Zones one fleet may hold at most, and points in their outlines (a
/// circle is one): the memory a fleet's zones take is bounded by these
/// (about 50 bytes a point, indexed).
pub const MAX_ZONES_PER_FLEET: usize = 100_000;
pub const MAX_POINTS_PER_FLEET: usize = 1_000_000;

/// Points in a zone's outline.
fn points(z: &ZoneDef) -> usize {
    match &z.outline {
        Outline::Circle { .. } => 1,
        Outline::Polygon { rings } => rings.iter().map(Vec::len).sum(),
    }
}

/// What the shards read: each fleet's indexed zones.
#[derive(Debug, Default)]
pub struct FleetZones {
    sets: HashMap<u32, Arc<ZoneSet>>,
    /// Configured vehicle ranges and their fleets' slots, sorted.
    vehicle_fleets: Arc<[([u64; 2], u32)]>,
    unranged: u32,
    /// Fleets' working hours and service intervals, as configured.
    hours: Arc<HashMap<u32, WorkingHours>>,
    service: Arc<HashMap<u32, ServiceInterval>>,
}

impl FleetZones {
    /// No zones yet; the fleets of numbered vehicles and their working
    /// hours as configured.
    pub fn new(config: &FleetConfig) -> Self {
        let mut ranges = config.vehicle_fleets.clone();
        ranges.sort_unstable();
        Self {
            sets: HashMap::new(),
            vehicle_fleets: ranges.into(),
            unranged: config.unranged_fleet,
            hours: Arc::new(config.working_hours.iter().cloned().collect()),
            service: Arc::new(config.service.iter().copied().collect()),
        }
    }

    /// The working hours of `vehicle`'s fleet, if it has any.
    pub fn hours_of(&self, vehicle: VehicleId) -> Option<&WorkingHours> {
        if self.hours.is_empty() {
            return None;
        }
        self.hours.get(&self.fleet_of(vehicle))
    }

    /// The service interval of `vehicle`'s fleet, if it has one.
    pub fn service_of(&self, vehicle: VehicleId) -> Option<&ServiceInterval> {
        if self.service.is_empty() {
            return None;
        }
        self.service.get(&self.fleet_of(vehicle))
    }

    /// The fleet `vehicle` belongs to.
    pub fn fleet_of(&self, vehicle: VehicleId) -> u32 {
        fleet_of(&self.vehicle_fleets, self.unranged, vehicle)
    }

    /// The zones `vehicle`'s fleet has drawn, if any.
    pub fn of_vehicle(&self, vehicle: VehicleId) -> Option<&ZoneSet> {
        if self.sets.is_empty() {
            return None;
        }
        self.sets.get(&self.fleet_of(vehicle)).map(|s| &**s)
    }
}

/// The fleet of `vehicle`, given the configured ranges (sorted by start)
/// and the fleet of numbers outside them.
pub fn fleet_of(ranges: &[([u64; 2], u32)], unranged: u32, vehicle: VehicleId) -> u32 {
    let slot = fleet_slot(vehicle);
    if slot != 0 {
        return slot;
    }
    let i = ranges.partition_point(|(r, _)| r[1] < vehicle);
    match ranges.get(i) {
        Some(&(r, fleet)) if r[0] <= vehicle => fleet,
        _ => unranged,
    }
}

/// The registry's part: every fleet's zone definitions, by id.
#[derive(Debug, Default)]
pub(crate) struct ZoneBook {
    defs: HashMap<u32, BTreeMap<ZoneId, ZoneDef>>,
}

impl ZoneBook {
    /// Whether `cmd` (a zone command) may be applied.
    pub fn validate(&self, cmd: &Command) -> Result<(), CommandError> {
        match cmd {
            Command::PutZones { fleet, zones } => {
                let have = self.defs.get(fleet);
                let mut seen = std::collections::HashSet::new();
                for z in zones {
                    if !seen.insert(z.id) {
                        return Err(CommandError::DuplicateZone(z.id));
                    }
                    z.zone().map_err(|e| CommandError::BadZone {
                        zone: z.id,
                        why: e.to_string(),
                    })?;
                }
                let new = seen
                    .iter()
                    .filter(|id| !have.is_some_and(|h| h.contains_key(id)))
                    .count();
                // Points after the command: the zones it keeps, and its own.
                let kept: usize = have.map_or(0, |h| {
                    h.values()
                        .filter(|z| !seen.contains(&z.id))
                        .map(points)
                        .sum()
                });
                let total = kept + zones.iter().map(points).sum::<usize>();
                if have.map_or(0, BTreeMap::len) + new > MAX_ZONES_PER_FLEET
                    || total > MAX_POINTS_PER_FLEET
                {
                    return Err(CommandError::TooManyZones {
                        zones: MAX_ZONES_PER_FLEET,
                        points: MAX_POINTS_PER_FLEET,
                    });
                }
                Ok(())
            }
            Command::RemoveZones { fleet, zones } => {
                let have = self.defs.get(fleet);
                match zones
                    .iter()
                    .find(|id| !have.is_some_and(|h| h.contains_key(id)))
                {
                    Some(&id) => Err(CommandError::UnknownZone(id)),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Applies a validated zone command; returns the fleet whose zones
    /// changed.
    pub fn apply(&mut self, cmd: &Command) -> Option<u32> {
        match cmd {
            Command::PutZones { fleet, zones } => {
                let defs = self.defs.entry(*fleet).or_default();
                for z in zones {
                    defs.insert(z.id, z.clone());
                }
                Some(*fleet)
            }
            Command::RemoveZones { fleet, zones } => {
                if let Some(defs) = self.defs.get_mut(fleet) {
                    for id in zones {
                        defs.remove(id);
                    }
                    if defs.is_empty() {
                        self.defs.remove(fleet);
                    }
                }
                Some(*fleet)
            }
            _ => None,
        }
    }

    /// Zones of every fleet.
    pub fn count(&self) -> usize {
        self.defs.values().map(BTreeMap::len).sum()
    }

    /// A fleet's zones.
    pub fn of_fleet(&self, fleet: u32) -> impl Iterator<Item = &ZoneDef> {
        self.defs.get(&fleet).into_iter().flat_map(|d| d.values())
    }

    /// Every fleet's zones, for the checkpoint.
    pub fn all(&self) -> Vec<(u32, Vec<ZoneDef>)> {
        let mut all: Vec<_> = self
            .defs
            .iter()
            .map(|(f, d)| (*f, d.values().cloned().collect()))
            .collect();
        all.sort_by_key(|(f, _)| *f);
        all
    }

    /// The book a checkpoint held; a zone this build no longer accepts is
    /// left out and its error returned.
    pub fn restore(all: Vec<(u32, Vec<ZoneDef>)>) -> (Self, Vec<String>) {
        let mut book = Self::default();
        let mut errors = Vec::new();
        for (fleet, defs) in all {
            for d in defs {
                match d.zone() {
                    Ok(_) => {
                        book.defs.entry(fleet).or_default().insert(d.id, d);
                    }
                    Err(e) => errors.push(format!("zone {} of fleet {fleet}: {e}", d.id)),
                }
            }
        }
        (book, errors)
    }

    /// What the shards read after a change to `changed` (all fleets if
    /// `None`), from what they read before.
    pub fn publish(&self, before: &FleetZones, changed: Option<u32>, margin_m: f64) -> FleetZones {
        let set_of = |fleet: u32| {
            // Checked when given: a definition in the book makes a zone.
            let zones = self.of_fleet(fleet).filter_map(|d| d.zone().ok()).collect();
            Arc::new(ZoneSet::new(zones, margin_m))
        };
        let mut sets = match changed {
            Some(_) => before.sets.clone(),
            None => HashMap::new(),
        };
        let fleets: Vec<u32> = match changed {
            Some(f) => vec![f],
            None => self.defs.keys().copied().collect(),
        };
        for f in fleets {
            if self.defs.contains_key(&f) {
                sets.insert(f, set_of(f));
            } else {
                sets.remove(&f);
            }
        }
        FleetZones {
            sets,
            vehicle_fleets: before.vehicle_fleets.clone(),
            unranged: before.unranged,
            hours: before.hours.clone(),
            service: before.service.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::LatLon;

    /// A square of `n` points (4096 at most per zone) around 43.7, 7.4.
    fn square(id: ZoneId, n: usize) -> ZoneDef {
        let ring = (0..n)
            .map(|k| {
                let a = k as f64 * std::f64::consts::TAU / n as f64;
                LatLon::new(43.7 + 0.01 * a.sin(), 7.4 + 0.01 * a.cos())
            })
            .collect();
        ZoneDef {
            id,
            name: String::new(),
            outline: Outline::Polygon { rings: vec![ring] },
            kind: crate::zones::ZoneKind::Plain,
            dwell_s: None,
            speed_limit_kmh: None,
        }
    }

    #[test]
    fn a_fleets_zones_are_bounded_in_points_as_well_as_in_number() {
        let mut book = ZoneBook::default();
        let per = 4000;
        let fill = MAX_POINTS_PER_FLEET / per;
        let put = |zones| Command::PutZones { fleet: 3, zones };
        let first = put((0..fill as u64).map(|i| square(i, per)).collect());
        book.validate(&first).unwrap();
        book.apply(&first);
        // One more large zone is too many points; replacing one is not.
        let more = put(vec![square(fill as u64, per)]);
        assert!(matches!(
            book.validate(&more),
            Err(CommandError::TooManyZones { .. })
        ));
        book.validate(&put(vec![square(0, per)])).unwrap();
        // Another fleet has room of its own.
        let other = Command::PutZones {
            fleet: 4,
            zones: vec![square(0, per)],
        };
        book.validate(&other).unwrap();
    }

    #[test]
    fn a_vehicle_belongs_to_the_fleet_its_id_or_its_range_says() {
        let ranges = [([100, 199], 7), ([500, 500], 9)];
        assert_eq!(fleet_of(&ranges, 3, 150), 7);
        assert_eq!(fleet_of(&ranges, 3, 199), 7);
        assert_eq!(fleet_of(&ranges, 3, 500), 9);
        assert_eq!(fleet_of(&ranges, 3, 200), 3);
        assert_eq!(fleet_of(&ranges, 3, 99), 3);
        let allocated: VehicleId = (1 << 62) | (5 << 38) | 1;
        assert_eq!(fleet_of(&ranges, 3, allocated), 5);
    }
}
