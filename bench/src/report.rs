//! Medians over runs, ratios to the bare server, docs/CONTRACT.md targets, the printed table and the
//! JSON file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::suite::{Figure, RunOutput, Sizes};

/// What docs/CONTRACT.md section 3 asks of a figure.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// chat-server's figure at least this fraction of the bare server's.
    RatioAtLeast(f64),
}

struct Headline {
    scenario: &'static str,
    metric: &'static str,
    label: &'static str,
    target: Option<Target>,
}

const fn h(
    scenario: &'static str,
    metric: &'static str,
    label: &'static str,
    target: Option<Target>,
) -> Headline {
    Headline {
        scenario,
        metric,
        label,
        target,
    }
}

const HEADLINES: &[Headline] = &[
    h(
        "fanout_big",
        "peak_deliveries_per_s",
        "fan-out 1 room: peak deliveries/s",
        Some(Target::RatioAtLeast(0.5)),
    ),
    h(
        "fanout_big",
        "deliveries_per_cpu_s",
        "fan-out 1 room: deliveries per server CPU-s",
        Some(Target::AtLeast(300_000.0)),
    ),
    h(
        "fanout_big",
        "p99_ms_at_peak",
        "fan-out 1 room: p99 ms at peak",
        None,
    ),
    h(
        "fanout_rooms",
        "peak_deliveries_per_s",
        "fan-out many rooms: peak deliveries/s",
        Some(Target::RatioAtLeast(0.5)),
    ),
    h(
        "fanout_rooms",
        "deliveries_per_cpu_s",
        "fan-out many rooms: deliveries per server CPU-s",
        Some(Target::AtLeast(300_000.0)),
    ),
    h(
        "fanout_rooms",
        "p99_ms_at_peak",
        "fan-out many rooms: p99 ms at peak",
        None,
    ),
    h(
        "latency_big",
        "p50_ms",
        "post-to-all 1 room @2/s: p50 ms",
        None,
    ),
    h(
        "latency_big",
        "p99_ms",
        "post-to-all 1 room @2/s: p99 ms",
        Some(Target::AtMost(60.0)),
    ),
    h(
        "latency_big",
        "max_ms",
        "post-to-all 1 room @2/s: max ms",
        None,
    ),
    h(
        "durable",
        "msgs_per_s",
        "durable posts: messages/s",
        Some(Target::AtLeast(20_000.0)),
    ),
    h("durable", "p50_ack_ms", "durable posts: p50 ack ms", None),
    h(
        "durable",
        "p99_ack_ms",
        "durable posts: p99 ack ms",
        Some(Target::AtMost(10.0)),
    ),
    h(
        "durable",
        "msgs_per_cpu_s",
        "durable posts: messages per server CPU-s",
        None,
    ),
    h(
        "history",
        "pages_per_s",
        "history page of 50: pages/s",
        Some(Target::AtLeast(20_000.0)),
    ),
    h("history", "p50_ms", "history page of 50: p50 ms", None),
    h(
        "history",
        "p99_ms",
        "history page of 50: p99 ms",
        Some(Target::AtMost(2.0)),
    ),
    h(
        "mixed",
        "ops_per_s",
        "mixed posts, edits, reactions, reads: operations/s",
        None,
    ),
    h("mixed", "p99_ms", "mixed: p99 ms", None),
    h(
        "mixed",
        "lost",
        "mixed: acknowledged changes lost",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "search",
        "searches_per_s",
        "search, word queries: searches/s",
        None,
    ),
    h(
        "search",
        "rare_word_p99_ms",
        "search: a word in one message, p99 ms",
        Some(Target::AtMost(20.0)),
    ),
    h(
        "search",
        "common_word_p99_ms",
        "search: a word in every message, p99 ms",
        Some(Target::AtMost(20.0)),
    ),
    h(
        "search_prefix",
        "searches_per_s",
        "search, prefix queries: searches/s",
        None,
    ),
    h(
        "search_prefix",
        "p99_ms",
        "search: a prefix every message matches, p99 ms",
        None,
    ),
    h(
        "connect_rooms",
        "seconds",
        "connect storm, many rooms: s",
        Some(Target::AtMost(1.0)),
    ),
    h(
        "connect_rooms",
        "server_cpu_s",
        "connect storm, many rooms: server CPU-s",
        None,
    ),
    h("connect_big", "seconds", "connect storm, 1 room: s", None),
    h(
        "idle",
        "rss_at_start_mib",
        "idle: RSS at start, MiB",
        Some(Target::AtMost(10.0)),
    ),
    h(
        "idle_rooms",
        "kib_per_connection",
        "idle: KiB RSS per idle connection (many rooms)",
        Some(Target::AtMost(12.0)),
    ),
    h("idle", "rss_at_end_mib", "RSS after the suite, MiB", None),
];

