// crunch's packed-weight products on the GPU (issue 17): weights stay in 4- or 8-bit codes with
// one f16 scale (and, for asymmetric codes, one f16 offset) per group of 32, 64 or 128 weights;
// activations are quantized per product exactly as crunch-kernels' act.rs does on the CPU
// (chunks of 32, 15 bits split into two int8 planes: q = 128·a + b), so every product is
// integer dot products (`dp4a`) plus one scale term per chunk, and the integer sums equal the
// CPU's bit for bit. Compiled by NVRTC at run time (no headers; `dp4a` needs sm_61+).
//
// Layouts (written by packed.rs):
// - 4-bit codes: per row k/2 bytes; each chunk of 32 weights is 16 bytes whose byte j holds
//   weight j in its low nibble and weight j + 16 in its high nibble (GGUF Q4_0's order).
//   Weight = d·u + m, or d·(u − 8) when no offsets are stored.
// - 8-bit codes: per row k signed bytes in order. Weight = d·c (+ m when stored).
// - d, m: f16 bit patterns, [rows][k / group].
// - activations: planes qa, qb (int8, [n][k]), dx and e32 = dx·Σq (f32, [n][k / 32]).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 rounded to the nearest bf16 (ties to even), NaN unchanged: bf16-mode activations.
__device__ __forceinline__ float round_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f;
    return __uint_as_float((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}

// 16 bytes of weight codes, read once: through the read-only path without a place in L1, which
// stays for the activations every block of the product reads.
__device__ __forceinline__ uint4 load_codes(const uint4* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// act.rs's quantize_row_generic with Q = 16256, one chunk's scale and one activation's code;
// quantize_acts and cc.cu's cc_stage both use these, so the two thread layouts share the numerics.
#define ACT_QMAX 16256.0f

// The chunk's step d = amax / Q and *inv = Q / amax; both 0 for a zero or non-finite amax (the
// chunk then codes to zeros, as act.rs).
__device__ __forceinline__ float act_step(float amax, float* inv) {
    if (amax != 0.0f && amax <= 3.402823466e38f) {
        *inv = ACT_QMAX / amax;
        return amax / ACT_QMAX;
    }
    *inv = 0.0f;
    return 0.0f;
}

// q = round_ties_even(v · inv) clamped to ±Q; NaN (from a non-finite v) → 0.
__device__ __forceinline__ int act_code(float v, float inv) {
    const float t = fminf(fmaxf(rintf(__fmul_rn(v, inv)), -ACT_QMAX), ACT_QMAX);
    return (t == t) ? (int)t : 0;
}

// For the quantizers that read x as float4 (cc.cu's cc_stage, mma.cu's mma_split_i8): f as
// they code it (rounded to bf16 first in bf16 mode), and its largest |·| in *amax.
__device__ __forceinline__ float4 act_read4(float4 f, int bf16, float* amax) {
    if (bf16) {
        f.x = round_bf16(f.x);
        f.y = round_bf16(f.y);
        f.z = round_bf16(f.z);
        f.w = round_bf16(f.w);
    }
    *amax = fmaxf(fmaxf(fabsf(f.x), fabsf(f.y)), fmaxf(fabsf(f.z), fabsf(f.w)));
    return f;
}

// f's four codes (act_code) as byte j of the planes *pa (a = q >> 7) and *pb (b = q & 127),
// q = 128·a + b; returns their Σq.
__device__ __forceinline__ int act_planes4(float4 f, float inv, u32* pa, u32* pb) {
    const float e[4] = {f.x, f.y, f.z, f.w};
    u32 a = 0, b = 0;
    int s = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int q = act_code(e[j], inv);
        s += q;
        a |= (u32)((q >> 7) & 0xff) << (8 * j);
        b |= (u32)(q & 127) << (8 * j);
    }
    *pa = a;
    *pb = b;
    return s;
}

// One warp per chunk of 32 activations (blockDim.x a multiple of 32). amax ignores NaN (as
// f32::max does); q = 128·a + b is stored as its planes a = q >> 7 and b = q & 127.
extern "C" __global__ void quantize_acts(const float* __restrict__ x, signed char* qa,
                                         signed char* qb, float* dx, float* e32,
                                         long long chunks, int bf16) {
    long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (c >= chunks) return;  // the whole warp shares c
    float v = x[c * 32 + lane];
    if (bf16) v = round_bf16(v);
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float d = act_step(amax, &inv);
    const int q = act_code(v, inv);
    qa[c * 32 + lane] = (signed char)(q >> 7);
    qb[c * 32 + lane] = (signed char)(q & 127);
    int s = q;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
        dx[c] = d;
        e32[c] = __fmul_rn(d, (float)s);
    }
}

