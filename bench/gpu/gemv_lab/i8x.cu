// s37 (issue 17, batched products; decision 156's lever): the int8 rows product with the
// operands swapped. packed/mma.cu's mma_i8_g* put 16 weight rows in the mma's A and 4 activation
// rows × 2 planes in B, so every lane re-reads x's planes for each 16 weight rows: 4× the codes'
// bytes through L1TEX at 16 rows (8× at 32), where ncu finds the warps waiting. Here A = 8
// activation rows × their 2 planes (row g: plane a, row g + 8: plane b of activation row g) and
// B = 8 weight rows (column g: weight row g of a slab), so one load of x's planes for a group
// feeds SL slabs of 8 weight rows: the planes' bytes per code fall from 16·NA/16 ... to 8/SL·NA/2.
// Everything else as mma_i8_g*: x split per row and group of 128 by mma_split_i8 (same layout),
// k order inside a group free (lane t supplies chunk t of the group; in mma j, word j's low
// nibbles are k slots 4t.. and its high nibbles 16 + 4t..; A's words j of the lane's 32 plane
// bytes follow), 8 warps splitting the groups of a block tile of 8·SL weight rows, fixed-order
// sums through shared memory. A is signed (plane a), B unsigned codes: mma .s8.u8.
// Lab only: timing and the output check against the runtime's kernels.

// mma_s8u8: packed/mma.cu's (s37: the runtime's mma_i8x_g* were this file's SL = 4 kernels; s38's
// read x's planes in the mma's fragment order, decision 157).

template <int SL, int NA, int W = MMA_WARPS>
__device__ __forceinline__ void i8x_body(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int n) {
    constexpr int RT = 8 * SL;
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
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        if (tile < t0) codes = c0, dsc = d0, rows = r0, tl = tile, ybase = 0;
        else if (tile < t1) codes = c1, dsc = d1, rows = r1, tl = tile - t0, ybase = r0;
        else codes = c2, dsc = d2, rows = r2, tl = tile - t1, ybase = r0 + r1;
        int wr[SL], sr[SL][2];
#pragma unroll
        for (int s = 0; s < SL; s++) {
            wr[s] = min(rows - 1, tl * RT + 8 * s + g);
#pragma unroll
            for (int e = 0; e < 2; e++) sr[s][e] = min(rows - 1, tl * RT + 8 * s + 2 * t + e);
        }
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        uint4 wa[SL], wb[SL];
        float da[SL][2], db[SL][2];
        auto load = [&](uint4 (&w)[SL], float (&d)[SL][2], int gg) {
#pragma unroll
            for (int s = 0; s < SL; s++) {
                w[s] = load_codes(codes + (size_t)wr[s] * C + 4 * gg + t);
#pragma unroll
                for (int e = 0; e < 2; e++) d[s][e] = f16_to_f32(__ldg(dsc + (size_t)sr[s][e] * G + gg));
            }
        };
        auto mult = [&](const uint4 (&w)[SL], const float (&d)[SL][2], int gg) {
            uint4 pa0[NA], pa1[NA], pb0[NA], pb1[NA];
            float dx[NA];
            int sq[NA];
#pragma unroll
            for (int a = 0; a < NA; a++) {
                const int ar = min(n - 1, 8 * a + g);
                const uint4* src = planes + ((size_t)ar * G + gg) * 16 + 2 * t;
                pa0[a] = __ldg(src);
                pa1[a] = __ldg(src + 1);
                pb0[a] = __ldg(src + 8);
                pb1[a] = __ldg(src + 9);
                // C rows g and g + 8 are activation row 8a + g (planes a and b); its (dx, 8Σq)
                const int2 q = __ldg(dq + (size_t)ar * G + gg);
                dx[a] = __int_as_float(q.x);
                sq[a] = q.y;
            }
#pragma unroll
            for (int s = 0; s < SL; s++) {
                const u32 W[4] = {w[s].x, w[s].y, w[s].z, w[s].w};
                int c[NA][4];
#pragma unroll
                for (int a = 0; a < NA; a++) c[a][0] = c[a][1] = c[a][2] = c[a][3] = 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 b0 = W[j] & mask, b1 = (W[j] >> 4) & mask;
#pragma unroll
                    for (int a = 0; a < NA; a++) {
                        const u32 A0[4] = {pa0[a].x, pa0[a].y, pa0[a].z, pa0[a].w};
                        const u32 B0[4] = {pb0[a].x, pb0[a].y, pb0[a].z, pb0[a].w};
                        const u32 A1[4] = {pa1[a].x, pa1[a].y, pa1[a].z, pa1[a].w};
                        const u32 B1[4] = {pb1[a].x, pb1[a].y, pb1[a].z, pb1[a].w};
                        mma_s8u8(c[a], A0[j], B0[j], A1[j], B1[j], b0, b1);
                    }
                }
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] += (d[s][e] * dx[a]) * (float)(128 * c[a][e] + c[a][2 + e] - sq[a]);
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
        // red[warp][activation row · RT + row in tile]
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int e = 0; e < 2; e++) red[warp][(8 * a + g) * RT + 8 * s + 2 * t + e] = acc[s][a][e];
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

