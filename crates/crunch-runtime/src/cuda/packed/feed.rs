//! Producers that feed the int8 rows kernels (decision 159, `feed.cu`): `rms_norm` and
//! `silu_mul` whose output is the input of 2–32-row int8 products also write that input's int8
//! planes and (dx, 8·Σq), which the output tensor carries ([`Feed`]); the product then skips its
//! split launch (`mma_split_i8`). The values are those of `rms_norm`/`silu_mul` followed by the
//! split, bit for bit (`gpu_packed check`, "feed"); only a launch goes.
//!
//! The producer cannot see its consumer, so the model says which weights read its output
//! (`Backend::rms_norm_for`, `silu_mul_for`), and the producer writes planes only where
//! [`Cuda::feed_plan`] finds that those products will take them. The product checks the planes'
//! shape and order again and otherwise splits x as before.

use super::mma::{MmaKernels, MAX_ROWS};
use crate::cuda::launch::{launch, Arg};
use crate::cuda::recycle::F32Buf;
use crate::cuda::ROW_THREADS;
use crate::cuda::{Cuda, CudaTensor};
use crate::Result;
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

pub(super) const SOURCE: &str = include_str!("feed.cu");

/// How a product reads x's planes, and so how its producer writes them (`frag` in feed.cu).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Order {
    /// `mma_split_i8`'s order for `mma_i8_g4` (2–4 rows).
    Rows = 0,
    /// The swapped kernels' fragment order (5–32 rows, decision 157).
    Fragments = 1,
}

/// x's int8 planes as a producer wrote them for the product that reads x: `[n][cols/128][2][128]`
/// bytes in [`Order::Rows`] or [`Order::Fragments`] and per group (dx, 8·Σq) in `dq`, as
/// `mma_split_i8` writes them. In recycled buffers (their words are what the kernels read).
pub(crate) struct Feed {
    pub(super) planes: F32Buf,
    pub(super) dq: F32Buf,
    pub(super) n: usize,
    pub(super) cols: usize,
    pub(super) order: Order,
    pub(super) bf16: bool,
}

impl Feed {
    /// The planes' and the pairs' device addresses for a kernel that writes them, and the
    /// guards that keep their stream order until they are dropped, after the launch.
    fn ptrs<'a>(&'a mut self, s: &'a CudaStream) -> (u64, u64, impl Sized + 'a) {
        let (pp, gp) = self.planes.device_ptr_mut(s);
        let (pq, gq) = self.dq.device_ptr_mut(s);
        (pp, pq, (gp, gq))
    }

    /// Whether these are the planes a product of `n` rows of `cols` in `order` reads.
    pub(super) fn fits(&self, n: usize, cols: usize, order: Order, bf16: bool) -> bool {
        (self.n, self.cols, self.order, self.bf16) == (n, cols, order, bf16)
    }
}

impl Cuda {
    /// The tensor-core kernels and the planes' order when `[n, cols]` rows read by `next` (as
    /// [`Backend::linears`](crate::Backend::linears) or `linear` would) go to a kernel that
    /// reads planes: under the `cc` variants, with every weight symmetric int4 g128 of width
    /// `cols` that one launch takes (`groupable`), 2–4 rows to `mma_i8_g4` (rows in order) and
    /// 5–32 to the swapped kernels (fragment order, decision 157).
    fn feed_plan(
        &self,
        n: usize,
        cols: usize,
        next: &[&CudaTensor],
    ) -> Option<(&MmaKernels, Order)> {
        let kernels = self.packed.as_deref()?;
        let Ok(mk) = kernels.mma.as_ref() else {
            return None;
        };
        let ws = super::packed_all(next)?;
        let takes = (2..=MAX_ROWS).contains(&n)
            && cols.is_multiple_of(128)
            && mk.groupable(&ws)
            && ws[0].layout.cols == cols
            && self.int8_rows(&ws);
        // One row: the model fuses the norm and the activation into the product itself
        // (decision 161), and a producer's staging of `cc_u4`'s planes gained nothing there
        // (decision 159's one-row order, removed in s41).
        let order = match n {
            2..=4 => Order::Rows,
            _ => Order::Fragments,
        };
        takes.then_some((mk, order))
    }

    /// `rms_norm` of `x [n, cols]` (the caller checked `weight`'s length) writing its planes
    /// too when the products of `next` take them ([`Cuda::feed_plan`]), else `None`.
    pub(crate) fn rms_norm_feeding(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        eps: f32,
        next: &[&CudaTensor],
    ) -> Result<Option<CudaTensor>> {
        if x.shape.len() != 2 {
            return Ok(None);
        }
        match self.feed_plan(x.shape[0], x.shape[1], next) {
            Some((mk, order)) => self.rms_norm_feed(mk, x, weight, eps, order).map(Some),
            None => Ok(None),
        }
    }

    /// `silu(gate) · up` (the caller checked the shapes) writing its planes too when the
    /// products of `next` take them, else `None`.
    pub(crate) fn silu_mul_feeding(
        &self,
        gate: &CudaTensor,
        up: &CudaTensor,
        next: &[&CudaTensor],
    ) -> Result<Option<CudaTensor>> {
        if gate.shape.len() != 2 {
            return Ok(None);
        }
        match self.feed_plan(gate.shape[0], gate.shape[1], next) {
            Some((mk, order)) => self.silu_mul_feed(mk, gate, up, order),
            None => Ok(None),
        }
    }

