//! Process-wide counters and latency histograms, and their Prometheus text rendering.
//!
//! Every metric is a handful of relaxed atomics, so the hooks in hot paths (one line each in
//! the send path, the writer, the hub and the error reply) cost a few nanoseconds and take no
//! lock. Gauges that the application already knows (open sockets, active rooms) are read at
//! scrape time instead of being tracked twice.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::model::ErrorCode;

/// The metrics of this process.
pub static METRICS: Metrics = Metrics::new();

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections).
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }

    /// Counts one more until the returned guard is dropped.
    pub fn track(&'static self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds of the latency buckets, in microseconds: 100 µs to 10 s.
const BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// A latency histogram with fixed buckets (Prometheus `histogram`).
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_MICROS.len() + 1],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observes the time until the returned guard is dropped.
    pub fn start_timer(&'static self) -> Timer {
        Timer {
            histogram: self,
            started: Instant::now(),
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

pub struct Timer {
    histogram: &'static Histogram,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

/// An abuse bound of `[limits]` that refused something or shed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Signups,
    RoomsCreated,
    RoomsPerUser,
    RoomsAddedByOneUser,
    WsConnectsPerUser,
    WsConnectsPerIp,
    ReplayLength,
    ReplaysPerUser,
    ReplaysTotal,
    TcpPerIp,
    /// A new connection refused at the total cap, no idle one being there to close.
    TcpTotal,
    /// An idle keep-alive connection closed to make room for a new one.
    TcpShedIdle,
    /// An upload refused at `uploads_at_once_per_user`.
    UploadsAtOnce,
}

impl Bound {
    pub const ALL: [Bound; 13] = [
        Bound::Signups,
        Bound::RoomsCreated,
        Bound::RoomsPerUser,
        Bound::RoomsAddedByOneUser,
        Bound::WsConnectsPerUser,
        Bound::WsConnectsPerIp,
        Bound::ReplayLength,
        Bound::ReplaysPerUser,
        Bound::ReplaysTotal,
        Bound::TcpPerIp,
        Bound::TcpTotal,
        Bound::TcpShedIdle,
        Bound::UploadsAtOnce,
    ];

    /// The label value in `chat_refusals_total{limit="..."}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Signups => "signups_per_ip",
            Bound::RoomsCreated => "rooms_created_per_user",
            Bound::RoomsPerUser => "max_rooms_per_user",
            Bound::RoomsAddedByOneUser => "max_rooms_added_by_one_user",
            Bound::WsConnectsPerUser => "ws_connects_per_user",
            Bound::WsConnectsPerIp => "ws_connects_per_ip",
            Bound::ReplayLength => "max_replay_messages",
            Bound::ReplaysPerUser => "max_replays_per_user",
            Bound::ReplaysTotal => "max_replays_total",
            Bound::TcpPerIp => "max_tcp_connections_per_ip",
            Bound::TcpTotal => "max_tcp_connections",
            Bound::TcpShedIdle => "idle_connection_shed",
            Bound::UploadsAtOnce => "uploads_at_once_per_user",
        }
    }
}

