//! The overload scenario: what chat-server does with more durable posts than it can store.
//!
//! On a fresh server it first finds the saturation rate of durable posts over REST (`POST
//! /api/v1/chat/<room>/`, answered 201 after the commit): a closed loop of `closed_senders`
//! keep-alive connections, each posting its next message as soon as the last is answered. Then
//! it offers an open-loop load at 0.5×, 1× and 2× that rate, one step after the other: a fixed
//! schedule of requests, each sent at its time whether or not earlier ones were answered, over
//! up to `open_connections` keep-alive connections (one request in flight on each). A request
//! that finds every connection busy waits for one; its latency counts from when it was due, so a
//! queue in the load generator is not hidden, and one that waited `TIMEOUT` is given up as a
//! timeout. Every outcome is counted: 201, 503 with the error code `overloaded` and a
//! `Retry-After` header (a refusal), any other answer, a connection error, a timeout. The
//! server's RSS is sampled every `SAMPLE_EVERY` through each step.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::abuse;
use crate::child::write_chat_config;
use crate::load::{Percentiles, new_histogram};
use crate::net::Http;
use crate::plot;
use crate::suite::{Env, Recorder, settle, start_chat};
use crate::sys;

/// Longest wait for a connection, and then for the answer, before a request is a timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The overload scenario's sizes: `full` for `bench/run`, `smoke` for `--smoke`.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadSizes {
    /// Rooms posted into (two members each), in turn.
    pub rooms: usize,
    /// Connections of the closed loop that finds the saturation rate, and how long it runs.
    pub closed_senders: usize,
    pub saturation_secs: f64,
    /// Connections of the open-loop steps: at most this many requests in flight. More than the
    /// server's queues hold (`max_queued_reads` 1,024, `max_queued_writes` 4,096), or the load
    /// generator, not the server, would be what bounds the queue.
    pub open_connections: usize,
    /// How long each step's schedule runs.
    pub step_secs: f64,
    /// Whether the picture is also copied to `bench/overload.svg` (full sizes only).
    pub keep_picture: bool,
}

impl OverloadSizes {
    pub fn full() -> OverloadSizes {
        OverloadSizes {
            rooms: 64,
            closed_senders: 64,
            saturation_secs: 10.0,
            open_connections: 12_000,
            step_secs: 30.0,
            keep_picture: true,
        }
    }

    pub fn smoke() -> OverloadSizes {
        OverloadSizes {
            rooms: 16,
            closed_senders: 16,
            saturation_secs: 1.5,
            open_connections: 1500,
            step_secs: 2.0,
            keep_picture: false,
        }
    }
}

/// The steps, as multiples of the saturation rate, with the scenario name of their figures.
const STEPS: [(f64, &str); 3] = [
    (0.5, "overload_0.5x"),
    (1.0, "overload_1x"),
    (2.0, "overload_2x"),
];

/// One answer, as the scenario counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// 503, code `overloaded`, with `Retry-After`.
    Refused,
    /// Any other answer (a 503 without the code or the header included).
    Other,
    /// The connection failed.
    ConnectionError,
    /// No connection free, or no answer, within `TIMEOUT`.
    Timeout,
}

fn classify(status: u16, has_retry_after: bool, body: &[u8]) -> Outcome {
    match status {
        201 => Outcome::Accepted,
        503 => {
            let code = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            if has_retry_after && code.as_deref() == Some("overloaded") {
                Outcome::Refused
            } else {
                Outcome::Other
            }
        }
        _ => Outcome::Other,
    }
}

/// What one second of a step saw, by when its requests were due.
struct Second {
    accepted: Histogram<u64>,
    accepted_sent: Histogram<u64>,
    refused: u64,
}

