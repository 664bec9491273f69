//! A driver app's request read into reports, before anything is looked up.
//! Two forms arrive (README, "Driver apps"):
//!
//! - **The query form** (OsmAnd, the old Traccar Client, most trackers):
//!   `?id=…&lat=…&lon=…&timestamp=…&speed=…`, in the URL of a GET or POST,
//!   or as a form body when the URL has no query (Traccar's rule: a body
//!   is read only then).
//! - **The JSON form** (the current Traccar Client): a body of
//!   `application/json` with `device_id` and one `location` or a batch of
//!   `locations`, each with `timestamp` (ISO 8601), `coords` (`latitude`,
//!   `longitude`, `accuracy`, `speed` in m/s, `heading`, `altitude`; a
//!   negative speed or heading is unknown), `is_moving`, `odometer` and
//!   `battery` (`level` 0–1, `is_charging`).
//!
//! Units are left as sent where they depend on the app ([`Report::ping`]
//! settles them once the device is known). A value that cannot be read
//! (a latitude of 95, `NaN`, a date that is none) fails the request with
//! the reason: nothing of it is taken.

use lastmile_engine::Ping;
use lastmile_node::devices::App;
use lastmile_roadgraph::LatLon;
use serde::Deserialize;

/// Reports one request may carry (the apps buffer offline and upload in
/// batches; Traccar's own tests post a thousand).
pub const MAX_REPORTS: usize = 10_000;

const KNOT_MPS: f64 = 1852.0 / 3600.0;

/// Which form a report came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Query,
    Json,
}

/// One position report as sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Seconds since the epoch; `None`: the app sent none (the server's
    /// time of receipt is used, as Traccar does).
    pub time: Option<f64>,
    /// `None`: a report without a fix (battery, motion only).
    pub position: Option<(f64, f64)>,
    /// As sent: knots or m/s by form and app ([`Report::ping`]).
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    pub altitude: Option<f64>,
    pub accuracy: Option<f64>,
    pub hdop: Option<f64>,
    /// Percent.
    pub battery: Option<f32>,
    pub charging: Option<bool>,
    pub moving: Option<bool>,
    pub odometer_m: Option<f64>,
}

/// A request's reports and the device they are from.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub form: Form,
    pub device: String,
    pub reports: Vec<Report>,
}

impl Report {
    /// The engine's ping, in SI units: the query form's `speed` is knots
    /// from Traccar's apps and m/s from OsmAnd's, whose `hdop` is really
    /// the accuracy in metres; the JSON form is m/s.
    pub fn ping(&self, form: Form, app: App, received: f64) -> Option<Ping> {
        let (lat, lon) = self.position?;
        let speed = self.speed.filter(|s| *s >= 0.0).map(|s| match (form, app) {
            (Form::Query, App::Traccar) => s * KNOT_MPS,
            _ => s,
        });
        let accuracy = match app {
            App::Osmand => self.accuracy.or(self.hdop),
            App::Traccar => self.accuracy,
        };
        let mut p = Ping::new(self.time.unwrap_or(received), LatLon::new(lat, lon));
        p.speed = speed.map(|s| s as f32);
        p.heading = self.heading.filter(|h| *h >= 0.0).map(|h| h as f32);
        p.accuracy = accuracy.map(|a| a as f32);
        Some(p)
    }
}

fn number(key: &str, v: &str) -> Result<f64, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{key}={v:?} is not a number"))
}

fn flag(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

fn checked_position(lat: f64, lon: f64) -> Result<(f64, f64), String> {
    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
        Ok((lat, lon))
    } else {
        Err(format!(
            "position {lat},{lon} is not a latitude and longitude"
        ))
    }
}

/// A request's reports: the JSON form when its content type says so, else
/// the query form from the URL's query, or from the body when the URL has
/// none.
pub fn read(json_body: bool, query_string: Option<&str>, body: &[u8]) -> Result<Request, String> {
    if json_body {
        return json(body);
    }
    match query_string.filter(|q| !q.is_empty()) {
        Some(q) => query(q),
        None if !body.is_empty() => {
            query(std::str::from_utf8(body).map_err(|_| "form body is not UTF-8")?)
        }
        None => Err("no report: neither a query nor a body".into()),
    }
}

