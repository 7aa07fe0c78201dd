// s39 (issue 17, batched products; decision 158): the runtime's swapped int8 rows kernel
// (i8x_gemm, 8 warps at every row count) with one pipeline over all of a warp's (tile, group)
// items instead of one per tile.
//   Why: s38's ncu of the 16-row kernel puts most stalls on long scoreboard with 2–3 warps per
//   scheduler, and L2 and DRAM well below their peaks: a latency bound. A warp owns
//   ceil(G / 8) = 4 groups of a tile (k = 4096), requests one group ahead, and at every tile's
//   end waits for the block's reduction before it requests the next tile's first codes, so one
//   full DRAM latency per 4 groups is exposed. Here the next items (D − 1 ahead, across tile
//   boundaries) are requested before the current one is multiplied, and so stay in flight over
//   the reduction's two barriers.
//   D = 2: one item ahead (the runtime's depth); D = 3: two (more registers).
// Same groups per warp, same integer sums and f32 steps in the same order, same reduction:
// outputs bit-identical to mma_i8x_g*'s. Warps reach the reduction's barriers from different
// points of the unrolled loop, so they use the unaligned `barrier.sync 0`.
// Lab only: timing and the output check against the runtime's kernels.

__device__ __forceinline__ void i8w_bar() { asm volatile("barrier.sync 0;" ::: "memory"); }

template <int NA, int W, int D>
__device__ __forceinline__ void i8w_body(const uint4* c0, const u16* d0, const uint4* c1,
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
    const int np = ge - gb;  // this warp's groups per tile (0 for trailing warps)
    const int t0 = (r0 + RT - 1) / RT, t1 = t0 + (r1 + RT - 1) / RT;
    const int tiles = t1 + (r2 + RT - 1) / RT;
    const int nt = (int)blockIdx.x < tiles ? (tiles - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int Q = nt * np;  // this warp's (tile, group) items, tile-major
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
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
    struct Grp {
        uint4 w[SL];
        float dl;
        uint4 fa[NA][4];
        float dx[NA];
        int sq[NA];
    };
    // The matrix of block tile i (this block's i-th).
    auto pick = [&](int i, const uint4*& codes, const u16*& dsc, int& rows, int& tl, int& ybase) {
        const int tile = blockIdx.x + i * gridDim.x;
        if (tile < t0) {
            codes = c0, dsc = d0, rows = r0, tl = tile, ybase = 0;
        } else if (tile < t1) {
            codes = c1, dsc = d1, rows = r1, tl = tile - t0, ybase = r0;
        } else {
            codes = c2, dsc = d2, rows = r2, tl = tile - t1, ybase = r0 + r1;
        }
    };
    // Request cursor: tile lt, group gb + lg; its row pointers.
    int lt = 0, lg = 0;
    const uint4* crow[SL];
    const u16* drow = nullptr;
    auto rows_of = [&](int i) {
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        pick(i, codes, dsc, rows, tl, ybase);
#pragma unroll
        for (int s = 0; s < SL; s++)
            crow[s] = codes + (size_t)min(rows - 1, tl * RT + 8 * s + g) * C + t;
        drow = dsc + (size_t)min(rows - 1, tl * RT + lane) * G;
    };
    auto codes_of = [&](Grp& b) {
        if (lg == 0) rows_of(lt);
        const int gg = gb + lg;
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
    auto advance = [&]() {
        if (++lg == np) lg = 0, lt++;
    };
    float acc[SL][NA][2];
#pragma unroll
    for (int s = 0; s < SL; s++)
#pragma unroll
        for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
    auto mult = [&](const Grp& b) {
#pragma unroll
        for (int s = 0; s < SL; s++) {
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
                    mma_s8u8(c[a], b.fa[a][j].x, b.fa[a][j].y, b.fa[a][j].z, b.fa[a][j].w, b0, b1);
            }
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    acc[s][a][e] += (d[e] * b.dx[a]) * (float)(128 * c[a][e] + c[a][2 + e] - b.sq[a]);
        }
    };
    // Tile i's end: the warps' partial sums through shared memory, summed in warp order.
    auto finish = [&](int i) {
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    red[warp][(8 * a + g) * RT + 8 * s + 2 * t + e] = acc[s][a][e];
                    acc[s][a][e] = 0.0f;
                }
        i8w_bar();
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        pick(i, codes, dsc, rows, tl, ybase);
        for (int o = threadIdx.x; o < 8 * NA * RT; o += (W * 32)) {
            const int j = o / RT, r = tl * RT + o % RT;
            float sum = 0.0f;
#pragma unroll
            for (int wp = 0; wp < W; wp++) sum += red[wp][o];
            if (j < n && r < rows) y[(size_t)n * ybase + (size_t)j * rows + r] = sum;
        }
        i8w_bar();
    };
    Grp buf[D];
    // Codes and scales only before the wait (no kernel writes them); planes, dq and y after.
#pragma unroll
    for (int u = 0; u < D - 1; u++)
        if (u < Q) codes_of(buf[u]), advance();
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    int pg = 0;  // the planes' cursor (group gb + pg) runs D − 1 items behind the codes'
    auto next_pg = [&]() {
        if (++pg == np) pg = 0;
    };
#pragma unroll
    for (int u = 0; u < D - 1; u++)
        if (u < Q) planes_of(buf[u], gb + pg), next_pg();
    int cg = 0, ct = 0;  // consume cursor: group gb + cg of tile ct
    for (int q = 0; q < Q; q += D) {
#pragma unroll
        for (int u = 0; u < D; u++) {
            if (q + u < Q) {
                if (q + u + D - 1 < Q) {
                    Grp& nb = buf[(u + D - 1) % D];
                    codes_of(nb), advance();
                    planes_of(nb, gb + pg), next_pg();
                }
                mult(buf[u]);
                if (++cg == np) cg = 0, finish(ct++);
            }
        }
    }
    // Warps without groups still take part in every tile's reduction (zeros).
    if (np == 0)
        for (int i = 0; i < nt; i++) finish(i);
}

#define I8W_KERNEL(name, NA, W, BLOCKS, D)                                                      \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8w_body<NA, W, D>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);            \
    }
// d2: one item ahead across tiles; d3: two. 8 warps; blocks per SM as the runtime's.
I8W_KERNEL(i8w_d2_g8, 1, 8, 2, 2)
I8W_KERNEL(i8w_d3_g8, 1, 8, 1, 3)
I8W_KERNEL(i8w_d2_g16, 2, 8, 1, 2)
I8W_KERNEL(i8w_d3_g16, 2, 8, 1, 3)
I8W_KERNEL(i8w_d2_g32, 4, 8, 1, 2)
