//! Arrival windows: how lastmile's routed times compare with the arrivals
//! that followed them, learnt from the fleet, and the P10 / P50 / P90
//! arrival each remaining stop is given from it.
//!
//! A routed time is free flow plus learnt traffic along the planned path;
//! real drives differ from it by junctions, parking, the driver, and luck.
//! The engine therefore keeps, per fleet, the distribution of
//! `ln(actual time to go / routed time to go)` over past predictions, by
//! horizon (the routed time to go when the prediction was made: a stop an
//! hour away is less certain than one two minutes away) and apart for
//! vehicles moving and standing (a vehicle that has not moved for a minute,
//! away from a stop it serves, will take longer than routed), and reads the
//! 10th, 50th and 90th percentiles of it for every ETA: the ETA a stop is
//! given is the P50, and its window the P10 to P90.
//!
//! - **Samples.** Each vehicle notes its next stop's routed time to go
//!   each time half of it has passed (so every horizon is learnt from
//!   approaches of every length, evenly in time), and a later stop's now and
//!   then ([`Sampler`], a few notes per vehicle at most). When the stop is
//!   reached (arrival, or completion where no arrival was seen), each note
//!   becomes an [`Outcome`]; a stop that goes away unreached drops its
//!   notes. Whether a note is taken never depends on how the prediction
//!   turns out, so the notes are a fair sample.
//! - **Learning.** Outcomes go to the coordinator at ticks, are sorted (the
//!   same order whatever the shard count) and enter [`ErrorModel`]: one
//!   histogram of log-ratios per class (horizon and state) and fleet, whose
//!   old weight fades in event time (the last half hour of a busy fleet's
//!   arrivals, the last hundred of a quiet one's). A class is read shrunk
//!   towards its state's outcomes, those towards the fleet's, and those
//!   towards a prior (a log-normal around the routed time): the first
//!   outcomes of a fleet, and a class that sees few, borrow from what is
//!   learnt nearest to them.
//! - **Reading.** The model is published to the shards as [`Windows`],
//!   cumulative tables that give quantiles and the probability of
//!   arriving after a time, interpolated between horizon classes in log
//!   time. Between publications the shards' copies do not change, so ETAs
//!   are a deterministic function of the inputs and the tick times.
//!
//! The fleet of a vehicle is the slot its allocated id carries (see
//! [`fleet_slot`]); vehicles numbered by their fleet's ranges share slot 0.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{StopId, VehicleId};

/// Horizon classes: routed seconds to go each class is centred on.
/// Predictions between two centres are read (and learnt) as a blend of
/// both, in log time.
const CENTRES_S: [f64; 8] = [60.0, 180.0, 420.0, 720.0, 1080.0, 1620.0, 2400.0, 3600.0];
/// Classes are kept apart for a vehicle moving (or serving a stop) and one
/// standing somewhere else: a standing vehicle's routed time says least
/// (a taxi waiting with its meter running, a van stuck or on a break).
const STATES: usize = 2;

/// A vehicle that has not moved for this long, and is not serving a stop,
/// is standing.
pub const STANDING_S: f64 = 60.0;

/// The first class of a state's horizons.
fn state_base(standing: bool) -> usize {
    usize::from(standing) * CENTRES_S.len()
}

/// Log-ratio bins: [`X_MIN`, `X_MAX`) in steps of [`X_STEP`]; values
/// outside fall in the end bins.
const X_MIN: f64 = -1.6;
const X_STEP: f64 = 0.05;
const BINS: usize = 80;
/// Times to go shorter than this are taken as this: a ratio of seconds
/// says nothing.
const MIN_TO_GO_S: f64 = 30.0;
/// Fleets with a model of their own, at most; others share slot 0's.
const MAX_FLEETS: usize = 4096;

/// The levels every window reports.
pub const P10: f64 = 0.1;
pub const P90: f64 = 0.9;

/// The fleet a vehicle belongs to, as far as learning goes: the 24-bit slot
/// an allocated id carries (ids at or above 2^62 carry it in bits 38–61,
/// see the node's `ids` module), or 0.
pub fn fleet_slot(vehicle: VehicleId) -> u32 {
    const ALLOCATED: u64 = 1 << 62;
    if vehicle >= ALLOCATED {
        ((vehicle >> 38) & 0xFF_FFFF) as u32
    } else {
        0
    }
}