/// The query form, from `query` (a URL's, or a form body).
pub fn query(query: &str) -> Result<Request, String> {
    let mut device = None;
    let mut r = Report::default();
    let (mut lat, mut lon, mut valid) = (None, None, true);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "id" | "deviceid" => device = Some(v.trim().to_string()),
            "timestamp" => r.time = Some(super::time::parse(&v)?),
            "lat" => lat = Some(number(&k, &v)?),
            "lon" => lon = Some(number(&k, &v)?),
            "location" => {
                let (a, b) = v
                    .split_once(',')
                    .ok_or_else(|| format!("location={v:?} is not LAT,LON"))?;
                lat = Some(number("location", a)?);
                lon = Some(number("location", b)?);
            }
            "speed" => r.speed = Some(number(&k, &v)?),
            "bearing" | "heading" => r.heading = Some(number(&k, &v)?),
            "altitude" => r.altitude = Some(number(&k, &v)?),
            "accuracy" => r.accuracy = Some(number(&k, &v)?),
            "hdop" => r.hdop = Some(number(&k, &v)?),
            "batt" => r.battery = Some(number(&k, &v)? as f32),
            "charge" => r.charging = Some(flag(&v)),
            "is_moving" | "motion" => r.moving = Some(flag(&v)),
            "odometer" => r.odometer_m = Some(number(&k, &v)?),
            // A fix the device itself marks invalid carries no position.
            "valid" => valid = flag(&v),
            // Cell towers, Wi-Fi, ignition, fuel, …: not what lastmile tracks.
            _ => {}
        }
    }
    let device = device
        .filter(|d| !d.is_empty())
        .ok_or("no device id (id or deviceid)")?;
    r.position = match (lat, lon) {
        (Some(lat), Some(lon)) if valid => Some(checked_position(lat, lon)?),
        (Some(_), None) | (None, Some(_)) => {
            return Err("lat without lon, or lon without lat".into());
        }
        _ => None,
    };
    Ok(Request {
        form: Form::Query,
        device,
        reports: vec![r],
    })
}

#[derive(Deserialize)]
struct JsonBody {
    device_id: Option<serde_json::Value>,
    location: Option<JsonLocation>,
    #[serde(default)]
    locations: Vec<JsonLocation>,
}

#[derive(Deserialize)]
struct JsonLocation {
    timestamp: Option<String>,
    coords: Option<JsonCoords>,
    is_moving: Option<bool>,
    odometer: Option<f64>,
    battery: Option<JsonBattery>,
}

#[derive(Deserialize)]
struct JsonCoords {
    latitude: f64,
    longitude: f64,
    accuracy: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
    altitude: Option<f64>,
}

#[derive(Deserialize)]
struct JsonBattery {
    level: Option<f64>,
    is_charging: Option<bool>,
}

/// The JSON form.
pub fn json(body: &[u8]) -> Result<Request, String> {
    let b: JsonBody = serde_json::from_slice(body).map_err(|e| format!("JSON body: {e}"))?;
    let device = match b.device_id {
        Some(serde_json::Value::String(s)) => s.trim().to_string(),
        // Some builds send the id as a number.
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if device.is_empty() {
        return Err("no device_id".into());
    }
    let locations: Vec<JsonLocation> = b.location.into_iter().chain(b.locations).collect();
    if locations.is_empty() {
        return Err("no location or locations".into());
    }
    if locations.len() > MAX_REPORTS {
        return Err(format!("more than {MAX_REPORTS} locations in one request"));
    }
    let reports = locations
        .into_iter()
        .map(|l| {
            let time = l.timestamp.as_deref().map(super::time::parse).transpose()?;
            let c = l.coords;
            Ok(Report {
                time,
                position: c
                    .as_ref()
                    .map(|c| checked_position(c.latitude, c.longitude))
                    .transpose()?,
                speed: c.as_ref().and_then(|c| c.speed),
                heading: c.as_ref().and_then(|c| c.heading),
                altitude: c.as_ref().and_then(|c| c.altitude),
                accuracy: c.as_ref().and_then(|c| c.accuracy),
                hdop: None,
                battery: l
                    .battery
                    .as_ref()
                    .and_then(|b| b.level)
                    .filter(|l| (0.0..=1.0).contains(l))
                    .map(|l| (l * 100.0) as f32),
                charging: l.battery.as_ref().and_then(|b| b.is_charging),
                moving: l.is_moving,
                odometer_m: l.odometer.filter(|o| o.is_finite() && *o >= 0.0),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Request {
        form: Form::Json,
        device,
        reports,
    })
}