pub struct Metrics {
    /// TCP (or TLS) connections being served over HTTP (until a WebSocket upgrade).
    pub http_connections: Gauge,
    pub http_connections_total: Counter,
    pub tls_handshake_failures: Counter,
    /// Messages committed by this process (not counting idempotent repeats).
    pub messages_stored: Counter,
    /// Events handed to room subscribers: one per subscriber per event.
    pub deliveries: Counter,
    /// From a send's arrival at the store to its commit and publication.
    pub send_latency: Histogram,
    /// From `BEGIN` to `COMMIT` of one group-commit batch.
    pub write_batch_latency: Histogram,
    pub write_batch_jobs: Counter,
    /// One WAL checkpoint, by the checkpointer thread or (rarely) the writer.
    pub checkpoint_latency: Histogram,
    /// Checkpoints the writer ran itself because the checkpointer fell behind.
    pub writer_checkpoints: Counter,
    /// Times the database began failing writes for its storage (disk full, I/O errors).
    pub storage_fault_episodes: Counter,
    /// Uploads stored, and the bytes of the uploads received (stored or not).
    pub uploads: Counter,
    pub upload_bytes: Counter,
    /// Decoding an uploaded image and making its thumbnails.
    pub thumbnail_latency: Histogram,
    /// Files the sweeper removed (no upload named them any more).
    pub files_removed: Counter,
    /// WebSocket sessions ended by the server for a reason of its own, by close code.
    pub sessions_closed_shutdown: Counter,
    pub sessions_closed_deactivated: Counter,
    /// WebSocket sessions that fell behind their event queue and were caught up from the
    /// database.
    pub websocket_resyncs: Counter,
    /// Errors answered, by code.
    rejected: [Counter; ErrorCode::ALL.len()],
    /// WebSocket upgrades refused, by error code.
    websocket_refused: [Counter; ErrorCode::ALL.len()],
    /// Refusals by the abuse bounds, by bound.
    refused: [Counter; Bound::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            http_connections: Gauge::new(),
            http_connections_total: Counter::new(),
            tls_handshake_failures: Counter::new(),
            messages_stored: Counter::new(),
            deliveries: Counter::new(),
            send_latency: Histogram::new(),
            write_batch_latency: Histogram::new(),
            write_batch_jobs: Counter::new(),
            checkpoint_latency: Histogram::new(),
            writer_checkpoints: Counter::new(),
            storage_fault_episodes: Counter::new(),
            uploads: Counter::new(),
            upload_bytes: Counter::new(),
            thumbnail_latency: Histogram::new(),
            files_removed: Counter::new(),
            sessions_closed_shutdown: Counter::new(),
            sessions_closed_deactivated: Counter::new(),
            websocket_resyncs: Counter::new(),
            rejected: [const { Counter::new() }; ErrorCode::ALL.len()],
            websocket_refused: [const { Counter::new() }; ErrorCode::ALL.len()],
            refused: [const { Counter::new() }; Bound::ALL.len()],
        }
    }

    /// Counts a request or frame answered with an error, by its error code.
    pub fn rejected(&self, code: ErrorCode) {
        self.rejected[code as usize].inc();
    }

    pub fn rejected_count(&self, code: ErrorCode) -> u64 {
        self.rejected[code as usize].get()
    }

    /// Counts one refused WebSocket upgrade (it is also counted as a rejected request).
    pub fn websocket_refused(&self, code: ErrorCode) {
        self.websocket_refused[code as usize].inc();
    }

    pub fn websocket_refused_count(&self, code: ErrorCode) -> u64 {
        self.websocket_refused[code as usize].get()
    }

    /// Counts one refusal (or shed connection) by an abuse bound.
    pub fn refused(&self, bound: Bound) {
        self.refused[bound as usize].inc();
    }

    pub fn refused_count(&self, bound: Bound) -> u64 {
        self.refused[bound as usize].get()
    }
}

