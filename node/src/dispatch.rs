//! What every front end does the same with a caller's request before and
//! after the engine: names turned into engine ids in the caller's fleet
//! (new ones made for what a dispatcher plans), times and plans checked,
//! and the engine's refusals rewritten as the caller may see them (ids
//! become the caller's names; a stop of another fleet is a stop that does
//! not exist). Refusals carry the QUIC protocol's error names
//! ([`RefusalKind`]): the QUIC side sends them as ERROR codes, the HTTP
//! side as statuses with the same names.

use lastmile_engine::fleet::{CommandError, StopId, StopPlan, StopRecord, StopView, TimeWindow};
use lastmile_engine::live_index::Found;
use lastmile_roadgraph::LatLon;

use crate::auth::Principal;
use crate::clock::wall_s;
use crate::ids::{IdError, Kind, NewName};
use crate::runtime::Node;

/// Most vehicles a nearest query answers with.
pub const MAX_NEAREST: usize = 1000;
/// Most vehicles a box query answers with (the answer says if cut).
pub const MAX_IN_BOX: usize = 10_000;

/// Fixes stamped before 2000-01-01 come from a device whose clock was never
/// set (1970, 1980) or rolled over (GPS week rollover lands in 1999); a
/// command's time is held to the same bound.
pub const MIN_TIME_S: f64 = 946_684_800.0;

/// Why a request was refused, by the protocol's error names (PROTOCOL.md 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    NotFound,
    UnknownStop,
    Forbidden,
    BadValue,
    LimitExceeded,
    WrongVehicle,
    DuplicateStop,
    StopClosed,
    OffRoad,
    BadOrder,
    /// The request does not fit the stop's state (rating a stop not
    /// delivered, or rated already).
    Conflict,
    Overloaded,
    Internal,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UnknownStop => "unknown_stop",
            Self::Forbidden => "forbidden",
            Self::BadValue => "bad_value",
            Self::LimitExceeded => "limit_exceeded",
            Self::WrongVehicle => "wrong_vehicle",
            Self::DuplicateStop => "duplicate_stop",
            Self::StopClosed => "stop_closed",
            Self::OffRoad => "off_road",
            Self::BadOrder => "bad_order",
            Self::Conflict => "conflict",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }
}

/// A refused request: why, and the message the caller reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::BadValue, message)
    }
}

/// The answer about a vehicle that does not exist, and about one the
/// caller's fleet does not hold: the same.
pub fn no_vehicle(name: &str) -> Refusal {
    Refusal::new(RefusalKind::NotFound, format!("no vehicle {name}"))
}

/// The answer about a stop that does not exist, and about one the caller's
/// fleet does not hold: the two must be indistinguishable, or anyone could
/// probe which ids another fleet uses and which vehicles hold them.
pub fn no_stop(name: &str) -> Refusal {
    Refusal::new(RefusalKind::UnknownStop, format!("no stop {name}"))
}

impl From<IdError> for Refusal {
    fn from(e: IdError) -> Self {
        match e {
            IdError::Invalid(m) => Self::bad_value(m),
            IdError::Full(_) => Self::new(RefusalKind::LimitExceeded, e.to_string()),
            IdError::Unavailable(_) => Self::new(RefusalKind::Overloaded, e.to_string()),
        }
    }
}

/// When new names reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Save {
    /// Now, synced, on their own: nothing else is committed for the request.
    Now,
    /// In the transaction of the command's journal commit that follows
    /// ([`crate::store::Store::queue_names`]): planning a route under new
    /// names costs no write of its own.
    WithCommand,
}

impl Node {
    /// The engine id of a vehicle the caller names (it must exist by that name).
    pub fn vehicle_of(&self, who: &Principal, name: &str) -> Result<u64, Refusal> {
        self.find_name(who, Kind::Vehicle, name)?
            .ok_or_else(|| no_vehicle(name))
    }

