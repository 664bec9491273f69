//! A fleet's zones as its dispatchers keep them, for every front end
//! alike: a GeoJSON file of zones put (added, or replacing those of the
//! same ids), zones removed by id, and the fleet's zones read back as
//! GeoJSON. Zones are named with the fleet's own string ids and live in
//! the caller's fleet: another fleet's zone of the same id is another zone,
//! and one the caller's fleet does not have does not exist for it.
//! Each change is one engine command (journalled, and so durable, before
//! it is acknowledged).

use std::time::Duration;

use lastmile_engine::fleet::{Admission, Command, Engine};
use lastmile_engine::zones::ZoneId;

use crate::auth::Principal;
use crate::dispatch::{Refusal, RefusalKind, Save};
use crate::ids::Kind;
use crate::runtime::Node;
use crate::zone_file::{self, ZoneFileError};

/// How long a zone command waits for room in the shards' queues.
const WAIT: Admission = Admission::Wait(Duration::from_secs(5));

fn no_zone(name: &str) -> Refusal {
    Refusal::new(RefusalKind::NotFound, format!("zone {name} does not exist"))
}

impl Node {
    fn zone_engine(&self) -> Result<&std::sync::Arc<Engine>, Refusal> {
        self.sink.engine().ok_or_else(|| {
            Refusal::new(
                RefusalKind::NotFound,
                "this server counts pings only (no engine)",
            )
        })
    }

    fn may_change_zones(who: &Principal) -> Result<(), Refusal> {
        if who.stop.is_some() || !who.role.may_dispatch() {
            return Err(Refusal::new(
                RefusalKind::Forbidden,
                format!("role {} may not change zones", who.role.as_str()),
            ));
        }
        Ok(())
    }

    /// Puts the zones of a GeoJSON `FeatureCollection` in the caller's
    /// fleet at event time `time`; returns how many. All or none: a bad
    /// feature refuses the file, saying which. Waits for the journal: call
    /// it off the async threads.
    pub fn put_zones(&self, who: &Principal, geojson: &str, time: f64) -> Result<usize, Refusal> {
        Self::may_change_zones(who)?;
        let engine = self.zone_engine()?;
        let specs = zone_file::read_zones(geojson).map_err(|e| match e {
            ZoneFileError::TooMany => Refusal::new(RefusalKind::LimitExceeded, e.to_string()),
            _ => Refusal::bad_value(e.to_string()),
        })?;
        let names = specs.iter().map(|z| (Kind::Zone, z.id.as_str()));
        let ids = self.create_names(who, names, Save::WithCommand)?;
        let zones = specs
            .iter()
            .zip(ids)
            .map(|(spec, id)| spec.numbered(id))
            .collect::<Vec<_>>();
        let count = zones.len();
        let fleet = self.auth.scope(who).slot;
        engine
            .command(Command::PutZones { fleet, zones }, time, WAIT)
            .map_err(|e| self.refusal_of(who, &e, false))?;
        Ok(count)
    }

    /// Removes zones of the caller's fleet by their ids; all must exist.
    /// Waits for the journal: call it off the async threads.
    pub fn remove_zones(
        &self,
        who: &Principal,
        names: &[String],
        time: f64,
    ) -> Result<(), Refusal> {
        Self::may_change_zones(who)?;
        let engine = self.zone_engine()?;
        let fleet = self.auth.scope(who).slot;
        let have: Vec<ZoneId> = engine.zones(fleet).iter().map(|z| z.id).collect();
        let zones = names
            .iter()
            .map(|name| match self.find_name(who, Kind::Zone, name) {
                Ok(Some(id)) if have.contains(&id) => Ok(id),
                Ok(_) => Err(no_zone(name)),
                Err(e) => Err(Refusal::from(e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        engine
            .command(Command::RemoveZones { fleet, zones }, time, WAIT)
            .map_err(|e| self.refusal_of(who, &e, false))
    }

    /// The caller's fleet's zones as a GeoJSON `FeatureCollection`, under
    /// its ids, in id order.
    pub fn zones_geojson(&self, who: &Principal) -> Result<serde_json::Value, Refusal> {
        if who.stop.is_some() || !who.role.may_read() {
            return Err(Refusal::new(
                RefusalKind::Forbidden,
                format!("role {} may not read zones", who.role.as_str()),
            ));
        }
        let engine = self.zone_engine()?;
        let mut features: Vec<(String, serde_json::Value)> = engine
            .zones(self.auth.scope(who).slot)
            .iter()
            .map(|z| {
                let name = self.name_of(who, Kind::Zone, z.id, false);
                let f = zone_file::feature(&name, z);
                (name, f)
            })
            .collect();
        features.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(zone_file::collection(
            features.into_iter().map(|(_, f)| f).collect(),
        ))
    }

    /// A zone's name as the caller sees it (events name their zone so).
    pub fn zone_name(&self, who: &Principal, zone: ZoneId) -> String {
        self.name_of(who, Kind::Zone, zone, false)
    }
}
