//! A tile of weight rows unpacked for the inner products: per row `kp` code bytes, a scale
//! per lane of 4 weights and an offset per 16 weights (zero past the row's real length). Unpacking costs
//! about as much as one product with one activation row, so a tile is unpacked once and
//! multiplied by every activation row of the call.

use crate::aligned::Aligned;
use crate::body::WRow;
use crate::formats::Block;
use crate::Isa;

pub(crate) struct Tile {
    buf: Aligned,
    rows: usize,
    kp: usize,
}

impl Tile {
    pub fn new() -> Self {
        Tile {
            buf: Aligned::default(),
            rows: 0,
            kp: 0,
        }
    }

    /// Bytes per row: codes, lane scales (kp / 4 floats) and offsets (kp / 16 floats).
    fn stride(kp: usize) -> usize {
        2 * kp + kp / 4
    }

    /// Unpacks `rows` consecutive stored rows of `row_bytes` each from `packed` (row length
    /// `k`, padded to `kp`). `signed`: store codes - 128 and fold 128·d into the offsets
    /// (the AVX2 product without VNNI for 8-bit codes).
    pub fn unpack<F: Block>(
        &mut self,
        packed: &[u8],
        rows: usize,
        k: usize,
        kp: usize,
        isa: Isa,
        signed: bool,
    ) {
        let len = rows * Self::stride(kp);
        if self.buf.bytes().len() < len {
            self.buf.reset(len);
        }
        self.rows = rows;
        self.kp = kp;
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` was detected on this CPU.
            Isa::Avx2 | Isa::Avx512 => unsafe { self.unpack_avx2::<F>(packed, k, signed) },
            _ => self.unpack_rows::<F, false>(packed, k, signed),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_avx2<F: Block>(&mut self, packed: &[u8], k: usize, signed: bool) {
        self.unpack_rows::<F, true>(packed, k, signed)
    }

    #[inline(always)]
    fn unpack_rows<F: Block, const AVX2: bool>(&mut self, packed: &[u8], k: usize, signed: bool) {
        let (rows, kp) = (self.rows, self.kp);
        let stride = Self::stride(kp);
        let row_bytes = k / F::ELEMS * F::BYTES;
        let blocks = k / F::ELEMS;
        let per16 = F::ELEMS / 16;
        let buf = self.buf.bytes_mut();
        let mut d16 = [0f32; 16];
        let mut m16 = [0f32; 16];
        for r in 0..rows {
            let src = &packed[r * row_bytes..(r + 1) * row_bytes];
            let row = &mut buf[r * stride..(r + 1) * stride];
            let (u, rest) = row.split_at_mut(kp);
            let (dl, ml) = rest.split_at_mut(kp);
            // SAFETY: the tile's rows start at multiples of 16 bytes (the stride is, `kp`
            // being a multiple of 64), so the lane scales and offsets are 4-byte aligned.
            let dl: &mut [f32] =
                unsafe { std::slice::from_raw_parts_mut(dl.as_mut_ptr().cast(), kp / 4) };
            let ml: &mut [f32] =
                unsafe { std::slice::from_raw_parts_mut(ml.as_mut_ptr().cast(), kp / 16) };
            for blk in 0..blocks {
                let b = &src[blk * F::BYTES..(blk + 1) * F::BYTES];
                let uo = &mut u[blk * F::ELEMS..(blk + 1) * F::ELEMS];
                #[cfg(target_arch = "x86_64")]
                if AVX2 {
                    // SAFETY: only instantiated from `unpack_avx2`.
                    unsafe { F::unpack_avx2(b, uo, &mut d16[..per16], &mut m16[..per16]) }
                } else {
                    F::unpack(b, uo, &mut d16[..per16], &mut m16[..per16])
                }
                #[cfg(not(target_arch = "x86_64"))]
                F::unpack(b, uo, &mut d16[..per16], &mut m16[..per16]);
                let lanes = 4 * per16;
                let (dl, ml) = (
                    &mut dl[blk * lanes..(blk + 1) * lanes],
                    &mut ml[blk * per16..(blk + 1) * per16],
                );
                for h in 0..per16 {
                    ml[h] = if signed {
                        m16[h] + 128.0 * d16[h]
                    } else {
                        m16[h]
                    };
                    dl[4 * h..4 * h + 4].copy_from_slice(&[d16[h]; 4]);
                }
            }
            if signed {
                for v in &mut u[..k] {
                    *v ^= 0x80;
                }
            }
            // Padding: zero codes, scales and offsets contribute nothing.
            u[k..].fill(0);
            dl[k / 4..].fill(0.0);
            ml[k / 16..].fill(0.0);
        }
    }

    pub fn row(&self, r: usize) -> WRow {
        debug_assert!(r < self.rows);
        let base = self.buf.bytes()[r * Self::stride(self.kp)..].as_ptr();
        // SAFETY: inside the row (see `stride`).
        unsafe {
            WRow {
                u: base,
                dl: base.add(self.kp).cast(),
                m16: base.add(2 * self.kp).cast(),
            }
        }
    }
}
