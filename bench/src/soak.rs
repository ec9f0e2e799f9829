//! The soak: a modest mixed workload against one fresh chat-server for a long time, to see
//! whether anything drifts. Rates stay far below saturation, so what it measures is the server
//! over time, not its throughput:
//!
//! - posts over REST, 10 per second into each of 8 rooms;
//! - history pages, 10 per second from each of 4 members (the newest page and a page before a
//!   random message, in turn);
//! - read marks, 10 per second from each of 4 members, on their room's newest message;
//! - WebSocket reconnects: one member of each room connects, authenticates and subscribes
//!   (waits for `hello`), receives for `WS_HOLD`, closes, and reconnects with `since` = the last
//!   message it saw; it checks that no message of its room is missed or seen twice;
//! - logins and logouts: 2 users log in once a second each and log that token out again, so
//!   tokens do not pile up.
//!
//! Every `every` seconds (a minute by default) and at the end it samples the server's RSS (and
//! how much of it is heap, how much the memory-mapped database), its open descriptors, the size of the WAL file and of the database, and p50/p99 latency and
//! errors of each operation over that interval. Any error response, failed or timed-out
//! operation is an error, and a soak with errors fails. It prints a table at the end, writes
//! `<work-dir>/soak.json` and draws RSS, descriptors, WAL size and p99 over time in
//! `<work-dir>/soak.svg` (also copied to `bench/soak.svg` when asked).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::abuse::{self, User};
use crate::child::write_chat_config;
use crate::load::{Percentiles, new_histogram};
use crate::net::{Http, connect_ws};
use crate::plot;
use crate::suite::{Env, start_chat};
use crate::sys;

/// Rooms, each with a poster, and one WebSocket reconnecting in it.
const ROOMS: usize = 8;
const POSTS_PER_ROOM_PER_S: f64 = 10.0;
/// History pagers and read markers, each in a room of its own.
const PAGERS: usize = 4;
const PAGES_PER_S: f64 = 10.0;
const READERS: usize = 4;
const READS_PER_S: f64 = 10.0;
/// Users that log in and out again, each once per `LOGIN_EVERY`.
const LOGIN_USERS: usize = 2;
const LOGIN_EVERY: Duration = Duration::from_secs(1);
/// How long each socket stays before it closes and reconnects.
const WS_HOLD: Duration = Duration::from_secs(3);
/// Longest wait for one operation before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How many error messages are kept for the report.
const KEPT_ERRORS: usize = 20;

/// What the soak does and how long.
#[derive(Debug, Clone, Serialize)]
pub struct SoakOptions {
    pub seconds: f64,
    /// How often the server is sampled.
    pub every_secs: f64,
    /// Whether the picture is also copied to `bench/soak.svg`.
    pub keep_picture: bool,
}

/// The operations timed, in the table's order.
#[derive(Debug, Clone, Copy)]
enum Op {
    Post,
    Page,
    Read,
    WsConnect,
    Login,
    Logout,
}

const OPS: [Op; 6] = [
    Op::Post,
    Op::Page,
    Op::Read,
    Op::WsConnect,
    Op::Login,
    Op::Logout,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Post => "post",
            Op::Page => "page",
            Op::Read => "read",
            Op::WsConnect => "ws_connect",
            Op::Login => "login",
            Op::Logout => "logout",
        }
    }
}

struct Window {
    latency: Histogram<u64>,
    errors: u64,
}

