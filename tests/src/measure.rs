//! Measuring helpers shared by the benches: nearest-rank percentiles, what `/proc` says about
//! a process (resident memory, threads, context switches), the machine's facts, the file
//! limit, and the analysis of a periodic signal (heartbeats) against its ideal grid.
//!
//! Everything here reads, nothing waits: the benches own their timing.

use std::collections::BTreeMap;
use std::fs;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Nearest-rank percentile of **sorted** samples: the smallest sample with at least `pct`%
/// of the samples at or below it (rank ⌈pct/100 · n⌉).
///
/// # Panics
///
/// If `sorted` is empty.
#[must_use]
pub fn percentile(sorted: &[u64], pct: usize) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Nearest-rank percentile of unsorted samples; `None` without samples.
#[must_use]
pub fn pct(samples: &[u64], p: usize) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    Some(percentile(&s, p))
}

/// The first number after `key` in a `/proc/.../status`-style text.
#[must_use]
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident memory of a process, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`.
    pub total: u64,
    /// `RssAnon`.
    pub anon: u64,
    /// `RssFile`.
    pub file: u64,
    /// Pages of the process's own executable (part of `file`, from `smaps`).
    pub exe: u64,
}

/// The resident memory of `pid`, or `None` if it is gone.
#[must_use]
pub fn rss_of(pid: u32) -> Option<Rss> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_str()?;
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mine = false;
    let mut exe_kib = 0;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Rss:") {
            if mine {
                exe_kib += rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        } else if line.split_whitespace().next().is_some_and(|w| {
            w.contains('-') && w.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        }) {
            mine = line.ends_with(exe);
        }
    }
    Some(Rss {
        total: status_field(&status, "VmRSS:")?,
        anon: status_field(&status, "RssAnon:")?,
        file: status_field(&status, "RssFile:")?,
        exe: exe_kib,
    })
}

/// The number of threads of `pid` (`Threads:` in its status; 0 if it is gone).
#[must_use]
pub fn threads_of(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field(&s, "Threads:"))
        .unwrap_or(0)
}

/// Per thread of `pid`: name, voluntary and involuntary context switches so far.
#[must_use]
pub fn switches(pid: u32) -> BTreeMap<u32, (String, u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let p = t.path();
        let comm = fs::read_to_string(p.join("comm")).unwrap_or_default();
        let Ok(status) = fs::read_to_string(p.join("status")) else {
            continue;
        };
        let vol = status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
        let inv = status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        out.insert(tid, (comm.trim().to_owned(), vol, inv));
    }
    out
}

/// Context switches (voluntary + involuntary) between two [`switches`] readings, summed
/// over the threads; a thread born in between counts from 0.
#[must_use]
pub fn switches_between(
    before: &BTreeMap<u32, (String, u64, u64)>,
    after: &BTreeMap<u32, (String, u64, u64)>,
) -> u64 {
    switches_by_thread(before, after)
        .iter()
        .map(|(_, v, i)| v + i)
        .sum()
}

/// Per thread alive at the second reading: its name and its voluntary and involuntary
/// context switches since the first reading (from 0 for a thread born in between).
#[must_use]
pub fn switches_by_thread(
    before: &BTreeMap<u32, (String, u64, u64)>,
    after: &BTreeMap<u32, (String, u64, u64)>,
) -> Vec<(String, u64, u64)> {
    after
        .iter()
        .map(|(tid, (name, v, i))| {
            let (v0, i0) = before.get(tid).map_or((0, 0), |(_, v0, i0)| (*v0, *i0));
            (name.clone(), v.saturating_sub(v0), i.saturating_sub(i0))
        })
        .collect()
}

/// The three load averages, as `/proc/loadavg` shows them.
#[must_use]
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// The machine in one line: CPUs, CPU model, kernel, load average now.
#[must_use]
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    format!(
        "machine: nproc {nproc}; cpu {cpu}; kernel {kernel}; load average at start {}",
        load_average()
    )
}

/// Prints [`machine`], and a warning when the bench itself is a debug build.
pub fn print_machine() {
    println!("{}", machine());
    if cfg!(debug_assertions) {
        println!("WARNING: debug build of the bench; run `cargo bench` for meaningful figures");
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `want` (or the hard limit, if lower); says what it did.
#[must_use]
pub fn raise_nofile(want: u64) -> String {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < want && hard > soft => {
            let to = hard.min(want);
            match setrlimit(Resource::RLIMIT_NOFILE, to, hard) {
                Ok(()) => format!("raised from {soft} to {to} (hard {hard})"),
                Err(e) => format!("{soft} (raising to {to} failed: {e})"),
            }
        }
        Ok((soft, hard)) => format!("{soft} (hard {hard}), kept"),
        Err(e) => format!("unknown: {e}"),
    }
}

/// Whether the environment variable `name` is `1` (`BENCH_QUICK`, `BENCH_STRICT`).
#[must_use]
pub fn env_is_1(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Deviations of a periodic signal from its ideal grid.
#[derive(Debug, Clone)]
pub struct Beats {
    /// Arrivals analysed.
    pub frames: usize,
    /// Periods the window spans.
    pub periods: u64,
    /// Grid slots without an arrival: a beat that never came, or one off by more than half
    /// a period (then counted in the neighbouring slot).
    pub missing: u64,
    /// Deviation per arrival, µs, with its beat number.
    pub devs: Vec<(u64, f64)>,
    /// Median |deviation|, µs.
    pub median_abs: f64,
    /// 95th percentile |deviation| (nearest rank), µs.
    pub p95_abs: f64,
    /// Largest |deviation|, µs.
    pub max_abs: f64,
    /// Largest |deviation − median deviation|: the spread without beat 0's own offset, µs.
    pub spread: f64,
    /// Least-squares slope of deviation against beat number, µs per beat.
    pub slope: f64,
    /// Longest interval between two arrivals, ns.
    pub max_gap_ns: u64,
}

/// Analyses arrivals (ns on one clock, ascending) against the grid `arrivals[0] + n ·
/// period`. Beat `n` is the grid slot nearest to its arrival, so a missed beat shows up as
/// a gap, not as a one-period deviation of every later beat.
#[must_use]
pub fn analyze_beats(arrivals_ns: &[u64], period_ns: u64) -> Beats {
    if arrivals_ns.len() < 2 || period_ns == 0 {
        return Beats {
            frames: arrivals_ns.len(),
            periods: 0,
            missing: 0,
            devs: Vec::new(),
            median_abs: f64::NAN,
            p95_abs: f64::NAN,
            max_abs: f64::NAN,
            spread: f64::NAN,
            slope: f64::NAN,
            max_gap_ns: 0,
        };
    }
    let p = u128::from(period_ns);
    let t0 = arrivals_ns[0];
    let devs: Vec<(u64, f64)> = arrivals_ns
        .iter()
        .map(|&t| {
            let e = u128::from(t.saturating_sub(t0));
            let n = (e + p / 2) / p;
            let dev =
                i128::try_from(e).unwrap_or(i128::MAX) - i128::try_from(n * p).unwrap_or(i128::MAX);
            (u64::try_from(n).unwrap_or(u64::MAX), dev as f64 / 1e3)
        })
        .collect();
    let periods = devs.last().map_or(0, |d| d.0);
    let distinct = {
        let mut ns: Vec<u64> = devs.iter().map(|d| d.0).collect();
        ns.dedup();
        u64::try_from(ns.len()).unwrap_or(u64::MAX)
    };
    let mut abs: Vec<f64> = devs.iter().map(|d| d.1.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let median_abs = abs[(abs.len() - 1) / 2];
    let p95_abs = abs[(95 * abs.len()).div_ceil(100).max(1) - 1];
    let max_abs = abs[abs.len() - 1];
    let mut signed: Vec<f64> = devs.iter().map(|d| d.1).collect();
    signed.sort_by(f64::total_cmp);
    let mid = signed[(signed.len() - 1) / 2];
    let spread = (signed[signed.len() - 1] - mid).max(mid - signed[0]);
    let k = devs.len() as f64;
    let mx = devs.iter().map(|d| d.0 as f64).sum::<f64>() / k;
    let my = devs.iter().map(|d| d.1).sum::<f64>() / k;
    let sxy: f64 = devs.iter().map(|d| (d.0 as f64 - mx) * (d.1 - my)).sum();
    let sxx: f64 = devs.iter().map(|d| (d.0 as f64 - mx).powi(2)).sum();
    let max_gap_ns = arrivals_ns
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or(0);
    Beats {
        frames: arrivals_ns.len(),
        periods,
        missing: (periods + 1).saturating_sub(distinct),
        devs,
        median_abs,
        p95_abs,
        max_abs,
        spread,
        slope: if sxx > 0.0 { sxy / sxx } else { 0.0 },
        max_gap_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(pct(&[3, 1, 2], 50), Some(2));
        assert_eq!(pct(&[], 50), None);
    }

    #[test]
    fn beats_on_the_grid_with_a_gap_and_a_late_one() {
        let ms = 1_000_000;
        // Beats 0..=5, beat 3 missing, beat 4 late by 2 ms.
        let arrivals = [0, 100 * ms, 200 * ms, 402 * ms, 500 * ms];
        let b = analyze_beats(&arrivals, 100 * ms);
        assert_eq!(b.periods, 5);
        assert_eq!(b.missing, 1);
        assert!((b.max_abs - 2000.0).abs() < 1e-6);
        assert_eq!(b.max_gap_ns, 202 * ms);
        let none = analyze_beats(&[5], 100 * ms);
        assert!(none.max_abs.is_nan());
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let rss = rss_of(pid).expect("own status");
        assert!(rss.total > 0 && rss.exe > 0);
        assert!(threads_of(pid) >= 1);
        let a = switches(pid);
        assert!(!a.is_empty());
        assert_eq!(switches_between(&a, &a), 0);
        assert!(machine().starts_with("machine: nproc"));
    }
}

/// One round of concurrent requests: what [`burst`] returns.
#[derive(Debug, Clone)]
pub struct Burst {
    /// Requests answered.
    pub ok: usize,
    /// Requests failed.
    pub errors: usize,
    /// From the first client's start to the last client's end.
    pub elapsed: std::time::Duration,
    /// The first error any client saw.
    pub first_error: Option<String>,
}

impl Burst {
    /// Requests answered per second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `total` calls of `request` shared by `clients` threads (named `client-<i>`) released
/// together by a barrier.
///
/// # Panics
///
/// If a thread cannot be started or panics.
pub fn burst(
    clients: usize,
    total: usize,
    request: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> Burst {
    use std::sync::{Arc, Barrier};
    use std::time::Instant;
    let clients = clients.max(1);
    let per_client = total.div_ceil(clients).max(1);
    let barrier = Arc::new(Barrier::new(clients));
    let request = Arc::new(request);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (barrier, request) = (Arc::clone(&barrier), Arc::clone(&request));
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let (mut ok, mut errors, mut first) = (0usize, 0usize, None);
                    for _ in 0..per_client {
                        match request() {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                errors += 1;
                                first.get_or_insert(e);
                            }
                        }
                    }
                    (start, Instant::now(), ok, errors, first)
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut out = Burst {
        ok: 0,
        errors: 0,
        elapsed: std::time::Duration::ZERO,
        first_error: None,
    };
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for t in threads {
        let (s, e, ok, errors, f) = t.join().expect("client thread");
        first = Some(first.map_or(s, |x| x.min(s)));
        last = Some(last.map_or(e, |x| x.max(e)));
        out.ok += ok;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = f;
        }
    }
    if let (Some(s), Some(e)) = (first, last) {
        out.elapsed = e.duration_since(s);
    }
    out
}
