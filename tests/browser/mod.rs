//! Test harness for the web client: a real headless Chromium driven over WebDriver
//! (chromedriver + fantoccini), and a server on a runtime of its own, so a test can kill it
//! mid-conversation, as a crash would, and start it again on the same port and database.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chat_server::{AppState, Config};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long a page gets to show what a test expects.
pub const WAIT: Duration = Duration::from_secs(20);

/// Set to `require` (CI does) to make a missing browser a failure instead of a skip.
pub const REQUIRE_VAR: &str = "CHAT_BROWSER_TESTS";
/// Set to `docs` to also write the screenshots to `docs/screenshots/`.
pub const SCREENSHOTS_VAR: &str = "CHAT_SCREENSHOTS";

/// The browser and its driver, and axe-core, the accessibility checker run in its pages.
#[derive(Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    pub axe: PathBuf,
}

/// Where `.ci/run` installs axe-core (`npm install --prefix target/axe axe-core@4`); or set
/// `AXE_CORE_JS` to its `axe.min.js`.
fn find_axe() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AXE_CORE_JS") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/axe/node_modules/axe-core/axe.min.js"))
        .filter(|p| p.is_file())
}

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (with the reason printed) when this machine has no
/// browser and the tests are not required.
pub fn tools(test: &str) -> Option<Tools> {
    let chromium = find_program(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]);
    match (chromium, chromedriver, find_axe()) {
        (Some(chromium), Some(chromedriver), Some(axe)) => Some(Tools {
            chromium,
            chromedriver,
            axe,
        }),
        (chromium, chromedriver, _) => {
            let reason = if chromium.is_none() || chromedriver.is_none() {
                let missing = if chromium.is_none() {
                    "chromium"
                } else {
                    "chromedriver"
                };
                format!(
                    "{missing} not found (install Debian's `chromium chromium-driver`, or set \
                     CHROMIUM / CHROMEDRIVER)"
                )
            } else {
                "axe-core not found (`npm install --prefix target/axe axe-core@4`, or set \
                 AXE_CORE_JS)"
                    .to_string()
            };
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "require") {
                panic!("{test}: {REQUIRE_VAR}=require but {reason}");
            }
            // Straight to stderr, past the test harness's capture, so a passing run shows it.
            let _ = writeln!(
                std::io::stderr(),
                "skipping browser test {test}: {reason}; {REQUIRE_VAR}=require fails instead"
            );
            None
        }
    }
}

/// A chromedriver process on a port of its choosing; stops its browsers and exits on drop.
pub struct Driver {
    child: Child,
    port: u16,
    tools: Tools,
}

impl Driver {
    pub fn start(tools: &Tools) -> Driver {
        let mut child = Command::new(&tools.chromedriver)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads on until chromedriver exits, so its output pipe never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(digits.parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(WAIT) {
            Ok(Some(port)) => port,
            other => {
                let _ = child.kill();
                panic!("chromedriver did not report its port: {other:?}");
            }
        };
        Driver {
            child,
            port,
            tools: tools.clone(),
        }
    }

    /// A new desktop browser with a fresh profile and a `width` × `height` viewport.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        self.open(width, height, false).await
    }

    /// A new browser emulating a phone: a `width` × `height` touch screen.
    pub async fn phone(&self, width: u32, height: u32) -> Browser {
        self.open(width, height, true).await
    }

