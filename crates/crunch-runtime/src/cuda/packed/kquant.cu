
// ---- GGUF K-quant products: Q4_K, Q5_K, Q6_K (decision 140) ------------------------------------
// Appended to packed.cu by packed.rs (one NVRTC program: the typedefs, f16_to_f32 and load_codes
// above are shared; this part needs only dp4a, sm_61+).
//
// GPU layout (written by packed/kquant.rs), per super-block of 256 weights, super-blocks of a
// row back to back, rows back to back; exactly the file's bytes (144, 176, 210 per super-block),
// split in two arrays so that the codes are 16-byte aligned:
// - codes (REC bytes per super-block): Q4_K qs[128]; Q5_K qh[32] then qs[128]; Q6_K ql[128]
//   then qh[64] — GGUF's own bytes in GGUF's own order.
// - sc (u16): Q4_K/Q5_K the block's 16-byte head (d, dmin, scales[12]), 8 per super-block;
//   Q6_K scales[16] (i8) then d, 9 per super-block.
//
// A *unit* is 64 weights whose codes sit in the same 32 bytes: byte l's low nibble is weight l
// of chunk `lo` (32 weights), its high nibble weight l of chunk `hi`; Q5_K/Q6_K add high bits
// from 32 more bytes (a fifth bit, or two). Per super-block, unit u = 0..3 is:
// - Q4_K: qs[32u..], chunks 2u, 2u + 1;
// - Q5_K: qs[32u..], fifth bits (qh[l] >> 2u) & 1 and (qh[l] >> (2u + 1)) & 1, chunks 2u, 2u + 1;
// - Q6_K: ql[32u..], high bits qh[32·(u/2) + l] >> 2(u%2) (lo) and >> 2(u%2) + 4 (hi),
//   chunks 4·(u/2) + u%2 and that + 2.
// A chunk of 32 weights is one chunk of the quantized activations (quantize_acts: 15 bits as
// two int8 planes, q = 128·a + b), so each chunk is two sets of dp4a plus its scale terms:
// - Q4_K/Q5_K (one 32-weight sub-block per chunk, weight = d·sc·u − dmin·mn):
//   y += (d·sc)·(dx·(128·Σu·a + Σu·b)) − (dmin·mn)·(dx·Σq);
// - Q6_K (two 16-weight sub-blocks per chunk, weight = d·sc·(u − 32)): the codes are made
//   signed (u − 32, in −32..31) before the dp4a, so no offset term:
//   y += (d·sc₀)·(dx·Σ₀(u − 32)·q) + (d·sc₁)·(dx·Σ₁(u − 32)·q).
// The integer sums are exact (|Σ| < 2^24 per chunk); d·sc and dmin·mn are rounded as the CPU
// rounds them, so GPU and CPU differ only in the order of f32 sums.
//
// One warp per weight row (no block-wide synchronisation), lanes striding over the row's
// units: a warp's 32 lanes read 2,048 weights' codes, 32 bytes each (+ 32 bytes of high bits
// for Q5_K/Q6_K, + the 16-byte head read by 4 lanes from L1), all inside a contiguous range,
// with 16-byte loads; scales are decoded once per unit (two sub-blocks). NB activation rows per
// pass reuse the unit's codes from registers; more rows take more passes, re-reading the codes
// from L1/L2. A warp shuffle sums each output (fixed order: deterministic).

#define KQ_WARPS 4
#define KQ_THREADS (KQ_WARPS * 32)
#define KQ_Q4K 0
#define KQ_Q5K 1
#define KQ_Q6K 2

__device__ __forceinline__ u32 kq_byte(u32 w, int i) { return (w >> (8 * i)) & 0xffu; }

// Scale and min of sub-block j (0..7) of a Q4_K/Q5_K head (h.y, h.z, h.w = scales[0..12]):
// GGUF's six-bit pairs.
__device__ __forceinline__ void k4_scale_min(uint4 h, int j, u32& sc, u32& mn) {
    const int i = j & 3;
    const u32 b1 = kq_byte(h.y, i), b2 = kq_byte(h.z, i), b3 = kq_byte(h.w, i);
    if (j < 4) {
        sc = b1 & 63u;
        mn = b2 & 63u;
    } else {
        sc = (b3 & 15u) | ((b1 >> 6) << 4);
        mn = (b3 >> 4) | ((b2 >> 6) << 4);
    }
}

// Σ c·a over words w0..w0+W−1 of a chunk (c and a packed int8).
template <int W0, int W>
__device__ __forceinline__ int kq_dot(const u32 (&c)[8], const int (&a)[8]) {
    int s = 0;
#pragma unroll
    for (int t = W0; t < W0 + W; t++) s = __dp4a((int)c[t], a[t], s);
    return s;
}

