//! Checkpoint and restore: an engine restored from a checkpoint (through
//! its file format, onto a different shard count) holds exactly what the
//! original held, and given the same pings, ticks and journalled commands
//! afterwards produces exactly the same events and ETAs. Damaged files and
//! checkpoints of another map are refused whole.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lastmile_engine::Ping;
use lastmile_engine::bench::{Day, assign_routes};
use lastmile_engine::fleet::{
    Admission, Checkpoint, CheckpointError, Command, Engine, Event, EventFilter, FleetConfig,
    Journal, ProofOfDelivery, StopId, StopPlan,
};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::Graph;
use lastmile_roadgraph::synthetic::{CityParams, generate_city};

const WAIT: Admission = Admission::Wait(Duration::from_secs(60));

fn town() -> Arc<Graph> {
    Arc::new(Graph::from_data(&common::town().to_data()))
}

fn engine(g: &Arc<Graph>, shards: usize) -> Engine {
    Engine::new(
        g.clone(),
        FleetConfig {
            shards,
            events_capacity: 1 << 20,
            traffic_every_s: 60.0,
            ..FleetConfig::default()
        },
    )
}

/// A journal in memory: what was recorded, with sequence numbers.
#[derive(Default)]
struct MemJournal(Mutex<Vec<(u64, Vec<Command>, f64)>>);

impl Journal for MemJournal {
    fn append(&self, commands: &[Command], _: &[StopPlan], time: f64) -> Result<u64, String> {
        let mut j = self.0.lock().unwrap();
        let seq = j.len() as u64 + 1;
        j.push((seq, commands.to_vec(), time));
        Ok(seq)
    }

    fn sync(&self, seq: u64) -> Result<(), String> {
        assert!(seq as usize <= self.0.lock().unwrap().len());
        Ok(())
    }
}

/// Rewrites a checkpoint file in the first format, as the earliest builds
/// wrote it: meta, vehicle count, records length, records.
fn as_format_1(file: &[u8]) -> Vec<u8> {
    let body = &file[16..file.len() - 16];
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
    let footer = body.len() - 24;
    let (vehicles, records_len, meta_len) = (word(footer), word(footer + 8), word(footer + 16));
    let (records, meta) = body[..footer].split_at(records_len as usize);
    assert_eq!(meta.len() as u64, meta_len);
    let mut old = Vec::new();
    old.extend_from_slice(&meta_len.to_le_bytes());
    old.extend_from_slice(meta);
    old.extend_from_slice(&vehicles.to_le_bytes());
    old.extend_from_slice(&records_len.to_le_bytes());
    old.extend_from_slice(records);
    let mut out = file[..16].to_vec();
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&old);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&old).to_le_bytes());
    out.extend_from_slice(&(old.len() as u64).to_le_bytes());
    out
}

/// Feeds pings in batches of 97, ticking every 20 s of event time.
fn feed(e: &Engine, pings: &[(u64, Ping)], next_tick: &mut f64) {
    for chunk in pings.chunks(97) {
        let t = chunk[0].1.time;
        while t >= *next_tick {
            e.tick(*next_tick);
            *next_tick += 20.0;
        }
        assert_eq!(e.submit(chunk, WAIT).shed, 0);
    }
    e.sync();
}

fn events_from(e: &Engine, from: u64) -> Vec<Event> {
    let (mut cursor, mut out) = (from, Vec::new());
    e.events()
        .read(&mut cursor, &EventFilter::default(), usize::MAX, &mut out);
    let mut ev: Vec<Event> = out.into_iter().map(|(_, ev)| ev).collect();
    ev.sort_by_key(|ev| (ev.vehicle, ev.seq));
    ev
}

fn state(e: &Engine, stops: usize) -> (Vec<String>, Vec<String>) {
    let mut ids = e.vehicle_ids();
    ids.sort_unstable();
    let vehicles = ids
        .iter()
        .map(|&v| format!("{:?} {:?}", e.vehicle(v).unwrap(), e.route(v)))
        .collect();
    let stops = (0..stops as StopId)
        .map(|s| format!("{:?}", e.stop(s).map(|v| (v.record, v.eta))))
        .collect();
    (vehicles, stops)
}

