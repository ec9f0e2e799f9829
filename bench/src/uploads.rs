//! The uploads scenario: what 25 MiB uploads cost the reads beside them, how much of them the
//! server holds in memory, and how fast it makes thumbnails. It runs on the suite's server
//! process, in the seeded history room, after the other scenarios.
//!
//! 1. One upload alone, for the server's RSS during a single 25 MiB upload (docs/CONTRACT.md:
//!    "server RSS grows < 4 MiB during it").
//! 2. The history scenario's read load ([`load::paging`]: pages of 50 before a random id,
//!    closed loop) alone, then again while `uploaders` users each upload `file_bytes` files
//!    back to back as raw bodies (one in flight per user), until `max_files` have been sent
//!    or the read load's time is up. Every file is the same random bytes with its own number
//!    near the start, so content addressing stores each one. The read load of the second
//!    phase ends when the first uploader finds nothing left to send.
//! 3. A photo-like JPEG (`photo_width` × `photo_height`, made once with the `image` crate)
//!    uploaded `photo_uploads` times from one client, then from two at once; each copy differs
//!    in a number in a comment segment. The server's own `chat_thumbnail_seconds` histogram
//!    (read from `/metrics` before and after) gives the time spent decoding and scaling.
//!
//! The server's RSS (and its anonymous part, the heap) is sampled every `SAMPLE_EVERY` from
//! the first upload to the end of part 2 and drawn with the upload phase marked. Disk use is
//! bounded by `max_files` and `photo_uploads`; the suite removes the files directory when its
//! server stops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::{self, Paging, Percentiles, Room, new_histogram};
use crate::net::Http;
use crate::plot;
use crate::suite::{Recorder, settle};
use crate::sys;

const MIB: f64 = 1024.0 * 1024.0;
/// How often the server's RSS is sampled: often enough to see one upload's peak.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// Longest wait for one upload's answer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Where each upload's number is written in its bytes: after a fixed prefix, so every file
/// sniffs the same (`application/octet-stream`) and hashes differently.
const NUMBER_AT: usize = 16;
const PREFIX: &[u8; NUMBER_AT] = b"chat-bench blob\0";

/// The uploads scenario's sizes: `full` for `bench/run`, `smoke` for `--smoke`.
#[derive(Debug, Clone, Serialize)]
pub struct UploadSizes {
    /// Users uploading beside the read load, one upload in flight each.
    pub uploaders: usize,
    /// Bytes of each of their files (the default `limits.max_upload_bytes`).
    pub file_bytes: usize,
    /// Most such files sent in one run, the one uploaded alone included: the disk they take.
    pub max_files: u64,
    /// The photo of part 3 and how many times it is uploaded from each number of clients.
    pub photo_width: u32,
    pub photo_height: u32,
    pub photo_uploads: usize,
    /// Whether the picture is also copied to `bench/uploads.svg` (full sizes only).
    pub keep_picture: bool,
}

impl UploadSizes {
    pub fn full() -> UploadSizes {
        UploadSizes {
            uploaders: 4,
            file_bytes: 25 * 1024 * 1024,
            // 1.7 GiB, and the photos' ~0.2 GiB: under 2 GiB on disk.
            max_files: 70,
            photo_width: 4000,
            photo_height: 3000,
            photo_uploads: 12,
            keep_picture: true,
        }
    }

    pub fn smoke() -> UploadSizes {
        UploadSizes {
            uploaders: 2,
            file_bytes: 25 * 1024 * 1024,
            max_files: 3,
            photo_width: 1600,
            photo_height: 1200,
            photo_uploads: 2,
            keep_picture: false,
        }
    }
}

/// What the scenario runs against: the suite's server and its seeded history room.
pub(crate) struct Target<'a> {
    pub addr: SocketAddr,
    pub pid: u32,
    pub history: &'a Room,
    pub history_max_id: i64,
    pub paging_connections: usize,
    pub paging: Duration,
    /// One token per uploader, none of them the history reader's.
    pub uploaders: Vec<String>,
    pub work_dir: &'a Path,
}

/// The server's memory at one moment, since the scenario began.
#[derive(Debug, Clone, Copy, Serialize)]
struct RssSample {
    t_s: f64,
    rss_kib: u64,
    anon_kib: u64,
    /// Mapped file pages: for chat-server, mostly the memory-mapped database.
    file_kib: u64,
}