/// The abuse scenario's figures, each attack on a fresh server with the default limits. A
/// target is a bound of SECURITY.md's "Abuse bounds" at its default, so it holds at any size.
const ABUSE_HEADLINES: &[Headline] = &[
    h("abuse_rooms", "rss_peak_mib", "rooms: peak RSS, MiB", None),
    h(
        "abuse_rooms",
        "fds_peak",
        "rooms: peak open descriptors",
        None,
    ),
    h(
        "abuse_rooms",
        "probe_p99_before_ms",
        "rooms: probe p99 ms before",
        None,
    ),
    h(
        "abuse_rooms",
        "probe_p99_ms",
        "rooms: probe p99 ms during",
        None,
    ),
    h(
        "abuse_rooms",
        "probe_p99_ratio",
        "rooms: probe p99 during / before",
        None,
    ),
    h(
        "abuse_rooms",
        "new_client_failures",
        "rooms: a new client unanswered after it",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "abuse_rooms",
        "attempts_per_s",
        "rooms: creations tried per s",
        None,
    ),
    h(
        "abuse_rooms",
        "created_201",
        "rooms: created (201)",
        Some(Target::AtMost(50.0)),
    ),
    h("abuse_rooms", "refused_429", "rooms: refused 429", None),
    h("abuse_rooms", "refused_403", "rooms: refused 403", None),
    h("abuse_rooms", "other", "rooms: other answers", None),
    h(
        "abuse_rooms",
        "refusals_added_by_one_user",
        "rooms: max_rooms_added_by_one_user refusals (server count)",
        None,
    ),
    h(
        "abuse_rooms",
        "refusals_rooms_created",
        "rooms: rooms_created_per_user refusals (server count)",
        None,
    ),
    h(
        "abuse_rooms",
        "victim_list_p99_ms",
        "rooms: victim's room list p99 ms",
        None,
    ),
    h(
        "abuse_rooms",
        "victim_list_bytes",
        "rooms: victim's room list bytes",
        None,
    ),
    h(
        "abuse_rooms",
        "victim_list_rooms",
        "rooms: rooms in the victim's list",
        None,
    ),
    h(
        "abuse_fds",
        "rss_peak_mib",
        "descriptors: peak RSS, MiB",
        None,
    ),
    h(
        "abuse_fds",
        "fds_peak",
        "descriptors: peak open descriptors",
        None,
    ),
    h(
        "abuse_fds",
        "probe_p99_before_ms",
        "descriptors: probe p99 ms before",
        None,
    ),
    h(
        "abuse_fds",
        "probe_p99_ms",
        "descriptors: probe p99 ms during",
        None,
    ),
    h(
        "abuse_fds",
        "probe_p99_ratio",
        "descriptors: probe p99 during / before",
        None,
    ),
    h(
        "abuse_fds",
        "new_client_failures",
        "descriptors: a new client unanswered after it",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "abuse_fds",
        "connections_opened",
        "descriptors: connections opened",
        None,
    ),
    h(
        "abuse_fds",
        "answered_200",
        "descriptors: answered 200",
        None,
    ),
    h("abuse_fds", "refused_429", "descriptors: refused 429", None),
    h(
        "abuse_fds",
        "closed_by_server",
        "descriptors: closed by the server",
        None,
    ),
    h(
        "abuse_fds",
        "idle_connections_shed",
        "descriptors: idle connections shed (server count)",
        None,
    ),
    h(
        "abuse_fds",
        "refusals_tcp_per_ip",
        "descriptors: max_tcp_connections_per_ip refusals (server count)",
        None,
    ),
    h(
        "abuse_fds",
        "fds_above_start_peak",
        "descriptors: peak descriptors above the start (cap 2000 per address)",
        None,
    ),
    h(
        "abuse_fds",
        "held_at_end",
        "descriptors: still open at the end",
        None,
    ),
    h(
        "abuse_fds",
        "timeouts",
        "descriptors: requests unanswered in 10 s",
        None,
    ),
    h(
        "abuse_presence",
        "rss_peak_mib",
        "presence: peak RSS, MiB",
        None,
    ),
    h(
        "abuse_presence",
        "fds_peak",
        "presence: peak open descriptors",
        None,
    ),
    h(
        "abuse_presence",
        "probe_p99_before_ms",
        "presence: probe p99 ms before",
        None,
    ),
    h(
        "abuse_presence",
        "probe_p99_ms",
        "presence: probe p99 ms during",
        None,
    ),
    h(
        "abuse_presence",
        "probe_p99_ratio",
        "presence: probe p99 during / before",
        None,
    ),
    h(
        "abuse_presence",
        "new_client_failures",
        "presence: a new client unanswered after it",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "abuse_presence",
        "connects_accepted",
        "presence: connects accepted",
        None,
    ),
    h(
        "abuse_presence",
        "connects_refused_429",
        "presence: connects refused 429",
        None,
    ),
    h(
        "abuse_presence",
        "refusals_ws_per_user",
        "presence: ws_connects_per_user refusals (server count)",
        None,
    ),
    h(
        "abuse_presence",
        "refusals_ws_per_ip",
        "presence: ws_connects_per_ip refusals (server count)",
        None,
    ),
    h(
        "abuse_presence",
        "presence_per_observer",
        "presence: presence frames per observer",
        Some(Target::AtMost(1.0)),
    ),
    h(
        "abuse_presence",
        "presence_per_observer_per_s",
        "presence: presence frames per observer per s",
        None,
    ),
    h(
        "abuse_signups",
        "rss_peak_mib",
        "signups: peak RSS, MiB",
        None,
    ),
    h(
        "abuse_signups",
        "fds_peak",
        "signups: peak open descriptors",
        None,
    ),
    h(
        "abuse_signups",
        "probe_p99_before_ms",
        "signups: probe p99 ms before",
        None,
    ),
    h(
        "abuse_signups",
        "probe_p99_ms",
        "signups: probe p99 ms during",
        None,
    ),
    h(
        "abuse_signups",
        "probe_p99_ratio",
        "signups: probe p99 during / before",
        None,
    ),
    h(
        "abuse_signups",
        "new_client_failures",
        "signups: a new client unanswered after it",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "abuse_signups",
        "attempts_per_s",
        "signups: signups tried per s",
        None,
    ),
    h(
        "abuse_signups",
        "created_201",
        "signups: created (201)",
        Some(Target::AtMost(20.0)),
    ),
    h("abuse_signups", "refused_429", "signups: refused 429", None),
    h(
        "abuse_replay",
        "rss_peak_mib",
        "replays: peak RSS, MiB",
        None,
    ),
    h(
        "abuse_replay",
        "fds_peak",
        "replays: peak open descriptors",
        None,
    ),
    h(
        "abuse_replay",
        "probe_p99_before_ms",
        "replays: probe p99 ms before",
        None,
    ),
    h(
        "abuse_replay",
        "probe_p99_ms",
        "replays: probe p99 ms during",
        None,
    ),
    h(
        "abuse_replay",
        "probe_p99_ratio",
        "replays: probe p99 during / before",
        None,
    ),
    h(
        "abuse_replay",
        "new_client_failures",
        "replays: a new client unanswered after it",
        Some(Target::AtMost(0.0)),
    ),
    h(
        "abuse_replay",
        "messages_per_s",
        "replays: messages replayed per s",
        None,
    ),
    h(
        "abuse_replay",
        "messages_replayed",
        "replays: messages replayed",
        None,
    ),
    h(
        "abuse_replay",
        "sockets_complete",
        "replays: sockets that got every message",
        None,
    ),
    h("abuse_replay", "refused_429", "replays: refused 429", None),
    h("abuse_replay", "closes_4000", "replays: closed 4000", None),
    h(
        "abuse_replay",
        "refusals_replay_length",
        "replays: max_replay_messages closes (server count)",
        None,
    ),
    h(
        "abuse_replay",
        "refusals_replays_per_user",
        "replays: max_replays_per_user refusals (server count)",
        None,
    ),
    h(
        "abuse_replay",
        "most_on_one_connection",
        "replays: most messages on one connection",
        Some(Target::AtMost(10_000.0)),
    ),
];

