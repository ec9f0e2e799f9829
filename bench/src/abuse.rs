//! The abuse scenario: five bounded resource-exhaustion attacks on chat-server, each against a
//! fresh server process that runs with the server's default abuse limits (SECURITY.md, "Abuse
//! bounds"; `[limits]` in config.example.toml), only password hashing made cheap.
//!
//! 1. rooms: one user creates rooms with a victim in them in a tight loop; then the victim
//!    lists their rooms.
//! 2. descriptors: thousands of keep-alive connections from one address.
//! 3. presence churn: one user opens and closes a room socket in a loop while the other
//!    members watch for presence events.
//! 4. signups: accounts created in a loop from one address.
//! 5. replays: `/ws/?since=0` sockets of a user in thousands of rooms, resumed until they have
//!    every message.
//!
//! During each attack a legitimate user (the probe) keeps requesting in a closed loop from an
//! address of its own, and the server's RSS and open descriptors are sampled every 100 ms. Each
//! attack records the peaks, the probe's p99 during the attack next to its p99 just before, the
//! attack's own counts and the refusals the server counted in `/metrics`. The RSS samples of all
//! five are drawn in one SVG picture.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::child::Server;
use crate::load::{Percentiles, new_histogram};
use crate::net::{Http, connect_tcp_from, connect_ws, connect_ws_from};
use crate::plot;
use crate::suite::{Env, Recorder, start_chat};
use crate::sys;

/// The probe's own source address. The setup's clients rotate over 127.0.0.2 ..= 127.0.0.201
/// (see `net`); the probe and every attacker use addresses above that range, so no
/// per-address bound an attacker trips is shared with the probe.
const PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 240);
/// The room creator's address.
const ROOMS_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 241);
/// The presence churner's first address of `PRESENCE_ADDRESSES`, used in turn so that
/// thousands of short connections do not run one address out of ephemeral ports.
const PRESENCE_ATTACKER: u8 = 242;
const PRESENCE_ADDRESSES: u8 = 8;
/// The one address all the descriptor attack's connections come from.
const FDS_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 250);
const SIGNUP_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 251);
const REPLAY_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 252);

/// Messages in the probe's room; it reads them as one page of `?limit=50`. Fewer than the
/// default `send_burst` (40), so setting them up is never rate limited.
const PROBE_ROOM_MESSAGES: usize = 30;
/// How often the server's RSS and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for one answer before a client counts it as an error (or a timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The abuse scenario's sizes: `full` for `bench/run`, `smoke` for `--smoke`.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseSizes {
    /// How long each attack lasts.
    pub attack_secs: f64,
    /// How long the probe is measured before each attack.
    pub baseline_secs: f64,
    /// How long the victim lists their rooms after the rooms attack.
    pub victim_secs: f64,
    /// Keep-alive connections the room creator uses at once.
    pub room_attackers: usize,
    /// Concurrent `GET /api/v1/chats/` loops of the victim.
    pub victim_readers: usize,
    /// Keep-alive connections the descriptor attack opens, all from one address.
    pub fds_connections: usize,
    /// Each of them sends `GET /healthz` on open and then this often.
    pub fds_request_every_secs: f64,
    /// Users holding a socket to the room the presence churner flaps in.
    pub observers: usize,
    /// Rooms of the replaying user, and messages seeded in each.
    pub replay_rooms: usize,
    pub replay_messages_per_room: usize,
    /// Concurrent `?since=` sockets of the replaying user.
    pub replay_sockets: usize,
    /// Whether the RSS picture is also copied to `bench/abuse-rss.svg` (full sizes only).
    pub keep_picture: bool,
}

impl AbuseSizes {
    pub fn full() -> AbuseSizes {
        AbuseSizes {
            attack_secs: 10.0,
            baseline_secs: 3.0,
            victim_secs: 3.0,
            room_attackers: 4,
            victim_readers: 8,
            fds_connections: 3000,
            fds_request_every_secs: 4.0,
            observers: 50,
            replay_rooms: 2000,
            replay_messages_per_room: 50,
            replay_sockets: 5,
            keep_picture: true,
        }
    }

    pub fn smoke() -> AbuseSizes {
        AbuseSizes {
            attack_secs: 1.5,
            baseline_secs: 1.0,
            victim_secs: 1.0,
            room_attackers: 4,
            victim_readers: 8,
            fds_connections: 300,
            fds_request_every_secs: 0.5,
            observers: 10,
            replay_rooms: 200,
            replay_messages_per_room: 50,
            replay_sockets: 5,
            keep_picture: false,
        }
    }

    fn attack(&self) -> Duration {
        Duration::from_secs_f64(self.attack_secs)
    }
}