#[test]
fn a_restored_engine_continues_exactly_as_the_original() {
    let g = town();
    let params = SimParams {
        vehicles: 30,
        duration_s: 2400.0,
        interval_s: 3.0,
        noise_m: 6.0,
        congestion: 0.3,
        seed: 31,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let a = engine(&g, 2);
    let journal = Arc::new(MemJournal::default());
    assert!(a.set_journal(journal.clone()));
    assign_routes(&a, &day);
    let half = day.pings.len() / 2;
    let mut tick_a = day.start_time;
    feed(&a, &day.pings[..half], &mut tick_a);
    assert!(
        a.stats().metric_updates > 0,
        "traffic must have been learnt"
    );

    // Streamed as a server writes it: the shards' records in chunks.
    let mut file = Vec::new();
    let saved = a.write_checkpoint(&mut file).unwrap();
    assert_eq!(saved.bytes, file.len() as u64);
    assert!(file.len() > 4 * (64 << 10), "several chunks per shard");
    assert_eq!((saved.vehicles, saved.failed), (params.vehicles, 0));
    let read = Checkpoint::read(&file).unwrap();
    assert_eq!(read.vehicles(), params.vehicles);
    assert_eq!(read.journal_seq(), params.vehicles as u64);
    assert_eq!(saved.journal_seq, read.journal_seq());
    // In memory, the same state (the engine has not moved since).
    let mut again = Vec::new();
    a.checkpoint().write_to(&mut again).unwrap();
    assert_eq!(again.len(), file.len());
    assert_eq!(
        Checkpoint::read(&again).unwrap().vehicles(),
        params.vehicles
    );
    // A whole, checksummed file of the first format (meta first, and
    // vehicle records of an older layout) is refused, not misread.
    assert!(matches!(
        Checkpoint::read(&as_format_1(&file)),
        Err(CheckpointError::Format(1))
    ));

    // After the checkpoint: a stop completed and a route reordered.
    let t = day.pings[half].1.time;
    let v0 = a.route(0);
    a.command(
        Command::Complete {
            vehicle: 0,
            stop: v0[0],
            proof: ProofOfDelivery {
                note: Some("left at the door".into()),
                ..ProofOfDelivery::default()
            },
        },
        t,
        WAIT,
    )
    .unwrap();
    let mut order = a.route(1);
    order.reverse();
    a.command(Command::Reorder { vehicle: 1, order }, t, WAIT)
        .unwrap();
    a.sync();
    let events_at_checkpoint = a.events().next_id();

    let b = engine(&g, 3);
    let restored = b.restore(read).unwrap();
    assert_eq!(restored.vehicles, params.vehicles);
    assert!(restored.failed.is_empty(), "{:?}", restored.failed);
    assert!(restored.traffic_edges > 0);
    for (seq, cmds, time) in journal.0.lock().unwrap().iter() {
        if *seq > saved.journal_seq {
            assert_eq!(b.replay(cmds, *time), 0);
        }
    }
    b.sync();
    let stops = day.stops().len();
    assert_eq!(
        state(&a, stops),
        state(&b, stops),
        "state right after restore"
    );
    assert!(
        b.events().next_id() == 0,
        "replayed commands publish nothing"
    );

    let mut tick_b = tick_a;
    feed(&a, &day.pings[half..], &mut tick_a);
    feed(&b, &day.pings[half..], &mut tick_b);
    let (ea, eb) = (events_from(&a, events_at_checkpoint), events_from(&b, 0));
    assert!(ea.len() > 50, "{} events after the checkpoint", ea.len());
    if let Some(i) = (0..ea.len().min(eb.len())).find(|&i| ea[i] != eb[i]) {
        panic!(
            "events differ after the restore: {:?}\n vs {:?}",
            ea[i], eb[i]
        );
    }
    assert_eq!(ea.len(), eb.len(), "event counts differ after the restore");
    assert_eq!(state(&a, stops), state(&b, stops), "state at the end");
}

#[test]
fn damaged_or_foreign_checkpoints_are_refused_whole() {
    let g = town();
    let params = SimParams {
        vehicles: 4,
        duration_s: 600.0,
        seed: 5,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let a = engine(&g, 1);
    assign_routes(&a, &day);
    let mut tick = day.start_time;
    feed(&a, &day.pings, &mut tick);
    let mut file = Vec::new();
    a.checkpoint().write_to(&mut file).unwrap();

    assert!(matches!(
        Checkpoint::read(b"not a checkpoint at all, clearly"),
        Err(CheckpointError::BadMagic)
    ));
    // A newer build's file, and older ones' (format 2 to 4 vehicle records
    // have other layouts, format 8 stop records no ratings, format 9 no
    // milestones, format 10 no arrival windows, format 11 no standing
    // windows, format 12 no confirmations or zones, format 13 no service
    // counts): refused whole, never misread.
    for version in [15, 2, 3, 4, 8, 9, 10, 11, 12, 13] {
        let mut other = file.clone();
        other[8] = version;
        assert!(matches!(
            Checkpoint::read(&other),
            Err(CheckpointError::Format(v)) if v == u32::from(version)
        ));
    }
    for at in [20, file.len() / 2, file.len() - 20] {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        assert!(
            matches!(Checkpoint::read(&bad), Err(CheckpointError::Checksum)),
            "flip at {at}"
        );
    }
    for cut in [0, 10, 17, file.len() / 3, file.len() - 1] {
        assert!(Checkpoint::read(&file[..cut]).is_err(), "cut at {cut}");
    }

    // Another map: refused before anything is touched.
    let other = Arc::new(Graph::from_data(&generate_city(&CityParams::new(
        2_000, 99,
    ))));
    let c = engine(&other, 1);
    let err = c.restore(Checkpoint::read(&file).unwrap());
    assert!(matches!(err, Err(CheckpointError::GraphMismatch)));
    assert!(c.vehicle_ids().is_empty());
}

/// The lifetime odometer (what service intervals count) is the sum of the
/// matched path's pieces, across days and a restart from a checkpoint, and
/// moving time follows the time driven.
#[test]
fn the_lifetime_odometer_is_the_matched_distance_across_days_and_a_restart() {
    let g = town();
    let config = FleetConfig {
        shards: 2,
        history: true,
        events_capacity: 1 << 20,
        ..FleetConfig::default()
    };
    let params = SimParams {
        vehicles: 6,
        duration_s: 1800.0,
        interval_s: 2.0,
        noise_m: 4.0,
        seed: 9,
        // Across a UTC midnight, where the day's odometer starts again.
        start_time: 1_767_225_600.0 - 900.0,
        ..SimParams::default()
    };
    let day = Day::simulate(&g, &params, &|_| {});
    let half = day.pings.len() / 2;
    let mut pieces = Vec::new();
    let a = Engine::new(g.clone(), config.clone());
    let mut next = day.start_time;
    feed(&a, &day.pings[..half], &mut next);
    a.tick(next);
    a.take_history(&mut pieces);
    let mut file = Vec::new();
    a.checkpoint().write_to(&mut file).unwrap();
    drop(a);
    let b = Engine::new(g.clone(), config);
    b.restore(Checkpoint::read(&file).unwrap()).unwrap();
    feed(&b, &day.pings[half..], &mut next);
    b.tick(next);
    b.take_history(&mut pieces);
    let mut ids = b.vehicle_ids();
    ids.sort_unstable();
    assert_eq!(ids.len(), 6);
    for v in ids {
        let snap = b.vehicle(v).unwrap();
        let matched: f64 = pieces
            .iter()
            .filter(|p| p.vehicle == v)
            .map(|p| (p.to_m - p.from_m).max(0.0))
            .sum();
        assert!(matched > 1000.0, "vehicle {v}: {matched} m");
        assert!(
            (snap.lifetime_m - matched).abs() < 1e-6 * matched,
            "vehicle {v}: {} against {matched}",
            snap.lifetime_m
        );
        // The day's odometer started again at midnight.
        assert!(snap.odometer_m < snap.lifetime_m, "vehicle {v}");
        // Moving most of the time it drove, never longer than the day.
        let moving = snap.moving_s;
        assert!(
            moving > 0.3 * params.duration_s && moving <= params.duration_s,
            "vehicle {v}: {moving}"
        );
    }
}
