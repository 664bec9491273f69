//! Per-vehicle estimate of GPS noise from the pings themselves. Newson &
//! Krumm estimate sigma as 1.4826 times the median distance from fixes to
//! their matched road (the median absolute deviation of a Gaussian's
//! perpendicular component); we keep that over a ring of recent matches, so
//! the emission model follows a vehicle whose receiver is worse (or better)
//! than the configured default.
//!
//! A device that reports an accuracy is believed within a band around that
//! estimate. Phones' accuracies rank their fixes well but are often off in
//! scale (optimistic in a street canyon). Taken at face value, a device that
//! claimed 5 m and erred by 10 m made the chain break and detour: twice the
//! true length was added on Monaco. The band is wide because the estimate
//! from 32 matches is rough, and biased low where roads are dense (a fix's
//! nearest road is often not its own), so an honest accuracy is almost never
//! overruled.

/// Recent matched distances, in centimetres (saturating at 655 m, far past
/// the largest sigma kept): half the room of `f32` at no loss that matters.
const RING: usize = 32;
const _: () = assert!(RING <= u8::MAX as usize && 65536 % REFRESH == 0);
/// Matches needed before the estimate replaces the configured sigma.
const MIN_SAMPLES: usize = 12;
/// The estimate is refreshed every this many matches.
const REFRESH: usize = 4;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
pub(crate) struct NoiseEstimate {
    ring: [u16; RING],
    len: u8,
    next: u8,
    /// Fixes added, wrapping (only its residue modulo [`REFRESH`] is used).
    added: u16,
    /// Metres; NaN until [`MIN_SAMPLES`] were seen.
    sigma: f32,
}

impl Default for NoiseEstimate {
    fn default() -> Self {
        Self {
            ring: [0; RING],
            len: 0,
            next: 0,
            added: 0,
            sigma: f32::NAN,
        }
    }
}

impl NoiseEstimate {
    /// The sigma for a fix reported with `accuracy` (if any). Without one,
    /// the learnt sigma. With one, the accuracy, kept within
    /// [`ACCURACY_BAND`] of the learnt sigma once the ring is full (before
    /// that, the estimate is too rough to overrule the device). `None`
    /// (use the configured default) while neither is known.
    pub fn sigma(&self, accuracy: Option<f64>) -> Option<f64> {
        let learnt = (!self.sigma.is_nan()).then_some(f64::from(self.sigma));
        let full = usize::from(self.len) == RING;
        match (accuracy, learnt) {
            (None, learnt) => learnt,
            (Some(a), Some(l)) if full => Some(a.clamp(ACCURACY_BAND.0 * l, ACCURACY_BAND.1 * l)),
            (Some(a), _) => Some(a),
        }
    }

    /// Records the distance from a fix to its matched road.
    pub fn add(&mut self, distance_m: f64) {
        if !distance_m.is_finite() {
            return;
        }
        // `as` saturates: negative distances (none are made) would read 0.
        self.ring[usize::from(self.next)] = (distance_m * 100.0).round() as u16;
        self.next = ((usize::from(self.next) + 1) % RING) as u8;
        self.len = (usize::from(self.len) + 1).min(RING) as u8;
        self.added = self.added.wrapping_add(1);
        if usize::from(self.len) >= MIN_SAMPLES && self.added.is_multiple_of(REFRESH as u16) {
            let mut v = self.ring;
            let v = &mut v[..usize::from(self.len)];
            let mid = v.len() / 2;
            let (_, median, _) = v.select_nth_unstable(mid);
            self.sigma =
                (1.4826 * f64::from(*median) / 100.0).clamp(MIN_SIGMA_M, MAX_SIGMA_M) as f32;
        }
    }
}

/// Bounds of the estimate: below 3 m the road geometry itself is less
/// accurate than the fix (mapped centre lines are metres off, and a road's
/// lanes span metres); above 60 m nothing can be matched reliably anyway.
/// Real fixes also err in runs, not independently: after half a minute of
/// near-perfect fixes a 1.5 m floor made a 10 m drift look like outliers and
/// broke the chain (Kubička track 16); 3 m lifted the real benchmark from
/// 92.75 to 92.87% of pings on the true route, route mismatch 2.37 to 2.13%,
/// with simulated traces unchanged.
const MIN_SIGMA_M: f64 = 3.0;
const MAX_SIGMA_M: f64 = 60.0;
/// A reported accuracy is kept between these multiples of the learnt
/// sigma. Measured on Monaco traces whose accuracy column was rewritten
/// (BENCHMARKS.md, session 26), honest accuracies moved by at most 0.18
/// points, and dishonest ones gained 1.4–7.3 points of pings on the true way.
const ACCURACY_BAND: (f64, f64) = (0.8, 2.5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_the_median_distance() {
        let mut n = NoiseEstimate::default();
        for _ in 0..MIN_SAMPLES - 1 {
            n.add(10.0);
        }
        assert_eq!(n.sigma(None), None);
        for _ in 0..RING {
            n.add(10.0);
        }
        let s = n.sigma(None).unwrap();
        assert!((s - 14.826).abs() < 1e-3, "{s}");
        // A few wild distances do not move a median.
        for _ in 0..4 {
            n.add(500.0);
        }
        assert!((n.sigma(None).unwrap() - 14.826).abs() < 1e-3);
        n.add(f64::NAN);
        for _ in 0..RING {
            n.add(0.0);
        }
        assert_eq!(n.sigma(None), Some(MIN_SIGMA_M));
    }

    #[test]
    fn a_reported_accuracy_is_believed_within_a_band_of_the_learnt_sigma() {
        let mut n = NoiseEstimate::default();
        // Before any evidence, as reported.
        assert_eq!(n.sigma(Some(5.0)), Some(5.0));
        for _ in 0..RING {
            n.add(10.0 / 1.4826);
        }
        let near = |a: f64, b: f64| (a - b).abs() < 0.02;
        // Fixes erring by 10 m: 12 m and 20 m are believed ...
        assert!(near(n.sigma(Some(12.0)).unwrap(), 12.0));
        assert!(near(n.sigma(Some(20.0)).unwrap(), 20.0));
        // ... 5 m is too optimistic, and 40 m too pessimistic.
        assert!(near(n.sigma(Some(5.0)).unwrap(), 8.0));
        assert!(near(n.sigma(Some(40.0)).unwrap(), 25.0));
    }
}
