//! The Viterbi window and its finalisation. A step is finalised as soon as
//! every surviving hypothesis of the newest step descends from the same one of
//! its candidates (the past can no longer change), or, when the window reaches
//! `max_lag` undecided steps, by committing the oldest step to the current
//! best path and dropping the hypotheses that disagree with it.
//!
//! Finalising a step emits its point and the path pieces that connect it to
//! the previous finalised point, recomputed with the same move rules the
//! scoring used, so the path is exactly the transition Viterbi chose.

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::haversine_m;

use super::search::Goal;
use super::smooth::Fix;
use super::steps::{Cand, NO_BACK, alive_mask, best};
use super::transition::{
    ReportedSpeeds, beta_for, direct_moves, log_direct, log_transition, standstill_tolerance,
    straight_travel,
};
use super::{Anchor, FinalPoint, MatchOutput, MatchStatus, Matcher, Traversal, VehicleTrack};

/// How far back along the path a fix's measurement is looked for, metres,
/// when the window placed the vehicle ahead of it: a standing vehicle's
/// placement runs ahead of its fixes by the noise, a few sigma at most.
const MEASURE_BACK_M: f64 = 60.0;

impl Matcher<'_> {
    /// Finalises whatever the newest step has settled, then enforces `max_lag`.
    pub(super) fn finalise_converged(&mut self, track: &mut VehicleTrack, out: &mut MatchOutput) {
        let w = &track.window;
        let mut mask = w.len().checked_sub(1).map_or(0, |k| alive_mask(w.cands(k)));
        let mut k = w.len();
        while k > 0 {
            k -= 1;
            if w[k].done {
                break;
            }
            if mask.count_ones() == 1 {
                let c = mask.trailing_zeros() as usize;
                self.finalise_upto(track, k, c, out);
                break;
            }
            if k == 0 {
                break;
            }
            let mut up = 0u64;
            for (i, c) in w.cands(k).iter().enumerate() {
                if mask & 1 << i != 0 && c.back != NO_BACK {
                    up |= 1 << c.back;
                }
            }
            mask = up;
        }
        loop {
            let undecided =
                track.window.len() - usize::from(track.window.front().is_some_and(|s| s.done));
            if undecided <= self.config.max_lag {
                break;
            }
            self.stats.forced += 1;
            let first = usize::from(track.window[0].done);
            let Some(c) = self.trace_best(track, first) else {
                break;
            };
            self.finalise_upto(track, first, c, out);
        }
    }

    /// Finalises every undecided step along the best path and ends the chain.
    pub(super) fn finish_chain(&mut self, track: &mut VehicleTrack, out: &mut MatchOutput) {
        if let Some(last) = track.window.len().checked_sub(1)
            && !track.window[last].done
            && let Some(c) = best(track.window.cands(last))
        {
            self.finalise_upto(track, last, c, out);
        }
        // The last step's held pings stay where it is.
        if let Some(last) = track.window.len().checked_sub(1)
            && track.window[last].done
        {
            let end = track.smoother.end();
            let none = out.path.len();
            self.emit_held(track, last, end, none, out);
        }
        // What is staged (a new chain's first step) stays.
        track.window.clear_steps();
        // Nothing can be held for a step that is gone.
        track.held.clear();
        track.smoother.flush(self.graph, &mut out.finalized);
        track.last_final = None;
        track.last_choice = None;
        track.still = None;
        track.last_immediate = None;
    }

    /// The candidate of step `k` on the best path of the newest step.
    fn trace_best(&self, track: &VehicleTrack, k: usize) -> Option<usize> {
        let w = &track.window;
        let mut c = best(w.cands(w.len().checked_sub(1)?))?;
        for s in (k + 1..w.len()).rev() {
            c = usize::from(w.cands(s)[c].back);
        }
        Some(c)
    }

    /// Commits step `k` to candidate `c` and every undecided step before it to
    /// its ancestors; emits their points and paths; drops hypotheses that
    /// disagree; keeps step `k` as the new anchor.
    fn finalise_upto(
        &mut self,
        track: &mut VehicleTrack,
        k: usize,
        c: usize,
        out: &mut MatchOutput,
    ) {
        let first = usize::from(track.window[0].done);
        self.chosen.clear();
        self.chosen.resize(k + 1, NO_BACK);
        let mut at = c;
        for s in (first..=k).rev() {
            self.chosen[s] = at as u8;
            at = usize::from(track.window.cands(s)[at].back);
        }
        for s in first..=k {
            let step = &track.window[s];
            let (seq, time, pos, reset) = (step.seq, step.time, step.pos(), step.reset);
            let disconnected = step.disconnected;
            let fix = Fix {
                ping: pos,
                sigma: Some(step.sigma()),
                speed: step.speed(),
            };
            let cand = track.window.cands(s)[usize::from(self.chosen[s])];
            let offset = cand.pos();
            if let Some(a) = track.last_final {
                let prev = &track.window[s - 1];
                let (gc, dt) = (haversine_m(prev.pos(), pos), time - prev.time);
                let straight = straight_travel(gc, prev.sigma(), step.sigma());
                let sigma = prev.sigma().max(step.sigma());
                let before = out.path.len();
                let settled = step.settled;
                let speeds = ReportedSpeeds::new(prev.speed(), step.speed(), dt);
                let moved = Moved {
                    time,
                    gc,
                    straight,
                    dt,
                    sigma,
                    speeds,
                };
                self.connect(a, &cand, settled, &moved, out);
                let start = track.smoother.end();
                for t in &out.path[before..] {
                    track.smoother.add_piece(t);
                }
                self.emit_held(track, s - 1, start, before, out);
            }
            let projection = self.graph.point_on_edge(cand.edge, cand.offset());
            let point = FinalPoint {
                seq,
                time,
                status: if disconnected {
                    MatchStatus::Break
                } else if reset {
                    MatchStatus::Reset
                } else {
                    MatchStatus::Matched
                },
                edge: cand.edge,
                offset_m: offset,
                point: if cand.at_projection() {
                    projection
                } else {
                    self.graph.point_on_edge(cand.edge, offset)
                },
                distance_m: haversine_m(pos, projection),
            };
            // What the fix measures: where it projects, which a standing
            // vehicle's placement may be ahead of, or behind: a vehicle
            // the chain let stand (consecutive fixes that happened to fall
            // close together) while its fix projects further along the
            // edge. The path known so far ends at the placement, so that
            // projection lies beyond it, on the same edge; clamping it to
            // the placement made every such point a measurement of
            // standing, and the smoothed positions lagged by metres.
            let end = track.smoother.end();
            let measured = if cand.at_projection() {
                end
            } else if cand.offset() > cand.pos() {
                end + (cand.offset() - cand.pos())
            } else {
                track
                    .smoother
                    .project(self.graph, pos, end - MEASURE_BACK_M)
                    .unwrap_or(end)
            };
            track
                .smoother
                .add_point(self.graph, point, fix, measured, &mut out.finalized);
            track.last_final = Some(Anchor {
                edge: cand.edge,
                offset_m: offset,
                time,
            });
        }
        // Keep only the chosen candidate at k, and whatever descends from it.
        let w = &mut track.window;
        for (i, x) in w.cands_mut(k).iter_mut().enumerate() {
            if i != c {
                x.score = f64::NEG_INFINITY;
            }
        }
        let mut dead_before = !(1u64 << c);
        for s in k + 1..w.len() {
            let mut dead = 0u64;
            for (i, x) in w.cands_mut(s).iter_mut().enumerate() {
                if x.back == NO_BACK || dead_before & 1 << x.back != 0 {
                    x.score = f64::NEG_INFINITY;
                }
                if x.score == f64::NEG_INFINITY {
                    dead |= 1 << i;
                }
            }
            dead_before = dead;
        }
        w[k].done = true;
        for _ in 0..k {
            w.pop_front();
        }
    }

    /// Finalises the held pings of step `h`: each where its fix projects onto
    /// the path pieces `out.path[first_piece..]` (the path from step `h` to the
    /// next, starting at path distance `start`), an outlier where its time
    /// puts it on them; never behind the previous one; with no pieces, where
    /// step `h` is.
    fn emit_held(
        &mut self,
        track: &mut VehicleTrack,
        h: usize,
        start: f64,
        first_piece: usize,
        out: &mut MatchOutput,
    ) {
        let (step, sigma) = (track.window[h].seq, track.window[h].sigma());
        let held_speed = track.window[h].speed().map(|_| 0.0);
        let Some(anchor) = track.last_final.map(|a| (a.edge, a.offset_m)) else {
            return;
        };
        let g = self.graph;
        let pieces = &out.path[first_piece..];
        // An outlier is placed by its time between step `h` and the next,
        // at the share of the path that share of the time gives (the
        // vehicle's speed in between is all the path says).
        let from_time = track.window[h].time;
        let span = if h + 1 < track.window.len() {
            track.window[h + 1].time - from_time
        } else {
            0.0
        };
        let length: f64 = pieces.iter().map(|t| (t.to_m - t.from_m).max(0.0)).sum();
        let mut floor = 0.0;
        let Some(taken) = track.held.take(step) else {
            return;
        };
        // A stand the fixes have shown: the group's last centroid is its
        // best estimate of where it stood, and what that centroid measures
        // may lie behind where step `h` was placed (a standing vehicle is
        // never moved back): that projection is what the smoother is given,
        // the placement stays on the path. A group too short to show it
        // (without reported speeds, fixes bunching for a few seconds) is
        // placed and measured by each ping's own fix: measuring them all at
        // the centroid put a vehicle driving on metres behind, the last
        // pings of the group most.
        let established = held_speed.is_some() || taken.established(sigma);
        let centroid = taken.pos;
        let centroid_measured = track
            .smoother
            .project(g, centroid, start - MEASURE_BACK_M)
            .unwrap_or(start);
        for p in taken.pings {
            let (pos, measured) = match p.fix() {
                Some(fix) if !established => {
                    let m = track.smoother.project(g, fix, start - MEASURE_BACK_M);
                    (fix, m.unwrap_or(start))
                }
                _ => (centroid, centroid_measured),
            };
            // (distance from the fix, along the pieces, edge, offset)
            let mut best = (f64::INFINITY, 0.0, anchor.0, anchor.1);
            if p.is_outlier() && !pieces.is_empty() {
                let share = if span > 0.0 {
                    ((p.time - from_time) / span).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (along, edge, offset) = at_distance(pieces, (share * length).max(floor));
                best = (f64::NAN, along, edge, offset);
            } else {
                let mut along = 0.0;
                for t in pieces {
                    let len = (t.to_m - t.from_m).max(0.0);
                    if along + len >= floor {
                        let lo = t.from_m + (floor - along).max(0.0);
                        let (offset, d) = g.project_onto_edge(t.edge, pos, lo, t.to_m);
                        if d < best.0 {
                            best = (d, along + (offset - t.from_m), t.edge, offset);
                        }
                    }
                    along += len;
                }
            }
            floor = best.1;
            let point = g.point_on_edge(best.2, best.3);
            // An outlier's fix is not kept: its distance is unknown (NaN),
            // it measures nothing, and the smoother only has its time.
            let (status, fix, measured) = if p.is_outlier() {
                let nowhere = Fix {
                    ping: LatLon::new(f64::NAN, f64::NAN),
                    sigma: None,
                    speed: None,
                };
                (MatchStatus::Outlier, nowhere, start + best.1)
            } else {
                // Held because the vehicle stands: from a device that
                // reports speeds, standing is what it reported (or what its
                // clustering fixes said of a slow reading), so speed zero.
                // Without speeds it is only inferred from fixes clustering
                // (a van pulling away clusters too), and the smoother is
                // not told.
                let fix = Fix {
                    ping: pos,
                    sigma: Some(sigma),
                    speed: held_speed,
                };
                (MatchStatus::Matched, fix, measured)
            };
            let fp = FinalPoint {
                seq: p.seq(),
                time: p.time,
                status,
                edge: best.2,
                offset_m: best.3,
                point,
                distance_m: haversine_m(fix.ping, point),
            };
            track
                .smoother
                .add_point(g, fp, fix, measured, &mut out.finalized);
        }
    }

    /// Emits the path from anchor `a` to candidate `b` by the most probable
    /// move, chosen by the same rules as the scoring.
    fn connect(
        &mut self,
        a: Anchor,
        b: &Cand,
        settled: bool,
        moved: &Moved,
        out: &mut MatchOutput,
    ) {
        let Moved {
            time,
            gc,
            straight,
            dt,
            sigma,
            speeds,
        } = *moved;
        let g = self.graph;
        let beta = beta_for(self.config.beta_m, self.config.beta_per_sigma, dt, sigma);
        let tolerance = standstill_tolerance(sigma);
        let mut best: Option<(f64, Move)> = None;
        for m in direct_moves(
            g,
            (a.edge, a.offset_m),
            (b.edge, b.offset()),
            tolerance,
            settled,
        )
        .into_iter()
        .flatten()
        .filter(|m| !m.u_turn || speeds.allows_u_turn())
        {
            let lt = log_direct(&m, straight, beta, sigma, self.config.u_turn_penalty)
                + speeds.witness(m.distance_m, beta);
            if best.is_none_or(|(l, _)| lt > l) {
                best = Some((lt, Move::Direct(m.u_turn)));
            }
        }
        // A search budget generous enough for any transition the scoring allowed.
        let limit_m = gc + 10.0 * beta + 4.0 * sigma + self.config.max_speed_mps * dt;
        let remaining = g.length_m(a.edge) - a.offset_m;
        if limit_m > remaining {
            let target = g.tail(b.edge);
            let mut goal = [Goal {
                node: target,
                limit_cm: ((limit_m - remaining) * 100.0) as u32,
                found: None,
            }];
            self.search.run(g, g.head(a.edge), &mut goal);
            if let Some(cm) = goal[0].found {
                let route = remaining + f64::from(cm) / 100.0 + b.offset();
                let lt = log_transition(route, straight, beta) + speeds.witness(route, beta);
                if best.is_none_or(|(l, _)| lt > l) {
                    best = Some((lt, Move::Graph));
                }
            }
        }
        let t0 = a.time;
        match best {
            None => {}
            Some((_, Move::Direct(false))) => {
                push_pieces(out, &[(a.edge, a.offset_m, b.pos())], t0, time);
            }
            Some((_, Move::Direct(true))) => {
                let len = g.length_m(a.edge);
                let turn_at = len - b.pos(); // b's position in a's coordinates
                if turn_at >= a.offset_m {
                    push_pieces(out, &[(a.edge, a.offset_m, turn_at)], t0, time);
                } else {
                    push_pieces(out, &[(b.edge, len - a.offset_m, b.pos())], t0, time);
                }
            }
            Some((_, Move::Graph)) => {
                self.path_edges.clear();
                self.search.path_to(g, g.tail(b.edge), &mut self.path_edges);
                let mut pieces = std::mem::take(&mut self.pieces);
                pieces.clear();
                pieces.push((a.edge, a.offset_m, g.length_m(a.edge)));
                pieces.extend(self.path_edges.iter().map(|&e| (e, 0.0, g.length_m(e))));
                pieces.push((b.edge, 0.0, b.pos()));
                push_pieces(out, &pieces, t0, time);
                self.pieces = pieces;
            }
        }
    }
}

