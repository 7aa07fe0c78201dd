//! The CUDA backend's paged key/value pool (decision 141, `kvpaged.cu`): one block's store is
//! two f32 device buffers `[slots, kv_heads, head_dim]` (a sequence's own store's layout),
//! written for every sequence of a step in one launch (`kv_paged_write`) and attended for every
//! query row of every sequence in one launch (`kv_paged_attend`), each row finding its
//! sequence's block table and position in the small index arrays [`PagedArgs`] builds.
//!
//! [`PagedArgs`] and [`transcribe_attend`] (the kernel's loops, block by block, on the host)
//! are checked against the host backend's paged attention in the unit tests below, so that a
//! GPU run (`gpu_packed check`'s `kv_paged_attention` lines) only confirms the kernel.
//!
//! Limits: heads of at most 128 channels (`MAXC` lanes' worth), `kv_heads` dividing `heads`;
//! page ids and slots as `i32`.

use super::{err, Cuda, CudaKv, CudaTensor};
use crate::{Error, PagedSeq, Result};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

pub(super) const SOURCE: &str = include_str!("kvpaged.cu");
/// Warps per (row, head) and channels per lane (`PW`, `MAXC` in `kvpaged.cu`).
const PW: usize = 4;
const MAXC: usize = 4;

pub(super) struct Kernels {
    write: CudaFunction,
    attend: CudaFunction,
}

impl Kernels {
    pub(super) fn new(stream: &std::sync::Arc<CudaStream>) -> Result<Self> {
        let m = super::compile(stream, SOURCE)?;
        let f = |n: &str| m.load_function(n).map_err(err("loading a kernel"));
        Ok(Kernels {
            write: f("kv_paged_write")?,
            attend: f("kv_paged_attend")?,
        })
    }
}

