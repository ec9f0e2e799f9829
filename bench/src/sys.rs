//! What the load generator reads from the operating system: a process's CPU time, RSS and open
//! file descriptors from `/proc`, and the open-files limit.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Raises the soft open-files limit to the hard limit; children inherit it. Returns the limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU seconds the process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; the fields after it are space-separated.
    let after = &text[text.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), counted from 1; `after` starts at field 3.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks_per_sec())
}

/// CPU seconds the whole machine has been busy (all CPUs, from `/proc/stat`): with the
/// server's and the load generator's shares subtracted, what else ran during a measurement.
pub fn machine_busy_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok((total - idle) / clock_ticks_per_sec())
}

/// Resident set size in KiB, from `VmRSS` in `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The parts of the RSS in KiB: anonymous memory (the heap), pages of mapped files (for
/// chat-server, mostly the memory-mapped database) and shared memory (its `-shm` index).
pub fn rss_parts_kib(pid: u32) -> Result<(u64, u64, u64)> {
    Ok((
        status_kib(pid, "RssAnon")?,
        status_kib(pid, "RssFile")?,
        status_kib(pid, "RssShmem")?,
    ))
}

/// A `<field>:  <n> kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .with_context(|| format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {field}"))?
        .parse()?)
}

/// Open file descriptors of the process (sockets included).
pub fn open_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(Path::new(&dir))
        .with_context(|| format!("reading {dir}"))?
        .count())
}

/// A one-line description of the machine for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB RAM")
}