/// How windows are learnt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowParams {
    /// Outcomes remembered per horizon class at most (effective count),
    /// the time constant of their fading in event time, and the count
    /// below which time does not fade them (see `Histogram::add`).
    pub memory: f64,
    pub memory_s: f64,
    pub min_outcomes: f64,
    /// Weight of the prior in outcomes, and its spread (standard deviation
    /// of the log-ratio).
    pub prior_weight: f64,
    pub prior_spread: f64,
}

impl Default for WindowParams {
    fn default() -> Self {
        Self {
            memory: 1000.0,
            memory_s: 1800.0,
            min_outcomes: 100.0,
            prior_weight: 20.0,
            prior_spread: 0.25,
        }
    }
}

/// A prediction that came true: a stop's routed time to go when it was
/// noted, and the time it really took.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub fleet: u32,
    pub vehicle: VehicleId,
    /// When the stop was reached (event time): outcomes are learnt in this
    /// order.
    pub time: f64,
    pub routed_s: f32,
    pub actual_s: f32,
    /// Whether the vehicle was standing when the prediction was made.
    pub standing: bool,
}

impl Outcome {
    /// The order outcomes are learnt in, whichever shard saw them.
    pub fn sort(outcomes: &mut [Outcome]) {
        outcomes.sort_by(|a, b| {
            a.time
                .total_cmp(&b.time)
                .then(a.vehicle.cmp(&b.vehicle))
                .then(a.routed_s.total_cmp(&b.routed_s))
                .then(a.actual_s.total_cmp(&b.actual_s))
                .then(a.standing.cmp(&b.standing))
        });
    }
}

/// Where a time to go falls between horizon classes: the lower class and
/// the share of the upper one.
fn blend(to_go_s: f64) -> (usize, f64) {
    let x = to_go_s.max(CENTRES_S[0]).ln();
    let last = CENTRES_S.len() - 1;
    if x >= CENTRES_S[last].ln() {
        return (last - 1, 1.0);
    }
    let k = CENTRES_S.partition_point(|c| c.ln() <= x).clamp(1, last) - 1;
    let (a, b) = (CENTRES_S[k].ln(), CENTRES_S[k + 1].ln());
    (k, (x - a) / (b - a))
}

fn log_ratio(actual_s: f64, routed_s: f64) -> f64 {
    (actual_s.max(MIN_TO_GO_S) / routed_s.max(MIN_TO_GO_S)).ln()
}

fn bin_of(x: f64) -> usize {
    (((x - X_MIN) / X_STEP).floor().max(0.0) as usize).min(BINS - 1)
}

/// One horizon class's histogram. Weights are stored multiplied by a
/// growing `scale`, so fading every old weight is one multiplication of
/// the scale (renormalised before it grows too large).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
struct Histogram {
    weights: Vec<f64>,
    scale: f64,
    /// The weight held (in outcomes, unscaled), and the event time of the
    /// last outcome.
    total: f64,
    last: f64,
}

impl Histogram {
    fn empty() -> Self {
        Self {
            weights: vec![0.0; BINS],
            scale: 1.0,
            total: 0.0,
            last: f64::NEG_INFINITY,
        }
    }

    /// The weight in each bin, in outcomes.
    fn unscaled(&self) -> Bins {
        let mut out = [0.0; BINS];
        for (o, w) in out.iter_mut().zip(&self.weights) {
            *o = w / self.scale;
        }
        out
    }

    /// Adds an outcome of `weight` at event time `time`. Old weight fades
    /// with event time (time constant `memory_s`: a fleet's errors change
    /// as learnt traffic takes over what they were made of), but never
    /// below `min_outcomes` (a fleet that drives little keeps what it has
    /// learnt across days), and by at least `1/memory` per outcome (a busy
    /// fleet's histogram holds its last `memory` outcomes or so).
    fn add(&mut self, x: f64, weight: f64, time: f64, params: &WindowParams) {
        let dt = if self.last.is_finite() {
            (time - self.last).max(0.0)
        } else {
            0.0
        };
        self.last = self.last.max(time);
        let by_time = (-dt / params.memory_s).exp();
        let floor = (params.min_outcomes / self.total.max(1e-9)).min(1.0);
        let by_count = 1.0 - weight / params.memory.max(1.0);
        let keep = by_time.max(floor).min(by_count);
        self.scale /= keep;
        self.total = self.total * keep + weight;
        self.weights[bin_of(x)] += weight * self.scale;
        if self.scale > 1e12 {
            for w in &mut self.weights {
                *w /= self.scale;
            }
            self.scale = 1.0;
        }
    }
}