/// The uploads scenario's figures, on the suite's server: the history read load alone and
/// beside 25 MiB uploads, the uploads, the server's RSS, and thumbnails. Shown only when it ran.
const UPLOAD_HEADLINES: &[Headline] = &[
    h(
        "uploads_history_alone",
        "pages_per_s",
        "uploads: history alone, pages/s",
        None,
    ),
    h(
        "uploads_history_alone",
        "p99_ms",
        "uploads: history alone, p99 ms",
        None,
    ),
    h(
        "uploads_history_during",
        "pages_per_s",
        "uploads: history beside uploads, pages/s",
        None,
    ),
    h(
        "uploads_history_during",
        "p50_ms",
        "uploads: history beside uploads, p50 ms",
        None,
    ),
    h(
        "uploads_history_during",
        "p99_ms",
        "uploads: history beside uploads, p99 ms",
        None,
    ),
    h(
        "uploads",
        "pages_ratio",
        "uploads: history pages/s beside / alone",
        None,
    ),
    h(
        "uploads",
        "p99_ratio",
        "uploads: history p99 beside / alone",
        None,
    ),
    h(
        "uploads",
        "mib_per_s",
        "uploads: 25 MiB uploads, MiB/s",
        None,
    ),
    h("uploads", "uploads_per_s", "uploads: uploads/s", None),
    h("uploads", "upload_p50_ms", "uploads: upload p50 ms", None),
    h(
        "uploads",
        "rss_before_mib",
        "uploads: RSS before uploads, MiB",
        None,
    ),
    h(
        "uploads",
        "rss_peak_mib",
        "uploads: peak RSS during uploads, MiB",
        None,
    ),
    h(
        "uploads",
        "rss_after_mib",
        "uploads: RSS after uploads, MiB",
        None,
    ),
    h(
        "uploads",
        "heap_growth_mib",
        "uploads: heap growth during uploads, MiB",
        None,
    ),
    h(
        "uploads",
        "single_rss_growth_mib",
        "uploads: RSS growth during one upload alone, MiB",
        Some(Target::AtMost(4.0)),
    ),
    h(
        "thumbnails_1",
        "uploads_per_s",
        "thumbnails, 1 client: photo uploads/s",
        None,
    ),
    h(
        "thumbnails_1",
        "p50_ms",
        "thumbnails, 1 client: upload p50 ms",
        None,
    ),
    h(
        "thumbnails_1",
        "thumbnail_mean_ms",
        "thumbnails, 1 client: server's thumbnail mean ms",
        None,
    ),
    h(
        "thumbnails_2",
        "uploads_per_s",
        "thumbnails, 2 clients: photo uploads/s",
        None,
    ),
    h(
        "thumbnails_2",
        "p50_ms",
        "thumbnails, 2 clients: upload p50 ms",
        None,
    ),
    h(
        "thumbnails_2",
        "thumbnail_mean_ms",
        "thumbnails, 2 clients: server's thumbnail mean ms",
        None,
    ),
];

