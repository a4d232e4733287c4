//! Seeded fault injection on the IOC→SoC frames of the lifecycle line.
//!
//! Each frame goes through [`FaultInjector::inject`], which draws four decisions in a fixed
//! order (garbage, drop, corrupt, duplicate) from a [`SplitMix64`] stream, so a run is
//! reproducible from its seed and the sequence of frames:
//!
//! * **garbage** (before the frame): in cdev mode one whole 4-byte frame whose bytes are
//!   none of the service headers 1..=6 (`07 xx xx xx`, `00 xx xx xx`, ...), so a receiver
//!   that resynchronises byte by byte cannot mistake a garbage tail for a frame; in uart mode
//!   1 to 16 arbitrary bytes;
//! * **drop**: the frame is not written (in uart mode its sequence number is used up, as on a
//!   real link);
//! * **corrupt**: one random bit of the frame's bytes (the link frame in uart mode) flipped;
//! * **duplicate**: the same bytes written twice.

use mngr_ipc::line::LineMode;

/// The SplitMix64 generator (Steele, Lea, Flood 2014): tiny, seedable, good enough to
/// decide faults.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// True with probability `p` (always for `p >= 1`, never for `p <= 0`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in `0..n` (`n > 0`; 0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let Ok(n64) = u64::try_from(n) else {
            return 0;
        };
        if n64 == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % n64).expect("below n, which is a usize")
    }

    /// A uniformly random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

/// A seed from the wall clock and the pid, for runs without `--seed`.
pub fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let low = u64::try_from(nanos & u128::from(u64::MAX)).expect("masked to 64 bits");
    SplitMix64::new(low ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// Probabilities (each in `0..=1`) applied to every IOC→SoC frame of the lifecycle line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    /// Seed of the decisions.
    pub seed: u64,
    /// Drop the frame.
    pub drop: f64,
    /// Write the frame twice.
    pub dup: f64,
    /// Flip one bit of the frame.
    pub corrupt: f64,
    /// Insert garbage before the frame.
    pub garbage: f64,
}

impl FaultConfig {
    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        [self.drop, self.dup, self.corrupt, self.garbage]
            .iter()
            .any(|&p| p > 0.0)
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    /// Frames dropped.
    pub drop: u64,
    /// Frames duplicated.
    pub dup: u64,
    /// Frames corrupted.
    pub corrupt: u64,
    /// Garbage insertions.
    pub garbage: u64,
}

/// What to write for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Garbage to write before the frame.
    pub garbage: Option<Vec<u8>>,
    /// The frame's bytes as written (corrupted if `corrupted_bit` is set).
    pub bytes: Vec<u8>,
    /// The frame is not written at all.
    pub dropped: bool,
    /// The bit flipped (bit `i % 8` of byte `i / 8`).
    pub corrupted_bit: Option<usize>,
    /// The frame is written twice.
    pub duplicated: bool,
}

impl Injection {
    /// The chunks to write, in order: garbage, then zero, one or two copies of the frame.
    pub fn chunks(&self) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = Vec::new();
        if let Some(g) = &self.garbage {
            out.push(g);
        }
        if !self.dropped {
            out.push(&self.bytes);
            if self.duplicated {
                out.push(&self.bytes);
            }
        }
        out
    }
}

/// Decides the faults of each frame.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    cfg: FaultConfig,
    rng: SplitMix64,
    counts: FaultCounts,
}

/// A byte that is no lifecycle service header: 0 or 7..=255.
fn non_header(rng: &mut SplitMix64) -> u8 {
    match u8::try_from(rng.below(250)).expect("below 250") {
        0 => 0,
        k => k + 6,
    }
}

impl FaultInjector {
    /// An injector with `cfg`'s probabilities and seed.
    pub fn new(cfg: FaultConfig) -> Self {
        FaultInjector {
            cfg,
            rng: SplitMix64::new(cfg.seed),
            counts: FaultCounts::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    /// Faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// Decides what to write for the frame `bytes` (service or link bytes per `mode`).
    pub fn inject(&mut self, mode: LineMode, bytes: &[u8]) -> Injection {
        let garbage = self.rng.chance(self.cfg.garbage);
        let dropped = self.rng.chance(self.cfg.drop);
        let corrupt = self.rng.chance(self.cfg.corrupt);
        let duplicated = self.rng.chance(self.cfg.dup);
        let garbage = garbage.then(|| {
            self.counts.garbage += 1;
            match mode {
                LineMode::Cdev => (0..4).map(|_| non_header(&mut self.rng)).collect(),
                LineMode::Uart => {
                    let n = 1 + self.rng.below(16);
                    (0..n).map(|_| self.rng.byte()).collect()
                }
            }
        });
        let mut out = bytes.to_vec();
        let mut corrupted_bit = None;
        if dropped {
            self.counts.drop += 1;
        } else {
            if corrupt && !out.is_empty() {
                let bit = self.rng.below(out.len() * 8);
                out[bit / 8] ^= 1u8 << (bit % 8);
                corrupted_bit = Some(bit);
                self.counts.corrupt += 1;
            }
            if duplicated {
                self.counts.dup += 1;
            }
        }
        Injection {
            garbage,
            bytes: out,
            dropped,
            corrupted_bit,
            duplicated: duplicated && !dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mngr_ipc::cbc::{Frame, ServiceStream};

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // Reference outputs of Vigna's splitmix64.c for seed 1234567.
        let mut r = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn uniform_helpers_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(3) < 3);
        }
        assert_eq!(r.below(0), 0);
        assert!(r.chance(1.0));
        assert!(!r.chance(0.0));
    }

    #[test]
    fn probabilities_roughly_hold() {
        let mut r = SplitMix64::new(42);
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
    }

    fn cfg(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            ..FaultConfig::default()
        }
    }