    /// The engine id of a stop the caller names (it must exist by that name).
    pub fn stop_of(&self, who: &Principal, name: &str) -> Result<StopId, Refusal> {
        self.find_name(who, Kind::Stop, name)?
            .ok_or_else(|| no_stop(name))
    }

    /// A stop the caller names and the vehicle it belongs to, if the
    /// caller's fleet holds it (a stop of another fleet is answered as one
    /// that does not exist).
    pub fn stop_owner(&self, who: &Principal, name: &str) -> Result<(StopId, u64), Refusal> {
        let stop = self.stop_of(who, name)?;
        let engine = self.sink.engine().ok_or_else(|| {
            Refusal::new(
                RefusalKind::NotFound,
                "this server counts pings only (no engine)",
            )
        })?;
        let vehicle = engine
            .stop(stop)
            .ok_or_else(|| no_stop(name))?
            .record
            .vehicle;
        if !self.auth.covers(who, vehicle) {
            return Err(no_stop(name));
        }
        Ok((stop, vehicle))
    }

    /// A stop as the caller may see it (GET_STOP, `/api/v1/stops/…`):
    /// readers, dispatchers and admins see their fleet's; a tracking token
    /// its own stop only, and the vehicle's position only while that stop
    /// is next (or the vehicle is there): the `bool` says whether the
    /// position may be shown. A stop the engine no longer holds (closed
    /// longer ago than `closed_retention_s`) comes from the store's record
    /// of its outcome. Reads the store: call it off the async threads.
    pub fn stop_for(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(StopId, StopView, bool), Refusal> {
        if who.stop.is_none() && !who.role.may_read() {
            return Err(Refusal::new(
                RefusalKind::Forbidden,
                format!("role {} may not query stops", who.role.as_str()),
            ));
        }
        let id = self.stop_of(who, name)?;
        if who.stop.is_some_and(|mine| mine != id) {
            return Err(Refusal::new(
                RefusalKind::Forbidden,
                "a tracking token covers one stop only",
            ));
        }
        let view = self.stop_view(id)?.ok_or_else(|| no_stop(name))?;
        if !self.auth.covers(who, view.record.vehicle) {
            return Err(no_stop(name));
        }
        let reveal = who.stop.is_none()
            || view
                .eta
                .is_some_and(|s| s.stops_before == 0 && s.status.is_remaining());
        Ok((id, view, reveal))
    }

    /// Stop `id` as the engine holds it, or the store's record once the
    /// engine has dropped it; whoever asks, so the caller checks who may
    /// see it. Reads the store: call it off the async threads.
    pub fn stop_view(&self, id: StopId) -> Result<Option<StopView>, Refusal> {
        let engine = self.sink.engine().ok_or_else(|| {
            Refusal::new(
                RefusalKind::NotFound,
                "this server counts pings only (no engine)",
            )
        })?;
        match engine.stop(id) {
            Some(v) => Ok(Some(v)),
            None => self.archived_stop(id),
        }
    }

    /// A stop from the store's record of its outcome, if it keeps one.
    fn archived_stop(&self, stop: StopId) -> Result<Option<StopView>, Refusal> {
        let Some(d) = &self.durable else {
            return Ok(None);
        };
        let record = d
            .store
            .outcome(stop)
            .map_err(|e| Refusal::new(RefusalKind::Internal, format!("{e:#}")))?;
        let Some(r) = record else {
            return Ok(None);
        };
        let rating = d
            .store
            .rating(stop)
            .map_err(|e| Refusal::new(RefusalKind::Internal, format!("{e:#}")))?;
        let nowhere = LatLon::new(f64::NAN, f64::NAN);
        Ok(Some(StopView {
            record: StopRecord {
                vehicle: r.vehicle,
                // Records written before plans were kept have none.
                plan: r.plan.unwrap_or_else(|| StopPlan::new(stop, nowhere)),
                outcome: Some(r.outcome),
                closed_at: Some(r.time),
                rating,
            },
            eta: None,
            vehicle_pos: nowhere,
            vehicle_time: f64::NAN,
        }))
    }

    /// The `k` vehicles nearest to `p` that the caller may see (k at most
    /// [`MAX_NEAREST`]), nearest first, and whether more than the cap was
    /// asked. Fleet tokens see their own vehicles only: the index is asked
    /// for more and filtered, widening until k are found or it is exhausted.
    pub fn nearest_for(
        &self,
        who: &Principal,
        p: LatLon,
        k: usize,
    ) -> Result<(Vec<Found>, bool), Refusal> {
        let engine = self.engine_or_refusal()?;
        let want = k.min(MAX_NEAREST);
        let mut found = Vec::new();
        let mut ask = want;
        loop {
            found.clear();
            engine.nearest(p, ask, &mut found);
            let got = found.len();
            found.retain(|f| self.auth.covers(who, f.vehicle));
            if found.len() >= want || got < ask || ask >= 64 * MAX_NEAREST {
                break;
            }
            ask *= 4;
        }
        found.truncate(want);
        Ok((found, k > MAX_NEAREST))
    }

    /// The vehicles the caller may see in `[min_lon, min_lat, max_lon,
    /// max_lat]` (at most [`MAX_IN_BOX`]), and whether there were more.
    pub fn in_box_for(
        &self,
        who: &Principal,
        bbox: [f64; 4],
    ) -> Result<(Vec<Found>, bool), Refusal> {
        if bbox[1] > bbox[3] {
            return Err(Refusal::bad_value("box minimum latitude above its maximum"));
        }
        let engine = self.engine_or_refusal()?;
        let mut found = Vec::new();
        engine.in_box(bbox, &mut found);
        found.retain(|f| self.auth.covers(who, f.vehicle));
        let truncated = found.len() > MAX_IN_BOX;
        found.truncate(MAX_IN_BOX);
        Ok((found, truncated))
    }

    fn engine_or_refusal(
        &self,
    ) -> Result<&std::sync::Arc<lastmile_engine::fleet::Engine>, Refusal> {
        self.sink.engine().ok_or_else(|| {
            Refusal::new(
                RefusalKind::NotFound,
                "this server counts pings only (no engine)",
            )
        })
    }

    /// Mints a customer's tracking token for one stop, valid `ttl_s` of
    /// wall-clock time (clamped to 60 s .. 30 days), kept in the store
    /// before it is handed out so the link survives a restart. Writes
    /// (and syncs): call it off the async threads. Returns the token and
    /// its expiry (ms since the epoch).
    pub fn mint_tracking(
        &self,
        who: &Principal,
        stop: StopId,
        ttl_s: u64,
    ) -> Result<(String, i64), Refusal> {
        let internal = |e: String| Refusal::new(RefusalKind::Internal, e);
        let ttl = std::time::Duration::from_secs(ttl_s.clamp(60, 30 * 86_400));
        let (token, expires) = self
            .auth
            .mint_tracking(who, stop, ttl)
            .map_err(|e| internal(e.to_string()))?;
        let expires_ms = crate::auth::epoch_ms(expires);
        self.save_grants(who, &[(stop, token.as_str())], expires_ms)?;
        Ok((token, expires_ms))
    }

    /// Makes each `(stop, token)` (tokens made by the caller: 24 bytes as
    /// [`crate::auth::tracking_token`] writes them) a tracking token for
    /// its stop until `expires_ms`, kept in the store like minted ones,
    /// all in one commit. Writes (and syncs): call it off the async
    /// threads.
    pub fn grant_tracking(
        &self,
        who: &Principal,
        tokens: &[(StopId, &str)],
        expires_ms: i64,
    ) -> Result<(), Refusal> {
        let expires =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires_ms.max(0) as u64);
        self.save_grants(who, tokens, expires_ms)?;
        for (stop, token) in tokens {
            self.auth.grant_tracking(who, *stop, token, expires);
        }
        Ok(())
    }