/// Weights per log-ratio bin.
type Bins = [f64; BINS];

/// The prior's shape: a log-normal around the routed time, of weight one.
fn prior_shape(params: &WindowParams) -> Bins {
    let sigma = params.prior_spread.max(X_STEP);
    let mut out = [0.0; BINS];
    for (i, o) in out.iter_mut().enumerate() {
        let x = X_MIN + (i as f64 + 0.5) * X_STEP;
        *o = (-0.5 * (x / sigma).powi(2)).exp();
    }
    let total: f64 = out.iter().sum();
    out.map(|w| w / total)
}

/// `own` weights with `weight` outcomes' worth of `towards`'s shape added.
fn shrink(own: &Bins, weight: f64, towards: &Bins) -> Bins {
    let total: f64 = towards.iter().sum();
    let mut out = *own;
    if total > 0.0 {
        for (o, t) in out.iter_mut().zip(towards) {
            *o += weight * t / total;
        }
    }
    out
}

fn sum<'a>(bins: impl Iterator<Item = &'a Bins>) -> Bins {
    let mut out = [0.0; BINS];
    for b in bins {
        for (o, w) in out.iter_mut().zip(b) {
            *o += w;
        }
    }
    out
}

/// Cumulative shares at the bins' upper edges.
fn cumulative(weights: &Bins) -> [f32; BINS] {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let mut out = [0f32; BINS];
    for (o, w) in out.iter_mut().zip(weights) {
        acc += w;
        *o = (acc / total) as f32;
    }
    out
}

/// One fleet's histograms, one per horizon class.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
struct FleetHistograms {
    classes: Vec<Histogram>,
    outcomes: u64,
}

impl FleetHistograms {
    fn new() -> Self {
        Self {
            classes: vec![Histogram::empty(); STATES * CENTRES_S.len()],
            outcomes: 0,
        }
    }

    /// Each class's distribution as read: its own outcomes, shrunk towards
    /// its state's (all horizons), which is shrunk towards the fleet's (all
    /// classes), which is shrunk towards the log-normal prior, each by
    /// `prior_weight` outcomes. A class that has seen little (a quiet
    /// fleet's long horizons, its vehicles that stand) reads what the fleet
    /// has learnt nearest to it rather than a guess.
    fn read(&self, params: &WindowParams) -> Vec<Bins> {
        let w = params.prior_weight;
        let own: Vec<Bins> = self.classes.iter().map(Histogram::unscaled).collect();
        let fleet = shrink(&sum(own.iter()), w, &prior_shape(params));
        let n = CENTRES_S.len();
        let states: Vec<Bins> = own
            .chunks(n)
            .map(|state| shrink(&sum(state.iter()), w, &fleet))
            .collect();
        own.iter()
            .enumerate()
            .map(|(c, bins)| shrink(bins, w, &states[c / n]))
            .collect()
    }
}

/// The learnt error distributions of every fleet (the coordinator's).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ErrorModel {
    fleets: BTreeMap<u32, FleetHistograms>,
}

impl ErrorModel {
    /// Learns one outcome.
    pub fn learn(&mut self, o: &Outcome, params: &WindowParams) {
        let fleet = if self.fleets.len() >= MAX_FLEETS && !self.fleets.contains_key(&o.fleet) {
            0
        } else {
            o.fleet
        };
        let h = self
            .fleets
            .entry(fleet)
            .or_insert_with(FleetHistograms::new);
        h.outcomes += 1;
        let (routed, actual) = (f64::from(o.routed_s), f64::from(o.actual_s));
        if !(routed.is_finite() && actual.is_finite() && actual >= 0.0) {
            return;
        }
        let x = log_ratio(actual, routed);
        let (k, share) = blend(routed);
        let k = state_base(o.standing) + k;
        if share < 1.0 {
            h.classes[k].add(x, 1.0 - share, o.time, params);
        }
        if share > 0.0 {
            h.classes[k + 1].add(x, share, o.time, params);
        }
    }

