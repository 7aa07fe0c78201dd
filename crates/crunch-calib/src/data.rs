//! Calibration windows drawn from tokenized text.

use crate::{Result, WindowProblem};
use crunch_model::testing::SplitMix64;

/// `samples` windows of `len` tokens at random starts in `tokens`, reproducible from `seed`
/// (the GPTQ reference code draws its C4/WikiText windows the same way).
pub fn windows(tokens: &[u32], samples: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if len == 0 || samples == 0 {
        return Err(WindowProblem::Empty.into());
    }
    if tokens.len() < len {
        let tokens = tokens.len();
        return Err(WindowProblem::TextTooShort { tokens, len }.into());
    }
    // More windows than the text has distinct windows only repeats them (and a billion of
    // them would fill the memory before calibration starts).
    let starts = (tokens.len() - len + 1) as u64;
    if samples as u64 > starts {
        let tokens = tokens.len();
        return Err(WindowProblem::TooManyWindows {
            samples,
            len,
            tokens,
            starts,
        }
        .into());
    }
    let mut rng = SplitMix64(seed);
    Ok((0..samples)
        .map(|_| {
            let s = (rng.next_u64() % starts) as usize;
            tokens[s..s + len].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_reproducible_and_in_range() {
        let t: Vec<u32> = (0..1000).collect();
        let a = windows(&t, 16, 100, 0).unwrap();
        assert_eq!(a, windows(&t, 16, 100, 0).unwrap());
        assert_ne!(a, windows(&t, 16, 100, 1).unwrap());
        for w in &a {
            assert_eq!(w.len(), 100);
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
        }
        assert!(windows(&t[..50], 1, 100, 0).is_err());
        assert!(windows(&t, 901, 100, 0).is_ok());
        let e = windows(&t, 902, 100, 0).unwrap_err().to_string();
        assert!(e.contains("only 901 distinct windows"), "{e}");
        assert!(windows(&t, 1_000_000_000, 512, 0).is_err());
    }
}
