//! The door for the driver apps fleets already use: Traccar Client (Android,
//! iOS) and OsmAnd's live tracking, which speak the "OsmAnd" HTTP protocol
//! that Traccar's server decodes (port 5055 by convention). It has a
//! listener of its own (`serve --osmand ADDR`, `[osmand] listen`), so it
//! can sit on that port apart from the pages and the API.
//!
//! A request is read into reports ([`report`]), its device found in
//! `lastmile.toml` and its key checked ([`lastmile_node::devices`]), its
//! positions held to the same bounds as every ping
//! ([`lastmile_node::admit`]) and handed to the engine in time order; what
//! the app said besides the position (battery, motion, odometer) is kept
//! on the device. The answer is `200` with an empty body once the engine
//! holds the positions, which is what the apps wait for before dropping
//! them from their offline buffer. Refusals are a 4xx with a reason (the
//! JSON error body of the HTTP side): `400 unknown device or wrong key`
//! alike for both, `400` for what cannot be read (nothing of the request is
//! taken), `429` after many wrong keys from one address, `503` with
//! `Retry-After` while the engine stays full.

pub mod fixtures;
mod report;
mod time;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use lastmile_node::Node;
use lastmile_node::admit::{self, Bounds};
use lastmile_node::devices::Device;
use lastmile_node::dispatch::Save;
use lastmile_node::guard::token_key;
use lastmile_node::ids::Kind;

use crate::listener::{Listener, Peer};
use crate::{ApiError, limit};

/// Largest request body: a batch of the most reports one request may hold.
const MAX_BODY: usize = 4 << 20;
/// How long a request waits for room in a full engine before `503`.
const PATIENCE: Duration = Duration::from_secs(2);
/// The longest a request may take, its body's arrival included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The door's counters (`osmand_*` in the server's statistics).
#[derive(Default)]
pub struct OsmAndStats {
    pub requests: AtomicU64,
    /// Positions read from requests.
    pub positions: AtomicU64,
    /// Positions the engine took.
    pub accepted: AtomicU64,
    /// Requests that could not be read.
    pub malformed: AtomicU64,
    /// Requests from a device not listed, or with a wrong key.
    pub refused_device: AtomicU64,
    /// Positions outside the node's bounds (time, speed), dropped.
    pub out_of_bounds: AtomicU64,
    /// Late positions (not newer than the device's newest) where its live
    /// path already goes: dropped.
    pub late: AtomicU64,
    /// Late positions in a gap of its live path: matched into its history.
    pub backfilled: AtomicU64,
    /// Requests answered `503` because the engine stayed full.
    pub busy: AtomicU64,
    pub waits: AtomicU64,
    pub tls_failed: Arc<AtomicU64>,
    pub connections: Arc<limit::Counts>,
}

