//! Webhook endpoints as `lastmile.toml` lists them (`[[webhooks]]`): per
//! fleet, a URL, the event kinds it wants and its secrets (Standard
//! Webhooks `whsec_` keys: the first signs, and during a rotation every one
//! listed signs). Delivery is `lastmile-hooks`; what each endpoint must keep
//! across restarts (its cursor in the event log, whether a `410` disabled
//! it) is kept in the store under the keys named here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use lastmile_engine::fleet::Histogram;
use serde::Deserialize;

/// The retry schedule of the Standard Webhooks specification: after the
/// first attempt, again after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h.
pub const RETRY_SCHEDULE_S: [f64; 7] = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];

fn default_timeout() -> f64 {
    15.0
}

fn default_schedule() -> Vec<f64> {
    RETRY_SCHEDULE_S.to_vec()
}

fn default_in_flight() -> usize {
    1
}

/// The most requests one endpoint may have in flight.
const MAX_IN_FLIGHT: usize = 256;

fn default_tracking_ttl() -> u64 {
    2 * 86_400
}

/// The longest a milestone's tracking link may be made to last, as for
/// minted tracking tokens.
const MAX_TRACKING_TTL_S: u64 = 30 * 86_400;

/// One `[[webhooks]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// Unique; names the endpoint in counters, logs and `lastmile webhooks`.
    pub name: String,
    pub fleet: String,
    /// `https://…` (or `http://`).
    pub url: String,
    /// Event kinds it wants (names as in the event feed); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// `whsec_…` secrets: the first signs; every one signs while several
    /// are listed (a rotation).
    pub secrets: Vec<String>,
    /// Deliver to loopback and private addresses too (refused by default:
    /// a webhook must not reach into the server's own network).
    #[serde(default)]
    pub allow_private: bool,
    /// One attempt's time limit.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Waits between attempts (seconds), then the event is given up.
    #[serde(default = "default_schedule")]
    pub retry_schedule_s: Vec<f64>,
    /// A customer milestone carries a tracking link's token for its stop,
    /// valid at least this long (seconds of wall-clock time; 0: no links).
    #[serde(default = "default_tracking_ttl")]
    pub tracking_ttl_s: u64,
    /// Requests in flight at once. 1 (the default): every event in the
    /// log's order, one after another. Above 1: each vehicle's events in
    /// order, several vehicles' at once, for an endpoint far enough away
    /// that one request per round trip is too slow.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

impl WebhookEntry {
    /// Store key of its cursor: the next event id to deliver.
    pub fn cursor_key(&self) -> String {
        format!("webhook.{}.cursor", self.name)
    }

    /// Store key of its disabled mark: the hash of the URL a `410`
    /// disabled (a new URL starts afresh).
    pub fn disabled_key(&self) -> String {
        format!("webhook.{}.disabled", self.name)
    }

    /// The mark its URL leaves when a `410` disables it.
    pub fn url_mark(&self) -> u64 {
        // FNV-1a: stable across builds and platforms.
        self.url
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
            .max(1)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let label = format!("webhooks {:?}", self.name);
        // The name is part of metric names, which take letters, digits
        // and '_' only.
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            anyhow::bail!("{label}: a name is 1 to 64 letters, digits or '_'");
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            anyhow::bail!("{label}: url must be http:// or https://");
        }
        if self.secrets.is_empty() {
            anyhow::bail!("{label}: give at least one secret (whsec_…)");
        }
        if !(self.timeout_s > 0.0 && self.timeout_s <= 300.0) {
            anyhow::bail!("{label}: timeout_s must be within (0, 300]");
        }
        if self
            .retry_schedule_s
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.0))
        {
            anyhow::bail!("{label}: retry_schedule_s must be seconds >= 0");
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            anyhow::bail!("{label}: max_in_flight must be 1 to {MAX_IN_FLIGHT}");
        }
        if self.tracking_ttl_s > MAX_TRACKING_TTL_S {
            anyhow::bail!("{label}: tracking_ttl_s is at most {MAX_TRACKING_TTL_S} (30 days)");
        }
        Ok(())
    }
}

