//! "The hot path allocates nothing per ping in steady state" (DESIGN.md),
//! checked with a counting allocator: after a warm-up hour of a simulated
//! fleet, another hour of pings through the same matcher and tracks must
//! cause almost no allocations. Windows, candidate lists, held pings and
//! outputs are reused (only a shard's periodic tick trims them). What
//! remains (a handful per 28,000 pings) is buffers reaching a new high-water
//! mark and rstar's traversal stack spilling from its inline buffer on
//! queries that visit many tree nodes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use lastmile_engine::simulate::SimParams;
use lastmile_engine::{MatchOutput, Matcher, MatcherConfig, VehicleTrack};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);

        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_matching_does_not_allocate() {
    let g = common::town();
    let params = SimParams {
        vehicles: 8,
        duration_s: 2.0 * 3600.0,
        interval_s: 1.0,
        noise_m: 8.0,
        seed: 13,
        ..SimParams::default()
    };
    let trace = common::simulated(g, &params);
    let groups = trace.by_vehicle();
    let mut order: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(v, (_, rows))| rows.iter().map(move |&r| (v, r)))
        .collect();
    order.sort_by(|a, b| {
        trace.rows[a.1]
            .ping
            .time
            .total_cmp(&trace.rows[b.1].ping.time)
    });
    let mut matcher = Matcher::new(g, MatcherConfig::default());
    let mut tracks: Vec<VehicleTrack> = groups.iter().map(|_| VehicleTrack::new()).collect();
    let mut out = MatchOutput::default();
    let half = order.len() / 2;
    for &(v, r) in &order[..half] {
        matcher.push(&mut tracks[v], &trace.rows[r].ping, &mut out);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);

    for &(v, r) in &order[half..] {
        matcher.push(&mut tracks[v], &trace.rows[r].ping, &mut out);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let pings = (order.len() - half) as f64;
    eprintln!("{allocations} allocations over {pings} pings");

    assert!(
        (allocations as f64) < 0.01 * pings,
        "{allocations} allocations over {pings} pings"
    );
}