    /// Keeps grants in the store (when there is one), or on a cluster in
    /// the shared grants, before they are handed out, so the links survive
    /// a restart and open on any node.
    fn save_grants(
        &self,
        who: &Principal,
        tokens: &[(StopId, &str)],
        expires_ms: i64,
    ) -> Result<(), Refusal> {
        let fleet = who.fleet.map(|f| self.auth.fleet_name(Some(f)).to_string());
        if let Some(member) = self.cluster.get() {
            // On a cluster every node follows the shared grants.
            let grants: Vec<_> = tokens
                .iter()
                .map(|(stop, token)| lastmile_cluster::grants::Grant {
                    digest: crate::auth::digest(token),
                    fleet: fleet.clone(),
                    stop: *stop,
                    expires_ms,
                })
                .collect();
            return member.grants().share(&grants).map_err(|e| {
                Refusal::new(RefusalKind::Internal, format!("sharing the token: {e:#}"))
            });
        }
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let grants: Vec<_> = tokens
            .iter()
            .map(|(stop, token)| crate::store::StoredGrant {
                digest: crate::auth::digest(token),
                fleet: fleet.clone(),
                stop: *stop,
                expires_ms,
            })
            .collect();
        d.store
            .save_grants(&grants)
            .map_err(|e| Refusal::new(RefusalKind::Internal, format!("storing the token: {e}")))
    }

