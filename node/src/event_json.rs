//! An event as JSON, the same wherever it goes (the event feed's
//! Server-Sent Events, webhooks): vehicle and stop under the reader's
//! fleet's names, time in seconds since the epoch (event time), position
//! `[lat, lon]`, `null` for what there is none of. The fields mirror the
//! QUIC protocol's EVENTS (PROTOCOL.md). A customer milestone also carries
//! what a message to the customer needs (`customer`, see [`customer`]).

use lastmile_engine::fleet::{Event, EventKind, StopOutcome, StopView};
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::ids::Kind;
use crate::runtime::Node;

/// A number, or `null` for NaN and the infinities (JSON has neither).
pub fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// `[lat, lon]`, or `null` when there is no position.
pub fn position(lat: f64, lon: f64) -> Value {
    if lat.is_finite() && lon.is_finite() {
        json!([lat, lon])
    } else {
        Value::Null
    }
}

/// Event `id` of the log, as `who` names things. A milestone's `customer`
/// comes from the stop as the engine holds it now (no store read: this
/// runs on the async threads); webhooks build theirs with [`customer`]
/// from the store too.
pub fn event(node: &Node, who: &Principal, id: u64, e: &Event) -> Value {
    let mut v = json!({
        "id": id,
        "vehicle": node.name_of(who, Kind::Vehicle, e.vehicle, false),
        "seq": e.seq,
        "stop": e.stop.map(|s| node.name_of(who, Kind::Stop, s, false)),
        "zone": e.zone.map(|z| node.name_of(who, Kind::Zone, z, false)),
        "time": finite(e.time),
        "kind": e.kind.as_str(),
        "position": position(e.pos.lat, e.pos.lon),
        "value": finite(e.value),
        "reference": finite(e.reference),
        "eta_window": e.eta_window().map_or(Value::Null, |(p10, p90)| json!([p10, p90])),
    });
    if EventKind::MILESTONES.contains(&e.kind) {
        let view = e
            .stop
            .and_then(|s| node.sink.engine().and_then(|engine| engine.stop(s)));
        v["customer"] = customer(e, view.as_ref());
    }
    v
}

/// What a message about milestone `e` tells the customer: their reference
/// (`ref`), the ETA the milestone announced (`eta`, seconds since the
/// epoch), the promised window (`window`, `[start, end]`; for
/// `rescheduled` the new one), the failure's `reason`, the `proof` of
/// delivery, and `tracking_token` (null here; webhooks fill it in).
pub fn customer(e: &Event, view: Option<&StopView>) -> Value {
    let plan = view.map(|v| &v.record.plan);
    let eta = match e.kind {
        EventKind::OutForDelivery | EventKind::NextStop | EventKind::Arriving => finite(e.value),
        _ => Value::Null,
    };
    let window = match e.kind {
        EventKind::Rescheduled if e.value.is_finite() => json!([e.value, e.reference]),
        EventKind::Rescheduled => Value::Null,
        _ => plan
            .and_then(|p| p.window)
            .map_or(Value::Null, |w| json!([w.start, w.end])),
    };
    let outcome = view.and_then(|v| v.record.outcome.as_ref());
    let reason = match (e.kind, outcome) {
        (EventKind::FailedAttempt, Some(StopOutcome::Failed { reason })) => json!(reason),
        _ => Value::Null,
    };
    let proof = match (e.kind, outcome) {
        (EventKind::Delivered, Some(StopOutcome::Completed(p))) => json!({
            "photos": p.photo_refs,
            "signature": p.signature_ref,
            "note": p.note,
            "position": p.pos.map_or(Value::Null, |p| position(p.lat, p.lon)),
        }),
        _ => Value::Null,
    };
    json!({
        "ref": plan.and_then(|p| p.customer_ref.as_deref()),
        "eta": eta,
        "window": window,
        "reason": reason,
        "proof": proof,
        "tracking_token": Value::Null,
    })
}
