//! `chat-bench`: the load generator and benchmark suite for chat-server.
//!
//! It starts the real `chat-server` release binary and, as the ceiling, this crate's
//! `bare-server` as child processes on loopback, runs the scenarios of docs/CONTRACT.md section 3
//! against each in turn (alternating, so both see the same machine conditions), and prints a
//! table of medians over the runs with the ratio of chat-server to the bare server and the
//! docs/CONTRACT.md target, and writes every figure and every fan-out step as JSON.
//!
//! Full suite (by hand, ~20 minutes): `bench/run`. Smoke (CI, under 2 minutes):
//! `bench/run --smoke`. The abuse scenario is not in the default list: `bench/run --scenarios
//! abuse --servers chat` (about 2 minutes; it also writes `bench/abuse-rss.svg`). The soak,
//! `bench/run --soak SECONDS`, runs a modest mixed load against one fresh chat-server for that
//! long and samples it every minute (it also writes `bench/soak.svg`). The overload scenario,
//! `bench/run --scenarios overload --servers chat` (about 7 minutes for its 3 runs; it also
//! writes `bench/overload.svg`), is not in the default list either, nor is the uploads scenario,
//! `bench/run --scenarios uploads --servers chat` (history reads beside 25 MiB uploads, then
//! thumbnails of a 12-megapixel photo; it also writes `bench/uploads.svg`). `--smoke` runs the
//! overload and uploads scenarios at small sizes and ends with a 12 s soak.
//!
//! # Layout
//! - `suite`: the scenarios, their sizes, setup through the API and seeding of history.
//! - `load`: receivers, publishers, durable senders and pagers, and what they measure.
//! - `net`: HTTP and WebSocket client connections over many loopback source addresses.
//! - `child`: starting and stopping the servers under test.
//! - `sys`: CPU time, RSS and open files from `/proc`; the open-files limit.
//! - `report`: medians, ratios, targets, the table and the JSON.
//! - `abuse`: the abuse scenario, resource-exhaustion attacks on fresh servers with the default
//!   abuse limits, and its picture of RSS over time.
//! - `overload`: durable REST posts offered open loop at up to twice their saturation rate, on
//!   a fresh server: accepted, refused with 503 `overloaded`, latency and RSS.
//! - `soak`: a long, modest mixed load on one fresh server, sampled for drift.
//! - `uploads`: history reads beside 25 MiB uploads, the server's RSS through them, and
//!   thumbnails of a 12-megapixel photo, on the suite's server.
//! - `plot`: the line charts of those pictures, as hand-written SVG.

mod abuse;
mod child;
mod load;
mod net;
mod overload;
mod plot;
mod report;
mod soak;
mod suite;
mod sys;
mod uploads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::child::Kind;
use crate::suite::{Env, RunOutput, Scenario, Sizes};

/// Load generator and benchmark suite for chat-server.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Small sizes that finish in under two minutes; checks correctness, not targets.
    #[arg(long)]
    smoke: bool,
    /// Runs per server; the table reports medians [default: 3, or 1 with --smoke]
    #[arg(long)]
    runs: Option<usize>,
    /// Which servers to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "chat,bare")]
    servers: Vec<String>,
    /// Which scenarios to run [default: rooms,big,durable,history,mixed,search; with --smoke
    /// also overload and uploads, and then a 12 s soak]
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Option<Vec<Scenario>>,
    /// The chat-server binary [default: next to this one]
    #[arg(long)]
    chat_bin: Option<PathBuf>,
    /// The bare-server binary [default: next to this one]
    #[arg(long)]
    bare_bin: Option<PathBuf>,
    /// Extra arguments for bare-server, e.g. --bare-arg=--naive (see bare-server --help).
    #[arg(long, allow_hyphen_values = true)]
    bare_arg: Vec<String>,
    /// Directory for databases and config files.
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Where to write the JSON results [default: <work-dir>/results.json]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of the suite: a mixed load against one fresh chat-server for this many seconds,
    /// sampled for drift (writes <work-dir>/soak.json and bench/soak.svg).
    #[arg(long, value_name = "SECONDS")]
    soak: Option<f64>,
    /// How often the soak samples the server, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    soak_every: f64,
}

const DEFAULT_SCENARIOS: [Scenario; 6] = [
    Scenario::Rooms,
    Scenario::Big,
    Scenario::Durable,
    Scenario::History,
    Scenario::Mixed,
    Scenario::Search,
];

