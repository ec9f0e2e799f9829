//! The load itself: fleets of receiving WebSocket clients, open-loop publishers, closed-loop
//! durable senders and history pagers, and what they measure.
//!
//! Every message a publisher sends carries the publisher's number within its room, its own
//! sequence number and its intended send time (microseconds since the load generator started)
//! in its content: `bench <publisher> <seq> <micros> ...`.
//! Stamping the intended rather than the actual send time keeps a stalled sender from hiding
//! latency (coordinated omission). Receivers check the sequence for gaps and duplicates and
//! count every message, so a step ends only when every client has received every message that
//! was accepted, or its drain time runs out and the shortfall is reported as lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{Http, Ws, connect_ws};
use crate::sys;

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

fn micros_since_start(t: Instant) -> u64 {
    t.saturating_duration_since(start()).as_micros() as u64
}

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, to 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

const CONTENT_PREFIX: &str = "\"content\":\"bench ";

/// A benchmark message: who sent it within its room, its sequence number, its send time.
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: usize,
    pub seq: u64,
    pub sent_us: u64,
}

pub fn parse_bench(frame: &str) -> Option<Stamp> {
    let at = frame.find(CONTENT_PREFIX)? + CONTENT_PREFIX.len();
    let mut fields = frame[at..].split([' ', '"']);
    Some(Stamp {
        publisher: fields.next()?.parse().ok()?,
        seq: fields.next()?.parse().ok()?,
        sent_us: fields.next()?.parse().ok()?,
    })
}

fn bench_content(publisher: usize, seq: u64, sent_us: u64) -> String {
    format!(
        "bench {publisher} {seq} {sent_us} lorem ipsum dolor sit amet, consectetur adipiscing elit"
    )
}

const SHARDS: usize = 16;

/// What a fleet of receivers has seen, shared by all of them.
pub struct Stats {
    received: Vec<AtomicU64>,
    pub gaps: AtomicU64,
    pub duplicates: AtomicU64,
    /// Connections the server ended while the benchmark still needed them.
    pub dropped: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Stats {
    fn new(clients: usize) -> Stats {
        Stats {
            received: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    fn record(&self, client: usize, latency_us: u64) {
        self.received[client].fetch_add(1, Ordering::Relaxed);
        let mut h = self.latency[client % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.saturating_record(latency_us.max(1));
    }

    pub fn total_received(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }

    /// The latencies recorded since the last call.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.latency {
            let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h).expect("same bounds");
            h.reset();
        }
        all
    }
}

/// A room as the load generator addresses it: its id in the URL and its members' tokens.
#[derive(Clone, Debug)]
pub struct Room {
    pub id: String,
    pub tokens: Vec<String>,
}

impl Room {
    /// The WebSocket path for the `k`-th connection to this room (members in turn).
    pub fn ws_path(&self, k: usize) -> String {
        let token = &self.tokens[k % self.tokens.len()];
        format!("/ws/chat/{}/?token={token}", self.id)
    }
}

/// Opens a WebSocket and waits for the server's first frame (`hello`): connected,
/// authenticated and subscribed.
async fn open(server: SocketAddr, path: &str) -> Result<Ws> {
    let mut ws = connect_ws(server, path).await?;
    let first = tokio::time::timeout(Duration::from_secs(60), ws.next())
        .await
        .context("no hello within 60 s")?;
    match first {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"hello\"") => Ok(ws),
        other => bail!("expected hello, got {other:?}"),
    }
}

