//! The fleet as it moves, for live maps (`GET /api/v1/fleet/live`, Server-
//! Sent Events): once a second, the caller's vehicles that changed since
//! the last message (position, state), so a map of thousands of vans costs
//! what moved, not the fleet each second. The first message has every
//! vehicle (`"full": true`); a reconnecting page starts over with one.
//!
//! Each vehicle is `[name, lat, lon, state, heading]`, its state the one a
//! dispatcher colours it by: `offline`, `stalled`, `off_route`, `late` (a
//! remaining stop's ETA is past its window), `on_time`, or `idle` (no stop
//! to serve), the first that holds in that order. Positions are rounded to
//! about a metre (5 decimals); a vehicle that moved less is not re-sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use lastmile_engine::fleet::{VehicleId, VehicleSnapshot};
use lastmile_node::ids::Kind;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::{ApiError, HttpStats, Web};

/// How often changes are sent.
const PERIOD: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<Web>> {
    Router::new().route("/api/v1/fleet/live", get(live))
}

/// A vehicle's state as a dispatcher sees it.
pub fn state(v: &VehicleSnapshot) -> &'static str {
    if !v.online {
        "offline"
    } else if v.stalled {
        "stalled"
    } else if v.off_route {
        "off_route"
    } else if v.stops.iter().any(|s| s.late && s.status.is_remaining()) {
        "late"
    } else if v.stops.iter().any(|s| s.status.is_remaining()) {
        "on_time"
    } else {
        "idle"
    }
}

/// What a page was last sent of one vehicle.
struct Sent {
    name: Arc<str>,
    lat_e5: i32,
    lon_e5: i32,
    state: &'static str,
    /// Seen in the latest scan (else it left the fleet's view).
    seen: bool,
}

struct Live {
    web: Arc<Web>,
    caller: Caller,
    sent: HashMap<VehicleId, Sent>,
    first: bool,
    _slot: crate::feed::Slot,
}

async fn live(State(web): State<Arc<Web>>, c: Caller) -> Result<Response, ApiError> {
    c.require(c.who.role.may_read(), "follow the fleet")?;
    web.engine()?;
    let slot = crate::feed::Slot::take(&web)?;
    let live = Live {
        web: web.clone(),
        caller: c,
        sent: HashMap::new(),
        first: true,
        _slot: slot,
    };
    let updates = stream::unfold(live, |mut live| async move {
        loop {
            if !live.first {
                let mut closing = live.web.closing.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(PERIOD) => {}
                    _ = closing.wait_for(|c| *c) => return None,
                }
            }
            // A scan reads every vehicle of the fleet: off the async threads.
            let scanned = tokio::task::spawn_blocking(move || {
                let found = live.scan();
                (live, found)
            })
            .await;
            let Ok((mut back, (full, changed, gone))) = scanned else {
                return None;
            };
            back.first = false;
            live = back;
            if full || !changed.is_empty() || !gone.is_empty() {
                HttpStats::add(&live.web.stats.fleet_updates, changed.len() as u64);
                let gone: Vec<&str> = gone.iter().map(|g| &**g).collect();
                let data = json!({"full": full, "vehicles": changed, "gone": gone});
                let e = Sse::default().event("vehicles").data(data.to_string());
                return Some((Ok::<_, Infallible>(e), live));
            }
        }
    });
    Ok(axum::response::Sse::new(updates)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Live {
    /// Reads the caller's vehicles: whether this is the full set, those
    /// that changed since the last scan, and the names of those gone.
    fn scan(&mut self) -> (bool, Vec<Value>, Vec<Arc<str>>) {
        let Ok(engine) = self.web.engine().cloned() else {
            return (self.first, Vec::new(), Vec::new());
        };
        for s in self.sent.values_mut() {
            s.seen = false;
        }
        let mut changed = Vec::new();
        for id in engine.vehicle_ids() {
            if self.caller.who.fleet.is_some() && !self.caller.covers(id) {
                continue;
            }
            let Some((lat_e5, lon_e5, state, heading)) = engine
                .with_vehicle(id, |v| {
                    let e5 = |x: f64| (x * 1e5).round() as i32;
                    v.pos
                        .lat
                        .is_finite()
                        .then(|| (e5(v.pos.lat), e5(v.pos.lon), state(v), v.heading_deg))
                })
                .flatten()
            else {
                continue;
            };
            let caller = &self.caller;
            let s = self.sent.entry(id).or_insert_with(|| Sent {
                name: caller.name(Kind::Vehicle, id).into(),
                lat_e5: i32::MIN,
                lon_e5: i32::MIN,
                state: "",
                seen: false,
            });
            s.seen = true;
            if (s.lat_e5, s.lon_e5, s.state) != (lat_e5, lon_e5, state) {
                (s.lat_e5, s.lon_e5, s.state) = (lat_e5, lon_e5, state);
                let heading = heading.is_finite().then(|| heading.round());
                changed.push(json!([
                    &*s.name,
                    f64::from(lat_e5) / 1e5,
                    f64::from(lon_e5) / 1e5,
                    state,
                    heading
                ]));
            }
        }
        let mut gone = Vec::new();
        self.sent.retain(|_, s| {
            if !s.seen {
                gone.push(s.name.clone());
            }
            s.seen
        });
        (self.first, changed, gone)
    }
}
