//! Round-trip latency and throughput of the mngr IPC, against a raw Unix-socket baseline.
//!
//! Run with `cargo bench -p mngr-ipc --bench ipc_roundtrip` (release build). `--quick` or
//! `BENCH_QUICK=1` shrinks the counts for a smoke run, as does running without `--bench`
//! (`cargo test --all-targets`). `BENCH_STRICT=1` makes a failed target exit with status 1;
//! otherwise the bench only reports. Method and recorded figures: `BENCHMARKS.md` at the
//! workspace root.
//!
//! * Baseline: a one-thread `std` `UnixListener` that accepts, reads exactly 280 bytes,
//!   writes them back and closes; its client connects, writes 280 bytes, reads 280 bytes
//!   and closes, once per request.
//! * Ours: `spawn_server` with a `DM_QUERY` handler acking `State(0)`, and `Client::send`
//!   (one connection per request, as the C peers do).
//! * Diagnostic (latency only): our server reached through `client::exchange` on a stream
//!   connected to its known socket path, i.e. `Client::send` minus the directory lookup.

use acrn_tests::echo::EchoServer;
use acrn_tests::measure::{Burst, burst, env_is_1, percentile, print_machine};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mngr_ipc::client::{self, Client};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request};
use mngr_ipc::server::{Access, Handlers, ServerConfig, ServerThread, spawn_server};
use mngr_ipc::{MSG_LEN, Profile, Wire};

/// Name of the server under test in its socket directory.
const SERVER_NAME: &str = "bench";
/// Per-request budget; a request that needs longer counts as an error.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrency levels of the throughput runs.
const CONCURRENCY: [usize; 3] = [1, 8, 64];

/// Counts of one run of the bench.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Untimed requests before the latency run.
    warmup: usize,
    /// Timed sequential requests of the latency run, per target.
    latency: usize,
    /// The latency run alternates targets every this many requests.
    block: usize,
    /// Requests per throughput round, split evenly over the clients.
    throughput: usize,
    /// Throughput rounds per (server, concurrency); the median round is reported.
    rounds: usize,
}

impl Counts {
    fn full() -> Self {
        Counts {
            warmup: 200,
            latency: 5000,
            block: 250,
            throughput: 4000,
            rounds: 5,
        }
    }

    fn quick() -> Self {
        Counts {
            warmup: 20,
            latency: 200,
            block: 50,
            throughput: 256,
            rounds: 1,
        }
    }
}

/// What a client talks to.
#[derive(Debug, Clone)]
enum Target {
    /// The raw echo server at this path; the request bytes to send.
    Baseline { path: PathBuf, wire: Box<Wire> },
    /// Our server, through `Client::send`.
    Ours { client: Client },
    /// Diagnostic: our server, connecting to its known socket path and calling
    /// `client::exchange`, i.e. `Client::send` without the socket-directory lookup.
    OursNoLookup { path: PathBuf },
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Baseline { .. } => "baseline",
            Target::Ours { .. } => "mngr-ipc",
            Target::OursNoLookup { .. } => "no-lookup",
        }
    }

    /// One request, one connection. `Err` describes why it did not complete.
    fn request(&self) -> Result<(), String> {
        match self {
            Target::Baseline { path, wire } => {
                let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| format!("set_read_timeout: {e}"))?;
                s.write_all(&wire[..]).map_err(|e| format!("write: {e}"))?;
                let mut back = [0u8; MSG_LEN];
                s.read_exact(&mut back)
                    .map_err(|e| format!("read (short read or timeout): {e}"))?;
                if back[..] != wire[..] {
                    return Err("echo differs from the request".to_owned());
                }
                Ok(())
            }
            Target::Ours { client } => {
                let ack = client
                    .send(SERVER_NAME, &Request::now(Body::DmQuery), TIMEOUT)
                    .map_err(|e| format!("send: {e}"))?;
                check_ack(&ack.payload)
            }
            Target::OursNoLookup { path } => {
                let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
                let req = Request::now(Body::DmQuery);
                let ack =
                    client::exchange(&mut s, Profile::F, &req, Instant::now() + TIMEOUT, TIMEOUT)
                        .map_err(|e| format!("exchange: {e}"))?;
                check_ack(&ack.payload)
            }
        }
    }
}

fn check_ack(payload: &AckPayload) -> Result<(), String> {
    if *payload == AckPayload::State(0) {
        Ok(())
    } else {
        Err(format!("unexpected ack payload {payload:?}"))
    }
}

/// The baseline: one thread, sequential accept / read 280 / write 280 / close.
/// Latency percentiles of one sequential run, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: u64,
    p99: u64,
    min: u64,
    max: u64,
    mean: u64,
    errors: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sequential requests to every target, alternating targets every `counts.block`
