//! Where one vehicle stands to its fleet's zones, judged on its matched
//! positions: which zones it is inside and since when, and the events
//! that follow from each new position.
//!
//! Hysteresis in space: a vehicle enters a zone once it is `margin_m`
//! inside the border and leaves it once it is `margin_m` outside, so one
//! driving along a border (or a fix wavering across it) changes nothing.
//! And in time: the change holds only once `positions` positions in a row
//! show it, so a single wrong position (a fix the matcher took on a street
//! nearby) changes nothing either; the change is dated from the first of
//! them. A zone the vehicle is deep inside is not measured again until it
//! has moved as far as the border was (it cannot have left before): a van
//! inside a wide allowed area pays for the area's border only now and
//! then. A zone it is inside that the fleet removes is forgotten without
//! an event (the vehicle did not move); a zone whose shape changes is
//! judged anew at the next position.

use lastmile_roadgraph::LatLon;

use super::index::{ZoneId, ZoneSet};

/// What happened between a vehicle and a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneChange {
    Entered,
    Left,
    /// Inside longer than the zone's dwell time.
    Dwell,
}

/// One change, told at the event time of the position that confirmed it.
/// `since` is when it began: the first position inside (entered, dwell:
/// the vehicle is inside since then) or outside (left).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneEvent {
    pub change: ZoneChange,
    pub zone: ZoneId,
    pub time: f64,
    pub since: f64,
    /// Left: seconds it was inside (entry to first position outside).
    pub inside_s: f64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
struct Inside {
    zone: ZoneId,
    since: f64,
    dwelt: bool,
    /// Where the border was last measured from, and how far the vehicle
    /// may move from there and still be inside, metres.
    measured_at: LatLon,
    reach_m: f64,
    /// Positions in a row beyond the margin outside, and the first one's time.
    outside: u32,
    outside_since: f64,
}

/// A zone the vehicle is beyond the margin inside of, not yet for long
/// enough to have entered it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
struct Entering {
    zone: ZoneId,
    since: f64,
    positions: u32,
}

/// The share of the distance to a border trusted when skipping a
/// measurement: great-circle and plane metres differ by well under 1%.
const TRUSTED: f64 = 0.99;

impl Inside {
    /// How far a vehicle may move from where it is `d` metres from the
    /// border (negative inside) and not be `margin_m` outside it.
    fn reach(d: f64, margin_m: f64) -> f64 {
        (TRUSTED * (margin_m - d) - 1.0).max(0.0)
    }
}

/// How a vehicle is judged against zones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judging {
    /// Metres beyond a border, either way, for a position to count.
    pub margin_m: f64,
    /// Positions in a row that must count before a change holds (1: the
    /// first one).
    pub positions: u32,
}

/// The zones a vehicle is inside.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Presence {
    inside: Vec<Inside>,
    entering: Vec<Entering>,
    /// The [`ZoneSet::generation`] the reaches were measured in (0: none;
    /// sets are numbered from 1).
    generation: u64,
}

impl Presence {
    /// Measures every border again at the next position (zone sets are
    /// numbered per process: after a restart a number may come again).
    pub fn remeasure(&mut self) {
        self.generation = 0;
        for i in &mut self.inside {
            i.reach_m = 0.0;
        }
    }

    /// Inside no zone, and entering none.
    pub fn is_empty(&self) -> bool {
        self.inside.is_empty() && self.entering.is_empty()
    }

    /// Whether the vehicle is on its way into a zone `which` accepts (beyond
    /// the margin inside it, not yet for enough positions).
    pub fn entering(&self, which: impl Fn(ZoneId) -> bool) -> bool {
        self.entering.iter().any(|e| which(e.zone))
    }