#define I8X_KERNEL(name, SL, NA, BLOCKS)                                                        \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8x_body<SL, NA>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);              \
    }

I8X_KERNEL(i8x_g8s4, 4, 1, 2)
I8X_KERNEL(i8x_g8s8, 8, 1, 2)
I8X_KERNEL(i8x_g16s2, 2, 2, 2)
I8X_KERNEL(i8x_g16s4, 4, 2, 2)
I8X_KERNEL(i8x_g16s8, 8, 2, 1)
I8X_KERNEL(i8x_g32s2, 2, 4, 2)
I8X_KERNEL(i8x_g32s4, 4, 4, 1)
I8X_KERNEL(i8x_g8s8x1, 8, 1, 1)
I8X_KERNEL(i8x_g16s4x1, 4, 2, 1)

// ---- s37 lab3: i8x (SL = 4) with each warp's codes and scales through a per-warp cp.async ring
// of S groups (i8q.cu's ring, decision 156's first candidate), now that the planes no longer
// fill L1TEX: no code or scale registers held (2 blocks per SM fit), S groups in flight per warp.
// Items of a warp: its groups gb..ge of each of its block's tiles in turn. Scales: lane (g, t)
// copies the pair holding row 8·(g>>1) + 2t + (g&1)'s scale; readers take their t's from shared
// memory after the warp's wait (hence a __syncwarp). Codes: each lane its own chunk.
#define I8XR_SLOT (4 * 32 + 8)  // uint4: codes [4 slabs][32 lanes], scales [8][4] u32
#define I8XR_SMEM(S) (MMA_WARPS * (S) * I8XR_SLOT * 16)
template <int NA, int S>
__device__ __forceinline__ void i8xr_body(const uint4* c0, const u16* d0, const uint4* c1,
                                          const u16* d1, const uint4* c2, const u16* d2,
                                          const uint4* __restrict__ planes,
                                          const int2* __restrict__ dq, float* __restrict__ y,
                                          int r0, int r1, int r2, int k, int n) {
    constexpr int SL = 4, RT = 32;
    __shared__ float red[MMA_WARPS][8 * NA * RT];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per), ng = ge - gb;
    const int t0 = (r0 + RT - 1) / RT, t1 = t0 + (r1 + RT - 1) / RT;
    const int tiles = t1 + (r2 + RT - 1) / RT;
    const int my = (int)blockIdx.x < tiles ? (tiles - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int items = my * ng;
    uint4* ring = mma_smem + (size_t)warp * S * I8XR_SLOT;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    struct Mat { const uint4* codes; const u16* dsc; int rows, tl, ybase; };
    auto pick = [&](int tile) {
        Mat m;
        if (tile < t0) m = {c0, d0, r0, tile, 0};
        else if (tile < t1) m = {c1, d1, r1, tile - t0, r0};
        else m = {c2, d2, r2, tile - t1, r0 + r1};
        return m;
    };
    auto issue = [&](int i) {
        if (i < items) {
            const Mat m = pick((int)blockIdx.x + (i / ng) * (int)gridDim.x);
            const int gg = gb + i % ng;
            uint4* st = ring + (i % S) * I8XR_SLOT;
#pragma unroll
            for (int s = 0; s < SL; s++) {
                const int wr = min(m.rows - 1, m.tl * RT + 8 * s + g);
                i8q_cp(st + 32 * s + lane, m.codes + (size_t)wr * C + 4 * gg + t, 16);
            }
            const int sr = min(m.rows - 1, m.tl * RT + 8 * (g >> 1) + 2 * t + (g & 1));
            i8q_cp(reinterpret_cast<u32*>(st + 128) + 4 * g + t,
                   m.dsc + (((size_t)sr * G + gg) & ~(size_t)1), 4);
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
    };
#pragma unroll
    for (int i = 0; i < S - 1; i++) issue(i);
    int i = 0;
    for (int ti = 0; ti < my; ti++) {
        const Mat m = pick((int)blockIdx.x + ti * (int)gridDim.x);
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        for (int q = 0; q < ng; q++, i++) {
            issue(i + S - 1);
            asm volatile("cp.async.wait_group %0;" ::"n"(S - 1) : "memory");
            __syncwarp();
            const int gg = gb + q;
            const uint4* st = ring + (i % S) * I8XR_SLOT;
            const u32* sc = reinterpret_cast<const u32*>(st + 128);
            uint4 pa0[NA], pa1[NA], pb0[NA], pb1[NA];
            float dx[NA];
            int sq[NA];
#pragma unroll
            for (int a = 0; a < NA; a++) {
                const int ar = min(n - 1, 8 * a + g);
                const uint4* src = planes + ((size_t)ar * G + gg) * 16 + 2 * t;
                pa0[a] = __ldg(src);
                pa1[a] = __ldg(src + 1);
                pb0[a] = __ldg(src + 8);
                pb1[a] = __ldg(src + 9);
                const int2 qq = __ldg(dq + (size_t)ar * G + gg);
                dx[a] = __int_as_float(qq.x);
                sq[a] = qq.y;
            }
#pragma unroll
            for (int s = 0; s < SL; s++) {
                const uint4 w = st[32 * s + lane];
                float d[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int sr = min(m.rows - 1, m.tl * RT + 8 * s + 2 * t + e);
                    const u32 v = sc[4 * (2 * s + e) + t];
                    d[e] = f16_to_f32((u16)((((size_t)sr * G + gg) & 1) ? v >> 16 : v & 0xffffu));
                }
                int c[NA][4];
#pragma unroll
                for (int a = 0; a < NA; a++) c[a][0] = c[a][1] = c[a][2] = c[a][3] = 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 b0 = word(w, j) & mask, b1 = (word(w, j) >> 4) & mask;
#pragma unroll
                    for (int a = 0; a < NA; a++)
                        mma_s8u8(c[a], word(pa0[a], j), word(pb0[a], j), word(pa1[a], j),
                                 word(pb1[a], j), b0, b1);
                }
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] += (d[e] * dx[a]) * (float)(128 * c[a][e] + c[a][2 + e] - sq[a]);
            }
            __syncwarp();  // every lane done with this slot's scales before it is refilled
        }
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++)
#pragma unroll
                for (int e = 0; e < 2; e++) red[warp][(8 * a + g) * RT + 8 * s + 2 * t + e] = acc[s][a][e];
        __syncthreads();
        for (int o = threadIdx.x; o < 8 * NA * RT; o += MMA_THREADS) {
            const int j = o / RT, r = m.tl * RT + o % RT;
            float sum = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) sum += red[wp][o];
            if (j < n && r < m.rows) y[(size_t)n * m.ybase + (size_t)j * m.rows + r] = sum;
        }
        __syncthreads();
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
}
#define I8XR_KERNEL(name, NA, S, BLOCKS)                                                        \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8xr_body<NA, S>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);              \
    }