/// Latencies and errors of every operation since the last sample, shared by all the clients.
struct Tally {
    windows: Vec<Mutex<Window>>,
    errors: AtomicU64,
    kept: Mutex<Vec<String>>,
    /// Messages the sockets received (live or replayed).
    received: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tally {
    fn new() -> Tally {
        Tally {
            windows: OPS
                .iter()
                .map(|_| {
                    Mutex::new(Window {
                        latency: new_histogram(),
                        errors: 0,
                    })
                })
                .collect(),
            errors: AtomicU64::new(0),
            kept: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
        }
    }

    fn ok(&self, op: Op, took: Duration) {
        lock(&self.windows[op as usize])
            .latency
            .saturating_record(took.as_micros().max(1) as u64);
    }

    fn error(&self, op: Op, what: impl Into<String>) {
        lock(&self.windows[op as usize]).errors += 1;
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        let what = what.into();
        if n < 5 {
            eprintln!("  soak: ERROR in {}: {what}", op.name());
        }
        let mut kept = lock(&self.kept);
        if kept.len() < KEPT_ERRORS {
            kept.push(format!("{}: {what}", op.name()));
        }
    }

    /// The figures of every operation since the last call.
    fn take(&self) -> Vec<OpFigures> {
        OPS.iter()
            .map(|&op| {
                let mut w = lock(&self.windows[op as usize]);
                let p = Percentiles::of(&w.latency);
                let figures = OpFigures {
                    op: op.name(),
                    count: p.count,
                    p50_ms: p.p50_ms,
                    p99_ms: p.p99_ms,
                    max_ms: p.max_ms,
                    errors: w.errors,
                };
                w.latency.reset();
                w.errors = 0;
                figures
            })
            .collect()
    }
}

/// One operation over one sampling interval.
#[derive(Debug, Clone, Serialize)]
struct OpFigures {
    op: &'static str,
    /// Successful operations.
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

/// The server at the end of one sampling interval, and the operations during it.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// Seconds since the load began.
    t_s: f64,
    rss_kib: u64,
    /// The RSS's parts: anonymous (heap), mapped files (the database), shared memory.
    rss_anon_kib: u64,
    rss_file_kib: u64,
    rss_shmem_kib: u64,
    fds: usize,
    wal_bytes: u64,
    db_bytes: u64,
    server_cpu_s: f64,
    /// Messages the sockets received during the interval.
    received: u64,
    ops: Vec<OpFigures>,
}

impl Row {
    fn op(&self, name: &str) -> Option<&OpFigures> {
        self.ops.iter().find(|o| o.op == name)
    }

    fn errors(&self) -> u64 {
        self.ops.iter().map(|o| o.errors).sum()
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Runs the soak; true if no operation failed.
pub async fn run(env: &Env, options: &SoakOptions) -> Result<bool> {
    let db = env.work_dir.join("soak.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(&db, suffix));
    }
    let config = write_chat_config(&env.work_dir)?;
    let server = start_chat(env, &config, &db).await?;
    let addr = server.addr;
    let pid = server.pid();

    // Users 0..16 are the rooms' members; room r is user r's, with users r+1, r+8 and r+9.
    let members = abuse::users(addr, "soak", 2 * ROOMS)
        .await
        .context("soak users")?;
    // Signed up (and logged in once) here; `login_loop` logs them in and out again.
    abuse::users(addr, "soaklogin", LOGIN_USERS)
        .await
        .context("soak login users")?;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let others: Vec<i64> = [r + 1, r + ROOMS, r + ROOMS + 1]
            .iter()
            .map(|&m| members[m % (2 * ROOMS)].id)
            .collect();
        rooms.push(
            abuse::create_room(addr, &members[r], &others, &format!("soak {r}"))
                .await
                .context("soak room")?,
        );
    }
    let member = |r: usize, k: usize| -> &User { &members[(r + k) % (2 * ROOMS)] };
    let latest: Arc<Vec<AtomicI64>> = Arc::new((0..ROOMS).map(|_| AtomicI64::new(0)).collect());

    let tally = Arc::new(Tally::new());
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(options.seconds);
    let ops_per_s = ROOMS as f64 * POSTS_PER_ROOM_PER_S
        + PAGERS as f64 * PAGES_PER_S
        + READERS as f64 * READS_PER_S
        + 2.0 * LOGIN_USERS as f64 / LOGIN_EVERY.as_secs_f64();
    eprintln!(
        "chat-bench: soak for {:.0} s against chat-server (pid {pid}, database {}): about {ops_per_s:.0} \
         REST operations/s and {ROOMS} sockets reconnecting every {} s; a sample every {:.0} s",
        options.seconds,
        db.display(),
        WS_HOLD.as_secs(),
        options.every_secs
    );

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        tasks.push(tokio::spawn(poster(
            addr,
            r,
            room.clone(),
            member(r, 0).token.clone(),
            latest.clone(),
            tally.clone(),
            deadline,
        )));
        tasks.push(tokio::spawn(socket(
            addr,
            r,
            room.clone(),
            member(r, ROOMS + 1).token.clone(),
            tally.clone(),
            deadline,
        )));
    }
    for (r, room) in rooms.iter().enumerate().take(PAGERS) {
        tasks.push(tokio::spawn(pager(
            addr,
            room.clone(),
            member(r, 1).token.clone(),
            r,
            latest.clone(),
            tally.clone(),
            deadline,
        )));
    }
    for k in 0..READERS {
        let r = ROOMS - 1 - k;
        tasks.push(tokio::spawn(reader(
            addr,
            r,
            member(r, ROOMS).token.clone(),
            latest.clone(),
            tally.clone(),
            deadline,
        )));
    }
    for i in 0..LOGIN_USERS {
        tasks.push(tokio::spawn(login_loop(
            addr,
            format!("soaklogin{i}"),
            abuse::password(i),
            tally.clone(),
            deadline,
        )));
    }