    async fn open(&self, width: u32, height: u32, phone: bool) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--lang=en-US",
        ]
        .map(String::from)
        .into_iter()
        .chain([
            format!("--user-data-dir={}", profile.path().display()),
            // Headless windows have a minimum width and room for a toolbar; the viewport is
            // set exactly by the emulated screen below.
            format!("--window-size={},{}", width.max(500), height + 200),
        ])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.tools.chromium,
                "args": args,
                "mobileEmulation": {
                    "deviceMetrics": {
                        "width": width,
                        "height": height,
                        "pixelRatio": 1.0,
                        "mobile": phone,
                        "touch": phone,
                    },
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("start a browser session");
        Browser {
            client,
            axe: self.tools.axe.clone(),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `/shutdown` makes chromedriver close its browsers before it exits.
        if let Ok(mut s) = StdStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window.
pub struct Browser {
    pub client: Client,
    axe: PathBuf,
    _profile: tempfile::TempDir,
}

/// Whether a value a page script returned means "yes".
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Takes the browser's network away (`offline`) or gives it back, as Chromium's network
    /// emulation does: the page's `navigator.onLine` and its `offline`/`online` events follow.
    pub async fn set_offline(&self, offline: bool) {
        let conditions = json!({"network_conditions": {
            "offline": offline,
            "latency": 0,
            "download_throughput": -1,
            "upload_throughput": -1,
        }});
        self.client
            .issue_cmd(SessionCommand {
                method: warp::http::Method::POST,
                path: "chromium/network_conditions".into(),
                body: Some(conditions.to_string()),
            })
            .await
            .expect("set the network conditions");
    }

    /// Runs the Chrome DevTools Protocol command `cmd` with `params` in this window's tab, as
    /// chromedriver's `goog/cdp/execute` does, and returns its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(SessionCommand {
                method: warp::http::Method::POST,
                path: "goog/cdp/execute".into(),
                body: Some(json!({"cmd": cmd, "params": params}).to_string()),
            })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    /// The title of the browser's tab `handle` (which may be hidden behind another), as the
    /// browser lists its targets.
    pub async fn tab_title(&self, handle: &str) -> String {
        let targets = self.cdp("Target.getTargets", json!({})).await;
        targets["targetInfos"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["targetId"] == handle)
            .and_then(|t| t["title"].as_str())
            .unwrap_or_else(|| panic!("no tab {handle} in {targets}"))
            .to_string()
    }

    /// This window's handle (for Chromium, its tab's target id).
    pub async fn handle(&self) -> String {
        self.client.window().await.expect("window handle").into()
    }

    /// Opens a new tab in front of this one and switches to it; returns its handle.
    pub async fn new_tab(&self) -> String {
        let tab = self.client.new_window(true).await.expect("a new tab");
        self.client
            .switch_to_window(tab.handle.clone())
            .await
            .expect("switch to the new tab");
        tab.handle.into()
    }

    /// Brings tab `handle` to the front and sends the next commands to it.
    pub async fn switch_to(&self, handle: &str) {
        let handle = fantoccini::wd::WindowHandle::try_from(handle).expect("a handle");
        self.client
            .switch_to_window(handle)
            .await
            .expect("switch tabs");
    }

    /// Reloads the page, as the browser's reload button does.
    pub async fn reload(&self) {
        self.client.refresh().await.expect("reload");
    }

    /// The accessible name the browser computes for the element at `css` (what a screen
    /// reader announces), by WebDriver's Get Computed Label.
    pub async fn computed_label(&self, css: &str) -> String {
        let element = self.visible(css).await;
        let label = self
            .client
            .issue_cmd(SessionCommand {
                method: warp::http::Method::GET,
                path: format!("element/{}/computedlabel", &*element.element_id()),
                body: None,
            })
            .await
            .expect("get the computed label");
        label.as_str().unwrap_or_default().to_string()
    }

    /// Runs axe-core's WCAG 2.1 A and AA rules on the page as it is now and fails, listing
    /// them, if any violation is serious or critical. `view` names the page in the message.
    pub async fn audit(&self, view: &str) {
        let axe = std::fs::read_to_string(&self.axe).expect("read axe-core");
        self.js(&format!("if (!window.axe) {{ {axe}\n }}"), vec![])
            .await;
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, {runOnly: {type: 'tag', values: \
                   ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}) \
                 .then(r => done(r.violations \
                   .filter(v => v.impact === 'serious' || v.impact === 'critical') \
                   .map(v => ({id: v.id, impact: v.impact, help: v.help, \
                     nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))) \
                 .catch(e => done([{id: 'axe-error', help: String(e)}]));",
                vec![],
            )
            .await
            .expect("run axe-core");
        assert_eq!(
            found,
            json!([]),
            "{view}: serious or critical accessibility violations"
        );
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("run script")
    }

    /// Re-runs `script` until it returns something truthy, and returns that; fails after
    /// `timeout` with `what` and the last value.
    pub async fn wait_for_within(
        &self,
        timeout: Duration,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.js(script, args.clone()).await;
            if truthy(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.wait_for_within(WAIT, what, script, args).await
    }

    /// The element matching `css` once it exists and is displayed.
    pub async fn visible(&self, css: &str) -> Element {
        self.wait_for(
            &format!("{css} to be visible"),
            "const el = document.querySelector(arguments[0]); \
             return !!el && el.getClientRects().length > 0 && !el.closest('[hidden]');",
            vec![json!(css)],
        )
        .await;
        self.client
            .find(Locator::Css(css))
            .await
            .expect("element exists")
    }

    /// Waits until nothing matching `css` is displayed.
    pub async fn gone(&self, css: &str) {
        self.wait_for(
            &format!("{css} to be hidden"),
            "const el = document.querySelector(arguments[0]); \
             return !el || el.getClientRects().length === 0 || !!el.closest('[hidden]');",
            vec![json!(css)],
        )
        .await;
    }

    pub async fn is_visible(&self, css: &str) -> bool {
        truthy(
            &self
                .js(
                    "const el = document.querySelector(arguments[0]); \
                     return !!el && el.getClientRects().length > 0 && !el.closest('[hidden]');",
                    vec![json!(css)],
                )
                .await,
        )
    }

    pub async fn click(&self, css: &str) {
        self.visible(css).await.click().await.expect("click");
    }

    /// Types into the element matching `css`, as a user would, key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.visible(css).await.send_keys(text).await.expect("type");
    }

    /// Presses keys in whatever element has the focus.
    pub async fn keys(&self, text: &str) {
        self.client
            .active_element()
            .await
            .expect("a focused element")
            .send_keys(text)
            .await
            .expect("send keys");
    }

    /// The texts of the messages in the open room, oldest first.
    pub async fn message_texts(&self) -> Vec<String> {
        let v = self
            .js(
                "return [...document.querySelectorAll('#message-list .msg .text')]\
                 .map(e => e.textContent);",
                vec![],
            )
            .await;
        serde_json::from_value(v).expect("strings")
    }

    /// Waits until the open room shows a message with exactly `text`.
    pub async fn wait_message(&self, text: &str) {
        self.wait_for(
            &format!("message {text:?}"),
            "return [...document.querySelectorAll('#message-list .msg .text')]\
             .some(e => e.textContent === arguments[0]);",
            vec![json!(text)],
        )
        .await;
    }

    /// The open room's id, from the URL fragment.
    pub async fn room_id(&self) -> String {
        let hash = self
            .wait_for(
                "a room in the URL",
                "return location.hash.startsWith('#/c/') && location.hash.slice(4);",
                vec![],
            )
            .await;
        hash.as_str().unwrap().to_string()
    }

    /// Saves a screenshot as `<name>.png` under the test's target directory and, with
    /// `CHAT_SCREENSHOTS=docs`, under `docs/screenshots/`.
    pub async fn screenshot(&self, name: &str) {
        // Let fonts and the last layout settle, so the picture shows what a user sees.
        self.js(
            "return document.fonts.ready.then(() => new Promise(r => \
             requestAnimationFrame(() => requestAnimationFrame(() => r(true)))));",
            vec![],
        )
        .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let mut dirs = vec![Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")];
        if std::env::var(SCREENSHOTS_VAR).is_ok_and(|v| v == "docs") {
            dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        }
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `Enter`, for [`Browser::keys`] and [`Browser::type_into`].
pub fn enter() -> String {
    char::from(Key::Enter).to_string()
}

pub fn tab() -> String {
    char::from(Key::Tab).to_string()
}

/// The server, on a runtime of its own. [`Server::kill`] stops it the way a crash would:
/// every task is dropped and every socket closes at once.
pub struct Server {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    api: crate::common::Client,
}

impl Server {
    /// Starts on `addr` (port 0 for any) with `config`; retries the bind for a moment while a
    /// killed predecessor's socket is still being torn down.
    pub fn start(config: Config, addr: SocketAddr) -> Server {
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match StdListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        // A killed predecessor on the same database lets go of it once its last task is
        // dropped, a moment after `kill`, as a crashed process's lock goes with the process.
        let state = loop {
            let _context = runtime.enter();
            match AppState::with_passwords(
                config.clone(),
                chat_server::passwords::cheap_passwords(),
            ) {
                Ok(state) => break state,
                Err(e) if e.to_string().contains("already served") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("state: {e:#}"),
            }
        };
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            chat_server::run(state, listener, std::future::pending())
                .await
                .expect("server");
        });
        Server {
            addr,
            runtime: Some(runtime),
            api: crate::common::TestServer::client_for(&addr.to_string()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops everything at once, as a crash would.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// A REST call; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api.call(method, path, token, body).await
    }

    /// Signs up `username` with `name` and the password [`password`] gives; returns
    /// `(user id, token)`.
    pub async fn user(&self, username: &str, name: &str) -> (i64, String) {
        let (status, user) = self
            .call(
                "POST",
                "/api/v1/signup/",
                None,
                Some(json!({"username": username, "password": password(username), "first_name": name})),
            )
            .await;
        assert_eq!(status, 201, "signup: {user}");
        let (status, login) = self
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": username, "password": password(username)})),
            )
            .await;
        assert_eq!(status, 200, "login: {login}");
        (
            user["id"].as_i64().unwrap(),
            login["token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn post_message(&self, room: &str, token: &str, content: &str) -> Value {
        let (status, message) = self
            .call(
                "POST",
                &format!("/api/v1/chat/{room}/"),
                Some(token),
                Some(json!({"content": content})),
            )
            .await;
        assert_eq!(status, 201, "post: {message}");
        message
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub fn password(username: &str) -> String {
    format!("{username}-secret-pw")
}

/// `config` serving the web client from `dir` (`[web] dir`) instead of the embedded copy.
pub fn with_web_dir(mut config: Config, dir: &Path) -> Config {
    config.web.dir = Some(dir.to_path_buf());
    config
}

/// A copy of the client (`web/`) in a new directory, with `script` appended to `app.js`: a
/// client that differs from the embedded one, for a server to serve with [`with_web_dir`].
pub fn changed_client(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("client dir");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for entry in std::fs::read_dir(&web).expect("web/") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).expect("copy");
    }
    let app = dir.path().join("app.js");
    let mut code = std::fs::read_to_string(&app).expect("app.js");
    code.push_str(script);
    std::fs::write(app, code).expect("write app.js");
    dir
}

/// A test configuration: a throwaway in-memory database unless `db` is given.
pub fn config(db: Option<&Path>) -> Config {
    let mut config = Config::default();
    config.server.db = db.map_or(":memory:".into(), |p| p.display().to_string());
    config.server.read_connections = 2;
    config
}

/// Signs up through the page's own form; returns once the chat screen shows.
pub async fn sign_up(browser: &Browser, server: &Server, username: &str, name: &str) {
    browser.goto(&server.url("/")).await;
    browser.click("#to-signup").await;
    browser.type_into("#signup-first-name", name).await;
    browser.type_into("#signup-username", username).await;
    browser
        .type_into("#signup-password", &password(username))
        .await;
    browser.click("#signup-submit").await;
    browser.visible("#sidebar").await;
}

/// Logs in through the page's form; returns once the chat screen shows.
pub async fn log_in(browser: &Browser, server: &Server, username: &str) {
    browser.goto(&server.url("/")).await;
    browser.type_into("#login-username", username).await;
    browser
        .type_into(
            "#login-password",
            &format!("{}{}", password(username), enter()),
        )
        .await;
    browser.visible("#sidebar").await;
}

/// A WebDriver command of the session that fantoccini has no method for: `method` on
/// `/session/{id}/{path}`.
#[derive(Debug)]
struct SessionCommand {
    method: warp::http::Method,
    path: String,
    body: Option<String>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (warp::http::Method, Option<String>) {
        (self.method.clone(), self.body.clone())
    }
}
