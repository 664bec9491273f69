//! A real headless Chromium for the page tests, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs):
//! a chromedriver on a free port, a fresh profile per browser, the flags
//! that keep Chromium off the network, and screenshots under
//! `target/screenshots/` for a reviewer to look at.
//!
//! A renderer that crashes ("tab crashed", which a CI machine has shown on
//! pages that pass everywhere else) is what a person would answer with a
//! reload: the harness prints Chromium's own log for the crash, opens the
//! page again in a fresh session (V8 without its JIT, software compositing)
//! and repeats the command, once per browser. A second crash fails the
//! test with the log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    /// The WebDriver session; replaced by a fresh one after a crash.
    client: Mutex<Client>,
    url: String,
    caps: serde_json::Map<String, Value>,
    driver: Child,
    profile: PathBuf,
    /// Chromium's and the driver's log (`--enable-chrome-logs`).
    log: PathBuf,
    /// The last address opened, for reopening it after a crash.
    at: Mutex<Option<String>>,
    /// Whether the one recovery from a crashed tab has been used.
    recovered: AtomicBool,
}

/// Whether the browser tests can run here. Without Chromium they are
/// skipped with a notice, except in CI (`CI` set), where that fails.
pub fn available() -> bool {
    let there =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !there {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!(
            "skipped: no {CHROMIUM} or {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
    }
    there
}

/// A WebDriver session with `caps` on the driver at `url`, waiting up to
/// 20 s for the driver to listen.
async fn session(url: &str, caps: &serde_json::Map<String, Value>) -> Client {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let t = Instant::now();
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(url)
            .await
        {
            Ok(c) => return c,
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// A browser with a window of `width` × `height` CSS pixels.
    pub async fn start(name: &str, width: u32, height: u32) -> Self {
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("lastmile-chromium-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::env::temp_dir().join(format!(
            "lastmile-chromium-{}-{name}.log",
            std::process::id()
        ));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .arg("--enable-chrome-logs")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = session(&url, &caps).await;
        Self {
            client: Mutex::new(client),
            url,
            caps,
            driver,
            profile,
            log,
            at: Mutex::new(None),
            recovered: AtomicBool::new(false),
        }
    }

    /// The current session.
    pub fn client(&self) -> Client {
        self.client.lock().unwrap().clone()
    }

    pub async fn goto(&self, url: &str) {
        *self.at.lock().unwrap() = Some(url.to_string());
        let r = self.client().goto(url).await;
        if self.crashed(&r).await {
            self.client().goto(url).await.unwrap();
        } else {
            r.unwrap();
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        let r = self.client().execute(script, args.clone()).await;
        if self.crashed(&r).await {
            return self.client().execute(script, args).await.unwrap();
        }
        r.unwrap()
    }

    /// Whether `r` failed because the tab crashed and the page has been
    /// reopened in a fresh tab (so the command may be repeated). Any other
    /// error, or a second crash, is left to the caller's unwrap, after
    /// Chromium's log is printed.
    async fn crashed<T>(&self, r: &Result<T, CmdError>) -> bool {
        let Err(e) = r else { return false };
        if !e.to_string().contains("tab crashed") {
            return false;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "Chromium's tab crashed; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        if self.recovered.swap(true, Ordering::Relaxed) {
            return false;
        }
        // ChromeDriver answers every command of a session whose tab crashed
        // with the crash, even one opening a new tab: a new session it is.
        // The old one is closed first: its Chromium holds the profile.
        // It runs V8 without its JIT and composites in software: a renderer
        // that crashes at once on one machine only is most often generated
        // code meeting that machine's processor, or its GPU stand-in.
        let _ = self.client().close().await;
        // A crashed session's close may fail and leave its Chromium up.
        kill_browsers(&self.profile);
        let mut caps = self.caps.clone();
        if let Some(args) = caps
            .get_mut("goog:chromeOptions")
            .and_then(|o| o.get_mut("args"))
            .and_then(Value::as_array_mut)
        {
            args.push(json!("--js-flags=--jitless"));
            args.push(json!("--disable-gpu-compositing"));
        }
        let fresh = session(&self.url, &caps).await;
        *self.client.lock().unwrap() = fresh;
        let at = self.at.lock().unwrap().clone();
        match at {
            Some(url) => self.client().goto(&url).await.is_ok(),
            None => true,
        }
    }

    /// The text of the element `id` ("" when it is missing).
    pub async fn text(&self, id: &str) -> String {
        let v = self
            .js(
                "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
                vec![json!(id)],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until `script` returns true (up to 30 s), else fails saying `what`.
    pub async fn until(&self, what: &str, script: &str) {
        let t = Instant::now();
        loop {
            if self.js(script, vec![]).await == Value::Bool(true) {
                return;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let body = self.js("return document.body.innerText", vec![]).await;
                panic!("timed out waiting for {what}; the page says: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// A real mouse click at viewport coordinates.
    pub async fn click_at(&self, x: f64, y: f64) {
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x: x.round(),
                y: y.round(),
            })
            .then(PointerAction::Down {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            });
        self.client().perform_actions(mouse).await.unwrap();
    }

    /// Saves a screenshot as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        let _ = self.client().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Ends every Chromium process started on `profile` (their command lines
/// name it), which killing the driver does not reach.
fn kill_browsers(profile: &std::path::Path) {
    let _ = Command::new("pkill")
        .arg("-f")
        .arg("--")
        .arg(format!("--user-data-dir={}", profile.display()))
        .status();
    std::thread::sleep(Duration::from_millis(200));
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_browsers(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.log);
    }
}