/// How one endpoint's delivery is going, for counters, `/metrics` and
/// `lastmile webhooks`.
pub struct EndpointStatus {
    pub name: String,
    pub fleet: String,
    pub url: String,
    /// Events delivered (a `2xx`).
    pub delivered: AtomicU64,
    /// Attempts that failed (an error status, a timeout, no connection).
    pub failed_attempts: AtomicU64,
    /// Events given up after the whole retry schedule.
    pub gave_up: AtomicU64,
    /// Events of the log not yet examined for it.
    pub backlog: AtomicU64,
    /// A `410 Gone` (or an address it may not reach) disabled it.
    pub disabled: AtomicBool,
    /// This node delivers it now (on a cluster, one node at a time does).
    pub delivering: AtomicBool,
    /// The last failure: when (ms since the epoch) and what.
    pub last_error: Mutex<Option<(i64, String)>>,
    /// From an event's storing to its delivery.
    pub latency: Mutex<Histogram>,
}

impl EndpointStatus {
    pub fn new(e: &WebhookEntry) -> Self {
        Self {
            name: e.name.clone(),
            fleet: e.fleet.clone(),
            url: e.url.clone(),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            delivering: AtomicBool::new(false),
            last_error: Mutex::new(None),
            latency: Mutex::new(Histogram::default()),
        }
    }

    pub fn failed(&self, what: String) {
        tracing::debug!(endpoint = %self.name, "{what}");
        let now = crate::auth::epoch_ms(std::time::SystemTime::now());
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, what));
    }

    /// Counters under `webhook_<name>_…`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let us = |q: f64| l.quantile(q).as_micros() as u64;
        let n = &self.name;
        vec![
            (
                format!("webhook_{n}_delivered"),
                self.delivered.load(Relaxed),
            ),
            (
                format!("webhook_{n}_failed_attempts"),
                self.failed_attempts.load(Relaxed),
            ),
            (format!("webhook_{n}_gave_up"), self.gave_up.load(Relaxed)),
            (format!("webhook_{n}_backlog"), self.backlog.load(Relaxed)),
            (
                format!("webhook_{n}_disabled"),
                u64::from(self.disabled.load(Relaxed)),
            ),
            (
                format!("webhook_{n}_delivering"),
                u64::from(self.delivering.load(Relaxed)),
            ),
            (format!("webhook_{n}_latency_p50_us"), us(0.5)),
            (format!("webhook_{n}_latency_p99_us"), us(0.99)),
        ]
    }
}

/// Every endpoint's status, as delivery starts them.
#[derive(Default)]
pub struct Registry(Mutex<Vec<Arc<EndpointStatus>>>);

impl Registry {
    pub fn add(&self, s: Arc<EndpointStatus>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    pub fn all(&self) -> Vec<Arc<EndpointStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> anyhow::Result<WebhookEntry> {
        let text = format!(
            "name = \"notify\"\nfleet = \"acme\"\nurl = \"https://example.com/hook\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n{extra}"
        );
        let e: WebhookEntry = toml::from_str(&text)?;
        e.validate()?;
        Ok(e)
    }

    #[test]
    fn defaults_follow_the_specification() {
        let e = entry("").unwrap();
        assert_eq!(e.retry_schedule_s, RETRY_SCHEDULE_S);
        assert_eq!(
            (e.timeout_s, e.max_in_flight, e.tracking_ttl_s),
            (15.0, 1, 172_800)
        );
        assert!(e.kinds.is_empty() && !e.allow_private);
    }

    #[test]
    fn bad_entries_are_refused_naming_what_is_wrong() {
        for (extra, says) in [
            ("max_in_flight = 0", "max_in_flight"),
            ("max_in_flight = 257", "max_in_flight"),
            ("tracking_ttl_s = 2600000", "tracking_ttl_s"),
            ("timeout_s = 0", "timeout_s"),
            ("retry_schedule_s = [5, -1]", "retry_schedule_s"),
        ] {
            let err = entry(extra).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("notify"),
                "{extra}: {err}"
            );
        }
        let bad_name = entry("").map(|mut e| {
            e.name = "no spaces".into();
            e.validate()
        });
        assert!(bad_name.unwrap().is_err());
        assert!(entry("unknown_key = 1").is_err(), "unknown keys are errors");
    }
}
