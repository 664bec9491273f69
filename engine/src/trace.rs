//! The trace exchange format (../shared/DESIGN.md): CSV with a header row,
//! columns by name in any order, `vehicle_id,timestamp,lat,lon` required,
//! `speed,heading,accuracy` and the ground truth `true_lat,true_lon,true_way_id`
//! optional, unknown columns kept and ignored; and GPX tracks (one vehicle per
//! file). Readers take any `Read`, so the engine stays free of file handling.
//!
//! A row that cannot be parsed (wrong field count, a number that is not one)
//! is skipped and counted with its line number rather than failing the file;
//! values that parse but are absurd (NaN, out of range) are kept, so the
//! matcher rejects and counts them like any live ping.

use std::io::{Read, Write};

use lastmile_roadgraph::LatLon;

use crate::ping::Ping;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace has no header row")]
    Empty,
    #[error("trace header lacks required column `{0}` (needs vehicle_id,timestamp,lat,lon)")]
    MissingColumn(&'static str),
    #[error("No tracks found in GPX (only <trkpt> track points are read)")]
    NoTracks,
    #[error("malformed GPX near byte {0}: {1}")]
    Gpx(usize, &'static str),
    #[error("reading trace: {0}")]
    Csv(#[from] csv::Error),
    #[error("reading trace: {0}")]
    Io(#[from] std::io::Error),
}

/// Ground truth carried by simulated (or hand-labelled) traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truth {
    pub pos: LatLon,
    pub way_id: i64,
}

/// One input row.
#[derive(Clone, Debug)]
pub struct TraceRow {
    pub vehicle: String,
    pub ping: Ping,
    pub truth: Option<Truth>,
    /// The row's fields as read, to be echoed by `match`.
    pub fields: csv::StringRecord,
}

/// A whole trace in input order.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub header: csv::StringRecord,
    pub rows: Vec<TraceRow>,
    /// Rows skipped as unparseable, and the first few line numbers.
    pub skipped: u64,
    pub skipped_lines: Vec<u64>,
    /// GPX only: the file's timestamps were absent or unusable (not
    /// increasing), so times were synthesised from the distances.
    pub times_synthesized: bool,
}

impl Trace {
    /// Row indices grouped by vehicle (vehicles in order of first
    /// appearance), each group sorted by time (stable, so duplicates keep
    /// their input order).
    pub fn by_vehicle(&self) -> Vec<(String, Vec<usize>)> {
        let mut index = std::collections::HashMap::new();
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, r) in self.rows.iter().enumerate() {
            let g = *index.entry(r.vehicle.as_str()).or_insert_with(|| {
                groups.push((r.vehicle.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        for (_, rows) in &mut groups {
            rows.sort_by(|&a, &b| self.rows[a].ping.time.total_cmp(&self.rows[b].ping.time));
        }
        groups
    }

    /// True when every row carries ground truth.
    pub fn has_truth(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.truth.is_some())
    }
}

struct Columns {
    vehicle: usize,
    time: usize,
    lat: usize,
    lon: usize,
    speed: Option<usize>,
    heading: Option<usize>,
    accuracy: Option<usize>,
    true_lat: Option<usize>,
    true_lon: Option<usize>,
    true_way: Option<usize>,
}

impl Columns {
    fn find(header: &csv::StringRecord) -> Result<Self, TraceError> {
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let need = |name: &'static str| col(name).ok_or(TraceError::MissingColumn(name));
        Ok(Self {
            vehicle: need("vehicle_id")?,
            time: need("timestamp")?,
            lat: need("lat")?,
            lon: need("lon")?,
            speed: col("speed"),
            heading: col("heading"),
            accuracy: col("accuracy"),
            true_lat: col("true_lat"),
            true_lon: col("true_lon"),
            true_way: col("true_way_id"),
        })
    }

    fn parse(&self, rec: &csv::StringRecord) -> Option<TraceRow> {
        let field = |i: usize| rec.get(i).map(str::trim);
        let num = |i: usize| field(i)?.parse::<f64>().ok();
        // Optional columns: empty means absent, garbage makes the row bad.
        let opt = |i: Option<usize>| -> Option<Option<f32>> {
            match i.and_then(field) {
                None | Some("") => Some(None),
                Some(s) => s.parse::<f32>().ok().map(Some),
            }
        };
        let time = parse_time(field(self.time)?)?;
        let pos = LatLon::new(num(self.lat)?, num(self.lon)?);
        let truth = match (self.true_lat, self.true_lon, self.true_way) {
            (Some(a), Some(b), Some(w)) if !field(a)?.is_empty() => Some(Truth {
                pos: LatLon::new(num(a)?, num(b)?),
                way_id: field(w)?.parse().ok()?,
            }),
            _ => None,
        };
        Some(TraceRow {
            vehicle: field(self.vehicle)?.to_string(),
            ping: Ping {
                time,
                pos,
                speed: opt(self.speed)?,
                heading: opt(self.heading)?,
                accuracy: opt(self.accuracy)?,
            },
            truth,
            fields: rec.clone(),
        })
    }
}

/// Reads a trace CSV.
pub fn read_csv<R: Read>(input: R) -> Result<Trace, TraceError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    let header = reader.headers()?.clone();
    if header.is_empty() {
        return Err(TraceError::Empty);
    }
    let cols = Columns::find(&header)?;
    let mut trace = Trace {
        header: header.clone(),
        ..Trace::default()
    };
    for rec in reader.records() {
        let rec = match rec {
            Ok(r) => r,
            // Invalid UTF-8 or similar in one record: skip the record.
            Err(e) if !matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                trace.skip(e.position().map_or(0, |p| p.line()));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match cols.parse(&rec) {
            Some(row) if rec.len() == header.len() => trace.rows.push(row),
            _ => trace.skip(rec.position().map_or(0, |p| p.line())),
        }
    }
    Ok(trace)
}

impl Trace {
    fn skip(&mut self, line: u64) {
        self.skipped += 1;
        if self.skipped_lines.len() < 5 {
            self.skipped_lines.push(line);
        }
    }
}

/// Parses a timestamp: seconds since the Unix epoch (fractional allowed) or
/// RFC 3339 (`2026-01-31T12:00:00Z`, `…T12:00:00.250+01:00`).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(v) => Some(v),
        Err(_) => crate::time::parse_iso8601(s),
    }
}

/// Reads the track points of a GPX file (1.0 or 1.1) as one vehicle's trace.
/// When the file has no usable timestamps (missing, or mostly not
/// increasing: exporters that stamp every point with the same time exist),
/// points get times one second apart, or more when they are far apart (as
/// if driven at 10 m/s), so the matcher's speed bounds hold.
pub fn read_gpx<R: Read>(mut input: R, vehicle: &str) -> Result<Trace, TraceError> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let mut points = gpx_points(&text)?;
    if points.is_empty() {
        return Err(TraceError::NoTracks);
    }
    let increasing = points
        .windows(2)
        .filter(|w| matches!((w[0].1, w[1].1), (Some(a), Some(b)) if b > a))
        .count();
    let synthesize = 2 * increasing < points.len() - 1 || points.iter().any(|p| p.1.is_none());
    if synthesize {
        points.iter_mut().for_each(|p| p.1 = None);
    }
    let header = csv::StringRecord::from(vec!["vehicle_id", "timestamp", "lat", "lon"]);
    let mut trace = Trace {
        header,
        times_synthesized: synthesize,
        ..Trace::default()
    };
    let mut last: Option<(f64, LatLon)> = None;
    for (pos, time) in points {
        let time = match (time, last) {
            (Some(t), _) => t,
            (None, None) => 0.0,
            (None, Some((t, p))) => {
                t + (lastmile_roadgraph::geo::haversine_m(p, pos) / 10.0).max(1.0)
            }
        };
        last = Some((time, pos));
        let fields = csv::StringRecord::from(vec![
            vehicle.to_string(),
            format!("{time:.3}"),
            format!("{:.7}", pos.lat),
            format!("{:.7}", pos.lon),
        ]);
        trace.rows.push(TraceRow {
            vehicle: vehicle.to_string(),
            ping: Ping::new(time, pos),
            truth: None,
            fields,
        });
    }
    Ok(trace)
}

/// `(position, time)` of every `<trkpt>`, in document order.
fn gpx_points(text: &str) -> Result<Vec<(LatLon, Option<f64>)>, TraceError> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut current: Option<(LatLon, Option<f64>)> = None;
    let mut in_time = false;
    while let Some(open) = text[at..].find('<') {
        let start = at + open;
        let text_before = &text[at..start];
        if in_time && let Some(c) = current.as_mut() {
            c.1 = parse_time(text_before.trim());
        }
        let end = text[start..]
            .find('>')
            .map(|e| start + e)
            .ok_or(TraceError::Gpx(start, "unterminated tag"))?;
        let tag = &text[start + 1..end];
        at = end + 1;
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let body = tag.trim_start_matches('/').trim_end_matches('/');
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = &body[..name_end];
        let local = name.rsplit(':').next().unwrap_or(name);
        match (local, closing) {
            ("trkpt", false) => {
                let attrs = &body[name_end..];
                let lat = attribute(attrs, "lat").and_then(|v| v.parse().ok());
                let lon = attribute(attrs, "lon").and_then(|v| v.parse().ok());
                let (Some(lat), Some(lon)) = (lat, lon) else {
                    return Err(TraceError::Gpx(start, "trkpt without numeric lat/lon"));
                };
                let p = (LatLon::new(lat, lon), None);
                if self_closing {
                    out.push(p);
                } else {
                    current = Some(p);
                }
            }
            ("trkpt", true) => {
                if let Some(p) = current.take() {
                    out.push(p);
                }
            }
            ("time", false) => in_time = !self_closing,
            ("time", true) => in_time = false,
            _ => {}
        }
    }
    Ok(out)
}

