//! Where a coordinate meets the road network: the nearest road, and the
//! nearest road of the main network when that is another.
//!
//! The graph keeps roads outside its main strongly connected component (a
//! car park with a one-way exit, a street the extract cut off, an island).
//! A delivery address next to such a road may be unreachable, or a dead end
//! the van cannot leave, so stops and route ends prefer the main network
//! unless the other road is much closer, as OSRM (big- and small-component
//! phantoms) and Valhalla (`min_reach`) do. The chosen road is reported with
//! its distance and component, so a dispatcher sees a bad address.

use crate::dijkstra::EdgePos;
use crate::geo::LatLon;
use crate::{EdgeCandidate, Graph};

/// Another component's road is preferred to the main network's only when it
/// is at most this share of the main road's distance ...
const MUCH_CLOSER_SHARE: f64 = 0.25;
/// ... and at least this many metres closer.
const MUCH_CLOSER_M: f64 = 50.0;
/// Roads examined, nearest first, for one of the main network.
const NEAREST_K: usize = 32;

/// A point snapped onto one road.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snap {
    /// The edge the point projects onto and where along it.
    pub edge: u32,
    pub offset_m: f64,
    /// Metres from the coordinate to the road.
    pub distance_m: f64,
    /// Component of the road (0 is the main network). A one-way road
    /// joining two components reports its head's.
    pub component: u32,
}

impl Snap {
    fn from_candidate(g: &Graph, c: &EdgeCandidate) -> Self {
        Self {
            edge: c.edge,
            offset_m: c.offset_m,
            distance_m: c.distance_m,
            component: road_component(g, c.edge),
        }
    }

    /// The snapped point as route ends: this edge and, on a two-way road,
    /// the same point on the other direction (at most two).
    pub fn positions(&self, g: &Graph) -> Vec<EdgePos> {
        let mut out = vec![EdgePos {
            edge: self.edge,
            offset_m: self.offset_m,
        }];
        if let Some(r) = g.reverse_edge(self.edge) {
            out.push(EdgePos {
                edge: r,
                offset_m: (g.length_m(r) - self.offset_m).max(0.0),
            });
        }
        out
    }

    /// The snapped point on the road.
    pub fn point(&self, g: &Graph) -> LatLon {
        g.point_on_edge(self.edge, self.offset_m)
    }
}

/// The component a vehicle on either direction of `e`'s road is in: the
/// component both ends share, else the head's (a link between two).
fn road_component(g: &Graph, e: u32) -> u32 {
    let (a, b) = (g.component(g.tail(e)), g.component(g.head(e)));
    if a == b { a } else { b }
}

/// True when a vehicle of the main network can drive onto `e`'s road and
/// away from it again.
fn in_main(g: &Graph, e: u32) -> bool {
    g.edge_in_component(e, 0) || g.reverse_edge(e).is_some_and(|r| g.edge_in_component(r, 0))
}

/// The nearest road to a point, and the main network's nearest if that is
/// another road.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnapChoice {
    pub nearest: Snap,
    /// `None` when the nearest road is on the main network, or none of it
    /// lies within the search.
    pub main: Option<Snap>,
}

impl SnapChoice {
    /// Snaps `p` to roads within `max_m`; `None` when there is none.
    /// `scratch` is reused between calls.
    pub fn find(
        g: &Graph,
        p: LatLon,
        max_m: f64,
        scratch: &mut Vec<EdgeCandidate>,
    ) -> Option<Self> {
        if !p.is_valid() {
            return None;
        }
        g.nearest_edges(p, NEAREST_K, max_m, scratch);
        let first = scratch.first()?;
        let nearest = Snap::from_candidate(g, first);
        let main = if in_main(g, first.edge) {
            None
        } else {
            scratch
                .iter()
                .find(|c| in_main(g, c.edge))
                .map(|c| Snap::from_candidate(g, c))
        };
        Some(Self { nearest, main })
    }

