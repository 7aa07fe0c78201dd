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

/// `Σ a·b` in 16 partial sums, added in one fixed order (the compiler vectorises it in the
/// callers' target features; the same order everywhere, so every caller's sums agree).
#[inline(always)]
pub fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// An output buffer shared by parallel tasks that each write their own disjoint elements
/// (rows, columns or pieces): a raw pointer, so the tasks need no lock.
#[derive(Clone, Copy)]
pub struct SharedOut(*mut f32);
// SAFETY: the tasks that share one write disjoint elements (each user states how).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub fn new(out: &mut [f32]) -> Self {
        SharedOut(out.as_mut_ptr())
    }

    /// The pointer to element `i` (a method, so closures capture the whole `SharedOut`, which
    /// is `Sync`, not its field). Writing through it is the caller's `unsafe`: `i` must lie in
    /// the output and belong to the caller's task alone.
    #[inline(always)]
    pub fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }

    /// Elements `start..start + len` as a slice.
    ///
    /// # Safety
    /// `start..start + len` must lie in the output and belong to the caller alone.
    #[inline(always)]
    pub unsafe fn piece<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
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
