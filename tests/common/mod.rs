//! Helpers shared by the end-to-end tests of the `lastmile` binary.
#![allow(dead_code)]

pub mod browser;
pub mod pbf;
pub mod receiver;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lastmile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(args)
        .output()
        .expect("run lastmile")
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lastmile-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a clean failure: non-zero exit, exactly one line on stderr that
/// starts with `error:`, names the file and says `what`.
pub fn assert_clean_error(o: &Output, file: &Path, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "exit code: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(name.as_ref()),
        "error does not name {name}: {err}"
    );
    assert!(err.contains(what), "error does not say {what:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}
