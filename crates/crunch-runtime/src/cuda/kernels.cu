// crunch's CUDA kernels: the element-wise and row-wise operations of the forward pass.
// Matrix products go to cuBLAS; everything here is memory-bound and kept simple.
// Compiled at run time by NVRTC (no CUDA toolkit at build time), so no headers are included.

#define INF __int_as_float(0x7f800000)

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    if (warp == 0) {
        v = lane < warps ? red[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    float r = red[0];
    __syncthreads();  // red is reused by the next reduction
    return r;
}

__device__ float block_max(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    if (warp == 0) {
        v = lane < warps ? red[lane] : -INF;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    float r = red[0];
    __syncthreads();
    return r;
}

// out[r, :] = table[ids[r], :]; one block per row.
extern "C" __global__ void embedding(const float* table, const unsigned int* ids, float* out,
                                     int dim) {
    const float* src = table + (size_t)ids[blockIdx.x] * dim;
    float* dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

extern "C" __global__ void add(const float* a, const float* b, float* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

// y[r, c] += bias[c]
extern "C" __global__ void add_bias(float* y, const float* bias, long long n, int cols) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] += bias[i % cols];
}

extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// One block per row: out = x / sqrt(mean(x²) + eps) * w.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int cols,
                                    float eps) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += xr[i] * xr[i];
    s = block_sum(s, red);
    float inv = 1.0f / sqrtf(s / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// Rotary embedding, "half" layout, on x [tokens, heads, d]; cos/sin [tokens, d/2].
// One block per (token, head) row.
extern "C" __global__ void rope(const float* x, const float* cs, const float* sn, float* out,
                                int heads, int d) {
    int row = blockIdx.x, t = row / heads, half = d / 2;
    const float* xr = x + (size_t)row * d;
    float* o = out + (size_t)row * d;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float c = cs[(size_t)t * half + i], s = sn[(size_t)t * half + i];
        float a = xr[i], b = xr[i + half];
        o[i] = a * c - b * s;
        o[i + half] = b * c + a * s;
    }
}

// In place on scores [heads, t, tk]: scale, causal (and sliding-window) mask, softmax over keys.
// Query row i sits at absolute position offset + i; keys are positions 0..tk. window 0 = none.
extern "C" __global__ void masked_softmax(float* s, int t, int tk, float scale, int offset,
                                          int window) {
    __shared__ float red[32];
    int i = blockIdx.x % t, p = offset + i;
    float* r = s + (size_t)blockIdx.x * tk;
    int hi = min(p, tk - 1);
    int lo = window > 0 ? max(0, p - window + 1) : 0;
    float m = -INF;
    for (int j = lo + threadIdx.x; j <= hi; j += blockDim.x) m = fmaxf(m, r[j] * scale);
    m = block_max(m, red);
    float z = 0.0f;
    for (int j = lo + threadIdx.x; j <= hi; j += blockDim.x) {
        float e = expf(r[j] * scale - m);
        r[j] = e;
        z += e;
    }
    z = block_sum(z, red);  // synchronises: every exponential is written before it is read
    float inv = 1.0f / z;
    for (int j = threadIdx.x; j < tk; j += blockDim.x) r[j] = (j >= lo && j <= hi) ? r[j] * inv : 0.0f;
}