    /// Outcomes learnt, all fleets.
    pub fn outcomes(&self) -> u64 {
        self.fleets.values().map(|f| f.outcomes).sum()
    }

    /// For reports: per horizon class of `fleet` for vehicles moving or
    /// `standing` (its centre, routed seconds to go), the P10, P50 and P90
    /// ratio of actual to routed time as read, and the outcomes of its own
    /// it weighs (faded).
    pub fn ratios(
        &self,
        fleet: u32,
        standing: bool,
        params: &WindowParams,
    ) -> Vec<(f64, [f64; 3], f64)> {
        let Some(h) = self.fleets.get(&fleet) else {
            return Vec::new();
        };
        let read = h.read(params);
        let base = state_base(standing);
        (0..CENTRES_S.len())
            .map(|k| {
                let cum = cumulative(&read[base + k]);
                let q = [P10, 0.5, P90].map(|l| quantile(&cum, l).exp());
                (CENTRES_S[k], q, h.classes[base + k].total)
            })
            .collect()
    }

    /// What the shards read.
    pub fn publish(&self, params: &WindowParams) -> Windows {
        let prior = Arc::new(Table::of(&FleetHistograms::new(), params));
        let fleets = self
            .fleets
            .iter()
            .map(|(&k, h)| (k, Arc::new(Table::of(h, params))))
            .collect();
        Windows { prior, fleets }
    }
}

/// One fleet's published distributions: per horizon class, the cumulative
/// shares and the three quantiles read from them.
#[derive(Debug, PartialEq)]
pub struct Table {
    cumulative: Vec<[f32; BINS]>,
    /// Per class: log-ratios at P10, P50, P90.
    quantiles: Vec<[f64; 3]>,
}

impl Table {
    fn of(h: &FleetHistograms, params: &WindowParams) -> Self {
        let cumulative: Vec<[f32; BINS]> = h.read(params).iter().map(cumulative).collect();
        let quantiles = cumulative
            .iter()
            .map(|c| [quantile(c, P10), quantile(c, 0.5), quantile(c, P90)])
            .collect();
        Self {
            cumulative,
            quantiles,
        }
    }

    /// The P10, P50 and P90 times to go for a routed time to go, for a
    /// vehicle moving or `standing`.
    pub fn window(&self, routed_s: f64, standing: bool) -> [f64; 3] {
        if !routed_s.is_finite() {
            return [f64::NAN; 3];
        }
        let routed = routed_s.max(0.0);
        let (k, share) = blend(routed);
        let k = state_base(standing) + k;
        let (a, b) = (self.quantiles[k], self.quantiles[k + 1]);
        let base = routed.max(MIN_TO_GO_S);
        let q = |i: usize| {
            let x = a[i] * (1.0 - share) + b[i] * share;
            // Below the shortest time a ratio is read for, the window
            // shrinks with the time itself, to nothing at arrival.
            (base * x.exp() - (base - routed)).max(0.0)
        };
        [q(0), q(1), q(2)]
    }

    /// The probability that a stop routed `routed_s` away is reached later
    /// than `deadline_s` from now by a vehicle moving or `standing`.
    pub fn p_later(&self, routed_s: f64, deadline_s: f64, standing: bool) -> f64 {
        if !routed_s.is_finite() || !deadline_s.is_finite() {
            return f64::NAN;
        }
        if deadline_s <= 0.0 {
            return 1.0;
        }
        let (k, share) = blend(routed_s.max(0.0));
        let k = state_base(standing) + k;
        let x = log_ratio(deadline_s, routed_s);
        let below = |c: &[f32; BINS]| cdf(c, x);
        let p = below(&self.cumulative[k]) * (1.0 - share) + below(&self.cumulative[k + 1]) * share;
        (1.0 - p).clamp(0.0, 1.0)
    }
}

