//! Installs the pages' front-end libraries (Leaflet, pinned with its
//! integrity hash in `assets/package-lock.json`) from the npm registry into
//! the build directory with `npm ci`, so the binary embeds them and the
//! source tree holds no copy. npm's cache makes later builds offline.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!(
        "cargo:rerun-if-changed={}",
        src.join("package-lock.json").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        src.join("package.json").display()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("npm");
    std::fs::create_dir_all(&out).expect("creating the npm directory in OUT_DIR");
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(f), out.join(f)).expect("copying the npm manifest");
    }
    let want = out.join("node_modules/leaflet/dist/leaflet.js");
    let lock = std::fs::read(src.join("package-lock.json")).expect("reading the lock file");
    let stamp = out.join("node_modules/.lastmile-lock");
    if want.exists() && std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return;
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&out)
        .status();
    match status {
        Ok(s) if s.success() && want.exists() => {
            std::fs::write(&stamp, &lock).expect("writing the npm stamp");
        }
        Ok(s) => panic!(
            "`npm ci` in {} failed ({s}): the web pages embed Leaflet from the npm registry",
            out.display()
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): building lastmile needs Node.js and npm to fetch the web \
             pages' map library (Leaflet) once; Debian: apt-get install npm"
        ),
    }
}