/// requests so that drift (frequency, neighbours on the host) affects them alike.
fn measure_latency(targets: &[Target], counts: Counts) -> Vec<Latency> {
    for t in targets {
        for _ in 0..counts.warmup {
            // Warm-up failures show up again in the timed run.
            let _ = t.request();
        }
    }
    let mut samples: Vec<Vec<u64>> = targets
        .iter()
        .map(|_| Vec::with_capacity(counts.latency))
        .collect();
    let mut errors = vec![0usize; targets.len()];
    let mut done = 0;
    while done < counts.latency {
        let n = counts.block.min(counts.latency - done);
        for (i, t) in targets.iter().enumerate() {
            for _ in 0..n {
                let t0 = Instant::now();
                let r = t.request();
                let dt = nanos(t0.elapsed());
                match r {
                    Ok(()) => samples[i].push(dt),
                    Err(e) => {
                        if errors[i] == 0 {
                            eprintln!("{}: latency run: first error: {e}", t.label());
                        }
                        errors[i] += 1;
                    }
                }
            }
        }
        done += n;
    }
    targets
        .iter()
        .zip(samples)
        .zip(errors)
        .map(|((t, mut s), errors)| {
            assert!(!s.is_empty(), "{}: every latency request failed", t.label());
            s.sort_unstable();
            let sum: u128 = s.iter().map(|&x| u128::from(x)).sum();
            let mean = u64::try_from(sum / s.len() as u128).unwrap_or(u64::MAX);
            Latency {
                p50: percentile(&s, 50),
                p99: percentile(&s, 99),
                min: s[0],
                max: s[s.len() - 1],
                mean,
                errors,
            }
        })
        .collect()
}

/// One throughput round: `clients` threads, released together by a barrier.
type Round = Burst;

/// The throughput of one (server, concurrency): every round, and the median one.
#[derive(Debug, Clone)]
struct Throughput {
    rounds: Vec<Round>,
}

impl Throughput {
    fn median_rate(&self) -> f64 {
        let mut rates: Vec<f64> = self.rounds.iter().map(Round::rate).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }

    fn requests(&self) -> usize {
        self.rounds.iter().map(|r| r.ok + r.errors).sum()
    }

    fn errors(&self) -> usize {
        self.rounds.iter().map(|r| r.errors).sum()
    }

    fn first_error(&self) -> Option<&str> {
        self.rounds.iter().find_map(|r| r.first_error.as_deref())
    }
}

/// Both servers' results.
#[derive(Debug)]
struct Results {
    /// Baseline, ours, ours without the lookup.
    latency: Vec<Latency>,
    /// Indexed like [`CONCURRENCY`], each `[baseline, ours]`.
    throughput: Vec<[Throughput; 2]>,
}

fn run(counts: Counts) -> Results {
    let base_dir = tempfile::Builder::new()
        .prefix("ipc-bench-raw")
        .tempdir()
        .expect("create the baseline socket dir");
    let ours_dir = tempfile::Builder::new()
        .prefix("ipc-bench-mngr")
        .tempdir()
        .expect("create the mngr socket dir");

    let wire = Profile::F
        .encode_request(&Request::now(Body::DmQuery))
        .expect("encode a DM_QUERY request");
    let echo = EchoServer::start(base_dir.path().join("echo.socket"), MSG_LEN);
    let baseline = Target::Baseline {
        path: echo.path().to_owned(),
        wire: Box::new(wire),
    };

    let handlers = Handlers::new().on(MsgId::DmQuery, Access::Open, |_req, call, _ctx: &mut ()| {
        call.ack(AckPayload::State(0))
    });
    let server: ServerThread = spawn_server(
        ServerConfig::new(SERVER_NAME, ours_dir.path()),
        handlers,
        (),
    )
    .expect("start the mngr-ipc server");
    let ours = Target::Ours {
        client: Client::new(ours_dir.path(), Profile::F),
    };
    let no_lookup = Target::OursNoLookup {
        path: server.path().to_owned(),
    };
    let latency_targets = [baseline.clone(), ours.clone(), no_lookup];
    let targets = [baseline, ours];

    let latency = measure_latency(&latency_targets, counts);
    for (t, l) in latency_targets.iter().zip(&latency) {
        println!(
            "latency  {:<9} n={:<5} p50 {:>9} p99 {:>9} min {:>9} mean {:>9} max {:>9} errors {}",
            t.label(),
            counts.latency,
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.min),
            fmt_ns(l.mean),
            fmt_ns(l.max),
            l.errors
        );
    }

    let mut throughput = Vec::new();
    for &clients in &CONCURRENCY {
        let mut per_target = [
            Throughput { rounds: Vec::new() },
            Throughput { rounds: Vec::new() },
        ];
        // Alternate the servers round by round so drift affects both alike.
        for _ in 0..counts.rounds {
            for (i, t) in targets.iter().enumerate() {
                per_target[i].rounds.push({
                    let t = t.clone();
                    burst(clients, counts.throughput, move || t.request())
                });
            }
        }
        for (t, tp) in targets.iter().zip(&per_target) {
            let rates: Vec<String> = tp
                .rounds
                .iter()
                .map(|r| format!("{:.0}", r.rate()))
                .collect();
            println!(
                "tput     {:<9} clients={:<3} requests={:<6} errors={:<4} median {:>8.0}/s  rounds [{}]/s{}",
                t.label(),
                clients,
                tp.requests(),
                tp.errors(),
                tp.median_rate(),
                rates.join(", "),
                tp.first_error()
                    .map(|e| format!("  first error: {e}"))
                    .unwrap_or_default()
            );
        }
        throughput.push(per_target);
    }

    server.stop();
    drop(echo);
    Results {
        latency,
        throughput,
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} us", ns as f64 / 1e3)
    }
}