/// One block's store of the pool.
pub struct PoolKv {
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    slots: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PoolKv {
    pub(super) fn new(c: &Cuda, slots: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        if head_dim == 0 || head_dim > 32 * MAXC || kv_heads == 0 {
            return Err(Error(format!(
                "paged key/value pool: heads of {head_dim} channels (1–{} supported)",
                32 * MAXC
            )));
        }
        let n = slots
            .checked_mul(kv_heads * head_dim)
            .filter(|&n| slots <= i32::MAX as usize && n > 0)
            .ok_or_else(|| Error(format!("paged key/value pool of {slots} slots")))?;
        Ok(PoolKv {
            k: c.alloc(n)?,
            v: c.alloc(n)?,
            slots,
            kv_heads,
            head_dim,
        })
    }

    pub fn bytes(&self) -> usize {
        4 * (self.k.len() + self.v.len())
    }

    /// See `Backend::kv_pool_write`.
    pub(super) fn write(
        &mut self,
        c: &Cuda,
        slots: &[u32],
        k: &CudaTensor,
        v: &CudaTensor,
    ) -> Result<()> {
        let width = self.kv_heads * self.head_dim;
        if k.shape != v.shape || k.len() != slots.len() * width {
            return Err(Error(format!(
                "kv_pool_write: keys {:?} / values {:?} and {} slots for rows of {width}",
                k.shape,
                v.shape,
                slots.len()
            )));
        }
        if let Some(&bad) = slots.iter().find(|&&s| s as usize >= self.slots) {
            return Err(Error(format!(
                "kv_pool_write: slot {bad} outside a pool of {} slots",
                self.slots
            )));
        }
        if slots.is_empty() {
            return Ok(());
        }
        let s: Vec<i32> = slots.iter().map(|&s| s as i32).collect();
        let sd = c.stream.clone_htod(&s).map_err(err("kv_pool_write"))?;
        let (kv, vv) = (k.view("kv_pool_write")?, v.view("kv_pool_write")?);
        let (rows, w) = (slots.len() as i32, width as i32);
        let mut l = c.stream.launch_builder(&c.kvp.write);
        l.arg(&mut self.k)
            .arg(&mut self.v)
            .arg(&kv)
            .arg(&vv)
            .arg(&sd)
            .arg(&rows)
            .arg(&w);
        unsafe { l.launch(LaunchConfig::for_num_elems((slots.len() * width) as u32)) }
            .map_err(err("kv_paged_write"))?;
        Ok(())
    }

    /// See `Backend::kv_pool_attention`.
    pub(super) fn attend(
        &self,
        c: &Cuda,
        q: &CudaTensor,
        seqs: &[PagedSeq],
        page_size: usize,
        window: Option<usize>,
        scale: f32,
    ) -> Result<CudaTensor> {
        let (rows, heads, d) = super::dims3(q, "kv_pool_attention q")?;
        if d != self.head_dim || heads % self.kv_heads != 0 {
            return Err(Error(format!(
                "kv_pool_attention: q {:?} against a pool of {} heads of {}",
                q.shape, self.kv_heads, self.head_dim
            )));
        }
        let a = PagedArgs::new(seqs, page_size, self.slots)?;
        if a.row_seq.len() != rows {
            return Err(Error(format!(
                "kv_pool_attention: q has {rows} rows, the sequences {}",
                a.row_seq.len()
            )));
        }
        let mut out = c.alloc(rows * heads * d)?;
        if rows == 0 {
            return Ok(CudaTensor::owned(out, &[0, heads * d]));
        }
        let up = |x: &[i32]| c.stream.clone_htod(x).map_err(err("kv_pool_attention"));
        let (rs, rp, to, tb) = (
            up(&a.row_seq)?,
            up(&a.row_pos)?,
            up(&a.table_off)?,
            up(&a.tables)?,
        );
        let qv = q.view("kv_pool_attention")?;
        let (h, g, di, ps) = (
            heads as i32,
            self.kv_heads as i32,
            d as i32,
            page_size as i32,
        );
        let win = window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
        let mut l = c.stream.launch_builder(&c.kvp.attend);
        l.arg(&qv)
            .arg(&self.k)
            .arg(&self.v)
            .arg(&rs)
            .arg(&rp)
            .arg(&to)
            .arg(&tb)
            .arg(&mut out)
            .arg(&h)
            .arg(&g)
            .arg(&di)
            .arg(&ps)
            .arg(&win)
            .arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, heads as u32, 1),
            block_dim: ((32 * PW) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("kv_paged_attend"))?;
        Ok(CudaTensor::owned(out, &[rows, heads * d]))
    }
}

/// See `Backend::kv_pool_alloc`.
pub(super) fn alloc(c: &Cuda, slots: usize, kvh: usize, d: usize) -> Result<Option<CudaKv>> {
    let p = PoolKv::new(c, slots, kvh, d)?;
    Ok(Some(CudaKv::Pool(Box::new(p))))
}

/// See `Backend::kv_pool_write`.
pub(super) fn write(
    c: &Cuda,
    pool: &mut CudaKv,
    slots: &[u32],
    k: &CudaTensor,
    v: &CudaTensor,
) -> Result<()> {
    match pool {
        CudaKv::Pool(p) => p.write(c, slots, k, v),
        _ => Err(Error("kv_pool_write: not a paged pool's store".into())),
    }
}

/// See `Backend::kv_pool_attention`; `(page_size, window, scale)`.
pub(super) fn attend(
    c: &Cuda,
    q: &CudaTensor,
    pool: &CudaKv,
    seqs: &[PagedSeq],
    (page_size, window, scale): (usize, Option<usize>, f32),
) -> Result<CudaTensor> {
    match pool {
        CudaKv::Pool(p) => p.attend(c, q, seqs, page_size, window, scale),
        _ => Err(Error("kv_pool_attention: not a paged pool's store".into())),
    }
}

/// The index arrays `kv_paged_attend` reads: per query row its sequence and absolute
/// position, per sequence where its table starts in `tables` (every table, concatenated).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PagedArgs {
    pub row_seq: Vec<i32>,
    pub row_pos: Vec<i32>,
    pub table_off: Vec<i32>,
    pub tables: Vec<i32>,
}

