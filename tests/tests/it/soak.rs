//! The soak: many S3 cycles with frames lost on the line.

use acrn_tests::scenario::Options;
use acrn_tests::scenarios::{self, GAP_STALE_QUERY, seed_from_clock};

/// Cycles of the soak, unless `ACRN_SOAK_CYCLES` says otherwise.
const CYCLES: u32 = 200;

#[test]
fn soak_s3_cycles_with_frame_loss() {
    let cycles = std::env::var("ACRN_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES);
    let seed = std::env::var("ACRN_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(seed_from_clock);
    println!("soak: {cycles} cycles, fault seed {seed} (ACRN_SOAK_SEED={seed} replays it)");
    let mut opts = Options::test(3);
    opts.seed = Some(seed);
    opts.cycles = cycles;
    let started = std::time::Instant::now();
    let report = scenarios::play_body("soak", scenarios::soak, opts);
    let took = started.elapsed();
    println!(
        "soak: {} in {took:.1?} ({:.0} ms per cycle); racy gaps hit: {:?}",
        if report.passed() { "passed" } else { "failed" },
        took.as_secs_f64() * 1000.0 / f64::from(cycles),
        report.gap_ids()
    );
    report.assert_passed_allowing(&[], &[GAP_STALE_QUERY]);
}