impl OsmAndStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let c = |a: &AtomicU64| a.load(Relaxed);
        [
            ("osmand_requests", c(&self.requests)),
            ("osmand_positions", c(&self.positions)),
            ("osmand_positions_accepted", c(&self.accepted)),
            ("osmand_malformed", c(&self.malformed)),
            ("osmand_refused_device", c(&self.refused_device)),
            ("osmand_positions_out_of_bounds", c(&self.out_of_bounds)),
            ("osmand_positions_late", c(&self.late)),
            ("osmand_positions_backfilled", c(&self.backfilled)),
            ("osmand_busy", c(&self.busy)),
            ("osmand_backpressure_waits", c(&self.waits)),
            ("osmand_tls_handshakes_failed", c(&self.tls_failed)),
            ("osmand_connections_open", c(&self.connections.open)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

struct Door {
    node: Arc<Node>,
    stats: OsmAndStats,
}

/// The driver apps' listener.
pub struct OsmAndServer {
    listener: Listener,
    door: Arc<Door>,
}

impl OsmAndServer {
    /// Binds `addr`: HTTPS with `tls`, plain HTTP without.
    pub async fn bind(
        node: Arc<Node>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let stats = OsmAndStats::default();
        let listener = Listener::bind(
            addr,
            tls,
            node.config.limits.max_connections,
            stats.connections.clone(),
            stats.tls_failed.clone(),
        )
        .await?;
        let door = Arc::new(Door { node, stats });
        let d = Arc::downgrade(&door);
        door.node.add_stats(Arc::new(move || {
            d.upgrade().map_or_else(Vec::new, |d| d.stats.snapshot())
        }));
        Ok(Self { listener, door })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn scheme(&self) -> &'static str {
        self.listener.scheme()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = Router::new()
            .fallback(receive)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            // A body announced past the limit is refused before it is read,
            // and a request that dawdles is cut off: a phone's request
            // takes milliseconds, and a connection held open is a place
            // another phone needs.
            .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            .with_state(self.door);
        self.listener.serve(app, shutdown).await
    }
}

fn refused(stats: &OsmAndStats) -> ApiError {
    OsmAndStats::add(&stats.refused_device, 1);
    // The same answer for a device nobody listed and a wrong key, so that
    // neither tells a stranger which device ids exist.
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unauthenticated",
        "unknown device or wrong key",
    )
}

/// The credential: the first segment of the path, as the apps keep the
/// server URL's path (`http://host:5055/<key>`).
fn credential(uri: &Uri) -> String {
    let seg = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map_or_else(String::new, |(_, v)| v.into_owned())
}

async fn receive(
    State(door): State<Arc<Door>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    OsmAndStats::add(&door.stats.requests, 1);
    match take(&door, peer, &method, &uri, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(Refusal::Api(e)) => e.into_response(),
        Err(Refusal::Busy) => {
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the engine is full: send again in a second",
            );
            ([(header::RETRY_AFTER, "1")], e).into_response()
        }
    }
}

enum Refusal {
    Api(ApiError),
    /// The engine stayed full: some positions may have been taken.
    Busy,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// Reads a request and hands its positions to the engine.
async fn take(
    door: &Arc<Door>,
    peer: Peer,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let stats = &door.stats;
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_value",
            "the driver apps' door takes GET and POST",
        )
        .into());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let request = report::read(json, uri.query(), body).map_err(|m| {
        OsmAndStats::add(&stats.malformed, 1);
        ApiError::bad_value(m)
    })?;
    let device = admitted(door, peer, &request.device, &credential(uri)).await?;
    let vehicle = vehicle_of(door, &device).await?;
    OsmAndStats::add(&stats.positions, request.reports.len() as u64);
    // One request of a device at a time: its positions reach the engine
    // in order even if the app sends two at once.
    let _order = device.order.lock().await;
    let Positions { live, late } = positions(door, &device, vehicle, &request);
    let taken = admit::offer(&door.node, &live, Some(PATIENCE), &stats.waits).await;
    let accepted = taken.unwrap_or_else(|b| b.accepted);
    OsmAndStats::add(&stats.accepted, accepted as u64);
    // One vehicle's pings go to one shard queue, whole or not at all: what
    // was taken is a prefix of them, oldest first.
    let taken_times = live[..accepted].iter().map(|(_, p)| p.time);
    device.taken(taken_times, door.node.config.matcher.max_gap_s);
    let newest = live[..accepted].last().map(|(_, p)| p.time);
    if let Some(t) = newest {
        door.node.clock.observe(t);
    }
    note(&device, &request, newest);
    if taken.is_err() {
        OsmAndStats::add(&stats.busy, 1);
        return Err(Refusal::Busy);
    }
    place_late(door, &device, vehicle, late).await;
    Ok(())
}

/// The listed device `id`, if `key` lets a request report for it, under
/// the node's per-address limit on guessing.
async fn admitted(door: &Door, peer: Peer, id: &str, key: &str) -> Result<Arc<Device>, ApiError> {
    let guard = &door.node.guard;
    let (ip, k) = (peer.0.ip(), token_key(key));
    crate::caller::gate(&door.node, ip, k, "keys").await?;
    match door.node.devices.find(&door.node.auth, id, key) {
        Some(d) => {
            guard.auth_succeeded(ip, k);
            Ok(d)
        }
        _ => {
            guard.auth_failed(ip);
            Err(refused(&door.stats))
        }
    }
}

