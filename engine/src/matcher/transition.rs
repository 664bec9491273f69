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
    /// Where the vehicle is after the move, metres along `b`'s edge: a
    /// standing vehicle keeps its position when the fix lands behind it.
    pub to_pos_m: f64,
}

/// The move along the same edge or by a U-turn onto its opposite edge, if the
/// two positions allow one. `a` is where the vehicle is (edge, metres along
/// it), `b` a candidate projection; `back_tolerance_m` is how far behind the
/// vehicle's position a projection may land and still count as standing
/// still. The tolerance is measured from the position held, not from the
/// previous projection, so a hypothesis cannot creep backwards step by step.
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
            to_pos_m: b.1.max(a.1),
        });
    }
    if g.road_of(a.0) == g.road_of(b.0) {
        // Opposite directions of one road: positions measured from opposite ends.
        let len = g.length_m(a.0);
        return Some(DirectMove {
            distance_m: (a.1 - (len - b.1)).abs(),
            u_turn: true,
            to_pos_m: b.1,
        });
    }
    None
}

/// The straight-line distance the vehicle most likely covered between two
/// fixes `gc_m` apart. Each fix carries 2-D noise, so the squared distance
/// between them is inflated by 2·(σa² + σb²) on average; without removing
/// that, a parked vehicle's jitter reads as tens of metres of movement at
/// 20 m noise, and the model prefers following the jitter along the road to
/// standing still.
#[inline]
pub(crate) fn straight_travel(gc_m: f64, sigma_a: f64, sigma_b: f64) -> f64 {
    (gc_m * gc_m - 2.0 * (sigma_a * sigma_a + sigma_b * sigma_b))
        .max(0.0)
        .sqrt()
}

/// Log-probability of a transition of `route_m` between pings `gc_m` apart.
#[inline]
pub(crate) fn log_transition(route_m: f64, gc_m: f64, beta: f64) -> f64 {
    -(route_m - gc_m).abs() / beta
}

/// Transition scale for an interval and a noise level: longer intervals
/// allow more difference between the route and the straight line (detours
/// grow with the distance covered, but slower than linearly), and noisier
/// fixes make the straight line itself uncertain by about sigma.
#[inline]
pub(crate) fn beta_for(beta_m: f64, beta_per_sigma: f64, dt_s: f64, sigma_m: f64) -> f64 {
    let route = beta_m * dt_s.max(1.0).sqrt();
    let noise = beta_per_sigma * sigma_m;
    (route * route + noise * noise).sqrt()
}

/// How far back along the same edge a position may move and still count as
/// standing still: the along-road difference of two independent fixes has a
/// spread of sqrt(2)·sigma, so about three of those.
#[inline]
pub(crate) fn standstill_tolerance(sigma: f64) -> f64 {
    (4.0 * sigma).min(100.0)
}
