//! Event subscriptions. A subscriber keeps a cursor into the engine's
//! event ring and is woken by the event pump; it reads a frame's worth at a
//! time and writes it, so a slow reader is held back by QUIC flow control
//! while the ring moves on. With a store, what has left the ring is read
//! from the event log instead, so a subscriber that reconnects with the
//! last id it saw (or falls far behind) misses nothing still retained.
//! Events gone from everywhere are announced in a LOST frame with their
//! count. The shards never wait for a subscriber, and a subscriber costs
//! one frame of memory.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use lastmile_engine::fleet::{EventFilter, StopId, VehicleId};
use quinn::{RecvStream, SendStream};

use lastmile_node::dispatch::Save;

use super::session::{Refusal, Session};
use super::{ServerStats, Shared};
use crate::convert;
use crate::ids::Kind;
use crate::protocol::{ErrorCode, FROM_NOW, Response};

struct Slot<'a>(&'a Shared);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Relaxed);
    }
}

/// The subscription's filter in engine ids, if the caller may have it: a
/// name its fleet does not have is refused as for a query (`not_found`,
/// `unknown_stop`), whether or not another fleet has it; except that a
/// dispatcher may name what it has not planned yet (a vehicle it is about
/// to give a route), which reserves the name in its fleet.
async fn filter_ids(
    shared: &Arc<Shared>,
    s: &Session,
    vehicles: &[String],
    stops: &[String],
) -> Result<(Vec<VehicleId>, Vec<StopId>), Refusal> {
    let who = &s.who;
    let find = async |kind, names: &[String]| -> Result<Vec<u64>, Refusal> {
        if who.role.may_dispatch() {
            return s
                .create_all(shared, names.iter().map(|n| (kind, n.as_str())), Save::Now)
                .await;
        }
        names
            .iter()
            .map(|name| match kind {
                Kind::Vehicle => s.vehicle_of(shared, name),
                Kind::Stop => s.stop_of(shared, name),
                // Subscriptions name vehicles and stops only.
                Kind::Zone => Err((ErrorCode::Internal, "no zone filter".to_string())),
            })
            .collect()
    };
    let stop_ids = find(Kind::Stop, stops).await?;
    if let Some(stop) = who.stop {
        // A tracking token hears about its own stop only.
        if stop_ids.iter().any(|s| *s != stop) || !vehicles.is_empty() {
            return Err((
                ErrorCode::Forbidden,
                "a tracking token covers one stop only".to_string(),
            ));
        }
        return Ok((Vec::new(), vec![stop]));
    }
    if !who.role.may_read() {
        return Err((
            ErrorCode::Forbidden,
            format!("role {} may not subscribe", who.role.as_str()),
        ));
    }
    let vehicle_ids = find(Kind::Vehicle, vehicles).await?;
    if shared.sink.engine().is_none() {
        return Err((
            ErrorCode::NotFound,
            "this server counts pings only (no engine)".to_string(),
        ));
    }
    Ok((vehicle_ids, stop_ids))
}

pub async fn run(
    shared: &Arc<Shared>,
    s: &Session,
    mut send: SendStream,
    mut recv: RecvStream,
    (from, kinds): (u64, u64),
    vehicles: Vec<String>,
    stops: Vec<String>,
) {
    let (stats, who, v) = (&shared.stats, &s.who, s.version);
    let mut out = Vec::new();
    let (vehicles, stops) = match filter_ids(shared, s, &vehicles, &stops).await {
        Ok(f) => f,
        Err(refusal) => {
            let (code, message) = refusal;
            ServerStats::add(&stats.request_errors, 1);
            if code == ErrorCode::Forbidden {
                ServerStats::add(&stats.forbidden, 1);
            }
            Response::error(code, message).encode(v, &mut out);
            let _ = send.write_all(&out).await;
            let _ = send.finish();
            return;
        }
    };
    if shared.subscribers.fetch_add(1, Relaxed) >= shared.config.limits.max_subscribers {
        shared.subscribers.fetch_sub(1, Relaxed);
        ServerStats::add(&stats.subscriptions_refused, 1);
        Response::error(ErrorCode::LimitExceeded, "too many subscribers").encode(v, &mut out);
        let _ = send.write_all(&out).await;
        let _ = send.finish();
        return;
    }
    let _slot = Slot(shared);
    ServerStats::add(&stats.subscriptions_opened, 1);
    let Some(engine) = shared.sink.engine() else {
        return;
    };
    let bus = engine.events().clone();
    let filter = EventFilter {
        vehicles,
        stops,
        kinds,
    };
    // A `from` beyond the log's end (a client resuming against a server
    // whose log is shorter than it remembers) starts at the end: SUBSCRIBED
    // says where, rather than the subscription waiting silently for ids
    // that may never come.
    let end = bus.readable_id();
    let mut cursor = if from == FROM_NOW { end } else { from.min(end) };
    if from != FROM_NOW && from > end {
        ServerStats::add(&stats.subscriptions_from_beyond, 1);
    }
    Response::Subscribed { next_id: cursor }.encode(v, &mut out);
    if send.write_all(&out).await.is_err() {
        return;
    }
    let per_frame = shared.config.limits.events_per_frame;
    let mut wake = shared.events.clone();
    let mut got = Vec::with_capacity(per_frame);
    let mut scratch = [0u8; 64];
    loop {
        got.clear();
        out.clear();
        let mut lost = 0;
        let full;
        match &shared.durable {
            Some(d) if cursor < bus.oldest_id() => {
                // Behind the ring: the event log has it, unless expired.
                let until = bus.oldest_id();
                let first = d.store.first_event_id().ok().flatten().unwrap_or(until);
                if cursor < first.min(until) {
                    lost = first.min(until) - cursor;
                    cursor = first.min(until);
                }
                match d
                    .store
                    .read_events(&mut cursor, until, &filter, per_frame, &mut got)
                {
                    // Ids the log lacks (never persisted) are lost too.
                    Ok(missing) => lost += missing,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the event log");
                        lost += until.saturating_sub(cursor);
                        cursor = until;
                    }
                }
                full = true;
            }
            durable => {
                let before = cursor;
                let report = bus.read(&mut cursor, &filter, per_frame, &mut got);
                if report.lost > 0 && durable.is_some() {
                    // The ring moved on meanwhile: take it from the log.
                    cursor = before;
                    continue;
                }
                lost = report.lost;
                full = report.read == per_frame;
            }
        }
        if lost > 0 {
            ServerStats::add(&stats.events_lost, lost);
            Response::Lost { count: lost }.encode(v, &mut out);
        }
        got.retain(|(_, e)| who.fleet.is_none() || shared.auth.covers(who, e.vehicle));
        if !got.is_empty() {
            ServerStats::add(&stats.events_sent, got.len() as u64);
            let name = |kind, id| s.name(shared, kind, id);
            Response::Events(
                got.iter()
                    .map(|(id, e)| convert::event(*id, e, &name))
                    .collect(),
            )
            .encode(v, &mut out);
        }
        if !out.is_empty() && send.write_all(&out).await.is_err() {
            return;
        }
        if full {
            continue;
        }
        // Caught up: sleep until the pump says the bus grew, or the client
        // ends the subscription (finishes or resets its side).
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            r = recv.read(&mut scratch) => match r {
                Ok(Some(_)) => {}
                _ => { let _ = send.finish(); return }
            },
        }
    }
}
