// crunch's CUDA kernels: the element-wise and row-wise operations of the forward pass.
// Matrix products go to cuBLAS; everything here is memory-bound and kept simple.
// Compiled at run time by NVRTC (no CUDA toolkit at build time), so no headers are included:
// reduce.cu (block_sum, rms_inv) is prepended to this source.

#define INF __int_as_float(0x7f800000)

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
    pdl_entry();
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

// y[r, c] += bias[c]
extern "C" __global__ void add_bias(float* y, const float* bias, long long n, int cols) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] += bias[i % cols];
}

extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, long long n) {
    pdl_entry();
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// GeGLU: PyTorch's tanh approximation of GELU on the gate, times up.
extern "C" __global__ void gelu_mul(const float* gate, const float* up, float* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        float t = tanhf(0.7978845608f * (g + 0.044715f * g * g * g));
        out[i] = 0.5f * g * (1.0f + t) * up[i];
    }
}

// out[r, :] = x[r, :] * f[r]; one block per row.
extern "C" __global__ void scale_rows(const float* x, const float* f, float* out, int cols) {
    const float* src = x + (size_t)blockIdx.x * cols;
    float* dst = out + (size_t)blockIdx.x * cols;
    float s = f[blockIdx.x];
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i] * s;
}

// out[r, :] = x[r, start .. start + len]; one block per row.
extern "C" __global__ void columns(const float* x, float* out, int cols, int start, int len) {
    const float* src = x + (size_t)blockIdx.x * cols + start;
    float* dst = out + (size_t)blockIdx.x * len;
    for (int i = threadIdx.x; i < len; i += blockDim.x) dst[i] = src[i];
}

// One block per row: out = x / sqrt(mean(x²) + eps) * w.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int cols,
                                    float eps) {
    pdl_entry();
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    const float inv = rms_inv(xr, cols, eps, red);
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
        // Rounded products, no fused multiply-add (NVRTC contracts `a * c - b * s` by
        // default): the CPU backend's arithmetic (candle's rope_thd), so that identical keys
        // and tables rotate to identical keys on both devices (decision 138).
        o[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        o[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
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

// ---- bfloat16 (stored as unsigned short bit patterns; no cuda_bf16.h needed) ----

// f32 -> bf16, round to nearest even; NaN stays NaN.
__device__ unsigned short to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

extern "C" __global__ void f32_to_bf16(const float* x, unsigned short* y, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = to_bf16(x[i]);
}

// masked_softmax, reading f32 scores and writing the probabilities as bf16 to p.
extern "C" __global__ void masked_softmax_bf16(const float* s, unsigned short* p, int t, int tk,
                                               float scale, int offset, int window) {
    __shared__ float red[32];
    int i = blockIdx.x % t, pos = offset + i;
    const float* r = s + (size_t)blockIdx.x * tk;
    unsigned short* o = p + (size_t)blockIdx.x * tk;
    int hi = min(pos, tk - 1);
    int lo = window > 0 ? max(0, pos - window + 1) : 0;
    float m = -INF;
    for (int j = lo + threadIdx.x; j <= hi; j += blockDim.x) m = fmaxf(m, r[j] * scale);
    m = block_max(m, red);
    float z = 0.0f;
    for (int j = lo + threadIdx.x; j <= hi; j += blockDim.x) z += expf(r[j] * scale - m);
    z = block_sum(z, red);
    float inv = 1.0f / z;
    for (int j = threadIdx.x; j < tk; j += blockDim.x)
        o[j] = (j >= lo && j <= hi) ? to_bf16(expf(r[j] * scale - m) * inv) : (unsigned short)0;
}

// ---- scoring logits rows on the device (evaluation) ----

// Maximum of a row and its first index (ties keep the lowest index, like the host code).
__device__ void block_argmax(float* v, int* idx, float* redv, int* redi) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffff, *v, o);
        int oi = __shfl_xor_sync(0xffffffff, *idx, o);
        if (ov > *v || (ov == *v && oi < *idx)) { *v = ov; *idx = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { redv[warp] = *v; redi[warp] = *idx; }
    __syncthreads();
    int warps = blockDim.x >> 5;
    if (warp == 0) {
        *v = lane < warps ? redv[lane] : -INF;
        *idx = lane < warps ? redi[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffff, *v, o);
            int oi = __shfl_xor_sync(0xffffffff, *idx, o);
            if (ov > *v || (ov == *v && oi < *idx)) { *v = ov; *idx = oi; }
        }
        if (lane == 0) { redv[0] = *v; redi[0] = *idx; }
    }
    __syncthreads();
    *v = redv[0];
    *idx = redi[0];
    __syncthreads();
}

__device__ void row_max_lse(const float* row, int vocab, float* redv, int* redi, double* redd,
                            double* lse, int* arg) {
    float m = -INF;
    int a = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        if (row[j] > m) { m = row[j]; a = j; }
    block_argmax(&m, &a, redv, redi);
    double z = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) z += exp((double)(row[j] - m));
    z = block_sum(z, redd);
    *lse = (double)m + log(z);
    *arg = a;
}

