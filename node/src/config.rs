//! `lastmile.toml`: everything `lastmile serve` can be told, with the
//! defaults a platform team would pick. Unknown keys are errors (a typo
//! must not silently fall back to a default). The engine's own parameter
//! blocks (`[matcher]`, `[detect]`, `[eta]`, `[traffic]`) are the engine's
//! config structs, read as they are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lastmile_engine::fleet::upkeep::ServiceInterval;
use lastmile_engine::fleet::{DetectConfig, EtaConfig, FleetConfig};
use lastmile_engine::matcher::MatcherConfig;
use lastmile_engine::traffic::TrafficConfig;
use serde::Deserialize;

use crate::auth::Role;

/// The largest frame payload of the QUIC protocol (PROTOCOL.md: 1 MiB), the
/// default and the most `[limits] max_frame_bytes` may be.
pub const MAX_FRAME_LEN: usize = 1 << 20;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where the store, the checkpoints and dev certificates and tokens live.
    pub data_dir: PathBuf,
    /// TCP address of the Prometheus `/metrics` and `/health` endpoint
    /// (none by default).
    pub metrics_listen: Option<SocketAddr>,
    pub http: HttpConfig,
    /// The door for driver apps (Traccar Client, OsmAnd).
    pub osmand: crate::devices::OsmAndConfig,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub engine: EngineConfig,
    pub store: StoreConfig,
    pub matcher: MatcherConfig,
    pub detect: DetectConfig,
    pub eta: EtaConfig,
    pub traffic: TrafficConfig,
    pub fleets: Vec<FleetEntry>,
    pub tokens: Vec<TokenEntry>,
    /// The driver apps' devices and the vehicles they report for.
    pub devices: Vec<crate::devices::DeviceEntry>,
    /// Webhook endpoints, per fleet.
    pub webhooks: Vec<crate::endpoints::WebhookEntry>,
    /// Running as one node of a cluster (off by default).
    pub cluster: crate::cluster::ClusterSection,
}

/// The HTTP side (JSON API, Server-Sent Events): off unless given an address.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP address. HTTPS with the `[tls]` certificate when one is
    /// configured; otherwise (`--dev`) plain HTTP, on a loopback address
    /// only.
    pub listen: Option<SocketAddr>,
}

