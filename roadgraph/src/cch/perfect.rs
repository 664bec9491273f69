//! Perfect customization (Dibbelt, Strasser, Wagner) used to prune what
//! queries relax: the arc lists an elimination-tree search walks, per
//! direction, holding only the arcs a shortest path can use.
//!
//! Basic customization gives each arc the cheapest path between its ends
//! through lower ranks. Top-down over the elimination tree, every arc x–y is
//! then lowered through its intermediate and upper triangles (x–z–y with z
//! above x) to the true distance between its ends. An arc direction whose
//! basic weight stays above that distance is never needed: on a shortest
//! path, consecutive prefix maxima of rank (the up part of its up-down form,
//! and likewise the down part) are joined by a subpath through lower ranks
//! only, which basic customization already weighs exactly. Those arcs are
//! kept with their basic weights (which their recorded triangles unpack),
//! the rest dropped, and unreachable directions with them: about half of the
//! arc directions on road networks and the synthetic cities.
//!
//! A node reads only arcs between its ancestors and writes only its own, so
//! once a node is done its children's subtrees are independent; they run as
//! parallel tasks, as in basic customization but from the root down.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;

use super::Cch;
use super::customize::{INFINITY, SERIAL_SUBTREE};

/// One arc a search relaxes: the upper rank it leads to and its weight in
/// the search's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct SearchArc {
    pub head: u32,
    pub weight: u32,
}

/// The arcs one direction's searches relax, per rank (CSR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SearchArcs {
    first: Vec<u32>,
    arcs: Vec<SearchArc>,
}

impl SearchArcs {
    /// The arcs to relax out of rank `x`, heads ascending.
    #[inline]
    pub fn of(&self, x: u32) -> &[SearchArc] {
        let x = x as usize;
        &self.arcs[self.first[x] as usize..self.first[x + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.arcs.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.first.capacity() * 4 + self.arcs.capacity() * std::mem::size_of::<SearchArc>()
    }
}

/// Both directions' pruned arc lists of one metric.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Search {
    /// Forward searches: travel from lower to upper rank.
    pub up: SearchArcs,
    /// Backward searches: travel from upper to lower rank.
    pub down: SearchArcs,
}

impl Search {
    /// Perfect customization of basic weights `up`/`down`, and the arcs it
    /// shows a query needs.
    pub fn new(cch: &Cch, up: &[u32], down: &[u32]) -> Self {
        let atomics = |w: &[u32]| w.iter().map(|&w| AtomicU32::new(w)).collect::<Vec<_>>();
        let (p_up, p_down) = (atomics(up), atomics(down));
        let perfect = Perfect {
            up: &p_up,
            down: &p_down,
        };
        let roots: Vec<u32> = cch.roots().collect();
        roots
            .par_iter()
            .for_each(|&root| perfect_subtree(cch, root, &perfect));
        let keep = |basic: &[u32], perfect: &[AtomicU32]| {
            let n = cch.d.up_first.len() - 1;
            let mut first = Vec::with_capacity(n + 1);
            let mut arcs = Vec::new();
            first.push(0);
            for x in 0..n as u32 {
                for a in cch.up_arcs(x) {
                    let w = basic[a as usize];
                    if w != INFINITY && w == perfect[a as usize].load(Relaxed) {
                        arcs.push(SearchArc {
                            head: cch.up_head(a),
                            weight: w,
                        });
                    }
                }
                first.push(arcs.len() as u32);
            }
            arcs.shrink_to_fit();
            SearchArcs { first, arcs }
        };
        let (up, down) = rayon::join(|| keep(up, &p_up), || keep(down, &p_down));
        Self { up, down }
    }

    pub fn heap_bytes(&self) -> usize {
        self.up.heap_bytes() + self.down.heap_bytes()
    }
}

/// Perfect weights being computed. Each arc is written only by its lower
/// end's task; a node's task starts after its ancestors' have finished.
struct Perfect<'a> {
    up: &'a [AtomicU32],
    down: &'a [AtomicU32],
}

/// Runs the subtree rooted at `root`: the single-child chain from it down to
/// the first branching (or small) subtree, top-down, then the branches as
/// parallel tasks. Walking the chain keeps the stack shallow however tall
/// the tree.
fn perfect_subtree(cch: &Cch, root: u32, p: &Perfect) {
    let mut x = root;
    loop {
        let size = cch.subtree_size(x);
        if size <= SERIAL_SUBTREE {
            // A post-order block: descending ranks visit every node after
            // its ancestors.
            for r in (x + 1 - size..=x).rev() {
                perfect_node(cch, r, p);
            }
            return;
        }
        perfect_node(cch, x, p);
        let children: Vec<u32> = cch.children(x).collect();
        match children[..] {
            [] => return,
            [only] => x = only,
            _ => {
                children
                    .par_iter()
                    .for_each(|&c| perfect_subtree(cch, c, p));
                return;
            }
        }
    }
}

/// Lowers each arc of x through its intermediate and upper triangles: for
/// upper neighbours y < z of x, x–y may be cheaper via z and x–z via y. The
/// arc y–z is final (its lower end is an ancestor of x). Values stay path
/// lengths between the arc's ends, never above the basic weights, so the
/// order of updates within x does not matter for the result.
fn perfect_node(cch: &Cch, x: u32, p: &Perfect) {
    thread_local! {
        /// x's arcs (up, down) while x runs: the pair loop reads and writes
        /// L1, not the shared arrays.
        static MINE: std::cell::RefCell<Vec<(u32, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let arcs = cch.up_arcs(x);
    let (first, last) = (arcs.start as usize, arcs.end as usize);
    if last - first < 2 {
        return;
    }
    let heads = &cch.d.up_head[first..last];
    MINE.with(|mine| {
        let mine = &mut *mine.borrow_mut();
        mine.clear();
        mine.extend((first..last).map(|a| (p.up[a].load(Relaxed), p.down[a].load(Relaxed))));
        for i in 0..mine.len() {
            let y = heads[i].to_native();
            // y's arcs, walked along x's heads above y (by chordality all of
            // them are heads of y too; a damaged hierarchy finds fewer).
            let ty = cch.up_arcs(y);
            let (ty_first, y_heads) = (
                ty.start as usize,
                &cch.d.up_head[ty.start as usize..ty.end as usize],
            );
            let mut k = 0;
            let (mut a_up, mut a_down) = mine[i];
            for j in i + 1..mine.len() {
                let z = heads[j].to_native();
                while k < y_heads.len() && y_heads[k].to_native() < z {
                    k += 1;
                }
                if k == y_heads.len() {
                    break;
                }
                if y_heads[k].to_native() != z {
                    continue;
                }
                let c = ty_first + k;
                let (c_up, c_down) = (p.up[c].load(Relaxed), p.down[c].load(Relaxed));
                let (b_up, b_down) = mine[j];
                // x -> z -> y and y -> z -> x
                a_up = a_up.min(b_up.saturating_add(c_down));
                a_down = a_down.min(c_up.saturating_add(b_down));
                // x -> y -> z and z -> y -> x
                mine[j] = (
                    b_up.min(a_up.saturating_add(c_up)),
                    b_down.min(c_down.saturating_add(a_down)),
                );
            }
            mine[i] = (a_up, a_down);
        }
        for (a, &(up, down)) in (first..last).zip(mine.iter()) {
            p.up[a].store(up, Relaxed);
            p.down[a].store(down, Relaxed);
        }
    });
}
