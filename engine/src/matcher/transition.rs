//! The transition model between the candidates of consecutive pings
//! (Newson & Krumm): a vehicle's route distance between two candidate
//! positions should be close to the great-circle distance between the pings,
//! so the log-probability is `-|route - great circle| / beta`.
//!
//! Three ways to get from one edge position to another, the most probable
//! wins: along the same edge (small backward moves within a tolerance count
//! as standing still, because GPS jitter around a parked van must not read as
//! movement or a U-turn), a U-turn in the middle of the street onto the
//! opposite edge (a penalty, because it is rare but real for delivery vans),
//! or through the graph, respecting one-way streets.

use lastmile_roadgraph::Graph;

/// One way to move between two edge positions without the graph search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DirectMove {
    pub distance_m: f64,
    pub u_turn: bool,
}

/// The move along the same edge or by a U-turn onto its opposite edge, if the
/// two positions allow one. `back_tolerance_m` is how far backwards along the
/// same edge still counts as standing still.
#[inline]
pub(crate) fn direct_move(
    g: &Graph,
    a: (u32, f64),
    b: (u32, f64),
    back_tolerance_m: f64,
) -> Option<DirectMove> {
    if a.0 == b.0 {
        return (b.1 >= a.1 - back_tolerance_m).then_some(DirectMove {
            distance_m: (b.1 - a.1).max(0.0),
            u_turn: false,
        });
    }
    if g.road_of(a.0) == g.road_of(b.0) {
        // Opposite directions of one road: positions measured from opposite ends.
        let len = g.length_m(a.0);
        return Some(DirectMove {
            distance_m: (a.1 - (len - b.1)).abs(),
            u_turn: true,
        });
    }
    None
}

/// Log-probability of a transition of `route_m` between pings `gc_m` apart.
#[inline]
pub(crate) fn log_transition(route_m: f64, gc_m: f64, beta: f64) -> f64 {
    -(route_m - gc_m).abs() / beta
}

/// Transition scale for an interval: longer intervals allow proportionally
/// more difference between the route and the straight line (detours grow with
/// the distance covered), but slower than linearly.
#[inline]
pub(crate) fn beta_for(beta_m: f64, dt_s: f64) -> f64 {
    beta_m * dt_s.max(1.0).sqrt()
}

/// How far back along the same edge a position may move and still count as
/// standing still: the along-road difference of two independent fixes has a
/// spread of sqrt(2)·sigma, so about three of those.
#[inline]
pub(crate) fn standstill_tolerance(sigma: f64) -> f64 {
    (4.0 * sigma).min(100.0)
}
