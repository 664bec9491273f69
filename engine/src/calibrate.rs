//! Calibrating the free-flow model ([`lastmile_roadgraph::free_flow`])
//! against matched traversals of real drives, as `lastmile calibrate` does.
//!
//! Each trip is matched; its finalised path becomes whole-edge traversals
//! (short waits kept, long standing left out, as traffic learning takes
//! them), of which only those covering nearly all of their edge are used,
//! so the junction at the head was passed. Each traversal's time is then
//! modelled as
//!
//! ```text
//! seconds = metres × pace(class, setting) + signals × signal_s
//!           + [through] × through_s + [yield] × yield_s
//! ```
//!
//! which is linear in the paces (inverse speeds) and the delays, and fitted
//! by least squares: the mean traversal, not the median one, because a
//! route's time is the sum of its edges' and a sum of medians of skewed
//! times (most lights green, some red) comes out short. Long standing is
//! already left out of the traversals. Road classes with too little data
//! keep the model's current speed.

use lastmile_roadgraph::Graph;
use lastmile_roadgraph::free_flow::{Delays, Junction, SPEEDS};
use lastmile_roadgraph::highway::HighwayClass;

use crate::MatcherConfig;
use crate::evaluate::match_trace;
use crate::traffic::{EdgeObservation, TrafficConfig, TraversalAccumulator};
use crate::trips::{Trip, as_trace};

/// A traversal must cover this share of its edge to be used.
const MIN_COVERAGE: f64 = 0.9;
/// A class and setting needs this many traversals and kilometres to be
/// fitted; below, its speed stays the model's.
const MIN_TRAVERSALS: usize = 40;
const MIN_KM: f64 = 10.0;

/// One class in one setting, as fitted.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassFit {
    pub class: &'static str,
    pub urban: bool,
    pub traversals: usize,
    pub km: f64,
    /// The fitted speed, km/h (`None`: too little data, the model's kept).
    pub speed_kmh: Option<f64>,
    /// The model's speed before.
    pub model_kmh: f64,
}

/// What a calibration found.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub trips: usize,
    pub traversals: usize,
    pub classes: Vec<ClassFit>,
    pub signal_s: f64,
    pub through_s: f64,
    pub yield_s: f64,
    /// Median absolute error of the fitted model over the traversals, s,
    /// and of the model as it was.
    pub median_abs_error_s: f64,
    pub model_median_abs_error_s: f64,
}

/// The whole-edge traversals of `trips`, matched on `graph`.
pub fn traversals(graph: &Graph, trips: &[&Trip], config: &MatcherConfig) -> Vec<EdgeObservation> {
    let trace = as_trace(trips.iter().copied());
    let m = match_trace(graph, config, &trace);
    let traffic = TrafficConfig {
        min_coverage: MIN_COVERAGE,
        ..TrafficConfig::default()
    };
    let mut out = Vec::new();
    for path in &m.paths {
        let mut acc = TraversalAccumulator::default();
        for piece in path {
            acc.push(piece, &traffic, &mut out);
        }
        acc.close(&mut out);
    }
    out.retain(|o| o.metres >= MIN_COVERAGE * graph.length_m(o.edge) && o.seconds > 0.0);
    out
}

/// Column of each parameter: one pace per class and setting, then the
/// three delays.
const PACES: usize = 2 * SPEEDS.len();
const SIGNAL: usize = PACES;
const THROUGH: usize = PACES + 1;
const YIELD: usize = PACES + 2;
const PARAMS: usize = PACES + 3;

fn pace_column(class: HighwayClass, urban: bool) -> usize {
    2 * class as usize + usize::from(urban)
}

/// Fits the model to `obs` (see the module documentation).
pub fn fit(graph: &Graph, obs: &[EdgeObservation], trips: usize) -> Calibration {
    // Rows: the features of each traversal.
    let rows: Vec<([f64; PARAMS], f64)> = obs
        .iter()
        .map(|o| {
            let f = graph.edge_features(o.edge);
            let mut x = [0.0; PARAMS];
            x[pace_column(graph.class(o.edge), f.urban())] = o.metres;
            x[SIGNAL] = f64::from(f.signals());
            x[THROUGH] = f64::from(f.junction() == Junction::Through);
            x[YIELD] = f64::from(f.junction() == Junction::Yield);
            (x, o.seconds)
        })
        .collect();
    let model: [f64; PARAMS] = std::array::from_fn(|j| match j {
        j if j < PACES => {
            let (town, country) = SPEEDS[j / 2];
            3.6 / if j % 2 == 1 { town } else { country }
        }
        SIGNAL => Delays::CALIBRATED.signal_s,
        THROUGH => Delays::CALIBRATED.through_s,
        _ => Delays::CALIBRATED.yield_s,
    });
    // Which paces have the data to be fitted.
    let mut count = [0usize; PACES];
    let mut metres = [0.0f64; PACES];
    for (x, _) in &rows {
        for j in 0..PACES {
            if x[j] > 0.0 {
                count[j] += 1;
                metres[j] += x[j];
            }
        }
    }
    let free: Vec<usize> = (0..PARAMS)
        .filter(|&j| j >= PACES || (count[j] >= MIN_TRAVERSALS && metres[j] >= MIN_KM * 1000.0))
        .collect();
    let beta = least_squares(&rows, &model, &free);
    let error = |b: &[f64; PARAMS]| {
        let abs: Vec<f64> = rows.iter().map(|(x, y)| (dot(x, b) - y).abs()).collect();
        crate::evaluate::percentile(&abs, 0.5)
    };
    let classes = (0..PACES)
        .filter(|&j| count[j] > 0)
        .map(|j| ClassFit {
            class: HighwayClass::ALL[j / 2].as_str(),
            urban: j % 2 == 1,
            traversals: count[j],
            km: metres[j] / 1000.0,
            speed_kmh: free.contains(&j).then(|| 3.6 / beta[j].max(1e-3)),
            model_kmh: 3.6 / model[j],
        })
        .collect();
    Calibration {
        trips,
        traversals: rows.len(),
        classes,
        signal_s: beta[SIGNAL],
        through_s: beta[THROUGH],
        yield_s: beta[YIELD],
        median_abs_error_s: error(&beta),
        model_median_abs_error_s: error(&model),
    }
}

