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
    /// Where the vehicle is after the move, metres along `b`'s edge.
    pub to_pos_m: f64,
    /// How far along the road the fix's projection is from that position
    /// (non-zero when standing still): part of the emission, since the fix
    /// is measured from where the vehicle is, not from where it projects.
    pub along_m: f64,
}

/// The moves along the same edge, or by a U-turn onto its opposite edge,
/// from the vehicle's position `a` (edge, metres along it) to a candidate
/// projection `b`: driving on to the projection, standing still when the
/// projection is within `stand_m` of the position (either side), or turning
/// round in the street. A `settled` projection (the centroid of a standing
/// vehicle's fixes) is where the vehicle stands, so standing costs nothing
/// along the road, and moves the position forward to it (never back, so the
/// path stays continuous).
#[inline]
pub(crate) fn direct_moves(
    g: &Graph,
    a: (u32, f64),
    b: (u32, f64),
    stand_m: f64,
    settled: bool,
) -> [Option<DirectMove>; 2] {
    if a.0 == b.0 {
        let drive = (b.1 >= a.1).then_some(DirectMove {
            distance_m: b.1 - a.1,
            u_turn: false,
            to_pos_m: b.1,
            along_m: 0.0,
        });
        let stand = ((b.1 - a.1).abs() <= stand_m).then_some(if settled {
            DirectMove {
                distance_m: 0.0,
                u_turn: false,
                to_pos_m: a.1.max(b.1),
                along_m: 0.0,
            }
        } else {
            DirectMove {
                distance_m: 0.0,
                u_turn: false,
                to_pos_m: a.1,
                along_m: b.1 - a.1,
            }
        });
        return [drive, stand];
    }
    if g.road_of(a.0) == g.road_of(b.0) {
        // Opposite directions of one road: positions measured from opposite ends.
        let len = g.length_m(a.0);
        let turn = DirectMove {
            distance_m: (a.1 - (len - b.1)).abs(),
            u_turn: true,
            to_pos_m: b.1,
            along_m: 0.0,
        };
        return [Some(turn), None];
    }
    [None, None]
}

/// What the speeds a device reports with two fixes say about the move
/// between them. Over a short interval their mean times the interval is a
/// second, sharper witness of the route length; and turning round in the
/// street takes slowing to a stop and pulling away again, so such a U-turn
/// between two fixes at speed closer together in time than that is not a
/// move a vehicle can make (at 1 Hz, GPS noise across the street otherwise
/// reads as U-turns at 40 km/h). Turning at a node (the search's route onto
/// the opposite edge) stays open: excluding it too lost more matches on the
/// simulated 1 Hz traces than it saved path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ReportedSpeeds {
    travelled_m: Option<f64>,
    u_turn_possible: bool,
}

/// Reported speeds bound the route length only over intervals this short:
/// over longer ones the vehicle may have slowed for a corner or a light in
/// between, and the mean of two spot speeds says little (at 10 s it made
/// true routes look like outliers: 70% more on a simulated city).
const SPEED_WITNESS_MAX_DT: f64 = 2.0;
/// Braking to turn round and pulling away again, m/s² (firm, not harsh).
const U_TURN_DECEL_MPS2: f64 = 4.0;

impl ReportedSpeeds {
    pub fn new(a: Option<f64>, b: Option<f64>, dt: f64) -> Self {
        match (a, b) {
            (Some(a), Some(b)) => Self {
                travelled_m: (dt <= SPEED_WITNESS_MAX_DT).then_some(0.5 * (a + b) * dt),
                u_turn_possible: (a + b) / U_TURN_DECEL_MPS2 <= dt,
            },
            _ => Self {
                travelled_m: None,
                u_turn_possible: true,
            },
        }
    }

    /// The log-probability the speeds give a route of `route_m`.
    pub fn witness(&self, route_m: f64, beta: f64) -> f64 {
        self.travelled_m
            .map_or(0.0, |t| -(route_m - t).abs() / beta)
    }

    /// Whether turning round in the street fits the speeds.
    pub fn allows_u_turn(&self) -> bool {
        self.u_turn_possible
    }
}

/// Log-probability of a direct move (transition plus the along-road part of
/// the emission), given the straight-line travel, beta, sigma and the U-turn
/// penalty.
#[inline]
pub(crate) fn log_direct(
    m: &DirectMove,
    straight: f64,
    beta: f64,
    sigma: f64,
    u_turn_penalty: f64,
) -> f64 {
    let penalty = if m.u_turn { u_turn_penalty } else { 0.0 };
    log_transition(m.distance_m, straight, beta) - 0.5 * (m.along_m / sigma).powi(2) - penalty
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

/// How far from a standing vehicle's position a fix may project and still
/// be explained by standing still: about four sigma.
#[inline]
pub(crate) fn standstill_tolerance(sigma: f64) -> f64 {
    (4.0 * sigma).min(100.0)
}
