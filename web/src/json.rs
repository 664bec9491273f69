//! The engine's answers as JSON, with vehicles and stops under the caller's
//! names. Times are seconds since the Unix epoch (event time), `null` when
//! there is none; positions `[lat, lon]`. The fields mirror the QUIC
//! protocol's VEHICLE, STOP, VEHICLES and EVENTS (PROTOCOL.md).

use lastmile_engine::fleet::upkeep::{DUE_CALENDAR, DUE_DISTANCE, DUE_MOVING, ServiceState};
use lastmile_engine::fleet::{StopBrief, StopEta, StopOutcome, StopView, VehicleSnapshot};
use lastmile_engine::live_index::Found;
use lastmile_node::devices::App;
use lastmile_node::ids::Kind;
use serde_json::{Value, json};

use crate::caller::Caller;

// Times and figures alike: a number, or null for NaN.
use lastmile_node::event_json::{finite as number, finite as time, position};

fn stop_eta(c: &Caller, s: &StopEta, brief: Option<StopBrief>) -> Value {
    json!({
        "stop": c.name(Kind::Stop, s.stop),
        "position": brief.map_or(Value::Null, |b| position(b.pos.lat, b.pos.lon)),
        "stars": brief.and_then(|b| b.stars),
        "status": s.status.as_str(),
        "eta": time(s.eta),
        "eta_window": eta_window(s),
        "eta_state": s.eta_state.as_str(),
        "window_end": time(s.window_end),
        "remaining_m": number(s.remaining_m),
        "stops_before": s.stops_before,
        "late": s.late,
        "at_risk": s.at_risk,
    })
}

/// `[P10, P90]` of the arrival, or null when there is no ETA.
fn eta_window(s: &StopEta) -> Value {
    if s.eta_p10.is_finite() && s.eta_p90.is_finite() {
        json!([s.eta_p10, s.eta_p90])
    } else {
        Value::Null
    }
}

/// A vehicle; `briefs` are its stops' places and ratings, in its stops' order.
pub fn vehicle(
    c: &Caller,
    v: &VehicleSnapshot,
    way_id: Option<i64>,
    briefs: &[Option<StopBrief>],
) -> Value {
    json!({
        "vehicle": c.name(Kind::Vehicle, v.vehicle),
        "time": time(v.time),
        "matched_time": time(v.matched_time),
        "position": position(v.pos.lat, v.pos.lon),
        "way_id": way_id,
        "speed_mps": v.speed_mps,
        "heading_deg": number(v.heading_deg),
        "odometer_m": v.odometer_m,
        "lifetime_odometer_m": v.lifetime_m,
        "moving_s": v.moving_s,
        "service": service(&v.service),
        "zones": v
            .zones
            .iter()
            .map(|(z, since)| json!({"zone": c.name(Kind::Zone, *z), "since": time(*since)}))
            .collect::<Vec<_>>(),
        "match_status": if v.time.is_finite() { v.status.as_str() } else { "none" },
        "moving": v.moving,
        "online": v.online,
        "off_route": v.off_route,
        "stalled": v.stalled,
        "device": device(c, v.vehicle),
        "next_stop": v.next_stop.map(|s| c.name(Kind::Stop, s)),
        "stops": v
            .stops
            .iter()
            .enumerate()
            .map(|(i, s)| stop_eta(c, s, briefs.get(i).copied().flatten()))
            .collect::<Vec<_>>(),
    })
}

/// What a vehicle did since its last service, and which intervals are due.
fn service(s: &ServiceState) -> Value {
    let due = [
        (DUE_DISTANCE, "distance"),
        (DUE_MOVING, "moving_time"),
        (DUE_CALENDAR, "calendar"),
    ];
    json!({
        "since": time(s.since),
        "driven_m": s.driven_m,
        "moving_s": s.moving_s,
        "due": due
            .iter()
            .filter(|(bit, _)| s.due & bit != 0)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>(),
    })
}

/// What the driver app reporting for the vehicle said besides its position
/// (the OsmAnd door), or null.
fn device(c: &Caller, vehicle: u64) -> Value {
    let Some((app, r)) = c.device_report(vehicle) else {
        return Value::Null;
    };
    json!({
        "app": match app {
            App::Traccar => "traccar",
            App::Osmand => "osmand",
        },
        "time": time(r.time),
        "battery_pct": r.battery,
        "charging": r.charging,
        "moving": r.moving,
        "odometer_m": r.odometer_m,
    })
}

