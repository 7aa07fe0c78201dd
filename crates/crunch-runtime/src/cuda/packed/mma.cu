
// ---- Tensor-core products for 4-bit codes in groups of 128 (decision 132) ----------------------
// Appended to packed.cu by packed/mma.rs (one NVRTC program; the typedefs and load_codes above
// are shared). Needs sm_80+ (bf16 `mma.sync`, `cvt`/`fma` on bf16x2): on older devices none of
// this is compiled and the host keeps the dp4a kernels.
//
// y[r] = Σ_k W[r, k]·x[k] for one activation row (mma_gemv; more rows: mma_gemm below), with
// the codes expanded to bf16 in registers and multiplied on the tensor cores (mma.m16n8k16,
// f32 accumulate):
// - x is split per element into hi = bf16(x) and lo = bf16(x − hi), so hi + lo carries 16 bits
//   of x's significand (relative error ≤ 2^-17; in bf16 mode x is rounded first and lo = 0).
//   hi and lo are two columns of the mma's B operand, so one mma serves both.
// - a code u (0..15) becomes the bf16 128 + u with one `lop3` (0x4300 | u) and u − 8 (symmetric)
//   or u (with offsets) with one bf16x2 fma: exact small integers. The group's f16 scale d (and
//   offset m) is applied in f32 after the group's 8 mma steps: y += d·Σ(u − 8)x, or
//   y += d·Σu·x + m·Σx with Σx (of hi + lo) summed once per block while staging.
// - the order of k inside a group is free (both operands follow it): thread t of a quad reads
//   the whole 16-byte chunk t of the group's four chunks (one coalesced load per row), and in
//   step s = 4h + q supplies word q's nibbles h (bytes 0 and 2, then 1 and 3) as its A
//   registers, and the matching activations x[32(c0+t) + 4s ..+3] as its B registers.
//
// A block is 8 warps over tiles of 16·MT weight rows, taken in turn (grid-stride; the host
// launches one wave). The warps split the row's groups into 8 contiguous ranges (split-K
// inside the block) and sum their partial outputs through shared memory in a fixed order, so
// the result does not depend on timing. Each block first stages the activation row once,
// already as bf16 hi/lo pairs in the order the B registers want ([s][chunk], rows padded by
// 16 bytes so neither the staging stores nor the reads conflict); the first code loads are
// issued before that, and each tile's successor's first loads before the warps' sum, so
// staging and sums overlap the loads' latency.

#if __CUDA_ARCH__ >= 800

#define MMA_WARPS 8
#define MMA_THREADS (MMA_WARPS * 32)

// Two f32 → bf16 (round to nearest even), `lo` in bits 0–15.
__device__ __forceinline__ u32 bf16_pair(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float bf16_low(u32 p) { return __uint_as_float(p << 16); }
__device__ __forceinline__ float bf16_high(u32 p) { return __uint_as_float(p & 0xffff0000u); }

// Nibbles at bits 0–3 and 16–19 of v as the bf16 pair (u0 − off, u1 − off), exactly:
// 0x4300 | u is 128 + u, and fma(·, 1, −(128 + off)) subtracts in bf16 without rounding.
// `mask` is 0x000f000f held in a register (see mma_group); the lop3 ((v & mask) | magic) is
// written out so that ptxas keeps the magic as its immediate instead of rebuilding the mask
// before each one (~3 instructions fewer per mma step in the SASS).
template <int OFF>
__device__ __forceinline__ u32 nibbles_bf16(u32 v, u32 mask) {
    u32 r, b;
    asm("lop3.b32 %0, %1, %2, 0x43004300, 0xEA;" : "=r"(b) : "r"(v), "r"(mask));
    const u32 one = 0x3f803f80u;
    const u32 neg = OFF == 8 ? 0xc308c308u : 0xc300c300u;  // −136, −128
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(b), "r"(one), "r"(neg));
    return r;
}

__device__ __forceinline__ void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                         u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 word(const uint4& v, int q) {
    return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// x's 4 elements (weights 4s..4s+3 of a chunk) as the B registers (hi b0, hi b1, lo b0,
// lo b1), with b0 = (x0, x2) and b1 = (x1, x3) (see the k order above); returns Σ(hi + lo).
// In bf16 mode x is rounded first, so lo = 0.
__device__ __forceinline__ float split_hi_lo(float4 f, int bf16, uint4& regs) {
    if (bf16) {
        f.x = round_bf16(f.x);
        f.y = round_bf16(f.y);
        f.z = round_bf16(f.z);
        f.w = round_bf16(f.w);
    }
    u32 h0 = bf16_pair(f.x, f.z), h1 = bf16_pair(f.y, f.w);
    u32 l0 = bf16_pair(f.x - bf16_low(h0), f.z - bf16_high(h0));
    u32 l1 = bf16_pair(f.y - bf16_low(h1), f.w - bf16_high(h1));
    regs = make_uint4(h0, h1, l0, l1);
    return ((bf16_low(h0) + bf16_low(l0)) + (bf16_high(h0) + bf16_high(l0))) +
           ((bf16_low(h1) + bf16_low(l1)) + (bf16_high(h1) + bf16_high(l1)));
}

extern __shared__ uint4 mma_smem[];

// Shared memory bytes of mma_gemv for rows of k weights (also computed by packed/mma.rs).
#define MMA_PLANE(k) (((k) >> 5) + 1)

// Codes (chunk 4·gg + t of each row), scales and offsets of groups gs..gs+U−1 (clamped to
// the last group: the extra loads are not used).
template <bool HAS_M, int MT, int U>
__device__ __forceinline__ void mma_load(uint4 (&w)[U][MT][2], float (&d)[U][MT][2],
                                         float (&m)[U][MT][2], const uint4* __restrict__ codes,
                                         const u16* __restrict__ dsc,
                                         const u16* __restrict__ msc, const int (&row)[MT][2],
                                         int gs, int G, int C, int t) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int gg = min(gs + u, G - 1);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                size_t r = row[mt][e];
                w[u][mt][e] = load_codes(codes + r * C + 4 * gg + t);
                d[u][mt][e] = f16_to_f32(__ldg(dsc + r * G + gg));
                m[u][mt][e] = HAS_M ? f16_to_f32(__ldg(msc + r * G + gg)) : 0.0f;
            }
    }
}

