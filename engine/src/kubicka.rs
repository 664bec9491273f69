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

/// A benchmark road network: the raw network, each arc's length (metres),
/// and the arcs behind each road.
pub struct ArcNetwork {
    pub net: RawNetwork,
    pub arc_length_m: Vec<f64>,
    /// Per road (way id − 1): the arc running along the road's node order
    /// and the one running against it.
    road_arcs: Vec<[Option<u32>; 2]>,
}

/// One road of an [`ArcNetwork`] as OSM draws it: its way id, its two
/// nodes (indices into the node list, in drawing order), and whether it is
/// one-way (in that order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArcWay {
    pub id: i64,
    pub nodes: [u32; 2],
    pub oneway: bool,
}

impl ArcNetwork {
    /// The benchmark arc a graph edge lies on (`-1` if none).
    pub fn arc_of(&self, graph: &Graph, edge: u32) -> i64 {
        let road = graph.way_id(edge) - 1;
        usize::try_from(road)
            .ok()
            .and_then(|r| self.road_arcs.get(r))
            .and_then(|a| a[usize::from(graph.is_reversed(edge))])
            .map_or(-1, i64::from)
    }

    /// The roads, for writing the network as an OSM file.
    pub fn ways(&self) -> impl Iterator<Item = ArcWay> + '_ {
        self.net.ways.iter().map(|w| ArcWay {
            id: w.id,
            nodes: [w.nodes[0], w.nodes[1]],
            oneway: !w.attrs.backward,
        })
    }
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
    let attrs = |backward| WayAttributes {
        class: HighwayClass::Unclassified,
        forward: true,
        backward,
        limit_forward: SpeedLimit::Unknown,
        limit_backward: SpeedLimit::Unknown,
    };
    let mut arc_length_m = Vec::new();
    // Arcs by node pair (lower node first), in order of first appearance.
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let mut pair_arcs: Vec<[Option<u32>; 2]> = Vec::new();
    let mut pair_of: std::collections::HashMap<(u32, u32), usize> = Default::default();
    for (i, v) in fields(arcs, "arcs", 2)?.into_iter().enumerate() {
        let (a, b) = (v[0] as usize, v[1] as usize);
        if a >= pos.len() || b >= pos.len() || v[0].fract() != 0.0 || v[1].fract() != 0.0 {
            return Err(bad("arcs", i));
        }
        arc_length_m.push(haversine_m(pos[a], pos[b]));
        if a == b {
            continue;
        }
        let key = (a.min(b) as u32, a.max(b) as u32);
        let k = *pair_of.entry(key).or_insert_with(|| {
            pairs.push(key);
            pair_arcs.push([None, None]);
            pairs.len() - 1
        });
        // A repeated arc between the same nodes keeps the first.
        let slot = &mut pair_arcs[k][usize::from(a > b)];
        slot.get_or_insert(i as u32);
    }
    let mut road_arcs = Vec::with_capacity(pairs.len());
    for (k, (&(lo, hi), arcs)) in pairs.iter().zip(&pair_arcs).enumerate() {
        // A one-way road is drawn in its arc's direction.
        let (nodes, along) = match arcs {
            [Some(_), Some(_)] | [Some(_), None] => ([lo, hi], *arcs),
            [None, Some(back)] => ([hi, lo], [Some(*back), None]),
            [None, None] => unreachable!("every pair has an arc"),
        };
        net.ways.push(RawWay {
            id: k as i64 + 1,
            nodes: nodes.to_vec(),
            attrs: attrs(along[1].is_some()),
        });
        road_arcs.push(along);
    }
    Ok(ArcNetwork {
        net,
        arc_length_m,
        road_arcs,
    })
}

/// The benchmark's track ids (its subdirectories' names), in order.
pub fn track_ids(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Ok(ids)
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
/// `arc_of` names the arc a graph edge lies on.
pub fn score(
    arc_of: impl Fn(u32) -> i64,
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
            let arc = arc_of(e);
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
            let arc = arc_of(t.edge);
            if t.to_m - t.from_m > 0.01 && got.last() != Some(&arc) {
                got.push(arc);
            }
        }
    }
    let len = |a: i64| {
        usize::try_from(a)
            .ok()
            .and_then(|a| arc_length_m.get(a))
            .copied()
            .unwrap_or(0.0)
    };
    route_mismatch(route, &got, len, &mut acc);
    acc
}
