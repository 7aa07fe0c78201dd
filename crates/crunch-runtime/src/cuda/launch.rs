//! Compiling kernels for the device (NVRTC) and launching them through `cuLaunchKernelEx`, with
//! the programmatic-serialization attribute (PDL) when asked: cudarc's launch builder has no
//! launch attributes. The packed products use
//! it since decision 151; the short kernels between them (`add`, `rms_norm`, `silu_mul` and
//! the producers of `packed/feed.cu`) since decision 160, so that their launch overlaps the
//! product before them instead of following its last block.
//!
//! A kernel launched with the attribute may start before the previous kernel in the stream has
//! finished: it must execute `griddepcontrol.wait` before it reads what that kernel wrote or
//! writes what it reads. Without the attribute the instruction does nothing.

use super::{err, Cuda};
use crate::Result;
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use std::sync::Arc;

/// One kernel parameter, as the kernel declares it (pointers as device addresses).
#[derive(Clone, Copy)]
pub(super) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// Queues `f` on `cuda`'s stream with `dims` = (blocks, threads per block, dynamic shared
/// memory bytes) and the parameters `args`, with PDL when `pdl`.
///
/// # Safety
/// `args` must be exactly `f`'s parameters, in order and type; every address must be a live
/// buffer of this stream whose guard the caller holds until this returns, and large enough for
/// what the grid reads and writes; with `pdl`, `f` must wait (`griddepcontrol.wait`) before it
/// touches memory the previous kernel uses.
pub(super) unsafe fn launch(
    cuda: &Cuda,
    f: &CudaFunction,
    dims: (u32, u32, u32),
    args: &[Arg],
    pdl: bool,
    what: &'static str,
) -> Result<()> {
    // One 8-byte slot per parameter; a 4-byte parameter is read from the slot's first 4 bytes,
    // which hold its bits on a little-endian host (CUDA's hosts: x86-64, aarch64).
    let mut slots: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::Ptr(p) => p,
            Arg::I32(v) => u64::from(v as u32),
            Arg::I64(v) => v as u64,
            Arg::F32(v) => u64::from(v.to_bits()),
        })
        .collect();
    let mut params: Vec<*mut std::ffi::c_void> = slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut std::ffi::c_void)
        .collect();
    // SAFETY: a zeroed attribute value is a valid bit pattern of the C union; the one field set
    // is the one the id below names.
    let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
    value.programmaticStreamSerializationAllowed = 1;
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        value,
    };
    let stream = &cuda.stream;
    let cfg = sys::CUlaunchConfig {
        gridDimX: dims.0,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: dims.1,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: dims.2,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: u32::from(pdl),
    };
    stream
        .context()
        .bind_to_thread()
        .map_err(err("binding the context"))?;
    // SAFETY: the caller's contract (above); `params` holds one pointer per parameter value.
    unsafe {
        sys::cuLaunchKernelEx(
            &cfg,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
    .map_err(err(what))
}

/// NVRTC's options for `ctx`'s compute capability (`__CUDA_ARCH__` set to it; NVRTC's default
/// target is older).
pub(super) fn device_options(ctx: &CudaContext) -> Result<cudarc::nvrtc::CompileOptions> {
    let (major, minor) = ctx
        .compute_capability()
        .map_err(err("compute capability"))?;
    Ok(cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        ..Default::default()
    })
}

/// NVRTC-compiles `source` for this device's compute capability and loads it.
pub(super) fn compile_for_device(stream: &CudaStream, source: &str) -> Result<Arc<CudaModule>> {
    let ctx = stream.context();
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, device_options(ctx)?)
        .map_err(err("NVRTC compile"))?;
    ctx.load_module(ptx).map_err(err("loading kernels"))
}