// Calls group(w, d, m, grp) for each group gb..ge−1 of this warp with two register buffers
// of U groups: the next U groups' codes are requested before the current ones are multiplied.
// `wa` holds groups gb.. on entry (requested earlier by the caller).
template <bool HAS_M, int MT, int U, class F>
__device__ __forceinline__ void double_buffered(uint4 (&wa)[U][MT][2], float (&da)[U][MT][2],
                                                float (&ma)[U][MT][2],
                                                const uint4* __restrict__ codes,
                                                const u16* __restrict__ dsc,
                                                const u16* __restrict__ msc,
                                                const int (&row)[MT][2], int gb, int ge, int G,
                                                int C, int t, F group) {
    uint4 wb[U][MT][2];
    float db[U][MT][2], mb[U][MT][2];
    for (int gs = gb; gs < ge; gs += 2 * U) {
        if (gs + U < ge)
            mma_load<HAS_M, MT, U>(wb, db, mb, codes, dsc, msc, row, gs + U, G, C, t);
#pragma unroll
        for (int u = 0; u < U; u++)
            if (gs + u < ge) group(wa[u], da[u], ma[u], gs + u);
        if (gs + U < ge) {
            if (gs + 2 * U < ge)
                mma_load<HAS_M, MT, U>(wa, da, ma, codes, dsc, msc, row, gs + 2 * U, G, C, t);
#pragma unroll
            for (int u = 0; u < U; u++)
                if (gs + U + u < ge) group(wb[u], db[u], mb[u], gs + U + u);
        }
    }
}

// One group of 128 weights (8 mma steps) for the MT tiles, added to yv with its scale terms.
template <bool HAS_M, int MT>
__device__ __forceinline__ void mma_group(float (&yv)[MT][2], const uint4 (&w)[MT][2],
                                          const float (&d)[MT][2], const float (&m)[MT][2],
                                          const uint2* act2, const float* gsum, int P, int grp,
                                          int g, int t) {
    const int c0 = 4 * grp;
    // Opaque to the compiler, so that each lop3 takes the mask from a register and the magic
    // as its immediate (otherwise ptxas rebuilds the constant before every lop3).
    u32 mask = 0x000f000fu;
    asm volatile("" : "+r"(mask));
    float acc[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[mt][0][j] = acc[mt][1][j] = 0.0f;
#pragma unroll
    for (int s = 0; s < 8; s++) {
        const int q = s & 3, sh = 4 * (s >> 2);
        uint2 b = act2[2 * (s * P + c0 + t) + (g & 1)];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            u32 w0 = word(w[mt][0], q), w1 = word(w[mt][1], q);
            const int OFF = HAS_M ? 0 : 8;
            // Two accumulators (even and odd steps) halve the chain of dependent mma.
            mma_bf16(acc[mt][s & 1], nibbles_bf16<OFF>(w0 >> sh, mask),
                     nibbles_bf16<OFF>(w1 >> sh, mask), nibbles_bf16<OFF>(w0 >> (8 + sh), mask),
                     nibbles_bf16<OFF>(w1 >> (8 + sh), mask), b.x, b.y);
        }
    }
    const float sx = HAS_M ? gsum[grp] : 0.0f;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float v = (acc[mt][0][2 * e] + acc[mt][0][2 * e + 1]) +
                      (acc[mt][1][2 * e] + acc[mt][1][2 * e + 1]);
            yv[mt][e] += d[mt][e] * v;
            if (HAS_M) yv[mt][e] += m[mt][e] * sx;
        }
}

// Stages x for the one-row kernels: float4 i holds weights 4s..4s+3 (s = i % 8) of chunk
// i / 8, as (hi, lo) B registers, and Σ(hi + lo) per group of 128 when offsets are stored. A
// thread's (up to) 8 float4 reads are issued before any is converted, so the staging costs one
// read latency, not one per 256 float4s (a 14336-wide row: 14 in a row); measured on the H200
// with bench/gpu/gemv_lab (−6% per 8B block, outputs bit-identical). One warp per group of 128
// (k/4 is a multiple of 32, so whole warps iterate together and the shuffles are full).
template <bool HAS_M>
__device__ __forceinline__ void stage_x(const float* __restrict__ x, uint4* act, float* gsum,
                                        int P, int k, int bf16, int lane) {
    const float4* x4 = (const float4*)x;
    const int K4 = k >> 2;
    for (int i0 = threadIdx.x; i0 < K4; i0 += 8 * MMA_THREADS) {
        float4 v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = i0 + u * MMA_THREADS;
            v[u] = i < K4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = i0 + u * MMA_THREADS;
            if (i < K4) {  // warp-uniform
                float s = split_hi_lo(v[u], bf16, act[(i & 7) * P + (i >> 3)]);
                if (HAS_M) {  // Σx is only read with offsets
#pragma unroll
                    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                    if (lane == 0) gsum[i >> 5] = s;
                }
            }
        }
    }
    __syncthreads();
}

// U groups per load (U·MT·2 16-byte loads per thread), double-buffered.
template <bool HAS_M, int MT, int U>
__device__ __forceinline__ void mma_gemv(const uint4* __restrict__ codes,
                                         const u16* __restrict__ dsc, const u16* __restrict__ msc,
                                         const float* __restrict__ x, float* __restrict__ y,
                                         int rows, int k, int bf16) {
    const int C = k >> 5, G = k >> 7, P = MMA_PLANE(k);
    uint4* act = mma_smem;                    // [8][P]: (hi b0, hi b1, lo b0, lo b1)
    float* gsum = (float*)(mma_smem + 8 * P); // [G]: Σ (hi + lo) per group
    float* red = gsum + G;                    // [MMA_WARPS][MT·16]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    // Blocks take tiles of 16·MT weight rows in turn (a grid of at most one wave: the
    // activations are staged once per block, and the next tile's first codes are requested
    // before the warps' outputs are summed).
    const int tiles = (rows + 16 * MT - 1) / (16 * MT);
    int tile = blockIdx.x;
    // Weight rows of this thread (g and g + 8 of each tile), clamped so that loads stay inside
    // the matrix; rows past the end are computed and not stored.
    int row[MT][2];
    // The first register buffer (double_buffered has the second).
    uint4 wa[U][MT][2];
    float da[U][MT][2], ma[U][MT][2];
    auto first_loads = [&](int tl) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                row[mt][e] = min(rows - 1, tl * 16 * MT + 16 * mt + g + 8 * e);
        if (gb < ge) mma_load<HAS_M, MT, U>(wa, da, ma, codes, dsc, msc, row, gb, G, C, t);
    };
    if (tile < tiles) first_loads(tile);

    stage_x<HAS_M>(x, act, gsum, P, k, bf16, lane);

    const uint2* act2 = (const uint2*)act;
    for (; tile < tiles; tile += gridDim.x) {
        // yv[mt][e]: the output of row g + 8e of tile mt (valid in lanes t = 0: columns 0 and
        // 1 of the mma are x's hi and lo; the other columns repeat them and are not read).
        float yv[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) yv[mt][0] = yv[mt][1] = 0.0f;
        double_buffered<HAS_M, MT, U>(
            wa, da, ma, codes, dsc, msc, row, gb, ge, G, C, t,
            [&](const uint4(&w)[MT][2], const float(&d)[MT][2], const float(&m)[MT][2], int grp) {
                mma_group<HAS_M, MT>(yv, w, d, m, act2, gsum, P, grp, g, t);
            });
        if (tile + (int)gridDim.x < tiles) first_loads(tile + gridDim.x);
        if (t == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int e = 0; e < 2; e++) red[warp * 16 * MT + 16 * mt + g + 8 * e] = yv[mt][e];
        }
        __syncthreads();
        if (threadIdx.x < 16 * MT) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 * MT + threadIdx.x];
            int r = tile * 16 * MT + threadIdx.x;
            if (r < rows) y[r] = s;
        }
        __syncthreads();
    }
}