/// Samples the server's RSS until stopped.
struct Sampler {
    began: Instant,
    samples: Arc<Mutex<Vec<RssSample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let began = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (samples, stop) = (samples.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if let (Ok(rss_kib), Ok((anon_kib, file_kib, _))) =
                        (sys::rss_kib(pid), sys::rss_parts_kib(pid))
                    {
                        lock(&samples).push(RssSample {
                            t_s: began.elapsed().as_secs_f64(),
                            rss_kib,
                            anon_kib,
                            file_kib,
                        });
                    }
                }
            })
        };
        Sampler {
            began,
            samples,
            stop,
            task,
        }
    }

    /// Seconds since the scenario began.
    fn now(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    async fn finish(self) -> Vec<RssSample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.samples))
    }
}

/// The largest RSS and anonymous RSS sampled from `from` to `to` (seconds), in KiB.
fn peak(samples: &[RssSample], from: f64, to: f64) -> (u64, u64) {
    samples
        .iter()
        .filter(|s| s.t_s >= from && s.t_s <= to)
        .fold((0, 0), |(r, a), s| (r.max(s.rss_kib), a.max(s.anon_kib)))
}

/// The RSS and anonymous RSS now, in KiB.
fn rss_now(pid: u32) -> Result<(u64, u64)> {
    Ok((sys::rss_kib(pid)?, sys::rss_parts_kib(pid)?.0))
}

/// A file of the uploads: `base` with `n` written at [`NUMBER_AT`].
fn numbered(base: &[u8], n: u64) -> Bytes {
    let mut bytes = base.to_vec();
    bytes[NUMBER_AT..NUMBER_AT + 8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(bytes)
}

/// A fast deterministic generator (splitmix64) for the files' bytes and the photo's grain.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` random bytes starting with [`PREFIX`], then room for a number.
fn random_file(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    let mut state = 0x0c4a_7be7_c0de_u64;
    while bytes.len() < len {
        bytes.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    bytes.truncate(len);
    bytes[..NUMBER_AT].copy_from_slice(PREFIX);
    bytes
}

/// One upload's answer, as the scenario counts it.
#[derive(Debug)]
enum Answer {
    /// 201 with the size sent; the JSON.
    Stored(Value),
    /// Anything else, described.
    Failed(String),
}

/// `POST /api/v1/uploads/?filename=` with `body` as it is.
async fn upload(http: &mut Http, token: &str, filename: &str, body: Bytes) -> Answer {
    let size = body.len() as u64;
    let path = format!("/api/v1/uploads/?filename={filename}");
    let sent = tokio::time::timeout(
        UPLOAD_TIMEOUT,
        http.send(
            Method::POST,
            &path,
            Some(token),
            Some("application/octet-stream"),
            body,
        ),
    )
    .await;
    match sent {
        Ok(Ok((status, _, bytes))) if status.as_u16() == 201 => {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v["size"].as_u64() == Some(size) => Answer::Stored(v),
                _ => Answer::Failed(format!("201 {}", String::from_utf8_lossy(&bytes))),
            }
        }
        Ok(Ok((status, _, bytes))) => Answer::Failed(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        )),
        Ok(Err(e)) => Answer::Failed(format!("connection: {e:#}")),
        Err(_) => Answer::Failed(format!("no answer in {} s", UPLOAD_TIMEOUT.as_secs())),
    }
}

/// What the uploaders of one phase did.
#[derive(Default)]
struct UploadTally {
    latency: Option<Histogram<u64>>,
    stored: u64,
    bytes: u64,
    errors: u64,
    examples: Vec<String>,
    /// When each upload was answered (seconds since the scenario began) and its bytes.
    done: Vec<(f64, u64)>,
}

impl UploadTally {
    fn add(&mut self, other: UploadTally) {
        match (&mut self.latency, other.latency) {
            (Some(h), Some(o)) => h.add(&o).expect("same bounds"),
            (slot @ None, o) => *slot = o,
            (Some(_), None) => {}
        }
        self.stored += other.stored;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.examples.extend(other.examples);
        self.done.extend(other.done);
    }

    fn latency(&self) -> Percentiles {
        Percentiles::of(self.latency.as_ref().unwrap_or(&new_histogram()))
    }
}