I8XR_KERNEL(i8xr_g8s3, 1, 3, 2)
I8XR_KERNEL(i8xr_g8s4, 1, 4, 2)
I8XR_KERNEL(i8xr_g16s3, 2, 3, 2)
I8XR_KERNEL(i8xr_g16s4, 2, 4, 2)
I8XR_KERNEL(i8xr_g16s6, 2, 6, 1)
I8XR_KERNEL(i8xr_g32s3, 4, 3, 2)
I8XR_KERNEL(i8xr_g32s4, 4, 4, 1)

// s37 lab4: W warps per block (one block per SM), so that the 16-row kernel's ~200 registers
// leave room for 12 warps instead of 8 (384 × 170 = 65,280 of 65,536 registers).
#define I8XW_KERNEL(name, SL, NA, W)                                                            \
    extern "C" __global__ void __launch_bounds__(W * 32, 1)                                     \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8x_body<SL, NA, W>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }
I8XW_KERNEL(i8xw12_g16s4, 4, 2, 12)
I8XW_KERNEL(i8xw10_g16s4, 4, 2, 10)
I8XW_KERNEL(i8xw12_g32s4, 4, 4, 12)
I8XW_KERNEL(i8xw10_g32s4, 4, 4, 10)
I8XW_KERNEL(i8xw16_g8s4, 4, 1, 16)
I8XW_KERNEL(i8xw12_g8s4, 4, 1, 12)