/// Certificate chain and key (PEM). Both or neither; neither needs `--dev`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections, on each side apart (QUIC, HTTP): past it QUIC
    /// refuses, HTTP lets the next wait in the backlog.
    pub max_connections: usize,
    /// Resident memory the server keeps under, MiB: above it, new pings
    /// wait (streams) or are shed (datagrams). 0: 90 % of the container's
    /// (cgroup's) memory limit if there is one, else no bound.
    pub max_memory_mb: u64,
    /// Connections one source address may hold at once.
    pub max_connections_per_address: u32,
    /// Wrong tokens an address may present before its token checks are
    /// spaced out (tokens that got in from it before never wait)...
    pub auth_failures_burst: u32,
    /// ...and how many of them are forgiven (and checks allowed) per minute after that.
    pub auth_failures_per_minute: f64,
    /// Concurrent bidirectional (query) streams per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional (ping) streams per connection.
    pub max_uni_streams: u32,
    /// Largest frame payload accepted, bytes (at most 1 MiB).
    pub max_frame_bytes: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_s: u64,
    /// Time a new connection has to present its HELLO.
    pub hello_timeout_s: u64,
    /// Pings stamped further in the future than this (wall clock) are refused.
    pub max_future_s: f64,
    /// Pings older than this behind the latest accepted ping time (the
    /// event-time watermark) are refused: they say nothing about where a
    /// vehicle is now, and the matcher would drop them as out of order
    /// anyway. Relative to event time, so a replay of an old trace passes.
    pub max_past_s: f64,
    /// Pings reporting a speed above this (m/s) are refused: no road
    /// vehicle drives that fast, so the device's fix is not to be trusted.
    pub max_speed_mps: f64,
    /// Event subscriptions open at once, server-wide.
    pub max_subscribers: usize,
    /// Events per EVENTS frame.
    pub events_per_frame: usize,
    /// Per-stream receive window, bytes (how far a ping sender may run
    /// ahead of the engine before QUIC flow control stops it).
    pub stream_window_bytes: u32,
    /// Received datagrams QUIC buffers per connection, bytes.
    pub datagram_buffer_bytes: usize,
    /// Tracking tokens held at once (oldest expire first when full).
    pub max_tracking_tokens: usize,
    /// Names one fleet may give, per kind (vehicles, stops): what a fleet
    /// names is kept (in memory and the store) for as long as the server runs.
    pub max_ids_per_fleet: usize,
    /// Kernel UDP socket buffers, bytes (capped by net.core.rmem_max/wmem_max).
    pub udp_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_memory_mb: 0,
            max_connections_per_address: 1_000,
            auth_failures_burst: 10,
            auth_failures_per_minute: 6.0,
            max_bidi_streams: 64,
            max_uni_streams: 16,
            max_frame_bytes: MAX_FRAME_LEN,
            idle_timeout_s: 60,
            hello_timeout_s: 5,
            max_future_s: 300.0,
            max_past_s: 86_400.0,
            max_speed_mps: 100.0,
            max_subscribers: 1_000,
            events_per_frame: 256,
            stream_window_bytes: 4 << 20,
            datagram_buffer_bytes: 1 << 20,
            max_tracking_tokens: 1_000_000,
            max_ids_per_fleet: 4_000_000,
            udp_buffer_bytes: 8 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Shard threads (0: one per core).
    pub shards: usize,
    /// Ping batches each shard's queue holds.
    pub queue_capacity: usize,
    /// Pings each shard's queue holds (whatever the batch sizes): bounds
    /// memory and how long an acknowledged ping waits for the engine.
    pub queue_pings: usize,
    /// Learn traffic from the fleet and route on it.
    pub learning: bool,
    pub traffic_every_s: f64,
    pub events_capacity: usize,
    /// Completed and failed stops stay in memory this long (event time,
    /// seconds); afterwards GET_STOP answers them from the store.
    pub closed_retention_s: f64,
    /// Wall-clock milliseconds between two engine ticks (offline checks,
    /// traffic publication, live index refresh).
    pub tick_ms: u64,
    /// Replace the engine by a sink that only counts pings: measures the
    /// front end's own ceiling (`lastmile serve --sink`).
    pub counting_sink: bool,
    /// Niceness of the engine's shard threads (Linux), so queries and acks
    /// run first on a saturated machine; 0 leaves them alone. The engine's
    /// background work (ticker, traffic customization) always runs at 19,
    /// below the shards.
    pub nice: i32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let f = FleetConfig::default();
        Self {
            shards: f.shards,
            queue_capacity: f.queue_capacity,
            queue_pings: f.queue_pings,
            learning: f.learning,
            traffic_every_s: f.traffic_every_s,
            events_capacity: f.events_capacity,
            closed_retention_s: f.closed_retention_s,
            tick_ms: 1000,
            counting_sink: false,
            nice: 5,
        }
    }
}

/// Durable state in `data_dir` (see the `store` module).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Keep routes, stops, outcomes, events, tracking tokens and history in
    /// `data_dir/lastmile.redb` and checkpoint the engine; false runs from
    /// memory only (a restart forgets everything).
    pub enabled: bool,
    /// Wall-clock seconds between two checkpoints of the live engine (the
    /// most pings a kill -9 can lose); one is also written at shutdown.
    pub checkpoint_every_s: f64,
    /// Events are kept (and can be resumed from) this long, seconds.
    pub event_retention_s: f64,
    /// Matched paths are kept this long, seconds.
    pub history_retention_s: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            checkpoint_every_s: 60.0,
            event_retention_s: 7.0 * 86_400.0,
            history_retention_s: 30.0 * 86_400.0,
        }
    }
}

/// A fleet and the vehicle ids it owns (inclusive ranges).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetEntry {
    pub name: String,
    /// Numbers that name the same vehicle in the engine as in version 1
    /// of the protocol (optional: a fleet may name vehicles by text only).
    #[serde(default)]
    pub vehicles: Vec<[u64; 2]>,
    /// The fleet's IANA time zone ("Europe/Lisbon"), in which its
    /// `working_hours` are read (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// When its vehicles may move ("mon-fri 07:00-19:00", "sat
    /// 08:00-13:00"; a span ending at or before its start runs past
    /// midnight): `off_hours_movement` outside them. None: any time.
    #[serde(default)]
    pub working_hours: Vec<String>,
    /// Service intervals: `service_due` once a vehicle has driven this
    /// far, moved this long, or this many days have passed since its last
    /// service (any of them; none: no service alerts).
    #[serde(default)]
    pub service_every_km: Option<f64>,
    #[serde(default)]
    pub service_every_hours: Option<f64>,
    #[serde(default)]
    pub service_every_days: Option<f64>,
}