/// The engine's id of the device's vehicle, named in its fleet at its
/// first report (the name is stored before the answer).
async fn vehicle_of(door: &Arc<Door>, device: &Arc<Device>) -> Result<VehicleId, ApiError> {
    if let Some(&v) = device.engine_id.get() {
        return Ok(v);
    }
    let (node, who, name) = (
        door.node.clone(),
        device.principal(),
        device.vehicle.clone(),
    );
    let ids = tokio::task::spawn_blocking(move || {
        node.create_names(&who, [(Kind::Vehicle, name.as_str())], Save::Now)
    })
    .await
    .map_err(|e| ApiError::internal(format!("naming the vehicle: {e}")))??;
    door.node.devices.resolved(device, ids[0]);
    Ok(ids[0])
}

/// A request's positions as pings, oldest first: those newer than the
/// device's newest go live; older ones are late.
struct Positions {
    live: Vec<(VehicleId, Ping)>,
    late: Vec<Ping>,
}

/// The request's positions, without those out of bounds (counted) and
/// repeated times.
fn positions(
    door: &Door,
    device: &Device,
    vehicle: VehicleId,
    request: &report::Request,
) -> Positions {
    let received = lastmile_node::clock::wall_s();
    let bounds = Bounds::now(&door.node);
    let mut pings: Vec<Ping> = request
        .reports
        .iter()
        .filter_map(|r| r.ping(request.form, device.app, received))
        .filter(|p| {
            let ok = bounds.check(p).is_ok();
            if !ok {
                OsmAndStats::add(&door.stats.out_of_bounds, 1);
            }
            ok
        })
        .collect();
    pings.sort_by(|a, b| a.time.total_cmp(&b.time));
    pings.dedup_by(|a, b| a.time == b.time);
    let newest = device.newest();
    let split = pings.partition_point(|p| p.time <= newest);
    let live = pings.split_off(split);
    Positions {
        live: live.into_iter().map(|p| (vehicle, p)).collect(),
        late: pings,
    }
}

/// Places late positions that fall in gaps of the live path in the
/// history (matched on their own); the rest fall where the live path
/// already goes and are dropped, counted.
async fn place_late(door: &Door, device: &Device, vehicle: VehicleId, late: Vec<Ping>) {
    let stats = &door.stats;
    let n = late.len() as u64;
    let stretches = device.fill_gaps(late, |p| p.time);
    let placed: u64 = stretches.iter().map(|s| s.len() as u64).sum();
    OsmAndStats::add(&stats.late, n - placed);
    if stretches.is_empty() {
        return;
    }
    let node = door.node.clone();
    let done = tokio::task::spawn_blocking(move || {
        stretches
            .iter()
            .try_for_each(|s| node.backfill(vehicle, s).map(|_| ()))
    })
    .await;
    match done {
        Ok(Ok(())) => OsmAndStats::add(&stats.backfilled, placed),
        Ok(Err(e)) => tracing::error!(error = %e, "placing late positions in the history failed"),
        Err(e) => tracing::error!(error = %e, "placing late positions in the history failed"),
    }
}

/// Keeps what the device said besides its position, as of its newest
/// report, and `taken`: the time of its newest position the engine took.
fn note(device: &Device, request: &report::Request, taken: Option<f64>) {
    let now = lastmile_node::clock::wall_s();
    let mut r = device.reported.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = request
        .reports
        .iter()
        .max_by(|a, b| a.time.unwrap_or(now).total_cmp(&b.time.unwrap_or(now)))
        .filter(|x| x.time.unwrap_or(now) >= r.time)
    {
        r.battery = x.battery.or(r.battery);
        r.charging = x.charging.or(r.charging);
        r.moving = x.moving.or(r.moving);
        r.odometer_m = x.odometer_m.or(r.odometer_m);
    }
    r.time = r.time.max(taken.unwrap_or(f64::NEG_INFINITY));
}
