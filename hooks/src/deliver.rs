//! One endpoint's delivery: the fleet's events of the kinds it wants, read
//! from the durable event log after the endpoint's cursor, sent one at a
//! time and in order (or, with `max_in_flight` above 1, each vehicle's in
//! order and several vehicles' at once), each until a `2xx` (at least
//! once: the cursor is kept in the store after each batch of the log is
//! delivered, so a crash repeats at most a batch, never skips).
//!
//! A failed attempt (an error status, a timeout, no connection) is tried
//! again on the endpoint's schedule (Standard Webhooks: 5 s, 5 min, 30 min,
//! 2 h, 5 h, 10 h, 10 h), each wait spread by ±20% so that endpoints
//! recovering together are not hit together, or after the `Retry-After`
//! the endpoint asked for; after the last, the event is given up and the
//! next one sent. `410 Gone` disables the endpoint (kept in the store until
//! its URL changes). While an event waits, the rest wait behind it in the
//! log, not in memory; once the endpoint answers again, the backlog drains
//! as fast as it takes them. Delivery runs apart from ingest: the engine's
//! queues never wait on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use lastmile_engine::fleet::{Event, EventFilter, EventKind, StopId};
use lastmile_node::Node;
use lastmile_node::auth::{Principal, Role};
use lastmile_node::endpoints::{EndpointStatus, WebhookEntry};
use lastmile_node::ids::Kind;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::links::Links;
use crate::log::Log;
use crate::sign::{self, Secret};

/// Events read from the log at once (a batch)…
const BATCH: usize = 256;
/// …and at least this many per request in flight, so that a batch's
/// slowest vehicle does not leave the others idle at its end.
const BATCH_PER_IN_FLIGHT: usize = 16;
/// Seconds an event waits for its names (a cluster's names bucket in
/// election takes seconds) before it is sent as it can be rendered.
const NAME_ATTEMPTS: usize = 60;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

pub struct Endpoint {
    pub entry: WebhookEntry,
    pub status: Arc<EndpointStatus>,
    node: Arc<Node>,
    /// Acts as a reader of the endpoint's fleet: its events, its names.
    reader: Principal,
    filter: EventFilter,
    secrets: Vec<Secret>,
    /// Tracking links for customer milestones (`None`: none wanted).
    links: Option<Arc<Links>>,
    http: reqwest::Client,
    /// Where the events are read and the place kept (`None`: a single node
    /// without its store has no log to deliver from).
    log: Option<Log>,
}

/// How a turn of delivery ended.
enum Turn {
    /// Closing, or the endpoint disabled.
    Ended,
    /// Another node holds the endpoint now.
    Deposed,
}

/// An event waiting for delivery: its id, itself, when it was stored (ms),
/// and what it tells a customer (milestones only).
type Pending<'a> = (u64, &'a Event, i64, Option<Value>);

/// Why a batch's delivery stopped.
enum Stop {
    /// Every event delivered or given up.
    Done,
    /// `410 Gone`: the endpoint is disabled.
    Disabled,
    /// The server is stopping.
    Closing,
}

