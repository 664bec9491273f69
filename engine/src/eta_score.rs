//! Scoring arrival estimates against the arrivals that followed: the P50's
//! error and bias, and how well the P10–P90 window is calibrated (how often
//! it holds the truth) and how sharp (how wide it is, beside the band of
//! fixed width ratio that would hold the truth as often).

use crate::evaluate::percentile;

/// One estimate and what came true, as times to go from the moment it was
/// made, seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub actual_s: f64,
    pub p10_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
}

/// The figures of a set of predictions.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Score {
    pub label: String,
    pub samples: usize,
    /// The P50's mean and median absolute error, seconds.
    pub mae_s: f64,
    pub median_abs_s: f64,
    /// Mean signed error (P50 − truth), seconds, and the mean time to go it
    /// is to be read beside.
    pub bias_s: f64,
    pub mean_actual_s: f64,
    /// Share of P50s below the truth (optimistic); 0.5 is unbiased.
    pub p50_too_low: f64,
    /// Share of truths inside [P10, P90]; 0.8 is calibrated.
    pub coverage: f64,
    /// Shares of truths below P10 and above P90; 0.1 each is calibrated.
    pub below_p10: f64,
    pub above_p90: f64,
    /// Mean width of the window, seconds.
    pub width_s: f64,
    /// Mean width of the band P50 × (1 ± r), with the one r that holds the
    /// truth as often as the window does: what a window must beat to say
    /// more than a fixed percentage.
    pub fixed_band_width_s: f64,
    /// Mean pinball (quantile) loss over P10, P50 and P90, seconds.
    pub pinball_s: f64,
}

/// Horizon bands (time still to go), as scored by `lastmile eta-eval`.
pub const BANDS: [(&str, f64, f64); 4] = [
    ("0-5 min", 0.0, 300.0),
    ("5-15 min", 300.0, 900.0),
    ("15-30 min", 900.0, 1800.0),
    ("30+ min", 1800.0, f64::INFINITY),
];

fn pinball(level: f64, predicted: f64, actual: f64) -> f64 {
    let d = actual - predicted;
    if d >= 0.0 {
        level * d
    } else {
        (level - 1.0) * d
    }
}

impl Score {
    pub fn of(label: &str, preds: &[Prediction]) -> Self {
        let n = preds.len();
        let mut out = Score {
            label: label.to_string(),
            samples: n,
            ..Score::default()
        };
        if n == 0 {
            return out;
        }
        let nf = n as f64;
        let mean = |f: &dyn Fn(&Prediction) -> f64| preds.iter().map(f).sum::<f64>() / nf;
        let share =
            |f: &dyn Fn(&Prediction) -> bool| preds.iter().filter(|p| f(p)).count() as f64 / nf;
        let abs: Vec<f64> = preds.iter().map(|p| (p.p50_s - p.actual_s).abs()).collect();
        out.mae_s = abs.iter().sum::<f64>() / nf;
        out.median_abs_s = percentile(&abs, 0.5);
        out.bias_s = mean(&|p| p.p50_s - p.actual_s);
        out.mean_actual_s = mean(&|p| p.actual_s);
        out.p50_too_low = share(&|p| p.p50_s < p.actual_s);
        out.coverage = share(&|p| p.p10_s <= p.actual_s && p.actual_s <= p.p90_s);
        out.below_p10 = share(&|p| p.actual_s < p.p10_s);
        out.above_p90 = share(&|p| p.actual_s > p.p90_s);
        out.width_s = mean(&|p| p.p90_s - p.p10_s);
        out.pinball_s = mean(&|p| {
            (pinball(0.1, p.p10_s, p.actual_s)
                + pinball(0.5, p.p50_s, p.actual_s)
                + pinball(0.9, p.p90_s, p.actual_s))
                / 3.0
        });
        // The ratio each truth needs, and the one that holds as many.
        let ratios: Vec<f64> = preds
            .iter()
            .map(|p| (p.actual_s - p.p50_s).abs() / p.p50_s.max(1.0))
            .collect();
        let r = percentile(&ratios, out.coverage);
        out.fixed_band_width_s = mean(&|p| 2.0 * r * p.p50_s.max(1.0));
        out
    }

    /// One score per horizon band with predictions, then all of them.
    pub fn by_band(preds: &[Prediction]) -> Vec<Score> {
        let mut out: Vec<Score> = BANDS
            .iter()
            .map(|&(label, lo, hi)| {
                let in_band: Vec<Prediction> = preds
                    .iter()
                    .filter(|p| p.actual_s >= lo && p.actual_s < hi)
                    .copied()
                    .collect();
                Score::of(label, &in_band)
            })
            .filter(|s| s.samples > 0)
            .collect();
        out.push(Score::of("all", preds));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_window_scores_as_one() {
        // Truths spread evenly over 0..100 s around a P50 of 50: a window of
        // 10 to 90 holds 80% of them.
        let preds: Vec<Prediction> = (0..1000)
            .map(|i| Prediction {
                actual_s: f64::from(i) / 10.0,
                p10_s: 10.0,
                p50_s: 50.0,
                p90_s: 90.0,
            })
            .collect();
        let s = Score::of("x", &preds);
        assert!((s.coverage - 0.8).abs() < 0.01, "{}", s.coverage);
        assert!((s.below_p10 - 0.1).abs() < 0.01);
        assert!((s.p50_too_low - 0.5).abs() < 0.01);
        assert!(s.bias_s.abs() < 0.2);
        assert!((s.width_s - 80.0).abs() < 1e-9);
        // The fixed band holding 80% of these is 50 ± 40 too.
        assert!(
            (s.fixed_band_width_s - 80.0).abs() < 1.0,
            "{}",
            s.fixed_band_width_s
        );
        assert!((s.mae_s - 25.0).abs() < 0.1);
    }

    #[test]
    fn an_optimistic_estimate_shows_as_bias_and_low_coverage() {
        let preds: Vec<Prediction> = (0..100)
            .map(|_| Prediction {
                actual_s: 600.0,
                p10_s: 250.0,
                p50_s: 300.0,
                p90_s: 350.0,
            })
            .collect();
        let s = Score::of("x", &preds);
        assert_eq!(s.bias_s, -300.0);
        assert_eq!(s.p50_too_low, 1.0);
        assert_eq!(s.coverage, 0.0);
        assert_eq!(s.above_p90, 1.0);
        let bands = Score::by_band(&preds);
        assert_eq!(bands.len(), 2);
        assert_eq!(bands[0].label, "5-15 min");
    }
}