/// Runs the five attacks, each on a fresh server, and draws their RSS over time.
pub(crate) async fn run(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<()> {
    let mut series = Vec::new();
    eprintln!("  abuse 1/5: rooms with a victim in each, created in a loop");
    series.push((
        "rooms",
        rooms(rec, env, sizes).await.context("rooms attack")?,
    ));
    eprintln!(
        "  abuse 2/5: {} keep-alive connections from one address",
        sizes.fds_connections
    );
    series.push((
        "descriptors",
        descriptors(rec, env, sizes)
            .await
            .context("descriptor attack")?,
    ));
    eprintln!(
        "  abuse 3/5: presence churn before {} observers",
        sizes.observers
    );
    series.push((
        "presence churn",
        presence(rec, env, sizes).await.context("presence attack")?,
    ));
    eprintln!("  abuse 4/5: signups in a loop from one address");
    series.push((
        "signups",
        signups(rec, env, sizes).await.context("signup attack")?,
    ));
    eprintln!(
        "  abuse 5/5: {} replays of {} rooms x {} messages",
        sizes.replay_sockets, sizes.replay_rooms, sizes.replay_messages_per_room
    );
    series.push((
        "replays",
        replays(rec, env, sizes).await.context("replay attack")?,
    ));

    let svg = rss_svg(&series, rec.run());
    let path = env.work_dir.join("abuse-rss.svg");
    std::fs::write(&path, &svg).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("  abuse: RSS picture written to {}", path.display());
    if sizes.keep_picture {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("abuse-rss.svg");
        std::fs::write(&kept, &svg).with_context(|| format!("writing {}", kept.display()))?;
        eprintln!("  abuse: RSS picture copied to {}", kept.display());
    }
    Ok(())
}

/// The config file of the abuse scenario: every `[limits]` option at its default, cheap password
/// hashing so the setup's signups are quick, and the suite's log level.
fn write_abuse_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("abuse.toml");
    std::fs::write(
        &path,
        r#"# chat-server configuration for the abuse scenario (written by chat-bench): the default
# abuse limits, with cheap password hashing.
[server]
log_level = "warn,chat_server=info,chat_server::access=warn"

[auth]
argon2_memory_kib = 8
argon2_iterations = 1
argon2_parallelism = 1
"#,
    )?;
    Ok(path)
}

/// A signed-up, logged-in user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) token: String,
}

/// The password of the `i`-th user of `users`.
pub(crate) fn password(i: usize) -> String {
    format!("abuse-password-{i}")
}

/// Signs up and logs in `n` users named `<prefix><i>`, four at a time, each on a connection of
/// its own: the setup's signups spread over the rotating source addresses, one or two on each,
/// far from `signups_per_ip_per_hour`.
pub(crate) async fn users(server: SocketAddr, prefix: &str, n: usize) -> Result<Vec<User>> {
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut http = Http::connect(server).await?;
            let username = format!("{prefix}{i}");
            let password = password(i);
            let user = http
                .json(
                    Method::POST,
                    "/api/v1/signup/",
                    None,
                    &json!({"username": username, "password": password,
                            "first_name": format!("{prefix} {i}")}),
                )
                .await?;
            let login = http
                .json(
                    Method::POST,
                    "/api/v1/login/",
                    None,
                    &json!({"username": username, "password": password}),
                )
                .await?;
            Ok::<_, anyhow::Error>(User {
                id: user["id"].as_i64().context("user id")?,
                token: login["token"].as_str().context("token")?.to_string(),
            })
        })
        .buffered(4)
        .try_collect()
        .await
}

/// Creates a room of `owner` with `members` (user ids) and returns its id.
pub(crate) async fn create_room(
    server: SocketAddr,
    owner: &User,
    members: &[i64],
    name: &str,
) -> Result<String> {
    let mut http = Http::connect(server).await?;
    let room = http
        .json(
            Method::POST,
            "/api/v1/chats/",
            Some(&owner.token),
            &json!({"members": members, "name": name}),
        )
        .await?;
    Ok(room["room_id"].as_str().context("room_id")?.to_string())
}

/// A fresh chat-server process for one attack, with the probe's user and room set up.
struct Fresh {
    server: Server,
    config: PathBuf,
    db: PathBuf,
    probe: User,
    probe_room: String,
}

