//! Headless Chromium over W3C WebDriver (chromedriver), for the console's end-to-end
//! tests. A few dozen lines over `reqwest` speak the protocol
//! (<https://www.w3.org/TR/webdriver2/>), so no WebDriver crate is needed.
//!
//! A missing browser fails the test with how to install it: a console test that skips
//! itself would let CI pass without ever opening the console.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::ports::free_port;

/// The key WebDriver names element references with (W3C WebDriver §12.1).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL: &str = "the admin console's browser tests need headless Chromium and its \
    WebDriver: `apt-get update && apt-get install -y chromium chromium-driver` (Debian/Ubuntu; \
    .ci/run does this), or point GATEHOUSE_CHROMIUM and GATEHOUSE_CHROMEDRIVER at them";

/// Where screenshots go: `target/console-screens/`.
pub fn screens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screens")
}

fn program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(path.exists(), "{} not found: {INSTALL}", path.display());
    path
}

/// One browser at a time in a test process: Chromium is heavy for a 2-core machine, and
/// the suite's timing tests (equal work for unknown emails) must not starve beside it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Wraps the page's `fetch` once: a request whose URL contains a held pattern is sent at
/// once, but its answer reaches the page only when released.
const HOLD_SCRIPT: &str = "
    if (!window.__held) {
      const held = (window.__held = { patterns: [], waiting: [] });
      const send = window.fetch.bind(window);
      window.fetch = (input, init) => {
        const answer = send(input, init);
        const url = String(input instanceof Request ? input.url : input);
        const pattern = held.patterns.find((p) => url.includes(p));
        if (pattern === undefined) return answer;
        return new Promise((resolve, reject) => {
          held.waiting.push({ pattern, release: () => answer.then(resolve, reject) });
        });
      };
    }
    window.__held.patterns.push(arguments[0]);";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    _driver: tokio::process::Child,
    /// Last, so it is released after the driver (and its browser) are killed.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`×`height`.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let chromium = program("GATEHOUSE_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("GATEHOUSE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let turn = ONE_AT_A_TIME.lock().await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let port = free_port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(body) = r.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session body");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {created}; {INSTALL}"));
        let browser = Browser {
            http,
            session: format!("{base}/session/{id}"),
            _driver: driver,
            _turn: turn,
        };
        browser.emulate_phone(width, height).await;
        browser
    }

    /// Headless Chromium keeps a window at least 500 px wide, so a phone's width (390 px)
    /// is emulated through the DevTools protocol (chromedriver's `goog/cdp/execute`),
    /// as the browser's own device mode does; it lasts for the whole session.
    async fn emulate_phone(&self, width: u32, height: u32) {
        if width >= 500 {
            return;
        }
        let v = self
            .call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({
                    "cmd": "Emulation.setDeviceMetricsOverride",
                    "params": { "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true },
                })),
            )
            .await;
        assert!(!Self::failed(&v), "emulating a {width} px screen: {v}");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        // POSTs need a JSON body even when empty.
        if method == reqwest::Method::POST {
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        let response: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        response["value"].clone()
    }

    fn failed(value: &Value) -> bool {
        value.get("error").is_some()
    }

    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
        assert!(!Self::failed(&v), "goto {url}: {v}");
    }

    pub async fn resize(&self, width: u32, height: u32) {
        let v = self
            .call(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
        assert!(!Self::failed(&v), "resize: {v}");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({ "script": script, "args": args })),
            )
            .await;
        assert!(!Self::failed(&v), "script {script}: {v}");
        v
    }

    /// Runs an asynchronous `script`: it ends by calling `arguments[arguments.length - 1]`
    /// with its value (W3C WebDriver "Execute Async Script").
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({ "script": script, "args": args })),
            )
            .await;
        assert!(!Self::failed(&v), "async script {script}: {v}");
        v
    }

    /// Polls `script` (a function body returning a boolean) until it returns true, for at
    /// most `limit`; says whether it did. The caller decides what a timeout means, so a
    /// test can report everything it saw instead of stopping at the first wait.
    pub async fn wait_until(&self, script: &str, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.run(script, json!([])).await == true {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `script` keeps returning true for the whole of `span` (polled every 50 ms).
    pub async fn stays_true(&self, script: &str, span: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < span {
            if self.run(script, json!([])).await != true {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// From now on, answers to requests whose URL contains `pattern` are held back in the
    /// page (the page's `fetch` is wrapped) until [`Browser::release_responses`]: a slow
    /// server, made deterministic. Holds last until the page is reloaded.
    pub async fn hold_responses(&self, pattern: &str) {
        self.run(HOLD_SCRIPT, json!([pattern])).await;
    }

    /// Waits until at least `count` requests matching `pattern` are being held.
    pub async fn wait_held(&self, pattern: &str, count: usize) {
        let script = format!(
            "return (window.__held?.waiting ?? []).filter((h) => h.pattern === {}).length >= {count}",
            json!(pattern)
        );
        assert!(
            self.wait_until(&script, Duration::from_secs(10)).await,
            "no {count} request(s) to {pattern:?} were made within 10 s"
        );
    }

    /// Lets the held answers for `pattern` through and stops holding new ones; returns
    /// how many were released.
    pub async fn release_responses(&self, pattern: &str) -> u64 {
        let released = self
            .run(
                "const held = window.__held;
                 held.patterns = held.patterns.filter((p) => p !== arguments[0]);
                 const go = held.waiting.filter((h) => h.pattern === arguments[0]);
                 held.waiting = held.waiting.filter((h) => h.pattern !== arguments[0]);
                 go.forEach((h) => h.release());
                 return go.length;",
                json!([pattern]),
            )
            .await;
        released.as_u64().expect("a count")
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(id) = self.try_find(css).await {
                return id;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let body = self.run("return document.body.innerText", json!([])).await;
                panic!("no element {css:?} after 10 s; the page reads:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.try_find(css).await.is_some()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        let v = self
            .call(reqwest::Method::POST, &format!("/element/{id}/click"), None)
            .await;
        assert!(!Self::failed(&v), "click {css}: {v}");
    }

    /// Clears the field and types `text`, as a user would.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), None)
            .await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({ "text": text })),
            )
            .await;
        assert!(!Self::failed(&v), "type into {css}: {v}");
    }

    /// Presses keys on the focused element (e.g. "\u{E007}" is Enter, "\u{E004}" Tab).
    pub async fn keys(&self, keys: &str) {
        let id = self
            .call(reqwest::Method::GET, "/element/active", None)
            .await[ELEMENT]
            .as_str()
            .expect("a focused element")
            .to_owned();
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({ "text": keys })),
            )
            .await;
        assert!(!Self::failed(&v), "keys: {v}");
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits up to 10 s until the text of `css` contains `wanted`; returns that text.
    pub async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let started = Instant::now();
        loop {
            if self.exists(css).await {
                let text = self.text(css).await;
                if text.contains(wanted) {
                    return text;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    panic!("{css:?} never read {wanted:?}; it reads:\n{text}");
                }
            } else if started.elapsed() > Duration::from_secs(10) {
                let body = self.run("return document.body.innerText", json!([])).await;
                panic!("no {css:?} reading {wanted:?}; the page reads:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a virtual authenticator to the browser (W3C WebAuthn §11, "Add Virtual
    /// Authenticator", which chromedriver implements): CTAP2 over an internal transport,
    /// holding discoverable credentials, verifying its user (as a fingerprint reader would)
    /// and consenting without a prompt. Passkey ceremonies in the page then run against
    /// it for real. Returns its id.
    pub async fn add_virtual_authenticator(&self) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/webauthn/authenticator",
                Some(json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserConsenting": true,
                    "isUserVerified": true,
                })),
            )
            .await;
        assert!(!Self::failed(&v), "adding a virtual authenticator: {v}");
        v.as_str()
            .unwrap_or_else(|| panic!("no authenticator id in {v}"))
            .to_owned()
    }

    /// The credentials the virtual authenticator `id` holds (W3C WebAuthn §11.7:
    /// `credentialId`, `isResidentCredential`, `rpId`, `userHandle` (base64url),
    /// `signCount`, …).
    pub async fn authenticator_credentials(&self, id: &str) -> Vec<Value> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/webauthn/authenticator/{id}/credentials"),
                None,
            )
            .await;
        assert!(!Self::failed(&v), "credentials of authenticator {id}: {v}");
        v.as_array()
            .unwrap_or_else(|| panic!("credentials are not an array: {v}"))
            .clone()
    }

    /// Saves a PNG of the viewport as `target/console-screens/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        let dir = screens_dir();
        std::fs::create_dir_all(&dir).expect("screens dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn quit(self) {
        self.call(reqwest::Method::DELETE, "", None).await;
    }
}
