//! How well `late` and `at_risk` foretold a simulated day's true lateness:
//! the bench reads the engine's events as a subscriber would
//! ([`Watch`]) and, once the day is over, holds them against the
//! simulator's true arrivals ([`foretold`]). A stop is truly late when it
//! was reached after its window's end. A flag counts as foretelling when
//! it came before the stop was reached.

use std::collections::HashMap;

use crate::fleet::{EventBus, EventKind, StopId};
use crate::simulate::SimStop;

/// What one stop was told, until it was reached.
#[derive(Clone, Copy, Debug, Default)]
struct Told {
    first_late: Option<f64>,
    lates: u32,
    first_risk: Option<f64>,
    risks: u32,
}

/// The events a bench run has read so far, per stop.
#[derive(Debug, Default)]
pub struct Watch {
    cursor: u64,
    told: HashMap<StopId, Told>,
    /// Events the watch fell too far behind to read.
    pub lost: u64,
    buffer: Vec<(u64, crate::fleet::Event)>,
}

impl Watch {
    /// Reads every event published since the last call.
    pub fn drain(&mut self, bus: &EventBus) {
        loop {
            self.buffer.clear();
            let r = bus.read_pending(&mut self.cursor, 4096, &mut self.buffer);
            self.lost += r.lost;
            for (_, e) in &self.buffer {
                let Some(stop) = e.stop else { continue };
                let t = self.told.entry(stop).or_default();
                match e.kind {
                    EventKind::Late => {
                        t.first_late.get_or_insert(e.time);
                        t.lates += 1;
                    }
                    EventKind::AtRisk => {
                        t.first_risk.get_or_insert(e.time);
                        t.risks += 1;
                    }
                    _ => {}
                }
            }
            if r.read < 4096 {
                return;
            }
        }
    }
}

/// One detector against the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Foretold {
    /// Stops it flagged before they were reached, stops truly late, and
    /// those both.
    pub flagged: usize,
    pub truly_late: usize,
    pub hits: usize,
    /// `hits / flagged` and `hits / truly_late`.
    pub precision: f64,
    pub recall: f64,
    /// Times it was raised per flagged stop (1 when it never flapped).
    pub raised_per_flagged: f64,
    /// Median seconds from its first flag to the window's end, over hits.
    pub median_lead_s: f64,
}

/// `late` and `at_risk` against the true arrivals of `stops` (engine stop
/// id = index).
pub fn foretold(watch: &Watch, stops: &[SimStop]) -> (Foretold, Foretold) {
    let score = |first: &dyn Fn(&Told) -> Option<f64>, count: &dyn Fn(&Told) -> u32| {
        let mut f = Foretold::default();
        let mut raised = 0u64;
        let mut leads = Vec::new();
        for (i, s) in stops.iter().enumerate() {
            let Some(arrival) = s.true_arrival else {
                continue;
            };
            let late = s.window_end.is_finite() && arrival > s.window_end;
            f.truly_late += usize::from(late);
            let told = watch.told.get(&(i as StopId));
            let Some(at) = told.and_then(first).filter(|&t| t < arrival) else {
                continue;
            };
            f.flagged += 1;
            raised += u64::from(told.map_or(0, count));
            if late {
                f.hits += 1;
                leads.push(s.window_end - at);
            }
        }
        f.precision = f.hits as f64 / f.flagged.max(1) as f64;
        f.recall = f.hits as f64 / f.truly_late.max(1) as f64;
        f.raised_per_flagged = raised as f64 / f.flagged.max(1) as f64;
        leads.sort_by(f64::total_cmp);
        f.median_lead_s = leads.get(leads.len() / 2).copied().unwrap_or(f64::NAN);
        f
    };
    (
        score(&|t| t.first_late, &|t| t.lates),
        score(&|t| t.first_risk, &|t| t.risks),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::LatLon;

    fn stop(window_end: f64, arrival: f64) -> SimStop {
        SimStop {
            vehicle: "v".into(),
            stop_id: "s".into(),
            seq: 0,
            pos: LatLon::new(0.0, 0.0),
            edge: 0,
            offset_m: 0.0,
            window_start: 0.0,
            window_end,
            service_s: 0.0,
            true_arrival: Some(arrival),
        }
    }

    #[test]
    fn flags_are_held_against_the_true_arrivals() {
        let stops = [
            stop(1000.0, 1200.0), // late, flagged at 400 and again: a hit
            stop(1000.0, 900.0),  // on time, flagged: a false alarm
            stop(1000.0, 1100.0), // late, flagged only after it was reached
            stop(1000.0, 1300.0), // late, never flagged
        ];
        let mut watch = Watch::default();
        let told = |first_late, lates| Told {
            first_late: Some(first_late),
            lates,
            ..Told::default()
        };
        watch.told.insert(0, told(400.0, 2));
        watch.told.insert(1, told(500.0, 1));
        watch.told.insert(2, told(1150.0, 1));
        let (late, at_risk) = foretold(&watch, &stops);
        assert_eq!((late.flagged, late.truly_late, late.hits), (2, 3, 1));
        assert_eq!((late.precision, late.recall), (0.5, 1.0 / 3.0));
        assert_eq!(late.raised_per_flagged, 1.5);
        assert_eq!(late.median_lead_s, 600.0);
        assert_eq!(
            (at_risk.flagged, at_risk.hits, at_risk.truly_late),
            (0, 0, 3)
        );
    }
}
