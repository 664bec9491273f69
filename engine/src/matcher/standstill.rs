//! Standing vehicles. A parked van's fixes jitter around one point; stepping
//! the HMM on each of them lets the chain follow the jitter along the street,
//! round corners and back. Instead, fixes that gather into a cluster (or come
//! with a reported speed of zero) are held: placed where the cluster's
//! centroid is, with no step of their own, and every so often a step is taken
//! at the centroid itself, a far better fix than any single one.

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::{LocalPlane, haversine_m};

use super::{Estimate, MatchOutput, MatchStatus, Matcher, VehicleTrack};
use crate::ping::Ping;

/// What [`Matcher::hold`] decided for a ping.
pub(super) enum Hold {
    /// Standing still: placed with the newest step, no step of its own.
    Held,
    /// A step of its own, at the fix.
    Step,
    /// A step of its own, at a standing vehicle's centroid with this sigma.
    StepAt(LatLon, f64),
}

/// Running centroid of a standing vehicle's fixes, and their recent drift:
/// fixes a few metres apart at high noise may as well be a vehicle creeping
/// along, and only the trend over several of them tells.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Still {
    /// The first fix and its time: positions are in metres east/north of it,
    /// times in seconds after it.
    origin: LatLon,
    t0: f64,
    pub(super) n: f64,
    sx: f64,
    sy: f64,
    /// Exponentially forgotten sums (weight, t, t², x, y, xt, yt) for the
    /// least-squares velocity of the recent fixes.
    drift: [f64; 7],
    last_t: f64,
    /// Consecutive fixes outside a settled cluster (one is tolerated).
    pub(super) strays: u8,
    /// Where the last held ping was placed live (edge, offset).
    pub(super) held_at: Option<(u32, f64)>,
}

