
// ---- One activation row on the CUDA cores, with programmatic dependent launch (decision 151) ---
// Appended to packed.cu by packed/cc.rs (one NVRTC program: u16/u32, f16_to_f32, round_bf16
// and load_codes come from packed.cu). Issue 17's batch-1 kernel for crunch's symmetric int4
// g128 codes (weight = d·(u − 8)), 1–3 matrices of one width k (k % 128 == 0) in one launch,
// outputs back to back in y (matrix j's row r at r0 + … + r(j−1) + r), as mma_gemv_wide.
// Written and first timed in bench/gpu/gemv_lab (cuda_core.cu, s33–s34); measured on the H200
// against the tensor-core kernel in BENCHMARKS.md ("Batch-1 products: CUDA cores and PDL").
//
// Why this shape (batch 1 is a pure stream of 0.53 bytes per weight):
// - Bytes in flight: each warp takes an item of 2 whole rows and requests a batch of 4 steps
//   of both (step s of a row: chunks 32s..32s+31, lane l chunk 32s + l, so one load is 512
//   contiguous bytes of a row): 8 independent 16-byte loads per lane, 4 KB per warp. The next
//   batch (of this item or the warp's next one) is requested before the current one is
//   multiplied, so a warp keeps 4 KB in flight while it computes.
// - No block-wide syncs after the activations are staged: a warp owns whole rows, sums its
//   lanes with shuffles and writes its rows itself (no split-K, no shared-memory reduction).
// - One resident wave; warps stride over items of equal size, and with fewer items than warps
//   the busy ones are spread over every block (every SM streams its share).
// - Arithmetic: x is quantized once per block into shared memory as act.rs does on the CPU
//   (per chunk of 32, 15 bits q = 128·a + b, a and b int8 planes, dx = amax / 16256), so a
//   step is integer dp4a only: per 32 weights and row 8 lop3 (the high nibbles taken in place
//   as 16·u, with the unsigned-by-signed dp4a) + 16 dp4a. Σ(u − 8)·q = Σu·q − 8·Σq, with Σq per
//   chunk staged; exact integers (|16·t| < 2^27), then y += (d·dx/16)·float(16·t) in f32.
//   The integer sums are the CPU kernel's; only the f32 order of the chunk terms differs.
// - PDL (sm_90): `griddepcontrol.launch_dependents` first, so the next product's grid may be
//   scheduled while this one runs; the first batch of codes and scales (weights: never written
//   by an earlier kernel) is requested, then `griddepcontrol.wait` holds the block until the
//   previous grid has finished and its writes are visible, before x is read or y written.
//   Launched without the attribute, both instructions do nothing.

#define CC_THREADS 512  // 16 warps: one block per SM at ≤ 128 registers

