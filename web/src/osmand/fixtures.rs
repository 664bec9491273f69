//! The driver apps' requests written down as fixtures
//! (`data/osmand/requests.http`, whose header says how to read it), and
//! what the door must make of each. The door's own tests read them here;
//! the end-to-end tests send the same bytes to a running server.

use lastmile_node::devices::App;

/// The fixtures file, as built into the crate.
pub const REQUESTS: &str = include_str!("../../../data/osmand/requests.http");

/// One request and what it must read as.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    pub app: App,
    /// Request line, headers, body; `{key}` for the device's key.
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub expect: Expect,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Positions, oldest first.
    Reads(Vec<Expected>),
    /// Refused, the reason holding this text.
    Error(String),
}

/// A position as the door must read it, in SI units.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expected {
    /// `None`: the time of receipt.
    pub time: Option<f64>,
    pub position: Option<(f64, f64)>,
    pub speed_mps: Option<f64>,
    pub heading: Option<f64>,
    pub accuracy: Option<f64>,
    pub battery: Option<f64>,
    pub moving: Option<bool>,
    pub odometer_m: Option<f64>,
}

impl Fixture {
    /// The request's target with `key` in place.
    pub fn target(&self, key: &str) -> String {
        let mut parts = self.request_line.split(' ');
        let _method = parts.next();
        parts.next().unwrap_or("/").replace("{key}", key)
    }

    pub fn method(&self) -> &str {
        self.request_line.split(' ').next().unwrap_or("GET")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as bytes on the wire, with `key` in place, its
    /// `Content-Length` counted, and `Connection: close`.
    pub fn wire(&self, key: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method(), self.target(key));
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("content-length") {
                out += &format!("{k}: {v}\r\n");
            }
        }
        if !self.body.is_empty() || self.method() == "POST" {
            out += &format!("Content-Length: {}\r\n", self.body.len());
        }
        out += "Connection: close\r\n\r\n";
        out += &self.body;
        out.into_bytes()
    }

    /// The device id the request names, if it can be read.
    pub fn device(&self) -> Option<String> {
        let json = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        let target = self.target("k");
        let query = target.split_once('?').map(|(_, q)| q);
        super::report::read(json, query, self.body.as_bytes())
            .ok()
            .map(|r| r.device)
    }
}

fn value(v: &str) -> Option<f64> {
    (v != "-").then(|| v.parse().expect("a number in an expectation"))
}

fn expected(line: &str) -> Expected {
    let mut e = Expected::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=').expect("key=value in an expectation");
        match k {
            "t" => e.time = (v != "now").then(|| v.parse().expect("a time")),
            "pos" => {
                e.position = (v != "-").then(|| {
                    let (a, b) = v.split_once(',').expect("LAT,LON");
                    (a.parse().expect("lat"), b.parse().expect("lon"))
                })
            }
            "speed" => e.speed_mps = value(v),
            "heading" => e.heading = value(v),
            "acc" => e.accuracy = value(v),
            "batt" => e.battery = value(v),
            "moving" => e.moving = (v != "-").then(|| v == "true"),
            "odo" => e.odometer_m = value(v),
            _ => panic!("unknown expectation {k}"),
        }
    }
    e
}

