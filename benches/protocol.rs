//! The front end's per-ping cost without the network: decoding a full PINGS
//! frame (32767 records, borrowed from the receive buffer) and checking
//! every record into the engine's ping type, and encoding one. This is the
//! work `lastmile serve` does per byte received before the engine's queue.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastmile_ingest::protocol::{
    FrameType, MAX_FRAME_LEN, PingBatch, PingRecord, split_frame, write_frame,
};

fn protocol(c: &mut Criterion) {
    let n = PingBatch::capacity(MAX_FRAME_LEN);
    let records: Vec<PingRecord> = (0..n as u64)
        .map(|i| PingRecord {
            vehicle: i % 100_000,
            time_ms: 1_767_225_600_000 + i as i64,
            lat_e7: 437_300_000 + (i % 1000) as i32,
            lon_e7: 74_200_000 - (i % 1000) as i32,
            speed_cms: 1000,
            heading_cdeg: 9000,
            accuracy_dm: u16::MAX,
            flags: 0,
        })
        .collect();
    let mut frame = Vec::new();
    write_frame(&mut frame, FrameType::Pings, |w| {
        PingBatch::encode(1, &records, w)
    });
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(n as u64));
    let mut out = Vec::with_capacity(n);
    group.bench_function("decode_and_check_frame", |b| {
        b.iter(|| {
            let (_, payload, _) = split_frame(&frame, MAX_FRAME_LEN).unwrap().unwrap();
            let batch = PingBatch::decode(payload).unwrap();
            out.clear();
            out.extend(batch.iter().filter_map(|r| r.to_ping().ok()));
            out.len()
        })
    });
    let mut buf = Vec::with_capacity(frame.len());
    group.bench_function("encode_frame", |b| {
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, FrameType::Pings, |w| {
                PingBatch::encode(1, &records, w)
            });
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, protocol);
criterion_main!(benches);
