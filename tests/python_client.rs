//! The second client: `clients/python/lastmile_client.py`, written from
//! PROTOCOL.md alone with aioquic, drives a real `lastmile serve` — wrong
//! token refused, route assigned, pings on a stream (acknowledged) and as
//! datagrams, ETAs and the stop read back, events received — once with the
//! certificate pinned by fingerprint and once trusted as a CA file.

mod common;

use std::process::Command;

use common::server::{serve, simulate};
use common::tmpdir;

fn python_with_aioquic() -> bool {
    Command::new("python3")
        .args(["-c", "import aioquic"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_python_client_talks_to_a_real_server() {
    if !python_with_aioquic() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with aioquic is required in CI (pip install -r clients/python/requirements.txt)"
        );
        eprintln!(
            "skipped: python3 with aioquic not found (pip install -r clients/python/requirements.txt)"
        );
        return;
    }
    let dir = tmpdir("svc-python");
    let (trace, stops) = simulate(&dir, 10, 1200);
    let s = serve(&dir, "", "");
    let client_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");
    for (vehicle, trust) in [
        (
            "veh-00001",
            vec!["--fingerprint".to_string(), s.fingerprint.clone()],
        ),
        (
            "veh-00002",
            vec![
                "--cafile".to_string(),
                s.data.join("dev-cert.pem").display().to_string(),
            ],
        ),
    ] {
        let o = Command::new("python3")
            .current_dir(client_dir)
            .arg("e2e.py")
            .args([
                "--server",
                &s.addr,
                "--token",
                &s.token,
                "--vehicle",
                vehicle,
            ])
            .args([
                "--trace",
                trace.to_str().unwrap(),
                "--stops",
                stops.to_str().unwrap(),
            ])
            .args(&trust)
            .output()
            .expect("run python3");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "python client failed: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(
            v["acked"].as_u64().unwrap() + 5,
            v["pings_sent"].as_u64().unwrap(),
            "{v}"
        );
        assert!(v["events"].as_u64().unwrap() > 0, "{v}");
        let stops = v["stops"].as_array().unwrap();
        assert!(
            !stops.is_empty() && stops.iter().all(|s| s[2].as_i64().unwrap() > 0),
            "every stop has an ETA: {v}"
        );
    }
}
