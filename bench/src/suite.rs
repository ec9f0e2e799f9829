//! The scenarios of docs/CONTRACT.md section 3, run against one server: setup through the API,
//! seeding the history room, then fan-out, latency, connect storm, idle memory, durable posts
//! and history paging, each recorded as named figures. The abuse (`abuse`) and overload
//! (`overload`) scenarios run on servers of their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::abuse::{self, AbuseSizes};
use crate::child::{Kind, Server, free_port, write_chat_config};
use crate::load::{self, Fleet, Publishers, Room, Step};
use crate::net::Http;
use crate::overload::{self, OverloadSizes};
use crate::sys;
use crate::uploads::{self, UploadSizes};

/// The sizes of every scenario; `full` is docs/CONTRACT.md's, `smoke` a small version for CI.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub users: usize,
    pub big_clients: usize,
    pub rooms: usize,
    pub room_clients: usize,
    /// Sending connections in the big room, and in each small room, during fan-out steps.
    pub big_publishers: usize,
    pub room_publishers: usize,
    /// Open-loop steps, in messages per second into the one big room.
    pub big_rates: Vec<f64>,
    /// Open-loop steps, in messages per second over all the small rooms together.
    pub many_rates: Vec<f64>,
    pub step_secs: f64,
    pub drain_secs: f64,
    pub latency_rate: f64,
    pub latency_secs: f64,
    pub durable_senders: usize,
    pub durable_secs: f64,
    pub history_rows: i64,
    pub paging_connections: usize,
    pub paging_secs: f64,
    pub connect_concurrency: usize,
    /// The abuse scenario's sizes.
    pub abuse: AbuseSizes,
    /// The overload scenario's sizes.
    pub overload: OverloadSizes,
    /// The uploads scenario's sizes.
    pub uploads: UploadSizes,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            users: 1000,
            big_clients: 10_000,
            rooms: 100,
            room_clients: 100,
            big_publishers: 20,
            room_publishers: 4,
            big_rates: vec![10.0, 20.0, 40.0, 80.0, 120.0, 160.0, 240.0, 320.0],
            many_rates: vec![
                1000.0, 2000.0, 4000.0, 8000.0, 12000.0, 16000.0, 24000.0, 32000.0,
            ],
            step_secs: 5.0,
            drain_secs: 20.0,
            latency_rate: 2.0,
            latency_secs: 30.0,
            durable_senders: 64,
            durable_secs: 10.0,
            history_rows: 1_000_000,
            paging_connections: 16,
            paging_secs: 10.0,
            connect_concurrency: 500,
            abuse: AbuseSizes::full(),
            overload: OverloadSizes::full(),
            uploads: UploadSizes::full(),
        }
    }

    pub fn smoke() -> Sizes {
        Sizes {
            users: 100,
            big_clients: 500,
            rooms: 10,
            room_clients: 50,
            big_publishers: 4,
            room_publishers: 2,
            big_rates: vec![10.0, 40.0],
            many_rates: vec![100.0, 400.0],
            step_secs: 1.0,
            drain_secs: 10.0,
            latency_rate: 2.0,
            latency_secs: 2.0,
            durable_senders: 8,
            durable_secs: 1.0,
            history_rows: 20_000,
            paging_connections: 4,
            paging_secs: 1.0,
            connect_concurrency: 100,
            abuse: AbuseSizes::smoke(),
            overload: OverloadSizes::smoke(),
            uploads: UploadSizes::smoke(),
        }
    }
}

/// The groups of scenarios, selectable with `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Connect storm, idle memory and fan-out over many small rooms.
    Rooms,
    /// Post-to-all latency and fan-out in one big room.
    Big,
    /// Durable posts, closed loop.
    Durable,
    /// History paging in the seeded room.
    History,
    /// Full-text search over the seeded room's messages (chat-server only).
    Search,
    /// Posts, edits, reactions and read marks together, checked against the history at the
    /// end (chat-server only).
    Mixed,
    /// Five resource-exhaustion attacks, each on a fresh chat-server with the default abuse
    /// limits (not run against the bare server, which has none).
    Abuse,
    /// Durable REST posts at 0.5, 1 and 2 times their saturation rate, open loop, on a fresh
    /// chat-server: what is accepted, what is refused with 503, and how fast (chat-server only).
    Overload,
    /// The history read load alone and beside 25 MiB uploads, the server's RSS through them,
    /// then thumbnails of a 12-megapixel photo (chat-server only).
    Uploads,
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub server: &'static str,
    pub run: usize,
    pub scenario: &'static str,
    pub metric: &'static str,
    pub value: f64,
}

