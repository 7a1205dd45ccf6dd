//! Philox 4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel random
//! numbers: as easy as 1, 2, 3" (SC 2011), with the constants of their Random123 library.
//!
//! A draw is a pure function of (key, counter), so a sequence's randomness does not depend on the
//! batch it is sampled in or on launch order. The sampler keys Philox with the request's seed and
//! uses the counter `[round / 4, step as u32, seq_id as u32, (seq_id >> 32) as u32]`, taking output
//! word `round % 4` for rejection round `round` (see [`round_bits`]). `kernels/sampling.cu` does
//! exactly the same.

/// Multiplier applied to counter word 0 in each round.
pub const M0: u32 = 0xD251_1F53;
/// Multiplier applied to counter word 2 in each round.
pub const M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 between rounds (golden ratio).
pub const W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 between rounds (sqrt(3) - 1).
pub const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox 4x32 block with 10 rounds: four 32-bit outputs for a 128-bit counter and 64-bit key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The Philox key for a seed: its low and high 32-bit halves.
#[inline]
pub fn key_for_seed(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The 32 random bits the sampler uses in rejection round `round` of decoding step `step` of
/// sequence `seq_id`. Steps are taken modulo 2^32.
#[inline]
pub fn round_bits(seed: u64, seq_id: u64, step: u64, round: u32) -> u32 {
    let ctr = [round / 4, step as u32, seq_id as u32, (seq_id >> 32) as u32];
    philox4x32_10(ctr, key_for_seed(seed))[(round % 4) as usize]
}

/// A uniform float in [0, 1) from 32 random bits (their top 24 bits; every value is exact).
#[inline]
pub fn bits_to_unit(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform float in [0, 1) for (seed; seq_id, step, index): the `index`-th uniform of that step.
#[inline]
pub fn uniform(seed: u64, seq_id: u64, step: u64, index: u32) -> f32 {
    bits_to_unit(round_bits(seed, seq_id, step, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's tests/kat_vectors for philox4x32 with 10 rounds.
    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_in_unit_interval_with_mean_half() {
        let n = 200_000u32;
        let mut sum = 0.0f64;
        for i in 0..n {
            let u = uniform(42, 7, u64::from(i / 16), i % 16);
            assert!((0.0..1.0).contains(&u), "uniform {u} out of [0,1)");
            sum += f64::from(u);
        }
        let mean = sum / f64::from(n);
        // Standard error of the mean is sqrt(1/12/n) ~ 6.5e-4; allow 6 sigma.
        assert!((mean - 0.5).abs() < 4e-3, "mean {mean}");
        assert_eq!(bits_to_unit(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        assert_eq!(bits_to_unit(0), 0.0);
    }

    #[test]
    fn streams_differ_by_seed_sequence_and_step() {
        let a = round_bits(1, 2, 3, 0);
        assert_ne!(a, round_bits(2, 2, 3, 0));
        assert_ne!(a, round_bits(1, 3, 3, 0));
        assert_ne!(a, round_bits(1, 2, 4, 0));
        assert_ne!(a, round_bits(1, 2, 3, 1));
        assert_eq!(a, round_bits(1, 2, 3, 0));
    }
}