fn dot(x: &[f64; PARAMS], b: &[f64; PARAMS]) -> f64 {
    x.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Least squares over the `free` parameters, the others held at `fixed`'s
/// values; delays kept non-negative.
fn least_squares(
    rows: &[([f64; PARAMS], f64)],
    fixed: &[f64; PARAMS],
    free: &[usize],
) -> [f64; PARAMS] {
    let mut beta = *fixed;
    let k = free.len();
    {
        // Normal equations in the free parameters.
        let mut a = vec![vec![0.0; k]; k];
        let mut rhs = vec![0.0; k];
        for (x, y) in rows {
            let w = 1.0;
            let held: f64 = (0..PARAMS)
                .filter(|j| !free.contains(j))
                .map(|j| x[j] * fixed[j])
                .sum();
            let target = y - held;
            for (i, &fi) in free.iter().enumerate() {
                if x[fi] == 0.0 {
                    continue;
                }
                rhs[i] += w * x[fi] * target;
                for (l, &fl) in free.iter().enumerate() {
                    a[i][l] += w * x[fi] * x[fl];
                }
            }
        }
        // A little ridge towards the model keeps unseen combinations put.
        for (i, &fi) in free.iter().enumerate() {
            let scale = a[i][i].max(1e-9) * 1e-6 + 1e-9;
            a[i][i] += scale;
            rhs[i] += scale * fixed[fi];
        }
        let Some(solution) = solve(a, rhs) else {
            return beta;
        };
        for (i, &fi) in free.iter().enumerate() {
            beta[fi] = if fi >= PACES {
                solution[i].max(0.0)
            } else {
                solution[i]
            };
        }
    }
    beta
}

/// Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            if f != 0.0 {
                let (upper, lower) = a.split_at_mut(r);
                for (x, y) in lower[0][c..].iter_mut().zip(&upper[c][c..]) {
                    *x -= f * y;
                }
                b[r] -= f * b[c];
            }
        }
    }
    let mut x = vec![0.0; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| a[c][k] * x[k]).sum();
        x[c] = (b[c] - s) / a[c][c];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solver_solves() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 3.0]];
        let x = solve(a, vec![5.0, 10.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12);
        assert!(solve(vec![vec![0.0]], vec![1.0]).is_none());
    }

    #[test]
    fn least_squares_find_the_pace_and_delay_and_keep_the_mean() {
        // Residential in town at 20 km/h plus 8 s per signal.
        let col = pace_column(HighwayClass::Residential, true);
        let rows = |jam_s: f64| -> Vec<([f64; PARAMS], f64)> {
            (0..400)
                .map(|i| {
                    let mut x = [0.0; PARAMS];
                    x[col] = 100.0 + f64::from(i % 7) * 40.0;
                    x[SIGNAL] = f64::from(i % 2);
                    let jam = if i % 10 == 0 { jam_s } else { 0.0 };
                    (x, x[col] * 3.6 / 20.0 + 8.0 * x[SIGNAL] + jam)
                })
                .collect()
        };
        let free = [col, SIGNAL, THROUGH, YIELD];
        let exact = least_squares(&rows(0.0), &[0.1; PARAMS], &free);
        assert!(
            (3.6 / exact[col] - 20.0).abs() < 1e-3,
            "{}",
            3.6 / exact[col]
        );
        assert!((exact[SIGNAL] - 8.0).abs() < 1e-3, "{}", exact[SIGNAL]);
        // One traversal in ten a minute longer: the fitted times add up to
        // the real ones (a median fit would come out short).
        let jams = rows(60.0);
        let beta = least_squares(&jams, &[0.1; PARAMS], &free);
        let fitted: f64 = jams.iter().map(|(x, _)| dot(x, &beta)).sum();
        let real: f64 = jams.iter().map(|(_, y)| y).sum();
        assert!(
            (fitted / real - 1.0).abs() < 0.01,
            "{fitted} against {real}"
        );
        assert!(3.6 / beta[col] < 20.0);
    }
}