/// One uploader: files of `base` numbered from the shared `next`, back to back, until
/// `max_files` are taken (then it sets `stop`), `stop` is set or `deadline` passes.
#[allow(clippy::too_many_arguments)]
async fn uploader(
    addr: SocketAddr,
    token: String,
    base: Arc<Vec<u8>>,
    next: Arc<AtomicU64>,
    max_files: u64,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    began: Instant,
) -> Result<UploadTally> {
    let mut tally = UploadTally {
        latency: Some(new_histogram()),
        ..UploadTally::default()
    };
    let mut http = Http::connect(addr).await?;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= max_files {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        let body = numbered(&base, n);
        let size = body.len() as u64;
        let sent = Instant::now();
        match upload(&mut http, &token, &format!("bench-{n}.bin"), body).await {
            Answer::Stored(_) => {
                if let Some(h) = &mut tally.latency {
                    h.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                }
                tally.stored += 1;
                tally.bytes += size;
                tally.done.push((began.elapsed().as_secs_f64(), size));
            }
            Answer::Failed(why) => {
                tally.errors += 1;
                if tally.examples.len() < 3 {
                    tally.examples.push(why);
                }
                http = Http::connect(addr).await?;
            }
        }
    }
    Ok(tally)
}

/// `chat_thumbnail_seconds` `(sum, count)` from the server's `/metrics`.
async fn thumbnail_histogram(addr: SocketAddr) -> Result<(f64, f64)> {
    let mut http = Http::connect(addr).await?;
    let (status, body) = http.request(Method::GET, "/metrics", None, None).await?;
    anyhow::ensure!(status.is_success(), "/metrics: HTTP {status}");
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .with_context(|| format!("/metrics has no {name}"))
    };
    Ok((
        value("chat_thumbnail_seconds_sum ")?,
        value("chat_thumbnail_seconds_count ")?,
    ))
}

/// The photo of part 3, encoded once per process, with where its number goes.
struct Photo {
    width: u32,
    height: u32,
    jpeg: Vec<u8>,
    /// Offset of the 8 bytes of the comment segment a copy's number is written to.
    number_at: usize,
}

static PHOTO: OnceLock<Photo> = OnceLock::new();