/// Values read from the application at scrape time.
pub struct Snapshot {
    pub websocket_connections: u64,
    pub active_rooms: u64,
    /// Highest message id in the database (messages stored over the database's life).
    pub last_message_id: i64,
    pub uptime: Duration,
    /// Database reads and writes waiting for a thread.
    pub queued_reads: usize,
    pub queued_writes: usize,
    /// Whether the database's storage fails writes now.
    pub storage_failing: bool,
    /// Uploads stored, and their bytes (the same bytes uploaded twice count twice).
    pub uploads_stored: u64,
    pub upload_bytes_stored: u64,
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render(m: &Metrics, s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "chat_websocket_connections",
        "Open WebSocket connections.",
        s.websocket_connections as f64,
    );
    gauge(
        "chat_rooms_active",
        "Rooms with at least one open WebSocket connection.",
        s.active_rooms as f64,
    );
    gauge(
        "chat_http_connections",
        "Open HTTP connections (a WebSocket counts here until its upgrade).",
        m.http_connections.get() as f64,
    );
    gauge(
        "chat_last_message_id",
        "Highest message id in the database.",
        s.last_message_id as f64,
    );
    gauge(
        "chat_store_queued_reads",
        "Database reads waiting for a reader thread (refused past server.max_queued_reads).",
        s.queued_reads as f64,
    );
    gauge(
        "chat_store_queued_writes",
        "Database writes waiting for the writer (refused past server.max_queued_writes).",
        s.queued_writes as f64,
    );
    gauge(
        "chat_storage_failing",
        "1 while the database cannot store writes (disk full or failing), else 0.",
        if s.storage_failing { 1.0 } else { 0.0 },
    );
    gauge(
        "chat_uploads_stored",
        "Uploads the database holds.",
        s.uploads_stored as f64,
    );
    gauge(
        "chat_upload_bytes_stored",
        "Bytes of the uploads the database holds (an upload of the same bytes again counts again).",
        s.upload_bytes_stored as f64,
    );
    gauge(
        "chat_uptime_seconds",
        "Seconds since the server started.",
        s.uptime.as_secs_f64(),
    );

    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "chat_http_connections_total",
        "HTTP connections accepted.",
        m.http_connections_total.get(),
    );
    counter(
        "chat_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out.",
        m.tls_handshake_failures.get(),
    );
    counter(
        "chat_messages_stored_total",
        "Messages committed to the database by this process.",
        m.messages_stored.get(),
    );
    counter(
        "chat_deliveries_total",
        "Events handed to room subscribers (one per subscriber per event).",
        m.deliveries.get(),
    );
    counter(
        "chat_write_batch_jobs_total",
        "Writes committed through the group-commit writer.",
        m.write_batch_jobs.get(),
    );
    counter(
        "chat_websocket_resyncs_total",
        "WebSocket sessions that fell behind their event queue and were caught up from the database.",
        m.websocket_resyncs.get(),
    );
    counter(
        "chat_writer_checkpoints_total",
        "WAL checkpoints the writer ran itself because the WAL outgrew the background checkpointer.",
        m.writer_checkpoints.get(),
    );
    counter(
        "chat_uploads_total",
        "Uploads stored by this process.",
        m.uploads.get(),
    );
    counter(
        "chat_upload_received_bytes_total",
        "Bytes of uploads received, stored or refused.",
        m.upload_bytes.get(),
    );
    counter(
        "chat_files_removed_total",
        "Files the sweeper removed because no upload named them any more.",
        m.files_removed.get(),
    );
    counter(
        "chat_storage_fault_episodes_total",
        "Times the database began failing writes for its storage (disk full, I/O errors).",
        m.storage_fault_episodes.get(),
    );

    let _ = writeln!(
        out,
        "# HELP chat_websocket_closed_by_server_total WebSocket sessions the server closed, by reason.\n\
         # TYPE chat_websocket_closed_by_server_total counter\n\
         chat_websocket_closed_by_server_total{{reason=\"shutdown\"}} {}\n\
         chat_websocket_closed_by_server_total{{reason=\"deactivated\"}} {}",
        m.sessions_closed_shutdown.get(),
        m.sessions_closed_deactivated.get(),
    );

    let _ = writeln!(
        out,
        "# HELP chat_refusals_total Requests, connections and replays refused (or idle connections closed) by an abuse bound of [limits].\n\
         # TYPE chat_refusals_total counter"
    );
    for (bound, count) in Bound::ALL.iter().zip(&m.refused) {
        let _ = writeln!(
            out,
            "chat_refusals_total{{limit=\"{}\"}} {}",
            bound.as_str(),
            count.get()
        );
    }

    let _ = writeln!(
        out,
        "# HELP chat_websocket_refusals_total WebSocket upgrades refused before the switch, by error code.\n\
         # TYPE chat_websocket_refusals_total counter"
    );
    for (reason, count) in ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .zip(&m.websocket_refused)
    {
        let _ = writeln!(
            out,
            "chat_websocket_refusals_total{{reason=\"{reason}\"}} {}",
            count.get()
        );
    }

    let _ = writeln!(
        out,
        "# HELP chat_rejected_requests_total Requests and WebSocket frames answered with an error, by error code.\n\
         # TYPE chat_rejected_requests_total counter"
    );
    for (reason, count) in ErrorCode::ALL.iter().map(|c| c.as_str()).zip(&m.rejected) {
        let _ = writeln!(
            out,
            "chat_rejected_requests_total{{reason=\"{reason}\"}} {}",
            count.get()
        );
    }

    histogram(
        &mut out,
        "chat_send_seconds",
        "Time from a message reaching the store to its commit and publication.",
        &m.send_latency,
    );
    histogram(
        &mut out,
        "chat_write_batch_seconds",
        "Duration of one group-commit transaction, BEGIN to COMMIT.",
        &m.write_batch_latency,
    );
    histogram(
        &mut out,
        "chat_checkpoint_seconds",
        "Duration of one WAL checkpoint (copying committed pages into the database file).",
        &m.checkpoint_latency,
    );
    histogram(
        &mut out,
        "chat_thumbnail_seconds",
        "Decoding an uploaded image and making its two thumbnails.",
        &m.thumbnail_latency,
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bucket) in h.buckets.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = match BUCKETS_MICROS.get(i) {
            Some(micros) => format!("{}", *micros as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let m = Metrics::new();
        m.send_latency.observe(Duration::from_micros(50));
        m.send_latency.observe(Duration::from_millis(3));
        m.send_latency.observe(Duration::from_secs(60));
        m.rejected(ErrorCode::RateLimited);
        m.rejected(ErrorCode::UnknownAction);
        let text = render(
            &m,
            &Snapshot {
                websocket_connections: 2,
                active_rooms: 1,
                last_message_id: 7,
                uptime: Duration::from_secs(1),
                queued_reads: 0,
                queued_writes: 0,
                storage_failing: false,
                uploads_stored: 3,
                upload_bytes_stored: 4096,
            },
        );
        assert!(
            text.contains("chat_send_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("chat_send_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("chat_send_seconds_bucket{le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("chat_send_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("chat_send_seconds_count 3\n"), "{text}");
        assert!(text.contains("chat_rejected_requests_total{reason=\"rate_limited\"} 1\n"));
        assert!(text.contains("chat_rejected_requests_total{reason=\"unknown_action\"} 1\n"));
        assert!(text.contains("chat_rejected_requests_total{reason=\"not_found\"} 0\n"));
        assert!(text.contains("chat_websocket_connections 2\n"));
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