    // The samples, every `every_secs` until the deadline; then one at the end.
    let every = Duration::from_secs_f64(options.every_secs);
    let mut rows: Vec<Row> = Vec::new();
    let mut cpu_before = sys::cpu_seconds(pid)?;
    let mut next = began + every;
    let sample = |cpu_before: &mut f64| -> Result<Row> {
        let cpu = sys::cpu_seconds(pid)?;
        let (rss_anon_kib, rss_file_kib, rss_shmem_kib) = sys::rss_parts_kib(pid)?;
        let row = Row {
            t_s: began.elapsed().as_secs_f64(),
            rss_kib: sys::rss_kib(pid)?,
            rss_anon_kib,
            rss_file_kib,
            rss_shmem_kib,
            fds: sys::open_fds(pid)?,
            wal_bytes: file_size(&with_suffix(&db, "-wal")),
            db_bytes: file_size(&db),
            server_cpu_s: cpu - *cpu_before,
            received: tally.received.swap(0, Ordering::Relaxed),
            ops: tally.take(),
        };
        *cpu_before = cpu;
        Ok(row)
    };
    while next <= deadline {
        tokio::time::sleep_until(next.into()).await;
        let row = sample(&mut cpu_before)?;
        eprintln!("{}", progress(&row, options.seconds));
        rows.push(row);
        next += every;
    }
    for task in tasks {
        let _ = task.await;
    }
    // What the interval after the last full one saw, up to when every client stopped.
    if rows
        .last()
        .is_none_or(|r| began.elapsed().as_secs_f64() - r.t_s > 0.5)
    {
        let row = sample(&mut cpu_before)?;
        eprintln!("{}", progress(&row, options.seconds));
        rows.push(row);
    }
    let stopped = server.stop().await;

