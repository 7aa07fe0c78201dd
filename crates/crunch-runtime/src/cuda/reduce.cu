// Block reductions shared by crunch's NVRTC modules: kernels.cu's row kernels and the packed
// products' producers (packed/feed.cu), which must normalise bit for bit as kernels.cu's
// rms_norm does; and the entry of a kernel launched with PDL. Prepended to both modules'
// sources (no headers under NVRTC).

// First in a short kernel that may be launched with programmatic dependent launch (launch.rs,
// decision 160): let the kernel after it start (its blocks wait in their own
// griddepcontrol.wait), then wait for the kernel before it to finish and its writes to be
// visible, before reading anything. Launched without the attribute, both do nothing.
__device__ __forceinline__ void pdl_entry() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
template <typename T>
__device__ T block_sum(T v, T* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    if (warp == 0) {
        v = lane < warps ? red[lane] : (T)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    T r = red[0];
    __syncthreads();  // red is reused by the next reduction
    return r;
}

// 1 / sqrt(mean(x²) + eps) of the row xr, in every thread of the block, summed by its first
// `threads` threads (a multiple of 32, at most blockDim.x) in rms_norm's order: a block of more
// threads gets the same bits, because the others add exact zeros where block_sum's tree has
// zeros anyway (lanes past the summing warps). For kernels that must normalise bit for bit as
// rms_norm does: packed/feed.cu, and cc.cu's staging with the norm fused (decision 161).
__device__ float rms_inv_by(const float* xr, int cols, float eps, float* red, int threads) {
    float s = 0.0f;
    if ((int)threadIdx.x < threads)
        for (int i = threadIdx.x; i < cols; i += threads) s += xr[i] * xr[i];
    s = block_sum(s, red);
    return 1.0f / sqrtf(s / (float)cols + eps);
}

// rms_inv_by over the whole block: rms_norm's own sum.
__device__ float rms_inv(const float* xr, int cols, float eps, float* red) {
    return rms_inv_by(xr, cols, eps, red, blockDim.x);
}

