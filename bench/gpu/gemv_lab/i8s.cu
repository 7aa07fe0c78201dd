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
// pass (NT = 8) and 1 group per buffer at 4 and 8 rows. Parameters as mma_i8_g* (ntot, j0).
#define I8R_KERNEL(name, NT, U)                                                                \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                  \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,  \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,     \
             int r2, int k, int n, int ntot, int j0) {                                         \
        i8_gemm_wide<NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n, ntot, j0); \
    }
I8R_KERNEL(i8r_g32u1, 8, 1)
I8R_KERNEL(i8r_g4u1, 1, 1)
I8R_KERNEL(i8r_g8u1, 2, 1)
