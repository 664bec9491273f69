//! Real trips with a known end, for judging arrival estimates: each trip is
//! one vehicle's pings from its start to where it stopped, and the time it
//! really took is known at every ping.
//!
//! Two formats are read, told apart by their header:
//! - the Porto taxi CSV (ECML/PKDD-15: `shape` is a WKT `LINESTRING` of
//!   `lon lat` points, `timestamps` one epoch second per point, `TRIP_ID`);
//! - lastmile's trace CSV (../shared/DESIGN.md), each `vehicle_id` one trip
//!   whose last ping is the destination.
//!
//! Trips are split into two halves by a hash of their id, so that one half
//! can teach the engine and the other judge it, whatever order the file has.

use std::io::Read;

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::haversine_m;

use crate::Ping;
use crate::trace::{TraceError, read_csv};

/// One trip: its id and its pings in time order (at least two).
#[derive(Clone, Debug, PartialEq)]
pub struct Trip {
    pub id: String,
    pub pings: Vec<Ping>,
}

/// Which half of a split a trip falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Learn,
    Test,
}

impl Trip {
    /// Where the trip ended.
    pub fn destination(&self) -> LatLon {
        self.pings[self.pings.len() - 1].pos
    }

    /// When it ended.
    pub fn end(&self) -> f64 {
        self.pings[self.pings.len() - 1].time
    }

    pub fn start(&self) -> f64 {
        self.pings[0].time
    }

    /// The half of the split this trip belongs to: a hash of its id (FNV-1a,
    /// mixed), so the split is fixed by the ids alone.
    pub fn half(&self) -> Half {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        // FNV's high bits barely move between ids like "T1" and "T2":
        // mix them all in before taking one.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        if h & 1 == 0 { Half::Learn } else { Half::Test }
    }

    /// A trip that mostly moves: at most half of its steps slower than
    /// 1 m/s (a taxi waiting with the meter running is not a drive an
    /// arrival estimate can know about), and a driven path at most three
    /// times the straight line from start to end (not a tour that came
    /// back where it began).
    pub fn mostly_moves(&self) -> bool {
        let steps = self.pings.windows(2);
        let n = steps.len();
        let (mut slow, mut path) = (0, 0.0);
        for w in steps {
            let d = haversine_m(w[0].pos, w[1].pos);
            path += d;
            if d < (w[1].time - w[0].time) * 1.0 {
                slow += 1;
            }
        }
        let straight = haversine_m(self.pings[0].pos, self.destination());
        n > 0 && slow * 2 <= n && path <= 3.0 * straight
    }
}

/// Trips as one trace, each trip a vehicle named by its id (for matching
/// them as `lastmile match` would).
pub fn as_trace<'a>(trips: impl IntoIterator<Item = &'a Trip>) -> crate::trace::Trace {
    let mut trace = crate::trace::Trace::default();
    for t in trips {
        for p in &t.pings {
            trace.rows.push(crate::trace::TraceRow {
                vehicle: t.id.clone(),
                ping: *p,
                truth: None,
                fields: csv::StringRecord::new(),
            });
        }
    }
    trace
}

/// Trips read from a file, and what could not be read.
#[derive(Debug, Default)]
pub struct Trips {
    pub trips: Vec<Trip>,
    /// Rows (Porto) or pings (trace CSV) that could not be parsed, and trips
    /// of fewer than two points.
    pub skipped: u64,
}

/// Reads trips in either format (see the module documentation).
pub fn read_trips<R: Read>(mut input: R) -> Result<Trips, TraceError> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let first = text.lines().next().unwrap_or("");
    let header: Vec<String> = first
        .split(',')
        .map(|h| h.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    if header.iter().any(|h| h == "shape") && header.iter().any(|h| h == "timestamps") {
        read_porto(text.as_bytes())
    } else {
        Ok(from_trace(read_csv(text.as_bytes())?))
    }
}

fn from_trace(trace: crate::trace::Trace) -> Trips {
    let mut out = Trips {
        skipped: trace.skipped,
        ..Trips::default()
    };
    for (id, rows) in trace.by_vehicle() {
        let pings: Vec<Ping> = rows.iter().map(|&r| trace.rows[r].ping).collect();
        out.push(id, pings);
    }
    out
}

impl Trips {
    fn push(&mut self, id: String, mut pings: Vec<Ping>) {
        pings.retain(|p| p.time.is_finite() && p.pos.is_valid());
        pings.sort_by(|a, b| a.time.total_cmp(&b.time));
        pings.dedup_by(|b, a| b.time <= a.time);
        if pings.len() < 2 {
            self.skipped += 1;
        } else {
            self.trips.push(Trip { id, pings });
        }
    }
}