/// One line of the summary table.
struct Line {
    what: &'static str,
    baseline: String,
    ours: String,
    ratio: String,
    limit: &'static str,
    /// `None` for information-only lines.
    pass: Option<bool>,
}

fn summarize(r: &Results) -> bool {
    let [base, ours, no_lookup] = &r.latency[..] else {
        panic!("three latency targets are measured");
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let p50_ratio = ratio(ours.p50 as f64, base.p50 as f64);
    let p99_ratio = ratio(ours.p99 as f64, base.p99 as f64);
    let tput = |clients: usize| {
        let i = CONCURRENCY
            .iter()
            .position(|&c| c == clients)
            .expect("concurrency level is measured");
        let [b, o] = &r.throughput[i];
        (b.median_rate(), o.median_rate(), o.errors(), o.requests())
    };
    let (b1, o1, _, _) = tput(1);
    let (b8, o8, _, _) = tput(8);
    let (b64, o64, e64, n64) = tput(64);
    let rate = |x: f64| format!("{x:.0}/s");

    let lines = [
        Line {
            what: "p50 round trip",
            baseline: fmt_ns(base.p50),
            ours: fmt_ns(ours.p50),
            ratio: format!("{p50_ratio:.2}x"),
            limit: "<= 1.5x",
            pass: Some(p50_ratio <= 1.5),
        },
        Line {
            what: "64 clients, errors (ours)",
            baseline: "-".into(),
            ours: format!("{e64} of {n64}"),
            ratio: "-".into(),
            limit: "0",
            pass: Some(e64 == 0 && n64 > 0),
        },
        Line {
            what: "8-client throughput",
            baseline: rate(b8),
            ours: rate(o8),
            ratio: format!("{:.2}x", ratio(o8, b8)),
            limit: ">= 0.5x",
            pass: Some(ratio(o8, b8) >= 0.5),
        },
        Line {
            what: "p99 round trip",
            baseline: fmt_ns(base.p99),
            ours: fmt_ns(ours.p99),
            ratio: format!("{p99_ratio:.2}x"),
            limit: "info",
            pass: None,
        },
        Line {
            what: "p50, no lookup (diag)",
            baseline: fmt_ns(base.p50),
            ours: fmt_ns(no_lookup.p50),
            ratio: format!("{:.2}x", ratio(no_lookup.p50 as f64, base.p50 as f64)),
            limit: "info",
            pass: None,
        },
        Line {
            what: "1-client throughput",
            baseline: rate(b1),
            ours: rate(o1),
            ratio: format!("{:.2}x", ratio(o1, b1)),
            limit: "info",
            pass: None,
        },
        Line {
            what: "64-client throughput",
            baseline: rate(b64),
            ours: rate(o64),
            ratio: format!("{:.2}x", ratio(o64, b64)),
            limit: "info",
            pass: None,
        },
    ];

    println!();
    println!(
        "{:<27} {:>12} {:>12} {:>8} {:>8}  result",
        "figure", "baseline", "mngr-ipc", "ratio", "target"
    );
    let mut all_pass = true;
    for l in &lines {
        let result = match l.pass {
            Some(true) => "PASS",
            Some(false) => {
                all_pass = false;
                "FAIL"
            }
            None => "-",
        };
        println!(
            "{:<27} {:>12} {:>12} {:>8} {:>8}  {result}",
            l.what, l.baseline, l.ours, l.ratio, l.limit
        );
    }
    all_pass
}

fn main() -> ExitCode {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    // `cargo bench` passes `--bench`; `cargo test --benches` / `--all-targets` does not, and
    // then, as with criterion, the bench is only smoke-tested. Other arguments are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let quick = !benching || args.iter().any(|a| a == "--quick") || env_is_1("BENCH_QUICK");
    let strict = env_is_1("BENCH_STRICT");
    let counts = if quick {
        Counts::quick()
    } else {
        Counts::full()
    };

    println!("mngr-ipc round trip vs raw Unix socket (one connection per request)");
    print_machine();
    println!(
        "counts: warm-up {}, latency {} sequential per target in blocks of {}, throughput {} per round x {} round(s) at {:?} clients{}",
        counts.warmup,
        counts.latency,
        counts.block,
        counts.throughput,
        counts.rounds,
        CONCURRENCY,
        if quick { " (quick)" } else { "" }
    );
    let started = Instant::now();
    let results = run(counts);
    let all_pass = summarize(&results);
    println!("\nwall time {:.1} s", started.elapsed().as_secs_f64());

    if !all_pass && strict {
        println!("a target FAILED and BENCH_STRICT=1: exiting with status 1");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
