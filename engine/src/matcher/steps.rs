//! The window's storage: the steps of a vehicle's recent pings and their
//! candidates (hypotheses), kept compact because a fleet holds millions.
//!
//! All of a vehicle's candidates live in one buffer, oldest step first, then
//! those of the step being built (staged): a step holds only where its
//! candidates start. A step with three candidates costs three, not the
//! twelve a per-step list would keep room for, and nothing is pooled or
//! reallocated per ping once the buffer has grown to the vehicle's usual
//! window.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};

use lastmile_roadgraph::{LatLon, LatLonE7};

use super::PRUNE_LOG;
use super::high_water::HighWater;

/// No predecessor (first step of a chain, or not reachable).
pub(super) const NO_BACK: u8 = u8::MAX;

/// One hypothesis of a step: 32 bytes, since a fleet holds millions of
/// them. Scores stay `f64` (they are compared across long chains); positions
/// along an edge are `f32` (sub-millimetre on any road edge), and the snapped
/// point and its distance from the fix are recomputed from the edge and
/// offset where they are needed (the estimate, finalisation), not stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub emission: f64,
    /// Viterbi log-score (relative to the step's best); `-inf` when dead.
    pub score: f64,
    pub edge: u32,
    /// Where the ping projects onto the edge, metres from its tail.
    offset_m: f32,
    /// Where this hypothesis puts the vehicle on the edge: the projection,
    /// or further on when the vehicle is standing and the fix fell behind.
    pos_m: f32,
    /// Index of the best predecessor in the previous step.
    pub back: u8,
}

// A fleet holds millions of these: a layout change that grows them is a
// memory regression, caught here rather than in a benchmark.
const _: () = assert!(std::mem::size_of::<Cand>() == 32);
const _: () = assert!(std::mem::size_of::<Step>() == 48);

impl Cand {
    pub fn new(edge: u32, offset_m: f64, emission: f64) -> Self {
        Self {
            emission,
            score: f64::NEG_INFINITY,
            edge,
            offset_m: offset_m as f32,
            pos_m: offset_m as f32,
            back: NO_BACK,
        }
    }

    /// Where the fix projects onto the edge, metres from its tail.
    pub fn offset(&self) -> f64 {
        f64::from(self.offset_m)
    }

    /// Where this hypothesis puts the vehicle, metres from the edge's tail.
    pub fn pos(&self) -> f64 {
        f64::from(self.pos_m)
    }

    pub fn set_pos(&mut self, pos_m: f64) {
        self.pos_m = pos_m as f32;
    }

    /// Puts the vehicle back where the fix projects.
    pub fn reset_pos(&mut self) {
        self.pos_m = self.offset_m;
    }

    /// Whether the vehicle stands where the fix projects.
    pub fn at_projection(&self) -> bool {
        self.pos_m == self.offset_m
    }
}

/// One ping's step in the window; its candidates are in the window's
/// buffer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default)]
pub(crate) struct Step {
    pub seq: u64,
    pub time: f64,
    pos: LatLonE7,
    sigma: f64,
    /// Speed reported with the ping, m/s (NaN: none).
    speed: f32,
    /// First step of a chain that followed a break.
    pub reset: bool,
    /// ... a break because no road led to it ([`MatchStatus::Break`](super::MatchStatus)).
    pub disconnected: bool,
    /// Placed at the centroid of a standing vehicle's fixes.
    pub settled: bool,
    /// Already finalised (only ever `window[0]`, kept as the anchor).
    pub done: bool,
    /// Its candidates: `n` of them from `start` in the window's buffer.
    n: u8,
    start: u32,
}

impl Step {
    pub fn new(seq: u64, time: f64, pos: LatLon, sigma: f64) -> Self {
        Self {
            seq,
            time,
            pos: pos.into(),
            sigma,
            speed: f32::NAN,
            ..Self::default()
        }
    }

    /// Where the step places the fix (the ping, or a standing cluster's centroid).
    pub fn pos(&self) -> LatLon {
        self.pos.latlon()
    }