/// Everything one run against one server produced.
#[derive(Debug, Default, Serialize)]
pub struct RunOutput {
    pub figures: Vec<Figure>,
    /// Per-scenario detail (every fan-out step, the durable and paging records).
    pub details: Vec<Value>,
}

/// Records figures and details of one run against one server, printing each figure.
pub(crate) struct Recorder<'a> {
    server: Kind,
    run: usize,
    out: &'a mut RunOutput,
}

impl Recorder<'_> {
    /// The run this recorder records (1, 2, ...).
    pub(crate) fn run(&self) -> usize {
        self.run
    }

    pub(crate) fn figure(&mut self, scenario: &'static str, metric: &'static str, value: f64) {
        eprintln!("  {:<16} {:<28} {value:>14.3}", scenario, metric);
        self.out.figures.push(Figure {
            server: self.server.name(),
            run: self.run,
            scenario,
            metric,
            value,
        });
    }

    pub(crate) fn detail(&mut self, scenario: &str, value: impl Serialize) {
        self.out.details.push(json!({
            "server": self.server.name(),
            "run": self.run,
            "scenario": scenario,
            "detail": value,
        }));
    }
}

/// The rooms every scenario uses.
struct Layout {
    big: Room,
    many: Vec<Room>,
    durable: Vec<Room>,
    history: Room,
    history_max_id: i64,
}

/// Where the binaries and scratch files are.
pub struct Env {
    pub chat_bin: PathBuf,
    pub bare_bin: PathBuf,
    pub work_dir: PathBuf,
    pub bare_args: Vec<String>,
}

/// Signs up `sizes.users` users, logs each in, and creates the rooms: one with every user,
/// `sizes.rooms` rooms of up to 100 members, one two-person room per durable sender, and the
/// history room.
async fn setup_chat(server: &Server, sizes: &Sizes) -> Result<Layout> {
    let n = sizes.users;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await?;
            let mut users = Vec::new();
            for i in (w..n).step_by(workers) {
                let username = format!("user{i}");
                let password = format!("bench-password-{i}");
                let user = http
                    .json(
                        Method::POST,
                        "/api/v1/signup/",
                        None,
                        &json!({"username": username, "password": password,
                                "first_name": format!("User {i}")}),
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
                let id = user["id"].as_i64().context("user id")?;
                let token = login["token"].as_str().context("token")?.to_string();
                users.push((i, id, token));
            }
            Ok::<_, anyhow::Error>(users)
        }));
    }
    let mut users = vec![(0i64, String::new()); n];
    for task in tasks {
        for (i, id, token) in task.await?? {
            users[i] = (id, token);
        }
    }

    let mut http = Http::connect(server.addr).await?;
    let mut create = async |name: String, members: &[usize]| -> Result<Room> {
        let ids: Vec<i64> = members[1..].iter().map(|&m| users[m].0).collect();
        let room = http
            .json(
                Method::POST,
                "/api/v1/chats/",
                Some(&users[members[0]].1),
                &json!({"members": ids, "name": name}),
            )
            .await?;
        Ok(Room {
            id: room["room_id"].as_str().context("room_id")?.to_string(),
            tokens: members.iter().map(|&m| users[m].1.clone()).collect(),
        })
    };
    let everyone: Vec<usize> = (0..n).collect();
    let big = create("big".into(), &everyone).await?;
    let members = sizes.room_clients.min(n);
    let stride = (n / sizes.rooms).max(1);
    let mut many = Vec::new();
    for r in 0..sizes.rooms {
        let m: Vec<usize> = (0..members).map(|k| (r * stride + k) % n).collect();
        many.push(create(format!("room{r}"), &m).await?);
    }
    let mut durable = Vec::new();
    for s in 0..sizes.durable_senders {
        durable.push(create(format!("durable{s}"), &[s, (s + n / 2) % n]).await?);
    }
    let history = create("history".into(), &[0, 1]).await?;
    Ok(Layout {
        big,
        many,
        durable,
        history,
        history_max_id: 0,
    })
}