#define MMA_KERNEL(name, HAS_M, MT, U)                                                          \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                   \
        name(const uint4* codes, const u16* dsc, const u16* msc, const float* x, float* y,      \
             int rows, int k, int bf16) {                                                       \
        mma_gemv<HAS_M, MT, U>(codes, dsc, msc, x, y, rows, k, bf16);                          \
    }

// One tile of 16 rows per block pass: with a grid of one wave, more tiles per block would only
// lower occupancy (registers) without saving staging. Two buffers of 2 groups: 2–4 groups of
// codes in flight per thread.
MMA_KERNEL(mma_u4, false, 1, 2)
MMA_KERNEL(mma_u4m, true, 1, 2)

// ---- One row, "wide" variants (decision 139) -------------------------------------------------
// mma_gemv's tiles, k order, staging and fixed-order sums, with two changes that the H200
// run chooses between (the reference mma_u4/mma_u4m above stay as they are):
// - U groups of codes per register buffer (U = 4: up to 8 groups, 256 bytes per thread, in
//   flight, against 4 groups for the reference), so that a warp's whole share of a
//   4096-wide row (4 groups) is requested at once;
// - up to 3 matrices of the same width that read the same x (q/k/v, gate/up) in one launch:
//   their tiles of 16 rows are numbered one after the other (matrix 0's, then 1's, then 2's),
//   x is staged once per block for all of them, and y holds their outputs back to back
//   (matrix j's row r at y[r0 + … + r(j−1) + r]). Fewer launches, and a larger grid of tiles
//   that the one wave of blocks shares more evenly. One matrix: r1 = r2 = 0.

struct MmaMat {
    const uint4* codes;
    const u16* d;
    const u16* m;
    int rows;   // weight rows of this matrix
    int tile;   // tile within this matrix
    int ybase;  // index of its row 0 in y
};

__device__ __forceinline__ MmaMat mma_pick(int tile, const uint4* c0, const u16* d0,
                                           const u16* m0, const uint4* c1, const u16* d1,
                                           const u16* m1, const uint4* c2, const u16* d2,
                                           const u16* m2, int r0, int r1, int r2) {
    const int t0 = (r0 + 15) >> 4, t1 = t0 + ((r1 + 15) >> 4);
    MmaMat s;
    if (tile < t0) {
        s.codes = c0, s.d = d0, s.m = m0, s.rows = r0, s.tile = tile, s.ybase = 0;
    } else if (tile < t1) {
        s.codes = c1, s.d = d1, s.m = m1, s.rows = r1, s.tile = tile - t0, s.ybase = r0;
    } else {
        s.codes = c2, s.d = d2, s.m = m2, s.rows = r2, s.tile = tile - t1, s.ybase = r0 + r1;
    }
    return s;
}

template <bool HAS_M, int U>
__device__ __forceinline__ void mma_gemv_wide(const uint4* c0, const u16* d0, const u16* m0,
                                              const uint4* c1, const u16* d1, const u16* m1,
                                              const uint4* c2, const u16* d2, const u16* m2,
                                              const float* __restrict__ x,
                                              float* __restrict__ y, int r0, int r1, int r2,
                                              int k, int bf16) {
    const int C = k >> 5, G = k >> 7, P = MMA_PLANE(k);
    uint4* act = mma_smem;                    // as mma_gemv
    float* gsum = (float*)(mma_smem + 8 * P);
    float* red = gsum + G;                    // [MMA_WARPS][16]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    int tile = blockIdx.x;
    int row[1][2];
    uint4 wa[U][1][2];
    float da[U][1][2], ma[U][1][2];
    MmaMat cur;
    // The matrix, rows (clamped inside it) and first U groups' codes of tile `tl`.
    auto first_loads = [&](int tl) -> MmaMat {
        MmaMat s = mma_pick(tl, c0, d0, m0, c1, d1, m1, c2, d2, m2, r0, r1, r2);
#pragma unroll
        for (int e = 0; e < 2; e++) row[0][e] = min(s.rows - 1, s.tile * 16 + g + 8 * e);
        if (gb < ge) mma_load<HAS_M, 1, U>(wa, da, ma, s.codes, s.d, s.m, row, gb, G, C, t);
        return s;
    };
    if (tile < tiles) cur = first_loads(tile);

    stage_x<HAS_M>(x, act, gsum, P, k, bf16, lane);

    const uint2* act2 = (const uint2*)act;
    for (; tile < tiles; tile += gridDim.x) {
        float yv[1][2] = {{0.0f, 0.0f}};
        double_buffered<HAS_M, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                mma_group<HAS_M, 1>(yv, w, d, m, act2, gsum, P, grp, g, t);
            });
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) cur = first_loads(tile + gridDim.x);
        if (t == 0) {
            red[warp * 16 + g] = yv[0][0];
            red[warp * 16 + g + 8] = yv[0][1];
        }
        __syncthreads();
        if (threadIdx.x < 16) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
            const int r = done.tile * 16 + threadIdx.x;
            if (r < done.rows) y[done.ybase + r] = s;
        }
        __syncthreads();
    }
}

#define MMA_WIDE_KERNEL(name, HAS_M, U, BLOCKS)                                                 \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,     \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,      \
             float* y, int r0, int r1, int r2, int k, int bf16) {                               \
        mma_gemv_wide<HAS_M, U>(c0, d0, m0, c1, d1, m1, c2, d2, m2, x, y, r0, r1, r2, k, bf16); \
    }

