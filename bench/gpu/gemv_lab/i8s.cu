// ---- candidate (s36, decision 155 follow-up): rows_wide (packed/mma.cu) with SLOTS tiles per
// block pass. The 8 warps are SLOTS tile slots × (8 / SLOTS) group slices, instead of one tile ×
// 8 slices, so SLOTS warps read the same group's activation planes at about the same time and
// all but the first find them in L1. At 16 rows those reads are 4× the codes' bytes and, with
// one tile per pass, come from L2. Same sums per tile as rows_wide (each tile's partial outputs
// summed over its slices in a fixed order), so outputs equal mma_i8_g16's up to the f32 order.
template <int SLOTS, int NT, int U, class F>
__device__ __forceinline__ void rows_slots(const uint4* c0, const u16* d0, const uint4* c1,
                                           const u16* d1, const uint4* c2, const u16* d2,
                                           float* __restrict__ y, int r0, int r1, int r2, int k,
                                           int n, F group) {
    constexpr int WS = MMA_WARPS / SLOTS;  // group slices per tile
    __shared__ float red[MMA_WARPS][4 * NT * 16];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int slot = warp / WS, ws = warp % WS;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + WS - 1) / WS;
    const int gb = min(G, ws * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int passes = (tiles + SLOTS * gridDim.x - 1) / (SLOTS * gridDim.x);
    int row[1][2];
    uint4 wa[U][1][2];
    float da[U][1][2], ma[U][1][2];
    MmaMat cur;
    auto first_loads = [&](int tl) -> MmaMat {
        MmaMat s = mma_pick(min(tl, tiles - 1), c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
#pragma unroll
        for (int e = 0; e < 2; e++) row[0][e] = min(s.rows - 1, s.tile * 16 + g + 8 * e);
        if (gb < ge) mma_load<false, 1, U>(wa, da, ma, s.codes, s.d, s.m, row, gb, G, C, t);
        return s;
    };
    // Pass p: this slot's tile is (p·gridDim.x + blockIdx.x)·SLOTS + slot (past the end: the
    // last tile again, computed and not stored, so every warp reaches the barriers).
    int tile = blockIdx.x * SLOTS + slot;
    cur = first_loads(tile);
    for (int p = 0; p < passes; p++, tile += gridDim.x * SLOTS) {
        float yv[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) yv[nt][0] = yv[nt][1] = 0.0f;
        double_buffered<false, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                group(yv, w, d, m, grp);
            });
        const MmaMat done = cur;
        const bool store = tile < tiles;
        if (p + 1 < passes) cur = first_loads(tile + gridDim.x * SLOTS);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            red[warp][(4 * nt + t) * 16 + g] = yv[nt][0];
            red[warp][(4 * nt + t) * 16 + g + 8] = yv[nt][1];
        }
        __syncthreads();
        // Slot sl's outputs: threads sum its WS slices' partials in order.
        for (int o = threadIdx.x; o < SLOTS * 4 * NT * 16; o += MMA_THREADS) {
            const int sl = o / (4 * NT * 16), oo = o % (4 * NT * 16);
            const int tl = tile - slot + sl;  // this pass's tile of slot sl
            if (tl < tiles) {
                const MmaMat m = mma_pick(tl, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
                const int j = oo >> 4, r = m.tile * 16 + (oo & 15);
                float s = 0.0f;
#pragma unroll
                for (int wp = 0; wp < WS; wp++) s += red[sl * WS + wp][oo];
                if (j < n && r < m.rows) y[(size_t)n * m.ybase + (size_t)j * m.rows + r] = s;
            }
        }
        (void)done;
        (void)store;
        __syncthreads();
    }
}
template <int SLOTS, int NT, int U>
__device__ __forceinline__ void i8s_wide(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int n) {
    const int G = k >> 7;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    rows_slots<SLOTS, NT, U>(
        c0, d0, c1, d1, c2, d2, y, r0, r1, r2, k, n,
        [&](float(&yv)[NT][2], const uint4(&w)[1][2], const float(&d)[1][2],
            const float(&m)[1][2], int grp) {
            i8_group<NT>(yv, w[0], d[0], planes, dq, mask, n, G, grp, g, t);
        });
}
#define I8S_KERNEL(name, SLOTS, NT, U)                                                         \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                  \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,  \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,     \
             int r2, int k, int n) {                                                           \
        i8s_wide<SLOTS, NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);       \
    }
I8S_KERNEL(i8s2_g16, 2, 4, 1)
I8S_KERNEL(i8s4_g16, 4, 4, 1)
I8S_KERNEL(i8s8_g16, 8, 4, 1)
I8S_KERNEL(i8s2_g8, 2, 2, 2)
I8S_KERNEL(i8s4_g8, 4, 2, 2)
I8S_KERNEL(i8s2_g4, 2, 1, 2)
I8S_KERNEL(i8s4_g4, 4, 1, 2)

// ---- s36 lab5: the runtime's int8 kernel body (i8_gemm_wide) at other shapes: 32 rows in one
// pass (NT = 8) and 1 group per buffer at 4 and 8 rows. Parameters as mma_i8_g* (s36 they
// also took ntot, j0 for passes of 16 rows; s37 dropped those with the passes).
#define I8R_KERNEL(name, NT, U)                                                                \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                  \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,  \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,     \
             int r2, int k, int n) {                                                           \
        i8_gemm_wide<NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);          \
    }
I8R_KERNEL(i8r_g32u1, 8, 1)
I8R_KERNEL(i8r_g4u1, 1, 1)
I8R_KERNEL(i8r_g8u1, 2, 1)