    /// Buffers for `n` rows of `cols` in `order`. Also used by the split (`mma_split_i8`).
    pub(super) fn feed_buffers(&self, n: usize, cols: usize, order: Order) -> Result<Feed> {
        // SAFETY (of using them uninitialised): the producers and the split write every plane
        // byte and every (dx, 8·Σq) pair of the n rows.
        let (planes, dq) = (
            self.alloc(n * cols / 2)?,
            F32Buf::new(self.alloc(2 * n * (cols / 128))?),
        );
        Ok(Feed {
            planes: F32Buf::new(planes),
            dq,
            n,
            cols,
            order,
            bf16: self.precision == crate::Precision::Bf16,
        })
    }

    /// `rms_norm` of `x [n, cols]` (the caller checked `weight`'s length) writing its planes
    /// too: one block of `ROW_THREADS` per row, as `rms_norm` (its sum's order).
    fn rms_norm_feed(
        &self,
        mk: &MmaKernels,
        x: &CudaTensor,
        weight: &CudaTensor,
        eps: f32,
        order: Order,
    ) -> Result<CudaTensor> {
        let (n, cols) = (x.shape[0], x.shape[1]);
        let mut out = self.alloc(x.len())?;
        let mut feed = self.feed_buffers(n, cols, order)?;
        let (xv, wv) = (x.view("rms_norm")?, weight.view("rms_norm")?);
        let s = &self.stream;
        let ((px, gx), (pw, gw), (po, go)) =
            (xv.device_ptr(s), wv.device_ptr(s), out.device_ptr_mut(s));
        let bf16 = feed.bf16 as i32;
        let (pp, pq, gp) = feed.ptrs(s);
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(pw),
            Arg::Ptr(po),
            Arg::I32(cols as i32),
            Arg::F32(eps),
            Arg::Ptr(pp),
            Arg::Ptr(pq),
            Arg::I32(bf16),
            Arg::I32(order as i32),
        ];
        let dims = (n as u32, ROW_THREADS, 0);
        let pdl = self.pdl_launches();
        let what = "rms_norm (with int8 planes)";
        // SAFETY: feed_rms_norm's parameters are x, w, out, cols, eps, planes, dq, bf16, frag;
        // x and out hold n·cols floats, w cols, the planes and dq what `feed_buffers` sized for
        // `order`; the kernel waits for the previous one before reading (pdl_entry).
        unsafe { launch(self, &mk.feed[0], dims, &args, pdl, what) }?;
        drop((gx, gw, go, gp));
        Ok(CudaTensor::owned(out, &x.shape).fed(feed))
    }

    /// `silu(gate) · up` of `[n, cols]` writing its planes too, or `None` when a view is not
    /// 16-byte aligned (the kernel reads float4).
    fn silu_mul_feed(
        &self,
        mk: &MmaKernels,
        gate: &CudaTensor,
        up: &CudaTensor,
        order: Order,
    ) -> Result<Option<CudaTensor>> {
        if !(gate.offset.is_multiple_of(4) && up.offset.is_multiple_of(4)) {
            return Ok(None);
        }
        let (n, cols) = (gate.shape[0], gate.shape[1]);
        let mut out = self.alloc(gate.len())?;
        let mut feed = self.feed_buffers(n, cols, order)?;
        let (gv, uv) = (gate.view("silu_mul")?, up.view("silu_mul")?);
        let s = &self.stream;
        let ((pg, gg), (pu, gu), (po, go)) =
            (gv.device_ptr(s), uv.device_ptr(s), out.device_ptr_mut(s));
        let bf16 = feed.bf16 as i32;
        let (pp, pq, gp) = feed.ptrs(s);
        let args = [
            Arg::Ptr(pg),
            Arg::Ptr(pu),
            Arg::Ptr(po),
            Arg::I32(n as i32),
            Arg::I32(cols as i32),
            Arg::Ptr(pp),
            Arg::Ptr(pq),
            Arg::I32(bf16),
            Arg::I32(order as i32),
        ];
        let dims = ((n * cols / 4).div_ceil(256) as u32, 256, 0);
        let pdl = self.pdl_launches();
        let what = "silu_mul (with int8 planes)";
        // SAFETY: feed_silu_mul's parameters are gate, up, out, n, k, planes, dq, bf16, frag;
        // gate, up and out hold n·cols floats (16-byte aligned, checked above), the planes and dq
        // what `feed_buffers` sized; the kernel waits for the previous one before reading.
        unsafe { launch(self, &mk.feed[1], dims, &args, pdl, what) }?;
        drop((gg, gu, go, gp));
        Ok(Some(CudaTensor::owned(out, &gate.shape).fed(feed)))
    }
}

impl CudaTensor {
    /// This tensor with the planes `feed` of its values.
    fn fed(mut self, feed: Feed) -> Self {
        self.feed = Some(Arc::new(feed));
        self
    }
}