/// Receivers connected to a set of rooms.
pub struct Fleet {
    pub stats: Arc<Stats>,
    /// The room of each client.
    room_of: Vec<usize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Connects `per_room` clients to each room, at most `concurrency` handshakes at a time,
    /// interleaving rooms. Returns once every client has its `hello`, with the time that took.
    pub async fn connect(
        server: SocketAddr,
        rooms: &[Room],
        per_room: usize,
        concurrency: usize,
    ) -> Result<(Fleet, Duration)> {
        let total = rooms.len() * per_room;
        let stats = Arc::new(Stats::new(total));
        let gate = Arc::new(Semaphore::new(concurrency));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<()>>();
        let mut room_of = Vec::with_capacity(total);
        let mut tasks = Vec::with_capacity(total);
        let began = Instant::now();
        for idx in 0..total {
            let room = idx % rooms.len();
            room_of.push(room);
            let path = rooms[room].ws_path(idx / rooms.len());
            let (gate, ready, stats) = (gate.clone(), ready_tx.clone(), stats.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("gate never closes");
                let ws = open(server, &path).await;
                drop(permit);
                match ws {
                    Ok(ws) => {
                        let _ = ready.send(Ok(()));
                        receive(ws, idx, &stats).await;
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            }));
        }
        drop(ready_tx);
        let mut failed = 0;
        let mut first_error = None;
        for _ in 0..total {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                None => break,
            }
        }
        let took = began.elapsed();
        let fleet = Fleet {
            stats,
            room_of,
            tasks,
        };
        if let Some(e) = first_error {
            fleet.close();
            return Err(e.context(format!("{failed} of {total} connections failed")));
        }
        Ok((fleet, took))
    }

    pub fn len(&self) -> usize {
        self.room_of.len()
    }

    /// Messages the clients should have received by now, given what each room accepted.
    fn expected(&self, rooms: &RoomCounters) -> u64 {
        self.room_of.iter().map(|&r| rooms.accepted(r)).sum()
    }

    /// Disconnects every client.
    pub fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn receive(mut ws: Ws, idx: usize, stats: &Stats) {
    // The last sequence number seen from each publisher of the room.
    let mut last: Vec<u64> = Vec::new();
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                if let Some(stamp) = parse_bench(text.as_str()) {
                    let now = micros_since_start(Instant::now());
                    stats.record(idx, now.saturating_sub(stamp.sent_us));
                    if stamp.publisher >= last.len() {
                        last.resize(stamp.publisher + 1, 0);
                    }
                    let last = &mut last[stamp.publisher];
                    if stamp.seq <= *last {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats
                            .gaps
                            .fetch_add(stamp.seq - *last - 1, Ordering::Relaxed);
                        *last = stamp.seq;
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Per room: messages sent, and refused with an error frame.
pub struct RoomCounters {
    sent: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
}

impl RoomCounters {
    fn accepted(&self, room: usize) -> u64 {
        self.sent[room]
            .load(Ordering::Relaxed)
            .saturating_sub(self.errors[room].load(Ordering::Relaxed))
    }

    pub fn errors(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

struct Burst {
    rate: f64,
    /// When this publisher's first message is due, after the step's start: publishers are
    /// staggered so that together they send evenly spaced messages, not bursts.
    offset: Duration,
    /// Messages to send, `1 / rate` apart.
    count: u64,
    duration: Duration,
    done: oneshot::Sender<()>,
}

/// Sending connections, `per_room` in every room, driven step by step.
pub struct Publishers {
    commands: Vec<mpsc::Sender<Burst>>,
    pub counters: Arc<RoomCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Publishers {
    /// Connects `per_room` publishers to each room, as its first members.
    pub async fn connect(
        server: SocketAddr,
        rooms: &[Room],
        per_room: usize,
    ) -> Result<Publishers> {
        let n = rooms.len();
        let counters = Arc::new(RoomCounters {
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        let mut commands = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for j in 0..per_room {
            for (r, room) in rooms.iter().enumerate() {
                let ws = open(server, &room.ws_path(j)).await?;
                let (tx, rx) = mpsc::channel(1);
                commands.push(tx);
                tasks.push(tokio::spawn(publish(ws, r, j, counters.clone(), rx)));
            }
        }
        Ok(Publishers {
            commands,
            counters,
            tasks,
        })
    }

    /// Every publisher sends its share of `total_rate` messages per second for `duration`,
    /// open loop.
    /// Returns how many messages were sent in all.
    async fn burst(&self, total_rate: f64, duration: Duration) -> Result<u64> {
        let rate = total_rate / self.commands.len() as f64;
        let mut done = Vec::new();
        let mut total = 0;
        for (k, tx) in self.commands.iter().enumerate() {
            let (done_tx, done_rx) = oneshot::channel();
            let offset = k as f64 / total_rate;
            // Every due time `offset + i / rate` that falls inside the step.
            let count = ((duration.as_secs_f64() - offset) * rate).ceil().max(0.0) as u64;
            total += count;
            tx.send(Burst {
                rate,
                offset: Duration::from_secs_f64(offset),
                count,
                duration,
                done: done_tx,
            })
            .await
            .map_err(|_| anyhow::anyhow!("a publisher connection ended"))?;
            done.push(done_rx);
        }
        for rx in done {
            rx.await
                .map_err(|_| anyhow::anyhow!("a publisher connection ended"))?;
        }
        Ok(total)
    }

    pub fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Counts refusals among what the server sends a publisher; false once the connection is
/// gone. The publisher's own copies of its messages are ignored: receivers count deliveries.
fn publisher_frame(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    room: usize,
    counters: &RoomCounters,
) -> bool {
    match frame {
        Some(Ok(Message::Text(text))) => {
            if text.as_str().contains("\"type\":\"error\"") {
                counters.errors[room].fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
        Some(Ok(_)) => true,
    }
}

async fn publish(
    mut ws: Ws,
    room: usize,
    me: usize,
    counters: Arc<RoomCounters>,
    mut commands: mpsc::Receiver<Burst>,
) {
    let mut seq = 0u64;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(Burst { rate, offset, count, duration, done }) = command else {
                    return;
                };
                let began = Instant::now();
                for i in 0..count {
                    let at = began + offset + Duration::from_secs_f64(i as f64 / rate);
                    loop {
                        tokio::select! {
                            biased;
                            () = tokio::time::sleep_until(at.into()) => break,
                            frame = ws.next() => if !publisher_frame(frame, room, &counters) {
                                return;
                            },
                        }
                    }
                    seq += 1;
                    let frame = json!({
                        "action": "message",
                        "content": bench_content(me, seq, micros_since_start(at)),
                    });
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                    counters.sent[room].fetch_add(1, Ordering::Relaxed);
                }
                // A step lasts its whole duration even when a slow publisher's last message
                // is due earlier, so rates are over the same time for everyone.
                loop {
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep_until((began + duration).into()) => break,
                        frame = ws.next() => if !publisher_frame(frame, room, &counters) {
                            return;
                        },
                    }
                }
                let _ = done.send(());
            }
            frame = ws.next() => if !publisher_frame(frame, room, &counters) {
                return;
            },
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One open-loop step of a fan-out scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub offered_msgs_per_s: f64,
    pub offered_deliveries_per_s: f64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub latency: Percentiles,
    pub server_cpu_s: f64,
    pub loadgen_cpu_s: f64,
    /// CPU seconds used by everything else on the machine during the step (noise).
    pub other_cpu_s: f64,
    pub deliveries_per_cpu_s: f64,
    /// Every client received every accepted message within the drain time.
    pub drained: bool,
    /// Messages not received (cumulative over the scenario): shortfall plus sequence gaps.
    pub missing: u64,
    pub duplicates: u64,
    pub dropped_connections: u64,
    pub refused_sends: u64,
    pub seconds: f64,
}

impl Step {
    /// The server could not keep up with the offered load.
    pub fn saturated(&self) -> bool {
        !self.drained || self.deliveries_per_s < 0.8 * self.offered_deliveries_per_s
    }
}

/// Runs one step: every room's publisher sends at its share of `total_rate` for `duration`,
/// then waits up to `drain` for every client to have received every accepted message.
pub async fn step(
    server_pid: u32,
    fleet: &Fleet,
    publishers: &Publishers,
    total_rate: f64,
    duration: Duration,
    drain: Duration,
) -> Result<Step> {
    let stats = &fleet.stats;
    stats.take_latency();
    let received_before = stats.total_received();
    let cpu_before = sys::cpu_seconds(server_pid)?;
    let self_before = sys::cpu_seconds(std::process::id())?;
    let busy_before = sys::machine_busy_seconds()?;
    let began = Instant::now();
    let sent = publishers.burst(total_rate, duration).await?;
    let deadline = Instant::now() + drain;
    let counters = &publishers.counters;
    let drained = loop {
        if stats.total_received() >= fleet.expected(counters) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let seconds = began.elapsed().as_secs_f64();
    let server_cpu_s = sys::cpu_seconds(server_pid)? - cpu_before;
    let loadgen_cpu_s = sys::cpu_seconds(std::process::id())? - self_before;
    let other_cpu_s =
        (sys::machine_busy_seconds()? - busy_before - server_cpu_s - loadgen_cpu_s).max(0.0);
    let received = stats.total_received();
    let deliveries = received - received_before;
    let expected = fleet.expected(counters);
    // Every message goes to every receiver in its room.
    let per_message = fleet.len() as f64 / publishers.counters.sent.len() as f64;
    let offered_msgs_per_s = sent as f64 / duration.as_secs_f64();
    Ok(Step {
        offered_msgs_per_s,
        offered_deliveries_per_s: offered_msgs_per_s * per_message,
        deliveries,
        deliveries_per_s: deliveries as f64 / seconds,
        latency: Percentiles::of(&stats.take_latency()),
        server_cpu_s,
        loadgen_cpu_s,
        other_cpu_s,
        deliveries_per_cpu_s: if server_cpu_s > 0.0 {
            deliveries as f64 / server_cpu_s
        } else {
            0.0
        },
        drained,
        missing: expected.saturating_sub(received) + stats.gaps.load(Ordering::Relaxed),
        duplicates: stats.duplicates.load(Ordering::Relaxed),
        dropped_connections: stats.dropped.load(Ordering::Relaxed),
        refused_sends: counters.errors(),
        seconds,
    })
}

/// What the durable-posts scenario measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Durable {
    pub senders: usize,
    pub acked: u64,
    pub errors: u64,
    pub msgs_per_s: f64,
    pub ack: Percentiles,
    pub server_cpu_s: f64,
    /// CPU the rest of the machine took meanwhile (a disturbed run is run again).
    pub other_cpu_s: f64,
    pub seconds: f64,
}

/// CPU time over a measurement: the server's, this process's (the load generator), and what
/// the rest of the machine used meanwhile.
struct CpuWatch {
    server_pid: u32,
    server: f64,
    me: f64,
    busy: f64,
}

impl CpuWatch {
    fn start(server_pid: u32) -> Result<CpuWatch> {
        Ok(CpuWatch {
            server_pid,
            server: sys::cpu_seconds(server_pid)?,
            me: sys::cpu_seconds(std::process::id())?,
            busy: sys::machine_busy_seconds()?,
        })
    }

    /// (server, load generator, other processes) CPU-seconds since the start.
    fn finish(&self) -> Result<(f64, f64, f64)> {
        let server = sys::cpu_seconds(self.server_pid)? - self.server;
        let me = sys::cpu_seconds(std::process::id())? - self.me;
        let other = (sys::machine_busy_seconds()? - self.busy - server - me).max(0.0);
        Ok((server, me, other))
    }
}

/// `rooms.len()` senders, one per room, each sending its next message as soon as the previous
/// one is acknowledged (its own copy, with its `client_id`, comes back after the commit).
pub async fn durable(
    server: SocketAddr,
    server_pid: u32,
    rooms: &[Room],
    duration: Duration,
) -> Result<Durable> {
    let mut sockets = Vec::new();
    for room in rooms {
        sockets.push(open(server, &room.ws_path(0)).await?);
    }
    let cpu = CpuWatch::start(server_pid)?;
    let began = Instant::now();
    let deadline = began + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(s, mut ws)| {
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let (mut acked, mut errors) = (0u64, 0u64);
                let mut n = 0u64;
                'send: while Instant::now() < deadline {
                    n += 1;
                    let client_id = format!("d{s}-{n}");
                    let needle = format!("\"client_id\":\"{client_id}\"");
                    let sent = Instant::now();
                    let frame = json!({
                        "action": "message",
                        "content": bench_content(0, n, micros_since_start(sent)),
                        "client_id": client_id,
                    });
                    ws.send(Message::text(frame.to_string())).await?;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) => {
                                let t = t.as_str();
                                if t.contains(&needle) {
                                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                                    acked += 1;
                                    continue 'send;
                                }
                                if t.contains("\"type\":\"error\"") {
                                    errors += 1;
                                    continue 'send;
                                }
                            }
                            Ok(Some(Ok(_))) => {}
                            _ => bail!("durable sender {s}: connection lost or ack timed out"),
                        }
                    }
                }
                Ok::<_, anyhow::Error>((latency, acked, errors))
            })
        })
        .collect();
    let mut latency = new_histogram();
    let (mut acked, mut errors) = (0, 0);
    for task in tasks {
        let (h, a, e) = task.await??;
        latency.add(&h).expect("same bounds");
        acked += a;
        errors += e;
    }
    let seconds = began.elapsed().as_secs_f64();
    let (server_cpu_s, _, other_cpu_s) = cpu.finish()?;
    Ok(Durable {
        senders: rooms.len(),
        acked,
        errors,
        msgs_per_s: acked as f64 / seconds,
        ack: Percentiles::of(&latency),
        server_cpu_s,
        other_cpu_s,
        seconds,
    })
}

/// What the history-paging scenario measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Paging {
    pub connections: usize,
    pub pages: u64,
    pub errors: u64,
    pub pages_per_s: f64,
    pub latency: Percentiles,
    pub mean_page_bytes: f64,
    pub server_cpu_s: f64,
    /// CPU the rest of the machine took meanwhile (a disturbed run is run again).
    pub other_cpu_s: f64,
    pub seconds: f64,
}

/// `connections` keep-alive clients, each fetching pages of 50 before a random message id of
/// the room, closed loop.
pub async fn paging(
    server: SocketAddr,
    server_pid: u32,
    room: &Room,
    max_id: i64,
    connections: usize,
    duration: Duration,
) -> Result<Paging> {
    let never = Arc::new(AtomicBool::new(false));
    paging_until(
        server,
        server_pid,
        room,
        max_id,
        connections,
        duration,
        never,
    )
    .await
}

/// [`paging`] that also ends (after each client's page in flight) once `stop` is set: the
/// read load measured beside another that may end sooner than `duration`.
pub async fn paging_until(
    server: SocketAddr,
    server_pid: u32,
    room: &Room,
    max_id: i64,
    connections: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Paging> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Http::connect(server).await?);
    }
    let cpu = CpuWatch::start(server_pid)?;
    let began = Instant::now();
    let deadline = began + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut http| {
            let path = format!("/api/v1/chat/{}/", room.id);
            let token = room.tokens[0].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let (mut pages, mut errors, mut bytes) = (0u64, 0u64, 0u64);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let before = rand::random_range(51..=max_id + 1);
                    let uri = format!("{path}?limit=50&before={before}");
                    let sent = Instant::now();
                    let (status, body) =
                        http.request(Method::GET, &uri, Some(&token), None).await?;
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                    if status.is_success() && body.len() > 1000 {
                        pages += 1;
                        bytes += body.len() as u64;
                    } else {
                        errors += 1;
                    }
                }
                Ok::<_, anyhow::Error>((latency, pages, errors, bytes))
            })
        })
        .collect();
    let mut latency = new_histogram();
    let (mut pages, mut errors, mut bytes) = (0, 0, 0);
    for task in tasks {
        let (h, p, e, b) = task.await??;
        latency.add(&h).expect("same bounds");
        pages += p;
        errors += e;
        bytes += b;
    }
    let seconds = began.elapsed().as_secs_f64();
    let (server_cpu_s, _, other_cpu_s) = cpu.finish()?;
    Ok(Paging {
        connections,
        pages,
        errors,
        pages_per_s: pages as f64 / seconds,
        latency: Percentiles::of(&latency),
        mean_page_bytes: if pages > 0 {
            bytes as f64 / pages as f64
        } else {
            0.0
        },
        server_cpu_s,
        other_cpu_s,
        seconds,
    })
}