// One chunk of codes c (8 words of int8) against activation chunk `at`, added to acc.
// Q4_K/Q5_K: d0 = d·sc, m = −dmin·mn; Q6_K: d0, d1 = d·sc of its two sub-blocks.
template <int TYPE>
__device__ __forceinline__ float kq_chunk(const u32 (&c)[8], const int* __restrict__ qa,
                                          const int* __restrict__ qb, const float* __restrict__ dx,
                                          const float* __restrict__ e32, size_t at, float d0,
                                          float d1, float m) {
    const int4* pa = (const int4*)(qa + at * 8);
    const int4* pb = (const int4*)(qb + at * 8);
    const int4 a0 = pa[0], a1 = pa[1], b0 = pb[0], b1 = pb[1];
    const int A[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    const int B[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
    const float xs = dx[at];
    if (TYPE == KQ_Q6K) {
        const int i0 = kq_dot<0, 4>(c, A) * 128 + kq_dot<0, 4>(c, B);
        const int i1 = kq_dot<4, 4>(c, A) * 128 + kq_dot<4, 4>(c, B);
        return d0 * (xs * (float)i0) + d1 * (xs * (float)i1);
    } else {
        const int i = kq_dot<0, 8>(c, A) * 128 + kq_dot<0, 8>(c, B);
        return d0 * (xs * (float)i) + m * e32[at];
    }
}

// Bytes of codes per super-block.
#define KQ_REC(TYPE) ((TYPE) == KQ_Q4K ? 128 : (TYPE) == KQ_Q5K ? 160 : 192)

template <int TYPE, int NB>
__device__ __forceinline__ void kquant_mm(const u8* __restrict__ codes, const u16* __restrict__ sc,
                                          const int* __restrict__ qa, const int* __restrict__ qb,
                                          const float* __restrict__ dx,
                                          const float* __restrict__ e32, float* __restrict__ y,
                                          int rows, int k, int n) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * KQ_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;  // the whole warp: nothing below synchronises the block
    const int spr = k >> 8, units = k >> 6, chunks = k >> 5;
    for (int n0 = 0; n0 < n; n0 += NB) {
        float acc[NB];
#pragma unroll
        for (int j = 0; j < NB; j++) acc[j] = 0.0f;
        for (int p = lane; p < units; p += 32) {
            const int sb = p >> 2, u = p & 3;
            const size_t blk = (size_t)r * spr + sb;
            const uint4* rec = (const uint4*)(codes + blk * KQ_REC(TYPE));
            // 32 bytes of nibbles, and for Q5_K/Q6_K the 32 bytes of their high bits.
            u32 q[8], h[8];
            const int qat = (TYPE == KQ_Q5K ? 2 : 0) + 2 * u;  // in 16-byte words
            uint4 v0 = load_codes(rec + qat), v1 = load_codes(rec + qat + 1);
            q[0] = v0.x, q[1] = v0.y, q[2] = v0.z, q[3] = v0.w;
            q[4] = v1.x, q[5] = v1.y, q[6] = v1.z, q[7] = v1.w;
            if (TYPE != KQ_Q4K) {
                const int hat = TYPE == KQ_Q5K ? 0 : 8 + 2 * (u >> 1);
                // Shared by 2 (Q6_K) or 4 (Q5_K) units: through L1.
                v0 = rec[hat];
                v1 = rec[hat + 1];
                h[0] = v0.x, h[1] = v0.y, h[2] = v0.z, h[3] = v0.w;
                h[4] = v1.x, h[5] = v1.y, h[6] = v1.z, h[7] = v1.w;
            }
            u32 clo[8], chi[8];
#pragma unroll
            for (int t = 0; t < 8; t++) {
                u32 a = q[t] & 0x0f0f0f0fu, b = (q[t] >> 4) & 0x0f0f0f0fu;
                if (TYPE == KQ_Q5K) {
                    a |= ((h[t] >> (2 * u)) & 0x01010101u) << 4;
                    b |= ((h[t] >> (2 * u + 1)) & 0x01010101u) << 4;
                } else if (TYPE == KQ_Q6K) {
                    const int s = 2 * (u & 1);
                    a |= ((h[t] >> s) & 0x03030303u) << 4;
                    b |= ((h[t] >> (s + 4)) & 0x03030303u) << 4;
                    // u − 32 per byte, without borrows: (128 + u − 32) ^ 128.
                    a = ((a | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
                    b = ((b | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
                }
                clo[t] = a;
                chi[t] = b;
            }
            // Chunks (of the super-block) and their scales.
            int lo, hi;
            float dlo0, dlo1, dhi0, dhi1, mlo, mhi;
            if (TYPE == KQ_Q6K) {
                lo = 4 * (u >> 1) + (u & 1);
                hi = lo + 2;
                const u16* s = sc + blk * 9;
                const float d = f16_to_f32(s[8]);
                const u32 plo = s[lo], phi = s[hi];  // scales[2c], scales[2c + 1]
                dlo0 = __fmul_rn(d, (float)(signed char)(plo & 0xffu));
                dlo1 = __fmul_rn(d, (float)(signed char)(plo >> 8));
                dhi0 = __fmul_rn(d, (float)(signed char)(phi & 0xffu));
                dhi1 = __fmul_rn(d, (float)(signed char)(phi >> 8));
                mlo = mhi = 0.0f;
            } else {
                lo = 2 * u;
                hi = lo + 1;
                const uint4 head = __ldg((const uint4*)(sc + blk * 8));
                const float d = f16_to_f32((u16)(head.x & 0xffffu));
                const float dmin = f16_to_f32((u16)(head.x >> 16));
                u32 s0, m0, s1, m1;
                k4_scale_min(head, lo, s0, m0);
                k4_scale_min(head, hi, s1, m1);
                dlo0 = __fmul_rn(d, (float)s0);
                dhi0 = __fmul_rn(d, (float)s1);
                mlo = -__fmul_rn(dmin, (float)m0);
                mhi = -__fmul_rn(dmin, (float)m1);
                dlo1 = dhi1 = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < NB; j++) {
                const int row = n0 + j;
                if (row < n) {
                    const size_t at = (size_t)row * chunks + (size_t)sb * 8;
                    acc[j] += kq_chunk<TYPE>(clo, qa, qb, dx, e32, at + lo, dlo0, dlo1, mlo);
                    acc[j] += kq_chunk<TYPE>(chi, qa, qb, dx, e32, at + hi, dhi0, dhi1, mhi);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < NB; j++) {
            float v = acc[j];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            const int row = n0 + j;
            if (lane == 0 && row < n) y[(size_t)row * rows + r] = v;
        }
    }
}

#define KQUANT_KERNEL(name, TYPE, NB)                                                           \
    extern "C" __global__ void __launch_bounds__(KQ_THREADS)                                    \
        name(const u8* codes, const u16* sc, const int* qa, const int* qb, const float* dx,     \
             const float* e32, float* y, int rows, int k, int n) {                              \
        kquant_mm<TYPE, NB>(codes, sc, qa, qb, dx, e32, y, rows, k, n);                         \
    }

KQUANT_KERNEL(kquant_q4k_1, KQ_Q4K, 1)
KQUANT_KERNEL(kquant_q4k_4, KQ_Q4K, 4)
KQUANT_KERNEL(kquant_q4k_8, KQ_Q4K, 8)
KQUANT_KERNEL(kquant_q5k_1, KQ_Q5K, 1)
KQUANT_KERNEL(kquant_q5k_4, KQ_Q5K, 4)
KQUANT_KERNEL(kquant_q5k_8, KQ_Q5K, 8)
KQUANT_KERNEL(kquant_q6k_1, KQ_Q6K, 1)
KQUANT_KERNEL(kquant_q6k_4, KQ_Q6K, 4)
KQUANT_KERNEL(kquant_q6k_8, KQ_Q6K, 8)

// out[b, :] = row ids[b] dequantized exactly as the CPU does (crunch-formats' decode: Q4_K/Q5_K
// (d·sc)·u − dmin·mn, Q6_K (d·sc)·(u − 32), each product and difference rounded on its own).
// One block per id. `type` is KQ_Q4K, KQ_Q5K or KQ_Q6K.
extern "C" __global__ void kquant_rows(const u8* codes, const u16* sc, const unsigned int* ids,
                                       float* out, int k, int type) {
    const size_t r = ids[blockIdx.x];
    const int spr = k >> 8;
    const u8* s8 = (const u8*)sc;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        const size_t blk = r * spr + (j >> 8);
        const int e = j & 255, l = e & 31;
        float v;
        if (type == KQ_Q6K) {
            const u8* rec = codes + blk * KQ_REC(KQ_Q6K);
            const int h = e >> 7, kk = (e >> 5) & 3;
            const int ql = rec[64 * h + 32 * (kk & 1) + l], qh = rec[128 + 32 * h + l];
            const int q = ((ql >> (4 * (kk >> 1))) & 15) | (((qh >> (2 * kk)) & 3) << 4);
            const float d = f16_to_f32(sc[blk * 9 + 8]);
            const float dl = __fmul_rn(d, (float)(signed char)s8[blk * 18 + (e >> 4)]);
            v = __fmul_rn(dl, (float)(q - 32));
        } else {
            const int q5 = type == KQ_Q5K;
            const u8* rec = codes + blk * (q5 ? KQ_REC(KQ_Q5K) : KQ_REC(KQ_Q4K));
            const int g = e >> 6, half = (e >> 5) & 1;
            const int qs = rec[(q5 ? 32 : 0) + 32 * g + l];
            int q = half ? qs >> 4 : qs & 15;
            if (q5) q |= ((rec[l] >> (2 * g + half)) & 1) << 4;
            const uint4 head = ((const uint4*)sc)[blk];
            u32 s, m;
            k4_scale_min(head, 2 * g + half, s, m);
            const float d = f16_to_f32((u16)(head.x & 0xffffu));
            const float dmin = f16_to_f32((u16)(head.x >> 16));
            v = __fsub_rn(__fmul_rn(__fmul_rn(d, (float)s), (float)q), __fmul_rn(dmin, (float)m));
        }
        out[(size_t)blockIdx.x * k + j] = v;
    }
}