    /// GPS noise assumed for the fix, metres.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Speed reported with the ping, m/s.
    pub fn speed(&self) -> Option<f64> {
        (!self.speed.is_nan()).then_some(f64::from(self.speed))
    }

    pub fn set_speed(&mut self, speed: Option<f64>) {
        self.speed = speed.map_or(f32::NAN, |s| s as f32);
    }

    fn range(&self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + usize::from(self.n)
    }
}

/// Index of the best live candidate.
pub(crate) fn best(cands: &[Cand]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if c.score > f64::NEG_INFINITY && best.is_none_or(|b| c.score > cands[b].score) {
            best = Some(i);
        }
    }
    best
}

/// Shifts scores so the best is 0 (keeps them in range over long chains).
pub(crate) fn normalise(cands: &mut [Cand]) {
    if let Some(b) = best(cands) {
        let top = cands[b].score;
        for c in cands {
            c.score -= top;
        }
    }
}

/// The candidates that can still be extended: a hypothesis more than
/// [`PRUNE_LOG`] behind the step's best (scores are normalised, best 0)
/// will not be, so it cannot hold the past open.
pub(crate) fn alive_mask(cands: &[Cand]) -> u64 {
    cands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.score > -PRUNE_LOG)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Buffers are not trimmed below this many steps or candidates.
const MIN_STEPS: usize = 2;
const MIN_CANDS: usize = 4;

/// A vehicle's steps, oldest first, and the candidates of each.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default)]
pub(crate) struct Window {
    steps: VecDeque<Step>,
    /// Every step's candidates in step order, then the staged ones.
    cands: Vec<Cand>,
    /// The most steps and candidates held since the last trim.
    peak_steps: HighWater,
    peak_cands: HighWater,
}

impl Window {
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn front(&self) -> Option<&Step> {
        self.steps.front()
    }

    pub fn back(&self) -> Option<&Step> {
        self.steps.back()
    }

    /// The candidates of step `k`.
    pub fn cands(&self, k: usize) -> &[Cand] {
        &self.cands[self.steps[k].range()]
    }

    pub fn cands_mut(&mut self, k: usize) -> &mut [Cand] {
        let r = self.steps[k].range();
        &mut self.cands[r]
    }

    /// Where the committed steps' candidates end (the staged ones begin).
    fn committed(&self) -> usize {
        self.steps.back().map_or(0, |s| s.range().end)
    }

    /// Starts staging the candidates of a new step (dropping any left staged).
    pub fn clear_staged(&mut self) {
        self.cands.truncate(self.committed());
    }

    pub fn stage(&mut self, c: Cand) {
        self.cands.push(c);
    }

    pub fn staged(&self) -> &[Cand] {
        &self.cands[self.committed()..]
    }

    pub fn staged_mut(&mut self) -> &mut [Cand] {
        let at = self.committed();
        &mut self.cands[at..]
    }

    /// The newest step, its candidates and the staged ones (to score the
    /// transitions between them).
    pub fn newest_and_staged(&mut self) -> Option<(&Step, &[Cand], &mut [Cand])> {
        let step = self.steps.back()?;
        let (before, staged) = self.cands.split_at_mut(step.range().end);
        Some((step, &before[step.range()], staged))
    }

    /// Makes `step` the newest, with the staged candidates as its own.
    pub fn commit(&mut self, mut step: Step) {
        let at = self.committed();
        step.start = at as u32;
        step.n = u8::try_from(self.cands.len() - at).expect("at most MAX_CANDIDATES_LIMIT");
        self.steps.push_back(step);
        self.peak_steps.saw(self.steps.len());
        self.peak_cands.saw(self.cands.len());
    }

    /// Drops the oldest step and its candidates.
    pub fn pop_front(&mut self) -> Option<Step> {
        let step = self.steps.pop_front()?;
        let n = usize::from(step.n);
        self.cands.drain(..n);
        for s in &mut self.steps {
            s.start -= n as u32;
        }
        Some(step)
    }