fn read_porto(input: &[u8]) -> Result<Trips, TraceError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let header = reader.headers()?.clone();
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(shape), Some(times)) = (col("shape"), col("timestamps")) else {
        return Err(TraceError::MissingColumn("shape,timestamps"));
    };
    let id_col = col("trip_id");
    let mut out = Trips::default();
    for (row, rec) in reader.records().enumerate() {
        let Ok(rec) = rec else {
            out.skipped += 1;
            continue;
        };
        let id = id_col
            .and_then(|i| rec.get(i))
            .map_or_else(|| format!("trip-{row}"), str::to_string);
        let points = rec.get(shape).and_then(parse_linestring);
        let stamps: Option<Vec<f64>> = rec.get(times).map(|t| {
            t.split(',')
                .filter_map(|s| s.trim().parse::<f64>().ok())
                .collect()
        });
        match (points, stamps) {
            (Some(points), Some(stamps)) if points.len() == stamps.len() => {
                let pings = points
                    .into_iter()
                    .zip(stamps)
                    .map(|(pos, t)| Ping::new(t, pos))
                    .collect();
                out.push(id, pings);
            }
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

/// `LINESTRING (lon lat, lon lat, …)` into points; `None` if malformed.
fn parse_linestring(wkt: &str) -> Option<Vec<LatLon>> {
    let body = wkt.trim().strip_prefix("LINESTRING")?.trim();
    let body = body.strip_prefix('(')?.strip_suffix(')')?;
    body.split(',')
        .map(|pair| {
            let mut it = pair.split_whitespace().map(str::parse::<f64>);
            let (lon, lat) = (it.next()?.ok()?, it.next()?.ok()?);
            Some(LatLon::new(lat, lon))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTO: &str = "shape,timestamps,TRIP_ID,CALL_TYPE\n\
        \"LINESTRING (-8.6 41.1, -8.601 41.1, -8.602 41.1)\",\"100, 115, 130\",T1,B\n\
        \"LINESTRING (-8.6 41.1)\",\"100\",T2,B\n\
        \"LINESTRING (-8.6 41.1, nonsense)\",\"100, 115\",T3,B\n\
        \"LINESTRING (-8.6 41.1, -8.6 41.2)\",\"100\",T4,B\n";

    #[test]
    fn porto_rows_become_trips_and_bad_rows_are_counted() {
        let t = read_trips(PORTO.as_bytes()).unwrap();
        assert_eq!(t.trips.len(), 1);
        assert_eq!(t.skipped, 3, "one point, bad WKT, count mismatch");
        let trip = &t.trips[0];
        assert_eq!(trip.id, "T1");
        assert_eq!(trip.pings.len(), 3);
        assert_eq!(trip.end(), 130.0);
        assert!((trip.destination().lon - -8.602).abs() < 1e-9);
        assert!((trip.destination().lat - 41.1).abs() < 1e-9);
    }

    #[test]
    fn trace_csv_vehicles_become_trips() {
        let csv = "vehicle_id,timestamp,lat,lon\n\
            a,10,41.1,-8.6\nb,5,41.1,-8.6\na,20,41.1,-8.601\nb,6,41.1,-8.6\n";
        let t = read_trips(csv.as_bytes()).unwrap();
        assert_eq!(t.trips.len(), 2);
        assert_eq!(t.trips[0].id, "a");
        assert_eq!(t.trips[0].end(), 20.0);
    }

    #[test]
    fn a_waiting_taxi_does_not_mostly_move() {
        let step = |i: usize, moving: bool| {
            let lon = -8.6 + if moving { i as f64 * 0.002 } else { 0.0 };
            Ping::new(i as f64 * 15.0, LatLon::new(41.1, lon))
        };
        let moving = Trip {
            id: "m".into(),
            pings: (0..10).map(|i| step(i, true)).collect(),
        };
        assert!(moving.mostly_moves());
        let waiting = Trip {
            id: "w".into(),
            pings: (0..10).map(|i| step(i, i > 7)).collect(),
        };
        assert!(!waiting.mostly_moves());
    }

    #[test]
    fn the_split_is_fixed_by_ids_and_roughly_even() {
        let trips: Vec<Trip> = (0..1000)
            .map(|i| Trip {
                id: format!("T{i}"),
                pings: vec![],
            })
            .collect();
        let learn = trips.iter().filter(|t| t.half() == Half::Learn).count();
        assert!((400..600).contains(&learn), "{learn}");
        assert_eq!(trips[7].half(), trips[7].clone().half());
    }
}
