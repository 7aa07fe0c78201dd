//! Keys quantized before their rotary embedding (KVQuant, arXiv 2401.18079, §3.2): a model's
//! keys have a few channels of large magnitude, fixed per channel *before* the rotation; the
//! rotation by `p·θᵢ` mixes each channel with its partner at a rate that differs per pair, so
//! after it a high-frequency pair's two channels swing through the pair's whole amplitude
//! within a group of positions, and a per-channel range over the group is much wider.
//!
//! The store receives rotated keys (what the backends compute); [`Rotation::rotate`] with
//! `inverse` undoes the rotation before a group is quantized per channel, and redoes it on
//! decoding. Both use the same angles, so with exact codes decoding returns the keys as given
//! (within f32 rounding); the angles need only be close to the model's for the channels to be
//! the pre-rotation ones. Layout: "half" (channel `i` pairs with `i + head_dim/2`), the one
//! every backend uses ([`crate::Backend::rope`]).
//!
//! Angles are formed in f64: `(sin, cos)` of `p0·θ` once per block of rows, then advanced a
//! position at a time by the rotation of `θ` (a complex product), so a block of G positions
//! costs `head_dim / 2` sin–cos pairs plus four products per channel pair and row. A LongRoPE
//! factor on cos and sin (Phi-3) scales the keys as a whole, which the per-channel ranges
//! absorb: it is not undone.

/// The rotary frequencies of one block's keys.
#[derive(Clone, Debug)]
pub struct Rotation {
    inv_freq: Vec<f64>,
    /// `(cos θᵢ, sin θᵢ)`: one position's step.
    step: Vec<(f64, f64)>,
}

impl Rotation {
    /// From the inverse frequency of each channel pair (`head_dim / 2` of them).
    pub fn new(inv_freq: &[f64]) -> Rotation {
        Rotation {
            inv_freq: inv_freq.to_vec(),
            step: inv_freq
                .iter()
                .map(|&f| {
                    let (s, c) = f.sin_cos();
                    (c, s)
                })
                .collect(),
        }
    }

    /// Rotates `rows [n, d]` of positions `p0..p0 + n` in place by their angles, or by minus
    /// them when `inverse`.
    pub fn rotate(&self, p0: usize, rows: &mut [f32], d: usize, inverse: bool) {
        let half = d / 2;
        debug_assert_eq!(half, self.inv_freq.len());
        let sign = if inverse { -1.0 } else { 1.0 };
        let mut at: Vec<(f64, f64)> = self
            .inv_freq
            .iter()
            .map(|&f| {
                let (s, c) = (p0 as f64 * f).sin_cos();
                (c, s)
            })
            .collect();
        for row in rows.chunks_exact_mut(d) {
            let (x1, x2) = row.split_at_mut(half);
            for i in 0..half {
                let (c, s) = (at[i].0, sign * at[i].1);
                let (a, b) = (x1[i] as f64, x2[i] as f64);
                x1[i] = (a * c - b * s) as f32;
                x2[i] = (b * c + a * s) as f32;
                let (sc, ss) = self.step[i];
                at[i] = (at[i].0 * sc - at[i].1 * ss, at[i].1 * sc + at[i].0 * ss);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rotation with the angles formed directly, `p·θᵢ` per position (the model's
    /// definition, in f64), and its inverse returns the rows.
    #[test]
    fn rotation_matches_direct_angles_and_inverts() {
        let d = 64;
        let inv_freq: Vec<f64> = (0..d / 2)
            .map(|i| 10000f64.powf(-((2 * i) as f64) / d as f64))
            .collect();
        let rot = Rotation::new(&inv_freq);
        let n = 256;
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let p0 = 1900;
        let mut y = x.clone();
        rot.rotate(p0, &mut y, d, false);
        for (r, (xr, yr)) in x.chunks(d).zip(y.chunks(d)).enumerate() {
            for i in 0..d / 2 {
                let a = (p0 + r) as f64 * inv_freq[i];
                let (s, c) = a.sin_cos();
                let w1 = xr[i] as f64 * c - xr[i + d / 2] as f64 * s;
                let w2 = xr[i + d / 2] as f64 * c + xr[i] as f64 * s;
                assert!((yr[i] as f64 - w1).abs() < 1e-5, "{r} {i}");
                assert!((yr[i + d / 2] as f64 - w2).abs() < 1e-5, "{r} {i}");
            }
        }
        rot.rotate(p0, &mut y, d, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5 * (1.0 + a.abs()), "{a} {b}");
        }
    }
}