// Blocks per SM asked of ptxas (registers ≤ 65536 / (256 · BLOCKS)), from NVRTC 13.2's
// ptxas -v for sm_90: symmetric U = 2 keeps the reference's 3 blocks (24 warps) at 80
// registers (8 bytes spilled, to L1); U = 4 holds twice the codes per thread in 2 blocks
// (128 registers, no spill). With offsets, asking for more than 1 block spills 64–120
// bytes, so they are left at what they need (110 and 167 registers: 2 and 1 blocks).
MMA_WIDE_KERNEL(mma_u4_w2, false, 2, 3)
MMA_WIDE_KERNEL(mma_u4m_w2, true, 2, 1)
MMA_WIDE_KERNEL(mma_u4_w4, false, 4, 2)
MMA_WIDE_KERNEL(mma_u4m_w4, true, 4, 1)

// ---- 2–32 activation rows ---------------------------------------------------------------------
// The same tiles, k order and scale terms, with the hi/lo B registers of every row prepared
// once per product by mma_split_acts into a global buffer in register order (a warp's 32
// 8-byte reads are 256 contiguous bytes), read through L1. The mma's 8 columns hold 4 rows'
// hi and lo (column 2j + part), so NT n-tiles cover 4·NT rows per pass; each thread's
// dequantized A registers serve all NT n-tiles of a step, and MT tiles of 16 weight rows share
// each B read. More rows than 4·NT run in passes that re-read the tile's codes (from L2).

// x [n][k] → frag (uint2) [⌈n/4⌉][8][k/32][8] and gsum [n][k/128] (Σ(hi + lo) per group). One
// thread per float4 of x; whole warps share a row's group (k/4 is a multiple of 32).
extern "C" __global__ void mma_split_acts(const float4* __restrict__ x, uint2* __restrict__ frag,
                                          float* __restrict__ gsum, int n, int k, int bf16) {
    const int C = k >> 5, G = k >> 7, K4 = k >> 2;
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)n * K4) return;  // whole warps
    const int j = (int)(idx / K4), i = (int)(idx % K4);
    uint4 regs;
    float s = split_hi_lo(x[idx], bf16, regs);
    uint2* at = frag + ((size_t)((j >> 2) * 8 + (i & 7)) * C + (i >> 3)) * 8 + 2 * (j & 3);
    at[0] = make_uint2(regs.x, regs.y);
    at[1] = make_uint2(regs.z, regs.w);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) gsum[(size_t)j * G + (i >> 5)] = s;
}

// One group of 128 weights (8 mma steps) for MT tiles × NT n-tiles, added to yv with its
// scale terms. The A registers of a step are dequantized once for all NT n-tiles.
template <bool HAS_M, int MT, int NT>
__device__ __forceinline__ void gemm_group(float (&yv)[MT][NT][2], const uint4 (&w)[MT][2],
                                           const float (&d)[MT][2], const float (&m)[MT][2],
                                           const uint2* __restrict__ frag,
                                           const float* __restrict__ gsum, u32 mask, int p,
                                           int ntiles, int n, int C, int G, int grp, int g,
                                           int t) {
    const int OFF = HAS_M ? 0 : 8;
    const int c0 = 4 * grp;
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
#pragma unroll
    for (int s = 0; s < 8; s++) {
        const int q = s & 3, sh = 4 * (s >> 2);
        u32 a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            u32 w0 = word(w[mt][0], q), w1 = word(w[mt][1], q);
            a[mt][0] = nibbles_bf16<OFF>(w0 >> sh, mask);
            a[mt][1] = nibbles_bf16<OFF>(w1 >> sh, mask);
            a[mt][2] = nibbles_bf16<OFF>(w0 >> (8 + sh), mask);
            a[mt][3] = nibbles_bf16<OFF>(w1 >> (8 + sh), mask);
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int ntile = p * NT + nt;
            if (ntile < ntiles) {  // the same in every lane
                uint2 b = __ldg(frag + ((size_t)(ntile * 8 + s) * C + c0 + t) * 8 + g);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    mma_bf16(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b.x, b.y);
            }
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int j = min(n - 1, 4 * (p * NT + nt) + t);
        const float sx = HAS_M ? __ldg(gsum + (size_t)j * G + grp) : 0.0f;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                yv[mt][nt][e] += d[mt][e] * (acc[mt][nt][2 * e] + acc[mt][nt][2 * e + 1]);
                if (HAS_M) yv[mt][nt][e] += m[mt][e] * sx;
            }
    }
}

// Each warp's groups U at a time, the next U groups' codes requested before the current ones
// are multiplied (two register buffers).
template <bool HAS_M, int MT, int NT, int U>
__device__ __forceinline__ void mma_gemm(const uint4* __restrict__ codes,
                                         const u16* __restrict__ dsc, const u16* __restrict__ msc,
                                         const uint2* __restrict__ frag,
                                         const float* __restrict__ gsum, float* __restrict__ y,
                                         int rows, int k, int n) {
    __shared__ float red[MMA_WARPS][16 * MT * 4 * NT];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = (rows + 16 * MT - 1) / (16 * MT);
    const int ntiles = (n + 3) >> 2, passes = (ntiles + NT - 1) / NT;
    u32 mask = 0x000f000fu;
    asm volatile("" : "+r"(mask));
    for (int item = blockIdx.x; item < tiles * passes; item += gridDim.x) {
        const int tile = item / passes, p = item % passes;
        int row[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                row[mt][e] = min(rows - 1, tile * 16 * MT + 16 * mt + g + 8 * e);
        // yv[mt][nt][e]: row g + 8e of tile mt, activation row 4·(p·NT + nt) + t.
        float yv[MT][NT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) yv[mt][nt][0] = yv[mt][nt][1] = 0.0f;
        uint4 wa[U][MT][2];
        float da[U][MT][2], ma[U][MT][2];
        if (gb < ge) mma_load<HAS_M, MT, U>(wa, da, ma, codes, dsc, msc, row, gb, G, C, t);
        double_buffered<HAS_M, MT, U>(
            wa, da, ma, codes, dsc, msc, row, gb, ge, G, C, t,
            [&](const uint4(&w)[MT][2], const float(&d)[MT][2], const float(&m)[MT][2], int grp) {
                gemm_group<HAS_M, MT, NT>(yv, w, d, m, frag, gsum, mask, p, ntiles, n, C, G, grp,
                                          g, t);
            });
        // red[warp][jl · 16·MT + row in tile]
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    red[warp][(4 * nt + t) * 16 * MT + 16 * mt + g + 8 * e] = yv[mt][nt][e];
        __syncthreads();
        for (int o = threadIdx.x; o < 16 * MT * 4 * NT; o += MMA_THREADS) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp][o];
            const int r = tile * 16 * MT + o % (16 * MT), j = 4 * p * NT + o / (16 * MT);
            if (r < rows && j < n) y[(size_t)j * rows + r] = s;
        }
        __syncthreads();
    }
}

