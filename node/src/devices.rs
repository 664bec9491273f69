//! The phones that report over the OsmAnd door (Traccar Client, OsmAnd's
//! live tracking). Those apps send only a device identifier, so each one
//! is listed in `lastmile.toml` (`[[devices]]`) with the fleet and vehicle
//! it reports for, an optional key of its own, and which app it is (the
//! apps write speed and accuracy differently). A device the config does
//! not list is refused.
//!
//! A request proves itself with the first segment of its URL path
//! (`http://host:5055/<key>`): the device's own key, or a token of its
//! fleet whose role may send pings. A fleet may also take any device
//! (`id = "*"`): then a request with a token of that fleet reports for the
//! vehicle named by its device id, so a fleet of a thousand phones needs
//! one line, not a thousand. What the apps report besides the position
//! (battery, charging, moving, odometer) is kept per device and shown with
//! the vehicle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::bail;
use serde::Deserialize;

use crate::auth::{self, Auth, FleetId, Principal, Role};

/// `[osmand]`: the door for the driver apps, off unless given an address.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OsmAndConfig {
    /// TCP address (the apps' convention is port 5055). HTTPS with the
    /// `[tls]` certificate when one is configured.
    pub listen: Option<SocketAddr>,
    /// Without a certificate, serve plain HTTP on any address (the apps'
    /// default). The key in the path then crosses the network in clear:
    /// say so explicitly. Without this, plain HTTP is for loopback only.
    pub plain_http: bool,
}

/// Which app a device runs: how its query form reads.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum App {
    /// Traccar Client and Traccar's convention: `speed` in knots,
    /// `accuracy` in metres, `hdop` a dilution of precision.
    #[default]
    Traccar,
    /// OsmAnd's live tracking template: `speed` in m/s, and its `hdop`
    /// placeholder is the accuracy in metres.
    Osmand,
}

/// One `[[devices]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// What the app sends as `id`, `deviceid` or `device_id`; `*`: any
    /// device reporting with a token of the fleet (no key of its own).
    pub id: String,
    pub fleet: String,
    /// The fleet's id for the vehicle (default: the device id).
    #[serde(default)]
    pub vehicle: Option<String>,
    /// The device's own key, in clear or as its hex SHA-256 (at most one).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_sha256: Option<String>,
    #[serde(default)]
    pub app: App,
}

/// What a device reported besides its position, as of its newest report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reported {
    /// Time of the newest position taken from it (seconds).
    pub time: f64,
    /// Battery level, percent.
    pub battery: Option<f32>,
    pub charging: Option<bool>,
    /// The app's own motion state (Traccar Client's `is_moving`).
    pub moving: Option<bool>,
    /// The app's odometer, metres.
    pub odometer_m: Option<f64>,
}

/// Most gaps remembered per device: a phone offline a dozen times a day
/// uploads its buffer soon after each.
const MAX_GAPS: usize = 16;

/// Where a device's live path is, for placing positions that arrive late.
#[derive(Debug, Default)]
struct Live {
    /// Time of its newest position the engine took.
    newest: f64,
    /// Stretches between two positions taken one after the other but
    /// further apart than the matcher joins (`max_gap_s`): the live path
    /// breaks there, and late positions inside may fill them.
    gaps: Vec<(f64, f64)>,
}

/// A listed device.
pub struct Device {
    pub id: String,
    pub fleet: FleetId,
    pub vehicle: String,
    pub app: App,
    key: Option<[u8; 32]>,
    /// The engine's id of its vehicle, once a report created the name.
    pub engine_id: OnceLock<u64>,
    pub reported: Mutex<Reported>,
    live: Mutex<Live>,
    /// Held while one of its requests is handed over, so that its
    /// positions reach the engine in order.
    pub order: tokio::sync::Mutex<()>,
}