// Σ u·A over one chunk of 4-bit codes (4 words): low nibbles of word t are weights 4t..4t+3,
// high nibbles weights 16+4t..16+4t+3.
__device__ __forceinline__ int dot_u4(const u32* w, const int* a) {
    int s = 0;
#pragma unroll
    for (int t = 0; t < 4; t++) {
        s = __dp4a((int)(w[t] & 0x0f0f0f0fu), a[t], s);
        s = __dp4a((int)((w[t] >> 4) & 0x0f0f0f0fu), a[4 + t], s);
    }
    return s;
}

// Σ c·A over one chunk of signed 8-bit codes (8 words).
__device__ __forceinline__ int dot_s8(const u32* w, const int* a) {
    int s = 0;
#pragma unroll
    for (int t = 0; t < 8; t++) s = __dp4a((int)w[t], a[t], s);
    return s;
}

#define THREADS 128
#define WARPS (THREADS / 32)

// y[j, r] = Σ_k W[r, k]·x[j, k] for R weight rows per block (blockIdx.x) and every activation
// row j < n, NB activation rows at a time. Threads stride over the 32-weight chunks of a row
// (coalesced 16-byte loads of codes); each thread loads its chunk's codes of the R rows once
// per pass and multiplies them by NB activation rows, then the block sums over its threads.
// Passes after the first (n > NB) read the block's codes again from L1/L2, not from memory.
template <int BITS, bool HAS_M, int R, int NB>
__device__ __forceinline__ void packed_mm(const u32* __restrict__ codes, const u16* __restrict__ dsc,
                                          const u16* __restrict__ msc, const int* __restrict__ qa,
                                          const int* __restrict__ qb, const float* __restrict__ dx,
                                          const float* __restrict__ e32, float* __restrict__ y,
                                          int rows, int k, int group, int n) {
    const int WPC = BITS == 4 ? 4 : 8;  // 32-bit words of codes per chunk
    __shared__ float red[WARPS][R * NB];
    const int chunks = k >> 5, gpr = k / group, cpg = group >> 5;
    const int r0 = blockIdx.x * R;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int n0 = 0; n0 < n; n0 += NB) {
        float acc[R][NB];
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int j = 0; j < NB; j++) acc[i][j] = 0.0f;
        for (int c = threadIdx.x; c < chunks; c += THREADS) {
            u32 w[R][WPC];
            float d[R], m[R];
#pragma unroll
            for (int i = 0; i < R; i++) {
                int r = r0 + i;
                if (r < rows) {
                    const uint4* p = (const uint4*)(codes + ((size_t)r * chunks + c) * WPC);
#pragma unroll
                    for (int v = 0; v < WPC / 4; v++) {
                        uint4 q = load_codes(p + v);
                        w[i][4 * v] = q.x;
                        w[i][4 * v + 1] = q.y;
                        w[i][4 * v + 2] = q.z;
                        w[i][4 * v + 3] = q.w;
                    }
                    size_t g = (size_t)r * gpr + c / cpg;
                    d[i] = f16_to_f32(dsc[g]);
                    m[i] = HAS_M ? f16_to_f32(msc[g]) : (BITS == 4 ? -8.0f * d[i] : 0.0f);
                } else {
#pragma unroll
                    for (int t = 0; t < WPC; t++) w[i][t] = 0u;
                    d[i] = 0.0f;
                    m[i] = 0.0f;
                }
            }
#pragma unroll
            for (int j = 0; j < NB; j++) {
                int row = n0 + j;
                if (row < n) {
                    size_t at = (size_t)row * chunks + c;
                    const int4* pa = (const int4*)(qa + at * 8);
                    const int4* pb = (const int4*)(qb + at * 8);
                    int4 a0 = pa[0], a1 = pa[1], b0 = pb[0], b1 = pb[1];
                    int A[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                    int B[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
                    float xs = dx[at], xe = e32[at];
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        int sa = BITS == 4 ? dot_u4(w[i], A) : dot_s8(w[i], A);
                        int sb = BITS == 4 ? dot_u4(w[i], B) : dot_s8(w[i], B);
                        acc[i][j] += d[i] * (xs * (float)(sa * 128 + sb)) + m[i] * xe;
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int j = 0; j < NB; j++) {
                float v = acc[i][j];
                for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == 0) red[warp][i * NB + j] = v;
            }
        __syncthreads();
        if (threadIdx.x < R * NB) {
            int i = threadIdx.x / NB, j = threadIdx.x % NB;
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < WARPS; wp++) s += red[wp][threadIdx.x];
            int r = r0 + i, row = n0 + j;
            if (r < rows && row < n) y[(size_t)row * rows + r] = s;
        }
        __syncthreads();
    }
}

