//! The pings that made no step of their own: those of a standing vehicle,
//! each finalised with the step it was held with, at the place that step's
//! group of held pings stood last (its latest centroid); and outliers,
//! whose fix was refused, finalised where the path the vehicle drove puts
//! it at their time (the finalised stream has a point for every ping).
//!
//! A ping costs its sequence number, time and fix (24 bytes); the group
//! keeps its place and the spread of its pings' times, which says whether
//! the fixes have shown the vehicle standing or could as well be a vehicle
//! moving on (see [`Taken::established`]). Groups are finalised with their
//! step's successor, at most `standstill_max_s` later, so a parked van holds
//! a minute of pings at most.

use std::collections::VecDeque;

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::LatLonE7;

use super::high_water::HighWater;

/// The held pings of one step, in arrival order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Group {
    /// Sequence number of the step they are held with.
    step: u64,
    /// Where the group's newest ping placed the standing vehicle.
    pos: LatLon,
    len: u32,
    /// Mean and sum of squared deviations of the standing pings' times
    /// (Welford), for the least-squares speed they could detect.
    mean_t: f64,
    m2_t: f64,
    standing: u32,
}

/// A held ping: what its finalised point needs of it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub(crate) struct HeldPing {
    /// Sequence number, with [`OUTLIER`] set for an outlier.
    tagged_seq: u64,
    pub time: f64,
    /// The ping's own fix (an outlier's is not kept).
    fix: LatLonE7,
}

/// Tag of an outlier's sequence number (sequence numbers count pings, and
/// never get near it).
const OUTLIER: u64 = 1 << 63;

impl HeldPing {
    fn new(seq: u64, time: f64, fix: Option<LatLon>) -> Self {
        debug_assert!(seq & OUTLIER == 0);
        let tag = if fix.is_none() { OUTLIER } else { 0 };
        Self {
            tagged_seq: seq | tag,
            time,
            fix: fix.map_or(LatLonE7::default(), LatLonE7::from),
        }
    }

    /// The ping's fix; `None` for an outlier.
    pub fn fix(&self) -> Option<LatLon> {
        (!self.is_outlier()).then(|| self.fix.latlon())
    }

    pub fn seq(&self) -> u64 {
        self.tagged_seq & !OUTLIER
    }

    /// A refused fix, placed by its time rather than by the group's place.
    pub fn is_outlier(&self) -> bool {
        self.tagged_seq & OUTLIER != 0
    }
}

/// Held pings, oldest first, grouped by the step they are held with.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default)]
pub(crate) struct Held {
    groups: VecDeque<Group>,
    pings: VecDeque<HeldPing>,
    peak_groups: HighWater,
    peak_pings: HighWater,
}

/// One step's held pings, as [`Held::take`] gives them back.
pub(crate) struct Taken<'a> {
    /// Where the group's newest standing ping placed the vehicle.
    pub pos: LatLon,
    /// Sum of squared deviations of the standing pings' times from their
    /// mean, s².
    time_spread: f64,
    pub pings: std::collections::vec_deque::Drain<'a, HeldPing>,
}

impl Taken<'_> {
    /// Whether the group's fixes, of noise `sigma`, were enough to show the
    /// vehicle standing: the least-squares speed of fixes at these times
    /// has a standard error of sigma / sqrt(spread), and a cluster that
    /// could not have told 0.5 m/s from standing (three fixes a second
    /// apart cannot tell 10 m/s at 5 m of noise) may as well be a vehicle
    /// driving on, round a hairpin, or its fixes bunching by chance.
    pub fn established(&self, sigma: f64) -> bool {
        sigma <= ESTABLISHED_SPEED_SE_MPS * self.time_spread.sqrt()
    }
}

/// See [`Taken::established`]; measured on simulated 1 s Monaco and
/// Andorra drives at 5–20 m of noise (BENCHMARKS.md, session 27).
const ESTABLISHED_SPEED_SE_MPS: f64 = 0.5;

impl Held {
    /// Holds a ping whose fix is `fix` with step `step` (at least as new
    /// as any held so far), the standing vehicle at `pos`.
    pub fn push(&mut self, step: u64, seq: u64, time: f64, pos: LatLon, fix: LatLon) {
        self.hold(step, HeldPing::new(seq, time, Some(fix)), Some(pos));
    }

    /// Holds an outlier with step `step` (the newest step before it); the
    /// group's place stays what its standing pings made it.
    pub fn push_outlier(&mut self, step: u64, seq: u64, time: f64) {
        self.hold(step, HeldPing::new(seq, time, None), None);
    }

