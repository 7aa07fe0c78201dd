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

// mma_s8u8: packed/mma.cu's (s37: the runtime's mma_i8x_g* are this file's SL = 4 kernels).

template <int SL, int NA>
__device__ __forceinline__ void i8x_body(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int n) {
    constexpr int RT = 8 * SL;
    __shared__ float red[MMA_WARPS][8 * NA * RT];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
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
        for (int o = threadIdx.x; o < 8 * NA * RT; o += MMA_THREADS) {
            const int j = o / RT, r = tl * RT + o % RT;
            float sum = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) sum += red[wp][o];
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