#define MMA_GEMM_KERNEL(name, HAS_M, MT, NT, U)                                                 \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                   \
        name(const uint4* codes, const u16* dsc, const u16* msc, const uint2* frag,             \
             const float* gsum, float* y, int rows, int k, int n) {                             \
        mma_gemm<HAS_M, MT, NT, U>(codes, dsc, msc, frag, gsum, y, rows, k, n);                \
    }

// Up to 4, 8 and 16 rows per pass (2 groups per buffer up to 8 rows). For 9–32 rows, `_n4`
// takes two tiles of weight rows per block, so that each B read feeds 2 mma (1 group of codes
// per buffer, for registers), when that still gives every SM two blocks; otherwise `_n4w`: one
// tile, 2 groups per buffer (the same codes in flight per warp, twice the blocks, twice the B
// reads per weight).
MMA_GEMM_KERNEL(mma_u4_n1, false, 1, 1, 2)
MMA_GEMM_KERNEL(mma_u4_n2, false, 1, 2, 2)
MMA_GEMM_KERNEL(mma_u4_n4, false, 2, 4, 1)
MMA_GEMM_KERNEL(mma_u4_n4w, false, 1, 4, 2)
MMA_GEMM_KERNEL(mma_u4m_n1, true, 1, 1, 2)
MMA_GEMM_KERNEL(mma_u4m_n2, true, 1, 2, 2)
MMA_GEMM_KERNEL(mma_u4m_n4, true, 2, 4, 1)
MMA_GEMM_KERNEL(mma_u4m_n4w, true, 1, 4, 2)

// ---- 2–16 activation rows, grouped (decision 144) --------------------------------------------
// mma_gemv_wide's tiles (up to 3 matrices of one width, numbered one after the other), split of
// the groups over the 8 warps and fixed-order sums, with the B registers of up to 4·NT rows
// read from mma_split_acts's buffer as gemm_group reads them (n-tile i: the mma's 8 columns
// are rows 4i..4i+3's hi and lo). Each thread's dequantized codes serve all NT n-tiles, so up
// to 4·NT rows cost one pass over the codes (at one row the wide kernel leaves 6 of the 8
// columns unused). y holds each matrix's [n][rows_j] output back to back (matrix j's at
// n·(r0 + … + r(j−1))).
//
// The tile walk of the grouped-rows kernels (bf16 at 2–16 rows, int8 at 2–32): tiles of 16
// weight rows of up to 3 matrices taken in turn (one wave of blocks), each warp's groups gb..ge
// of a tile double-buffered, the next tile's first codes requested before the warps' sums, and
// the 8 warps' partial outputs summed in a fixed order. `group(yv, w, d, m, grp)` adds one group
// of this thread's codes into yv[nt][e] (weight row g + 8e of the tile, activation row 4nt + t);
// y holds each matrix's [n][rows_j] output back to back (matrix j's at n·(r0 + … + r(j−1))).
// One launch takes every activation row (the kernels' NT covers up to 32).
template <bool HAS_M, int NT, int U, class F>
__device__ __forceinline__ void rows_wide(const uint4* c0, const u16* d0, const u16* m0,
                                          const uint4* c1, const u16* d1, const u16* m1,
                                          const uint4* c2, const u16* d2, const u16* m2,
                                          float* __restrict__ y, int r0, int r1, int r2, int k,
                                          int n, F group) {
    __shared__ float red[MMA_WARPS][4 * NT * 16];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    int tile = blockIdx.x;
    int row[1][2];
    uint4 wa[U][1][2];
    float da[U][1][2], ma[U][1][2];
    MmaMat cur;
    auto first_loads = [&](int tl) -> MmaMat {
        MmaMat s = mma_pick(tl, c0, d0, m0, c1, d1, m1, c2, d2, m2, r0, r1, r2);
#pragma unroll
        for (int e = 0; e < 2; e++) row[0][e] = min(s.rows - 1, s.tile * 16 + g + 8 * e);
        if (gb < ge) mma_load<HAS_M, 1, U>(wa, da, ma, s.codes, s.d, s.m, row, gb, G, C, t);
        return s;
    };
#if __CUDA_ARCH__ >= 900
    // Programmatic dependent launch (the int8 kernels under `cc+pdl`, decision 155; launched
    // without the attribute, both instructions do nothing): the first codes and scales, which
    // no kernel writes, are requested before waiting for the previous kernel (the activation
    // split) to finish; its outputs and y are touched only after the wait.
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    if (tile < tiles) cur = first_loads(tile);
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    for (; tile < tiles; tile += gridDim.x) {
        float yv[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) yv[nt][0] = yv[nt][1] = 0.0f;
        double_buffered<HAS_M, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                group(yv, w, d, m, grp);
            });
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) cur = first_loads(tile + gridDim.x);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            red[warp][(4 * nt + t) * 16 + g] = yv[nt][0];
            red[warp][(4 * nt + t) * 16 + g + 8] = yv[nt][1];
        }
        __syncthreads();
        for (int o = threadIdx.x; o < 4 * NT * 16; o += MMA_THREADS) {
            const int j = o >> 4, r = done.tile * 16 + (o & 15);
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp][o];
            if (j < n && r < done.rows)
                y[(size_t)n * done.ybase + (size_t)j * done.rows + r] = s;
        }
        __syncthreads();
    }
}

// The bf16 inner product (gemm_group) over rows_wide's tiles.
template <bool HAS_M, int NT, int U>
__device__ __forceinline__ void mma_gemm_wide(const uint4* c0, const u16* d0, const u16* m0,
                                              const uint4* c1, const u16* d1, const u16* m1,
                                              const uint4* c2, const u16* d2, const u16* m2,
                                              const uint2* __restrict__ frag,
                                              const float* __restrict__ gsum,
                                              float* __restrict__ y, int r0, int r1, int r2,
                                              int k, int n) {
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int ntiles = (n + 3) >> 2;
    u32 mask = 0x000f000fu;
    asm volatile("" : "+r"(mask));
    rows_wide<HAS_M, NT, U>(
        c0, d0, m0, c1, d1, m1, c2, d2, m2, y, r0, r1, r2, k, n,
        [&](float(&yv)[NT][2], const uint4(&w)[1][2], const float(&d)[1][2],
            const float(&m)[1][2], int grp) {
            gemm_group<HAS_M, 1, NT>(reinterpret_cast<float(&)[1][NT][2]>(yv), w, d, m, frag,
                                     gsum, mask, 0, ntiles, n, C, G, grp, g, t);
        });
}

