//! [`PackedMatrix`]: a weight matrix kept in its stored encoding, and its products with
//! activation rows.
//!
//! Block encodings run `act` (quantize the activations once) → for each tile of weight rows
//! on the rayon pool: `tile` (unpack) → `body` (integer products, `R × C` at a time). Float
//! encodings (F32, F16, BF16) go through `float.rs`.

use crate::act::{ActBits, Acts};
use crate::body::{self, WRow, XRow};
use crate::formats::{self, with_block, Block};
use crate::math::SharedOut;
#[cfg(target_arch = "x86_64")]
use crate::panel::{Panels, LANES};
use crate::storage::Bytes;
use crate::tile::Tile;
use crate::Isa;
use crunch_formats::DType;
use rayon::prelude::*;
use std::cell::RefCell;

/// A `rows × cols` weight matrix (`y = x·Wᵀ`, one stored row per output) in a GGUF block
/// encoding or F32/F16/BF16, row-major, rows back to back.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: Bytes,
}

/// What a product needs to know besides the operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub isa: Isa,
    /// Activation precision for block encodings (float encodings multiply in f32).
    pub bits: ActBits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            isa: Isa::detect(),
            bits: ActBits::I16,
        }
    }
}

impl PackedMatrix {
    /// Checks that `data` holds exactly `rows × cols` weights of `dtype` and that the products
    /// support it.
    pub fn new(dtype: DType, rows: usize, cols: usize, data: Bytes) -> Result<Self, String> {
        if !(formats::supported(dtype) || crate::float::supported(dtype)) {
            return Err(format!("no packed kernel for {dtype:?} weights"));
        }
        let (per_block, block_bytes) = dtype.block();
        if !cols.is_multiple_of(per_block) {
            return Err(format!(
                "rows of {cols} weights are not a whole number of {dtype:?} blocks of {per_block}"
            ));
        }
        let want = rows
            .checked_mul(cols / per_block)
            .and_then(|b| b.checked_mul(block_bytes));
        if want != Some(data.len()) {
            return Err(format!(
                "{rows} x {cols} {dtype:?} weights need {want:?} bytes, got {}",
                data.len()
            ));
        }
        Ok(PackedMatrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Stored bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// Whether the bytes are shared with their source (e.g. a memory-mapped file).
    pub fn is_shared(&self) -> bool {
        self.data.is_shared()
    }

    /// Dequantizes rows `start..start + count` into `out` (`count × cols`).
    pub fn dequantize_rows(&self, start: usize, count: usize, out: &mut [f32]) {
        assert!(start + count <= self.rows && out.len() == count * self.cols);
        let rb = self.row_bytes();
        crunch_formats::gguf::dequantize(
            self.dtype,
            &self.data[start * rb..(start + count) * rb],
            out,
        )
        .expect("sizes were checked by PackedMatrix::new");
    }

    /// The whole matrix as f32, `rows × cols`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// The index and value of the first weight that dequantizes to a NaN or an infinity, if
    /// any (checked in slices of rows on the pool).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        const ROWS: usize = 64;
        (0..self.rows.div_ceil(ROWS))
            .into_par_iter()
            .find_map_first(|t| {
                let r0 = t * ROWS;
                let n = ROWS.min(self.rows - r0);
                let mut buf = vec![0f32; n * self.cols];
                self.dequantize_rows(r0, n, &mut buf);
                buf.iter()
                    .position(|v| !v.is_finite())
                    .map(|i| (r0 * self.cols + i, buf[i]))
            })
    }

    /// `y [n, rows] = x [n, cols] · Wᵀ` with the detected instruction set and 15-bit
    /// activations.
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        self.matmul_with(x, n, y, Options::default())
    }

    pub fn matmul_with(&self, x: &[f32], n: usize, y: &mut [f32], opts: Options) {
        assert_eq!(x.len(), n * self.cols, "x is not {n} x {}", self.cols);
        assert_eq!(y.len(), n * self.rows, "y is not {n} x {}", self.rows);
        if crate::float::supported(self.dtype) {
            return crate::float::matmul(self, x, n, y, opts.isa);
        }
        // The quantized activations' buffers are reused from one product to the next on
        // this thread (decoding runs hundreds of products per token).
        let mut acts = ACTS
            .with(|a| a.borrow_mut().take())
            .filter(|a| a.bits == opts.bits)
            .unwrap_or_else(|| Acts::new(opts.bits));
        acts.quantize(x, n, self.cols);
        self.matmul_acts(&acts, y, opts.isa);
        ACTS.with(|a| *a.borrow_mut() = Some(acts));
    }