/// The log-ratio below which a share `level` of the weight lies, linear
/// within a bin.
fn quantile(c: &[f32; BINS], level: f64) -> f64 {
    let i = c.partition_point(|&v| f64::from(v) < level).min(BINS - 1);
    let lo = if i == 0 { 0.0 } else { f64::from(c[i - 1]) };
    let hi = f64::from(c[i]);
    let within = if hi > lo {
        (level - lo) / (hi - lo)
    } else {
        0.5
    };
    X_MIN + (i as f64 + within.clamp(0.0, 1.0)) * X_STEP
}

/// The share of the weight below log-ratio `x`.
fn cdf(c: &[f32; BINS], x: f64) -> f64 {
    let pos = (x - X_MIN) / X_STEP;
    if pos <= 0.0 {
        return 0.0;
    }
    if pos >= BINS as f64 {
        return 1.0;
    }
    let i = pos.floor() as usize;
    let lo = if i == 0 { 0.0 } else { f64::from(c[i - 1]) };
    lo + (f64::from(c[i]) - lo) * (pos - i as f64)
}

/// The published distributions of every fleet that has learnt any, and the
/// prior for those that have not.
#[derive(Debug)]
pub struct Windows {
    prior: Arc<Table>,
    fleets: BTreeMap<u32, Arc<Table>>,
}

impl Windows {
    /// The prior alone (an engine that has learnt nothing).
    pub fn prior(params: &WindowParams) -> Self {
        ErrorModel::default().publish(params)
    }

    /// The table a vehicle's ETAs are read from: its fleet's, or the prior
    /// for a fleet that has learnt nothing yet (never another fleet's),
    /// or slot 0's for the fleets beyond [`MAX_FLEETS`], which learn there.
    pub fn table(&self, vehicle: VehicleId) -> &Table {
        let slot = fleet_slot(vehicle);
        match self.fleets.get(&slot) {
            Some(t) => t,
            None if self.fleets.len() >= MAX_FLEETS => self.fleets.get(&0).unwrap_or(&self.prior),
            None => &self.prior,
        }
    }
}

/// A noted prediction: the stop, when (whole seconds of event time: a
/// second is nothing beside the minutes a ratio is read over, and 16 bytes
/// a note where an `f64` would take 24), and its routed time to go then,
/// negative when the vehicle was standing (a time to go is never below
/// zero, so its sign is free to carry that, in the same 16 bytes).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
struct Note {
    stop: StopId,
    at: u32,
    signed_routed_s: f32,
}

impl Note {
    fn at(&self) -> f64 {
        f64::from(self.at)
    }

    fn routed_s(&self) -> f32 {
        self.signed_routed_s.abs()
    }

    fn standing(&self) -> bool {
        self.signed_routed_s.is_sign_negative()
    }
}

/// The next stop is noted again after this share of its routed time to go
/// (and at least `window_note_s`): about as many notes at every horizon,
/// from approaches of every length, each horizon's taken evenly in time,
/// stalls included, as a customer looking at the ETA would see it. (Notes
/// at levels the time to go falls below would miss the stalls; notes on a
/// plain clock would crowd a long approach's first minutes.)
const NEXT_SPACING: f64 = 0.5;

/// A vehicle's noted predictions, waiting for their stops to be reached.
///
/// Whether a note is taken depends only on what is known when it is taken
/// (the routed time, the clock, the notes waiting), never on how the
/// prediction turns out, so the notes are a fair sample of the predictions
/// at each horizon.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
pub(crate) struct Sampler {
    notes: Vec<Note>,
    /// The next stop, and when it is noted again.
    next_stop: StopId,
    next_at: f64,
    /// No later stop is noted before this event time, nor are notes
    /// pruned before `prune_at` unless they fill the room.
    later_at: f64,
    prune_at: f64,
    /// Counts later stops' notes: which of them the next one is of.
    turn: u32,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            notes: Vec::new(),
            next_stop: StopId::MAX,
            next_at: f64::NEG_INFINITY,
            later_at: f64::NEG_INFINITY,
            prune_at: f64::NEG_INFINITY,
            turn: 0,
        }
    }
}

/// A note whose stop has not been reached this long after is dropped.
const NOTE_MAX_AGE_S: f64 = 6.0 * 3600.0;