/// The overload scenario's figures, on a fresh server: the saturation rate, then each open-loop
/// step. Shown only when it ran.
const OVERLOAD_HEADLINES: &[Headline] = &[
    h(
        "overload",
        "saturation_posts_per_s",
        "overload: saturation, durable REST posts/s (closed loop)",
        None,
    ),
    h(
        "overload_0.5x",
        "accepted_per_s",
        "overload 0.5×: accepted posts/s",
        None,
    ),
    h(
        "overload_0.5x",
        "refused_share",
        "overload 0.5×: share refused 503 overloaded",
        None,
    ),
    h(
        "overload_0.5x",
        "accepted_p50_ms",
        "overload 0.5×: accepted p50 ms",
        None,
    ),
    h(
        "overload_0.5x",
        "accepted_p99_ms",
        "overload 0.5×: accepted p99 ms",
        None,
    ),
    h(
        "overload_0.5x",
        "refused_p99_ms",
        "overload 0.5×: refused p99 ms",
        None,
    ),
    h(
        "overload_0.5x",
        "accepted_p99_from_send_ms",
        "overload 0.5×: accepted p99 ms from send",
        None,
    ),
    h("overload_0.5x", "timeouts", "overload 0.5×: timeouts", None),
    h(
        "overload_0.5x",
        "other_answers",
        "overload 0.5×: other answers",
        None,
    ),
    h(
        "overload_0.5x",
        "rss_peak_mib",
        "overload 0.5×: peak RSS, MiB",
        None,
    ),
    h(
        "overload_1x",
        "accepted_per_s",
        "overload 1×: accepted posts/s",
        None,
    ),
    h(
        "overload_1x",
        "refused_share",
        "overload 1×: share refused 503 overloaded",
        None,
    ),
    h(
        "overload_1x",
        "accepted_p50_ms",
        "overload 1×: accepted p50 ms",
        None,
    ),
    h(
        "overload_1x",
        "accepted_p99_ms",
        "overload 1×: accepted p99 ms",
        None,
    ),
    h(
        "overload_1x",
        "refused_p99_ms",
        "overload 1×: refused p99 ms",
        None,
    ),
    h(
        "overload_1x",
        "accepted_p99_from_send_ms",
        "overload 1×: accepted p99 ms from send",
        None,
    ),
    h("overload_1x", "timeouts", "overload 1×: timeouts", None),
    h(
        "overload_1x",
        "other_answers",
        "overload 1×: other answers",
        None,
    ),
    h(
        "overload_1x",
        "rss_peak_mib",
        "overload 1×: peak RSS, MiB",
        None,
    ),
    h(
        "overload_2x",
        "accepted_per_s",
        "overload 2×: accepted posts/s",
        None,
    ),
    h(
        "overload_2x",
        "refused_share",
        "overload 2×: share refused 503 overloaded",
        None,
    ),
    h(
        "overload_2x",
        "accepted_p50_ms",
        "overload 2×: accepted p50 ms",
        None,
    ),
    h(
        "overload_2x",
        "accepted_p99_ms",
        "overload 2×: accepted p99 ms",
        None,
    ),
    h(
        "overload_2x",
        "refused_p99_ms",
        "overload 2×: refused p99 ms",
        None,
    ),
    h(
        "overload_2x",
        "accepted_p99_from_send_ms",
        "overload 2×: accepted p99 ms from send",
        None,
    ),
    h("overload_2x", "timeouts", "overload 2×: timeouts", None),
    h(
        "overload_2x",
        "other_answers",
        "overload 2×: other answers",
        None,
    ),
    h(
        "overload_2x",
        "rss_peak_mib",
        "overload 2×: peak RSS, MiB",
        None,
    ),
];

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub label: &'static str,
    pub chat: Option<f64>,
    pub bare: Option<f64>,
    pub chat_runs: Vec<f64>,
    pub bare_runs: Vec<f64>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn values(figures: &[Figure], server: &str, scenario: &str, metric: &str) -> Vec<f64> {
    figures
        .iter()
        .filter(|f| f.server == server && f.scenario == scenario && f.metric == metric)
        .map(|f| f.value)
        .collect()
}