/// Every fixture of `text` (the format of [`REQUESTS`]).
pub fn read(text: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for block in text.split("\n### ").skip(1) {
        let mut lines = block.lines();
        let name = lines
            .next()
            .and_then(|l| l.split(':').next())
            .unwrap_or("")
            .trim()
            .to_string();
        let mut app = App::Traccar;
        let mut request_line = String::new();
        for l in lines.by_ref() {
            if l == "app: osmand" {
                app = App::Osmand;
            } else {
                request_line = l.to_string();
                break;
            }
        }
        let mut headers = Vec::new();
        for l in lines.by_ref() {
            match l.split_once(": ") {
                Some((k, v)) if !l.is_empty() => headers.push((k.to_string(), v.to_string())),
                _ => break,
            }
        }
        let (mut body, mut reads, mut error) = (String::new(), Vec::new(), None);
        for l in lines {
            if let Some(e) = l.strip_prefix("=> error: ") {
                error = Some(e.to_string());
            } else if let Some(e) = l.strip_prefix("=> ") {
                reads.push(expected(e));
            } else if !l.is_empty() {
                body += l;
            }
        }
        out.push(Fixture {
            name,
            app,
            request_line,
            headers,
            body,
            expect: error.map_or(Expect::Reads(reads), Expect::Error),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::report::{self, Form};
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn close(a: Option<f64>, b: Option<f64>, what: &str, name: &str) {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-3, "{name}: {what} {a} != {b}"),
            _ => assert_eq!(a.is_some(), b.is_some(), "{name}: {what} {a:?} vs {b:?}"),
        }
    }

    /// Every request of the fixtures reads as written down: each form,
    /// each time format, knots converted, OsmAnd's units, batches in time
    /// order, and what must be refused refused with its reason.
    #[test]
    fn every_fixture_reads_as_written_down() {
        let fixtures = read(REQUESTS);
        assert!(fixtures.len() >= 20, "{} fixtures", fixtures.len());
        for f in &fixtures {
            let json = f
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"));
            let target = f.target("k");
            assert!(
                target.starts_with("/k"),
                "{}: the key leads the path",
                f.name
            );
            let query = target.split_once('?').map(|(_, q)| q);
            let got = report::read(json, query, f.body.as_bytes());
            match &f.expect {
                Expect::Error(want) => {
                    let e = got.expect_err(&f.name);
                    assert!(
                        e.contains(want.as_str()),
                        "{}: {e:?} lacks {want:?}",
                        f.name
                    );
                }
                Expect::Reads(want) => {
                    let r = got.unwrap_or_else(|e| panic!("{}: {e}", f.name));
                    assert_eq!(r.form == Form::Json, json, "{}", f.name);
                    let mut reports = r.reports.clone();
                    reports.sort_by(|a, b| a.time.unwrap_or(NOW).total_cmp(&b.time.unwrap_or(NOW)));
                    assert_eq!(reports.len(), want.len(), "{}", f.name);
                    for (x, w) in reports.iter().zip(want) {
                        let n = &f.name;
                        close(x.time, w.time, "time", n);
                        assert_eq!(x.position.is_some(), w.position.is_some(), "{n}: position");
                        close(x.position.map(|p| p.0), w.position.map(|p| p.0), "lat", n);
                        close(x.position.map(|p| p.1), w.position.map(|p| p.1), "lon", n);
                        close(x.battery.map(f64::from), w.battery, "battery", n);
                        assert_eq!(x.moving, w.moving, "{n}: moving");
                        close(x.odometer_m, w.odometer_m, "odometer", n);
                        let Some(p) = x.ping(r.form, f.app, NOW) else {
                            assert!(w.position.is_none(), "{n}: no ping");
                            continue;
                        };
                        close(Some(p.time), Some(w.time.unwrap_or(NOW)), "ping time", n);
                        close(p.speed.map(f64::from), w.speed_mps, "speed", n);
                        close(p.heading.map(f64::from), w.heading, "heading", n);
                        close(p.accuracy.map(f64::from), w.accuracy, "accuracy", n);
                    }
                }
            }
        }
    }

    #[test]
    fn wire_bytes_carry_the_key_and_the_body_length() {
        let fixtures = read(REQUESTS);
        let f = fixtures
            .iter()
            .find(|f| f.name == "traccar-client-json")
            .expect("fixture");
        let wire = String::from_utf8(f.wire("secret-key")).expect("utf-8");
        assert!(wire.starts_with("POST /secret-key HTTP/1.1\r\n"), "{wire}");
        assert!(wire.contains(&format!("Content-Length: {}\r\n", f.body.len())));
        assert!(wire.ends_with(&f.body));
        assert_eq!(f.device().as_deref(), Some("48241179"));
    }
}
