//! The public map-matching benchmark of Kubička et al. (IEEE IV 2015): real
//! 1 Hz drives, each with its own road network as node and arc lists and the
//! ground-truth route as the arc ids driven. Readers take any `BufRead`; the
//! caller opens (and un-gzips) the files.
//!
//! Each arc becomes a one-way road whose "way id" is the arc id, so a matched
//! edge names the arc it lies on. The score is the share of pings matched onto
//! an arc of the true route and the route mismatch fraction over arcs.

use std::io::BufRead;

use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::highway::{HighwayClass, SpeedLimit, WayAttributes};
use lastmile_roadgraph::network::{RawNetwork, RawWay};
use lastmile_roadgraph::{Graph, LatLon};

use crate::evaluate::{Accuracy, TraceMatch, route_mismatch};
use crate::ping::Ping;
use crate::trace::{Trace, TraceError, TraceRow};

fn bad(what: &str, line: usize) -> TraceError {
    TraceError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what}: malformed line {}", line + 1),
    ))
}

fn fields<R: BufRead>(input: R, what: &str, n: usize) -> Result<Vec<Vec<f64>>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| bad(what, i))?;
        if v.len() < n {
            return Err(bad(what, i));
        }
        out.push(v);
    }
    Ok(out)
}

/// A benchmark road network: the raw network and each arc's length, metres.
pub struct ArcNetwork {
    pub net: RawNetwork,
    pub arc_length_m: Vec<f64>,
}

/// Reads `nodes` (`lon lat` per line) and `arcs` (`from to` per line).
pub fn read_network<N: BufRead, A: BufRead>(nodes: N, arcs: A) -> Result<ArcNetwork, TraceError> {
    let mut net = RawNetwork::default();
    let mut pos = Vec::new();
    for v in fields(nodes, "nodes", 2)? {
        let p = LatLon::new(v[1], v[0]);
        if !p.is_valid() {
            return Err(bad("nodes", pos.len()));
        }
        let (lat, lon) = p.to_fixed();
        net.add_node(lat, lon);
        pos.push(p);
    }
    let attrs = WayAttributes {
        class: HighwayClass::Unclassified,
        forward: true,
        backward: false,
        limit_forward: SpeedLimit::Unknown,
        limit_backward: SpeedLimit::Unknown,
    };
    let mut arc_length_m = Vec::new();
    for (i, v) in fields(arcs, "arcs", 2)?.into_iter().enumerate() {
        let (a, b) = (v[0] as usize, v[1] as usize);
        if a >= pos.len() || b >= pos.len() || v[0].fract() != 0.0 || v[1].fract() != 0.0 {
            return Err(bad("arcs", i));
        }
        arc_length_m.push(haversine_m(pos[a], pos[b]));
        if a != b {
            net.ways.push(RawWay {
                id: i as i64,
                nodes: vec![a as u32, b as u32],
                attrs,
            });
        }
    }
    Ok(ArcNetwork { net, arc_length_m })
}

/// Reads a track (`lon lat time` per line) as one vehicle's trace.
pub fn read_track<R: BufRead>(input: R, vehicle: &str) -> Result<Trace, TraceError> {
    let header = csv::StringRecord::from(vec!["vehicle_id", "timestamp", "lat", "lon"]);
    let mut trace = Trace {
        header,
        ..Trace::default()
    };
    for v in fields(input, "track", 3)? {
        let (pos, time) = (LatLon::new(v[1], v[0]), v[2]);
        trace.rows.push(TraceRow {
            vehicle: vehicle.to_string(),
            ping: Ping::new(time, pos),
            truth: None,
            fields: csv::StringRecord::from(vec![
                vehicle.to_string(),
                format!("{time}"),
                format!("{}", pos.lat),
                format!("{}", pos.lon),
            ]),
        });
    }
    Ok(trace)
}

/// Reads a ground-truth route (one arc id per line).
pub fn read_route<R: BufRead>(input: R) -> Result<Vec<i64>, TraceError> {
    fields(input, "route", 1).map(|rows| rows.into_iter().map(|v| v[0] as i64).collect())
}

/// Scores a match of a single-vehicle track against the true arc route:
/// pings on a true arc, and the route mismatch over arcs (with multiplicity).
pub fn score(
    graph: &Graph,
    arc_length_m: &[f64],
    route: &[i64],
    m: &TraceMatch,
    finalized: bool,
) -> Accuracy {
    let on_route: std::collections::HashSet<i64> = route.iter().copied().collect();
    let mut acc = Accuracy::default();
    let mut got: Vec<i64> = Vec::new();
    for (k, im) in m.immediate.iter().enumerate() {
        acc.pings += 1;
        let edge = if finalized {
            m.finalized[k].map(|f| f.edge)
        } else {
            im.status.is_on_road().then_some(im.edge)
        };
        if let Some(e) = edge {
            let arc = graph.way_id(e);
            if on_route.contains(&arc) {
                acc.on_true_way += 1;
            }
            if !finalized && got.last() != Some(&arc) {
                got.push(arc);
            }
        }
    }
    if finalized {
        for t in m.paths.iter().flatten() {
            let arc = graph.way_id(t.edge);
            if t.to_m - t.from_m > 0.01 && got.last() != Some(&arc) {
                got.push(arc);
            }
        }
    }
    let len = |a: i64| arc_length_m.get(a as usize).copied().unwrap_or(0.0);
    route_mismatch(route, &got, len, &mut acc);
    acc
}