/// The soak `--smoke` ends with: long enough for a few samples.
const SMOKE_SOAK_SECS: f64 = 12.0;
const SMOKE_SOAK_EVERY_SECS: f64 = 4.0;

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<bool> {
    let files = sys::raise_nofile_limit()?;
    let sizes = if cli.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    let needed = (sizes.big_clients.max(sizes.rooms * sizes.room_clients) + 1000) as u64;
    if files < needed {
        anyhow::bail!("the open-files limit is {files}; this suite needs {needed} (ulimit -Hn)");
    }
    let runs = cli.runs.unwrap_or(if cli.smoke { 1 } else { 3 });
    let kinds = cli
        .servers
        .iter()
        .map(|s| match s.as_str() {
            "chat" => Ok(Kind::Chat),
            "bare" => Ok(Kind::Bare),
            other => anyhow::bail!("unknown server {other:?}: use chat or bare"),
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&cli.work_dir)
        .with_context(|| format!("creating {}", cli.work_dir.display()))?;
    let env = Env {
        chat_bin: match cli.chat_bin {
            Some(p) => p,
            None => sibling("chat-server")?,
        },
        bare_bin: match cli.bare_bin {
            Some(p) => p,
            None => sibling("bare-server")?,
        },
        work_dir: cli.work_dir.canonicalize()?,
        bare_args: cli.bare_arg.clone(),
    };
    for bin in [&env.chat_bin, &env.bare_bin] {
        if !bin.exists() {
            anyhow::bail!(
                "{} not found: build the workspace first (cargo build --release --workspace)",
                bin.display()
            );
        }
    }
    if let Some(seconds) = cli.soak {
        anyhow::ensure!(
            seconds > 0.0 && cli.soak_every > 0.0,
            "--soak and --soak-every take a positive number of seconds"
        );
        let options = soak::SoakOptions {
            seconds,
            every_secs: cli.soak_every,
            keep_picture: !cli.smoke,
        };
        return soak::run(&env, &options).await;
    }
    // A smoke run of the default list also checks the overload and uploads scenarios and the
    // soak, so none of them can rot; a list given by hand runs just that.
    let by_hand = cli.scenarios.is_some();
    let scenarios = cli.scenarios.unwrap_or_else(|| {
        let mut list = DEFAULT_SCENARIOS.to_vec();
        if cli.smoke {
            list.push(Scenario::Overload);
            list.push(Scenario::Uploads);
        }
        list
    });
    let out_path = cli.out.unwrap_or_else(|| env.work_dir.join("results.json"));
    let machine = sys::machine();
    eprintln!(
        "chat-bench: {} mode, {runs} run(s), {machine}, open files {files}",
        if cli.smoke { "smoke" } else { "full" }
    );

    let mut all = RunOutput::default();
    let mut failures = Vec::new();
    for run in 1..=runs {
        for &kind in &kinds {
            match suite::run_server(kind, run, &sizes, &env, &scenarios).await {
                Ok(out) => {
                    all.figures.extend(out.figures);
                    all.details.extend(out.details);
                }
                Err(e) => {
                    eprintln!("[run {run}] {} failed: {e:#}", kind.name());
                    failures.push(format!("run {run} {}: {e:#}", kind.name()));
                }
            }
            report::write_json(&out_path, &machine, cli.smoke, &sizes, &all, &failures)?;
        }
    }
    let table = report::summarize(&all.figures, cli.smoke);
    println!("{}", report::render(&table, &machine, runs, cli.smoke));
    report::write_json(&out_path, &machine, cli.smoke, &sizes, &all, &failures)?;
    eprintln!("results written to {}", out_path.display());
    let problems = report::correctness_problems(&all.figures);
    for p in &problems {
        eprintln!("FAILED: {p}");
    }
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    let mut soaked = true;
    if cli.smoke && !by_hand && kinds.contains(&Kind::Chat) {
        let options = soak::SoakOptions {
            seconds: SMOKE_SOAK_SECS,
            every_secs: SMOKE_SOAK_EVERY_SECS,
            keep_picture: false,
        };
        soaked = soak::run(&env, &options).await.unwrap_or_else(|e| {
            eprintln!("FAILED: soak: {e:#}");
            false
        });
    }
    Ok(problems.is_empty() && failures.is_empty() && soaked)
}