/// Writes `rows` messages into the history room directly with SQLite, while the server is
/// stopped. Returns the highest message id.
fn seed_history(db: &Path, room: &Room, rows: i64) -> Result<i64> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let room_id: i64 = tx.query_row(
        "SELECT id FROM rooms WHERE public_id = ?1",
        [&room.id],
        |r| r.get(0),
    )?;
    let senders: Vec<i64> = tx
        .prepare("SELECT user_id FROM room_members WHERE room_id = ?1 ORDER BY user_id")?
        .query_map([room_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let first = now_ms - rows;
    let mut last_id = 0;
    {
        let mut insert = tx.prepare(
            "INSERT INTO messages (room_id, sender_id, content, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        for i in 0..rows {
            let sender = senders[i as usize % senders.len()];
            let content = format!("history message {i} lorem ipsum dolor sit amet consectetur");
            insert.execute(rusqlite::params![room_id, sender, content, first + i])?;
            last_id = tx.last_insert_rowid();
        }
    }
    tx.execute(
        "UPDATE rooms SET last_message_id = ?2, last_activity = ?3 WHERE id = ?1",
        rusqlite::params![room_id, last_id, now_ms],
    )?;
    index_seeded(&tx)?;
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(last_id)
}

/// Applies the search index queue that messages written straight into SQLite filled (schemas
/// from migration 8 on), as the server's writer does before each commit, so the server does
/// not start by indexing them.
pub fn index_seeded(tx: &rusqlite::Transaction) -> Result<()> {
    let queued = tx
        .prepare("SELECT 1 FROM sqlite_master WHERE name = 'search_queue'")?
        .exists([])?;
    if queued {
        tx.execute_batch(
            "INSERT INTO messages_fts (messages_fts, rowid, content)
             SELECT CASE remove WHEN 1 THEN 'delete' END, message_id, content
               FROM search_queue ORDER BY seq;
             DELETE FROM search_queue;",
        )?;
    }
    Ok(())
}

fn bare_layout(sizes: &Sizes) -> Layout {
    let room = |id: String| Room {
        id,
        tokens: vec!["none".into()],
    };
    Layout {
        big: room("big".into()),
        many: (0..sizes.rooms).map(|r| room(format!("room{r}"))).collect(),
        durable: (0..sizes.durable_senders)
            .map(|s| room(format!("durable{s}")))
            .collect(),
        history: room("history".into()),
        history_max_id: sizes.history_rows,
    }
}

async fn start(kind: Kind, env: &Env, db: &Path) -> Result<Server> {
    match kind {
        Kind::Chat => start_chat(env, &write_chat_config(&env.work_dir)?, db).await,
        Kind::Bare => {
            let port = free_port()?;
            let mut args = vec!["--port".to_string(), port.to_string()];
            args.extend(env.bare_args.iter().cloned());
            Server::start(kind, &env.bare_bin, &args, port).await
        }
    }
}

/// Starts chat-server with the config file `config` and the database `db` on a free port.
pub(crate) async fn start_chat(env: &Env, config: &Path, db: &Path) -> Result<Server> {
    let port = free_port()?;
    let args = [
        "--config".to_string(),
        config.display().to_string(),
        "--db".to_string(),
        db.display().to_string(),
        "--port".to_string(),
        port.to_string(),
    ];
    Server::start(Kind::Chat, &env.chat_bin, &args, port).await
}

/// Waits (at most 30 s) until the server uses under 5% of a core: the end of a burst of
/// work (connections, presence, a load step), before the next measurement.
pub(crate) async fn settle(pid: u32) -> Result<()> {
    for _ in 0..120 {
        let before = sys::cpu_seconds(pid)?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        if sys::cpu_seconds(pid)? - before < 0.0125 {
            break;
        }
    }
    Ok(())
}

/// Waits (at most 60 s) until the server has closed the sockets of a finished scenario.
async fn wait_for_fds(pid: u32, at_most: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sys::open_fds(pid)? > at_most && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle(pid).await
}

/// Connect storm, idle memory, optionally the 2 msg/s latency test, then open-loop steps
/// until the server saturates.
#[allow(clippy::too_many_arguments)]
async fn fanout(
    rec: &mut Recorder<'_>,
    server: &Server,
    sizes: &Sizes,
    rooms: &[Room],
    per_room: usize,
    publishers_per_room: usize,
    rates: &[f64],
    names: (&'static str, &'static str, &'static str),
    latency: Option<&'static str>,
    first_phase: bool,
) -> Result<()> {
    let (connect_name, idle_name, fanout_name) = names;
    let pid = server.pid();
    let fds = sys::open_fds(pid)?;
    let rss_before = sys::rss_kib(pid)?;
    let cpu_before = sys::cpu_seconds(pid)?;
    let (fleet, took) =
        Fleet::connect(server.addr, rooms, per_room, sizes.connect_concurrency).await?;
    rec.figure(connect_name, "seconds", took.as_secs_f64());
    settle(pid).await?;
    // Includes the work that continues after the last hello (presence fan-out).
    rec.figure(
        connect_name,
        "server_cpu_s",
        sys::cpu_seconds(pid)? - cpu_before,
    );
    let rss_after = sys::rss_kib(pid)?;
    rec.figure(idle_name, "rss_mib", rss_after as f64 / 1024.0);
    if first_phase {
        // Only meaningful in a fresh process: later phases reuse memory freed by earlier ones.
        rec.figure(
            idle_name,
            "kib_per_connection",
            (rss_after as f64 - rss_before as f64) / fleet.len() as f64,
        );
    }

    let publishers = Publishers::connect(server.addr, rooms, publishers_per_room).await?;
    let step_time = Duration::from_secs_f64(sizes.step_secs);
    let drain = Duration::from_secs_f64(sizes.drain_secs);
    let mut steps: Vec<Step> = Vec::new();
    let result = async {
        if let Some(name) = latency {
            let s = load::step(
                pid,
                &fleet,
                &publishers,
                sizes.latency_rate,
                Duration::from_secs_f64(sizes.latency_secs),
                drain,
            )
            .await?;
            rec.figure(name, "p50_ms", s.latency.p50_ms);
            rec.figure(name, "p99_ms", s.latency.p99_ms);
            rec.figure(name, "max_ms", s.latency.max_ms);
            rec.figure(name, "missing", s.missing as f64);
            rec.detail(name, &s);
        }
        for &rate in rates {
            // The machine is shared: a step during which other processes took more than a
            // quarter of a core is run once more, keeping the less disturbed of the two.
            let mut s = load::step(pid, &fleet, &publishers, rate, step_time, drain).await?;
            {
                if s.other_cpu_s / s.seconds > 0.25 {
                    eprintln!(
                        "    step {rate:>7} msg/s disturbed (other processes used {:.2} CPU-s): again",
                        s.other_cpu_s
                    );
                    let again =
                        load::step(pid, &fleet, &publishers, rate, step_time, drain).await?;
                    if again.other_cpu_s < s.other_cpu_s {
                        s = again;
                    }
                }
            }
            eprintln!(
                "    step {rate:>7} msg/s: {:>10.0} deliveries/s (offered {:>10.0}), p99 {:>8.1} ms, \
                 cpu s: server {:.2} loadgen {:.2} other {:.2}, missing {}",
                s.deliveries_per_s,
                s.offered_deliveries_per_s,
                s.latency.p99_ms,
                s.server_cpu_s,
                s.loadgen_cpu_s,
                s.other_cpu_s,
                s.missing
            );
            let saturated = s.saturated();
            steps.push(s);
            if saturated {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    publishers.close();
    fleet.close();
    result?;
    let peak = steps
        .iter()
        .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
        .context("no fan-out steps")?;
    rec.figure(fanout_name, "peak_deliveries_per_s", peak.deliveries_per_s);
    rec.figure(
        fanout_name,
        "deliveries_per_cpu_s",
        peak.deliveries_per_cpu_s,
    );
    rec.figure(fanout_name, "p99_ms_at_peak", peak.latency.p99_ms);
    let last = steps.last().expect("at least one step");
    rec.figure(fanout_name, "missing", last.missing as f64);
    rec.figure(fanout_name, "duplicates", last.duplicates as f64);
    rec.detail(fanout_name, &steps);
    wait_for_fds(pid, fds + 4).await
}

/// Whether other processes took more than a quarter of a core during a measurement of
/// `seconds`; such a measurement is taken once more and the less disturbed of the two kept,
/// as the fan-out steps are (the machine is shared).
fn disturbed(what: &str, other_cpu_s: f64, seconds: f64) -> bool {
    let yes = seconds > 0.0 && other_cpu_s / seconds > 0.25;
    if yes {
        eprintln!("  {what} disturbed (other processes used {other_cpu_s:.2} CPU-s): again");
    }
    yes
}

/// Runs every selected scenario against one server: the scenarios of docs/CONTRACT.md on one
/// server process, then the abuse scenario on fresh ones.
pub async fn run_server(
    kind: Kind,
    run: usize,
    sizes: &Sizes,
    env: &Env,
    scenarios: &[Scenario],
) -> Result<RunOutput> {
    let mut out = RunOutput::default();
    let mut rec = Recorder {
        server: kind,
        run,
        out: &mut out,
    };
    eprintln!("[run {run}] {} server", kind.name());
    if scenarios
        .iter()
        .any(|s| !matches!(s, Scenario::Abuse | Scenario::Overload))
    {
        run_suite(&mut rec, kind, sizes, env, scenarios).await?;
    }
    if scenarios.contains(&Scenario::Abuse) {
        match kind {
            Kind::Chat => abuse::run(&mut rec, env, &sizes.abuse)
                .await
                .context("abuse")?,
            Kind::Bare => {
                eprintln!("  abuse: skipped for the bare server (it has no abuse limits)")
            }
        }
    }
    if scenarios.contains(&Scenario::Overload) {
        match kind {
            Kind::Chat => overload::run(&mut rec, env, &sizes.overload)
                .await
                .context("overload")?,
            Kind::Bare => {
                eprintln!("  overload: skipped for the bare server (it stores nothing)")
            }
        }
    }
    Ok(out)
}

/// The files directory chat-server keeps beside the database `db`.
fn files_dir(db: &Path) -> PathBuf {
    let mut dir = db.as_os_str().to_owned();
    dir.push(".files");
    PathBuf::from(dir)
}

/// Removes the files directory beside `db`, if there is one.
fn remove_files(db: &Path) {
    let dir = files_dir(db);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("  could not remove {}: {e}", dir.display())
        }
        _ => {}
    }
}

/// The scenarios of docs/CONTRACT.md against one server process, after setting it up.
async fn run_suite(
    rec: &mut Recorder<'_>,
    kind: Kind,
    sizes: &Sizes,
    env: &Env,
    scenarios: &[Scenario],
) -> Result<()> {
    let db = env.work_dir.join(format!("bench-{}.db", kind.name()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    remove_files(&db);
    let (server, layout) = match kind {
        Kind::Chat => {
            let server = start(kind, env, &db).await?;
            let began = Instant::now();
            let mut layout = setup_chat(&server, sizes).await?;
            eprintln!(
                "  set up {} users and rooms in {:.1} s",
                sizes.users,
                began.elapsed().as_secs_f64()
            );
            server.stop().await?;
            let began = Instant::now();
            layout.history_max_id = seed_history(&db, &layout.history, sizes.history_rows)?;
            eprintln!(
                "  seeded {} history messages in {:.1} s",
                sizes.history_rows,
                began.elapsed().as_secs_f64()
            );
            (start(kind, env, &db).await?, layout)
        }
        Kind::Bare => (start(kind, env, &db).await?, bare_layout(sizes)),
    };
    let pid = server.pid();
    rec.figure(
        "idle",
        "rss_at_start_mib",
        sys::rss_kib(pid)? as f64 / 1024.0,
    );

    if scenarios.contains(&Scenario::Rooms) {
        fanout(
            rec,
            &server,
            sizes,
            &layout.many,
            sizes.room_clients,
            sizes.room_publishers,
            &sizes.many_rates,
            ("connect_rooms", "idle_rooms", "fanout_rooms"),
            None,
            true,
        )
        .await
        .context("fan-out over many rooms")?;
    }
    if scenarios.contains(&Scenario::Big) {
        fanout(
            rec,
            &server,
            sizes,
            std::slice::from_ref(&layout.big),
            sizes.big_clients,
            sizes.big_publishers,
            &sizes.big_rates,
            ("connect_big", "idle_big", "fanout_big"),
            Some("latency_big"),
            !scenarios.contains(&Scenario::Rooms),
        )
        .await
        .context("fan-out in one big room")?;
    }

    if scenarios.contains(&Scenario::Durable) {
        let measure = || {
            load::durable(
                server.addr,
                pid,
                &layout.durable,
                Duration::from_secs_f64(sizes.durable_secs),
            )
        };
        let mut d = measure().await.context("durable posts")?;
        if disturbed("durable posts", d.other_cpu_s, d.seconds) {
            settle(pid).await?;
            let again = measure().await.context("durable posts, again")?;
            if again.other_cpu_s < d.other_cpu_s {
                d = again;
            }
        }
        rec.figure("durable", "msgs_per_s", d.msgs_per_s);
        rec.figure("durable", "p50_ack_ms", d.ack.p50_ms);
        rec.figure("durable", "p99_ack_ms", d.ack.p99_ms);
        rec.figure("durable", "errors", d.errors as f64);
        rec.figure(
            "durable",
            "msgs_per_cpu_s",
            if d.server_cpu_s > 0.0 {
                d.acked as f64 / d.server_cpu_s
            } else {
                0.0
            },
        );
        rec.detail("durable", &d);
        settle(pid).await?;
    }

    if scenarios.contains(&Scenario::History) {
        let measure = || {
            load::paging(
                server.addr,
                pid,
                &layout.history,
                layout.history_max_id,
                sizes.paging_connections,
                Duration::from_secs_f64(sizes.paging_secs),
            )
        };
        let mut p = measure().await.context("history paging")?;
        if disturbed("history paging", p.other_cpu_s, p.seconds) {
            let again = measure().await.context("history paging, again")?;
            if again.other_cpu_s < p.other_cpu_s {
                p = again;
            }
        }
        rec.figure("history", "pages_per_s", p.pages_per_s);
        rec.figure("history", "p50_ms", p.latency.p50_ms);
        rec.figure("history", "p99_ms", p.latency.p99_ms);
        rec.figure("history", "errors", p.errors as f64);
        rec.detail("history", &p);
    }

    if scenarios.contains(&Scenario::Mixed) && kind == Kind::Chat {
        let m = load::mixed(
            server.addr,
            pid,
            &layout.durable,
            Duration::from_secs_f64(sizes.durable_secs),
        )
        .await
        .context("mixed")?;
        rec.figure("mixed", "ops_per_s", m.ops_per_s);
        rec.figure("mixed", "p99_ms", m.latency.p99_ms);
        rec.figure("mixed", "errors", m.errors as f64);
        rec.figure("mixed", "lost", m.lost as f64);
        rec.detail("mixed", &m);
        settle(pid).await?;
    }

    if scenarios.contains(&Scenario::Search) && kind == Kind::Chat {
        // Word queries, the target's load; then prefixes, a phase of their own.
        for prefixes in [false, true] {
            let q = load::searching(
                server.addr,
                pid,
                &layout.history,
                sizes.history_rows,
                sizes.paging_connections,
                Duration::from_secs_f64(sizes.paging_secs),
                prefixes,
            )
            .await
            .context("search")?;
            if prefixes {
                rec.figure("search_prefix", "searches_per_s", q.searches_per_s);
                rec.figure("search_prefix", "p99_ms", q.prefix.p99_ms);
                rec.figure("search_prefix", "errors", q.errors as f64);
                rec.detail("search_prefix", &q);
            } else {
                rec.figure("search", "searches_per_s", q.searches_per_s);
                rec.figure("search", "rare_word_p99_ms", q.rare_word.p99_ms);
                rec.figure("search", "common_word_p99_ms", q.common_word.p99_ms);
                rec.figure("search", "errors", q.errors as f64);
                rec.detail("search", &q);
            }
        }
    }

    if scenarios.contains(&Scenario::Uploads) {
        match kind {
            Kind::Chat => {
                let target = uploads::Target {
                    addr: server.addr,
                    pid,
                    history: &layout.history,
                    history_max_id: layout.history_max_id,
                    paging_connections: sizes.paging_connections,
                    paging: Duration::from_secs_f64(sizes.paging_secs),
                    // The second members of the durable rooms: users the history reader is not.
                    uploaders: layout
                        .durable
                        .iter()
                        .take(sizes.uploads.uploaders.max(2))
                        .map(|room| room.tokens[1].clone())
                        .collect(),
                    work_dir: &env.work_dir,
                };
                if let Err(e) = uploads::run(rec, &target, &sizes.uploads).await {
                    let _ = server.stop().await;
                    remove_files(&db);
                    return Err(e.context("uploads"));
                }
            }
            Kind::Bare => eprintln!("  uploads: skipped for the bare server (it stores no files)"),
        }
    }

    rec.figure("idle", "rss_at_end_mib", sys::rss_kib(pid)? as f64 / 1024.0);
    let stopped = server.stop().await;
    // The uploads' files: up to 2 GiB a run.
    remove_files(&db);
    stopped
}
