//! The webhook receiver of `tests/webhook_receiver.py` (it verifies every
//! request with the Standard Webhooks reference library, `standardwebhooks`
//! from PyPI, as a customer's notification system would), started and read
//! by the tests that deliver to it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OLD_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The receiver, killed when dropped.
pub struct Receiver {
    child: Child,
    pub port: u16,
    log: PathBuf,
    control: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub fn start(dir: &Path) -> Self {
        let (log, control) = (dir.join("received.jsonl"), dir.join("control.json"));
        let _ = std::fs::remove_file(&log);
        std::fs::write(&control, "{}").unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/webhook_receiver.py"
            ))
            .args([SECRET, log.to_str().unwrap(), control.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the receiver did not start ({line:?}): is standardwebhooks installed? pip install standardwebhooks")
            });
        Self {
            child,
            port,
            log,
            control,
        }
    }

    /// How it answers from now on.
    pub fn answer(&self, control: Value) {
        std::fs::write(&self.control, control.to_string()).unwrap();
    }

    /// Every record written so far. The receiver may be writing the last
    /// line as it is read: a last line without its newline is not one yet.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The ids of the events it took (verified, answered 200).
    pub fn delivered(&self) -> BTreeSet<u64> {
        self.records()
            .iter()
            .filter(|r| r["verified"] == true && r["status"] == 200)
            .filter_map(|r| r["event_id"].as_u64())
            .collect()
    }

    /// The endpoint's config, delivering to it.
    pub fn config(&self, extra: &str) -> String {
        self.config_named("notify", extra)
    }

    /// The config of an endpoint named `name`, delivering to it.
    pub fn config_named(&self, name: &str, extra: &str) -> String {
        format!(
            "[[webhooks]]\nname = \"{name}\"\nfleet = \"acme\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecrets = [\"{SECRET}\", \"{OLD_SECRET}\"]\nallow_private = true\ntimeout_s = 1\nretry_schedule_s = [0.3, 0.6, 1.2, 2.4, 4.8]\n{extra}",
            self.port
        )
    }
}
