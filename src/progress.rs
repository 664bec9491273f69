//! indicatif rendering of the library's progress reports: a byte bar for
//! stages with a known size, a spinner otherwise. Nothing is drawn when stderr
//! is not a terminal, so logs and tests stay clean.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lastmile_roadgraph::Progress;

pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
        }
    }

    /// A spinner for work that reports no progress of its own.
    pub fn stage_spinner(&self, name: &str) {
        self.stage(name, 0);
    }

    /// A bar counting items (pings, simulated seconds) rather than bytes.
    pub fn stage_count(&self, name: &str, total: u64) {
        let style =
            ProgressStyle::with_template("{msg:>16} [{bar:40}] {human_pos}/{human_len} ({eta})")
                .expect("valid template")
                .progress_chars("=> ");
        let bar = ProgressBar::new(total).with_style(style);
        bar.set_message(name.to_string());
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(bar) {
            old.finish_and_clear();
        }
    }

    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, total: u64) {
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        let bar = if total > 0 {
            let style =
                ProgressStyle::with_template("{msg:>16} [{bar:40}] {bytes}/{total_bytes} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> ");
            ProgressBar::new(total).with_style(style)
        } else {
            let style = ProgressStyle::with_template("{msg:>16} {spinner} {elapsed}")
                .expect("valid template");
            let bar = ProgressBar::new_spinner().with_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        };
        bar.set_message(name.to_string());
        *slot = Some(bar);
    }

    fn set(&self, done: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_position(done);
        }
    }
}
