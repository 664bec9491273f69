//! The event log as Server-Sent Events (`GET /api/v1/events`): every event
//! the caller may see, as it is published, each with its log id as the SSE
//! `id` and its kind as the SSE `event`, so a browser's `EventSource`
//! resumes after a dropped connection with `Last-Event-ID` and misses
//! nothing the store still holds. Query: `from` (first id wanted; default
//! only new events), `kinds` (comma-separated names), `vehicle` and `stop`
//! (repeatable; names of the caller's fleet). A tracking token hears its
//! own stop only. Events the server could not keep for a slow reader are
//! announced as an SSE event `lost` with their count. Feeds are bounded in
//! number (`[limits] max_subscribers`, counted apart from the QUIC side's).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use lastmile_engine::fleet::{EventFilter, EventKind};

use crate::caller::Caller;
use crate::{ApiError, HttpStats, Web};

/// Events read (and sent) at a time.
const BATCH: usize = 256;

pub fn routes() -> Router<Arc<Web>> {
    Router::new().route("/api/v1/events", get(events))
}

/// A feed's place among the bounded number open (`[limits]
/// max_subscribers`, event feeds and fleet feeds together); freed when it
/// ends.
pub struct Slot(Arc<Web>);

impl Slot {
    /// A place, or `503 limit_exceeded` when every one is taken.
    pub fn take(web: &Arc<Web>) -> Result<Self, ApiError> {
        let stats = &web.stats;
        if stats.feeds_open.fetch_add(1, Relaxed) >= web.node.config.limits.max_subscribers as u64 {
            stats.feeds_open.fetch_sub(1, Relaxed);
            HttpStats::add(&stats.feeds_refused, 1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "limit_exceeded",
                "too many event feeds open: try again later",
            ));
        }
        HttpStats::add(&stats.feeds_opened, 1);
        Ok(Self(web.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.stats.feeds_open.fetch_sub(1, Relaxed);
    }
}

struct Feed {
    web: Arc<Web>,
    caller: Caller,
    filter: EventFilter,
    cursor: u64,
    wake: tokio::sync::watch::Receiver<u64>,
    ready: VecDeque<Sse>,
    _slot: Slot,
}

/// What a feed asks for, from the query string and `Last-Event-ID`.
struct Ask {
    from: Option<u64>,
    kinds: u64,
    vehicles: Vec<String>,
    stops: Vec<String>,
}

fn ask(query: Option<&str>, headers: &HeaderMap) -> Result<Ask, ApiError> {
    let mut a = Ask {
        from: None,
        kinds: 0,
        vehicles: Vec::new(),
        stops: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "from" => {
                a.from = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_value("from: not an event id"))?,
                )
            }
            "kinds" => {
                for name in v.split(',').filter(|n| !n.is_empty()) {
                    let kind = EventKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == name)
                        .ok_or_else(|| {
                            ApiError::bad_value(format!("unknown event kind {name:?}"))
                        })?;
                    a.kinds |= kind.bit();
                }
            }
            "vehicle" => a.vehicles.push(v.into_owned()),
            "stop" => a.stops.push(v.into_owned()),
            _ => {}
        }
    }
    // A browser reconnecting says the last id it saw: go on after it.
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        let last: u64 = last
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_value("Last-Event-ID: not an event id"))?;
        a.from = Some(last.saturating_add(1));
    }
    Ok(a)
}