fn is_abuse(scenario: &str) -> bool {
    scenario.starts_with("abuse_")
}

/// Medians per server, ratios and verdicts. In smoke mode the sizes are not docs/CONTRACT.md's, so
/// nothing is judged against the targets, except the abuse bounds, which hold at any size. The
/// abuse rows are there only when the abuse scenario ran.
pub fn summarize(figures: &[Figure], smoke: bool) -> Vec<Row> {
    let abuse_ran = figures.iter().any(|f| is_abuse(f.scenario));
    let abuse: &[Headline] = if abuse_ran { ABUSE_HEADLINES } else { &[] };
    let overload_ran = figures.iter().any(|f| f.scenario.starts_with("overload"));
    let overload: &[Headline] = if overload_ran {
        OVERLOAD_HEADLINES
    } else {
        &[]
    };
    let uploads_ran = figures.iter().any(|f| f.scenario.starts_with("uploads"));
    let uploads: &[Headline] = if uploads_ran { UPLOAD_HEADLINES } else { &[] };
    HEADLINES
        .iter()
        .chain(abuse)
        .chain(overload)
        .chain(uploads)
        .map(|hl| {
            let chat_runs = values(figures, "chat", hl.scenario, hl.metric);
            let bare_runs = values(figures, "bare", hl.scenario, hl.metric);
            let (chat, bare) = (median(&chat_runs), median(&bare_runs));
            let ratio = match (chat, bare) {
                (Some(c), Some(b)) if b != 0.0 => Some(c / b),
                _ => None,
            };
            let met = match (smoke && !is_abuse(hl.scenario), hl.target, chat) {
                (true, _, _) | (_, None, _) | (_, _, None) => None,
                (false, Some(Target::AtLeast(t)), Some(c)) => Some(c >= t),
                (false, Some(Target::AtMost(t)), Some(c)) => Some(c <= t),
                (false, Some(Target::RatioAtLeast(t)), Some(_)) => ratio.map(|r| r >= t),
            };
            Row {
                scenario: hl.scenario,
                metric: hl.metric,
                label: hl.label,
                chat,
                bare,
                chat_runs,
                bare_runs,
                ratio,
                target: hl.target,
                met,
            }
        })
        .collect()
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 10_000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn target_text(t: Option<Target>) -> String {
    match t {
        None => String::new(),
        Some(Target::AtLeast(v)) => format!(">= {}", num(Some(v))),
        Some(Target::AtMost(v)) => format!("<= {}", num(Some(v))),
        Some(Target::RatioAtLeast(v)) => format!(">= {v} x bare"),
    }
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    }
}

