//! An event as JSON, the same wherever it goes (the event feed's
//! Server-Sent Events, webhooks): vehicle and stop under the reader's
//! fleet's names, time in seconds since the epoch (event time), position
//! `[lat, lon]`, `null` for what there is none of. The fields mirror the
//! QUIC protocol's EVENTS (PROTOCOL.md).

use lastmile_engine::fleet::Event;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::ids::Kind;
use crate::runtime::Node;

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// Event `id` of the log, as `who` names things.
pub fn event(node: &Node, who: &Principal, id: u64, e: &Event) -> Value {
    let position = if e.pos.lat.is_finite() && e.pos.lon.is_finite() {
        json!([e.pos.lat, e.pos.lon])
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "vehicle": node.name_of(who, Kind::Vehicle, e.vehicle, false),
        "seq": e.seq,
        "stop": e.stop.map(|s| node.name_of(who, Kind::Stop, s, false)),
        "zone": Value::Null,
        "time": finite(e.time),
        "kind": e.kind.as_str(),
        "position": position,
        "value": finite(e.value),
        "reference": finite(e.reference),
    })
}