    /// The engine ids of names in the caller's fleet, new ones given ids
    /// and written to the store as `save` says before this returns.
    /// [`Save::Now`] writes (and syncs): call it off the async threads.
    pub fn create_names<'a>(
        &self,
        who: &Principal,
        names: impl IntoIterator<Item = (Kind, &'a str)>,
        save: Save,
    ) -> Result<Vec<u64>, Refusal> {
        let scope = self.auth.scope(who);
        let (mut ids, mut fresh): (Vec<u64>, Vec<NewName>) = (Vec::new(), Vec::new());
        for (kind, name) in names {
            let (id, new) = self.ids.find_or_create(&scope, kind, name)?;
            ids.push(id);
            fresh.extend(new);
        }
        if fresh.is_empty() {
            return Ok(ids);
        }
        if let Some(d) = &self.durable {
            match save {
                Save::WithCommand => d.store.queue_names(&fresh),
                Save::Now => d.store.save_names(&fresh).map_err(|e| {
                    Refusal::new(RefusalKind::Internal, format!("storing ids: {e}"))
                })?,
            }
        }
        self.ids.saved(&fresh);
        Ok(ids)
    }

    /// A command's time: the caller's (seconds), or the server's clock. A
    /// caller's time must lie between 2000-01-01 and `max_future_s` past
    /// the wall clock, as a ping's does: a negative or absurd time would be
    /// carried into outcomes and events.
    pub fn command_time(&self, t: Option<f64>) -> Result<f64, Refusal> {
        let Some(t) = t else {
            return Ok(self.clock.now());
        };
        let latest = wall_s() + self.config.limits.max_future_s;
        if (MIN_TIME_S..=latest).contains(&t) {
            Ok(t)
        } else {
            Err(Refusal::bad_value(format!(
                "time {t} is out of range: from 2000-01-01 to {} s past the server's wall clock (or none: the server's clock)",
                self.config.limits.max_future_s
            )))
        }
    }