/// What the mixed scenario measured: every operation acknowledged, and what of it the history
/// shows at the end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mixed {
    pub rooms: usize,
    pub posts: u64,
    pub edits: u64,
    pub reactions: u64,
    pub reads: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub latency: Percentiles,
    /// Acknowledged posts, edits and reactions the history does not show.
    pub lost: u64,
    pub server_cpu_s: f64,
    pub seconds: f64,
}

/// In each of `rooms` (two members each), a closed loop over REST: the first member posts;
/// every 2nd post edits the one before, every 3rd the second member reacts to it, every 4th
/// the second member marks it read. Then the room's history is read back and compared with
/// what was acknowledged.
pub async fn mixed(
    server: SocketAddr,
    server_pid: u32,
    rooms: &[Room],
    duration: Duration,
) -> Result<Mixed> {
    let mut clients = Vec::new();
    for _ in rooms {
        clients.push(Http::connect(server).await?);
    }
    let cpu_before = sys::cpu_seconds(server_pid)?;
    let began = Instant::now();
    let deadline = began + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(rooms.iter().cloned())
        .map(|(mut http, room)| {
            tokio::spawn(async move {
                let (a, b) = (room.tokens[0].clone(), room.tokens[1].clone());
                let post_path = format!("/api/v1/chat/{}/", room.id);
                let mut latency = new_histogram();
                let mut counts = [0u64; 5]; // posts, edits, reactions, reads, errors
                // What the history must show at the end: id -> (content, reacted).
                let mut expected: Vec<(i64, String, bool)> = Vec::new();
                let mut call = async |http: &mut Http,
                                      method: Method,
                                      path: &str,
                                      token: &str,
                                      body: Option<Value>|
                       -> Result<Option<Value>> {
                    let sent = Instant::now();
                    let (status, bytes) = http
                        .request(method, path, Some(token), body.as_ref())
                        .await?;
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                    Ok(status
                        .is_success()
                        .then(|| serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
                };
                let mut i = 0usize;
                while Instant::now() < deadline {
                    i += 1;
                    let content = format!("mixed {i} lorem ipsum");
                    let body = json!({ "content": content });
                    let Some(m) = call(&mut http, Method::POST, &post_path, &a, Some(body)).await?
                    else {
                        counts[4] += 1;
                        continue;
                    };
                    let id = m["id"].as_i64().unwrap_or(0);
                    counts[0] += 1;
                    expected.push((id, content, false));
                    if i.is_multiple_of(2) && expected.len() >= 2 {
                        let k = expected.len() - 2;
                        let edited = format!("{} edited", expected[k].1);
                        let path = format!("/api/v1/messages/{}/", expected[k].0);
                        let body = json!({ "content": edited });
                        match call(&mut http, Method::PATCH, &path, &a, Some(body)).await? {
                            Some(_) => {
                                expected[k].1 = edited;
                                counts[1] += 1;
                            }
                            None => counts[4] += 1,
                        }
                    }
                    if i.is_multiple_of(3) {
                        let path = format!("/api/v1/messages/{id}/reactions/%F0%9F%91%8D/");
                        match call(&mut http, Method::PUT, &path, &b, None).await? {
                            Some(_) => {
                                if let Some(last) = expected.last_mut() {
                                    last.2 = true;
                                }
                                counts[2] += 1;
                            }
                            None => counts[4] += 1,
                        }
                    }
                    if i.is_multiple_of(4) {
                        let path = format!("/api/v1/messages/{id}/update/");
                        match call(&mut http, Method::PATCH, &path, &b, None).await? {
                            Some(_) => counts[3] += 1,
                            None => counts[4] += 1,
                        }
                    }
                }
                // The history, oldest first, against what was acknowledged.
                let mut shown = std::collections::HashMap::new();
                let mut after = 0i64;
                loop {
                    let path = format!("/api/v1/chat/{}/?limit=200&after={after}", room.id);
                    let Some(page) = call(&mut http, Method::GET, &path, &a, None).await? else {
                        break;
                    };
                    let results = page["results"].as_array().cloned().unwrap_or_default();
                    for m in &results {
                        let reacted = m["reactions"].as_array().is_some_and(|r| !r.is_empty());
                        let content = m["content"].as_str().unwrap_or_default().to_string();
                        shown.insert(m["id"].as_i64().unwrap_or(0), (content, reacted));
                    }
                    match results.last() {
                        Some(last) if page["has_more"] == true => {
                            after = last["id"].as_i64().unwrap_or(after);
                        }
                        _ => break,
                    }
                }
                let lost = expected
                    .iter()
                    .filter(|(id, content, reacted)| {
                        shown
                            .get(id)
                            .is_none_or(|(c, r)| c != content || (*reacted && !r))
                    })
                    .count() as u64;
                Ok::<_, anyhow::Error>((latency, counts, lost))
            })
        })
        .collect();
    let mut latency = new_histogram();
    let mut counts = [0u64; 5];
    let mut lost = 0;
    for task in tasks {
        let (h, c, l) = task.await??;
        latency.add(&h).expect("same bounds");
        for (total, n) in counts.iter_mut().zip(c) {
            *total += n;
        }
        lost += l;
    }
    let seconds = began.elapsed().as_secs_f64();
    let ops: u64 = counts[..4].iter().sum();
    Ok(Mixed {
        rooms: rooms.len(),
        posts: counts[0],
        edits: counts[1],
        reactions: counts[2],
        reads: counts[3],
        errors: counts[4],
        ops_per_s: ops as f64 / seconds,
        latency: Percentiles::of(&latency),
        lost,
        server_cpu_s: sys::cpu_seconds(server_pid)? - cpu_before,
        seconds,
    })
}

/// What one phase of the search scenario measured: word queries that find one message and a
/// word in every message, in turn; or prefix queries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Searching {
    pub connections: usize,
    pub searches: u64,
    pub errors: u64,
    pub searches_per_s: f64,
    pub latency: Percentiles,
    /// A word that is in one message of the room.
    pub rare_word: Percentiles,
    /// A word that is in every message: the newest page of them.
    pub common_word: Percentiles,
    /// `consec*`, which every message matches (in the prefix phase).
    pub prefix: Percentiles,
    pub server_cpu_s: f64,
    pub seconds: f64,
}

/// `connections` keep-alive clients, each searching the seeded room's member's rooms in a
/// closed loop: a message's own number (one hit) and `lorem` (every message) in turn, or, with
/// `prefixes`, `consec*` (every message).
pub async fn searching(
    server: SocketAddr,
    server_pid: u32,
    room: &Room,
    rows: i64,
    connections: usize,
    duration: Duration,
    prefixes: bool,
) -> Result<Searching> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Http::connect(server).await?);
    }
    let cpu_before = sys::cpu_seconds(server_pid)?;
    let began = Instant::now();
    let deadline = began + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut http)| {
            let token = room.tokens[0].clone();
            tokio::spawn(async move {
                let mut kinds = [new_histogram(), new_histogram(), new_histogram()];
                let (mut searches, mut errors) = (0u64, 0u64);
                let mut turn = c;
                while Instant::now() < deadline {
                    let kind = if prefixes { 2 } else { turn % 2 };
                    turn += 1;
                    let q = match kind {
                        0 => rand::random_range(0..rows.max(1)).to_string(),
                        1 => "lorem".to_string(),
                        _ => "consec%2A".to_string(),
                    };
                    let uri = format!("/api/v1/search/?q={q}&limit=20");
                    let sent = Instant::now();
                    let (status, body) =
                        http.request(Method::GET, &uri, Some(&token), None).await?;
                    kinds[kind].saturating_record(sent.elapsed().as_micros() as u64);
                    // Every query finds something in the seeded room.
                    if status.is_success() && body.windows(10).any(|w| w == b"\"message\":") {
                        searches += 1;
                    } else {
                        errors += 1;
                    }
                }
                Ok::<_, anyhow::Error>((kinds, searches, errors))
            })
        })
        .collect();
    let mut all = new_histogram();
    let mut kinds = [new_histogram(), new_histogram(), new_histogram()];
    let (mut searches, mut errors) = (0, 0);
    for task in tasks {
        let (k, s, e) = task.await??;
        for (mine, theirs) in kinds.iter_mut().zip(&k) {
            mine.add(theirs).expect("same bounds");
            all.add(theirs).expect("same bounds");
        }
        searches += s;
        errors += e;
    }
    let seconds = began.elapsed().as_secs_f64();
    Ok(Searching {
        connections,
        searches,
        errors,
        searches_per_s: searches as f64 / seconds,
        latency: Percentiles::of(&all),
        rare_word: Percentiles::of(&kinds[0]),
        common_word: Percentiles::of(&kinds[1]),
        prefix: Percentiles::of(&kinds[2]),
        server_cpu_s: sys::cpu_seconds(server_pid)? - cpu_before,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sequence_and_time_from_a_message_frame() {
        let frame = format!(
            r#"{{"message":{{"id":7,"content":"{}","client_id":null}},"type":"message"}}"#,
            bench_content(3, 42, 123_456)
        );
        assert_eq!(
            parse_bench(&frame),
            Some(Stamp {
                publisher: 3,
                seq: 42,
                sent_us: 123_456
            })
        );
        assert_eq!(parse_bench(r#"{"type":"hello"}"#), None);
    }
}