/// The summary as Markdown tables: docs/CONTRACT.md's figures (left out when only the abuse
/// scenario ran), then the abuse scenario's, if it ran.
pub fn render(rows: &[Row], machine: &str, runs: usize, smoke: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nchat-bench results: {} sizes, median of {runs} run(s), {machine}\n",
        if smoke { "smoke" } else { "full" }
    );
    let (abuse, suite): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| is_abuse(r.scenario));
    let suite_ran = suite.iter().any(|r| r.chat.is_some() || r.bare.is_some());
    if suite_ran || abuse.is_empty() {
        render_suite(&mut s, &suite);
    }
    if !abuse.is_empty() {
        if suite_ran {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "| abuse attack (fresh chat-server, default limits): figure | chat-server | bound | held | runs |"
        );
        let _ = writeln!(s, "|---|---:|---|---|---|");
        for r in abuse {
            let runs: Vec<String> = r.chat_runs.iter().map(|v| num(Some(*v))).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.label,
                num(r.chat),
                target_text(r.target),
                met_text(r.met),
                runs.join(", ")
            );
        }
    }
    s
}

fn render_suite(s: &mut String, rows: &[&Row]) {
    let _ = writeln!(
        s,
        "| figure | chat-server | bare | chat/bare | target | met | chat-server runs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---|---|");
    for r in rows {
        let met = met_text(r.met);
        let runs: Vec<String> = r.chat_runs.iter().map(|v| num(Some(*v))).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            num(r.chat),
            num(r.bare),
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            target_text(r.target),
            met,
            runs.join(", ")
        );
    }
}

/// Figures of chat-server that must be zero whatever the load: lost or duplicated messages,
/// refused durable posts, failed history pages; under the abuse scenario's attacks, a failed
/// request of the probe or the victim, a dropped observer, a gap in a replay, a server that
/// answers no new client afterwards or does not stop on SIGTERM.
pub fn correctness_problems(figures: &[Figure]) -> Vec<String> {
    figures
        .iter()
        .filter(|f| {
            f.server == "chat"
                && matches!(
                    f.metric,
                    "missing"
                        | "duplicates"
                        | "errors"
                        | "probe_errors"
                        | "victim_errors"
                        | "observers_dropped"
                        | "gaps"
                        | "new_client_failures"
                        | "lost"
                        | "shutdown_failures"
                )
                && f.value != 0.0
        })
        .map(|f| {
            format!(
                "chat-server run {}: {} {} = {}",
                f.run, f.scenario, f.metric, f.value
            )
        })
        .collect()
}

pub fn write_json(
    path: &Path,
    machine: &str,
    smoke: bool,
    sizes: &Sizes,
    all: &RunOutput,
    failures: &[String],
) -> Result<()> {
    let doc = json!({
        "machine": machine,
        "mode": if smoke { "smoke" } else { "full" },
        "sizes": sizes,
        "summary": summarize(&all.figures, smoke),
        "figures": all.figures,
        "details": all.details,
        "failures": failures,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