#define ROWS_PER_BLOCK 4
#define PACKED_KERNEL(name, BITS, HAS_M, NB)                                                   \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        name(const u32* codes, const u16* dsc, const u16* msc, const int* qa, const int* qb,   \
             const float* dx, const float* e32, float* y, int rows, int k, int group, int n) { \
        packed_mm<BITS, HAS_M, ROWS_PER_BLOCK, NB>(codes, dsc, msc, qa, qb, dx, e32, y, rows, \
                                                   k, group, n);                               \
    }

PACKED_KERNEL(packed_u4_1, 4, false, 1)
PACKED_KERNEL(packed_u4_4, 4, false, 4)
PACKED_KERNEL(packed_u4_8, 4, false, 8)
PACKED_KERNEL(packed_u4m_1, 4, true, 1)
PACKED_KERNEL(packed_u4m_4, 4, true, 4)
PACKED_KERNEL(packed_u4m_8, 4, true, 8)
PACKED_KERNEL(packed_s8_1, 8, false, 1)
PACKED_KERNEL(packed_s8_4, 8, false, 4)
PACKED_KERNEL(packed_s8_8, 8, false, 8)

// out[b, :] = row ids[b] of the packed matrix, dequantized as the CPU does (d·(u − 8), d·u + m
// or d·c, each product and sum rounded separately). One block per id.
extern "C" __global__ void packed_rows(const u8* codes, const u16* dsc, const u16* msc,
                                       const unsigned int* ids, float* out, int k, int group,
                                       int bits, int has_m) {
    size_t r = ids[blockIdx.x];
    int gpr = k / group;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        size_t g = r * gpr + j / group;
        float d = f16_to_f32(dsc[g]);
        float v;
        if (bits == 4) {
            int c = j >> 5, t = j & 31;
            u8 b = codes[(r * (size_t)(k >> 5) + c) * 16 + (t & 15)];
            int u = t < 16 ? (b & 15) : (b >> 4);
            v = has_m ? __fadd_rn(__fmul_rn(d, (float)u), f16_to_f32(msc[g]))
                      : __fmul_rn(d, (float)(u - 8));
        } else {
            float q = (float)((const signed char*)codes)[r * (size_t)k + j];
            v = has_m ? __fadd_rn(__fmul_rn(d, q), f16_to_f32(msc[g])) : __fmul_rn(d, q);
        }
        out[(size_t)blockIdx.x * k + j] = v;
    }
}

// Device-memory read bandwidth: every thread sums 16-byte words of `p` (n words) with a grid
// stride; one float per block keeps the loads from being optimised away.
extern "C" __global__ void stream_read(const uint4* __restrict__ p, long long n, u32* out) {
    u32 s = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        uint4 v = p[i];
        s ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    for (int o = 16; o > 0; o >>= 1) s ^= __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) atomicXor(out, s);
}

// Keeps the stream busy for `ns` nanoseconds (one thread), so that work queued behind it runs
// back to back on the device whatever the host's launch rate: for timing kernels alone.
extern "C" __global__ void spin(long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while ((long long)(t - t0) < ns);
}
