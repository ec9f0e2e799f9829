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

/// Medians per server, ratios and verdicts. In smoke mode the sizes are not docs/CONTRACT.md's, so
/// nothing is judged against the targets.
pub fn summarize(figures: &[Figure], smoke: bool) -> Vec<Row> {
    HEADLINES
        .iter()
        .map(|hl| {
            let chat_runs = values(figures, "chat", hl.scenario, hl.metric);
            let bare_runs = values(figures, "bare", hl.scenario, hl.metric);
            let (chat, bare) = (median(&chat_runs), median(&bare_runs));
            let ratio = match (chat, bare) {
                (Some(c), Some(b)) if b != 0.0 => Some(c / b),
                _ => None,
            };
            let met = match (smoke, hl.target, chat) {
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

/// The summary as a Markdown table.
pub fn render(rows: &[Row], machine: &str, runs: usize, smoke: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nchat-bench results: {} sizes, median of {runs} run(s), {machine}\n",
        if smoke { "smoke" } else { "full" }
    );
    let _ = writeln!(
        s,
        "| figure | chat-server | bare | chat/bare | target | met | chat-server runs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
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
    s
}

/// Figures of chat-server that must be zero whatever the load: lost or duplicated messages,
/// refused durable posts, failed history pages.
pub fn correctness_problems(figures: &[Figure]) -> Vec<String> {
    figures
        .iter()
        .filter(|f| {
            f.server == "chat"
                && matches!(f.metric, "missing" | "duplicates" | "errors")
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