async fn events(
    State(web): State<Arc<Web>>,
    c: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = ask(query.as_deref(), &headers)?;
    let stop_ids = a
        .stops
        .iter()
        .map(|n| c.stop_of(n))
        .collect::<Result<Vec<_>, _>>()?;
    let (vehicles, stops) = if let Some(mine) = c.who.stop {
        // A tracking token hears about its own stop only.
        if stop_ids.iter().any(|s| *s != mine) || !a.vehicles.is_empty() {
            return Err(ApiError::forbidden("a tracking token covers one stop only"));
        }
        (Vec::new(), vec![mine])
    } else {
        c.require(c.who.role.may_read(), "follow events")?;
        let vehicles = a
            .vehicles
            .iter()
            .map(|n| c.vehicle_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        (vehicles, stop_ids)
    };
    let engine = web.engine()?;
    let slot = Slot::take(&web)?;
    // A `from` beyond the log's end starts at the end.
    let end = engine.events().readable_id();
    let cursor = a.from.map_or(end, |f| f.min(end));
    let feed = Feed {
        wake: web.node.events.clone(),
        web: web.clone(),
        caller: c,
        filter: EventFilter {
            vehicles,
            stops,
            kinds: a.kinds,
        },
        cursor,
        ready: VecDeque::new(),
        _slot: slot,
    };
    let events = stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(e) = feed.ready.pop_front() {
                return Some((Ok::<_, Infallible>(e), feed));
            }
            if !feed.fill().await {
                return None;
            }
        }
    });
    Ok(axum::response::Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Feed {
    /// Reads what is there after the cursor into `ready`, waiting for the
    /// bus to grow when nothing is; false when the node is gone.
    async fn fill(&mut self) -> bool {
        let Some(engine) = self.web.node.sink.engine().cloned() else {
            return false;
        };
        let bus = engine.events().clone();
        // Grown as read, and dropped before waiting: a caught-up feed (most
        // of them, most of the time) holds no buffer while it sleeps.
        let mut got = Vec::new();
        let mut lost = 0;
        match self.web.node.durable.clone() {
            Some(d) if self.cursor < bus.oldest_id() => {
                // Behind the ring: the event log has it, unless expired.
                let until = bus.oldest_id();
                let first = d.store.first_event_id().ok().flatten().unwrap_or(until);
                if self.cursor < first.min(until) {
                    lost = first.min(until) - self.cursor;
                    self.cursor = first.min(until);
                }
                let (mut cursor, filter) = (self.cursor, self.filter.clone());
                let read = tokio::task::spawn_blocking(move || {
                    let mut got = Vec::new();
                    d.store
                        .read_events(&mut cursor, until, &filter, BATCH, &mut got)
                        .map(|missing| (cursor, got, missing))
                })
                .await;
                match read {
                    Ok(Ok((cursor, events, missing))) => {
                        // Ids the log lacks (never persisted) are lost too.
                        lost += missing;
                        self.cursor = cursor;
                        got = events;
                    }
                    _ => {
                        lost += until.saturating_sub(self.cursor);
                        self.cursor = until;
                    }
                }
            }
            durable => {
                let before = self.cursor;
                let report = bus.read(&mut self.cursor, &self.filter, BATCH, &mut got);
                if report.lost > 0 && durable.is_some() {
                    // The ring moved on meanwhile: take it from the log.
                    self.cursor = before;
                    return true;
                }
                lost = report.lost;
            }
        }
        if lost > 0 {
            self.ready.push_back(
                Sse::default()
                    .event("lost")
                    .data(format!("{{\"count\":{lost}}}")),
            );
        }
        let c = &self.caller;
        got.retain(|(_, e)| c.who.fleet.is_none() || c.covers(e.vehicle));
        HttpStats::add(&self.web.stats.events_sent, got.len() as u64);
        for (id, e) in &got {
            self.ready.push_back(
                Sse::default()
                    .id(id.to_string())
                    .event(e.kind.as_str())
                    .data(c.event(*id, e).to_string()),
            );
        }
        drop(got);
        if self.ready.is_empty() && self.cursor >= bus.readable_id() {
            // Caught up: sleep until the pump says the bus grew, or the
            // server stops.
            let mut closing = self.web.closing.subscribe();
            tokio::select! {
                changed = self.wake.changed() => return changed.is_ok(),
                _ = closing.wait_for(|c| *c) => return false,
            }
        }
        !*self.web.closing.borrow()
    }
}