__device__ __forceinline__ int cc_dp4a(u32 a, u32 b, int c) {  // Σ u8(a_j)·s8(b_j) + c
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Shared memory: for C = k/32 chunks, 4 uint4 arrays [C] (a words 0–3, a words 4–7, b words
// 0–3, b words 4–7: a warp's reads for a step are 512 contiguous bytes per array), then dx [C]
// (f32, with the 1/16 of the in-place high nibbles) and q128 [C] (int, 128·Σq). Computed
// again by packed/cc.rs.
#define CC_SMEM(k) (((k) >> 5) * 72)

// One float4 of the staging: elements 4i..4i+3 of x (chunk i >> 3, word i & 7) quantized into
// the planes at `st` (CC_SMEM's layout in shared memory). The 8 lanes of the chunk must all
// call it (consecutive i over whole warps): amax over them, q = rint(x·16256/amax) (a zero or
// non-finite amax gives a zero chunk, as act.rs), a = q >> 7 (arithmetic), b = q & 127, Σq.
__device__ __forceinline__ void cc_stage4(float4 v, int bf16, u32* st, int C, int i) {
    u32* alo = st;
    u32* ahi = alo + 4 * C;
    u32* blo = ahi + 4 * C;
    u32* bhi = blo + 4 * C;
    float* dxs = (float*)(bhi + 4 * C);
    int* q128 = (int*)(dxs + C);
    float amax;
    const float4 f = act_read4(v, bf16, &amax);  // packed.cu
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float d = act_step(amax, &inv);  // packed.cu, shared with quantize_acts
    u32 pa, pb;
    int s = act_planes4(f, inv, &pa, &pb);
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const int c = i >> 3, p = i & 7;  // chunk, word of the chunk (elements 4p..4p+3)
    if (p < 4) {
        alo[4 * c + p] = pa;
        blo[4 * c + p] = pb;
    } else {
        ahi[4 * c + p - 4] = pa;
        bhi[4 * c + p - 4] = pb;
    }
    if (p == 0) {
        dxs[c] = d * (1.0f / 16.0f);
        q128[c] = 128 * s;  // 16 · 8 · Σq
    }
}

// Quantizes x into the planes (cc_stage4 per float4: 8 lanes per chunk), the float4 reads
// issued 4 at a time. Under NORM each element is first scaled as rms_norm scales it,
// (x·inv)·w (feed_rms_norm's and rms_norm's expression), with w the norm's weight.
template <bool NORM>
__device__ __forceinline__ void cc_stage(const float* __restrict__ x, const float* __restrict__ w,
                                         float inv, uint4* sm, int k, int bf16) {
    const int C = k >> 5, K4 = k >> 2;
    const float4* x4 = (const float4*)x;
    const float4* w4 = (const float4*)w;
    for (int i0 = threadIdx.x; i0 < K4; i0 += 4 * CC_THREADS) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * CC_THREADS;
            v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (i < K4) {
                const float4 a = x4[i];
                if (NORM) {
                    const float4 g = w4[i];
                    v[u] = make_float4(a.x * inv * g.x, a.y * inv * g.y, a.z * inv * g.z,
                                       a.w * inv * g.w);
                } else {
                    v[u] = a;
                }
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * CC_THREADS;
            // Warp-uniform: K4 and CC_THREADS are multiples of 32, so whole warps (and the 8
            // lanes of each chunk, which the shuffles combine) are in or out.
            if (i < K4) cc_stage4(v[u], bf16, (u32*)sm, C, i);
        }
    }
    __syncthreads();
}

// What a cc_u4 variant fuses around its product (decision 161): template flags of cc_u4_body.
//   CC_NORM  x is rms_norm's input: the staging normalises it (cc_stage_norm), so the norm is
//            not a launch of its own. Bit for bit rms_norm's output: its sum in its order
//            (rms_inv_by over kernels.cu's ROW_THREADS), then x·inv·w per element as it does.
//   CC_RES   y = res + x·Wᵀ, the residual add in the store (one matrix): res + p is p + res
//            bit for bit, as kernels.cu's add computes it.
//   CC_GATED two matrices of equal shape (gate, up) and y = silu(gate·x) · (up·x), one output
//            per row pair: an item is row r of gate and row r of up instead of 2 rows of one
//            matrix, so one warp holds both sums and applies silu_mul's expression. Each row's
//            sum is the same as in an item of 2 rows of one matrix (the same lanes, steps and
//            shuffle tree), so the output is silu_mul's of cc_u4's, bit for bit.
#define CC_NORM 1
#define CC_RES 2
#define CC_GATED 4
#define CC_NORM_THREADS 256  // kernels.cu's rms_norm block (ROW_THREADS in cuda/mod.rs)

// cc_stage for x normalised as rms_norm(x, w, eps) would give it: the inverse rms in rms_norm's
// order, then every float4 read again (from L1/L2) and scaled before it is quantized.
__device__ __forceinline__ void cc_stage_norm(const float* __restrict__ x,
                                              const float* __restrict__ w, float eps, uint4* sm,
                                              int k, int bf16) {
    __shared__ float red[32];
    const float inv = rms_inv_by(x, k, eps, red, CC_NORM_THREADS);  // reduce.cu
    cc_stage<true>(x, w, inv, sm, k, bf16);
}

// The matrix of item `it` (2 rows each; matrix 0's items, then 1's, then 2's).
struct CcMat {
    const uint4* codes;
    const u16* d;
    int rows;   // rows of this matrix
    int row;    // the item's first row in it
    int ybase;  // index of its row 0 in y
};

__device__ __forceinline__ CcMat cc_pick(int it, const uint4* c0, const u16* d0,
                                         const uint4* c1, const u16* d1, const uint4* c2,
                                         const u16* d2, int r0, int r1, int r2) {
    const int i0 = (r0 + 1) >> 1, i1 = i0 + ((r1 + 1) >> 1);
    CcMat m;
    if (it < i0) {
        m.codes = c0, m.d = d0, m.rows = r0, m.row = it * 2, m.ybase = 0;
    } else if (it < i1) {
        m.codes = c1, m.d = d1, m.rows = r1, m.row = (it - i0) * 2, m.ybase = r0;
    } else {
        m.codes = c2, m.d = d2, m.rows = r2, m.row = (it - i1) * 2, m.ybase = r0 + r1;
    }
    return m;
}

// Requests batch b (steps 4b .. 4b + 3) of the item's 2 rows: codes of chunk 32s + lane and
// the f16 scale of its group ((32s + lane)/4). Rows past the matrix are clamped to its last
// row (computed, not stored); steps past S, and chunks past C in the last step (k not a
// multiple of 1024), load the last ones again (not used), so the loads stay one branch-free run.
// Under CC_GATED the item's rows are row m.row of m (gate) and of the second matrix (c1, d1).
template <int F>
__device__ __forceinline__ void cc_load(uint4 (&w)[2][4], u32 (&sc)[2][4], const CcMat& m, int b,
                                        int S, int C, int G, int lane, const uint4* c1,
                                        const u16* d1) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const size_t r = (F & CC_GATED) ? m.row : min(m.rows - 1, m.row + i);
        const uint4* cp = ((F & CC_GATED) && i ? c1 : m.codes) + r * C;
        const u16* dp = ((F & CC_GATED) && i ? d1 : m.d) + r * G;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int c = min(32 * min(4 * b + j, S - 1) + lane, C - 1);
            w[i][j] = load_codes(cp + c);
            sc[i][j] = __ldg(dp + (c >> 2));
        }
    }
}