    fn hold(&mut self, step: u64, ping: HeldPing, pos: Option<LatLon>) {
        let g = match self.groups.back_mut() {
            Some(g) if g.step == step => g,
            _ => {
                debug_assert!(self.groups.back().is_none_or(|g| g.step < step));
                // A group of outliers alone has no place of its own.
                self.groups.push_back(Group {
                    step,
                    pos: LatLon::new(f64::NAN, f64::NAN),
                    len: 0,
                    mean_t: 0.0,
                    m2_t: 0.0,
                    standing: 0,
                });
                self.peak_groups.saw(self.groups.len());
                self.groups.back_mut().expect("just pushed")
            }
        };
        g.len += 1;
        if let Some(p) = pos {
            g.pos = p;
            g.standing += 1;
            let d = ping.time - g.mean_t;
            g.mean_t += d / f64::from(g.standing);
            g.m2_t += d * (ping.time - g.mean_t);
        }
        self.pings.push_back(ping);
        self.peak_pings.saw(self.pings.len());
    }

    /// The step the newest held pings belong to.
    pub fn newest_step(&self) -> Option<u64> {
        self.groups.back().map(|g| g.step)
    }

    /// Takes the pings held with `step` if they are the oldest held; `None`
    /// when none are.
    pub fn take(&mut self, step: u64) -> Option<Taken<'_>> {
        let g = self.groups.front().filter(|g| g.step == step).copied()?;
        self.groups.pop_front();
        Some(Taken {
            pos: g.pos,
            time_spread: g.m2_t,
            pings: self.pings.drain(..g.len as usize),
        })
    }

    pub fn clear(&mut self) {
        self.groups.clear();
        self.pings.clear();
    }

    /// Gives back the room of stands that ended: a moving vehicle holds
    /// nothing, and its next stand grows the queues again.
    pub fn shrink(&mut self) {
        self.peak_pings.trim(&mut self.pings, 0);
        self.peak_groups.trim(&mut self.groups, 0);
    }

    /// Heap bytes held (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.pings.capacity() * std::mem::size_of::<HeldPing>()
            + self.groups.capacity() * std::mem::size_of::<Group>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_back_in_order_with_their_newest_place_and_own_fixes() {
        let mut h = Held::default();
        let (a, b, c) = (
            LatLon::new(1.0, 1.0),
            LatLon::new(2.0, 2.0),
            LatLon::new(3.0, 3.0),
        );
        let (fa, fb) = (LatLon::new(1.5, 1.5), LatLon::new(2.5, 2.5));
        h.push(4, 5, 50.0, a, fa);
        h.push(4, 6, 60.0, b, fb);
        h.push(7, 8, 80.0, c, c);
        assert_eq!(h.newest_step(), Some(7));
        // Only the oldest group can be taken.
        assert!(h.take(7).is_none());
        {
            let taken = h.take(4).unwrap();
            assert_eq!(taken.pos, b);
            let pings: Vec<_> = taken.pings.map(|p| (p.seq(), p.time, p.fix())).collect();
            assert_eq!(pings, [(5, 50.0, Some(fa)), (6, 60.0, Some(fb))]);
        }
        {
            let taken = h.take(7).unwrap();
            assert_eq!((taken.pos, taken.pings.count()), (c, 1));
        }
        assert!(h.take(7).is_none() && h.newest_step().is_none());
        // An outlier joins the group of its step without moving its place,
        // and keeps its sequence number and tag, but no fix.
        h.push(9, 10, 100.0, a, a);
        h.push_outlier(9, 11, 110.0);
        h.push_outlier(12, 13, 130.0);
        {
            let taken = h.take(9).unwrap();
            assert_eq!(taken.pos, a);
            let pings: Vec<_> = taken
                .pings
                .map(|p| (p.seq(), p.is_outlier(), p.fix().is_some()))
                .collect();
            assert_eq!(pings, [(10, false, true), (11, true, false)]);
        }
        {
            let taken = h.take(12).unwrap();
            assert!(taken.pos.lat.is_nan());
            assert_eq!(taken.pings.map(|p| p.seq()).collect::<Vec<_>>(), [13]);
        }
        h.push(9, 10, 100.0, a, a);
        h.clear();
        assert!(h.newest_step().is_none() && h.take(9).is_none());
    }

    /// Held for `n` fixes a second apart (and an outlier among them, which
    /// shows nothing): is the stand established at 5 m of noise?
    fn established_after(n: u64, sigma: f64) -> bool {
        let mut h = Held::default();
        let p = LatLon::new(43.7, 7.4);
        for k in 0..n {
            h.push(1, 2 + k, k as f64, p, p);
        }
        h.push_outlier(1, 2 + n, 1000.0);
        h.take(1).unwrap().established(sigma)
    }

    #[test]
    fn a_stand_is_established_once_its_fixes_could_show_a_slow_drive() {
        // The least-squares speed of n fixes a second apart has a standard
        // error of sigma·sqrt(12 / (n³ - n)): under 0.5 m/s at 5 m of noise
        // from 11 fixes on, at 20 m from 27.
        assert!(!established_after(2, 5.0));
        assert!(!established_after(10, 5.0));
        assert!(established_after(11, 5.0));
        assert!(!established_after(26, 20.0));
        assert!(established_after(27, 20.0));
    }
}
