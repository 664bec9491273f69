//! Locates the shared real-world test data (`../shared/data` beside the
//! project, or `$LASTMILE_DATA`) for tests and benchmarks of every crate.
//! Data is read in place and never copied into the project.

use std::path::PathBuf;

/// The data directory, if it exists.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LASTMILE_DATA") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    // Walk up from this crate to the directory that holds `shared/data`.
    let mut here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = here.join("shared").join("data");
        if candidate.is_dir() {
            return Some(candidate);
        }
        if !here.pop() {
            return None;
        }
    }
}

/// A file under the data directory. When it is missing, a test under CI
/// (`CI` set) fails; elsewhere it prints that it skipped and gets `None`.
pub fn data_file(relative: &str) -> Option<PathBuf> {
    found(relative, "", |p| p.is_file())
}

/// A directory under the data directory (`kubicka-2015`), as [`data_file`].
pub fn data_subdir(relative: &str) -> Option<PathBuf> {
    found(relative, "/", |p| p.is_dir())
}

fn found(relative: &str, suffix: &str, is: fn(&PathBuf) -> bool) -> Option<PathBuf> {
    let path = data_dir().map(|d| d.join(relative)).filter(is);
    if path.is_none() {
        let msg =
            format!("test data {relative}{suffix} not found (set LASTMILE_DATA to ../shared/data)");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
    }
    path
}
