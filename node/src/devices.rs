//! The phones that report over the OsmAnd door (Traccar Client, OsmAnd's
//! live tracking). Those apps send only a device identifier, so each one
//! is listed in `lastmile.toml` (`[[devices]]`) with the fleet and vehicle
//! it reports for, an optional key of its own, and which app it is (the
//! apps write speed and accuracy differently). A device the config does
//! not list is refused.
//!
//! A request proves itself with the first segment of its URL path
//! (`http://host:5055/<key>`): the device's own key, or a token of its
//! fleet whose role may send pings. What the apps report besides the
//! position (battery, charging, moving, odometer) is kept per device and
//! shown with the vehicle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

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
    /// What the app sends as `id`, `deviceid` or `device_id`.
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
}

impl Device {
    /// Whether `credential` (the first segment of the request's path) lets
    /// a request report for this device: its own key, or a token of its
    /// fleet (or an admin's) that may send pings.
    pub fn admits(&self, auth: &Auth, credential: &str) -> bool {
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

/// Every listed device, by the id its app sends.
#[derive(Default)]
pub struct Devices {
    by_id: HashMap<String, Device>,
    /// Device id by the engine's vehicle id, as reports resolve them.
    by_vehicle: Mutex<HashMap<u64, String>>,
}

impl Devices {
    pub fn new(entries: &[DeviceEntry], auth: &Auth) -> anyhow::Result<Self> {
        let mut by_id = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let label = format!("devices[{i}] ({:?})", e.id);
            if e.id.is_empty() || e.id.len() > 128 || e.id.chars().any(char::is_control) {
                bail!("{label}: a device id is 1 to 128 printable characters");
            }
            let Some(fleet) = auth.fleet_id(&e.fleet) else {
                bail!("{label}: unknown fleet {:?}", e.fleet);
            };
            let key = match (&e.key, &e.key_sha256) {
                (Some(k), None) if k.len() >= 16 => Some(auth::digest(k)),
                (Some(_), None) => bail!("{label}: a key must be at least 16 characters"),
                (None, Some(h)) => Some(auth::parse_hex32(h).map_err(|e| {
                    anyhow::anyhow!("{label}: key_sha256 must be 64 hex digits ({e})")
                })?),
                (None, None) => None,
                (Some(_), Some(_)) => bail!("{label}: give at most one of key and key_sha256"),
            };
            let device = Device {
                id: e.id.clone(),
                fleet,
                vehicle: e.vehicle.clone().unwrap_or_else(|| e.id.clone()),
                app: e.app,
                key,
                engine_id: OnceLock::new(),
                reported: Mutex::new(Reported::default()),
            };
            if by_id.insert(e.id.clone(), device).is_some() {
                bail!("{label}: the device id is listed twice");
            }
        }
        Ok(Self {
            by_id,
            by_vehicle: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.by_id.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records that `device` reports for the engine's vehicle `vehicle`.
    pub fn resolved(&self, device: &Device, vehicle: u64) {
        if device.engine_id.set(vehicle).is_ok() {
            self.by_vehicle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(vehicle, device.id.clone());
        }
    }

    /// What the device reporting for `vehicle` last said, if one does.
    pub fn reported_by(&self, vehicle: u64) -> Option<(App, Reported)> {
        let by_vehicle = self.by_vehicle.lock().unwrap_or_else(|p| p.into_inner());
        let device = self.by_id.get(by_vehicle.get(&vehicle)?)?;
        let r = *device.reported.lock().unwrap_or_else(|p| p.into_inner());
        Some((device.app, r))
    }
}
