//! How far a vehicle's consecutive fixes scatter beyond what smooth driving
//! explains, learnt from the fixes themselves. Receivers differ: some errors
//! are independent from one fix to the next (a standing van's fixes jump
//! metres every second), most real ones wander slowly (consecutive fixes
//! within a metre of each other, all of them metres off the road). Only the
//! first kind makes a standing vehicle's fixes look apart, so it is what
//! decides how far apart two fixes of a standing vehicle may be.
//!
//! Each fix is compared with its linear prediction from the two before it;
//! for independent fixes of noise sigma that residual is Gaussian with
//! variance sigma²·(1 + (1 + r)² + r²) per axis (r: the ratio of the two
//! intervals), plus whatever the vehicle accelerated.

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::LocalPlane;

/// Residuals needed before the estimate is used.
const MIN_SAMPLES: u32 = 8;
/// Weight of each new residual in the running mean.
const ALPHA: f64 = 0.05;
/// A residual above this many times the estimate is clipped to it (an
/// outlier fix must not set the scale).
const CLIP: f64 = 4.0;
/// Fixes further apart than this in time say nothing about jitter.
const MAX_DT_S: f64 = 5.0;
/// Mean of a unit Rayleigh distribution (the norm of a 2-D residual whose
/// axes have unit variance).
const RAYLEIGH_MEAN: f64 = 1.253_314_137_315_500_3;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
pub(crate) struct JitterEstimate {
    /// The two newest fixes (position, time), newest last; a NaN time is
    /// no fix yet (and fails every interval test below).
    fixes: [(LatLon, f64); 2],
    samples: u32,
    /// Running mean of the normalised residual norms, metres.
    mean: f64,
}

impl Default for JitterEstimate {
    fn default() -> Self {
        let none = (LatLon::new(f64::NAN, f64::NAN), f64::NAN);
        Self {
            fixes: [none; 2],
            samples: 0,
            mean: 0.0,
        }
    }
}

impl JitterEstimate {
    /// Sigma of the fix-to-fix jitter, once enough fixes were seen.
    pub fn sigma(&self) -> Option<f64> {
        (self.samples >= MIN_SAMPLES).then_some(self.mean / RAYLEIGH_MEAN)
    }

    pub fn add(&mut self, p: LatLon, time: f64) {
        let [(p1, t1), (p2, t2)] = self.fixes;
        let (dt1, dt2) = (t2 - t1, time - t2);
        if dt1 > 0.0 && dt2 > 0.0 && dt1 <= MAX_DT_S && dt2 <= MAX_DT_S {
            let plane = LocalPlane::new(p2);
            let (x1, y1) = plane.project(p1);
            let (x3, y3) = plane.project(p);
            let r = dt2 / dt1;
            let (ex, ey) = (x3 + x1 * r, y3 + y1 * r);
            let scale = (1.0 + (1.0 + r) * (1.0 + r) + r * r).sqrt();
            let mut s = ex.hypot(ey) / scale;
            if self.samples >= MIN_SAMPLES {
                s = s.min(CLIP * self.mean);
            }
            if s.is_finite() {
                self.samples = self.samples.saturating_add(1);
                let alpha = ALPHA.max(1.0 / f64::from(self.samples));
                self.mean += alpha * (s - self.mean);
            }
        }
        self.fixes = [self.fixes[1], (p, time)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::rng::Rng;

    const SPOT: LatLon = LatLon::new(43.7384, 7.4246);

    fn estimate(fix: impl Fn(f64, &mut Rng) -> (f64, f64)) -> f64 {
        let plane = LocalPlane::new(SPOT);
        let mut rng = Rng::seed(3);
        let mut j = JitterEstimate::default();
        for i in 0..400 {
            let t = f64::from(i);
            let (x, y) = fix(t, &mut rng);
            j.add(plane.unproject(x, y), t);
        }
        j.sigma().expect("enough fixes")
    }

    #[test]
    fn independent_noise_is_measured_whether_moving_or_not() {
        let standing = estimate(|_, r| (5.0 * r.normal(), 5.0 * r.normal()));
        assert!((4.0..6.5).contains(&standing), "{standing}");
        let driving = estimate(|t, r| (12.0 * t + 5.0 * r.normal(), 5.0 * r.normal()));
        assert!((4.0..6.5).contains(&driving), "{driving}");
    }

    #[test]
    fn slowly_wandering_noise_is_small_jitter() {
        // 8 m off, wandering over a minute, a few decimetres from fix to fix.
        let wander = estimate(|t, r| {
            let w = t / 60.0;
            (
                8.0 * w.sin() + 0.3 * r.normal(),
                8.0 * w.cos() + 0.3 * r.normal(),
            )
        });
        assert!(wander < 0.5, "{wander}");
    }

    #[test]
    fn an_outlier_does_not_set_the_scale() {
        let s = estimate(|t, r| {
            let jump = if t as u64 % 50 == 25 { 200.0 } else { 0.0 };
            (jump + 3.0 * r.normal(), 3.0 * r.normal())
        });
        assert!(s < 4.5, "{s}");
    }
}
