//! The fuzz targets' checks (`fuzz/checks.rs`) replayed on the committed
//! corpus and on every crash the fuzzers found (`fuzz/regressions/`), so
//! what fuzzing proved stays proven on every CI run without a nightly
//! toolchain.

#[allow(dead_code)] // shared with the fuzz targets
#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file under `fuzz/corpus/<target>` and
/// `fuzz/regressions/<target>`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let ok = std::panic::catch_unwind(|| check(&data));
            assert!(ok.is_ok(), "{} fails its check", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn frames_corpus_and_regressions() {
    assert!(replay("frames", checks::frames) >= 20);
}

#[test]
fn trace_csv_corpus_and_regressions() {
    assert!(replay("trace_csv", checks::trace_csv) >= 2);
}

#[test]
fn trace_gpx_corpus_and_regressions() {
    assert!(replay("trace_gpx", checks::trace_gpx) >= 2);
}

#[test]
fn pbf_corpus_and_regressions() {
    assert!(replay("pbf", checks::pbf) >= 3);
}