/// The value of attribute `name` in a tag's attribute text.
fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start();
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = after[1..].find(quote)? + 1;
        if key == name {
            return Some(&after[1..close]);
        }
        rest = &after[close + 1..];
    }
}

/// Writes rows as CSV: the given header, then records.
pub fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().flexible(false).from_writer(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_both_forms() {
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000.5));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_time("2010-01-01T01:00:53Z"), Some(1_262_307_653.0));
        assert_eq!(
            parse_time("2010-01-01T02:00:53+01:00"),
            Some(1_262_307_653.0)
        );
        assert_eq!(
            parse_time("2010-01-01T01:00:53.250Z"),
            Some(1_262_307_653.25)
        );
        assert_eq!(parse_time("2024-02-29 12:00:00"), Some(1_709_208_000.0));
        for bad in [
            "",
            "yesterday",
            "2010-13-01T00:00:00Z",
            "2010-01-01T00:00:00+0x:00",
            "2010-01-01T00:00:00.",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_columns_by_name_and_bad_rows_skipped() {
        let text = "lon,lat,extra,timestamp,vehicle_id,accuracy\n\
                    7.42,43.73,x,100,v1,\n\
                    7.43,43.74,y,not-a-time,v1,5\n\
                    7.44,NaN,z,102,v2,7.5\n\
                    7.45,43.75,w,103\n";
        let t = read_csv(text.as_bytes()).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.skipped, 2);
        assert_eq!(t.rows[0].vehicle, "v1");
        assert_eq!(t.rows[0].ping.pos, LatLon::new(43.73, 7.42));
        assert_eq!(t.rows[0].ping.accuracy, None);
        assert!(t.rows[1].ping.pos.lat.is_nan());
        assert_eq!(t.rows[1].ping.accuracy, Some(7.5));
        assert!(matches!(
            read_csv("vehicle_id,lat,lon\n".as_bytes()),
            Err(TraceError::MissingColumn("timestamp"))
        ));
        assert!(matches!(read_csv("".as_bytes()), Err(TraceError::Empty)));
    }

    #[test]
    fn gpx_track_points_with_and_without_times() {
        let gpx = r#"<?xml version="1.0"?><gpx><wpt lat="1" lon="2"/><trk><trkseg>
            <trkpt lat="45.1" lon='19.7'><ele>3</ele><time>2010-01-01T01:00:53Z</time></trkpt>
            <trkpt lon="19.8" lat="45.2"><time> 2010-01-01T01:01:53.5Z </time></trkpt>
            </trkseg></trk></gpx>"#;
        let t = read_gpx(gpx.as_bytes(), "g").unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[1].ping.pos, LatLon::new(45.2, 19.8));
        assert_eq!(t.rows[1].ping.time - t.rows[0].ping.time, 60.5);
        assert!(!t.times_synthesized);
        let untimed = r#"<gpx><trk><trkseg><trkpt lat="0" lon="0"/><trkpt lat="0" lon="0.001"/></trkseg></trk></gpx>"#;
        let t = read_gpx(untimed.as_bytes(), "g").unwrap();
        assert!(t.times_synthesized);
        assert!(t.rows[1].ping.time > t.rows[0].ping.time);
        let same = r#"<gpx><trkpt lat="0" lon="0"><time>2015-01-01T11:35:02Z</time></trkpt>
            <trkpt lat="0" lon="0.001"><time>2015-01-01T11:35:02Z</time></trkpt>
            <trkpt lat="0" lon="0.002"><time>2015-01-01T11:35:02Z</time></trkpt></gpx>"#;
        let t = read_gpx(same.as_bytes(), "g").unwrap();
        assert!(t.times_synthesized);
        assert!(t.rows.windows(2).all(|w| w[1].ping.time > w[0].ping.time));
        let wpt_only = r#"<gpx><wpt lat="1" lon="2"></wpt></gpx>"#;
        assert!(matches!(
            read_gpx(wpt_only.as_bytes(), "g"),
            Err(TraceError::NoTracks)
        ));
        assert!(matches!(
            read_gpx("<gpx><trkpt lat=".as_bytes(), "g"),
            Err(TraceError::Gpx(..))
        ));
        assert!(matches!(
            read_gpx(r#"<trkpt lat="a" lon="1"/>"#.as_bytes(), "g"),
            Err(TraceError::Gpx(..))
        ));
    }
}