    /// The zones the vehicle is inside, and since when.
    pub fn inside(&self) -> impl Iterator<Item = (ZoneId, f64)> + '_ {
        self.inside.iter().map(|i| (i.zone, i.since))
    }

    /// Judges the matched position `p` at `time` against `zones`, pushing
    /// the events it shows: leavings first, then entries, then dwells,
    /// each group in zone order.
    pub fn observe(
        &mut self,
        zones: &ZoneSet,
        p: LatLon,
        time: f64,
        judging: Judging,
        out: &mut Vec<ZoneEvent>,
    ) {
        let (margin_m, needed) = (judging.margin_m, judging.positions.max(1));
        let start = out.len();
        if zones.generation() != self.generation {
            self.generation = zones.generation();
            for i in &mut self.inside {
                i.reach_m = 0.0;
            }
        }
        self.inside.retain_mut(|i| {
            let Some(zone) = zones.get(i.zone) else {
                return false;
            };
            if lastmile_roadgraph::geo::haversine_m(i.measured_at, p) < i.reach_m {
                i.outside = 0;
                return true;
            }
            let d = zone.shape.signed_distance_m(p);
            (i.measured_at, i.reach_m) = (p, Inside::reach(d, margin_m));
            if d <= margin_m {
                i.outside = 0;
                return true;
            }
            if i.outside == 0 {
                i.outside_since = time;
            }
            i.outside += 1;
            if i.outside < needed {
                return true;
            }
            out.push(ZoneEvent {
                change: ZoneChange::Left,
                zone: i.zone,
                time,
                since: i.outside_since,
                inside_s: i.outside_since - i.since,
            });
            false
        });
        let mut entering = Vec::new();
        for zone in zones.near(p) {
            if self.inside.iter().any(|i| i.zone == zone.id) {
                continue;
            }
            let d = zone.shape.signed_distance_m(p);
            if d >= -margin_m {
                continue;
            }
            let before = self.entering.iter().find(|e| e.zone == zone.id);
            let e = Entering {
                zone: zone.id,
                since: before.map_or(time, |e| e.since),
                positions: before.map_or(0, |e| e.positions) + 1,
            };
            if e.positions < needed {
                entering.push(e);
                continue;
            }
            self.inside.push(Inside {
                zone: zone.id,
                since: e.since,
                dwelt: false,
                measured_at: p,
                reach_m: Inside::reach(d, margin_m),
                outside: 0,
                outside_since: f64::NAN,
            });
            out.push(ZoneEvent {
                change: ZoneChange::Entered,
                zone: zone.id,
                time,
                since: e.since,
                inside_s: 0.0,
            });
        }
        // A zone not seen beyond the margin inside at this position starts
        // again.
        self.entering = entering;
        for i in &mut self.inside {
            let dwell = zones.get(i.zone).and_then(|z| z.dwell_s);
            if let Some(d) = dwell
                && !i.dwelt
                && time - i.since >= d
            {
                i.dwelt = true;
                out.push(ZoneEvent {
                    change: ZoneChange::Dwell,
                    zone: i.zone,
                    time,
                    since: i.since,
                    inside_s: 0.0,
                });
            }
        }
        let order = |e: &ZoneEvent| match e.change {
            ZoneChange::Left => 0,
            ZoneChange::Entered => 1,
            ZoneChange::Dwell => 2,
        };
        out[start..].sort_by_key(|e| (order(e), e.zone));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::index::Zone;
    use crate::zones::shape::Shape;

    const MARGIN: f64 = 15.0;
    /// Judged on each position alone.
    const ONE: Judging = Judging {
        margin_m: MARGIN,
        positions: 1,
    };

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon)
    }

    /// A square yard of 0.002° (about 160 m east-west, 220 m north-south)
    /// with its south-west corner at 43.73, 7.42.
    fn yard(dwell_s: Option<f64>) -> Zone {
        let (lat, lon, side) = (43.73, 7.42, 0.002);
        Zone {
            id: 7,
            shape: Shape::polygon(vec![vec![
                ll(lat, lon),
                ll(lat, lon + side),
                ll(lat + side, lon + side),
                ll(lat + side, lon),
            ]])
            .unwrap(),
            dwell_s,
            kind: crate::zones::ZoneKind::Plain,
            speed_limit_kmh: None,
        }
    }

    /// A position `north_m` metres north of the yard's southern border,
    /// halfway along it.
    fn at(north_m: f64) -> LatLon {
        ll(43.73 + north_m / 111_195.0, 7.421)
    }

    fn drive(p: &mut Presence, set: &ZoneSet, track: &[(f64, f64)]) -> Vec<ZoneEvent> {
        let mut out = Vec::new();
        for &(t, north) in track {
            p.observe(set, at(north), t, ONE, &mut out);
        }
        out
    }

    #[test]
    fn in_and_out_across_the_border() {
        let set = ZoneSet::new(vec![yard(None)], MARGIN);
        let mut p = Presence::default();
        let track: Vec<(f64, f64)> = (0..20)
            .map(|k| (f64::from(k), -95.0 + 10.0 * f64::from(k)))
            .collect();
        let out = drive(&mut p, &set, &track);
        // Entered once 15 m inside (at +15 m, the 12th position), then
        // still inside at the end (+95 m).
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].change, out[0].zone, out[0].time),
            (ZoneChange::Entered, 7, 11.0)
        );
        assert_eq!(p.inside().collect::<Vec<_>>(), [(7, 11.0)]);
        // And back out: left once 15 m outside.
        let back: Vec<(f64, f64)> = (0..20)
            .map(|k| (20.0 + f64::from(k), 95.0 - 10.0 * f64::from(k)))
            .collect();
        let out = drive(&mut p, &set, &back);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].change, ZoneChange::Left);
        assert_eq!(out[0].time, 31.0);
        assert_eq!(out[0].inside_s, 20.0);
        assert_eq!(p.inside().count(), 0);
    }

    #[test]
    fn driving_along_the_border_does_not_flap() {
        let set = ZoneSet::new(vec![yard(None)], MARGIN);
        let mut p = Presence::default();
        // Wavering 12 m either side of the border for ten minutes.
        let track: Vec<(f64, f64)> = (0..600)
            .map(|k| (f64::from(k), if k % 2 == 0 { 12.0 } else { -12.0 }))
            .collect();
        assert!(drive(&mut p, &set, &track).is_empty());
        // Once in, the same wavering does not take it out.
        let mut out = Vec::new();
        p.observe(&set, at(40.0), 600.0, ONE, &mut out);
        let track: Vec<(f64, f64)> = (601..1200)
            .map(|k| (f64::from(k), if k % 2 == 0 { 12.0 } else { -12.0 }))
            .collect();
        assert!(drive(&mut p, &set, &track).is_empty());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn one_wrong_position_changes_nothing_when_two_are_needed() {
        let set = ZoneSet::new(vec![yard(None)], MARGIN);
        let two = Judging {
            margin_m: MARGIN,
            positions: 2,
        };
        let mut p = Presence::default();
        let mut out = Vec::new();
        // Outside, one position deep inside, outside again: nothing.
        for (t, north) in [(0.0, -60.0), (1.0, 50.0), (2.0, -60.0)] {
            p.observe(&set, at(north), t, two, &mut out);
        }
        assert!(out.is_empty() && p.is_empty(), "{out:?}");
        // Two in a row: entered, dated from the first.
        for (t, north) in [(3.0, 50.0), (4.0, 60.0)] {
            p.observe(&set, at(north), t, two, &mut out);
        }
        let got: Vec<_> = out.iter().map(|e| (e.change, e.time, e.since)).collect();
        assert_eq!(got, [(ZoneChange::Entered, 4.0, 3.0)]);
        // One position far outside, then back: still inside.
        for (t, north) in [(5.0, -80.0), (6.0, 60.0)] {
            p.observe(&set, at(north), t, two, &mut out);
        }
        assert_eq!(out.len(), 1);
        // Two outside: left, after 4 s inside.
        for (t, north) in [(7.0, -80.0), (8.0, -90.0)] {
            p.observe(&set, at(north), t, two, &mut out);
        }
        assert_eq!(
            (out[1].change, out[1].time, out[1].since, out[1].inside_s),
            (ZoneChange::Left, 8.0, 7.0, 4.0)
        );
    }

    #[test]
    fn a_dwell_is_told_once() {
        let set = ZoneSet::new(vec![yard(Some(300.0))], MARGIN);
        let mut p = Presence::default();
        let track: Vec<(f64, f64)> = (0..=100).map(|k| (10.0 * f64::from(k), 50.0)).collect();
        let out = drive(&mut p, &set, &track);
        let kinds: Vec<_> = out.iter().map(|e| (e.change, e.time, e.since)).collect();
        assert_eq!(
            kinds,
            [
                (ZoneChange::Entered, 0.0, 0.0),
                (ZoneChange::Dwell, 300.0, 0.0)
            ]
        );
    }

    #[test]
    fn a_zone_removed_or_moved_while_inside() {
        let mut p = Presence::default();
        let mut out = Vec::new();
        let set = ZoneSet::new(vec![yard(None)], MARGIN);
        p.observe(&set, at(50.0), 0.0, ONE, &mut out);
        assert_eq!(out.len(), 1);
        // Removed: forgotten, nothing told.
        let none = ZoneSet::new(Vec::new(), MARGIN);
        p.observe(&none, at(50.0), 1.0, ONE, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.inside().count(), 0);
        // Back, then moved 1 km north: the vehicle has left it.
        p.observe(&set, at(50.0), 2.0, ONE, &mut out);
        let mut moved = yard(None);
        moved.shape = Shape::circle(ll(43.74, 7.421), 100.0).unwrap();
        let moved = ZoneSet::new(vec![moved], MARGIN);
        p.observe(&moved, at(50.0), 3.0, ONE, &mut out);
        let last: Vec<_> = out[1..].iter().map(|e| (e.change, e.time)).collect();
        assert_eq!(last, [(ZoneChange::Entered, 2.0), (ZoneChange::Left, 3.0)]);
    }

    #[test]
    fn skipping_measurements_deep_inside_changes_no_event() {
        // A vehicle driving straight north through the yard, 1 m a step,
        // observed by a presence that skips (the real one) and by one that
        // forgets its reach every step: the same events at the same times.
        let set = ZoneSet::new(vec![yard(Some(60.0))], MARGIN);
        let (mut skipping, mut measuring) = (Presence::default(), Presence::default());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for k in 0..400 {
            let (t, p) = (f64::from(k), at(-80.0 + f64::from(k)));
            skipping.observe(&set, p, t, ONE, &mut a);
            measuring.observe(&set, p, t, ONE, &mut b);
            for i in &mut measuring.inside {
                i.reach_m = 0.0;
            }
        }
        assert_eq!(a, b);
        let kinds: Vec<_> = a.iter().map(|e| (e.change, e.time)).collect();
        assert_eq!(
            kinds,
            [
                (ZoneChange::Entered, 95.0),
                (ZoneChange::Dwell, 155.0),
                (ZoneChange::Left, 318.0)
            ]
        );
    }
}