#define MMA_GEMM_WIDE_KERNEL(name, HAS_M, NT, U, BLOCKS)                                        \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,     \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const uint2* frag,   \
             const float* gsum, float* y, int r0, int r1, int r2, int k, int n) {               \
        mma_gemm_wide<HAS_M, NT, U>(c0, d0, m0, c1, d1, m1, c2, d2, m2, frag, gsum, y, r0, r1, \
                                    r2, k, n);                                                  \
    }

// Up to 4, 8 and 16 rows. Blocks per SM asked of ptxas from NVRTC 13.2's ptxas -v for sm_90
// (no spills): 4 rows symmetric 2 (3 spills 84 bytes; 2 measured 1% faster in
// bench/gpu/gemv_lab), the others what they need.
MMA_GEMM_WIDE_KERNEL(mma_u4_g4, false, 1, 2, 2)
MMA_GEMM_WIDE_KERNEL(mma_u4m_g4, true, 1, 2, 1)
MMA_GEMM_WIDE_KERNEL(mma_u4_g8, false, 2, 2, 2)
MMA_GEMM_WIDE_KERNEL(mma_u4m_g8, true, 2, 2, 1)
MMA_GEMM_WIDE_KERNEL(mma_u4_g16, false, 4, 2, 1)
MMA_GEMM_WIDE_KERNEL(mma_u4m_g16, true, 4, 2, 1)

// ---- 2–32 activation rows on the int8 tensor cores (decision 155) -----------------------------
// mma_gemm_wide's tiles, split of the groups over the 8 warps and fixed-order sums, with an
// integer inner product in place of the bf16 one (the `cc` variants' kernels at 2–32 rows):
// - mma_split_i8 quantizes x per row and group of 128 to 15 bits as act.rs does per 32
//   (q = rint(x·16256/amax), a = q >> 7 and b = q & 127 as int8 planes, q = 128·a + b), with
//   the group's step dx and 8·Σq. Per 128, not 32: one mma sums 32 k of four lanes' chunks (the
//   free k order below), so a step per chunk would not factor out of it. The outputs therefore
//   differ from the CPU kernel's by x's quantization (≤ 2^-15 of the group's largest |x| per
//   element), not by bits; gpu_packed check holds them to 1e-3 of the largest output.
// - mma.m16n8k32 u8 × s8 → s32: A = the tile's 16 weight rows as bytes u (0..15), B's 8
//   columns = 4 activation rows × their 2 planes (column 2j + p: row j, plane p). The k order
//   inside a group is free (both operands follow it): thread t of a quad holds the group's chunk
//   t (mma_load, as the bf16 kernels); in mma j it supplies word j's low nibbles (a0/a1: k = 32t
//   + 4j + 0..3) and high nibbles (a2/a3: k = 32t + 16 + 4j + 0..3), and its B registers are
//   words j of its 32 bytes [32t, 32t + 32) of the plane, one 16-byte read per half.
// - The group's 4 mma accumulate in s32 (|128·Σu·a + Σu·b| ≤ 15·16256·128 < 2^31), so one scale
//   step per group: Σ(u − 8)·q = 128·Σu·a + Σu·b − 8·Σq, y += (d·dx)·that in f32.
// Against the bf16 kernels: 4 mma per group and n-tile instead of 8, a lop3 (and a shift) per 4
// codes instead of a lop3 and an fma per 2, half the B bytes (H200 lab, s36: 1.21–1.57× faster
// at 4–16 rows). Symmetric codes only (offsets keep the bf16 kernels).

__device__ __forceinline__ void mma_i8(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                       u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// x [n][k] → planes [n][k/128][2][128] bytes (a, then b) and dq [n][k/128] = (dx as bits,
// 8·Σq). One warp per (row, group): lane l holds elements 4l..4l+3 of the group. A zero or
// non-finite amax gives a zero group, as act.rs.
// `frag` (for mma_i8x_g*, decision 157): each (row, group)'s 64 words in the swapped kernel's
// fragment order instead, so that lane t's A registers for its mma j are one 16-byte load and
// a quad's four loads for mma j are 64 contiguous bytes: word 16j + 4t + q holds, for q = 0, 1,
// 2, 3, plane a word 8t + j, plane b word 8t + j, plane a word 8t + 4 + j, plane b word 8t + 4
// + j (the same bytes, placed; s38 measured 16t + 4j + q, which spreads a quad's loads over two
// 128-byte lines, 5–15% slower than the unordered planes).
// Lane l's part of mma_split_i8 for row j's group grp (the warp holds the whole group, lane l
// elements 4l..4l+3 in v): quantizes the group and stores its planes and (dx, 8·Σq). A kernel
// that computes x itself can call it on its own values instead of a split launch (s39's lab12).
__device__ __forceinline__ void split_group4(float4 v, int bf16, u32* __restrict__ planes,
                                             int2* __restrict__ dq, int j, int grp, int G, int l,
                                             int frag) {
    float amax;
    const float4 f = act_read4(v, bf16, &amax);  // packed.cu, as cc.cu's cc_stage
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float d = act_step(amax, &inv);
    u32 pa, pb;
    int s = act_planes4(f, inv, &pa, &pb);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    u32* at = planes + ((size_t)j * G + grp) * 64;
    if (frag) {
        // word l = 8t + jj of each plane: jj < 4 → q = 0 / 1 of slot j = jj, else q = 2 / 3 of jj − 4
        const int t = l >> 3, jj = l & 7;
        ((uint2*)at)[8 * (jj & 3) + 2 * t + (jj >> 2)] = make_uint2(pa, pb);
    } else {
        at[l] = pa;
        at[32 + l] = pb;
    }
    if (l == 0) dq[(size_t)j * G + grp] = make_int2(__float_as_int(d), 8 * s);
}

extern "C" __global__ void mma_split_i8(const float4* __restrict__ x, u32* __restrict__ planes,
                                        int2* __restrict__ dq, int n, int k, int bf16,
                                        int frag) {
#if __CUDA_ARCH__ >= 900
    // With the programmatic-serialization attribute (the `cc+pdl` variant): let the product
    // kernel after this one start and request its codes, and wait for the kernel before this
    // one (which wrote x) before reading x or writing the planes. Without it, both do nothing.
    asm volatile("griddepcontrol.launch_dependents;");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    const int K4 = k >> 2, G = k >> 7;
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)n * K4) return;  // whole warps (K4 is a multiple of 32)
    const int j = (int)(idx / K4), i = (int)(idx % K4);
    split_group4(x[idx], bf16, planes, dq, j, i >> 5, G, i & 31, frag);
}