/// Everything a step's requests record.
struct StepTally {
    accepted: Mutex<Histogram<u64>>,
    refused: Mutex<Histogram<u64>>,
    /// The same from when each was sent: the server's part, without the wait for a free
    /// connection.
    accepted_sent: Mutex<Histogram<u64>>,
    refused_sent: Mutex<Histogram<u64>>,
    /// From when a request was due to when it was sent.
    lag: Mutex<Histogram<u64>>,
    seconds: Vec<Mutex<Second>>,
    other: AtomicU64,
    connection_errors: AtomicU64,
    timeouts: AtomicU64,
    /// The first answers of the `Other` kind, for the report.
    examples: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StepTally {
    fn new(secs: usize) -> StepTally {
        StepTally {
            accepted: Mutex::new(new_histogram()),
            refused: Mutex::new(new_histogram()),
            accepted_sent: Mutex::new(new_histogram()),
            refused_sent: Mutex::new(new_histogram()),
            lag: Mutex::new(new_histogram()),
            seconds: (0..secs.max(1))
                .map(|_| {
                    Mutex::new(Second {
                        accepted: new_histogram(),
                        accepted_sent: new_histogram(),
                        refused: 0,
                    })
                })
                .collect(),
            other: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    /// One request's outcome, with its latency from when it was due and from when it was sent.
    fn record(&self, outcome: Outcome, due_s: f64, latency: Duration, since_sent: Duration) {
        let us = latency.as_micros().max(1) as u64;
        let sent_us = since_sent.as_micros().max(1) as u64;
        let second = &self.seconds[(due_s as usize).min(self.seconds.len() - 1)];
        match outcome {
            Outcome::Accepted => {
                lock(&self.accepted).saturating_record(us);
                lock(&self.accepted_sent).saturating_record(sent_us);
                let mut second = lock(second);
                second.accepted.saturating_record(us);
                second.accepted_sent.saturating_record(sent_us);
            }
            Outcome::Refused => {
                lock(&self.refused).saturating_record(us);
                lock(&self.refused_sent).saturating_record(sent_us);
                lock(second).refused += 1;
            }
            Outcome::Other => {
                self.other.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::ConnectionError => {
                self.connection_errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Timeout => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The server's RSS at one moment of a step.
#[derive(Debug, Clone, Copy, Serialize)]
struct RssSample {
    t_s: f64,
    rss_kib: u64,
}

/// One open-loop step.
#[derive(Debug, Clone, Serialize)]
struct Step {
    multiple: f64,
    offered_per_s: f64,
    requests: u64,
    accepted: u64,
    accepted_per_s: f64,
    refused: u64,
    refused_share: f64,
    other: u64,
    connection_errors: u64,
    timeouts: u64,
    /// From when each request was due (a wait for a free connection included).
    accepted_latency: Percentiles,
    refused_latency: Percentiles,
    /// From when each was sent.
    accepted_sent_latency: Percentiles,
    refused_sent_latency: Percentiles,
    send_lag: Percentiles,
    rss_start_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    server_cpu_s: f64,
    seconds: f64,
    other_examples: Vec<String>,
    /// Per second of the schedule: accepted, refused, accepted p99 ms from when due and from
    /// when sent.
    per_second: Vec<(u64, u64, f64, f64)>,
    rss: Vec<RssSample>,
}

/// Runs the scenario on a fresh server and draws its picture.
pub(crate) async fn run(rec: &mut Recorder<'_>, env: &Env, sizes: &OverloadSizes) -> Result<()> {
    let db = env.work_dir.join("overload.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let config = write_chat_config(&env.work_dir)?;
    let server = start_chat(env, &config, &db).await?;
    let (addr, pid) = (server.addr, server.pid());
    let result = async {
        let people = abuse::users(addr, "overload", 2 * sizes.rooms).await?;
        let mut targets = Vec::new();
        for r in 0..sizes.rooms {
            let (owner, other) = (&people[r], &people[r + sizes.rooms]);
            let room = abuse::create_room(addr, owner, &[other.id], &format!("overload {r}"))
                .await?;
            targets.push((format!("/api/v1/chat/{room}/"), owner.token.clone()));
        }
        let targets = Arc::new(targets);

        let (rate, closed) = saturation(addr, &targets, sizes).await?;
        eprintln!(
            "  overload: saturation {rate:.0} posts/s (closed loop, {} connections, p99 {:.1} ms, {} not 201)",
            sizes.closed_senders, closed.1.p99_ms, closed.0
        );
        rec.figure("overload", "saturation_posts_per_s", rate);
        rec.figure("overload", "saturation_p99_ms", closed.1.p99_ms);
        rec.figure("overload", "saturation_not_201", closed.0 as f64);

        let pool = connect_pool(addr, sizes.open_connections).await?;
        let mut steps = Vec::new();
        for (multiple, name) in STEPS {
            settle(pid).await?;
            let s = step(addr, pid, &targets, &pool, (multiple, rate), sizes).await?;
            s.record(rec, name);
            steps.push(s);
        }
        rec.detail("overload", json!({ "saturation_posts_per_s": rate, "steps": steps }));
        Ok::<_, anyhow::Error>((rate, steps))
    }
    .await;
    let stopped = server.stop().await;
    let (rate, steps) = result?;
    stopped?;

    let svg = picture(rate, &steps, rec.run());
    let path = env.work_dir.join("overload.svg");
    std::fs::write(&path, &svg).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("  overload: picture written to {}", path.display());
    if sizes.keep_picture {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("overload.svg");
        std::fs::write(&kept, &svg).with_context(|| format!("writing {}", kept.display()))?;
        eprintln!("  overload: picture copied to {}", kept.display());
    }
    Ok(())
}

impl Step {
    fn record(&self, rec: &mut Recorder<'_>, name: &'static str) {
        eprintln!(
            "  {name}: offered {:.0}/s, accepted {:.0}/s, refused {:.1}%, accepted p50 {:.1} p99 {:.1} ms, \
             refused p99 {:.1} ms, other {}, connection errors {}, timeouts {}, RSS {:.1} -> peak {:.1} MiB",
            self.offered_per_s,
            self.accepted_per_s,
            100.0 * self.refused_share,
            self.accepted_latency.p50_ms,
            self.accepted_latency.p99_ms,
            self.refused_latency.p99_ms,
            self.other,
            self.connection_errors,
            self.timeouts,
            self.rss_start_kib as f64 / 1024.0,
            self.rss_peak_kib as f64 / 1024.0,
        );
        for example in &self.other_examples {
            eprintln!("  {name}: WARNING: an answer neither 201 nor 503 overloaded: {example}");
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        rec.figure(name, "offered_per_s", self.offered_per_s);
        rec.figure(name, "accepted_per_s", self.accepted_per_s);
        rec.figure(name, "refused_share", self.refused_share);
        rec.figure(name, "accepted_p50_ms", self.accepted_latency.p50_ms);
        rec.figure(name, "accepted_p99_ms", self.accepted_latency.p99_ms);
        rec.figure(name, "accepted_max_ms", self.accepted_latency.max_ms);
        rec.figure(name, "refused_p50_ms", self.refused_latency.p50_ms);
        rec.figure(name, "refused_p99_ms", self.refused_latency.p99_ms);
        rec.figure(
            name,
            "accepted_p50_from_send_ms",
            self.accepted_sent_latency.p50_ms,
        );
        rec.figure(
            name,
            "accepted_p99_from_send_ms",
            self.accepted_sent_latency.p99_ms,
        );
        rec.figure(
            name,
            "refused_p99_from_send_ms",
            self.refused_sent_latency.p99_ms,
        );
        rec.figure(name, "other_answers", self.other as f64);
        rec.figure(name, "connection_errors", self.connection_errors as f64);
        rec.figure(name, "timeouts", self.timeouts as f64);
        rec.figure(name, "send_lag_p99_ms", self.send_lag.p99_ms);
        rec.figure(name, "rss_start_mib", mib(self.rss_start_kib));
        rec.figure(name, "rss_peak_mib", mib(self.rss_peak_kib));
        rec.figure(name, "rss_end_mib", mib(self.rss_end_kib));
    }
}

/// The closed loop: posts acknowledged per second, and (answers other than 201, latency).
async fn saturation(
    addr: SocketAddr,
    targets: &Arc<Vec<(String, String)>>,
    sizes: &OverloadSizes,
) -> Result<(f64, (u64, Percentiles))> {
    let mut clients = Vec::new();
    for _ in 0..sizes.closed_senders {
        clients.push(Http::connect(addr).await?);
    }
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(sizes.saturation_secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut http)| {
            let targets = targets.clone();
            tokio::spawn(async move {
                let (path, token) = &targets[c % targets.len()];
                let mut latency = new_histogram();
                let (mut acked, mut other) = (0u64, 0u64);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let body =
                        json!({"content": format!("closed {c} {n} lorem ipsum dolor sit amet")});
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(
                        TIMEOUT,
                        http.request(Method::POST, path, Some(token), Some(&body)),
                    )
                    .await
                    .context("a closed-loop post got no answer")??;
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                    if answer.0.as_u16() == 201 {
                        acked += 1;
                    } else {
                        other += 1;
                    }
                }
                Ok::<_, anyhow::Error>((latency, acked, other))
            })
        })
        .collect();
    let mut latency = new_histogram();
    let (mut acked, mut other) = (0, 0);
    for task in tasks {
        let (h, a, o) = task.await??;
        latency.add(&h).expect("same bounds");
        acked += a;
        other += o;
    }
    let rate = acked as f64 / began.elapsed().as_secs_f64();
    anyhow::ensure!(rate > 0.0, "no post was acknowledged in the closed loop");
    Ok((rate, (other, Percentiles::of(&latency))))
}

/// Idle keep-alive connections the steps' requests take in turn.
struct Pool {
    idle: Mutex<Vec<Http>>,
    /// One permit per connection: a request in flight holds one.
    free: Arc<Semaphore>,
    size: usize,
}

async fn connect_pool(addr: SocketAddr, size: usize) -> Result<Arc<Pool>> {
    let idle: Vec<Http> = futures_util::stream::iter(0..size)
        .map(|_| Http::connect(addr))
        .buffer_unordered(64)
        .try_collect()
        .await
        .context("opening the open loop's connections")?;
    Ok(Arc::new(Pool {
        idle: Mutex::new(idle),
        free: Arc::new(Semaphore::new(size)),
        size,
    }))
}

/// One open-loop step at `multiple` times the `saturation` rate for `sizes.step_secs`.
async fn step(
    addr: SocketAddr,
    pid: u32,
    targets: &Arc<Vec<(String, String)>>,
    pool: &Arc<Pool>,
    (multiple, saturation): (f64, f64),
    sizes: &OverloadSizes,
) -> Result<Step> {
    let rate = multiple * saturation;
    let secs = sizes.step_secs;
    let count = (rate * secs).round().max(1.0) as u64;
    let tally = Arc::new(StepTally::new(secs.ceil() as usize));
    let cpu_before = sys::cpu_seconds(pid)?;
    let began = Instant::now();

    // RSS through the step, until every request is answered or given up.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        // Bounded: the schedule, the last answers' timeout and a margin.
        let limit = Duration::from_secs_f64(secs) + 2 * TIMEOUT + Duration::from_secs(10);
        loop {
            let last = tokio::select! {
                _ = &mut stop_rx => true,
                _ = tick.tick() => began.elapsed() >= limit,
            };
            if let Ok(rss_kib) = sys::rss_kib(pid) {
                samples.push(RssSample {
                    t_s: began.elapsed().as_secs_f64(),
                    rss_kib,
                });
            }
            if last {
                return samples;
            }
        }
    });

    for i in 0..count {
        let due = began + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let due_s = i as f64 / rate;
        let permit = match tokio::time::timeout_at(
            (due + TIMEOUT).into(),
            pool.free.clone().acquire_owned(),
        )
        .await
        {
            Ok(permit) => permit.expect("the pool's semaphore is never closed"),
            Err(_) => {
                tally.record(Outcome::Timeout, due_s, TIMEOUT, Duration::ZERO);
                continue;
            }
        };
        lock(&tally.lag).saturating_record(due.elapsed().as_micros().max(1) as u64);
        let (pool, tally, targets) = (pool.clone(), tally.clone(), targets.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let (path, token) = &targets[i as usize % targets.len()];
            // The server closes keep-alive connections idle for `header_read_timeout_secs`
            // (30 s): those are dropped here, not counted as failed requests.
            let taken = {
                let mut idle = lock(&pool.idle);
                std::iter::from_fn(|| idle.pop()).find(|http| !http.is_closed())
            };
            let body = json!({"content": format!("open {i} lorem ipsum dolor sit amet")});
            let answer = tokio::time::timeout(TIMEOUT, async {
                let mut http = match taken {
                    Some(http) => http,
                    None => Http::connect(addr).await?,
                };
                let answer = http
                    .request_with_headers(Method::POST, path, Some(token), Some(&body))
                    .await?;
                Ok::<_, anyhow::Error>((http, answer))
            })
            .await;
            let outcome = match answer {
                Ok(Ok((http, (status, headers, bytes)))) => {
                    lock(&pool.idle).push(http);
                    let outcome =
                        classify(status.as_u16(), headers.contains_key("retry-after"), &bytes);
                    if outcome == Outcome::Other {
                        let mut examples = lock(&tally.examples);
                        if examples.len() < 5 {
                            examples.push(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&bytes)
                            ));
                        }
                    }
                    outcome
                }
                // The connection is dropped; the next request on this permit opens a new one.
                Ok(Err(_)) => Outcome::ConnectionError,
                Err(_) => Outcome::Timeout,
            };
            tally.record(outcome, due_s, due.elapsed(), sent.elapsed());
            drop(permit);
        });
    }
    let scheduled = began.elapsed().as_secs_f64();
    // Every request answered or given up: all the permits back.
    let all = u32::try_from(pool.size).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        TIMEOUT + Duration::from_secs(5),
        pool.free.acquire_many(all),
    )
    .await;
    let seconds = began.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let rss = sampler.await.unwrap_or_default();
    let server_cpu_s = sys::cpu_seconds(pid)? - cpu_before;

    let accepted_h = lock(&tally.accepted).clone();
    let refused_h = lock(&tally.refused).clone();
    let accepted = accepted_h.len();
    let refused = refused_h.len();
    let per_second = tally
        .seconds
        .iter()
        .map(|s| {
            let s = lock(s);
            (
                s.accepted.len(),
                s.refused,
                s.accepted.value_at_quantile(0.99) as f64 / 1000.0,
                s.accepted_sent.value_at_quantile(0.99) as f64 / 1000.0,
            )
        })
        .collect();
    let rss_of = |s: Option<&RssSample>| s.map_or(0, |s| s.rss_kib);
    Ok(Step {
        multiple,
        offered_per_s: count as f64 / secs,
        requests: count,
        accepted,
        accepted_per_s: accepted as f64 / scheduled.max(secs),
        refused,
        refused_share: refused as f64 / count as f64,
        other: tally.other.load(Ordering::Relaxed),
        connection_errors: tally.connection_errors.load(Ordering::Relaxed),
        timeouts: tally.timeouts.load(Ordering::Relaxed),
        accepted_latency: Percentiles::of(&accepted_h),
        refused_latency: Percentiles::of(&refused_h),
        accepted_sent_latency: Percentiles::of(&lock(&tally.accepted_sent)),
        refused_sent_latency: Percentiles::of(&lock(&tally.refused_sent)),
        send_lag: Percentiles::of(&lock(&tally.lag)),
        rss_start_kib: rss_of(rss.first()),
        rss_peak_kib: rss.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_end_kib: rss_of(rss.last()),
        server_cpu_s,
        seconds,
        other_examples: lock(&tally.examples).clone(),
        per_second,
        rss,
    })
}

/// Accepted p99 per second, RSS through each step, and the 2× step's answers per second.
fn picture(rate: f64, steps: &[Step], run: usize) -> String {
    let label = |s: &Step| format!("{}× ({:.0}/s)", s.multiple, s.offered_per_s);
    let p99_of = |s: &Step, from_due: bool| {
        s.per_second
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 + 0.5, if from_due { p.2 } else { p.3 }))
            .collect()
    };
    let mut p99: Vec<plot::Series> = steps
        .iter()
        .map(|s| plot::Series::new(format!("{} from send", label(s)), p99_of(s, false)))
        .collect();
    if let Some(top) = steps.last() {
        p99.push(plot::Series::new(
            format!("{} from due", label(top)),
            p99_of(top, true),
        ));
    }
    let rss = steps
        .iter()
        .map(|s| {
            plot::Series::new(
                label(s),
                s.rss
                    .iter()
                    .map(|r| (r.t_s, r.rss_kib as f64 / 1024.0))
                    .collect(),
            )
        })
        .collect();
    let mut answers = Vec::new();
    if let Some(top) = steps.last() {
        let per = |f: fn(&(u64, u64, f64, f64)) -> u64| {
            top.per_second
                .iter()
                .enumerate()
                .map(|(i, p)| (i as f64 + 0.5, f(p) as f64))
                .collect()
        };
        answers.push(plot::Series::new("201 accepted", per(|p| p.0)));
        answers.push(plot::Series::new("503 overloaded", per(|p| p.1)));
    }
    let top_label = steps.last().map(label).unwrap_or_default();
    let panels = [
        plot::Panel {
            title: "p99 latency of accepted posts by the second they were due: from when sent, \
                    and from when due (with the wait for a free connection)"
                .into(),
            x_label: "seconds since the step began".into(),
            y_label: "p99 (ms)".into(),
            series: p99,
            bands: Vec::new(),
        },
        plot::Panel {
            title: "server RSS through each step".into(),
            x_label: "seconds since the step began".into(),
            y_label: "RSS (MiB)".into(),
            series: rss,
            bands: Vec::new(),
        },
        plot::Panel {
            title: format!("answers per second at {top_label}"),
            x_label: "seconds since the step began".into(),
            y_label: "requests per second".into(),
            series: answers,
            bands: Vec::new(),
        },
    ];
    plot::svg(
        &format!(
            "chat-server under an open-loop load of durable REST posts: saturation {rate:.0}/s (run {run})"
        ),
        &panels,
        220.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_503_overloaded_with_retry_after_only() {
        let body = br#"{"error":{"code":"overloaded","message":"the server is busy"}}"#;
        assert_eq!(classify(201, false, b"{}"), Outcome::Accepted);
        assert_eq!(classify(503, true, body), Outcome::Refused);
        assert_eq!(classify(503, false, body), Outcome::Other);
        let full = br#"{"error":{"code":"storage_full","message":"disk"}}"#;
        assert_eq!(classify(503, true, full), Outcome::Other);
        assert_eq!(classify(429, true, body), Outcome::Other);
    }

    #[test]
    fn outcomes_land_in_the_second_they_were_due() {
        let tally = StepTally::new(3);
        let ms = Duration::from_millis;
        tally.record(Outcome::Accepted, 0.2, ms(4), ms(3));
        tally.record(Outcome::Refused, 2.5, ms(1), ms(1));
        // A request due after the schedule's last second counts in that second.
        tally.record(Outcome::Refused, 7.0, ms(1), ms(1));
        tally.record(Outcome::Timeout, 1.0, TIMEOUT, Duration::ZERO);
        assert_eq!(lock(&tally.seconds[0]).accepted.len(), 1);
        assert_eq!(lock(&tally.seconds[2]).refused, 2);
        assert_eq!(lock(&tally.refused).len(), 2);
        assert_eq!(tally.timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_picture_has_a_line_per_step_and_the_top_steps_answers() {
        let step = |multiple: f64| Step {
            multiple,
            offered_per_s: 100.0 * multiple,
            requests: 10,
            accepted: 5,
            accepted_per_s: 5.0,
            refused: 5,
            refused_share: 0.5,
            other: 0,
            connection_errors: 0,
            timeouts: 0,
            accepted_latency: Percentiles::of(&new_histogram()),
            refused_latency: Percentiles::of(&new_histogram()),
            accepted_sent_latency: Percentiles::of(&new_histogram()),
            refused_sent_latency: Percentiles::of(&new_histogram()),
            send_lag: Percentiles::of(&new_histogram()),
            rss_start_kib: 1024,
            rss_peak_kib: 2048,
            rss_end_kib: 1024,
            server_cpu_s: 1.0,
            seconds: 2.0,
            other_examples: Vec::new(),
            per_second: vec![(5, 0, 2.0, 1.0), (0, 5, 3.0, 2.0)],
            rss: vec![
                RssSample {
                    t_s: 0.0,
                    rss_kib: 1024,
                },
                RssSample {
                    t_s: 1.0,
                    rss_kib: 2048,
                },
            ],
        };
        let svg = picture(100.0, &[step(0.5), step(1.0), step(2.0)], 1);
        assert_eq!(svg.matches("<polyline").count(), 4 + 3 + 2);
        assert!(svg.contains("2× (200/s) from due (peak 3.0)"));
        assert!(svg.contains("0.5× (50/s) from send (peak 2.0)"));
        assert!(svg.contains("503 overloaded (peak 5.0)"));
    }
}