    /// Drops the newest step and its candidates (none may be staged).
    pub fn pop_back(&mut self) -> Option<Step> {
        debug_assert!(self.staged().is_empty());
        let step = self.steps.pop_back()?;
        self.cands.truncate(step.start as usize);
        Some(step)
    }

    /// Drops every step, keeping what is staged.
    pub fn clear_steps(&mut self) {
        let at = self.committed();
        self.cands.drain(..at);
        self.steps.clear();
    }

    /// Gives back the room the window did not need since the last trim:
    /// buffers keep their recent high-water mark (so the next pings rarely
    /// grow them again) and lose the rest of what a long window once took.
    pub fn shrink(&mut self) {
        self.peak_steps.trim(&mut self.steps, MIN_STEPS);
        self.peak_cands.trim(&mut self.cands, MIN_CANDS);
    }

    /// Heap bytes held (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.steps.capacity() * std::mem::size_of::<Step>()
            + self.cands.capacity() * std::mem::size_of::<Cand>()
    }
}

impl Index<usize> for Window {
    type Output = Step;

    fn index(&self, k: usize) -> &Step {
        &self.steps[k]
    }
}

impl IndexMut<usize> for Window {
    fn index_mut(&mut self, k: usize) -> &mut Step {
        &mut self.steps[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::rng::Rng;

    /// The window against a plain list of steps with their own candidate
    /// lists, through random stages, commits and pops from both ends.
    #[test]
    fn window_keeps_each_steps_candidates() {
        let mut rng = Rng::seed(5);
        let mut w = Window::default();
        let mut model: VecDeque<(u64, Vec<u32>)> = VecDeque::new();
        let mut seq = 0;
        for round in 0..20_000 {
            match rng.below(10) {
                0..=4 => {
                    w.clear_staged();
                    let n = rng.below(13) as u32;
                    let edges: Vec<u32> = (0..n).map(|i| seq as u32 * 100 + i).collect();
                    for &e in &edges {
                        w.stage(Cand::new(e, 1.0, 0.0));
                    }
                    assert_eq!(w.staged().len(), edges.len());
                    if rng.chance(0.8) {
                        w.commit(Step::new(seq, seq as f64, LatLon::new(0.0, 0.0), 5.0));
                        model.push_back((seq, edges));
                    } else if rng.chance(0.5) {
                        // A chain restart: the steps go, the staged stay.
                        w.clear_steps();
                        model.clear();
                        assert_eq!(w.staged().len(), edges.len());
                        w.commit(Step::new(seq, seq as f64, LatLon::new(0.0, 0.0), 5.0));
                        model.push_back((seq, edges));
                    }
                    seq += 1;
                }
                5..=7 => {
                    w.clear_staged();
                    assert_eq!(w.pop_front().map(|s| s.seq), model.pop_front().map(|m| m.0));
                }
                8 => {
                    w.clear_staged();
                    assert_eq!(w.pop_back().map(|s| s.seq), model.pop_back().map(|m| m.0));
                }
                _ => w.shrink(),
            }
            assert_eq!(w.len(), model.len());
            for (k, (s, edges)) in model.iter().enumerate() {
                assert_eq!(w[k].seq, *s);
                let got: Vec<u32> = w.cands(k).iter().map(|c| c.edge).collect();
                assert_eq!(&got, edges, "round {round}, step {k}");
            }
        }
    }

    #[test]
    fn trimming_keeps_the_recent_high_water_mark() {
        let mut w = Window::default();
        for i in 0..30 {
            for _ in 0..12 {
                w.stage(Cand::new(i, 0.0, 0.0));
            }
            w.commit(Step::new(
                u64::from(i),
                f64::from(i),
                LatLon::new(0.0, 0.0),
                5.0,
            ));
        }
        while w.len() > 1 {
            w.pop_front();
        }
        // The long window was seen since the last trim: its room stays.
        w.shrink();
        assert!(w.heap_bytes() >= 360 * std::mem::size_of::<Cand>());
        // A quiet period later, the room goes back.
        w.shrink();
        assert!(w.heap_bytes() <= 8 * 64 + 16 * std::mem::size_of::<Cand>());
    }
}