    /// The product with activations already quantized (several matrices that share an input
    /// quantize it once). Block encodings only.
    pub fn matmul_acts(&self, acts: &Acts, y: &mut [f32], isa: Isa) {
        assert_eq!(acts.k, self.cols, "activations have {} columns", acts.k);
        assert_eq!(y.len(), acts.n * self.rows);
        assert!(formats::supported(self.dtype), "{:?}", self.dtype);
        with_block!(self.dtype, run_blocks, self, acts, y, isa)
    }
}

thread_local! {
    static ACTS: RefCell<Option<Acts>> = const { RefCell::new(None) };
    static TILE: RefCell<Tile> = RefCell::new(Tile::new());
    #[cfg(target_arch = "x86_64")]
    static PANELS: RefCell<Panels> = RefCell::new(Panels::default());
    #[cfg(target_arch = "x86_64")]
    static SCRATCH: RefCell<crate::gemv::Scratch> = RefCell::new(Default::default());
}

/// Activation rows up to which the fused product (`gemv.rs`) is used.
const FUSED_MAX_ROWS: usize = 4;

fn run_blocks<F: Block>(w: &PackedMatrix, acts: &Acts, y: &mut [f32], isa: Isa) {
    let (m, n, k, kp) = (w.rows, acts.n, w.cols, acts.kp);
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if n <= FUSED_MAX_ROWS && isa >= Isa::Avx2 {
        return run_fused::<F>(w, acts, y, isa);
    }
    // Small tiles for a few activation rows (decoding: spread rows over threads), larger
    // ones when many rows reuse each unpacked tile (prefill: 32 rows of 576 weights unpack
    // to 41 KB, which stays in L2 while every activation row passes over it, and SmolLM2's
    // 576 rows make 18 tasks, an even split over 2 or 3 threads).
    let tile_rows = if n <= 4 { 16 } else { 32 };
    let tiles = m.div_ceil(tile_rows);
    let out = SharedOut::new(y);
    let signed = F::WIDE && isa == Isa::Avx2;
    let row_bytes = w.row_bytes();
    let xrows: Vec<XRow> = (0..n)
        .map(|i| XRow {
            a: acts.a(i).as_ptr(),
            b: if acts.bits == ActBits::I16 {
                acts.b(i).as_ptr()
            } else {
                std::ptr::null()
            },
            xc: acts.xc(i).as_ptr(),
            e16: acts.e16(i).as_ptr(),
        })
        .collect();
    let wide_act = acts.bits == ActBits::I16;
    let task = |t: usize| {
        let r0 = t * tile_rows;
        let tr = tile_rows.min(m - r0);
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            tile.unpack::<F>(
                &w.data[r0 * row_bytes..(r0 + tr) * row_bytes],
                tr,
                k,
                kp,
                isa,
                signed,
            );
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 {
                PANELS.with(|panels| {
                    let mut panels = panels.borrow_mut();
                    panels.fill(&tile, tr, kp);
                    for p in 0..panels.count() {
                        let first = r0 + p * LANES;
                        // SAFETY: the CPU has AVX-512 VNNI (`isa`); rows first..first + 16
                        // (those below m) of every output row belong to this task alone.
                        unsafe {
                            panels.products(
                                p,
                                wide_act,
                                &xrows,
                                LANES.min(r0 + tr - first),
                                &mut |c| out.at(c * m + first),
                            )
                        }
                    }
                });
                return;
            }
            let wrows: Vec<WRow> = (0..tr).map(|r| tile.row(r)).collect();
            // SAFETY: rows r0..r0+tr of every output row belong to this task alone.
            let put = |c: usize, r: usize, v: f32| unsafe { *out.at(c * m + r0 + r) = v };
            products(isa, wide_act, signed, &wrows, &xrows, kp, put);
        });
    };
    if tiles > 1 && m * k * n >= 1 << 16 {
        crate::pool::run(tiles, &task);
    } else {
        (0..tiles).for_each(task);
    }
}