impl PagedArgs {
    /// Checks that every sequence's pages cover its positions and lie in a pool of `slots`.
    pub(crate) fn new(seqs: &[PagedSeq], page_size: usize, slots: usize) -> Result<Self> {
        let mut a = PagedArgs {
            row_seq: Vec::new(),
            row_pos: Vec::new(),
            table_off: Vec::new(),
            tables: Vec::new(),
        };
        if page_size == 0 || page_size > i32::MAX as usize {
            return Err(Error(format!("kv_pool_attention: pages of {page_size}")));
        }
        for (i, s) in seqs.iter().enumerate() {
            if s.rows > s.len || s.pages.len() * page_size < s.len || s.len > i32::MAX as usize {
                return Err(Error(format!(
                    "kv_pool_attention: a sequence of {} positions ({} new) has {} pages of \
                     {page_size}",
                    s.len,
                    s.rows,
                    s.pages.len()
                )));
            }
            if let Some(&bad) = s
                .pages
                .iter()
                .find(|&&p| (p as usize + 1) * page_size > slots)
            {
                return Err(Error(format!(
                    "kv_pool_attention: page {bad} outside a pool of {slots} slots"
                )));
            }
            a.table_off.push(a.tables.len() as i32);
            a.tables.extend(s.pages.iter().map(|&p| p as i32));
            for r in 0..s.rows {
                a.row_seq.push(i as i32);
                a.row_pos.push((s.len - s.rows + r) as i32);
            }
        }
        Ok(a)
    }
}

/// `kv_paged_attend` on the host, loop for loop: for each (row, head) block, warp `w`'s lanes
/// and online softmax over positions `lo + w, lo + w + PW, …`, then warp 0's merge. The pool
/// is `[slots, kv_heads, d]` as on the device.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn transcribe_attend(
    q: &[f32],
    kp: &[f32],
    vp: &[f32],
    a: &PagedArgs,
    heads: usize,
    kv_heads: usize,
    d: usize,
    page_size: usize,
    window: usize,
    scale: f32,
) -> Vec<f32> {
    let rows = a.row_seq.len();
    let mut out = vec![0f32; rows * heads * d];
    for row in 0..rows {
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let p = a.row_pos[row] as usize;
            let table = &a.tables[a.table_off[a.row_seq[row] as usize] as usize..];
            let lo = if window > 0 {
                (p + 1).saturating_sub(window)
            } else {
                0
            };
            let qrow = &q[(row * heads + h) * d..];
            let mut sm = [f32::NEG_INFINITY; PW];
            let mut sl = [0f32; PW];
            let mut sacc = vec![[0f32; 32 * MAXC]; PW];
            for w in 0..PW {
                let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
                let mut acc = [0f32; 32 * MAXC];
                let mut j = lo + w;
                while j <= p {
                    let slot = table[j / page_size] as usize * page_size + j % page_size;
                    let at = (slot * kv_heads + g) * d;
                    // The warp's sum: every lane's channels (the shuffle's order differs on
                    // the device; sums agree to rounding).
                    let s: f32 = (0..d).map(|c| qrow[c] * kp[at + c]).sum::<f32>() * scale;
                    let mn = m.max(s);
                    let (x, y) = ((m - mn).exp(), (s - mn).exp());
                    l = l * x + y;
                    for c in 0..d {
                        acc[c] = acc[c] * x + y * vp[at + c];
                    }
                    m = mn;
                    j += PW;
                }
                (sm[w], sl[w], sacc[w]) = (m, l, acc);
            }
            let mx = sm.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = (0..PW)
                .filter(|&w| sl[w] > 0.0)
                .map(|w| sl[w] * (sm[w] - mx).exp())
                .sum();
            for c in 0..d {
                let o: f32 = (0..PW)
                    .filter(|&w| sl[w] > 0.0)
                    .map(|w| sacc[w][c] * (sm[w] - mx).exp())
                    .sum();
                out[(row * heads + h) * d + c] = o / z;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
