//! A measurement hook (decision 142, issue 17's CPU–GPU agreement): with the environment
//! variable `CRUNCH_KV_PERTURB=N[:SEED]`, every key and value a compressed store
//! ([`super::QuantKv`]) is given moves by N units in the last place of its f32 (away from or
//! towards zero, a fixed hash of the seed, position, head, channel and side choosing), before
//! the store rounds or quantizes it. This imitates the last-bit differences between the CPU's
//! and the GPU's arithmetic (cuBLAS against gemm) on one device, so that how much a mode's KL
//! moves under them can be measured where the GPU is not. The f32 cache (the backends' own)
//! is never perturbed, so KL against it measures the compressed mode alone.
//!
//! Unset (the default), nothing changes. A value that does not parse is an error of the
//! append that reads it, naming the variable.

use crate::{Error, Result};
use std::sync::OnceLock;

/// The variable's name.
pub const VAR: &str = "CRUNCH_KV_PERTURB";

/// `(ulps, seed)` when perturbing.
fn setting() -> Result<Option<(u32, u64)>> {
    static SETTING: OnceLock<std::result::Result<Option<(u32, u64)>, String>> = OnceLock::new();
    SETTING
        .get_or_init(|| match std::env::var(VAR) {
            Err(_) => Ok(None),
            Ok(s) => parse(&s),
        })
        .clone()
        .map_err(Error)
}

fn parse(s: &str) -> std::result::Result<Option<(u32, u64)>, String> {
    let bad = || format!("{VAR}='{s}': expected N or N:SEED (units in the last place, a seed)");
    let mut it = s.split(':');
    let ulps = it
        .next()
        .and_then(|x| x.parse::<u32>().ok())
        .ok_or_else(bad)?;
    let seed = match it.next() {
        None => 0,
        Some(x) => x.parse::<u64>().map_err(|_| bad())?,
    };
    if it.next().is_some() || ulps > 1 << 20 {
        return Err(bad());
    }
    Ok((ulps > 0).then_some((ulps, seed)))
}

/// `x` moved by `ulps` units in the last place, away from zero if `up` (towards it
/// otherwise; never across it). Zero, infinities and NaN are left as they are.
pub(crate) fn nudge(x: f32, ulps: u32, up: bool) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    let mag = b & 0x7fff_ffff;
    let mag = match up {
        true => mag.saturating_add(ulps).min(0x7f7f_ffff),
        false => mag.saturating_sub(ulps).max(1),
    };
    f32::from_bits((b & 0x8000_0000) | mag)
}

/// The direction of value `(pos, head, channel)` of `side` (0 keys, 1 values) for `seed`.
fn direction(seed: u64, side: u64, pos: usize, head: usize, channel: usize) -> bool {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(((pos as u64) << 24) ^ ((head as u64) << 12) ^ channel as u64)
        .wrapping_add(side << 60);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & 1 == 1
}

/// The rows `[t, kv_heads, d]` of positions `first..first + t` as the store is to see them:
/// `None` when not perturbing (use the rows as given).
pub(crate) fn perturbed(
    x: &[f32],
    side: u64,
    first: usize,
    kv_heads: usize,
    d: usize,
) -> Result<Option<Vec<f32>>> {
    let Some((ulps, seed)) = setting()? else {
        return Ok(None);
    };
    Ok(Some(
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let (pos, head, c) = (first + i / (kv_heads * d), i / d % kv_heads, i % d);
                nudge(v, ulps, direction(seed, side, pos, head, c))
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_move_by_whole_ulps_and_keep_the_sign() {
        assert_eq!(nudge(1.0, 1, true), 1.0 + f32::EPSILON);
        assert_eq!(nudge(1.0, 1, false), 1.0 - f32::EPSILON / 2.0);
        assert_eq!(nudge(-2.0, 3, true), -(2.0 + 3.0 * 2.0 * f32::EPSILON));
        assert_eq!(nudge(0.0, 5, true), 0.0);
        assert_eq!(
            nudge(f32::MIN_POSITIVE / 4.0, 1_000_000, false).signum(),
            1.0
        );
        assert_eq!(nudge(f32::MAX, 2, true), f32::MAX);
        assert!(nudge(f32::NAN, 1, true).is_nan());
    }

    #[test]
    fn settings_parse_or_name_the_variable() {
        assert_eq!(parse("1"), Ok(Some((1, 0))));
        assert_eq!(parse("4:17"), Ok(Some((4, 17))));
        assert_eq!(parse("0"), Ok(None));
        for bad in ["", "x", "1:y", "1:2:3", "-1", "99999999"] {
            assert!(parse(bad).unwrap_err().contains(VAR), "{bad}");
        }
    }

    #[test]
    fn directions_are_balanced_and_fixed() {
        let ups = (0..10_000)
            .filter(|&i| direction(7, 0, i / 192, i / 64 % 3, i % 64))
            .count();
        assert!((4_700..5_300).contains(&ups), "{ups}");
        assert_eq!(direction(7, 1, 5, 2, 9), direction(7, 1, 5, 2, 9));
    }
}