/// The transition between two finalised steps, as the scoring saw it.
#[derive(Clone, Copy, Debug)]
struct Moved {
    /// Time of the later step.
    time: f64,
    /// Great-circle distance between the fixes, and the travel it implies.
    gc: f64,
    straight: f64,
    dt: f64,
    sigma: f64,
    speeds: ReportedSpeeds,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Move {
    /// Along the same edge, or a U-turn onto the opposite edge.
    Direct(bool),
    Graph,
}

/// Appends pieces with times spread over `[t0, t1]` in proportion to length.
fn push_pieces(out: &mut MatchOutput, pieces: &[(u32, f64, f64)], t0: f64, t1: f64) {
    let total: f64 = pieces.iter().map(|p| (p.2 - p.1).max(0.0)).sum();
    let mut done = 0.0;
    for &(edge, from, to) in pieces {
        let len = (to - from).max(0.0);
        if len == 0.0 {
            continue;
        }
        let frac = |d: f64| if total > 0.0 { d / total } else { 0.0 };
        let t_start = t0 + (t1 - t0) * frac(done);
        done += len;
        out.path.push(Traversal {
            edge,
            from_m: from,
            to_m: to,
            t_start,
            t_end: t0 + (t1 - t0) * frac(done),
        });
    }
}

/// The position `target` metres along non-empty `pieces` (its path distance,
/// edge and offset), or their end if rounding leaves `target` past it.
fn at_distance(pieces: &[Traversal], target: f64) -> (f64, u32, f64) {
    let mut along = 0.0;
    for t in pieces {
        let len = (t.to_m - t.from_m).max(0.0);
        if along + len >= target {
            return (target, t.edge, t.from_m + (target - along));
        }
        along += len;
    }
    let last = pieces[pieces.len() - 1];
    (along, last.edge, last.to_m)
}