impl Still {
    pub(super) fn new(p: LatLon, time: f64) -> Self {
        Self {
            origin: p,
            t0: time,
            n: 1.0,
            sx: 0.0,
            sy: 0.0,
            drift: [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            last_t: 0.0,
            strays: 0,
            held_at: None,
        }
    }

    /// Metres east and north of the origin (a cluster spans metres, so the
    /// plane is exact enough).
    fn local(&self, p: LatLon) -> (f64, f64) {
        LocalPlane::new(self.origin).project(p)
    }

    pub(super) fn centroid(&self) -> LatLon {
        LocalPlane::new(self.origin).unproject(self.sx / self.n, self.sy / self.n)
    }

    /// Adds a fix, unless the recent fixes then drift: their least-squares
    /// velocity is at least walking pace and significant at the 99.9% level
    /// for independent fixes of noise `sigma` (its squared norm times the
    /// spread of the times is chi-square with two degrees of freedom over
    /// sigma squared). Real GPS wanders slowly around a parked vehicle, far
    /// below walking pace; the memory of the trend is short so that a vehicle
    /// moving off after a long stand shows at once.
    pub(super) fn add(&mut self, p: LatLon, time: f64, sigma: f64) -> bool {
        let (x, y) = self.local(p);
        let t = time - self.t0;
        let keep = (-(t - self.last_t) / DRIFT_MEMORY_S).exp();
        let mut d = self.drift.map(|v| v * keep);
        for (v, add) in d.iter_mut().zip([1.0, t, t * t, x, y, x * t, y * t]) {
            *v += add;
        }
        let [w, st, stt, sx, sy, sxt, syt] = d;
        let spread = stt - st * st / w;
        if spread > 0.0 {
            let vx = (sxt - sx * st / w) / spread;
            let vy = (syt - sy * st / w) / spread;
            let v2 = vx * vx + vy * vy;
            if v2 >= STANDING_SPEED_MPS * STANDING_SPEED_MPS
                && v2 * spread > DRIFT_CHI2 * sigma * sigma
            {
                return false;
            }
        }
        self.drift = d;
        self.last_t = t;
        self.n += 1.0;
        self.sx += x;
        self.sy += y;
        true
    }
}

impl Matcher<'_> {
    /// A ping of a vehicle that is standing still makes no step of its own.
    /// Standing is what the device says when it reports a speed; otherwise
    /// the fixes must gather: a fix within `standstill_sigmas` of the
    /// centroid of the recent fixes joins their cluster, and once a few have
    /// joined, any fix within three sigma does (strays beyond are tolerated
    /// as [`is_stray`] says), as long as the fixes do not drift ([`Still::add`]: a van
    /// creeping along behind 20 m of noise stays within those radii for
    /// many seconds). Held pings are placed where the cluster's centroid is:
    /// live, on the current edge; finalised, on the path to the next step,
    /// never backwards. Stepping on every jittering fix would let the chain
    /// follow the jitter along the street, round corners and back; Newson &
    /// Krumm and GraphHopper thin standing fixes too.
    pub(super) fn hold(
        &mut self,
        track: &mut VehicleTrack,
        ping: &Ping,
        seq: u64,
        sigma: f64,
        out: &mut MatchOutput,
    ) -> Hold {
        if track.window.is_empty() || track.last_immediate.is_none() {
            track.still = Some(Still::new(ping.pos, ping.time));
            return Hold::Step;
        }
        let still = track.still.get_or_insert(Still::new(ping.pos, ping.time));
        let off = haversine_m(still.centroid(), ping.pos);
        let settled = still.n >= SETTLED_FIXES;
        // Forming, a fix must be near the others by the vehicle's noise, or
        // by how far its fixes jump from one to the next if that is more (a
        // receiver whose every fix is independent scatters a standing van's
        // fixes over twice its sigma; the 95% radius of a fix around the
        // mean of n others is 2.45·sigma·sqrt(1 + 1/n)).
        let radius = if settled {
            SETTLED_SIGMAS * sigma
        } else {
            let jitter = track.jitter.sigma().unwrap_or(0.0);
            (self.config.standstill_sigmas * sigma)
                .max(JITTER_RADIUS * jitter * (1.0 + 1.0 / still.n).sqrt())
        };
        // A reported speed between standing and clearly moving is within
        // what a poor receiver's speed noise reaches while parked: such a
        // ping is judged by its fix, as one without a speed is.
        let speed = ping.valid_speed().filter(|&v| !is_unsure_speed(v));
        let member = match speed {
            Some(v) => v < STANDING_SPEED_MPS && off <= SETTLED_SIGMAS * sigma,
            None => off <= radius,
        };
        if member {
            // A device that reports standing is believed; fixes alone must
            // not drift.
            let drift_sigma = if speed.is_some() {
                f64::INFINITY
            } else {
                sigma
            };
            if !still.add(ping.pos, ping.time, drift_sigma) {
                track.still = Some(Still::new(ping.pos, ping.time));
                return Hold::Step;
            }
            still.strays = 0;
        } else if settled && is_stray(speed, still.strays, off, sigma) {
            still.strays += 1;
        } else {
            track.still = Some(Still::new(ping.pos, ping.time));
            return Hold::Step;
        }
        if still.n < FORMED_FIXES {
            return Hold::Step;
        }
        if still.n == FORMED_FIXES {
            // The cluster has just formed: the fixes that formed it made
            // steps of their own, and a standing vehicle's steps wander
            // (along the street and back, round a corner and back). Those
            // still undecided become held pings of the step before them.
            let since = still.t0;
            self.unstep(track, (FORMED_FIXES - 1.0) as usize, since);
        }
        let (Some(last_time), Some(im)) =
            (track.window.back().map(|s| s.time), track.last_immediate)
        else {
            return Hold::Step;
        };
        let Some(still) = track.still.as_mut() else {
            return Hold::Step;
        };
        if ping.time - last_time > self.config.standstill_max_s {
            // A periodic step keeps the chain alive; the centroid of the
            // cluster is a far better fix than this one.
            let n = still.n;
            return Hold::StepAt(
                still.centroid(),
                (sigma / n.sqrt()).max(MIN_CENTROID_SIGMA_M),
            );
        }
        let centroid = still.centroid();
        let len = self.graph.length_m(im.edge);
        let (mut offset, _) = self.graph.project_onto_edge(im.edge, centroid, 0.0, len);
        // The live position of a standing vehicle never steps back.
        if let Some((e, o)) = still.held_at
            && e == im.edge
        {
            offset = offset.max(o);
        }
        still.held_at = Some((im.edge, offset));
        out.immediate = Estimate {
            seq,
            time: ping.time,
            offset_m: offset,
            point: self.graph.point_on_edge(im.edge, offset),
            ..im
        };
        // Finalised with the next step, placed on the path towards it.
        if let Some(step) = track.window.back() {
            track
                .held
                .push(step.seq, seq, ping.time, centroid, ping.pos);
        }
        Hold::Held
    }
}