impl Fresh {
    /// Starts a server on a new database `abuse-<name>.db` and sets up the probe: a user with
    /// a room of `PROBE_ROOM_MESSAGES` messages shared with one other user.
    async fn start(env: &Env, name: &str) -> Result<Fresh> {
        let config = write_abuse_config(&env.work_dir)?;
        let db = env.work_dir.join(format!("abuse-{name}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let server = start_chat(env, &config, &db).await?;
        let addr = server.addr;
        let mut people = users(addr, "probe", 2).await?.into_iter();
        let (probe, partner) = (
            people.next().context("probe user")?,
            people.next().context("probe partner")?,
        );
        let probe_room = create_room(addr, &probe, &[partner.id], "probe").await?;
        let mut http = Http::connect(addr).await?;
        for i in 0..PROBE_ROOM_MESSAGES {
            http.json(
                Method::POST,
                &format!("/api/v1/chat/{probe_room}/"),
                Some(&probe.token),
                &json!({"content": format!("probe message {i} lorem ipsum dolor sit amet")}),
            )
            .await?;
        }
        Ok(Fresh {
            server,
            config,
            db,
            probe,
            probe_room,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Stops the server, runs `change` on its database, and starts a new process on it.
    async fn restart<T>(
        self,
        env: &Env,
        change: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<(Fresh, T)> {
        self.server.stop().await?;
        let changed = change(&self.db)?;
        let server = start_chat(env, &self.config, &self.db).await?;
        Ok((Fresh { server, ..self }, changed))
    }

    /// Ends an attack's server: checks that a new client still gets an answer, records the
    /// refusals of `limits` (`(limit, metric)`) the server counted, and stops it. A server that
    /// answers no new connection, or does not stop on SIGTERM, is recorded as such (and killed),
    /// not an error: the next attacks still run.
    async fn finish(
        self,
        rec: &mut Recorder<'_>,
        scenario: &'static str,
        limits: &[(&str, &'static str)],
    ) -> Result<()> {
        let addr = self.addr();
        let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut http = Http::connect(addr).await?;
            let (status, _) = http.request(Method::GET, "/healthz", None, None).await?;
            anyhow::ensure!(status.is_success(), "/healthz: HTTP {status}");
            Ok(())
        })
        .await;
        let new_client = match answered {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                eprintln!("    a new client after the attack failed: {e:#}");
                false
            }
            Err(_) => {
                eprintln!(
                    "    a new client after the attack got no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                );
                false
            }
        };
        rec.figure(scenario, "new_client_failures", f64::from(!new_client));
        match tokio::time::timeout(REQUEST_TIMEOUT, refusals(addr)).await {
            Ok(Ok(counts)) => {
                for &(limit, metric) in limits {
                    let value = counts.get(limit).copied().with_context(|| {
                        format!("/metrics has no chat_refusals_total{{limit=\"{limit}\"}}")
                    })?;
                    rec.figure(scenario, metric, value);
                }
            }
            Ok(Err(e)) => eprintln!("    /metrics failed, refusals not recorded: {e:#}"),
            Err(_) => eprintln!("    /metrics unanswered, refusals not recorded"),
        }
        let stopped = self.server.stop().await;
        if let Err(e) = &stopped {
            eprintln!("    {e:#}: killed");
        }
        rec.figure(scenario, "shutdown_failures", f64::from(stopped.is_err()));
        Ok(())
    }
}

/// What the probe measured in one window.
struct ProbeWindow {
    latency: Percentiles,
    errors: u64,
}

#[derive(Default)]
struct ProbeShared {
    latency: Mutex<Option<Histogram<u64>>>,
    errors: AtomicU64,
    /// When the request being answered now was sent.
    in_flight: Mutex<Option<Instant>>,
}

/// The legitimate user: from its own address, in a closed loop on one keep-alive connection,
/// alternately `GET /healthz` and a page of its room's history. Stops by itself at `until`,
/// or when dropped.
struct Probe {
    shared: Arc<ProbeShared>,
    task: JoinHandle<()>,
}

impl Probe {
    fn start(fresh: &Fresh, until: Instant) -> Probe {
        let shared = Arc::new(ProbeShared::default());
        *lock(&shared.latency) = Some(new_histogram());
        let task = tokio::spawn(probe_loop(
            fresh.addr(),
            fresh.probe.token.clone(),
            format!("/api/v1/chat/{}/?limit=50", fresh.probe_room),
            shared.clone(),
            until,
        ));
        Probe { shared, task }
    }

    /// The latencies and errors since the last call. A request still unanswered counts with
    /// the time it has waited so far, so a probe stuck for a whole window does not read as 0.
    fn take(&self) -> ProbeWindow {
        let mut latency = lock(&self.shared.latency)
            .replace(new_histogram())
            .unwrap_or_else(new_histogram);
        if let Some(sent) = *lock(&self.shared.in_flight) {
            latency.saturating_record(sent.elapsed().as_micros() as u64);
        }
        ProbeWindow {
            latency: Percentiles::of(&latency),
            errors: self.shared.errors.swap(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn probe_loop(
    server: SocketAddr,
    token: String,
    history: String,
    shared: Arc<ProbeShared>,
    until: Instant,
) {
    let mut http: Option<Http> = None;
    let mut healthz = false;
    while Instant::now() < until {
        let conn = match &mut http {
            Some(conn) => conn,
            None => match Http::connect_from(server, PROBE_ADDR).await {
                Ok(conn) => http.insert(conn),
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        healthz = !healthz;
        let (path, auth) = if healthz {
            ("/healthz", None)
        } else {
            (history.as_str(), Some(token.as_str()))
        };
        let sent = Instant::now();
        *lock(&shared.in_flight) = Some(sent);
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, conn.request(Method::GET, path, auth, None))
                .await;
        *lock(&shared.in_flight) = None;
        if let Some(h) = lock(&shared.latency).as_mut() {
            h.saturating_record(sent.elapsed().as_micros() as u64);
        }
        match answer {
            Ok(Ok((status, _))) if status.is_success() => {}
            Ok(Ok(_)) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) | Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                http = None;
            }
        }
    }
}

/// The server's RSS and open descriptors at one moment of an attack.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the attack began.
    t_s: f64,
    rss_kib: u64,
    fds: usize,
}

/// Samples a process's RSS and descriptors every `SAMPLE_EVERY` until finished (or for at
/// most `limit`).
struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Takes the first sample now, before the attack's first move, then samples in the
    /// background.
    fn start(pid: u32, limit: Duration) -> Sampler {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let began = Instant::now();
        let mut samples = Vec::new();
        if let (Ok(rss_kib), Ok(fds)) = (sys::rss_kib(pid), sys::open_fds(pid)) {
            samples.push(Sample {
                t_s: 0.0,
                rss_kib,
                fds,
            });
        }
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = &mut stopped => true,
                    _ = tick.tick() => began.elapsed() >= limit,
                };
                if let (Ok(rss_kib), Ok(fds)) = (sys::rss_kib(pid), sys::open_fds(pid)) {
                    samples.push(Sample {
                        t_s: began.elapsed().as_secs_f64(),
                        rss_kib,
                        fds,
                    });
                }
                if last {
                    return samples;
                }
            }
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The measurements around one attack: the probe's baseline just before it, then the probe,
/// RSS and descriptors during it.
struct Watch {
    probe: Probe,
    before: ProbeWindow,
    sampler: Sampler,
}

impl Watch {
    /// Starts the probe, measures it for `baseline_secs`, then starts sampling: the attack
    /// begins when this returns.
    async fn begin(fresh: &Fresh, sizes: &AbuseSizes) -> Watch {
        let baseline = Duration::from_secs_f64(sizes.baseline_secs);
        // Bounded however the attack goes: no attack runs two minutes past its time.
        let until = Instant::now() + baseline + sizes.attack() + Duration::from_secs(120);
        let probe = Probe::start(fresh, until);
        tokio::time::sleep(baseline).await;
        let before = probe.take();
        let sampler = Sampler::start(
            fresh.server.pid(),
            sizes.attack() + Duration::from_secs(120),
        );
        Watch {
            probe,
            before,
            sampler,
        }
    }

    /// Ends the measurements and records the peaks and the probe's figures under `scenario`.
    async fn end(self, rec: &mut Recorder<'_>, scenario: &'static str) -> Vec<Sample> {
        let during = self.probe.take();
        drop(self.probe);
        let samples = self.sampler.finish().await;
        let rss_peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let fds_peak = samples.iter().map(|s| s.fds).max().unwrap_or(0);
        if let Some(first) = samples.first() {
            rec.figure(scenario, "rss_start_mib", first.rss_kib as f64 / 1024.0);
        }
        rec.figure(scenario, "rss_peak_mib", rss_peak as f64 / 1024.0);
        rec.figure(scenario, "fds_peak", fds_peak as f64);
        rec.figure(scenario, "probe_p99_before_ms", self.before.latency.p99_ms);
        rec.figure(scenario, "probe_p99_ms", during.latency.p99_ms);
        if self.before.latency.p99_ms > 0.0 {
            rec.figure(
                scenario,
                "probe_p99_ratio",
                during.latency.p99_ms / self.before.latency.p99_ms,
            );
        }
        rec.figure(scenario, "probe_requests", during.latency.count as f64);
        rec.figure(
            scenario,
            "probe_errors",
            (self.before.errors + during.errors) as f64,
        );
        rec.detail(
            scenario,
            json!({
                "probe_before": self.before.latency,
                "probe_during": during.latency,
                "samples": samples,
            }),
        );
        samples
    }
}

/// `chat_refusals_total` from the server's `/metrics`, by `limit`.
async fn refusals(server: SocketAddr) -> Result<HashMap<String, f64>> {
    let mut http = Http::connect(server).await?;
    let (status, body) = http.request(Method::GET, "/metrics", None, None).await?;
    anyhow::ensure!(status.is_success(), "/metrics: HTTP {status}");
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("chat_refusals_total{limit=\"")?;
            let (limit, value) = rest.split_once("\"}")?;
            Some((limit.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The status and `Retry-After` of a refused WebSocket handshake, if that is what `e` is.
fn refused_handshake(e: &anyhow::Error) -> Option<(u16, Option<f64>)> {
    match e.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Http(response) => Some((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        )),
        _ => None,
    }
}

/// Sums counters of several tasks.
fn join_counts<const N: usize>(
    all: Vec<Result<[u64; N], tokio::task::JoinError>>,
) -> Result<[u64; N]> {
    let mut sum = [0u64; N];
    for counts in all {
        for (s, c) in sum.iter_mut().zip(counts?) {
            *s += c;
        }
    }
    Ok(sum)
}

/// Attack 1: an attacker creates rooms with a victim in each in a tight loop on a few
/// keep-alive connections; then the victim lists their rooms from 8 concurrent loops.
async fn rooms(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<Vec<Sample>> {
    const S: &str = "abuse_rooms";
    let fresh = Fresh::start(env, "rooms").await?;
    let addr = fresh.addr();
    let mut people = users(addr, "rooms", 2).await?.into_iter();
    let attacker = people.next().context("attacker")?;
    let victim = people.next().context("victim")?;

    let watch = Watch::begin(&fresh, sizes).await;
    let began = Instant::now();
    let deadline = began + sizes.attack();
    let tasks: Vec<_> = (0..sizes.room_attackers)
        .map(|t| {
            let (token, victim) = (attacker.token.clone(), victim.id);
            tokio::spawn(async move {
                // 201, 429, 403, anything else (a connection error included).
                let mut counts = [0u64; 4];
                let mut http: Option<Http> = None;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let conn = match &mut http {
                        Some(conn) => conn,
                        None => match Http::connect_from(addr, ROOMS_ATTACKER).await {
                            Ok(conn) => http.insert(conn),
                            Err(_) => {
                                counts[3] += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    n += 1;
                    let body = json!({"members": [victim], "name": format!("spam {t}-{n}")});
                    let answer = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        conn.request(Method::POST, "/api/v1/chats/", Some(&token), Some(&body)),
                    )
                    .await;
                    match answer {
                        Ok(Ok((status, _))) => match status.as_u16() {
                            201 => counts[0] += 1,
                            429 => counts[1] += 1,
                            403 => counts[2] += 1,
                            _ => counts[3] += 1,
                        },
                        Ok(Err(_)) | Err(_) => {
                            counts[3] += 1;
                            http = None;
                        }
                    }
                }
                counts
            })
        })
        .collect();
    let [created, limited, forbidden, other] =
        join_counts(futures_util::future::join_all(tasks).await)?;
    let seconds = began.elapsed().as_secs_f64();
    let samples = watch.end(rec, S).await;
    rec.figure(S, "created_201", created as f64);
    rec.figure(S, "refused_429", limited as f64);
    rec.figure(S, "refused_403", forbidden as f64);
    rec.figure(S, "other", other as f64);
    rec.figure(
        S,
        "attempts_per_s",
        (created + limited + forbidden + other) as f64 / seconds,
    );
    // The victim's room list, from 8 concurrent loops on connections of their own.
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(sizes.victim_secs);
    let mut readers = Vec::new();
    for _ in 0..sizes.victim_readers {
        let mut http = Http::connect(addr).await?;
        let token = victim.token.clone();
        readers.push(tokio::spawn(async move {
            let mut latency = new_histogram();
            let (mut lists, mut errors, mut bytes, mut rooms) = (0u64, 0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    http.request(Method::GET, "/api/v1/chats/", Some(&token), None),
                )
                .await;
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                match answer {
                    Ok(Ok((status, body))) if status.is_success() => {
                        lists += 1;
                        bytes += body.len() as u64;
                        if rooms == 0 {
                            rooms = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                                .map_or(0, |r| r.len() as u64);
                        }
                    }
                    Ok(Ok(_)) => errors += 1,
                    Ok(Err(e)) => return Err(e.context("the victim's room list")),
                    Err(_) => anyhow::bail!("the victim's room list: no answer within 10 s"),
                }
            }
            Ok::<_, anyhow::Error>((latency, lists, errors, bytes, rooms))
        }));
    }
    let mut latency = new_histogram();
    let (mut lists, mut errors, mut bytes, mut rooms) = (0, 0, 0, 0);
    for reader in readers {
        let (h, l, e, b, r) = reader.await??;
        latency.add(&h).expect("same bounds");
        lists += l;
        errors += e;
        bytes += b;
        rooms = rooms.max(r);
    }
    let seconds = began.elapsed().as_secs_f64();
    let latency = Percentiles::of(&latency);
    rec.figure(S, "victim_list_p50_ms", latency.p50_ms);
    rec.figure(S, "victim_list_p99_ms", latency.p99_ms);
    rec.figure(S, "victim_lists_per_s", lists as f64 / seconds);
    rec.figure(
        S,
        "victim_list_bytes",
        if lists > 0 {
            bytes as f64 / lists as f64
        } else {
            0.0
        },
    );
    rec.figure(S, "victim_list_rooms", rooms as f64);
    rec.figure(S, "victim_errors", errors as f64);
    fresh
        .finish(
            rec,
            S,
            &[
                ("rooms_created_per_user", "refusals_rooms_created"),
                ("max_rooms_per_user", "refusals_rooms_per_user"),
                ("max_rooms_added_by_one_user", "refusals_added_by_one_user"),
            ],
        )
        .await?;
    Ok(samples)
}

/// How one raw HTTP/1.1 exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Status(u16),
    /// The connection ended before a whole response.
    Closed,
    TimedOut,
}

/// The status and total length (head and body) of the response at the start of `buf`, once
/// it is all there.
fn parse_response(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= end + length).then_some((status, end + length))
}

/// Sends `request` on a raw connection and reads the response. A response the server wrote
/// before reading anything (its refusal at the connection cap) is read even if sending failed.
async fn raw_exchange(stream: &mut TcpStream, request: &[u8]) -> Reply {
    let _ = stream.write_all(request).await;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        if let Some((status, _)) = parse_response(&buf) {
            return Reply::Status(status);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Reply::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => return Reply::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The descriptor attack's counts, shared by its connections.
#[derive(Default)]
struct FdCounts {
    opened: AtomicU64,
    connect_errors: AtomicU64,
    /// Connections whose first request was answered 200.
    answered_200: AtomicU64,
    /// Connections answered 429 (the server's refusal at its cap), on open or later.
    refused_429: AtomicU64,
    /// Connections the server closed without a 429 (shed as idle, or otherwise).
    closed_by_server: AtomicU64,
    other_status: AtomicU64,
    timeouts: AtomicU64,
    /// Requests answered 200 after the first.
    repeats_200: AtomicU64,
    open_now: AtomicU64,
}

impl FdCounts {
    /// Counts how a request on a held connection ended (`first`: the one sent on open);
    /// true if the connection is still usable.
    fn count(&self, reply: Reply, first: bool) -> bool {
        let counter = match reply {
            Reply::Status(200) if first => &self.answered_200,
            Reply::Status(200) => &self.repeats_200,
            Reply::Status(429) => &self.refused_429,
            Reply::Status(_) => &self.other_status,
            Reply::Closed => &self.closed_by_server,
            Reply::TimedOut => &self.timeouts,
        };
        bump(counter);
        reply == Reply::Status(200)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Attack 2: keep-alive connections from one address, each sending `GET /healthz` on open and
/// then every few seconds, opened as fast as the server answers (64 opening at once).
async fn descriptors(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<Vec<Sample>> {
    const S: &str = "abuse_fds";
    let fresh = Fresh::start(env, "fds").await?;
    let addr = fresh.addr();
    let watch = Watch::begin(&fresh, sizes).await;
    let began = Instant::now();
    let deadline = began + sizes.attack();
    let counts = Arc::new(FdCounts::default());
    let gate = Arc::new(Semaphore::new(64));
    let request: Arc<[u8]> = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        .into_bytes()
        .into();
    let every = Duration::from_secs_f64(sizes.fds_request_every_secs);
    let tasks: Vec<JoinHandle<()>> = (0..sizes.fds_connections)
        .map(|_| {
            let (counts, gate, request) = (counts.clone(), gate.clone(), request.clone());
            tokio::spawn(async move {
                let Ok(permit) = gate.acquire_owned().await else {
                    return;
                };
                if Instant::now() >= deadline {
                    return;
                }
                let mut stream = match connect_tcp_from(addr, FDS_ATTACKER).await {
                    Ok(stream) => stream,
                    Err(_) => {
                        bump(&counts.connect_errors);
                        return;
                    }
                };
                bump(&counts.opened);
                counts.open_now.fetch_add(1, Ordering::Relaxed);
                let mut held = counts.count(raw_exchange(&mut stream, &request).await, true);
                drop(permit);
                // Then a request every `every`, from a random phase, noticing a close between.
                let mut next = Instant::now() + every.mul_f64(rand::random_range(0.0..1.0));
                while held {
                    let mut byte = [0u8; 1];
                    tokio::select! {
                        () = tokio::time::sleep_until(next.min(deadline).into()) => {}
                        _ = stream.read(&mut byte) => {
                            bump(&counts.closed_by_server);
                            break;
                        }
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    held = counts.count(raw_exchange(&mut stream, &request).await, false);
                    next += every;
                }
                counts.open_now.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    tokio::time::sleep_until(deadline.into()).await;
    let held_at_end = counts.open_now.load(Ordering::Relaxed);
    let samples = watch.end(rec, S).await;
    if let Some(first) = samples.first() {
        let peak = samples.iter().map(|s| s.fds).max().unwrap_or(0);
        rec.figure(
            S,
            "fds_above_start_peak",
            peak.saturating_sub(first.fds) as f64,
        );
    }
    // Every connection task ends by itself at the deadline, or within a request's timeout.
    let grace = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    for task in tasks {
        if tokio::time::timeout_at(grace, task).await.is_err() {
            break;
        }
    }
    let c = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    rec.figure(S, "connections_opened", c(&counts.opened));
    rec.figure(S, "connect_errors", c(&counts.connect_errors));
    rec.figure(S, "answered_200", c(&counts.answered_200));
    rec.figure(S, "refused_429", c(&counts.refused_429));
    rec.figure(S, "closed_by_server", c(&counts.closed_by_server));
    rec.figure(S, "other_status", c(&counts.other_status));
    rec.figure(S, "timeouts", c(&counts.timeouts));
    rec.figure(S, "repeat_requests_200", c(&counts.repeats_200));
    rec.figure(S, "held_at_end", held_at_end as f64);
    fresh
        .finish(
            rec,
            S,
            &[
                ("max_tcp_connections_per_ip", "refusals_tcp_per_ip"),
                ("max_tcp_connections", "refusals_tcp_total"),
                ("idle_connection_shed", "idle_connections_shed"),
            ],
        )
        .await?;
    Ok(samples)
}

/// Attack 3: observers, each its own user, hold sockets to one room; the attacker, a member
/// too, opens a socket to the room, waits for its `hello` and closes it, in a loop.
async fn presence(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<Vec<Sample>> {
    const S: &str = "abuse_presence";
    let fresh = Fresh::start(env, "presence").await?;
    let addr = fresh.addr();
    let mut people = users(addr, "presence", 1 + sizes.observers).await?;
    let attacker = people.remove(0);
    let ids: Vec<i64> = people.iter().map(|u| u.id).collect();
    let room = create_room(addr, &attacker, &ids, "presence").await?;

    let frames = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(sizes.baseline_secs) + sizes.attack();
    let mut observers = Vec::new();
    for user in &people {
        let mut ws = connect_ws(addr, &format!("/ws/chat/{room}/?token={}", user.token)).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"hello\"") => {}
            other => anyhow::bail!("observer: expected hello, got {other:?}"),
        }
        let (frames, dropped) = (frames.clone(), dropped.clone());
        observers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout_at(until.into(), ws.next()).await {
                    Err(_) => return,
                    Ok(Some(Ok(Message::Text(t)))) => {
                        if t.as_str().contains("\"type\":\"presence\"") {
                            frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    // The baseline also lets the observers' own presence events settle.
    let watch = Watch::begin(&fresh, sizes).await;
    let frames_before = frames.load(Ordering::Relaxed);
    let began = Instant::now();
    let deadline = began + sizes.attack();
    let path = format!("/ws/chat/{room}/?token={}", attacker.token);
    let (mut accepted, mut refused, mut other) = (0u64, 0u64, 0u64);
    let mut k = 0u8;
    while Instant::now() < deadline {
        k = k.wrapping_add(1);
        let source = Ipv4Addr::new(127, 0, 0, PRESENCE_ATTACKER + k % PRESENCE_ADDRESSES);
        match tokio::time::timeout(REQUEST_TIMEOUT, connect_ws_from(addr, &path, source)).await {
            Ok(Ok(mut ws)) => {
                accepted += 1;
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, ws.next()).await;
                let _ = ws.close(None).await;
                // Until the server's close arrives: the socket is gone on its side too.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
            Ok(Err(e)) if refused_handshake(&e).is_some_and(|(status, _)| status == 429) => {
                refused += 1;
            }
            Ok(Err(_)) | Err(_) => {
                other += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let presence_frames = frames.load(Ordering::Relaxed) - frames_before;
    let samples = watch.end(rec, S).await;
    for observer in observers {
        observer.abort();
    }
    let observers = sizes.observers as f64;
    rec.figure(S, "connects_accepted", accepted as f64);
    rec.figure(S, "connects_refused_429", refused as f64);
    rec.figure(S, "connects_other", other as f64);
    rec.figure(
        S,
        "connects_per_s",
        (accepted + refused + other) as f64 / seconds,
    );
    rec.figure(S, "presence_frames", presence_frames as f64);
    rec.figure(
        S,
        "presence_per_observer",
        presence_frames as f64 / observers,
    );
    rec.figure(
        S,
        "presence_per_observer_per_s",
        presence_frames as f64 / observers / seconds,
    );
    rec.figure(
        S,
        "observers_dropped",
        dropped.load(Ordering::Relaxed) as f64,
    );
    fresh
        .finish(
            rec,
            S,
            &[
                ("ws_connects_per_user", "refusals_ws_per_user"),
                ("ws_connects_per_ip", "refusals_ws_per_ip"),
            ],
        )
        .await?;
    Ok(samples)
}

/// Attack 4: signups in a loop from one address, on one keep-alive connection.
async fn signups(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<Vec<Sample>> {
    const S: &str = "abuse_signups";
    let fresh = Fresh::start(env, "signups").await?;
    let addr = fresh.addr();
    let watch = Watch::begin(&fresh, sizes).await;
    let began = Instant::now();
    let deadline = began + sizes.attack();
    let (mut created, mut limited, mut other) = (0u64, 0u64, 0u64);
    let mut http: Option<Http> = None;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let conn = match &mut http {
            Some(conn) => conn,
            None => match Http::connect_from(addr, SIGNUP_ATTACKER).await {
                Ok(conn) => http.insert(conn),
                Err(_) => {
                    other += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        n += 1;
        let body =
            json!({"username": format!("spam{n}"), "password": format!("spam-password-{n}")});
        let answer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            conn.request(Method::POST, "/api/v1/signup/", None, Some(&body)),
        )
        .await;
        match answer {
            Ok(Ok((status, _))) => match status.as_u16() {
                201 => created += 1,
                429 => limited += 1,
                _ => other += 1,
            },
            Ok(Err(_)) | Err(_) => {
                other += 1;
                http = None;
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let samples = watch.end(rec, S).await;
    rec.figure(S, "created_201", created as f64);
    rec.figure(S, "refused_429", limited as f64);
    rec.figure(S, "other", other as f64);
    rec.figure(
        S,
        "attempts_per_s",
        (created + limited + other) as f64 / seconds,
    );
    fresh
        .finish(rec, S, &[("signups_per_ip", "refusals_signups")])
        .await?;
    Ok(samples)
}

/// Makes `user` (with `peer`) a member of `rooms` new rooms of `per_room` messages each,
/// directly with SQLite while the server is stopped; the messages take turns over the rooms.
/// Returns the first and last message id: every id between is one of these messages.
fn seed_replay(
    db: &Path,
    user: i64,
    peer: i64,
    rooms: usize,
    per_room: usize,
) -> Result<(i64, i64)> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut room_ids = Vec::with_capacity(rooms);
    {
        let mut room = tx.prepare(
            "INSERT INTO rooms (public_id, name, is_direct, creator_id, created, last_activity)
             VALUES (?1, ?2, 0, ?3, ?4, ?4)",
        )?;
        let mut member =
            tx.prepare("INSERT INTO room_members (room_id, user_id, joined) VALUES (?1, ?2, ?3)")?;
        for r in 0..rooms {
            let public_id = format!("{r:08x}{:016x}", rand::random::<u64>());
            room.execute(rusqlite::params![
                public_id,
                format!("replay {r}"),
                user,
                now_ms
            ])?;
            let id = tx.last_insert_rowid();
            member.execute(rusqlite::params![id, user, now_ms])?;
            member.execute(rusqlite::params![id, peer, now_ms])?;
            room_ids.push(id);
        }
    }
    let (mut first, mut last) = (0, 0);
    {
        let mut insert = tx.prepare(
            "INSERT INTO messages (room_id, sender_id, content, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        let total = (rooms * per_room) as i64;
        for m in 0..per_room {
            for (r, &room) in room_ids.iter().enumerate() {
                let i = (m * rooms + r) as i64;
                let sender = if m % 2 == 0 { peer } else { user };
                let content = format!("replay message {m} of room {r} lorem ipsum dolor sit amet");
                insert.execute(rusqlite::params![room, sender, content, now_ms - total + i])?;
                last = tx.last_insert_rowid();
                if first == 0 {
                    first = last;
                }
            }
        }
    }
    tx.execute(
        "UPDATE rooms SET last_message_id = (SELECT max(id) FROM messages m WHERE m.room_id = rooms.id),
                          last_activity = ?2
         WHERE creator_id = ?1 AND name LIKE 'replay %'",
        rusqlite::params![user, now_ms],
    )?;
    // Schemas with a sequence of changes keep each room's newest position and the last one.
    let has = |table: &str, column: &str| -> Result<bool> {
        Ok(tx
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?)
    };
    if has("rooms", "last_seq")? {
        tx.execute(
            "UPDATE rooms SET last_seq = coalesce(last_message_id, 0) WHERE creator_id = ?1",
            [user],
        )?;
    }
    if has("sequence", "last")? {
        tx.execute("UPDATE sequence SET last = max(last, ?1)", [last])?;
    }
    crate::suite::index_seeded(&tx)?;
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok((first, last))
}

/// The message id of a `message` frame.
fn message_id(frame: &str) -> Option<i64> {
    const KEY: &str = "\"message\":{\"id\":";
    if !frame.contains("\"type\":\"message\"") {
        return None;
    }
    let at = frame.find(KEY)? + KEY.len();
    let digits = frame[at..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&frame[at..], |end| &frame[at..at + end]);
    digits.parse().ok()
}

/// What one replaying socket (reconnecting as it goes) counted.
#[derive(Debug, Default, Clone, Copy)]
struct Replayed {
    messages: u64,
    connections: u64,
    refused_429: u64,
    closes_4000: u64,
    other_ends: u64,
    duplicates: u64,
    gaps: u64,
    most_on_one_connection: u64,
    complete: bool,
}

/// One replaying client: `/ws/?since=0`, reading every frame; on close 4000 it reconnects with
/// `since` = the last message id it got, on 429 it waits `Retry-After`; until it has message
/// `last` or `deadline` passes.
async fn replayer(
    server: SocketAddr,
    token: String,
    (first, last): (i64, i64),
    deadline: Instant,
) -> Replayed {
    let mut r = Replayed::default();
    let mut seen = 0i64;
    let deadline = tokio::time::Instant::from_std(deadline);
    while seen < last && tokio::time::Instant::now() < deadline {
        let path = format!("/ws/?token={token}&since={seen}");
        let mut ws = match tokio::time::timeout_at(
            deadline,
            connect_ws_from(server, &path, REPLAY_ATTACKER),
        )
        .await
        {
            Err(_) => break,
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                match refused_handshake(&e) {
                    Some((429, retry_after)) => {
                        r.refused_429 += 1;
                        let wait = Duration::from_secs_f64(retry_after.unwrap_or(1.0).max(0.05));
                        tokio::time::sleep_until(
                            (tokio::time::Instant::now() + wait).min(deadline),
                        )
                        .await;
                    }
                    _ => {
                        r.other_ends += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        };
        r.connections += 1;
        let mut on_this = 0u64;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let Some(id) = message_id(t.as_str()) else {
                        continue;
                    };
                    on_this += 1;
                    r.messages += 1;
                    if id <= seen {
                        r.duplicates += 1;
                        continue;
                    }
                    let expected = (seen + 1).max(first);
                    r.gaps += (id - expected).max(0) as u64;
                    seen = id;
                    if seen >= last {
                        let _ = ws.close(None).await;
                        break;
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    if frame.is_some_and(|f| u16::from(f.code) == 4000) {
                        r.closes_4000 += 1;
                    } else {
                        r.other_ends += 1;
                    }
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => {
                    r.other_ends += 1;
                    break;
                }
            }
        }
        r.most_on_one_connection = r.most_on_one_connection.max(on_this);
    }
    r.complete = seen >= last;
    r
}

/// Attack 5: a user in thousands of rooms opens `/ws/?since=0` sockets that replay everything,
/// resuming on close 4000 and waiting out 429s, until they have every message.
async fn replays(rec: &mut Recorder<'_>, env: &Env, sizes: &AbuseSizes) -> Result<Vec<Sample>> {
    const S: &str = "abuse_replay";
    let fresh = Fresh::start(env, "replay").await?;
    let mut people = users(fresh.addr(), "replay", 2).await?.into_iter();
    let attacker = people.next().context("attacker")?;
    let peer = people.next().context("peer")?;
    let seeding = Instant::now();
    let (fresh, ids) = fresh
        .restart(env, |db| {
            seed_replay(
                db,
                attacker.id,
                peer.id,
                sizes.replay_rooms,
                sizes.replay_messages_per_room,
            )
        })
        .await?;
    eprintln!(
        "    seeded {} rooms and {} messages in {:.1} s",
        sizes.replay_rooms,
        ids.1 - ids.0 + 1,
        seeding.elapsed().as_secs_f64()
    );
    let addr = fresh.addr();
    let watch = Watch::begin(&fresh, sizes).await;
    let began = Instant::now();
    let deadline = began + sizes.attack();
    let tasks: Vec<_> = (0..sizes.replay_sockets)
        .map(|_| tokio::spawn(replayer(addr, attacker.token.clone(), ids, deadline)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    let seconds = began.elapsed().as_secs_f64();
    let samples = watch.end(rec, S).await;
    let sum = |f: fn(&Replayed) -> u64| all.iter().map(f).sum::<u64>() as f64;
    rec.figure(S, "messages_replayed", sum(|r| r.messages));
    rec.figure(S, "messages_per_s", sum(|r| r.messages) / seconds);
    rec.figure(S, "seconds", seconds);
    rec.figure(
        S,
        "sockets_complete",
        all.iter().filter(|r| r.complete).count() as f64,
    );
    rec.figure(S, "connections", sum(|r| r.connections));
    rec.figure(S, "refused_429", sum(|r| r.refused_429));
    rec.figure(S, "closes_4000", sum(|r| r.closes_4000));
    rec.figure(S, "other_ends", sum(|r| r.other_ends));
    rec.figure(
        S,
        "most_on_one_connection",
        all.iter()
            .map(|r| r.most_on_one_connection)
            .max()
            .unwrap_or(0) as f64,
    );
    rec.figure(S, "duplicates", sum(|r| r.duplicates));
    rec.figure(S, "gaps", sum(|r| r.gaps));
    fresh
        .finish(
            rec,
            S,
            &[
                ("max_replay_messages", "refusals_replay_length"),
                ("max_replays_per_user", "refusals_replays_per_user"),
                ("max_replays_total", "refusals_replays_total"),
                ("ws_connects_per_user", "refusals_ws_per_user"),
            ],
        )
        .await?;
    Ok(samples)
}

/// The picture of the server's RSS over time during each attack: one line per attack, seconds
/// since the attack began on x, MiB on y.
fn rss_svg(series: &[(&str, Vec<Sample>)], run: usize) -> String {
    let panel = plot::Panel {
        title: String::new(),
        x_label: "seconds since the attack began".into(),
        y_label: "RSS (MiB)".into(),
        series: series
            .iter()
            .map(|(name, samples)| {
                plot::Series::new(
                    *name,
                    samples
                        .iter()
                        .map(|s| (s.t_s, s.rss_kib as f64 / 1024.0))
                        .collect(),
                )
            })
            .collect(),
        bands: Vec::new(),
    };
    plot::svg(
        &format!(
            "chat-server RSS during each abuse attack (fresh process, default limits, run {run})"
        ),
        &[panel],
        410.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_whole_response_and_only_a_whole_one() {
        let refusal =
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(refusal), Some((429, refusal.len())));
        assert_eq!(parse_response(&refusal[..refusal.len() - 1]), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Some((200, 38))
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn finds_the_id_of_a_message_frame_only() {
        let frame =
            r#"{"type":"message","seq":43,"message":{"id":43,"room_id":"ab","content":"x"}}"#;
        assert_eq!(message_id(frame), Some(43));
        assert_eq!(message_id(r#"{"type":"hello","last_message_id":41}"#), None);
    }

    #[test]
    fn the_picture_has_a_line_and_a_legend_entry_per_attack() {
        let samples = vec![
            Sample {
                t_s: 0.0,
                rss_kib: 8192,
                fds: 20,
            },
            Sample {
                t_s: 0.1,
                rss_kib: 9216,
                fds: 25,
            },
        ];
        let svg = rss_svg(&[("rooms", samples.clone()), ("signups", samples)], 1);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("rooms (peak 9.0)") && svg.contains("RSS (MiB)"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