    let errors = tally.errors.load(Ordering::Relaxed);
    let kept = lock(&tally.kept).clone();
    let json_path = env.work_dir.join("soak.json");
    let out = json!({
        "options": options,
        "rates": {
            "rooms": ROOMS,
            "posts_per_s": ROOMS as f64 * POSTS_PER_ROOM_PER_S,
            "pages_per_s": PAGERS as f64 * PAGES_PER_S,
            "reads_per_s": READERS as f64 * READS_PER_S,
            "logins_per_s": LOGIN_USERS as f64 / LOGIN_EVERY.as_secs_f64(),
            "sockets": ROOMS,
            "socket_hold_s": WS_HOLD.as_secs_f64(),
        },
        "machine": sys::machine(),
        "errors": errors,
        "first_errors": kept,
        "rows": rows,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg = picture(&rows, options);
    let svg_path = env.work_dir.join("soak.svg");
    std::fs::write(&svg_path, &svg).with_context(|| format!("writing {}", svg_path.display()))?;
    if options.keep_picture {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("soak.svg");
        std::fs::write(&kept, &svg).with_context(|| format!("writing {}", kept.display()))?;
        eprintln!("soak: picture copied to {}", kept.display());
    }
    println!("{}", table(&rows, options));
    eprintln!(
        "soak: results written to {} and {}",
        json_path.display(),
        svg_path.display()
    );
    if let Err(e) = &stopped {
        eprintln!("FAILED: soak: the server did not stop: {e:#}");
    }
    if errors > 0 {
        eprintln!("FAILED: soak: {errors} operations failed; the first of them:");
        for e in &kept {
            eprintln!("FAILED:   {e}");
        }
    }
    Ok(errors == 0 && stopped.is_ok())
}

/// Waits for the next tick of `every` (missed ticks are not made up); false once `deadline`
/// has passed.
async fn pace(tick: &mut tokio::time::Interval, deadline: Instant) -> bool {
    tick.tick().await;
    Instant::now() < deadline
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// One REST call on a kept-alive connection, reconnecting after a failure; the status and
/// body, or what went wrong.
async fn call(
    http: &mut Option<Http>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::result::Result<(u16, bytes::Bytes), String> {
    let result = tokio::time::timeout(TIMEOUT, async {
        let conn = match http {
            Some(conn) => conn,
            None => http.insert(Http::connect(addr).await?),
        };
        conn.request(method, path, token, body).await
    })
    .await;
    match result {
        Ok(Ok((status, bytes))) => Ok((status.as_u16(), bytes)),
        Ok(Err(e)) => {
            *http = None;
            Err(format!("{path}: {e:#}"))
        }
        Err(_) => {
            *http = None;
            Err(format!("{path}: no answer within {} s", TIMEOUT.as_secs()))
        }
    }
}

/// Times one REST call and records it under `op`: success only for a 2xx answer. The answer's
/// body, if it succeeded.
#[allow(clippy::too_many_arguments)]
async fn timed(
    tally: &Tally,
    op: Op,
    http: &mut Option<Http>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<bytes::Bytes> {
    let sent = Instant::now();
    match call(http, addr, method, path, token, body).await {
        Ok((status, bytes)) if (200..300).contains(&status) => {
            tally.ok(op, sent.elapsed());
            Some(bytes)
        }
        Ok((status, bytes)) => {
            tally.error(
                op,
                format!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            );
            None
        }
        Err(e) => {
            tally.error(op, e);
            None
        }
    }
}

/// Posts into room `r`, numbering its messages `soak <r> <n>` so sockets can spot gaps.
async fn poster(
    addr: SocketAddr,
    r: usize,
    room: String,
    token: String,
    latest: Arc<Vec<AtomicI64>>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let mut http = None;
    let mut tick = interval(Duration::from_secs_f64(1.0 / POSTS_PER_ROOM_PER_S));
    let path = format!("/api/v1/chat/{room}/");
    let mut n = 0u64;
    while pace(&mut tick, deadline).await {
        n += 1;
        let body = json!({"content": format!("soak {r} {n} lorem ipsum dolor sit amet")});
        let answer = timed(
            &tally,
            Op::Post,
            &mut http,
            addr,
            Method::POST,
            &path,
            Some(&token),
            Some(&body),
        )
        .await;
        if let Some(bytes) = answer {
            let id = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|m| m["id"].as_i64());
            match id {
                Some(id) => latest[r].fetch_max(id, Ordering::Relaxed),
                None => {
                    tally.error(Op::Post, format!("{path}: an answer without an id"));
                    0
                }
            };
        }
    }
}

/// Pages room `r`'s history: the newest page, then a page before a random message, in turn.
async fn pager(
    addr: SocketAddr,
    room: String,
    token: String,
    r: usize,
    latest: Arc<Vec<AtomicI64>>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let mut http = None;
    let mut tick = interval(Duration::from_secs_f64(1.0 / PAGES_PER_S));
    let mut newest = false;
    while pace(&mut tick, deadline).await {
        newest = !newest;
        let top = latest[r].load(Ordering::Relaxed);
        let path = if newest || top < 2 {
            format!("/api/v1/chat/{room}/?limit=50")
        } else {
            let before = rand::random_range(1..=top);
            format!("/api/v1/chat/{room}/?limit=50&before={before}")
        };
        timed(
            &tally,
            Op::Page,
            &mut http,
            addr,
            Method::GET,
            &path,
            Some(&token),
            None,
        )
        .await;
    }
}

/// Marks room `r`'s newest message read, as a member other than its sender.
async fn reader(
    addr: SocketAddr,
    r: usize,
    token: String,
    latest: Arc<Vec<AtomicI64>>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let mut http = None;
    let mut tick = interval(Duration::from_secs_f64(1.0 / READS_PER_S));
    while pace(&mut tick, deadline).await {
        let id = latest[r].load(Ordering::Relaxed);
        if id == 0 {
            continue;
        }
        let path = format!("/api/v1/messages/{id}/update/");
        timed(
            &tally,
            Op::Read,
            &mut http,
            addr,
            Method::PATCH,
            &path,
            Some(&token),
            None,
        )
        .await;
    }
}

/// Logs in on a new connection every `LOGIN_EVERY` and logs that token out again.
async fn login_loop(
    addr: SocketAddr,
    username: String,
    password: String,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let mut http = None;
    let mut tick = interval(LOGIN_EVERY);
    let credentials = json!({"username": username, "password": password});
    while pace(&mut tick, deadline).await {
        let Some(bytes) = timed(
            &tally,
            Op::Login,
            &mut http,
            addr,
            Method::POST,
            "/api/v1/login/",
            None,
            Some(&credentials),
        )
        .await
        else {
            continue;
        };
        let token = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string));
        let Some(token) = token else {
            tally.error(Op::Login, "/api/v1/login/: an answer without a token");
            continue;
        };
        timed(
            &tally,
            Op::Logout,
            &mut http,
            addr,
            Method::POST,
            "/api/v1/logout/",
            Some(&token),
            None,
        )
        .await;
    }
}

/// The room number and message number of a soak message frame, with its id.
fn soak_message(frame: &Value) -> Option<(i64, u64, u64)> {
    if frame["type"] != "message" {
        return None;
    }
    let m = &frame["message"];
    let mut words = m["content"].as_str()?.split(' ');
    if words.next()? != "soak" {
        return None;
    }
    let room = words.next()?.parse().ok()?;
    let n = words.next()?.parse().ok()?;
    Some((m["id"].as_i64()?, room, n))
}

/// One member's socket to room `r`: connect, wait for `hello`, receive for `WS_HOLD`, close,
/// reconnect with `since` set to the last message seen. Every message of the room must come
/// once, in order, with no number skipped: the poster numbers them.
async fn socket(
    addr: SocketAddr,
    r: usize,
    room: String,
    token: String,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    // The last message id seen (or `hello`'s last_seq before any), and its number.
    let mut since: Option<i64> = None;
    let mut last_n: Option<u64> = None;
    while Instant::now() < deadline {
        let path = match since {
            Some(s) => format!("/ws/chat/{room}/?token={token}&since={s}"),
            None => format!("/ws/chat/{room}/?token={token}"),
        };
        let began = Instant::now();
        let opened = tokio::time::timeout(TIMEOUT, async {
            let mut ws = connect_ws(addr, &path).await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let hello: Value = serde_json::from_str(t.as_str())?;
                    anyhow::ensure!(hello["type"] == "hello", "first frame {t}");
                    Ok((ws, hello["last_seq"].as_i64().unwrap_or(0)))
                }
                other => anyhow::bail!("expected hello, got {other:?}"),
            }
        })
        .await;
        let (mut ws, last_seq) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                tally.error(Op::WsConnect, format!("room {r}: {e:#}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                tally.error(
                    Op::WsConnect,
                    format!("room {r}: no hello within {} s", TIMEOUT.as_secs()),
                );
                continue;
            }
        };
        tally.ok(Op::WsConnect, began.elapsed());
        since.get_or_insert(last_seq);
        let until = (Instant::now() + WS_HOLD).min(deadline);
        loop {
            match tokio::time::timeout_at(until.into(), ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let Ok(frame) = serde_json::from_str::<Value>(t.as_str()) else {
                        tally.error(Op::WsConnect, format!("room {r}: not JSON: {t}"));
                        continue;
                    };
                    if frame["type"] == "error" {
                        tally.error(Op::WsConnect, format!("room {r}: {t}"));
                        continue;
                    }
                    let Some((id, room_n, n)) = soak_message(&frame) else {
                        continue;
                    };
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    if room_n != r as u64 {
                        tally.error(Op::WsConnect, format!("room {r}: room {room_n}'s message"));
                    } else if since.is_some_and(|s| id <= s) {
                        tally.error(Op::WsConnect, format!("room {r}: message {id} again"));
                    } else {
                        if let Some(prev) = last_n
                            && n != prev + 1
                        {
                            tally.error(
                                Op::WsConnect,
                                format!("room {r}: message number {n} after {prev}"),
                            );
                        }
                        last_n = Some(n);
                        since = Some(id);
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    tally.error(
                        Op::WsConnect,
                        format!("room {r}: closed by the server: {frame:?}"),
                    );
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    tally.error(Op::WsConnect, format!("room {r}: {e}"));
                    break;
                }
                Ok(None) => {
                    tally.error(Op::WsConnect, format!("room {r}: the connection ended"));
                    break;
                }
            }
        }
        // A clean close: send ours and read until the server's comes back (or a moment passes).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// The progress line of one sample.
fn progress(row: &Row, total_s: f64) -> String {
    let p99 = |name| row.op(name).map_or(0.0, |o| o.p99_ms);
    format!(
        "  soak {}/{}: rss {:.1} MiB (heap {:.1}), fds {}, wal {:.2} MiB, db {:.1} MiB, p99 ms post {:.1} page {:.1} \
         read {:.1} ws {:.1} login {:.1}, errors {}",
        clock(row.t_s),
        clock(total_s),
        row.rss_kib as f64 / 1024.0,
        row.rss_anon_kib as f64 / 1024.0,
        row.fds,
        mib(row.wal_bytes),
        mib(row.db_bytes),
        p99("post"),
        p99("page"),
        p99("read"),
        p99("ws_connect"),
        p99("login"),
        row.errors()
    )
}

/// The table of every sample, as Markdown.
fn table(rows: &[Row], options: &SoakOptions) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nSoak, {:.0} s, a sample every {:.0} s (latency p50 / p99 in ms over each interval)\n",
        options.seconds, options.every_secs
    );
    s.push_str(
        "| t | RSS MiB | heap MiB | files MiB | fds | WAL MiB | DB MiB | CPU % | post | page | read | ws connect | login | logout | ops | errors |\n",
    );
    s.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut prev_t = 0.0;
    for row in rows {
        let pair = |name| {
            row.op(name)
                .map_or("-".into(), |o| format!("{:.2} / {:.2}", o.p50_ms, o.p99_ms))
        };
        let ops: u64 = row.ops.iter().map(|o| o.count).sum();
        let span = (row.t_s - prev_t).max(1e-9);
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            clock(row.t_s),
            row.rss_kib as f64 / 1024.0,
            row.rss_anon_kib as f64 / 1024.0,
            (row.rss_file_kib + row.rss_shmem_kib) as f64 / 1024.0,
            row.fds,
            mib(row.wal_bytes),
            mib(row.db_bytes),
            100.0 * row.server_cpu_s / span,
            pair("post"),
            pair("page"),
            pair("read"),
            pair("ws_connect"),
            pair("login"),
            pair("logout"),
            ops,
            row.errors()
        );
        prev_t = row.t_s;
    }
    s
}