impl Matcher<'_> {
    /// Turns the newest `count` steps (the fixes a standing cluster formed
    /// from) back into held pings of the step before them, as far as they are
    /// undecided and made by fixes of the cluster (at or after `since`): not
    /// finalised, not the start of a chain, and not the only step. The live estimate goes back to that step.
    fn unstep(&mut self, track: &mut VehicleTrack, count: usize, since: f64) {
        let mut taken = 0;
        while taken < count && track.window.len() >= 2 {
            let back = track.window.back().expect("two steps");
            // Only the cluster's own fixes' steps.
            if back.done || back.reset || back.time < since {
                break;
            }
            // Pings already held with this step would be orphaned.
            if track.held.newest_step() == Some(back.seq) {
                break;
            }
            let step = track.window.pop_back().expect("two steps");
            taken += 1;
            let before = track.window.back().expect("a step before it").seq;
            // Every ping held so far came before this step (any later one
            // would be held with it), so it joins the queue's end.
            track
                .held
                .push(before, step.seq, step.time, step.pos(), step.pos());
        }
        if taken == 0 {
            return;
        }
        // The held pings of a group are placed where its last one stood
        // (`emit_held`), so the order of the queue is all that matters.
        let newest = track.window.len() - 1;
        track.last_choice = None;
        let mut scratch = MatchOutput::default();
        self.estimate(
            &track.window,
            newest,
            &[],
            &mut track.last_choice,
            &mut scratch,
        );
        let step = &track.window[newest];
        track.last_immediate = Some(Estimate {
            seq: step.seq,
            time: step.time,
            status: MatchStatus::Matched,
            ..scratch.immediate
        });
    }
}

/// Whether a fix outside a settled cluster is held as a stray (placed at the
/// centroid, not joining it) rather than ending the stand. Fixes alone: one
/// at a time, since two in a row may be the van pulling away. A device that
/// keeps reporting standing is believed for one fix however far, and for a
/// few in a row as far as [`STRAY_SIGMAS`]: at 1 Hz a van standing on a node otherwise restarted
/// its cluster on every 3-sigma fix, and the steps a forming cluster makes
/// wandered round whatever lay at the node (a one-way loop beside one
/// finalised the van twice round it while it stood).
fn is_stray(reported_speed: Option<f64>, strays: u8, off: f64, sigma: f64) -> bool {
    match reported_speed {
        None => strays == 0,
        // One fix however far, as without a speed: a device reporting
        // standing has not moved 100 m in a second (a GPS spike from a
        // parked van restarted its cluster at the spike and finalised a
        // loop round the block to it and back).
        Some(v) => {
            v < STANDING_SPEED_MPS
                && (strays == 0 || strays < REPORTED_STRAYS && off <= STRAY_SIGMAS * sigma)
        }
    }
}

/// The centroid of many fixes is not trusted beyond this (road geometry is
/// not that exact either).
const MIN_CENTROID_SIGMA_M: f64 = 2.0;
/// A cluster of this many fixes holds the next ones ...
const FORMED_FIXES: f64 = 3.0;
/// ... and from this many on it is settled ...
const SETTLED_FIXES: f64 = 5.0;
/// ... taking any fix within this many sigma of its centroid.
const SETTLED_SIGMAS: f64 = 3.0;
/// The 95% radius of a 2-D Gaussian, in sigmas.
const JITTER_RADIUS: f64 = 2.45;
/// The drift of a cluster's fixes is judged over about this many seconds ...
const DRIFT_MEMORY_S: f64 = 20.0;
/// ... and significant beyond this chi-square (two degrees of freedom, 99.9%).
const DRIFT_CHI2: f64 = 13.8;
/// A device reporting less than this speed is standing still ...
const STANDING_SPEED_MPS: f64 = 1.0;
/// ... and one reporting at least this speed is not, wherever its fixes
/// are. In between, the fixes decide.
const MOVING_SPEED_MPS: f64 = 3.0;