impl FleetEntry {
    /// Its working hours, if it has any (the error names the fleet).
    pub fn hours(&self) -> anyhow::Result<Option<lastmile_engine::zones::WorkingHours>> {
        if self.working_hours.is_empty() {
            if self.time_zone.is_some() {
                bail!("fleet {:?}: time_zone without working_hours", self.name);
            }
            return Ok(None);
        }
        let tz = self.time_zone.as_deref().unwrap_or("UTC");
        lastmile_engine::zones::WorkingHours::new(tz, &self.working_hours)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("fleet {:?}: {e}", self.name))
    }

    /// Its service interval, if it has one (the error names the fleet).
    pub fn service(&self) -> anyhow::Result<Option<ServiceInterval>> {
        let scaled = |what: &str, v: Option<f64>, unit: f64| match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x * unit)),
            Some(x) => bail!(
                "fleet {:?}: {what} must be a positive number, not {x}",
                self.name
            ),
            None => Ok(None),
        };
        let interval = ServiceInterval {
            distance_m: scaled("service_every_km", self.service_every_km, 1000.0)?,
            moving_s: scaled("service_every_hours", self.service_every_hours, 3600.0)?,
            calendar_s: scaled("service_every_days", self.service_every_days, 86_400.0)?,
        };
        Ok((interval != ServiceInterval::default()).then_some(interval))
    }
}