/// A photo-like picture: a sky fading to a horizon, a sun, hills and a textured ground, with
/// fine grain all over, so the encoder and the server's decoder have real detail to work on.
fn photo_pixels(width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as f32, height as f32);
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    let mut state = 0x5eed_u64;
    let (sun_x, sun_y, sun_r) = (0.72 * w, 0.22 * h, 0.06 * w);
    for y in 0..height {
        let fy = y as f32;
        for x in 0..width {
            let fx = x as f32;
            let hill = 0.55 * h
                + 0.06 * h * (fx / w * 9.0).sin()
                + 0.025 * h * (fx / w * 31.0 + 1.3).sin();
            let (mut r, mut g, mut b) = if fy < hill {
                let t = fy / hill;
                (90.0 + 120.0 * t, 140.0 + 80.0 * t, 230.0 - 30.0 * t)
            } else {
                let t = (fy - hill) / (h - hill).max(1.0);
                let texture = 18.0 * ((fx * 0.05).sin() * (fy * 0.07).cos())
                    + 10.0 * ((fx * 0.011 + fy * 0.017).sin());
                (
                    70.0 + 40.0 * t + texture,
                    110.0 - 30.0 * t + texture,
                    50.0 + 10.0 * t + 0.5 * texture,
                )
            };
            let d = ((fx - sun_x).powi(2) + (fy - sun_y).powi(2)).sqrt();
            if d < sun_r * 3.0 {
                let glow = (1.0 - d / (sun_r * 3.0)).powi(2) * if d < sun_r { 1.0 } else { 0.6 };
                r += (255.0 - r) * glow;
                g += (240.0 - g) * glow;
                b += (180.0 - b) * glow;
            }
            let grain = splitmix(&mut state);
            let noise = |k: u32| ((grain >> (k * 8)) & 0x0f) as f32 - 7.5;
            for (v, k) in [(r, 0), (g, 1), (b, 2)] {
                rgb.push((v + noise(k)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    rgb
}

/// The photo as a JPEG with a comment segment (`COM`) holding 8 bytes for a copy's number,
/// inserted after the `SOI` marker and the encoder's `APP0` segment, if any.
fn make_photo(width: u32, height: u32) -> Result<Photo> {
    use image::ImageEncoder;
    let rgb = photo_pixels(width, height);
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 90).write_image(
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )?;
    anyhow::ensure!(
        encoded.starts_with(&[0xff, 0xd8]),
        "the encoder wrote no SOI"
    );
    let mut at = 2;
    if encoded[at..].starts_with(&[0xff, 0xe0]) {
        at += 2 + u16::from_be_bytes([encoded[at + 2], encoded[at + 3]]) as usize;
    }
    let text = b"chat-bench photo ";
    let len = (2 + text.len() + 8) as u16;
    let mut jpeg = Vec::with_capacity(encoded.len() + len as usize + 2);
    jpeg.extend_from_slice(&encoded[..at]);
    jpeg.extend_from_slice(&[0xff, 0xfe]);
    jpeg.extend_from_slice(&len.to_be_bytes());
    jpeg.extend_from_slice(text);
    let number_at = jpeg.len();
    jpeg.extend_from_slice(&[0; 8]);
    jpeg.extend_from_slice(&encoded[at..]);
    Ok(Photo {
        width,
        height,
        jpeg,
        number_at,
    })
}

impl Photo {
    fn copy(&self, n: u64) -> Bytes {
        let mut bytes = self.jpeg.clone();
        bytes[self.number_at..self.number_at + 8].copy_from_slice(&n.to_le_bytes());
        Bytes::from(bytes)
    }
}

/// The photo at `sizes`' dimensions, made on the first call.
async fn photo(sizes: &UploadSizes) -> Result<&'static Photo> {
    if let Some(p) = PHOTO.get() {
        anyhow::ensure!(
            (p.width, p.height) == (sizes.photo_width, sizes.photo_height),
            "the photo was made at another size"
        );
        return Ok(p);
    }
    let (w, h) = (sizes.photo_width, sizes.photo_height);
    let made = tokio::task::spawn_blocking(move || make_photo(w, h)).await??;
    Ok(PHOTO.get_or_init(|| made))
}

/// One phase of part 3: `count` copies of the photo from `clients` clients at once.
#[derive(Debug, Clone, Serialize)]
struct ThumbnailPhase {
    clients: usize,
    uploads: u64,
    errors: u64,
    seconds: f64,
    uploads_per_s: f64,
    latency: Percentiles,
    /// `chat_thumbnail_seconds` over the phase: mean seconds and how many it counted.
    thumbnail_mean_s: f64,
    thumbnails: f64,
    server_cpu_s: f64,
    examples: Vec<String>,
}

async fn thumbnail_phase(
    target: &Target<'_>,
    photo: &'static Photo,
    clients: usize,
    count: usize,
    next: &Arc<AtomicU64>,
) -> Result<ThumbnailPhase> {
    let (sum0, count0) = thumbnail_histogram(target.addr).await?;
    let cpu_before = sys::cpu_seconds(target.pid)?;
    let left = Arc::new(AtomicU64::new(count as u64));
    let began = Instant::now();
    let tasks: Vec<_> = target.uploaders[..clients]
        .iter()
        .map(|token| {
            let (token, left, next, addr) =
                (token.clone(), left.clone(), next.clone(), target.addr);
            tokio::spawn(async move {
                let mut tally = UploadTally {
                    latency: Some(new_histogram()),
                    ..UploadTally::default()
                };
                let mut http = Http::connect(addr).await?;
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = photo.copy(n);
                    let sent = Instant::now();
                    let why = match upload(&mut http, &token, &format!("photo-{n}.jpg"), body).await
                    {
                        Answer::Stored(v)
                            if v["width"].as_u64() == Some(photo.width.into())
                                && v["height"].as_u64() == Some(photo.height.into())
                                && v["thumbnail_url"].is_string() =>
                        {
                            if let Some(h) = &mut tally.latency {
                                h.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                            }
                            tally.stored += 1;
                            continue;
                        }
                        Answer::Stored(v) => format!("stored without its thumbnails: {v}"),
                        Answer::Failed(why) => {
                            http = Http::connect(addr).await?;
                            why
                        }
                    };
                    tally.errors += 1;
                    if tally.examples.len() < 3 {
                        tally.examples.push(why);
                    }
                }
                Ok::<_, anyhow::Error>(tally)
            })
        })
        .collect();
    let mut tally = UploadTally::default();
    for task in tasks {
        tally.add(task.await??);
    }
    let seconds = began.elapsed().as_secs_f64();
    let server_cpu_s = sys::cpu_seconds(target.pid)? - cpu_before;
    let (sum1, count1) = thumbnail_histogram(target.addr).await?;
    let thumbnails = count1 - count0;
    Ok(ThumbnailPhase {
        clients,
        uploads: tally.stored,
        errors: tally.errors,
        seconds,
        uploads_per_s: tally.stored as f64 / seconds,
        latency: tally.latency(),
        thumbnail_mean_s: if thumbnails > 0.0 {
            (sum1 - sum0) / thumbnails
        } else {
            0.0
        },
        thumbnails,
        server_cpu_s,
        examples: tally.examples,
    })
}

/// Part 2's figures: the read load alone and beside the uploads, the uploads, and RSS.
#[derive(Debug, Clone, Serialize)]
struct Beside {
    alone: Paging,
    during: Paging,
    uploaders: usize,
    uploads: u64,
    upload_errors: u64,
    upload_bytes: u64,
    upload_seconds: f64,
    upload_latency: Percentiles,
    /// RSS and its anonymous part (KiB): just before the uploads, their peak, after.
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    anon_before_kib: u64,
    anon_peak_kib: u64,
    anon_after_kib: u64,
    /// The same for the one upload alone.
    single_rss_before_kib: u64,
    single_rss_peak_kib: u64,
    single_anon_before_kib: u64,
    single_anon_peak_kib: u64,
    single_latency_ms: f64,
    server_cpu_s: f64,
    examples: Vec<String>,
}

/// Runs the scenario and draws its picture.
pub(crate) async fn run(
    rec: &mut Recorder<'_>,
    target: &Target<'_>,
    sizes: &UploadSizes,
) -> Result<()> {
    anyhow::ensure!(
        target.uploaders.len() >= sizes.uploaders.max(2),
        "the uploads scenario needs {} uploading users",
        sizes.uploaders.max(2)
    );
    let (addr, pid) = (target.addr, target.pid);
    let base = Arc::new(random_file(sizes.file_bytes));
    let next = Arc::new(AtomicU64::new(0));
    settle(pid).await?;
    let sampler = Sampler::start(pid);
    let began = sampler.began;
    let result = async {
        // 1. One upload alone.
        let (single_rss_before_kib, single_anon_before_kib) = rss_now(pid)?;
        let single_from = sampler.now();
        let mut http = Http::connect(addr).await?;
        let n = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        match upload(
            &mut http,
            &target.uploaders[0],
            "alone.bin",
            numbered(&base, n),
        )
        .await
        {
            Answer::Stored(_) => {}
            Answer::Failed(why) => anyhow::bail!("the upload alone failed: {why}"),
        }
        let single_latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let single_to = sampler.now();
        drop(http);
        settle(pid).await?;

        // 2. The read load alone, then beside the uploads.
        let alone_from = sampler.now();
        let alone = load::paging(
            addr,
            pid,
            target.history,
            target.history_max_id,
            target.paging_connections,
            target.paging,
        )
        .await?;
        let alone_to = sampler.now();
        eprintln!(
            "  uploads: history alone {:.0} pages/s, p50 {:.2} p99 {:.2} ms",
            alone.pages_per_s, alone.latency.p50_ms, alone.latency.p99_ms
        );
        let (rss_before_kib, anon_before_kib) = rss_now(pid)?;
        let cpu_before = sys::cpu_seconds(pid)?;
        let during_from = sampler.now();
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + target.paging;
        let uploaders: Vec<_> = target.uploaders[..sizes.uploaders]
            .iter()
            .map(|token| {
                tokio::spawn(uploader(
                    addr,
                    token.clone(),
                    base.clone(),
                    next.clone(),
                    sizes.max_files,
                    stop.clone(),
                    deadline,
                    began,
                ))
            })
            .collect();
        let during = load::paging_until(
            addr,
            pid,
            target.history,
            target.history_max_id,
            target.paging_connections,
            target.paging,
            stop.clone(),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let mut tally = UploadTally::default();
        for task in uploaders {
            tally.add(task.await??);
        }
        let during = during?;
        let during_to = sampler.now();
        let server_cpu_s = sys::cpu_seconds(pid)? - cpu_before;
        let upload_seconds =
            tally.done.iter().map(|d| d.0).fold(during_from, f64::max) - during_from;
        settle(pid).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss_after_kib, anon_after_kib) = rss_now(pid)?;
        eprintln!(
            "  uploads: history beside {} uploaders {:.0} pages/s, p99 {:.2} ms; {} uploads in \
             {:.1} s",
            sizes.uploaders,
            during.pages_per_s,
            during.latency.p99_ms,
            tally.stored,
            upload_seconds
        );
        let mut done = tally.done.clone();
        done.sort_by(|a, b| a.0.total_cmp(&b.0));
        for why in &tally.examples {
            eprintln!("  uploads: WARNING: an upload failed: {why}");
        }

        // 3. Thumbnails of the photo.
        let made = Instant::now();
        let photo = photo(sizes).await?;
        eprintln!(
            "  uploads: photo {} × {}, {:.1} MiB (made in {:.1} s)",
            photo.width,
            photo.height,
            photo.jpeg.len() as f64 / MIB,
            made.elapsed().as_secs_f64()
        );
        let photos_from = sampler.now();
        let mut thumbs = Vec::new();
        for clients in [1, 2] {
            settle(pid).await?;
            let t = thumbnail_phase(target, photo, clients, sizes.photo_uploads, &next).await?;
            eprintln!(
                "  thumbnails, {clients} client(s): {:.2} uploads/s, p50 {:.0} ms, server's \
                 thumbnail mean {:.0} ms over {}, errors {}",
                t.uploads_per_s,
                t.latency.p50_ms,
                t.thumbnail_mean_s * 1000.0,
                t.thumbnails,
                t.errors
            );
            for why in &t.examples {
                eprintln!("  thumbnails: WARNING: an upload failed: {why}");
            }
            thumbs.push(t);
        }
        let photos_to = sampler.now();
        let phases = Phases {
            single: (single_from, single_to),
            alone: (alone_from, alone_to),
            during: (during_from, during_to),
            photos: (photos_from, photos_to),
        };
        Ok::<_, anyhow::Error>((
            Beside {
                alone,
                during,
                uploaders: sizes.uploaders,
                uploads: tally.stored,
                upload_errors: tally.errors,
                upload_bytes: tally.bytes,
                upload_seconds,
                upload_latency: tally.latency(),
                rss_before_kib,
                rss_peak_kib: 0,
                rss_after_kib,
                anon_before_kib,
                anon_peak_kib: 0,
                anon_after_kib,
                single_rss_before_kib,
                single_rss_peak_kib: 0,
                single_anon_before_kib,
                single_anon_peak_kib: 0,
                single_latency_ms,
                server_cpu_s,
                examples: tally.examples,
            },
            done,
            thumbs,
            phases,
        ))
    }
    .await;
    let samples = sampler.finish().await;
    let (mut beside, done, thumbs, phases) = result?;
    let (peak_rss, peak_anon) = peak(&samples, phases.during.0, phases.during.1);
    beside.rss_peak_kib = peak_rss.max(beside.rss_before_kib);
    beside.anon_peak_kib = peak_anon.max(beside.anon_before_kib);
    let (single_rss, single_anon) = peak(&samples, phases.single.0, phases.single.1);
    beside.single_rss_peak_kib = single_rss.max(beside.single_rss_before_kib);
    beside.single_anon_peak_kib = single_anon.max(beside.single_anon_before_kib);

    beside.record(rec, sizes);
    for t in &thumbs {
        t.record(rec);
    }
    rec.detail(
        "uploads",
        json!({ "beside": beside, "thumbnails": thumbs, "rss": samples, "uploaded": done }),
    );

    let svg = picture(&samples, &done, &phases, &beside, rec.run());
    let path = target.work_dir.join("uploads.svg");
    std::fs::write(&path, &svg).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("  uploads: picture written to {}", path.display());
    if sizes.keep_picture {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("uploads.svg");
        std::fs::write(&kept, &svg).with_context(|| format!("writing {}", kept.display()))?;
        eprintln!("  uploads: picture copied to {}", kept.display());
    }
    Ok(())
}

/// When each part ran, in seconds since the scenario began.
#[derive(Debug, Clone, Copy)]
struct Phases {
    single: (f64, f64),
    alone: (f64, f64),
    during: (f64, f64),
    photos: (f64, f64),
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Beside {
    fn record(&self, rec: &mut Recorder<'_>, sizes: &UploadSizes) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mib_per_s = ratio(self.upload_bytes as f64 / MIB, self.upload_seconds);
        eprintln!(
            "  uploads: history beside {} uploaders {:.0} pages/s ({:.2}x alone), p50 {:.2} p99 \
             {:.2} ms ({:.2}x); {} uploads, {:.0} MiB/s, p50 {:.0} ms; RSS {:.1} -> peak {:.1} -> \
             {:.1} MiB (heap {:.1} -> {:.1}); one upload alone: RSS +{:.1} MiB, heap +{:.1} MiB",
            self.uploaders,
            self.during.pages_per_s,
            ratio(self.during.pages_per_s, self.alone.pages_per_s),
            self.during.latency.p50_ms,
            self.during.latency.p99_ms,
            ratio(self.during.latency.p99_ms, self.alone.latency.p99_ms),
            self.uploads,
            mib_per_s,
            self.upload_latency.p50_ms,
            mib(self.rss_before_kib),
            mib(self.rss_peak_kib),
            mib(self.rss_after_kib),
            mib(self.anon_before_kib),
            mib(self.anon_peak_kib),
            mib(self.single_rss_peak_kib) - mib(self.single_rss_before_kib),
            mib(self.single_anon_peak_kib) - mib(self.single_anon_before_kib),
        );
        for (name, p) in [
            ("uploads_history_alone", &self.alone),
            ("uploads_history_during", &self.during),
        ] {
            rec.figure(name, "pages_per_s", p.pages_per_s);
            rec.figure(name, "p50_ms", p.latency.p50_ms);
            rec.figure(name, "p99_ms", p.latency.p99_ms);
            rec.figure(name, "errors", p.errors as f64);
            rec.figure(name, "seconds", p.seconds);
        }
        const S: &str = "uploads";
        rec.figure(
            S,
            "pages_ratio",
            ratio(self.during.pages_per_s, self.alone.pages_per_s),
        );
        rec.figure(
            S,
            "p50_ratio",
            ratio(self.during.latency.p50_ms, self.alone.latency.p50_ms),
        );
        rec.figure(
            S,
            "p99_ratio",
            ratio(self.during.latency.p99_ms, self.alone.latency.p99_ms),
        );
        rec.figure(S, "uploads", self.uploads as f64);
        rec.figure(S, "errors", self.upload_errors as f64);
        rec.figure(S, "mib_per_s", mib_per_s);
        rec.figure(
            S,
            "uploads_per_s",
            ratio(self.uploads as f64, self.upload_seconds),
        );
        rec.figure(S, "upload_p50_ms", self.upload_latency.p50_ms);
        rec.figure(S, "upload_p99_ms", self.upload_latency.p99_ms);
        rec.figure(
            S,
            "in_flight_mib",
            (self.uploaders * sizes.file_bytes) as f64 / MIB,
        );
        rec.figure(S, "rss_before_mib", mib(self.rss_before_kib));
        rec.figure(S, "rss_peak_mib", mib(self.rss_peak_kib));
        rec.figure(S, "rss_after_mib", mib(self.rss_after_kib));
        rec.figure(
            S,
            "rss_growth_mib",
            mib(self.rss_peak_kib) - mib(self.rss_before_kib),
        );
        rec.figure(S, "heap_before_mib", mib(self.anon_before_kib));
        rec.figure(S, "heap_peak_mib", mib(self.anon_peak_kib));
        rec.figure(S, "heap_after_mib", mib(self.anon_after_kib));
        rec.figure(
            S,
            "heap_growth_mib",
            mib(self.anon_peak_kib) - mib(self.anon_before_kib),
        );
        rec.figure(
            S,
            "single_rss_growth_mib",
            mib(self.single_rss_peak_kib) - mib(self.single_rss_before_kib),
        );
        rec.figure(
            S,
            "single_heap_growth_mib",
            mib(self.single_anon_peak_kib) - mib(self.single_anon_before_kib),
        );
        rec.figure(S, "single_ms", self.single_latency_ms);
        rec.figure(
            S,
            "server_cpu_s_per_gib",
            ratio(self.server_cpu_s, self.upload_bytes as f64 / (1024.0 * MIB)),
        );
    }
}

impl ThumbnailPhase {
    fn record(&self, rec: &mut Recorder<'_>) {
        let name = if self.clients == 1 {
            "thumbnails_1"
        } else {
            "thumbnails_2"
        };
        rec.figure(name, "uploads_per_s", self.uploads_per_s);
        rec.figure(name, "p50_ms", self.latency.p50_ms);
        rec.figure(name, "max_ms", self.latency.max_ms);
        rec.figure(name, "thumbnail_mean_ms", self.thumbnail_mean_s * 1000.0);
        rec.figure(name, "server_cpu_s_per_upload", {
            if self.uploads > 0 {
                self.server_cpu_s / self.uploads as f64
            } else {
                0.0
            }
        });
        rec.figure(name, "errors", self.errors as f64);
    }
}

/// The server's RSS and heap through the scenario, and the bytes the uploads stored, with the
/// phases marked.
fn picture(
    samples: &[RssSample],
    done: &[(f64, u64)],
    phases: &Phases,
    beside: &Beside,
    run: usize,
) -> String {
    let bands = || {
        vec![
            plot::Band::new(phases.single.0, phases.single.1, "1 upload"),
            plot::Band::new(phases.alone.0, phases.alone.1, "history alone"),
            plot::Band::new(
                phases.during.0,
                phases.during.1,
                format!("history + {} uploaders", beside.uploaders),
            ),
            plot::Band::new(phases.photos.0, phases.photos.1, "photos"),
        ]
    };
    let rss = vec![
        plot::Series::new(
            "RSS",
            samples
                .iter()
                .map(|s| (s.t_s, s.rss_kib as f64 / 1024.0))
                .collect(),
        ),
        plot::Series::new(
            "heap (RssAnon)",
            samples
                .iter()
                .map(|s| (s.t_s, s.anon_kib as f64 / 1024.0))
                .collect(),
        ),
        plot::Series::new(
            "mapped (RssFile)",
            samples
                .iter()
                .map(|s| (s.t_s, s.file_kib as f64 / 1024.0))
                .collect(),
        ),
    ];
    let mut stored = vec![(phases.during.0, 0.0)];
    let mut total = 0u64;
    for &(t, bytes) in done {
        total += bytes;
        stored.push((t, total as f64 / MIB));
    }
    let panels = [
        plot::Panel {
            title: "server memory: RSS, its anonymous part (the heap) and its mapped file pages \
                    (mostly the database)"
                .into(),
            x_label: "seconds since the scenario began".into(),
            y_label: "MiB".into(),
            series: rss,
            bands: bands(),
        },
        plot::Panel {
            title: "MiB of 25 MiB uploads stored (answered 201)".into(),
            x_label: "seconds since the scenario began".into(),
            y_label: "MiB".into(),
            series: vec![plot::Series::new("stored", stored)],
            bands: bands(),
        },
    ];
    plot::svg(
        &format!(
            "chat-server: history reads beside {} × 25 MiB uploads, then photos (run {run})",
            beside.uploaders
        ),
        &panels,
        220.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_differs_and_sniffs_the_same() {
        let base = random_file(4096);
        assert_eq!(base.len(), 4096);
        assert!(base.starts_with(PREFIX));
        let (a, b) = (numbered(&base, 1), numbered(&base, 2));
        assert_ne!(a, b);
        assert_eq!(a[..NUMBER_AT], b[..NUMBER_AT]);
        assert_eq!(a[NUMBER_AT + 8..], b[NUMBER_AT + 8..]);
    }

    #[test]
    fn copies_of_the_photo_decode_and_differ() {
        let photo = make_photo(64, 48).unwrap();
        let (a, b) = (photo.copy(7), photo.copy(8));
        assert_ne!(a, b);
        assert_eq!(a.len(), photo.jpeg.len());
        for copy in [a, b] {
            let img = image::load_from_memory_with_format(&copy, image::ImageFormat::Jpeg)
                .expect("a copy decodes");
            assert_eq!((img.width(), img.height()), (64, 48));
        }
    }

    #[test]
    fn the_peak_is_taken_within_the_phase() {
        let s = |t_s: f64, kib: u64| RssSample {
            t_s,
            rss_kib: kib,
            anon_kib: kib / 2,
            file_kib: kib / 2,
        };
        let samples = [s(0.0, 100), s(1.0, 300), s(2.0, 200), s(3.0, 900)];
        assert_eq!(peak(&samples, 0.5, 2.5), (300, 150));
        assert_eq!(peak(&samples, 5.0, 6.0), (0, 0));
    }
}