    const FRAME: [u8; 4] = [0x01, 0x20, 0x00, 0x00];

    #[test]
    fn no_faults_pass_frames_through() {
        let mut f = FaultInjector::new(cfg(1));
        assert!(!f.config().any());
        for _ in 0..100 {
            let inj = f.inject(LineMode::Cdev, &FRAME);
            assert_eq!(inj.chunks(), [&FRAME[..]]);
        }
        assert_eq!(f.counts(), FaultCounts::default());
    }

    #[test]
    fn certain_faults_always_happen() {
        let mut dup = FaultInjector::new(FaultConfig { dup: 1.0, ..cfg(3) });
        let mut drop = FaultInjector::new(FaultConfig {
            drop: 1.0,
            ..cfg(3)
        });
        let mut corrupt = FaultInjector::new(FaultConfig {
            corrupt: 1.0,
            ..cfg(3)
        });
        for _ in 0..100 {
            assert_eq!(
                dup.inject(LineMode::Cdev, &FRAME).chunks(),
                [&FRAME[..], &FRAME[..]]
            );
            assert!(drop.inject(LineMode::Cdev, &FRAME).chunks().is_empty());
            let c = corrupt.inject(LineMode::Cdev, &FRAME);
            let flipped: u32 = c
                .bytes
                .iter()
                .zip(FRAME)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
            let bit = c.corrupted_bit.expect("corrupted");
            assert_eq!(c.bytes[bit / 8] ^ FRAME[bit / 8], 1 << (bit % 8));
        }
        assert_eq!(dup.counts().dup, 100);
        assert_eq!(drop.counts().drop, 100);
        assert_eq!(corrupt.counts().corrupt, 100);
    }

    #[test]
    fn cdev_garbage_never_looks_like_a_frame() {
        let mut f = FaultInjector::new(FaultConfig {
            garbage: 1.0,
            ..cfg(11)
        });
        let mut stream = ServiceStream::new();
        for _ in 0..500 {
            let inj = f.inject(LineMode::Cdev, &FRAME);
            let g = inj.garbage.as_ref().expect("garbage");
            assert_eq!(g.len(), 4);
            assert!(g.iter().all(|b| !(1..=6).contains(b)), "{g:02x?}");
            for c in inj.chunks() {
                stream.feed(c);
            }
        }
        let mut frames = 0;
        while let Some(fr) = stream.next_frame() {
            assert_eq!(fr, Frame::WakeupReason(0x20));
            frames += 1;
        }
        assert_eq!(frames, 500);
        assert_eq!(stream.dropped(), 2000);
        assert_eq!(f.counts().garbage, 500);
    }

    #[test]
    fn uart_garbage_is_1_to_16_bytes() {
        let mut f = FaultInjector::new(FaultConfig {
            garbage: 1.0,
            ..cfg(5)
        });
        let mut lens = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let g = f.inject(LineMode::Uart, &FRAME).garbage.expect("garbage");
            assert!((1..=16).contains(&g.len()));
            lens.insert(g.len());
        }
        assert_eq!(lens.len(), 16, "every length occurs");
    }

    #[test]
    fn a_seed_reproduces_the_decisions() {
        let c = FaultConfig {
            seed: 99,
            drop: 0.3,
            dup: 0.3,
            corrupt: 0.3,
            garbage: 0.3,
        };
        let run = || {
            let mut f = FaultInjector::new(c);
            (0..200)
                .map(|_| f.inject(LineMode::Uart, &FRAME))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut other = FaultInjector::new(FaultConfig { seed: 100, ..c });
        let differs = run()
            .iter()
            .any(|inj| *inj != other.inject(LineMode::Uart, &FRAME));
        assert!(differs, "another seed, other decisions");
    }
}