/// A token: given in clear (`token`) or, better, as the hex SHA-256 of the
/// token (`token_sha256`), so the config file does not hold secrets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_sha256: Option<String>,
    pub role: Role,
    /// The fleet it acts for (not for `admin`).
    #[serde(default)]
    pub fleet: Option<String>,
    /// A label for logs (never the token itself).
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".parse().expect("literal address"),
            data_dir: PathBuf::from("lastmile-data"),
            metrics_listen: None,
            http: HttpConfig::default(),
            osmand: Default::default(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            engine: EngineConfig::default(),
            store: StoreConfig::default(),
            matcher: MatcherConfig::default(),
            detect: DetectConfig::default(),
            eta: EtaConfig::default(),
            traffic: TrafficConfig::default(),
            fleets: Vec::new(),
            tokens: Vec::new(),
            devices: Vec::new(),
            webhooks: Vec::new(),
            cluster: Default::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let c: Self = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        c.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(c)
    }

    /// Checks what serde cannot: ranges, references between sections.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.cluster.validate()?;
        for f in &self.fleets {
            f.hours()?;
            f.service()?;
        }
        if !positive(self.engine.closed_retention_s) {
            bail!("engine.closed_retention_s must be above 0");
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 || l.max_frame_bytes > MAX_FRAME_LEN {
            bail!("limits.max_frame_bytes must be within 1024..={MAX_FRAME_LEN}");
        }
        if l.max_connections_per_address == 0
            || l.auth_failures_burst == 0
            || !positive(l.auth_failures_per_minute)
        {
            bail!(
                "limits: per-address connections, auth_failures_burst and _per_minute must be > 0"
            );
        }
        if l.max_connections == 0 || l.max_bidi_streams == 0 || l.max_uni_streams == 0 {
            bail!("limits: connections and streams must be at least 1");
        }
        if l.idle_timeout_s == 0 || l.hello_timeout_s == 0 {
            bail!("limits: timeouts must be at least 1 s");
        }
        if l.max_future_s.is_nan() || l.max_future_s < 0.0 || l.events_per_frame == 0 {
            bail!("limits: max_future_s must be >= 0 and events_per_frame >= 1");
        }
        if !(positive(l.max_past_s) && positive(l.max_speed_mps)) {
            bail!("limits: max_past_s and max_speed_mps must be > 0");
        }
        if !(0..=19).contains(&self.engine.nice) {
            bail!("engine.nice must be within 0..=19");
        }
        if self.engine.tick_ms == 0
            || self.engine.queue_capacity == 0
            || self.engine.queue_pings == 0
        {
            bail!("engine: tick_ms, queue_capacity and queue_pings must be at least 1");
        }
        let st = &self.store;
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(st.checkpoint_every_s)
            || !positive(st.event_retention_s)
            || !positive(st.history_retention_s)
        {
            bail!("store: checkpoint_every_s and the retentions must be positive");
        }
        if let Some(a) = self.http.listen
            && !a.ip().is_loopback()
            && self.tls.cert.is_none()
        {
            bail!(
                "http: without a [tls] certificate the HTTP side speaks plain HTTP, so it listens on a loopback address only ({a} is not): configure [tls] cert and key, or put a TLS proxy in front of a loopback address"
            );
        }
        if let Some(a) = self.osmand.listen
            && !a.ip().is_loopback()
            && self.tls.cert.is_none()
            && !self.osmand.plain_http
        {
            bail!(
                "osmand: without a [tls] certificate the door for driver apps speaks plain HTTP, and the key in each request's path would cross the network in clear: configure [tls], or set osmand.plain_http = true to accept that ({a} is not a loopback address)"
            );
        }
        let mut hooks = std::collections::HashSet::new();
        for w in &self.webhooks {
            w.validate()?;
            if !hooks.insert(w.name.as_str()) {
                bail!("webhooks {:?} defined twice", w.name);
            }
            if !self.fleets.iter().any(|f| f.name == w.fleet) {
                bail!("webhooks {:?}: unknown fleet {:?}", w.name, w.fleet);
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls: give both cert and key, or neither");
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.fleets {
            if !names.insert(f.name.as_str()) {
                bail!("fleet {:?} defined twice", f.name);
            }
            if f.name.is_empty() {
                bail!("a fleet needs a name");
            }
            if f.vehicles.iter().any(|[a, b]| a > b) {
                bail!("fleet {:?}: a vehicle range ends before it starts", f.name);
            }
            if f.vehicles.iter().any(|r| r[1] >= crate::ids::ALLOCATED) {
                bail!(
                    "fleet {:?}: vehicle ranges must stay below 2^62 (above it are the ids lastmile allocates)",
                    f.name
                );
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let label = t.name.clone().unwrap_or_else(|| format!("tokens[{i}]"));
            match (&t.token, &t.token_sha256) {
                (Some(tok), None) if tok.len() >= 16 => {}
                (Some(_), None) => bail!("{label}: tokens must be at least 16 characters"),
                (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {}
                (None, Some(_)) => bail!("{label}: token_sha256 must be 64 hex digits"),
                _ => bail!("{label}: give exactly one of token and token_sha256"),
            }
            match (t.role, &t.fleet) {
                (Role::Admin, None) => {}
                (Role::Admin, Some(_)) => bail!("{label}: admin tokens have no fleet"),
                (Role::Tracking, _) => {
                    bail!("{label}: tracking tokens are created by dispatchers, not configured")
                }
                (_, None) => bail!("{label}: role {} needs a fleet", t.role.as_str()),
                (_, Some(f)) if !names.contains(f.as_str()) => {
                    bail!("{label}: unknown fleet {f:?}")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The engine's configuration.
    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            shards: self.engine.shards,
            queue_capacity: self.engine.queue_capacity,
            queue_pings: self.engine.queue_pings,
            matcher: self.matcher.clone(),
            detect: self.detect,
            eta: self.eta,
            traffic: self.traffic.clone(),
            learning: self.engine.learning,
            traffic_every_s: self.engine.traffic_every_s,
            events_capacity: self.engine.events_capacity,
            closed_retention_s: self.engine.closed_retention_s,
            // A cluster keeps history on its stream whatever `[store]` says.
            history: self.store.enabled || self.cluster.url.is_some(),
            // A cluster's partitions are the engine's: a vehicle's is the
            // same on every node.
            partitions: if self.cluster.url.is_some() {
                self.cluster.partitions as usize
            } else {
                0
            },
            // A cluster node's subscribers read the cluster's event stream.
            relay_events: self.cluster.url.is_some(),
            vehicle_fleets: self
                .fleets
                .iter()
                .flat_map(|f| {
                    let slot = crate::ids::slot_of_fleet(&f.name);
                    f.vehicles.iter().map(move |r| (*r, slot))
                })
                .collect(),
            unranged_fleet: crate::ids::slot_of_fleet(""),
            // Checked by `validate`.
            working_hours: self
                .fleets
                .iter()
                .filter_map(|f| Some((crate::ids::slot_of_fleet(&f.name), f.hours().ok()??)))
                .collect(),
            service: self
                .fleets
                .iter()
                .filter_map(|f| Some((crate::ids::slot_of_fleet(&f.name), f.service().ok()??)))
                .collect(),
            ..FleetConfig::default()
        }
    }
}

/// Above zero (and so not NaN).
fn positive(x: f64) -> bool {
    x > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_and_bad_ones_say_why() {
        let text = r#"
            listen = "0.0.0.0:5000"
            [limits]
            max_connections = 10
            [engine]
            shards = 2
            [matcher]
            sigma_m = 7.0
            [detect]
            offline_s = 600.0
            [[fleets]]
            name = "acme"
            vehicles = [[1, 100], [500, 600]]
            [[tokens]]
            token = "device-token-0123456789"
            role = "device"
            fleet = "acme"
            [[tokens]]
            token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            role = "admin"
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 5000);
        assert_eq!(c.fleet_config().shards, 2);
        assert_eq!(c.fleet_config().matcher.sigma_m, 7.0);
        assert_eq!(c.fleet_config().detect.offline_s, 600.0);
        assert_eq!(c.limits.max_uni_streams, Limits::default().max_uni_streams);

        assert!(toml::from_str::<Config>("listn = \"1.2.3.4:5\"").is_err());
        assert!(toml::from_str::<Config>("[matcher]\nsigma = 3.0").is_err());
        let bad = |extra: &str| {
            let c: Config = toml::from_str(&format!("{text}\n{extra}")).unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(
            bad("[[tokens]]\ntoken = \"short\"\nrole = \"reader\"\nfleet = \"acme\"")
                .contains("16")
        );
        assert!(
            bad("[[tokens]]\ntoken = \"0123456789abcdefg\"\nrole = \"reader\"\nfleet = \"nope\"")
                .contains("unknown fleet")
        );
        assert!(
            bad("[[tokens]]\ntoken = \"0123456789abcdefg\"\nrole = \"reader\"")
                .contains("needs a fleet")
        );
        assert!(bad("[[fleets]]\nname = \"acme\"\nvehicles = []").contains("twice"));
        assert!(bad("[[fleets]]\nname = \"b\"\nvehicles = [[5, 1]]").contains("ends before"));
        let hours = |tz: &str, spans: &str| {
            format!("[[fleets]]\nname = \"h\"\ntime_zone = \"{tz}\"\nworking_hours = [{spans}]")
        };
        assert!(bad(&hours("Mars/Olympus", "\"mon 07:00-19:00\"")).contains("Mars/Olympus"));
        assert!(bad(&hours("Europe/Lisbon", "\"mon 7-19\"")).contains("fleet \"h\""));
        assert!(bad(&hours("Europe/Lisbon", "")).contains("time_zone without working_hours"));
        let good: Config = toml::from_str(&format!(
            "{text}\n{}",
            hours("Europe/Lisbon", "\"mon-fri 07:00-19:00\"")
        ))
        .unwrap();
        good.validate().unwrap();
        assert_eq!(good.fleet_config().working_hours.len(), 1);
        let service = |field: &str| format!("[[fleets]]\nname = \"s\"\n{field}");
        assert!(bad(&service("service_every_km = -5.0")).contains("service_every_km"));
        assert!(bad(&service("service_every_days = 0.0")).contains("positive"));
        let good: Config = toml::from_str(&format!(
            "{text}\n{}",
            service("service_every_km = 15000.0\nservice_every_days = 365.0")
        ))
        .unwrap();
        good.validate().unwrap();
        let [(_, interval)] = good.fleet_config().service[..] else {
            panic!("one fleet's interval")
        };
        assert_eq!(interval.distance_m, Some(15_000_000.0));
        assert_eq!(
            (interval.moving_s, interval.calendar_s),
            (None, Some(365.0 * 86_400.0))
        );
        let hook = |name: &str, url: &str, fleet: &str, secrets: &str| {
            format!(
                "[[webhooks]]\nname = \"{name}\"\nfleet = \"{fleet}\"\nurl = \"{url}\"\nsecrets = [{secrets}]\n"
            )
        };
        let s = "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"";
        assert!(bad(&hook("a-b", "https://x", "acme", s)).contains("letters, digits or '_'"));
        assert!(bad(&hook("a", "ftp://x", "acme", s)).contains("http"));
        assert!(bad(&hook("a", "https://x", "nope", s)).contains("unknown fleet"));
        assert!(bad(&hook("a", "https://x", "acme", "")).contains("at least one secret"));
        let twice = hook("a", "https://x", "acme", s);
        assert!(bad(&format!("{twice}{twice}")).contains("twice"));
        assert!(
            bad("[osmand]\nlisten = \"0.0.0.0:5055\"").contains("plain_http"),
            "plain HTTP off loopback must be asked for"
        );
    }
}