impl Sampler {
    /// Drops the notes of stops no longer `remaining`, and those too old
    /// to wait for: every `every_s`, or at once when `max_notes` wait.
    pub fn prune(
        &mut self,
        now: f64,
        every_s: f64,
        max_notes: usize,
        remaining: impl Fn(StopId) -> bool,
    ) {
        if now < self.prune_at && self.notes.len() < max_notes {
            return;
        }
        self.prune_at = now + every_s;
        self.notes
            .retain(|n| remaining(n.stop) && now - n.at() <= NOTE_MAX_AGE_S);
    }

    /// Whether the next stop, `routed_s` away, is to be noted at `now`:
    /// when it has just become the next stop, or a share of its time to go
    /// (at least `every_s`) has passed since its last note, and fewer than
    /// `max_notes` wait.
    pub fn next_due(
        &mut self,
        stop: StopId,
        now: f64,
        routed_s: f64,
        every_s: f64,
        max_notes: usize,
    ) -> bool {
        if stop != self.next_stop {
            (self.next_stop, self.next_at) = (stop, f64::NEG_INFINITY);
        }
        if now < self.next_at || !routed_s.is_finite() {
            return false;
        }
        self.next_at = now + (routed_s * NEXT_SPACING).max(every_s);
        self.notes.len() < max_notes
    }

    /// Whether a later stop (one of `later`, after the next) is to be noted
    /// at `now`, and which (0 = the first after the next): one every
    /// `every_s` in turn, while fewer than half of `max_notes` of later
    /// stops wait (the rest are the next stop's).
    pub fn later_due(&mut self, now: f64, later: usize, max_notes: usize) -> Option<usize> {
        if later == 0 || now < self.later_at {
            return None;
        }
        let waiting = self
            .notes
            .iter()
            .filter(|n| n.stop != self.next_stop)
            .count();
        (waiting < (max_notes / 2).max(1)).then(|| self.turn as usize % later)
    }

    /// Notes a prediction of a later stop; the next is due `every_s` later.
    pub fn note_later(
        &mut self,
        stop: StopId,
        now: f64,
        routed_s: f64,
        standing: bool,
        every_s: f64,
    ) {
        self.note(stop, now, routed_s, standing);
        self.turn = self.turn.wrapping_add(1);
        self.later_at = now + every_s;
    }

    /// Notes a prediction made for a vehicle moving or `standing`.
    pub fn note(&mut self, stop: StopId, now: f64, routed_s: f64, standing: bool) {
        let routed = routed_s.max(0.0) as f32;
        self.notes.push(Note {
            stop,
            at: now.round().clamp(0.0, f64::from(u32::MAX)) as u32,
            signed_routed_s: if standing { -routed } else { routed },
        });
    }

    /// A new metric moved `stop`'s routed time to go by `by` seconds: its
    /// notes are revised with it, so that what they are judged against is
    /// what the newest metric would have predicted for what was still to
    /// drive. Otherwise, while the fleet's traffic is being learnt, notes
    /// taken on older (more wrong) metrics would teach the windows an error
    /// the metric has already corrected, and the correction would count
    /// twice.
    pub fn revise(&mut self, stop: StopId, by: f64) {
        for n in self.notes.iter_mut().filter(|n| n.stop == stop) {
            let routed = (f64::from(n.routed_s()) + by).max(0.0) as f32;
            n.signed_routed_s = if n.standing() { -routed } else { routed };
        }
    }

    /// A later stop's due note that could not be taken (it had no ETA):
    /// the next ping tries the stop after it.
    pub fn skip(&mut self) {
        self.turn = self.turn.wrapping_add(1);
    }

    /// `stop` was reached at `time`: its notes become outcomes.
    pub fn reached(&mut self, vehicle: VehicleId, stop: StopId, time: f64, out: &mut Vec<Outcome>) {
        let fleet = fleet_slot(vehicle);
        self.notes.retain(|n| {
            if n.stop != stop {
                return true;
            }
            if time >= n.at() {
                out.push(Outcome {
                    fleet,
                    vehicle,
                    time,
                    routed_s: n.routed_s(),
                    actual_s: (time - n.at()) as f32,
                    standing: n.standing(),
                });
            }
            false
        });
    }