// ---- s36 lab6: MT tiles of 16 weight rows per warp pass (32 rows at MT = 2), so that each
// 32-byte read of x's planes feeds MT mma instead of one (the B reads per code halve); the groups
// are split over the 8 warps as in rows_wide. Symmetric codes; outputs as mma_i8_g*'s.
template <int MT, int NT, int U>
__device__ __forceinline__ void i8mt_wide(const uint4* c0, const u16* d0, const uint4* c1,
                                          const u16* d1, const uint4* c2, const u16* d2,
                                          const uint4* __restrict__ planes,
                                          const int2* __restrict__ dq, float* __restrict__ y,
                                          int r0, int r1, int r2, int k, int n) {
    __shared__ float red[MMA_WARPS][MT][4 * NT * 16];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int items = (tiles + MT - 1) / MT;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        MmaMat m[MT];
        int row[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            m[mt] = mma_pick(min(item * MT + mt, tiles - 1), c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
#pragma unroll
            for (int e = 0; e < 2; e++) row[mt][e] = min(m[mt].rows - 1, m[mt].tile * 16 + g + 8 * e);
        }
        float yv[MT][NT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) yv[mt][nt][0] = yv[mt][nt][1] = 0.0f;
        // One group at a time for the MT tiles, the next group's codes requested first.
        uint4 wa[MT][2], wb[MT][2];
        float da[MT][2], db[MT][2];
        auto load = [&](uint4 (&w)[MT][2], float (&d)[MT][2], int gg) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const size_t r = row[mt][e];
                    const uint4* cp = mt == 0 ? m[0].codes : m[mt].codes;
                    w[mt][e] = load_codes(m[mt].codes + r * C + 4 * gg + t);
                    d[mt][e] = f16_to_f32(__ldg(m[mt].d + r * G + gg));
                    (void)cp;
                }
        };
        auto mult = [&](const uint4 (&w)[MT][2], const float (&d)[MT][2], int grp) {
            u32 lo[MT][2][4], hi[MT][2][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const u32 W[4] = {w[mt][e].x, w[mt][e].y, w[mt][e].z, w[mt][e].w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        lo[mt][e][j] = W[j] & mask;
                        hi[mt][e][j] = (W[j] >> 4) & mask;
                    }
                }
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (4 * nt < n) {
                    const int rb = min(n - 1, 4 * nt + (g >> 1));
                    const uint4* src = planes + ((size_t)rb * G + grp) * 16 + (g & 1) * 8 + 2 * t;
                    const uint4 b0 = __ldg(src), b1 = __ldg(src + 1);
                    const int2 q = __ldg(dq + (size_t)min(n - 1, 4 * nt + t) * G + grp);
                    const float dx = __int_as_float(q.x);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        int c[4] = {0, 0, 0, 0};
                        mma_i8(c, lo[mt][0][0], lo[mt][1][0], hi[mt][0][0], hi[mt][1][0], b0.x, b1.x);
                        mma_i8(c, lo[mt][0][1], lo[mt][1][1], hi[mt][0][1], hi[mt][1][1], b0.y, b1.y);
                        mma_i8(c, lo[mt][0][2], lo[mt][1][2], hi[mt][0][2], hi[mt][1][2], b0.z, b1.z);
                        mma_i8(c, lo[mt][0][3], lo[mt][1][3], hi[mt][0][3], hi[mt][1][3], b0.w, b1.w);
                        yv[mt][nt][0] += (d[mt][0] * dx) * (float)(128 * c[0] + c[1] - q.y);
                        yv[mt][nt][1] += (d[mt][1] * dx) * (float)(128 * c[2] + c[3] - q.y);
                    }
                }
            }
        };
        if (gb < ge) load(wa, da, gb);
        for (int gg = gb; gg < ge; gg += 2) {
            if (gg + 1 < ge) load(wb, db, gg + 1);
            mult(wa, da, gg);
            if (gg + 1 < ge) {
                if (gg + 2 < ge) load(wa, da, gg + 2);
                mult(wb, db, gg + 1);
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                red[warp][mt][(4 * nt + t) * 16 + g] = yv[mt][nt][0];
                red[warp][mt][(4 * nt + t) * 16 + g + 8] = yv[mt][nt][1];
            }
        __syncthreads();
        for (int o = threadIdx.x; o < MT * 4 * NT * 16; o += MMA_THREADS) {
            const int mt = o / (4 * NT * 16), oo = o % (4 * NT * 16);
            const int tl = item * MT + mt;
            if (tl < tiles) {
                const int j = oo >> 4, r = m[mt].tile * 16 + (oo & 15);
                float s = 0.0f;
#pragma unroll
                for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp][mt][oo];
                if (j < n && r < m[mt].rows) y[(size_t)n * m[mt].ybase + (size_t)j * m[mt].rows + r] = s;
            }
        }
        __syncthreads();
    }
}
#define I8MT_KERNEL(name, MT, NT, U)                                                           \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                  \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,  \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,     \
             int r2, int k, int n) {                                                           \
        i8mt_wide<MT, NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);         \
    }
I8MT_KERNEL(i8mt2_g16, 2, 4, 1)
I8MT_KERNEL(i8mt2_g8, 2, 2, 1)
I8MT_KERNEL(i8mt2_g32, 2, 8, 1)

// s36's runtime int8 kernels at 5–32 rows (packed/mma.cu until s37 replaced them with the
// swapped mma_i8x_g*, decision 156), kept here under their names for the lab's comparisons.
I8R_KERNEL(mma_i8_g8, 2, 2)
I8R_KERNEL(mma_i8_g16, 4, 1)
I8R_KERNEL(mma_i8_g32, 8, 1)