impl Device {
    fn new(id: String, fleet: FleetId, vehicle: String, app: App, key: Option<[u8; 32]>) -> Self {
        Self {
            id,
            fleet,
            vehicle,
            app,
            key,
            engine_id: OnceLock::new(),
            reported: Mutex::new(Reported::default()),
            live: Mutex::new(Live::default()),
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// Time of its newest position the engine took (0: none yet).
    pub fn newest(&self) -> f64 {
        lock(&self.live).newest
    }

    /// Notes positions the engine took, oldest first: the newest, and the
    /// gaps wider than `max_gap_s` that break its live path.
    pub fn taken(&self, times: impl IntoIterator<Item = f64>, max_gap_s: f64) {
        let mut live = lock(&self.live);
        for t in times {
            if live.newest > 0.0 && t - live.newest > max_gap_s {
                if live.gaps.len() == MAX_GAPS {
                    live.gaps.remove(0);
                }
                let gap = (live.newest, t);
                live.gaps.push(gap);
            }
            live.newest = live.newest.max(t);
        }
    }

    /// Of late positions (oldest first), those inside gaps of the live
    /// path, to be matched on their own into its history; each gap keeps
    /// only what is left on either side of them. The rest fall where the
    /// live path already goes.
    pub fn fill_gaps<T>(&self, late: Vec<T>, time: impl Fn(&T) -> f64) -> Vec<Vec<T>> {
        let mut live = lock(&self.live);
        let mut by_gap: Vec<Vec<T>> = (0..live.gaps.len()).map(|_| Vec::new()).collect();
        for x in late {
            let t = time(&x);
            if let Some(i) = live.gaps.iter().position(|&(a, b)| a < t && t < b) {
                by_gap[i].push(x);
            }
        }
        let mut gaps = Vec::new();
        let mut stretches = Vec::new();
        for (&(a, b), xs) in live.gaps.iter().zip(by_gap) {
            match (xs.first(), xs.last()) {
                (Some(f), Some(l)) => {
                    gaps.extend(
                        [(a, time(f)), (time(l), b)]
                            .into_iter()
                            .filter(|(a, b)| a < b),
                    );
                    stretches.push(xs);
                }
                _ => gaps.push((a, b)),
            }
        }
        let extra = gaps.len().saturating_sub(MAX_GAPS);
        gaps.drain(..extra);
        live.gaps = gaps;
        stretches
    }

    /// Whether `credential` (the first segment of the request's path) lets
    /// a request report for this device: its own key, or a token of its
    /// fleet (or an admin's) that may send pings.
    fn admits(&self, auth: &Auth, credential: &str) -> bool {
        if credential.is_empty() {
            return false;
        }
        // Digests are compared, as the token registry does: how long a
        // comparison takes tells nothing about the key itself.
        if self.key == Some(auth::digest(credential)) {
            return true;
        }
        matches!(
            auth.authenticate(credential),
            Some(Principal { role, fleet, stop: None, .. })
                if role.may_send_pings() && (role == Role::Admin || fleet == Some(self.fleet))
        )
    }

    /// The principal its reports act as: a device of its fleet.
    pub fn principal(&self) -> Principal {
        Principal {
            role: Role::Device,
            fleet: Some(self.fleet),
            stop: None,
            label: format!("osmand:{}", self.id),
        }
    }
}

/// Every listed device, by the id its app sends, and those met through a
/// fleet that takes any.
pub struct Devices {
    by_id: HashMap<String, Arc<Device>>,
    /// Fleets that take any device, and the app their devices run.
    any: HashMap<FleetId, App>,
    /// Devices met through `any`, by fleet and id; at most `max_met`.
    met: Mutex<HashMap<(FleetId, String), Arc<Device>>>,
    max_met: usize,
    /// By the engine's vehicle id, as reports resolve them.
    by_vehicle: Mutex<HashMap<u64, Arc<Device>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Devices {
    /// `max_met`: devices met through fleets that take any (the fleets'
    /// vehicle names bound them anyway).
    pub fn new(entries: &[DeviceEntry], auth: &Auth, max_met: usize) -> anyhow::Result<Self> {
        let (mut by_id, mut any) = (HashMap::new(), HashMap::new());
        for (i, e) in entries.iter().enumerate() {
            let label = format!("devices[{i}] ({:?})", e.id);
            let Some(fleet) = auth.fleet_id(&e.fleet) else {
                bail!("{label}: unknown fleet {:?}", e.fleet);
            };
            if e.id == "*" {
                if e.key.is_some() || e.key_sha256.is_some() || e.vehicle.is_some() {
                    bail!(
                        "{label}: any device reports with a token of its fleet and for the vehicle named by its id: no key or vehicle here"
                    );
                }
                if any.insert(fleet, e.app).is_some() {
                    bail!("{label}: fleet {:?} takes any device twice", e.fleet);
                }
                continue;
            }
            if e.id.is_empty() || e.id.len() > 128 || e.id.chars().any(char::is_control) {
                bail!("{label}: a device id is 1 to 128 printable characters");
            }
            let key = match (&e.key, &e.key_sha256) {
                (Some(k), None) if k.len() >= 16 => Some(auth::digest(k)),
                (Some(_), None) => bail!("{label}: a key must be at least 16 characters"),
                (None, Some(h)) => Some(auth::parse_hex32(h).map_err(|e| {
                    anyhow::anyhow!("{label}: key_sha256 must be 64 hex digits ({e})")
                })?),
                (None, None) => None,
                (Some(_), Some(_)) => bail!("{label}: give at most one of key and key_sha256"),
            };
            let vehicle = e.vehicle.clone().unwrap_or_else(|| e.id.clone());
            let device = Device::new(e.id.clone(), fleet, vehicle, e.app, key);
            if by_id.insert(e.id.clone(), Arc::new(device)).is_some() {
                bail!("{label}: the device id is listed twice");
            }
        }
        Ok(Self {
            by_id,
            any,
            met: Mutex::new(HashMap::new()),
            max_met: max_met.max(1),
            by_vehicle: Mutex::new(HashMap::new()),
        })
    }

    /// The device `id` if `credential` lets a request report for it: a
    /// listed device by its key or its fleet's token; otherwise any device
    /// of the fleet whose token it is, if that fleet takes any. `None`
    /// alike for an id nobody listed and a wrong credential.
    pub fn find(&self, auth: &Auth, id: &str, credential: &str) -> Option<Arc<Device>> {
        if let Some(d) = self.by_id.get(id) {
            return d.admits(auth, credential).then(|| d.clone());
        }
        if self.any.is_empty() || id.is_empty() || id.len() > 128 {
            return None;
        }
        let p = auth.authenticate(credential)?;
        let fleet = p
            .fleet
            .filter(|_| p.role.may_send_pings() && p.stop.is_none())?;
        let app = *self.any.get(&fleet)?;
        let mut met = lock(&self.met);
        if let Some(d) = met.get(&(fleet, id.to_string())) {
            return Some(d.clone());
        }
        if met.len() >= self.max_met {
            return None;
        }
        let d = Arc::new(Device::new(id.into(), fleet, id.into(), app, None));
        met.insert((fleet, id.to_string()), d.clone());
        Some(d)
    }

    /// Records that `device` reports for the engine's vehicle `vehicle`.
    pub fn resolved(&self, device: &Arc<Device>, vehicle: u64) {
        if device.engine_id.set(vehicle).is_ok() {
            lock(&self.by_vehicle).insert(vehicle, device.clone());
        }
    }

    /// What the device reporting for `vehicle` last said, if one does.
    pub fn reported_by(&self, vehicle: u64) -> Option<(App, Reported)> {
        let device = lock(&self.by_vehicle).get(&vehicle)?.clone();
        let r = *lock(&device.reported);
        Some((device.app, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FleetEntry, TokenEntry};

    fn auth() -> Auth {
        let fleet = |name: &str| FleetEntry {
            name: name.into(),
            ..FleetEntry::default()
        };
        let token = |t: &str, role, fleet: &str| TokenEntry {
            token: Some(t.into()),
            token_sha256: None,
            role,
            fleet: Some(fleet.into()),
            name: None,
        };
        Auth::new(
            &[fleet("acme"), fleet("globex")],
            &[
                token("acme-device-token-01", Role::Device, "acme"),
                token("acme-reader-token-01", Role::Reader, "acme"),
                token("globex-device-tok-01", Role::Device, "globex"),
            ],
            4,
        )
        .unwrap()
    }

    fn entry(id: &str, fleet: &str, key: Option<&str>) -> DeviceEntry {
        DeviceEntry {
            id: id.into(),
            fleet: fleet.into(),
            vehicle: None,
            key: key.map(Into::into),
            key_sha256: None,
            app: App::Traccar,
        }
    }

    #[test]
    fn a_listed_device_reports_with_its_key_or_its_fleets_token_only() {
        let a = auth();
        let d = Devices::new(
            &[entry("phone-1", "acme", Some("phone-1-secret-key"))],
            &a,
            10,
        )
        .unwrap();
        let found = d
            .find(&a, "phone-1", "phone-1-secret-key")
            .expect("its key");
        assert_eq!((found.vehicle.as_str(), found.fleet), ("phone-1", 0));
        assert!(d.find(&a, "phone-1", "acme-device-token-01").is_some());
        for wrong in [
            "",
            "phone-1-secret-kez",
            "acme-reader-token-01",
            "globex-device-tok-01",
        ] {
            assert!(d.find(&a, "phone-1", wrong).is_none(), "{wrong:?}");
        }
        // Nobody listed it, and acme takes no other device.
        assert!(d.find(&a, "phone-2", "acme-device-token-01").is_none());
    }

    #[test]
    fn a_fleet_that_takes_any_device_takes_it_with_its_token_and_bounded() {
        let a = auth();
        let d = Devices::new(&[entry("*", "acme", None)], &a, 2).unwrap();
        let x = d
            .find(&a, "van-9", "acme-device-token-01")
            .expect("a token of acme");
        assert_eq!((x.vehicle.as_str(), x.fleet), ("van-9", 0));
        let again = d.find(&a, "van-9", "acme-device-token-01").unwrap();
        assert!(Arc::ptr_eq(&x, &again), "the same device each time");
        for wrong in [
            "",
            "acme-reader-token-01",
            "globex-device-tok-01",
            "nope-nope-nope-nope",
        ] {
            assert!(d.find(&a, "van-9", wrong).is_none(), "{wrong:?}");
        }
        assert!(d.find(&a, "van-10", "acme-device-token-01").is_some());
        assert!(
            d.find(&a, "van-11", "acme-device-token-01").is_none(),
            "bounded"
        );
    }

    #[test]
    fn late_positions_fill_the_gaps_of_the_live_path_once() {
        let a = auth();
        let d = Devices::new(&[entry("*", "acme", None)], &a, 4).unwrap();
        let phone = d.find(&a, "van-1", "acme-device-token-01").unwrap();
        // Live: every 5 s to 100, then 400 (a 300 s gap), then on.
        let live = (0..=20).map(|i| f64::from(i) * 5.0).chain([400.0, 405.0]);
        phone.taken(live, 180.0);
        assert_eq!(phone.newest(), 405.0);
        // The offline buffer arrives: 105..395, plus two the live path has.
        let late: Vec<f64> = [50.0, 95.0]
            .into_iter()
            .chain((21..79).map(|i| f64::from(i) * 5.0))
            .collect();
        let stretches = phone.fill_gaps(late, |t| *t);
        assert_eq!(stretches.len(), 1);
        assert_eq!(stretches[0].first(), Some(&105.0));
        assert_eq!(stretches[0].last(), Some(&390.0));
        // Sent again, nothing is placed twice; the gap's rest still can be.
        assert!(phone.fill_gaps(vec![200.0, 300.0], |t| *t).is_empty());
        assert_eq!(phone.fill_gaps(vec![395.0], |t| *t), vec![vec![395.0]]);
        // A gap within max_gap_s is none: the live matcher joined it.
        phone.taken([500.0], 180.0);
        assert!(phone.fill_gaps(vec![450.0], |t| *t).is_empty());
    }

    #[test]
    fn bad_entries_say_why() {
        let a = auth();
        let cases = [
            (vec![entry("p", "nowhere", None)], "unknown fleet"),
            (vec![entry("p", "acme", Some("short"))], "at least 16"),
            (
                vec![entry("p", "acme", None), entry("p", "acme", None)],
                "listed twice",
            ),
            (vec![entry("", "acme", None)], "1 to 128"),
            (
                vec![entry("*", "acme", Some("a-key-for-any-device"))],
                "no key",
            ),
            (
                vec![entry("*", "acme", None), entry("*", "acme", None)],
                "twice",
            ),
        ];
        for (entries, why) in cases {
            let e = Devices::new(&entries, &a, 10).err().expect(why).to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