    /// Where a stop goes: the main network's road unless another road is
    /// much closer (at most a quarter of its distance and 50 m nearer),
    /// which is then where the address really is (an island, a gated
    /// estate the extract cut off).
    pub fn preferred(&self) -> Snap {
        match self.main {
            Some(m)
                if !(self.nearest.distance_m <= m.distance_m * MUCH_CLOSER_SHARE
                    && self.nearest.distance_m + MUCH_CLOSER_M <= m.distance_m) =>
            {
                m
            }
            _ => self.nearest,
        }
    }

    /// The other choice than [`SnapChoice::preferred`], if there is one:
    /// what a route between two points tries when the preferred ends are
    /// not connected.
    pub fn alternative(&self) -> Option<Snap> {
        let m = self.main?;
        Some(if self.preferred() == m {
            self.nearest
        } else {
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build_graph;
    use crate::highway::{HighwayClass, SpeedLimit, WayAttributes};
    use crate::network::{RawNetwork, RawWay};

    /// A two-way main street along the equator-ish line, and a one-way lane
    /// (its own component) running parallel `lane_off_m` north of it.
    fn street_and_lane(lane_off_deg: i32) -> Graph {
        let mut net = RawNetwork::default();
        let attrs = |backward| WayAttributes {
            class: HighwayClass::Residential,
            forward: true,
            backward,
            limit_forward: SpeedLimit::Unknown,
            limit_backward: SpeedLimit::Unknown,
        };
        net.add_node(450_000_000, 70_000_000);
        net.add_node(450_000_000, 70_100_000);
        net.add_node(450_000_000 + lane_off_deg, 70_000_000);
        net.add_node(450_000_000 + lane_off_deg, 70_100_000);
        for (id, nodes, back) in [(1, vec![0, 1], true), (2, vec![2, 3], false)] {
            net.ways.push(RawWay {
                id,
                nodes,
                attrs: attrs(back),
            });
        }
        Graph::from_data(&build_graph(&net, "t".into()).unwrap())
    }

    #[test]
    fn the_main_network_wins_unless_the_other_road_is_much_closer() {
        // Lane 100 m north (900 * 1e-7 deg ≈ 10 m per 90 units).
        let g = street_and_lane(9_000);
        let mut scratch = Vec::new();
        let way = |s: Snap| g.way_id(s.edge);
        // 28 m south of the lane, 72 m north of the street: the lane is
        // nearer but not much nearer, so the stop goes on the street.
        let p = LatLon::new(45.00065, 7.005);
        let c = SnapChoice::find(&g, p, 500.0, &mut scratch).unwrap();
        assert_eq!(way(c.nearest), 2);
        assert_ne!(c.nearest.component, 0);
        assert_eq!(way(c.main.unwrap()), 1);
        assert_eq!(way(c.preferred()), 1);
        assert_eq!(way(c.alternative().unwrap()), 2);
        // On the lane itself, 100 m from the street: the lane.
        let p = LatLon::new(45.0009, 7.005);
        let c = SnapChoice::find(&g, p, 500.0, &mut scratch).unwrap();
        assert_eq!(way(c.preferred()), 2);
        assert!(c.preferred().distance_m < 1.0);
        assert_eq!(way(c.alternative().unwrap()), 1);
        // On the street: no alternative.
        let c = SnapChoice::find(&g, LatLon::new(45.0, 7.005), 500.0, &mut scratch).unwrap();
        assert_eq!(way(c.preferred()), 1);
        assert_eq!(c.preferred().component, 0);
        assert!(c.main.is_none() && c.alternative().is_none());
        assert_eq!(c.preferred().positions(&g).len(), 2);
        // Nothing within reach, or not a coordinate.
        assert!(SnapChoice::find(&g, LatLon::new(46.0, 7.0), 500.0, &mut scratch).is_none());
        assert!(SnapChoice::find(&g, LatLon::new(f64::NAN, 7.0), 500.0, &mut scratch).is_none());
    }
}
