// ---- Producers that feed the int8 rows kernels (decision 159) --------------------------------
// The kernel that computes a product's input x also writes x's int8 planes and (dx, 8·Σq), so
// the product at 2–32 rows needs no split launch (mma_split_i8). s39's lab 11 measured the split
// at 10–12% of the swapped kernels' time under PDL, and lab 12 a block with these producers
// 6.2 / 4.4 / 3.4% faster at 8 / 16 / 32 rows, bit-identical.
//   feed_rms_norm: kernels.cu's rms_norm (its rms_inv: the same sum in the same order with the
//     same block of ROW_THREADS, and the same expression per element), then per group of 128 a
//     warp (lane l: elements 4l..4l+3) stores the output and, through split_group4, its planes
//     as mma_split_i8 would from that output. One block per row; cols % 128 == 0.
//   feed_silu_mul: kernels.cu's silu_mul, one thread per 4 elements, the same.
// `frag` is the planes' order as mma_split_i8 writes them: 0 rows in order, 1 the swapped
// kernels' fragment order. (At one row the product does the norm and the activation itself,
// decision 161.)
// Both let the product after them start (griddepcontrol.launch_dependents) so that it requests
// its first codes while they run, as the split did; the product's griddepcontrol.wait still
// holds its reads of x's planes until they have finished. Under `cc+pdl` they are launched with
// PDL themselves (decision 160) and wait for the kernel before them first (pdl_entry). Needs
// reduce.cu and mma.cu before it.

extern "C" __global__ void feed_rms_norm(const float* x, const float* w, float* out, int cols,
                                         float eps, u32* planes, int2* dq, int bf16, int frag) {
    pdl_entry();  // reduce.cu
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    const float inv = rms_inv(xr, cols, eps, red);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, G = cols >> 7;
    for (int grp = warp; grp < G; grp += blockDim.x >> 5) {
        const int i = grp * 128 + 4 * lane;
        float4 v;
        v.x = xr[i] * inv * w[i];
        v.y = xr[i + 1] * inv * w[i + 1];
        v.z = xr[i + 2] * inv * w[i + 2];
        v.w = xr[i + 3] * inv * w[i + 3];
        *(float4*)(o + i) = v;
        split_group4(v, bf16, planes, dq, blockIdx.x, grp, G, lane, frag);
    }
}

extern "C" __global__ void feed_silu_mul(const float4* gate, const float4* up, float4* out, int n,
                                         int k, u32* planes, int2* dq, int bf16, int frag) {
    pdl_entry();  // reduce.cu
    const int K4 = k >> 2, G = k >> 7;
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)n * K4) return;  // whole warps (K4 is a multiple of 32)
    const float4 g = gate[idx], u = up[idx];
    float4 v;
    v.x = g.x / (1.0f + expf(-g.x)) * u.x;
    v.y = g.y / (1.0f + expf(-g.y)) * u.y;
    v.z = g.z / (1.0f + expf(-g.z)) * u.z;
    v.w = g.w / (1.0f + expf(-g.w)) * u.w;
    out[idx] = v;
    const int j = (int)(idx / K4), i = (int)(idx % K4);
    split_group4(v, bf16, planes, dq, j, i >> 5, G, i & 31, frag);
}