// One group for NT n-tiles, added to yv[nt][e] (weight row g + 8e of the tile, activation row
// 4nt + t). `mask` is 0x0f0f0f0f held in a register.
template <int NT>
__device__ __forceinline__ void i8_group(float (&yv)[NT][2], const uint4 (&w)[2],
                                         const float (&d)[2], const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, u32 mask, int n, int G,
                                         int grp, int g, int t) {
    u32 lo[2][4], hi[2][4];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const u32 W[4] = {w[e].x, w[e].y, w[e].z, w[e].w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            lo[e][j] = W[j] & mask;
            hi[e][j] = (W[j] >> 4) & mask;
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        if (4 * nt < n) {  // the same in every lane
            // B column g: activation row 4nt + g/2 (clamped: padding columns are never read),
            // plane g & 1; this thread's bytes [32t, 32t + 32) of it.
            const int rb = min(n - 1, 4 * nt + (g >> 1));
            const uint4* src = planes + ((size_t)rb * G + grp) * 16 + (g & 1) * 8 + 2 * t;
            const uint4 b0 = __ldg(src), b1 = __ldg(src + 1);
            int c[4] = {0, 0, 0, 0};
            mma_i8(c, lo[0][0], lo[1][0], hi[0][0], hi[1][0], b0.x, b1.x);
            mma_i8(c, lo[0][1], lo[1][1], hi[0][1], hi[1][1], b0.y, b1.y);
            mma_i8(c, lo[0][2], lo[1][2], hi[0][2], hi[1][2], b0.z, b1.z);
            mma_i8(c, lo[0][3], lo[1][3], hi[0][3], hi[1][3], b0.w, b1.w);
            // c0/c1: weight row g, columns 2t and 2t + 1 = activation row 4nt + t's planes a
            // and b; c2/c3: weight row g + 8.
            const int2 q = __ldg(dq + (size_t)min(n - 1, 4 * nt + t) * G + grp);
            const float dx = __int_as_float(q.x);
            yv[nt][0] += (d[0] * dx) * (float)(128 * c[0] + c[1] - q.y);
            yv[nt][1] += (d[1] * dx) * (float)(128 * c[2] + c[3] - q.y);
        }
    }
}

// The int8 inner product (i8_group) over rows_wide's tiles (symmetric codes).
template <int NT, int U>
__device__ __forceinline__ void i8_gemm_wide(const uint4* c0, const u16* d0, const uint4* c1,
                                             const u16* d1, const uint4* c2, const u16* d2,
                                             const uint4* __restrict__ planes,
                                             const int2* __restrict__ dq, float* __restrict__ y,
                                             int r0, int r1, int r2, int k, int n) {
    const int G = k >> 7;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    rows_wide<false, NT, U>(
        c0, d0, d0, c1, d1, d1, c2, d2, d2, y, r0, r1, r2, k, n,
        [&](float(&yv)[NT][2], const uint4(&w)[1][2], const float(&d)[1][2],
            const float(&m)[1][2], int grp) {
            i8_group<NT>(yv, w[0], d[0], planes, dq, mask, n, G, grp, g, t);
        });
}

#define MMA_I8_KERNEL(name, NT, U)                                                              \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                   \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8_gemm_wide<NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }

// Up to 4 rows (5–32: mma_i8x_g* below; s36 measured this body at 8, 16 and 32 rows: 78.4,
// 103.6 and 186.4 µs per 8B-shaped block, against 71.7, 97.4 and 129.6 for mma_i8x_g*, s37).
MMA_I8_KERNEL(mma_i8_g4, 1, 2)

// ---- 5–32 activation rows, operands swapped (decision 156) -------------------------------------
// mma_i8_g* put 16 weight rows in the mma's A and 4 activation rows × 2 planes in B, so each lane
// re-reads x's planes for every 16 weight rows: at 16 rows 4× the codes' bytes pass through
// L1TEX, where ncu found the warps waiting (75% busy in gate+up). Here A = 8 activation rows ×
// their 2 planes (A row g: plane a of activation row 8s + g; row g + 8: its plane b) and B = 8
// weight rows (column g: weight row g of a slab), so one load of a group's planes feeds SL = 4
// slabs: a block tile of 32 weight rows, the planes' bytes per code down 4× at any row count.
// - The same planes' bytes and (dx, 8·Σq) as mma_i8_g* (mma_split_i8), the same free k order
//   (lane t supplies chunk t of the group; in mma j, word j's low nibbles fill B's k slots 4t..,
//   its high nibbles 16 + 4t.., and A's registers are words j of the lane's 32 plane bytes), the
//   same integer sums per group, one f32 scale step per group: outputs equal mma_i8_g*'s up to
//   the f32 order of the warps' sums (lab: max |Δ| 0 at 32 rows).
// - The planes come split with `frag` (decision 157): mma j's four A registers are one 16-byte
//   load at word 16j + 4t, not four words of four loads, which ptxas had to copy into a register
//   quad before every mma (~3 moves per IMMA; 21% fewer instructions issued without them).
// - A is signed (plane a), B the unsigned codes: mma .s8.u8. D rows g / g + 8 are activation row
//   8s + g's planes a / b, columns 2t, 2t + 1 weight rows 2t, 2t + 1 of the slab.
// - W warps split a tile's groups and sum in a fixed order (as rows_wide); each warp requests
//   its next group's codes, scale and planes together before multiplying the current one.
// - Scales (decision 157): lane l loads tile row l's (one 2-byte load per group, not eight with
//   their own addresses) and the lanes take theirs by __shfl_sync; row pointers once per tile.
//   With the planes a group ahead, s38's lab: 8 / 16 / 32 rows 64.6 / 85.8 / 126.7 µs per block
//   against 71.3 / 88.6 / 131.7 (outputs bit-identical).
// - Programmatic dependent launch as rows_wide: the first codes before `griddepcontrol.wait`.
// Lab (s37, µs per 8B block): 8 rows 71.7 against 79.7; 16 rows 97.4 against 105.9; 32 rows
// 129.6 against 188.1; s38, with decision 157's changes: 63.2, 84.6, 124.3 (against 69.2, 91.5,
// 126.6 for s37's bodies in the same run). NA activation sets of 8 rows: 1, 2, 4.