/// RSS, descriptors, WAL and database size, and p99 per operation, over time.
fn picture(rows: &[Row], options: &SoakOptions) -> String {
    let minutes = |r: &Row| r.t_s / 60.0;
    let line = |name: &str, f: &dyn Fn(&Row) -> f64| {
        plot::Series::new(name, rows.iter().map(|r| (minutes(r), f(r))).collect())
    };
    let panel = |title: &str, y_label: &str, series| plot::Panel {
        title: title.into(),
        x_label: "minutes since the load began".into(),
        y_label: y_label.into(),
        series,
        bands: Vec::new(),
    };
    let p99 = |op: Op| {
        line(op.name(), &move |r: &Row| {
            r.op(op.name()).map_or(0.0, |o| o.p99_ms)
        })
    };
    let panels = [
        panel(
            "resident memory",
            "RSS (MiB)",
            vec![
                line("RSS", &|r| r.rss_kib as f64 / 1024.0),
                line("heap (anonymous)", &|r| r.rss_anon_kib as f64 / 1024.0),
                line("mapped files and shm", &|r| {
                    (r.rss_file_kib + r.rss_shmem_kib) as f64 / 1024.0
                }),
            ],
        ),
        panel(
            "open file descriptors",
            "descriptors",
            vec![line("fds", &|r| r.fds as f64)],
        ),
        panel(
            "database files",
            "MiB",
            vec![
                line("WAL", &|r| mib(r.wal_bytes)),
                line("database", &|r| mib(r.db_bytes)),
            ],
        ),
        panel(
            "p99 latency over each interval",
            "p99 (ms)",
            OPS.iter().map(|&op| p99(op)).collect(),
        ),
    ];
    plot::svg(
        &format!(
            "chat-server soak: {:.0} s of mixed load, a sample every {:.0} s",
            options.seconds, options.every_secs
        ),
        &panels,
        220.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_room_and_number_of_a_soak_message_only() {
        let frame = json!({"type": "message", "seq": 9,
                           "message": {"id": 9, "content": "soak 3 17 lorem ipsum"}});
        assert_eq!(soak_message(&frame), Some((9, 3, 17)));
        let other = json!({"type": "message", "message": {"id": 9, "content": "hello"}});
        assert_eq!(soak_message(&other), None);
        assert_eq!(soak_message(&json!({"type": "hello", "last_seq": 4})), None);
    }

    #[test]
    fn the_table_and_picture_have_a_row_and_a_point_per_sample() {
        let tally = Tally::new();
        tally.ok(Op::Post, Duration::from_millis(2));
        tally.error(Op::Page, "HTTP 500");
        let row = |t_s: f64, ops: Vec<OpFigures>| Row {
            t_s,
            rss_kib: 10 * 1024,
            rss_anon_kib: 6 * 1024,
            rss_file_kib: 3 * 1024,
            rss_shmem_kib: 1024,
            fds: 30,
            wal_bytes: 4 << 20,
            db_bytes: 8 << 20,
            server_cpu_s: 6.0,
            received: 100,
            ops,
        };
        let rows = vec![row(60.0, tally.take()), row(120.0, tally.take())];
        assert_eq!(rows[0].errors(), 1);
        assert_eq!(rows[1].errors(), 0);
        assert_eq!(rows[0].op("post").map(|o| o.count), Some(1));
        let options = SoakOptions {
            seconds: 120.0,
            every_secs: 60.0,
            keep_picture: false,
        };
        let text = table(&rows, &options);
        assert!(text.contains("| 1:00 | 10.0 | 6.0 | 4.0 | 30 | 4.00 | 8.0 | 10 |"));
        assert_eq!(text.lines().filter(|l| l.starts_with("| 2:00")).count(), 1);
        let svg = picture(&rows, &options);
        assert_eq!(svg.matches("<polyline").count(), 3 + 1 + 2 + OPS.len());
        assert!(svg.contains("WAL (peak 4.0)"));
    }
}