/// How one event's delivery ended.
enum Outcome {
    Delivered,
    GaveUp,
    Disabled,
    Closing,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ms() -> i64 {
    lastmile_node::auth::epoch_ms(SystemTime::now())
}

/// The wait a `Retry-After` asks for: seconds, or an HTTP date.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let wait = match v.trim().parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate(v)?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (the one date form HTTP senders must use).
fn httpdate(s: &str) -> Option<SystemTime> {
    let p: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, hms, "GMT"] = p[..] else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t[..] else { return None };
    let days = lastmile_engine::time::days_from_civil(year, month, day);
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// What each customer milestone of a batch tells the customer (by event
/// id), from the stop as the engine or (once it dropped the stop) the
/// store holds it, with the endpoint's tracking links, granted for the
/// whole batch in one commit. Reads and writes the store: call it off
/// the async threads.
fn customers(
    node: &Node,
    reader: &Principal,
    links: Option<&Links>,
    batch: &[(u64, Event, i64)],
) -> anyhow::Result<HashMap<u64, Value>> {
    let milestones: Vec<(u64, &Event, StopId)> = batch
        .iter()
        .filter(|(_, e, _)| EventKind::MILESTONES.contains(&e.kind))
        .filter_map(|(id, e, _)| Some((*id, e, e.stop?)))
        .collect();
    if milestones.is_empty() {
        return Ok(HashMap::new());
    }
    let tokens = match links {
        Some(l) => {
            let mut stops: Vec<StopId> = milestones.iter().map(|m| m.2).collect();
            stops.sort_unstable();
            stops.dedup();
            l.links(node, reader, &stops)?
        }
        None => HashMap::new(),
    };
    let mut out = HashMap::with_capacity(milestones.len());
    for (id, e, stop) in milestones {
        let view = node
            .stop_view(stop)
            .map_err(|r| anyhow::anyhow!("reading stop {stop}: {}", r.message))?;
        let mut c = lastmile_node::event_json::customer(e, view.as_ref());
        if let Some(t) = tokens.get(&stop) {
            c["tracking_token"] = t.as_str().into();
        }
        out.insert(id, c);
    }
    Ok(out)
}

impl Endpoint {
    pub fn new(node: Arc<Node>, entry: WebhookEntry) -> anyhow::Result<Self> {
        let label = format!("webhooks {:?}", entry.name);
        let url =
            reqwest::Url::parse(&entry.url).map_err(|e| anyhow::anyhow!("{label}: url: {e}"))?;
        crate::address::check_url(&url, entry.allow_private)
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let secrets = entry
            .secrets
            .iter()
            .map(|s| Secret::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let mut kinds = 0;
        for k in &entry.kinds {
            let kind = EventKind::ALL
                .into_iter()
                .find(|x| x.as_str() == k)
                .ok_or_else(|| anyhow::anyhow!("{label}: no event kind {k:?}"))?;
            kinds |= kind.bit();
        }
        let fleet = node
            .auth
            .fleet_id(&entry.fleet)
            .ok_or_else(|| anyhow::anyhow!("{label}: unknown fleet {:?}", entry.fleet))?;
        let signing = sign::key_bytes(&entry.secrets[0])?;
        let links = Links::new(&signing, &entry.fleet, entry.tracking_ttl_s).map(Arc::new);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(entry.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(crate::address::Guarded {
                allow_private: entry.allow_private,
            }))
            .pool_max_idle_per_host(entry.max_in_flight)
            .user_agent(concat!("lastmile/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let log = match (node.cluster.get(), &node.durable) {
            (Some(member), _) => Some(Log::cluster(member.deliveries())),
            (None, Some(d)) => Some(Log::Store(d.clone())),
            (None, None) => None,
        };
        Ok(Self {
            status: Arc::new(EndpointStatus::new(&entry)),
            reader: Principal {
                role: Role::Reader,
                fleet: Some(fleet),
                stop: None,
                label: format!("webhook:{}", entry.name),
            },
            filter: EventFilter {
                kinds,
                ..EventFilter::default()
            },
            entry,
            node,
            secrets,
            links,
            http,
            log,
        })
    }

    /// Delivers until `closing`.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let Some(log) = &self.log else {
            self.status
                .failed("the store is disabled: no event log to deliver from".into());
            return;
        };
        // Each turn delivers from the place kept: on a cluster, once for
        // each time this node comes to hold the endpoint.
        loop {
            if *closing.borrow() {
                return;
            }
            if log.disabled(&self.entry).await == Some(self.entry.url_mark()) {
                self.status.disabled.store(true, Relaxed);
                self.status
                    .failed("disabled by 410 Gone from this URL".into());
                return;
            }
            let cursor = match log.begin(&self.entry, &mut closing).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    self.status
                        .failed(format!("finding where delivery stands: {e:#}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.status.delivering.store(true, Relaxed);
            let turn = self.deliver_from(log, cursor, &mut closing).await;
            self.status.delivering.store(false, Relaxed);
            match turn {
                Turn::Ended => return,
                Turn::Deposed => {
                    tracing::info!(endpoint = %self.entry.name, "another node delivers the endpoint now")
                }
            }
        }
    }

    /// Delivers from `cursor` on while this node holds the endpoint.
    async fn deliver_from(
        &self,
        log: &Log,
        mut cursor: u64,
        closing: &mut watch::Receiver<bool>,
    ) -> Turn {
        let mut events = self.node.events.clone();
        let batch_len = BATCH.max(BATCH_PER_IN_FLIGHT * self.entry.max_in_flight);
        let mut batch = Vec::with_capacity(batch_len);
        loop {
            if *closing.borrow() {
                let _ = log.save(&self.entry, cursor).await;
                return Turn::Ended;
            }
            if !log.holds(&self.entry) {
                return Turn::Deposed;
            }
            let until = log.end().await.unwrap_or(cursor);
            self.status
                .backlog
                .store(until.saturating_sub(cursor), Relaxed);
            batch.clear();
            let read = log
                .read(cursor, until, &self.filter, batch_len, &mut batch)
                .await;
            let customers = match read {
                Ok(scanned) => {
                    let (node, reader, links) =
                        (self.node.clone(), self.reader.clone(), self.links.clone());
                    let mut out = std::mem::take(&mut batch);
                    let c = tokio::task::spawn_blocking(move || {
                        out.retain(|(_, e, _)| node.auth.covers(&reader, e.vehicle));
                        let c = customers(&node, &reader, links.as_deref(), &out);
                        (c, out)
                    })
                    .await;
                    let Ok((c, out)) = c else {
                        return Turn::Ended;
                    };
                    batch = out;
                    c.map(|c| (c, scanned))
                }
                Err(e) => Err(e),
            };
            let (mut customers, scanned) = match customers {
                Ok(c) => c,
                Err(e) => {
                    self.status.failed(format!("reading the event log: {e:#}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match self.deliver_batch(&batch, &mut customers, closing).await {
                (Stop::Disabled, unfinished) => {
                    log.disable(&self.entry).await;
                    self.status.disabled.store(true, Relaxed);
                    let _ = log.save(&self.entry, unfinished.unwrap_or(scanned)).await;
                    return Turn::Ended;
                }
                (Stop::Closing, unfinished) => {
                    let _ = log.save(&self.entry, unfinished.unwrap_or(scanned)).await;
                    return Turn::Ended;
                }
                (Stop::Done, _) => {}
            }
            // Kept (a synced write) only when it moved.
            if scanned != cursor {
                cursor = scanned;
                if log.save(&self.entry, cursor).await.is_err() {
                    return Turn::Deposed;
                }
            }
            if batch.is_empty() && cursor >= until {
                // Caught up: wait for the next event, or a second.
                tokio::select! {
                    _ = events.changed() => {}
                    _ = closing.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Delivers a batch: in the log's order, one at a time, or (with
    /// `max_in_flight` above 1) each vehicle's events in order and up to
    /// that many vehicles' at once. Returns why it stopped, and the
    /// lowest id of the batch not yet delivered or given up (where the
    /// cursor goes when it stopped early).
    async fn deliver_batch(
        &self,
        batch: &[(u64, Event, i64)],
        customers: &mut HashMap<u64, Value>,
        closing: &watch::Receiver<bool>,
    ) -> (Stop, Option<u64>) {
        let mut chains: Vec<Vec<Pending>> = Vec::new();
        let mut chain_of: HashMap<u64, usize> = HashMap::new();
        for (id, e, stored_ms) in batch {
            let link = (*id, e, *stored_ms, customers.remove(id));
            let key = if self.entry.max_in_flight <= 1 {
                0
            } else {
                e.vehicle
            };
            let c = *chain_of.entry(key).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[c].push(link);
        }
        let finished = std::sync::Mutex::new(Vec::with_capacity(batch.len()));
        let stop = std::sync::Mutex::new(Stop::Done);
        let stopped = || !matches!(*stop.lock().unwrap_or_else(|p| p.into_inner()), Stop::Done);
        futures_util::stream::iter(chains)
            .for_each_concurrent(self.entry.max_in_flight.max(1), |chain| {
                let mut closing = closing.clone();
                let (finished, stop) = (&finished, &stop);
                async move {
                    for (id, e, stored_ms, customer) in chain {
                        if stopped() {
                            return;
                        }
                        let outcome = self.deliver(id, e, customer, &mut closing).await;
                        let why = match outcome {
                            Outcome::Delivered => {
                                let ms = (now_ms() - stored_ms).max(0) as u64;
                                self.status
                                    .latency
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .record(Duration::from_millis(ms));
                                None
                            }
                            Outcome::GaveUp => None,
                            Outcome::Disabled => Some(Stop::Disabled),
                            Outcome::Closing => Some(Stop::Closing),
                        };
                        if !matches!(why, Some(Stop::Closing)) {
                            finished.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                        }
                        if let Some(why) = why {
                            *stop.lock().unwrap_or_else(|p| p.into_inner()) = why;
                            return;
                        }
                    }
                }
            })
            .await;
        let finished: std::collections::HashSet<u64> = finished
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .collect();
        let unfinished = batch
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !finished.contains(id))
            .min();
        (
            stop.into_inner().unwrap_or_else(|p| p.into_inner()),
            unfinished,
        )
    }

    /// Reads the names `e` mentions (its vehicle, stop and zone) into the
    /// node's table, if it does not hold them yet.
    fn names_of(&self, e: &Event) -> Result<(), lastmile_node::ids::IdError> {
        let ids = &self.node.ids;
        ids.fetch(Kind::Vehicle, e.vehicle)?;
        if let Some(s) = e.stop {
            ids.fetch(Kind::Stop, s)?;
        }
        if let Some(z) = e.zone {
            ids.fetch(Kind::Zone, z)?;
        }
        Ok(())
    }

    /// One event, until delivered, given up, disabled or closing.
    async fn deliver(
        &self,
        id: u64,
        e: &Event,
        customer: Option<Value>,
        closing: &mut watch::Receiver<bool>,
    ) -> Outcome {
        // Its names at hand first: an event rendered with `#<id>` because
        // the cluster's names could not be read would reach the receiver
        // for good; it waits for them like for a failed attempt.
        let mut waited = 0;
        while let Err(why) = self.names_of(e) {
            self.status
                .failed(format!("event {id}: its names could not be read: {why}"));
            waited += 1;
            if waited > NAME_ATTEMPTS {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = closing.wait_for(|c| *c) => return Outcome::Closing,
            }
        }
        let mut data = lastmile_node::event_json::event(&self.node, &self.reader, id, e);
        if let Some(c) = customer {
            data["customer"] = c;
        }
        let body = serde_json::to_vec(&json!({
            "type": e.kind.as_str(),
            "timestamp": lastmile_engine::time::format_iso8601_ms(e.time),
            "data": data,
        }))
        .unwrap_or_default();
        // Stable for the event: a receiver drops a repeat by it.
        let msg_id = format!("evt_{id}");
        let schedule = &self.entry.retry_schedule_s;
        for attempt in 0..=schedule.len() {
            let ts = now_s();
            let request = self
                .http
                .post(&self.entry.url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    sign::header(&self.secrets, &msg_id, ts, &body),
                )
                .body(body.clone())
                .send();
            // A stopping server does not wait out a slow endpoint: the
            // event stays undelivered and is sent again after the start.
            let resp = tokio::select! {
                r = request => r,
                _ = closing.wait_for(|c| *c) => return Outcome::Closing,
            };
            let mut wait = None;
            match resp {
                Ok(r) if r.status().is_success() => {
                    self.status.delivered.fetch_add(1, Relaxed);
                    return Outcome::Delivered;
                }
                Ok(r) if r.status() == reqwest::StatusCode::GONE => {
                    self.status
                        .failed(format!("event {id}: 410 Gone: endpoint disabled"));
                    return Outcome::Disabled;
                }
                Ok(r) => {
                    wait = retry_after(&r);
                    self.status.failed(format!("event {id}: {}", r.status()));
                }
                Err(err) => {
                    let what = if err.is_timeout() {
                        "timed out".to_string()
                    } else {
                        err.to_string()
                    };
                    self.status.failed(format!("event {id}: {what}"));
                }
            }
            self.status.failed_attempts.fetch_add(1, Relaxed);
            // What waits behind this event, while it does.
            if let Some(until) = match &self.log {
                Some(log) => log.end().await,
                None => None,
            } {
                self.status.backlog.store(until.saturating_sub(id), Relaxed);
            }
            let Some(&next) = schedule.get(attempt) else {
                break;
            };
            let spread = rand::rng().random_range(0.8..1.2);
            let wait = wait.unwrap_or_else(|| Duration::from_secs_f64(next * spread));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = closing.wait_for(|c| *c) => return Outcome::Closing,
            }
        }
        self.status.gave_up.fetch_add(1, Relaxed);
        Outcome::GaveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_read() {
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(httpdate("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }
}