__device__ __forceinline__ void mma_s8u8(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                         u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#define I8X_SLABS 4
#define I8X_ROWS (8 * I8X_SLABS)  // weight rows per block tile (packed/mma/grouped.rs: 32)

template <int NA, int W>
__device__ __forceinline__ void i8x_gemm(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int n) {
    constexpr int SL = I8X_SLABS, RT = I8X_ROWS;
    __shared__ float red[W][8 * NA * RT];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + W - 1) / W;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int t0 = (r0 + RT - 1) / RT, t1 = t0 + (r1 + RT - 1) / RT;
    const int tiles = t1 + (r2 + RT - 1) / RT;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    // This lane's activation rows 8a + g (clamped: padding rows are computed and not stored):
    // their planes (fragment order, quad t) and (dx, 8·Σq) per group.
    const uint4* prow[NA];
    const int2* qrow[NA];
#pragma unroll
    for (int a = 0; a < NA; a++) {
        const int ar = min(n - 1, 8 * a + g);
        prow[a] = planes + (size_t)ar * G * 16 + t;
        qrow[a] = dq + (size_t)ar * G;
    }
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    // One group's operands, all requested together a group ahead of their multiply.
    struct Grp {
        uint4 w[SL];     // codes of weight row 8s + g of the tile, the group's chunk t
        float dl;        // the group's scale of tile row `lane` (shuffled to the lanes using it)
        uint4 fa[NA][4]; // mma j's A registers for activation set a
        float dx[NA];
        int sq[NA];
    };
    bool waited = false;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        if (tile < t0) {
            codes = c0, dsc = d0, rows = r0, tl = tile, ybase = 0;
        } else if (tile < t1) {
            codes = c1, dsc = d1, rows = r1, tl = tile - t0, ybase = r0;
        } else {
            codes = c2, dsc = d2, rows = r2, tl = tile - t1, ybase = r0 + r1;
        }
        // Row pointers once per tile (clamped: the tail's extra rows are computed, not stored).
        const uint4* crow[SL];
#pragma unroll
        for (int s = 0; s < SL; s++)
            crow[s] = codes + (size_t)min(rows - 1, tl * RT + 8 * s + g) * C + t;
        const u16* drow = dsc + (size_t)min(rows - 1, tl * RT + lane) * G;
        auto codes_of = [&](Grp& b, int gg) {
#pragma unroll
            for (int s = 0; s < SL; s++) b.w[s] = load_codes(crow[s] + 4 * gg);
            b.dl = f16_to_f32(__ldg(drow + gg));
        };
        auto planes_of = [&](Grp& b, int gg) {
#pragma unroll
            for (int a = 0; a < NA; a++) {
#pragma unroll
                for (int j = 0; j < 4; j++) b.fa[a][j] = __ldg(prow[a] + (size_t)gg * 16 + 4 * j);
                const int2 q = __ldg(qrow[a] + gg);
                b.dx[a] = __int_as_float(q.x);
                b.sq[a] = q.y;
            }
        };
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        auto mult = [&](const Grp& b) {
#pragma unroll
            for (int s = 0; s < SL; s++) {
                // the scales of weight rows 8s + 2t, 8s + 2t + 1 (D's columns 2t, 2t + 1)
                float d[2];
#pragma unroll
                for (int e = 0; e < 2; e++) d[e] = __shfl_sync(0xffffffffu, b.dl, 8 * s + 2 * t + e);
                int c[NA][4];
#pragma unroll
                for (int a = 0; a < NA; a++) c[a][0] = c[a][1] = c[a][2] = c[a][3] = 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 b0 = word(b.w[s], j) & mask, b1 = (word(b.w[s], j) >> 4) & mask;
#pragma unroll
                    for (int a = 0; a < NA; a++)
                        mma_s8u8(c[a], b.fa[a][j].x, b.fa[a][j].y, b.fa[a][j].z, b.fa[a][j].w, b0,
                                 b1);
                }
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] +=
                            (d[e] * b.dx[a]) * (float)(128 * c[a][e] + c[a][2 + e] - b.sq[a]);
            }
        };
        Grp ga, gn;
        if (gb < ge) codes_of(ga, gb);
        if (!waited) {
#if __CUDA_ARCH__ >= 900
            // Codes and scales only above (no kernel writes them); the planes, dq and y after.
            asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
            waited = true;
        }
        if (gb < ge) planes_of(ga, gb);
        for (int gg = gb; gg < ge; gg += 2) {
            if (gg + 1 < ge) codes_of(gn, gg + 1), planes_of(gn, gg + 1);
            mult(ga);
            if (gg + 1 < ge) {
                if (gg + 2 < ge) codes_of(ga, gg + 2), planes_of(ga, gg + 2);
                mult(gn);
            }
        }
        // red[warp][activation row · RT + row in tile], summed over the warps in order.
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    red[warp][(8 * a + g) * RT + 8 * s + 2 * t + e] = acc[s][a][e];
        __syncthreads();
        for (int o = threadIdx.x; o < 8 * NA * RT; o += (W * 32)) {
            const int j = o / RT, r = tl * RT + o % RT;
            float sum = 0.0f;
#pragma unroll
            for (int wp = 0; wp < W; wp++) sum += red[wp][o];
            if (j < n && r < rows) y[(size_t)n * ybase + (size_t)j * rows + r] = sum;
        }
        __syncthreads();
    }
}

#define MMA_I8X_KERNEL(name, NA, W, BLOCKS)                                                     \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8x_gemm<NA, W>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);               \
    }

// 5–8, 9–16 and 17–32 rows: (warps per block, blocks per SM). 8 warps at every row count, so
// the warps split a tile's groups alike and a row's output does not depend on how many rows
// (5–32) share the launch. s38 ran 12 warps at 16 rows (s37's lab: 93.5 against 98.5 µs per
// 8B block for 8); they sum in another f32 order, and a near-tie token flipped under `serve`.
// After decision 157's changes s38's lab measured the two as fast (85.80 and 86.12 µs). 8 rows: 2 blocks per SM at 128 registers; 16 and 32 rows: 1
// block (12 warps at 32 rows spill: 191.5 against 132.1 µs). packed/mma/grouped.rs launches
// them with `I8X_THREADS`.
MMA_I8X_KERNEL(mma_i8x_g8, 1, 8, 2)
MMA_I8X_KERNEL(mma_i8x_g16, 2, 8, 1)
MMA_I8X_KERNEL(mma_i8x_g32, 4, 8, 1)

#endif  // __CUDA_ARCH__ >= 800