// Multiplies a loaded batch into acc (the lane's partial sums of the 2 rows).
__device__ __forceinline__ void cc_compute(const uint4 (&w)[2][4], const u32 (&sc)[2][4],
                                           float (&acc)[2], const uint4* sm, int b, int S, int C,
                                           int lane) {
    const uint4* alo = sm;
    const uint4* ahi = alo + C;
    const uint4* blo = ahi + C;
    const uint4* bhi = blo + C;
    const float* dxs = (const float*)(bhi + C);
    const int* q128 = (const int*)(dxs + C);
    // Opaque masks: lop3 with a register operand, no constant rebuilt per use.
    u32 lo = 0x0f0f0f0fu, hi = 0xf0f0f0f0u;
    asm volatile("" : "+r"(lo), "+r"(hi));
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int s = 4 * b + j;
        const int c = 32 * s + lane;
        if (s < S && c < C) {  // warp-uniform but in the last step of a k not a multiple of 1024
            const uint4 al = alo[c], ah = ahi[c], bl = blo[c], bh = bhi[c];
            const float dx = dxs[c];
            const int qc = q128[c];
            const u32 A[8] = {al.x, al.y, al.z, al.w, ah.x, ah.y, ah.z, ah.w};
            const u32 B[8] = {bl.x, bl.y, bl.z, bl.w, bh.x, bh.y, bh.z, bh.w};
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const u32 W[4] = {w[i][j].x, w[i][j].y, w[i][j].z, w[i][j].w};
                // Four independent dp4a chains: Σu·a (low nibbles: weights 4t..4t+3 of word
                // t), Σ16u·a (high nibbles: weights 16 + 4t..), the same for b.
                int al0 = 0, ah0 = 0, bl0 = 0, bh0 = 0;
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    const u32 wl = W[t] & lo, wh = W[t] & hi;
                    al0 = cc_dp4a(wl, A[t], al0);
                    ah0 = cc_dp4a(wh, A[4 + t], ah0);
                    bl0 = cc_dp4a(wl, B[t], bl0);
                    bh0 = cc_dp4a(wh, B[4 + t], bh0);
                }
                // 16·Σ(u − 8)·q, an exact integer (|·| ≤ 16·32·8·16256 < 2^27).
                const int t16 = (16 * al0 + ah0) * 128 + (16 * bl0 + bh0) - qc;
                acc[i] = fmaf(f16_to_f32((u16)sc[i][j]) * dx, (float)t16, acc[i]);
            }
        }
    }
}

// Sums the lanes' partials of the item's rows and writes them (lane i writes row i; under
// CC_RES plus res; under CC_GATED lane 0 writes silu(gate) · up). The shuffle tree leaves the
// same sums in every lane (each step adds the same two values in either lane).
template <int F>
__device__ __forceinline__ void cc_store(float (&acc)[2], const CcMat& m, float* __restrict__ y,
                                         const float* __restrict__ res, int lane) {
    float out = 0.0f, sum[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float v = acc[i];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == i) out = v;
        sum[i] = v;
        acc[i] = 0.0f;
    }
    if (F & CC_GATED) {
        const float g = sum[0];
        if (lane == 0) y[m.row] = g / (1.0f + expf(-g)) * sum[1];  // kernels.cu's silu_mul
    } else if (lane < 2 && m.row + lane < m.rows) {
        const int at = m.ybase + m.row + lane;
        y[at] = (F & CC_RES) ? res[at] + out : out;
    }
}

