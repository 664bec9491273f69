//! A minimal OSM PBF writer (uncompressed blobs, plain nodes) for maps the
//! tests make themselves: hand-made corner cases, and benchmark road networks
//! written as OSM files so they go through `lastmile import` as a user's do.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}
fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    key(out, field, 0);
    varint(out, v);
}
fn packed(out: &mut Vec<u8>, field: u64, vals: impl IntoIterator<Item = u64>) {
    let mut p = Vec::new();
    for v in vals {
        varint(&mut p, v);
    }
    bytes(out, field, &p);
}

fn blob(file: &mut Vec<u8>, kind: &str, payload: &[u8]) {
    let mut b = Vec::new();
    bytes(&mut b, 1, payload); // raw
    uint(&mut b, 2, payload.len() as u64); // raw_size
    let mut h = Vec::new();
    bytes(&mut h, 1, kind.as_bytes());
    uint(&mut h, 3, b.len() as u64);
    file.extend_from_slice(&(h.len() as u32).to_be_bytes());
    file.extend_from_slice(&h);
    file.extend_from_slice(&b);
}

pub struct Way<'a> {
    pub id: i64,
    pub refs: Vec<i64>,
    pub tags: Vec<(&'a str, &'a str)>,
}

/// Nodes as (id, lat, lon) in degrees.
pub fn write(nodes: &[(i64, f64, f64)], ways: &[Way]) -> Vec<u8> {
    let mut file = Vec::new();
    let mut header = Vec::new();
    bytes(&mut header, 4, b"OsmSchema-V0.6");
    blob(&mut file, "OSMHeader", &header);

    let mut strings: Vec<&str> = vec![""];
    let sid = |s: &str, strings: &mut Vec<&str>| -> u64 {
        if let Some(i) = strings.iter().position(|x| *x == s) {
            return i as u64;
        }
        strings.push(Box::leak(s.to_string().into_boxed_str()));
        (strings.len() - 1) as u64
    };
    let mut group = Vec::new();
    for &(id, lat, lon) in nodes {
        let mut n = Vec::new();
        key(&mut n, 1, 0);
        varint(&mut n, zigzag(id));
        key(&mut n, 8, 0);
        varint(&mut n, zigzag((lat * 1e7).round() as i64));
        key(&mut n, 9, 0);
        varint(&mut n, zigzag((lon * 1e7).round() as i64));
        bytes(&mut group, 1, &n);
    }
    let mut node_group = Vec::new();
    bytes(&mut node_group, 2, &group);
    let mut way_group = Vec::new();
    for w in ways {
        let mut m = Vec::new();
        uint(&mut m, 1, w.id as u64);
        let keys: Vec<u64> = w.tags.iter().map(|t| sid(t.0, &mut strings)).collect();
        let vals: Vec<u64> = w.tags.iter().map(|t| sid(t.1, &mut strings)).collect();
        packed(&mut m, 2, keys);
        packed(&mut m, 3, vals);
        let mut prev = 0;
        packed(
            &mut m,
            8,
            w.refs.iter().map(|&r| {
                let d = zigzag(r - prev);
                prev = r;
                d
            }),
        );
        bytes(&mut way_group, 3, &m);
    }
    let mut block = Vec::new();
    let mut table = Vec::new();
    for s in &strings {
        bytes(&mut table, 1, s.as_bytes());
    }
    bytes(&mut block, 1, &table);
    block.extend_from_slice(&node_group);
    if !ways.is_empty() {
        bytes(&mut block, 2, &way_group);
    }
    blob(&mut file, "OSMData", &block);
    file
}