    /// An engine command's refusal as the caller may see it: ids become
    /// the caller's names, and one that names a stop of another fleet
    /// (closed, or on another vehicle) says the stop does not exist,
    /// exactly as for an unknown name.
    pub fn refusal_of(&self, who: &Principal, e: &CommandError, numbers_only: bool) -> Refusal {
        let foreign = |stop: StopId| {
            self.sink
                .engine()
                .and_then(|en| en.stop(stop))
                .is_some_and(|v| !self.auth.covers(who, v.record.vehicle))
        };
        let stop_name = |id| self.name_of(who, Kind::Stop, id, numbers_only);
        use RefusalKind as K;
        match *e {
            CommandError::UnknownStop(stop) => no_stop(&stop_name(stop)),
            CommandError::WrongVehicle { stop, vehicle } if !self.auth.covers(who, vehicle) => {
                no_stop(&stop_name(stop))
            }
            CommandError::WrongVehicle { stop, vehicle } => Refusal::new(
                K::WrongVehicle,
                format!(
                    "stop {} belongs to vehicle {}",
                    stop_name(stop),
                    self.name_of(who, Kind::Vehicle, vehicle, numbers_only)
                ),
            ),
            CommandError::StopClosed(stop) if foreign(stop) => no_stop(&stop_name(stop)),
            CommandError::StopClosed(stop) => Refusal::new(
                K::StopClosed,
                format!("stop {} is already completed or failed", stop_name(stop)),
            ),
            CommandError::DuplicateStop(stop) => Refusal::new(
                K::DuplicateStop,
                format!("stop {} already exists", stop_name(stop)),
            ),
            CommandError::OffRoad { stop, max_m } => Refusal::new(
                K::OffRoad,
                format!("stop {} is not within {max_m} m of a road", stop_name(stop)),
            ),
            CommandError::BadOrder => Refusal::new(K::BadOrder, e.to_string()),
            CommandError::NotCompleted(stop) => Refusal::new(
                K::Conflict,
                format!(
                    "stop {} is not delivered: only a completed stop can be rated",
                    stop_name(stop)
                ),
            ),
            CommandError::AlreadyRated(stop) => Refusal::new(
                K::Conflict,
                format!("stop {} has been rated already", stop_name(stop)),
            ),
            CommandError::BadRating | CommandError::BadOdometer => {
                Refusal::new(K::BadValue, e.to_string())
            }
            CommandError::NotFinite => Refusal::new(K::BadValue, e.to_string()),
            CommandError::Overloaded => Refusal::new(K::Overloaded, e.to_string()),
            // Zone commands name only the caller's fleet's zones.
            CommandError::UnknownZone(_) => Refusal::new(K::NotFound, e.to_string()),
            CommandError::DuplicateZone(_) | CommandError::BadZone { .. } => {
                Refusal::new(K::BadValue, e.to_string())
            }
            CommandError::TooManyZones { .. } => Refusal::new(K::LimitExceeded, e.to_string()),
            // The store refused the write (disk full, I/O error): nothing
            // was applied, the client may retry.
            CommandError::Journal(_) => Refusal::new(K::Internal, e.to_string()),
        }
    }
}

/// A dispatcher's stop, checked: `name` is how the caller called it (for
/// the messages), `id` the engine id it got.
pub fn plan(
    name: &str,
    id: StopId,
    pos: Option<LatLon>,
    window: Option<(f64, f64)>,
    service_s: f64,
    customer_ref: &str,
) -> Result<StopPlan, Refusal> {
    let bad = |why: &str| Refusal::bad_value(format!("stop {name}: {why}"));
    let pos = pos.ok_or_else(|| bad("position out of range"))?;
    let window = match window {
        None => None,
        Some((start, end)) if start.is_finite() && end.is_finite() && start <= end => {
            Some(TimeWindow { start, end })
        }
        Some(_) => return Err(bad("window ends before it starts")),
    };
    if !(service_s.is_finite() && (0.0..=86_400.0).contains(&service_s)) {
        return Err(bad("service time must be 0..=86400 s"));
    }
    Ok(StopPlan {
        id,
        pos,
        window,
        service_s,
        customer_ref: (!customer_ref.is_empty()).then(|| customer_ref.into()),
    })
}

/// A position in degrees, if in range.
pub fn position(lat: f64, lon: f64) -> Option<LatLon> {
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
        .then(|| LatLon::new(lat, lon))
}