/// A stop; its vehicle's position only when `reveal_vehicle`.
pub fn stop(c: &Caller, id: u64, s: &StopView, reveal_vehicle: bool) -> Value {
    let plan = &s.record.plan;
    let status = s.status().as_str();
    let outcome = match &s.record.outcome {
        Some(StopOutcome::Failed { reason }) => json!({"failed": reason}),
        Some(StopOutcome::Completed(p)) => json!({
            "completed": {
                "note": p.note,
                "signature_ref": p.signature_ref,
                "photo_refs": p.photo_refs,
                "position": p.pos.map(|q| [q.lat, q.lon]),
            }
        }),
        None => Value::Null,
    };
    let e = s.eta.as_ref();
    json!({
        "stop": c.name(Kind::Stop, id),
        "vehicle": c.name(Kind::Vehicle, s.record.vehicle),
        "status": status,
        "late": e.is_some_and(|e| e.late),
        "at_risk": e.is_some_and(|e| e.at_risk),
        "stops_before": e.map_or(0, |e| e.stops_before),
        "eta": e.map_or(Value::Null, |e| time(e.eta)),
        "eta_window": e.map_or(Value::Null, eta_window),
        "eta_state": e.map_or("unknown", |e| e.eta_state.as_str()),
        "remaining_m": e.map_or(Value::Null, |e| number(e.remaining_m)),
        "position": position(plan.pos.lat, plan.pos.lon),
        "window": plan.window.map(|w| [w.start, w.end]),
        "service_s": plan.service_s,
        "snap_m": e.map_or(Value::Null, |e| number(f64::from(e.snap_m))),
        "snap_component": e.map(|e| e.snap_component),
        "vehicle_position": (reveal_vehicle && s.vehicle_pos.lat.is_finite())
            .then(|| json!([s.vehicle_pos.lat, s.vehicle_pos.lon, time(s.vehicle_time)])),
        "closed": s.record.closed_at.map_or(Value::Null, time),
        "customer_ref": plan.customer_ref.as_deref().unwrap_or_default(),
        "outcome": outcome,
        "rating": s.record.rating.as_ref().map(|r| json!({
            "stars": r.stars,
            "comment": r.comment,
            "time": time(r.time),
        })),
    })
}

pub fn path_point(p: &lastmile_node::history::PathPoint) -> Value {
    use lastmile_node::history::{PATH_BREAK, PATH_INTERPOLATED};
    json!({
        "time": p.time_ms as f64 / 1000.0,
        "position": [f64::from(p.lat_e7) * 1e-7, f64::from(p.lon_e7) * 1e-7],
        "edge": p.edge,
        "break": p.flags & PATH_BREAK != 0,
        "interpolated": p.flags & PATH_INTERPOLATED != 0,
    })
}

pub fn found(c: &Caller, f: &Found) -> Value {
    json!({
        "vehicle": c.name(Kind::Vehicle, f.vehicle),
        "position": position(f.at.pos.lat, f.at.pos.lon),
        "time": time(f.at.time),
        "distance_m": f.distance_m,
        "speed_mps": f.at.speed_mps,
    })
}

/// A webhook endpoint and how its delivery goes.
pub fn endpoint(e: &lastmile_node::endpoints::EndpointStatus) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let last_error = e
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .map_or(
            Value::Null,
            |(ms, m)| json!({"time": ms as f64 / 1000.0, "message": m}),
        );
    let l = e.latency.lock().unwrap_or_else(|p| p.into_inner());
    json!({
        "name": e.name,
        "fleet": e.fleet,
        "url": e.url,
        "delivered": e.delivered.load(Relaxed),
        "failed_attempts": e.failed_attempts.load(Relaxed),
        "gave_up": e.gave_up.load(Relaxed),
        "backlog": e.backlog.load(Relaxed),
        "disabled": e.disabled.load(Relaxed),
        "delivering": e.delivering.load(Relaxed),
        "latency_p50_s": l.quantile(0.5).as_secs_f64(),
        "latency_p99_s": l.quantile(0.99).as_secs_f64(),
        "last_error": last_error,
    })
}