fn is_unsure_speed(v: f64) -> bool {
    (STANDING_SPEED_MPS..MOVING_SPEED_MPS).contains(&v)
}
/// Strays in a row a settled cluster holds while the device reports standing ...
const REPORTED_STRAYS: u8 = 3;
/// ... each within this many sigma of the centroid (beyond, a fix is left to
/// the outlier test of a step of its own).
const STRAY_SIGMAS: f64 = 6.0;

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::rng::Rng;

    const SPOT: LatLon = LatLon::new(43.7384, 7.4246);

    /// Feeds fixes `(x, y)` metres from SPOT, one a second; returns how many
    /// the cluster refused (each refusal starts a new cluster, as `hold` does).
    fn refusals(fixes: impl Iterator<Item = (f64, f64)>, sigma: f64) -> usize {
        let plane = LocalPlane::new(SPOT);
        let mut still: Option<Still> = None;
        let mut refused = 0;
        for (i, (x, y)) in fixes.enumerate() {
            let (p, t) = (plane.unproject(x, y), i as f64);
            match still.as_mut() {
                None => still = Some(Still::new(p, t)),
                Some(s) => {
                    if !s.add(p, t, sigma) {
                        refused += 1;
                        still = Some(Still::new(p, t));
                    }
                }
            }
        }
        refused
    }

    #[test]
    fn a_parked_vans_jitter_is_one_cluster() {
        let mut rng = Rng::seed(11);
        let jitter = (0..600).map(|_| (5.0 * rng.normal(), 5.0 * rng.normal()));
        assert!(refusals(jitter, 5.0) <= 1);
        // Real fixes wander slowly (here 10 m in two minutes, to and fro):
        // still standing.
        let mut rng = Rng::seed(12);
        let wander = (0..600).map(|i| {
            let w = 10.0 * (f64::from(i) / 120.0 * std::f64::consts::PI).sin();
            (w + 2.0 * rng.normal(), 2.0 * rng.normal())
        });
        assert!(refusals(wander, 5.0) <= 1);
    }

    #[test]
    fn a_creeping_van_is_not_a_cluster() {
        // 2 m/s behind heavy noise: a cluster by distance alone for a while,
        // but its drift shows within a quarter of a minute.
        let mut rng = Rng::seed(13);
        let mut first = None;
        let plane = LocalPlane::new(SPOT);
        let mut still = Still::new(SPOT, 0.0);
        for i in 1..120 {
            let t = f64::from(i);
            let p = plane.unproject(2.0 * t + 20.0 * rng.normal(), 20.0 * rng.normal());
            if !still.add(p, t, 20.0) {
                first = Some(i);
                break;
            }
        }
        let first = first.expect("the drift is never noticed");
        assert!(first <= 40, "noticed after {first} s");
        // At 5 m noise, 1.5 m/s shows within a quarter of a minute (the
        // least-squares speed of n fixes a second apart has a standard
        // error of sigma·sqrt(12/n³): about 0.15 m/s after 12).
        let mut rng = Rng::seed(14);
        let mut still = Still::new(SPOT, 0.0);
        let noticed = (1..60).find(|&i| {
            let t = f64::from(i);
            let p = plane.unproject(1.5 * t + 5.0 * rng.normal(), 5.0 * rng.normal());
            !still.add(p, t, 5.0)
        });
        assert!(noticed.is_some_and(|i| i <= 15), "{noticed:?}");
    }

    #[test]
    fn the_centroid_is_the_mean_of_the_fixes() {
        let plane = LocalPlane::new(SPOT);
        let mut still = Still::new(plane.unproject(-3.0, 1.0), 0.0);
        assert!(still.add(plane.unproject(3.0, -1.0), 1.0, 5.0));
        assert!(still.add(plane.unproject(0.0, 3.0), 2.0, 5.0));
        let c = plane.project(still.centroid());
        assert!(
            (c.0 - 0.0).abs() < 0.01 && (c.1 - 1.0).abs() < 0.01,
            "{c:?}"
        );
    }
}
