//! Matcher parameters, with defaults measured on simulated and real traces
//! (see BENCHMARKS.md, "Map matching").

/// Parameters of the HMM matcher. Distances in metres, times in seconds.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatcherConfig {
    /// Roads further than this from a ping are not candidates (widened to
    /// three times a ping's reported accuracy when that is larger).
    pub search_radius_m: f64,
    /// At most this many candidate edges per ping, nearest first (the two
    /// directions of a two-way street are two candidates).
    pub max_candidates: usize,
    /// GPS noise (Gaussian sigma) assumed when a ping carries no accuracy.
    pub sigma_m: f64,
    /// Scale of the transition probability exp(-|route - great circle| / beta)
    /// for pings one second apart; it grows with the square root of the interval.
    pub beta_m: f64,
    /// Added (in quadrature) to beta per metre of GPS sigma: the straight
    /// line between two noisy fixes is itself uncertain by about sigma.
    pub beta_per_sigma: f64,
    /// A silence longer than this breaks the chain (tunnel, phone off).
    pub max_gap_s: f64,
    /// No transition may need a speed above this (the search bound).
    pub max_speed_mps: f64,
    /// Log-probability cost of turning around in the middle of a street.
    pub u_turn_penalty: f64,
    /// Weight of the reported heading against the road's direction (log scale,
    /// applied as `weight * (1 - cos(angle))`); 0 disables it.
    pub heading_weight: f64,
    /// Reported headings count only above this speed (a parked phone's heading is noise).
    pub heading_min_speed_mps: f64,
    /// A ping whose most probable candidate scores this many log units below
    /// the previous step's best is treated as an outlier (a typical fix costs
    /// a few units: a 2-sigma emission and a modest route difference).
    pub outlier_log_odds: f64,
    /// Pings that cannot be reached from the chain are dropped as outliers, up
    /// to this many in a row; the next one restarts the chain (status `reset`).
    pub max_outliers: u32,
    /// A fix within this many sigma of the centroid of the fixes since the
    /// last step is a standing vehicle's, and makes no step of its own ...
    pub standstill_sigmas: f64,
    /// ... for at most this long, after which a step is taken anyway.
    pub standstill_max_s: f64,
    /// The live estimate switches to a hypothesis that does not continue the
    /// one it reported last only when that is this many log units better.
    pub switch_margin: f64,
    /// Pings held before the oldest is finalised even if the candidates
    /// have not converged (bounds memory and lag).
    pub max_lag: usize,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            search_radius_m: 50.0,
            max_candidates: 12,
            sigma_m: 5.0,
            beta_m: 5.0,
            beta_per_sigma: 1.0,
            max_gap_s: 180.0,
            max_speed_mps: 60.0,
            u_turn_penalty: 6.0,
            heading_weight: 1.5,
            heading_min_speed_mps: 3.0,
            outlier_log_odds: 18.0,
            max_outliers: 2,
            standstill_sigmas: 1.5,
            standstill_max_s: 60.0,
            switch_margin: 1.5,
            max_lag: 30,
        }
    }
}

impl MatcherConfig {
    /// Checks the values are usable; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("search_radius_m", self.search_radius_m),
            ("sigma_m", self.sigma_m),
            ("beta_m", self.beta_m),
            ("max_gap_s", self.max_gap_s),
            ("max_speed_mps", self.max_speed_mps),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("matcher.{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("u_turn_penalty", self.u_turn_penalty),
            ("beta_per_sigma", self.beta_per_sigma),
            ("heading_weight", self.heading_weight),
            ("heading_min_speed_mps", self.heading_min_speed_mps),
            ("outlier_log_odds", self.outlier_log_odds),
            ("switch_margin", self.switch_margin),
            ("standstill_sigmas", self.standstill_sigmas),
            ("standstill_max_s", self.standstill_max_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("matcher.{name} must be zero or positive, got {v}"));
            }
        }
        if !(1..=MAX_CANDIDATES_LIMIT).contains(&self.max_candidates) {
            return Err(format!(
                "matcher.max_candidates must be 1..={MAX_CANDIDATES_LIMIT}, got {}",
                self.max_candidates
            ));
        }
        if !(2..=1000).contains(&self.max_lag) {
            return Err(format!(
                "matcher.max_lag must be 2..=1000, got {}",
                self.max_lag
            ));
        }
        Ok(())
    }
}

/// Candidate sets are tracked as 64-bit masks during finalisation.
pub const MAX_CANDIDATES_LIMIT: usize = 64;
