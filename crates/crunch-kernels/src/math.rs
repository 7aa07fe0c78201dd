//! Small shared numerics.

/// `e^x` for `x <= 0` (softmax after subtracting the maximum), branch-free so it vectorises:
/// `x = n·ln2 + r` with `|r| <= ln2/2`, `e^r` by its degree-7 Taylor polynomial (relative
/// error below 2e-8 there), `2^n` built in the exponent bits. Below -87 the result is about
/// 1.6e-38 (as good as zero next to the maximum's 1).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    #[test]
    fn exp_is_accurate() {
        let mut x = 0f32;
        while x > -90.0 {
            let (got, want) = (exp_nonpositive(x), (x as f64).exp());
            if want > 1e-37 {
                let rel = ((got as f64 - want) / want).abs();
                assert!(rel < 5e-7, "exp({x}) = {got}, want {want}: {rel:e}");
            }
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }
}
