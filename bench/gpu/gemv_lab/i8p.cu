// s38 (issue 17, batched products; decision 157's lever): the runtime's swapped int8 rows
// kernel (packed/mma.cu's i8x_gemm, decision 156) with its codes and scales requested into L2
// ahead of the loads, by `cp.async.bulk.prefetch.L2` (sm_90): no registers, no shared memory.
// s37's ncu put the 16-row kernel at 30% of DRAM bandwidth and 52% of L1/TEX with 6.3 warp
// cycles per issued instruction: the warps wait on a prefetch distance of one group (2 KB per
// warp in flight), not on a pipe. PF (bits):
//   1: at each tile, the block's next tile (tile + gridDim.x): lane r of each warp asks for row
//      r's run of the warp's groups (ge − gb) · 64 bytes, lane 0 of warp 0 for the tile's scales
//      (a contiguous 64·G bytes when the tile is whole);
//   2: at the block's first tile, that tile too (before griddepcontrol.wait: no kernel writes
//      codes or scales), so a one-wave product (o, down) asks for all its bytes at once.
// Everything else is i8x_gemm's: the outputs are bit-identical to mma_i8x_g*'s.
// Lab only: timing and the output check against the runtime's kernels.

__device__ __forceinline__ void l2_prefetch(const void* p, u32 bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

template <int NA, int W, int PF>
__device__ __forceinline__ void i8p_body(const uint4* c0, const u16* d0, const uint4* c1,
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
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    // The matrix, its rows and the tile within it of block tile `tile`.
    auto locate = [&](int tile, const uint4*& codes, const u16*& dsc, int& rows, int& tl, int& ybase) {
        if (tile < t0) {
            codes = c0, dsc = d0, rows = r0, tl = tile, ybase = 0;
        } else if (tile < t1) {
            codes = c1, dsc = d1, rows = r1, tl = tile - t0, ybase = r0;
        } else {
            codes = c2, dsc = d2, rows = r2, tl = tile - t1, ybase = r0 + r1;
        }
    };
    // Block tile `tile`'s codes of this warp's groups and (warp 0) its scales, into L2.
    auto ahead = [&](int tile) {
        if (tile >= tiles) return;
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        locate(tile, codes, dsc, rows, tl, ybase);
        const int r = tl * RT + lane;
        if (gb < ge && r < rows) l2_prefetch(codes + (size_t)r * C + 4 * gb, (u32)(ge - gb) * 64);
        const int nr = min(RT, rows - tl * RT);
        if (warp == 0 && lane == 0 && ((nr * G * 2) & 15) == 0)
            l2_prefetch(dsc + (size_t)tl * RT * G, (u32)(nr * G * 2));
    };
    bool waited = false;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const uint4* codes;
        const u16* dsc;
        int rows, tl, ybase;
        locate(tile, codes, dsc, rows, tl, ybase);
        if ((PF & 2) && !waited) ahead(tile);
        if (PF & 1) ahead(tile + gridDim.x);
        auto load = [&](uint4(&w)[SL], float(&d)[SL][2], int gg) {
#pragma unroll
            for (int s = 0; s < SL; s++) {
                const int wr = min(rows - 1, tl * RT + 8 * s + g);
                w[s] = load_codes(codes + (size_t)wr * C + 4 * gg + t);
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int sr = min(rows - 1, tl * RT + 8 * s + 2 * t + e);
                    d[s][e] = f16_to_f32(__ldg(dsc + (size_t)sr * G + gg));
                }
            }
        };
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        auto mult = [&](const uint4(&w)[SL], const float(&d)[SL][2], int gg) {
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
                const int2 q = __ldg(dq + (size_t)ar * G + gg);
                dx[a] = __int_as_float(q.x);
                sq[a] = q.y;
            }
#pragma unroll
            for (int s = 0; s < SL; s++) {
                int c[NA][4];
#pragma unroll
                for (int a = 0; a < NA; a++) c[a][0] = c[a][1] = c[a][2] = c[a][3] = 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const u32 b0 = word(w[s], j) & mask, b1 = (word(w[s], j) >> 4) & mask;
#pragma unroll
                    for (int a = 0; a < NA; a++)
                        mma_s8u8(c[a], word(pa0[a], j), word(pb0[a], j), word(pa1[a], j),
                                 word(pb1[a], j), b0, b1);
                }
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] +=
                            (d[s][e] * dx[a]) * (float)(128 * c[a][e] + c[a][2 + e] - sq[a]);
            }
        };
        uint4 wa[SL], wb[SL];
        float da[SL][2], db[SL][2];
        if (gb < ge) load(wa, da, gb);
        if (!waited) {
#if __CUDA_ARCH__ >= 900
            asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
            waited = true;
        }
        for (int gg = gb; gg < ge; gg += 2) {
            if (gg + 1 < ge) load(wb, db, gg + 1);
            mult(wa, da, gg);
            if (gg + 1 < ge) {
                if (gg + 2 < ge) load(wa, da, gg + 2);
                mult(wb, db, gg + 1);
            }
        }
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

#define I8P_KERNEL(name, NA, W, BLOCKS, PF)                                                     \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8p_body<NA, W, PF>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }
// The runtime's (warps, blocks per SM) for 8 / 16 / 32 rows (decision 156), PF = 1 and 3.
I8P_KERNEL(i8p1_g8, 1, 8, 2, 1)
I8P_KERNEL(i8p3_g8, 1, 8, 2, 3)
I8P_KERNEL(i8p1_g16, 2, 12, 1, 1)
I8P_KERNEL(i8p3_g16, 2, 12, 1, 3)
I8P_KERNEL(i8p1_g32, 4, 8, 1, 1)
I8P_KERNEL(i8p3_g32, 4, 8, 1, 3)