// One block per row r of logits [rows, vocab] (and base logits, if base_present):
// out[r] = {−log p(target), target is arg-max, KL(base ‖ model), same arg-max}.
extern "C" __global__ void score_rows(const float* logits, const float* base, int base_present,
                                      const unsigned int* targets, double* out, int vocab) {
    __shared__ float redv[32];
    __shared__ int redi[32];
    __shared__ double redd[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    int t = (int)targets[blockIdx.x];
    double lse;
    int arg;
    row_max_lse(row, vocab, redv, redi, redd, &lse, &arg);
    double kl = 0.0, agree = 0.0;
    if (base_present) {
        const float* brow = base + (size_t)blockIdx.x * vocab;
        double blse;
        int barg;
        row_max_lse(brow, vocab, redv, redi, redd, &blse, &barg);
        double s = 0.0;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            double lb = (double)brow[j] - blse;
            s += exp(lb) * (lb - ((double)row[j] - lse));
        }
        kl = fmax(block_sum(s, redd), 0.0);
        agree = barg == arg ? 1.0 : 0.0;
    }
    if (threadIdx.x == 0) {
        double* o = out + (size_t)blockIdx.x * 4;
        o[0] = lse - (double)row[t];
        o[1] = arg == t ? 1.0 : 0.0;
        o[2] = kl;
        o[3] = agree;
    }
}

// ---- quantized codes expanded on the device (the budget search's swap, decision 137) ----
// words: the codes bit-packed at their width, code k = r*cols + c at bits [k*bits, k*bits+bits)
// of the little-endian stream of 32-bit words (codes.rs, QuantCodes::pack_words); scales: f16
// bit patterns and zeros: u8, both [rows][n_groups]; column c is in group c / group. The weight
// is (code - zero) * f32(scale) in f32, the host's arithmetic (a subtraction, then one product:
// nothing to contract into an fma), so the same bits. Host transcription: QuantCodes::value.
__device__ __forceinline__ float codes_value(const unsigned int* words,
                                             const unsigned short* scales,
                                             const unsigned char* zeros, long long k, int cols,
                                             int bits, int group, int n_groups) {
    unsigned long long bit = (unsigned long long)k * (unsigned long long)bits;
    long long w = (long long)(bit >> 5);
    unsigned int sh = (unsigned int)(bit & 31ull);
    unsigned int v = words[w] >> sh;
    if (sh + (unsigned int)bits > 32u) v |= words[w + 1] << (32u - sh);
    unsigned int code = v & ((1u << bits) - 1u);
    long long r = k / cols;
    int c = (int)(k - r * cols);
    long long g = r * n_groups + c / group;
    float s;
    unsigned short h = scales[g];
    asm("cvt.f32.f16 %0, %1;" : "=f"(s) : "h"(h));
    return ((float)code - (float)zeros[g]) * s;
}

extern "C" __global__ void codes_to_f32(const unsigned int* words, const unsigned short* scales,
                                        const unsigned char* zeros, float* out, long long n,
                                        int cols, int bits, int group, int n_groups) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x)
        out[k] = codes_value(words, scales, zeros, k, cols, bits, group, n_groups);
}

// The same weights rounded to bf16 as Backend::upload_weight rounds them in bf16 mode
// (to_bf16 above is the host's bf16_bits).
extern "C" __global__ void codes_to_bf16(const unsigned int* words, const unsigned short* scales,
                                         const unsigned char* zeros, unsigned short* out,
                                         long long n, int cols, int bits, int group,
                                         int n_groups) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x)
        out[k] = to_bf16(codes_value(words, scales, zeros, k, cols, bits, group, n_groups));
}