// The kernel's body, with what F fuses around the product (CC_* above): `normw`/`eps` under
// CC_NORM, `res` under CC_RES.
template <int F>
__device__ __forceinline__ void cc_u4_body(const uint4* c0, const u16* d0, const uint4* c1,
                                           const u16* d1, const uint4* c2, const u16* d2,
                                           const float* __restrict__ x, float* __restrict__ y,
                                           const float* __restrict__ normw, float eps,
                                           const float* __restrict__ res, int r0, int r1,
                                           int r2, int k, int bf16) {
    extern __shared__ uint4 cc_smem[];
    const int C = k >> 5, G = k >> 7, S = (C + 31) >> 5;  // chunks, groups, steps of 32 chunks
    const int NB = (S + 3) >> 2;  // batches of 4 steps per item
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int items =
        (F & CC_GATED) ? r0 : ((r0 + 1) >> 1) + ((r1 + 1) >> 1) + ((r2 + 1) >> 1);
    // Warp (block b, warp w) starts at item w·grid + b: with fewer items than warps the busy
    // warps are spread over every block.
    const int NW = gridDim.x * (CC_THREADS / 32);
    int it = warp * gridDim.x + blockIdx.x;
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    float acc[2] = {0.0f, 0.0f};
    uint4 wa[2][4], wb[2][4];
    u32 sa[2][4], sb[2][4];
    int ba = 0;
    auto pick = [&](int i) {
        if (F & CC_GATED) {
            CcMat m;
            m.codes = c0, m.d = d0, m.rows = r0, m.row = i, m.ybase = 0;
            return m;
        }
        return cc_pick(i, c0, d0, c1, d1, c2, d2, r0, r1, r2);
    };
    if (it < items) cc_load<F>(wa, sa, pick(it), 0, S, C, G, lane, c1, d1);
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    if (F & CC_NORM) {
        cc_stage_norm(x, normw, eps, cc_smem, k, bf16);
    } else {
        cc_stage<false>(x, nullptr, 0.0f, cc_smem, k, bf16);
    }
    // Two register buffers (a, b): the successor batch is requested before the current one is
    // multiplied. Each buffer's cursor (item, batch) travels with it; the matrix is picked
    // again where needed (a few integer ops per batch, fewer registers than two CcMat).
    while (it < items) {
        int itb = it, bb = ba + 1;  // successor of a → b
        if (bb == NB) bb = 0, itb = it + NW;
        if (itb < items) cc_load<F>(wb, sb, pick(itb), bb, S, C, G, lane, c1, d1);
        cc_compute(wa, sa, acc, cc_smem, ba, S, C, lane);
        if (ba == NB - 1) cc_store<F>(acc, pick(it), y, res, lane);
        if (itb >= items) break;
        it = itb, ba = bb + 1;  // successor of b → a
        if (ba == NB) ba = 0, it = itb + NW;
        if (it < items) cc_load<F>(wa, sa, pick(it), ba, S, C, G, lane, c1, d1);
        cc_compute(wb, sb, acc, cc_smem, bb, S, C, lane);
        if (bb == NB - 1) cc_store<F>(acc, pick(itb), y, res, lane);
    }
}

extern "C" __global__ void __launch_bounds__(CC_THREADS, 1)
    cc_u4(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,
          const u16* d2, const float* __restrict__ x, float* __restrict__ y, int r0, int r1,
          int r2, int k, int bf16) {
    cc_u4_body<0>(c0, d0, c1, d1, c2, d2, x, y, nullptr, 0.0f, nullptr, r0, r1, r2, k, bf16);
}

// The fused variants (decision 161), one parameter list: x, y, the norm's weight and eps (read
// under CC_NORM), res (read under CC_RES).
#define CC_FUSED(name, F)                                                                       \
    extern "C" __global__ void __launch_bounds__(CC_THREADS, 1)                                 \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const float* __restrict__ x, float* __restrict__ y,                 \
             const float* __restrict__ normw, const float* __restrict__ res, int r0, int r1,    \
             int r2, int k, int bf16, float eps) {                                              \
        cc_u4_body<F>(c0, d0, c1, d1, c2, d2, x, y, normw, eps, res, r0, r1, r2, k, bf16);      \
    }
CC_FUSED(cc_u4_norm, CC_NORM)                   // rms_norm → q/k/v
CC_FUSED(cc_u4_res, CC_RES)                     // o, down → + residual
CC_FUSED(cc_u4_norm_gated, CC_NORM | CC_GATED)  // rms_norm → gate/up → silu_mul