/// Decoding: tiles of weight rows on the pool, each through the fused product.
#[cfg(target_arch = "x86_64")]
fn run_fused<F: Block>(w: &PackedMatrix, acts: &Acts, y: &mut [f32], isa: Isa) {
    let (m, n, k) = (w.rows, acts.n, w.cols);
    // About 2 tiles per thread, of at least 32 rows (a few microseconds of work each, well
    // above the cost of claiming one), dealt out as one contiguous range per thread: each
    // thread streams its part of the matrix in address order, prefetching across the ends
    // of its tiles, and a thread that finishes early takes the next tiles of another's
    // range (balance when a thread is slow or descheduled; decision 128). Under load, 2 per
    // thread measured best (1: equal, 4: −3%, 8: −5%).
    let (tile, tiles) = crate::pool::pieces(m, 2, 32);
    let row_bytes = w.row_bytes();
    let x: Vec<crate::gemv::ActRow> = (0..n).map(|i| crate::gemv::ActRow::new(acts, i)).collect();
    let out = SharedOut::new(y);
    let (vnni, i16) = (isa == Isa::Avx512, acts.bits == ActBits::I16);
    let task = |t: usize| {
        let r0 = t * tile;
        let tr = tile.min(m - r0);
        SCRATCH.with(|s| {
            // SAFETY: `isa` was detected on this CPU; `acts` holds `n` rows of `k` values;
            // rows r0..r0+tr of every output row (stride m) belong to this task alone.
            unsafe {
                let job = crate::gemv::RowsJob {
                    packed: &w.data[r0 * row_bytes..(r0 + tr) * row_bytes],
                    rows: tr,
                    k,
                    y: out.at(r0),
                    stride: m,
                    after: (m - r0 - tr) * row_bytes,
                };
                crate::gemv::rows::<F>(vnni, i16, job, &x, &mut s.borrow_mut())
            }
        });
    };
    if tiles > 1 && m * k >= 1 << 16 {
        crate::pool::run_ranges(tiles, &task);
    } else {
        (0..tiles).for_each(task);
    }
}

/// Every product of `w` rows by `x` rows (AVX2 or scalar), passed to `put(x row, w row,
/// value)`, in blocks of 4 weight rows × 2 activation rows, and smaller blocks for the
/// remainders.
fn products(
    isa: Isa,
    wide_act: bool,
    signed: bool,
    w: &[WRow],
    x: &[XRow],
    kp: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    products_rc::<4, 2>(isa, wide_act, signed, w, x, kp, &mut put)
}

fn products_rc<const R: usize, const C: usize>(
    isa: Isa,
    wide_act: bool,
    signed: bool,
    w: &[WRow],
    x: &[XRow],
    kp: usize,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let mut c0 = 0;
    while c0 < x.len() {
        if x.len() - c0 >= C {
            let xs: [XRow; C] = std::array::from_fn(|i| x[c0 + i]);
            rows_times::<R, C>(isa, wide_act, signed, w, &xs, c0, kp, put);
            c0 += C;
        } else {
            rows_times::<R, 1>(isa, wide_act, signed, w, &[x[c0]], c0, kp, put);
            c0 += 1;
        }
    }
}

/// Every row of `w` times the `C` activation rows `xs` (rows `c0..c0 + C` of the output).
#[allow(clippy::too_many_arguments)]
#[inline]
fn rows_times<const R: usize, const C: usize>(
    isa: Isa,
    wide_act: bool,
    signed: bool,
    w: &[WRow],
    xs: &[XRow; C],
    c0: usize,
    kp: usize,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let mut r0 = 0;
    while r0 < w.len() {
        if w.len() - r0 >= R {
            let ws: [WRow; R] = std::array::from_fn(|i| w[r0 + i]);
            let out = block::<R, C>(isa, wide_act, signed, &ws, xs, kp);
            for (r, o) in out.iter().enumerate() {
                for (c, &v) in o.iter().enumerate() {
                    put(c0 + c, r0 + r, v);
                }
            }
            r0 += R;
        } else {
            let out = block::<1, C>(isa, wide_act, signed, &[w[r0]], xs, kp);
            for (c, &v) in out[0].iter().enumerate() {
                put(c0 + c, r0, v);
            }
            r0 += 1;
        }
    }
}

/// One `R × C` block of products on the chosen instruction set.
#[inline]
fn block<const R: usize, const C: usize>(
    isa: Isa,
    wide_act: bool,
    signed: bool,
    w: &[WRow; R],
    x: &[XRow; C],
    kp: usize,
) -> [[f32; C]; R] {
    let mut out = [[0f32; C]; R];
    // SAFETY: the rows come from a tile and from `Acts` of stride `kp`; `isa` was detected on
    // this CPU (or is scalar).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // (AVX-512 takes the panels; this arm only keeps the match whole.)
            Isa::Avx2 | Isa::Avx512 => match (wide_act, signed) {
                (true, true) => body::dot_avx2::<R, C, true, true>(w, x, kp, &mut out),
                (true, false) => body::dot_avx2::<R, C, true, false>(w, x, kp, &mut out),
                (false, true) => body::dot_avx2::<R, C, false, true>(w, x, kp, &mut out),
                (false, false) => body::dot_avx2::<R, C, false, false>(w, x, kp, &mut out),
            },
            _ => {
                for r in 0..R {
                    for c in 0..C {
                        out[r][c] = body::dot_scalar(w[r], x[c], kp, wide_act);
                    }
                }
            }
        }
    }
    out
}