    pub fn heap_bytes(&self) -> usize {
        self.notes.capacity() * std::mem::size_of::<Note>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Learns (routed, actual, standing) outcomes of fleet slot 0.
    fn learn_all(outcomes: impl Iterator<Item = (f64, f64, bool)>) -> Windows {
        let params = WindowParams::default();
        let mut m = ErrorModel::default();
        for (i, (routed, actual, standing)) in outcomes.enumerate() {
            m.learn(
                &Outcome {
                    fleet: 0,
                    vehicle: 1,
                    time: i as f64,
                    routed_s: routed as f32,
                    actual_s: actual as f32,
                    standing,
                },
                &params,
            );
        }
        m.publish(&params)
    }

    fn moving(pairs: impl Iterator<Item = (f64, f64)>) -> Windows {
        learn_all(pairs.map(|(r, a)| (r, a, false)))
    }

    #[test]
    fn the_prior_is_centred_on_the_routed_time() {
        let w = Windows::prior(&WindowParams::default());
        for standing in [false, true] {
            let [lo, mid, hi] = w.table(7).window(600.0, standing);
            assert!((mid - 600.0).abs() < 10.0, "{mid}");
            assert!(lo < 500.0 && hi > 720.0, "{lo} {hi}");
        }
        // At the stop, only the time to stop and be seen there is left.
        let [lo, mid, hi] = w.table(7).window(0.0, false);
        assert!(lo == 0.0 && mid < 2.0 && hi < 15.0, "{lo} {mid} {hi}");
    }

    #[test]
    fn a_fleet_slower_than_routed_moves_its_median_and_window() {
        // Every trip takes 1.5 to 2.5 times its routed time, evenly spread.
        let w = moving((0..5000).map(|i| {
            let routed = 600.0;
            (routed, routed * (1.5 + (i % 101) as f64 / 100.0))
        }));
        let [lo, mid, hi] = w.table(3).window(600.0, false);
        assert!((mid / 600.0 - 2.0).abs() < 0.05, "{mid}");
        assert!((lo / 600.0 - 1.6).abs() < 0.06, "{lo}");
        assert!((hi / 600.0 - 2.4).abs() < 0.06, "{hi}");
        let p = w.table(3).p_later(600.0, 1200.0, false);
        assert!((p - 0.5).abs() < 0.05, "{p}");
        assert!(w.table(3).p_later(600.0, 800.0, false) > 0.98);
    }

    #[test]
    fn horizons_are_learnt_apart() {
        // Short predictions are exact, long ones are half again as long.
        let w = moving((0..4000).map(|i| {
            if i % 2 == 0 {
                (60.0, 60.0)
            } else {
                (3600.0, 5400.0)
            }
        }));
        let t = w.table(0);
        assert!((t.window(60.0, false)[1] - 60.0).abs() < 3.0);
        assert!((t.window(3600.0, false)[1] / 5400.0 - 1.0).abs() < 0.03);
    }

    #[test]
    fn a_class_that_saw_nothing_reads_what_its_fleet_learnt() {
        // Every stop took half again its routed time, all of them ten
        // minutes away and the vehicles moving: an hour away, and standing,
        // read that too rather than the prior's "as routed".
        let w = moving((0..500).map(|_| (600.0, 900.0)));
        let t = w.table(0);
        for standing in [false, true] {
            let ratio = t.window(3600.0, standing)[1] / 3600.0;
            assert!((ratio - 1.5).abs() < 0.05, "{standing}: {ratio}");
        }
    }

    #[test]
    fn standing_vehicles_are_learnt_apart() {
        // Moving vehicles arrive as routed; standing ones take twice that.
        let w = learn_all((0..4000).map(|i| {
            let standing = i % 4 == 0;
            (600.0, if standing { 1200.0 } else { 600.0 }, standing)
        }));
        let t = w.table(0);
        // Within a bin (5%) of the truth.
        assert!((t.window(600.0, false)[1] / 600.0 - 1.0).abs() < 0.05);
        assert!((t.window(600.0, true)[1] / 1200.0 - 1.0).abs() < 0.05);
        assert!(t.p_later(600.0, 900.0, true) > 0.95);
        assert!(t.p_later(600.0, 900.0, false) < 0.05);
    }

    #[test]
    fn fleets_learn_apart() {
        let params = WindowParams::default();
        let mut m = ErrorModel::default();
        let slow_fleet: VehicleId = (1 << 62) | (5 << 38) | 1;
        let outcome = |vehicle: VehicleId, time: f64, actual_s: f32| Outcome {
            fleet: fleet_slot(vehicle),
            vehicle,
            time,
            routed_s: 600.0,
            actual_s,
            standing: false,
        };
        for i in 0..2000 {
            m.learn(&outcome(slow_fleet, f64::from(i), 1200.0), &params);
        }
        // Numbered vehicles (slot 0) learn too; a fleet that has learnt
        // nothing reads the prior, not theirs nor the slow fleet's.
        for i in 0..500 {
            m.learn(&outcome(7, 5000.0 + f64::from(i), 1800.0), &params);
        }
        let w = m.publish(&params);
        assert!(w.table(7).window(600.0, false)[1] > 1700.0);
        assert!(w.table(slow_fleet).window(600.0, false)[1] > 1100.0);
        let other: VehicleId = (1 << 62) | (6 << 38) | 1;
        assert!((w.table(other).window(600.0, false)[1] - 600.0).abs() < 10.0);
    }

    #[test]
    fn the_next_stop_is_noted_as_half_its_time_to_go_passes() {
        let mut s = Sampler::default();
        // 20 minutes away: noted now, then after 10, 5, 2.5 minutes, then
        // every minute at least.
        let mut noted = Vec::new();
        for t in (0..1200).step_by(15) {
            let (now, routed) = (f64::from(t), f64::from(1200 - t));
            if s.next_due(10, now, routed, 60.0, 32) {
                s.note(10, now, routed, false);
                noted.push(t);
            }
        }
        assert_eq!(noted[..5], [0, 600, 900, 1050, 1125], "{noted:?}");
        assert!(noted.len() < 10, "{noted:?}");
        // A new next stop is noted at once.
        assert!(s.next_due(11, 1200.0, 300.0, 60.0, 32));
        // No room, no note.
        let mut full = Sampler::default();
        for k in 0..4 {
            full.note(20 + k, 0.0, 100.0, false);
        }
        assert!(!full.next_due(30, 0.0, 100.0, 60.0, 4));
    }

    #[test]
    fn later_stops_are_noted_in_turn_within_half_the_room() {
        let mut s = Sampler::default();
        assert!(s.next_due(1, 0.0, 300.0, 60.0, 8));
        s.note(1, 0.0, 300.0, false);
        let mut picked = Vec::new();
        for t in 0..10 {
            let now = f64::from(t) * 60.0;
            if let Some(j) = s.later_due(now, 3, 8) {
                picked.push(j);
                s.note_later(100 + j as u64, now, 900.0, false, 60.0);
            }
            assert!(s.later_due(now + 1.0, 3, 8).is_none(), "one per minute");
        }
        // Stops after the next in turn, until 4 of them wait.
        assert_eq!(picked, [0, 1, 2, 0]);
    }

    #[test]
    fn notes_become_outcomes_only_when_their_stop_is_reached() {
        let mut s = Sampler::default();
        s.note(10, 0.0, 300.0, false);
        s.note(11, 60.0, 500.0, true);
        s.note(12, 60.0, 200.0, true);
        s.prune(120.0, 60.0, 8, |stop| stop != 11);
        let mut out = Vec::new();
        s.reached(9, 11, 400.0, &mut out);
        assert!(out.is_empty(), "stop 11 went away: its note with it");
        s.reached(9, 10, 420.0, &mut out);
        s.reached(9, 12, 460.0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].routed_s, out[0].actual_s, out[0].standing),
            (300.0, 420.0, false)
        );
        assert_eq!(
            (out[1].routed_s, out[1].actual_s, out[1].standing),
            (200.0, 400.0, true)
        );
        // A new metric revises a standing note's time, and it stays standing.
        s.note(13, 500.0, 100.0, true);
        s.revise(13, 50.0);
        s.reached(9, 13, 700.0, &mut out);
        assert_eq!((out[2].routed_s, out[2].standing), (150.0, true));
        assert!(s.notes.is_empty());
    }
}
