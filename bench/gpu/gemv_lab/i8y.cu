// s38 (issue 17, batched products; decision 157's follow-up): the runtime's swapped int8 rows
// kernel (i8x_gemm on planes in fragment order) with fewer instructions and registers per group,
// so that x's planes can be requested a group ahead as the codes are. s38's SASS of the runtime's
// 16-row kernel: ~70 of its ~340 instructions per group and warp compute the 12 load addresses
// again (clamps, 64-bit products), 8 of them for 2-byte scale loads, and ncu puts 40% of its
// stalls on L1TEX (the planes are loaded at the top of each group's multiply and used at once).
//   SHF: lane l loads the scale of tile row l (one 2-byte load per group, not 8) and each lane
//        takes the 8 it needs (rows 8s + 2t + e) by __shfl_sync: 1 register per group, not 8.
//   PP:  x's planes and (dx, 8·Σq) of the next group are loaded with its codes (all in flight
//        while the current group is multiplied).
//   JM:  (lab6, the i8z_* kernels) each group's mma issued j-major over all slabs: SL·NA
//        accumulators in flight instead of NA, every slab's scales shuffled first and every
//        epilogue after (more registers: c is 4·SL·NA).
//   PR:  (s39, lab8; probes, outputs meaningless) bit 1: x's planes and (dx, 8·Σq) made from
//        the group index instead of loaded; bit 2: the codes and scales likewise; bit 4: each
//        mma replaced by four integer ops; bit 8 (lab10): the codes read in a tile-major order,
//        so that each warp load is 512 contiguous bytes (the same bytes in another order);
//        bit 16: x's planes likewise, group-major [group][set][j][lane]; bit 32 (lab11): an
//        empty product (launch and griddepcontrol.wait only).
//        What a part costs is the time it removes.
// Same integer sums and f32 steps in the same order: outputs bit-identical to mma_i8x_g*'s
// (without PR).
// Lab only: timing and the output check against the runtime's kernels.

template <int NA, int W, bool PP, bool JM = false, int PR = 0>
__device__ __forceinline__ void i8y_body(const uint4* c0, const u16* d0, const uint4* c1,
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
    // x's planes and steps of activation set a's row for this lane (clamped rows are not stored)
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
    if (PR & 32) {  // probe (lab11): an empty product, launch and wait only
#if __CUDA_ARCH__ >= 900
        asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
        return;
    }
    struct Grp {
        uint4 w[SL];     // codes of weight row 8s + g, chunk t
        float dl;        // scale of tile row `lane`
        uint4 fa[PP ? NA : 1][4];
        float dx[PP ? NA : 1];
        int sq[PP ? NA : 1];
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
        const uint4* crow[SL];
#pragma unroll
        for (int s = 0; s < SL; s++) crow[s] = codes + (size_t)min(rows - 1, tl * RT + 8 * s + g) * C + t;
        const u16* drow = dsc + (size_t)min(rows - 1, tl * RT + lane) * G;
        auto planes_of = [&](Grp& b, int gg) {
#pragma unroll
            for (int a = 0; a < NA; a++) {
                if (PR & 16) {  // probe: the planes read group-major, 512 contiguous bytes per load
                    const size_t last = (size_t)n * G * 16 - 1;
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        b.fa[PP ? a : 0][j] =
                            __ldg(planes + min(last, (((size_t)gg * NA + a) * 4 + j) * 32 + lane));
                    const int2 q = __ldg(qrow[a] + gg);
                    b.dx[PP ? a : 0] = __int_as_float(q.x);
                    b.sq[PP ? a : 0] = q.y;
                    continue;
                }
                if (PR & 1) {  // probe: no plane loads (values that vary, so nothing folds)
#pragma unroll
                    for (int j = 0; j < 4; j++) b.fa[PP ? a : 0][j] = make_uint4(gg ^ j, lane + a, gg + j, lane ^ gg);
                    b.dx[PP ? a : 0] = 1.0f + gg;
                    b.sq[PP ? a : 0] = gg + a;
                    continue;
                }
#pragma unroll
                for (int j = 0; j < 4; j++) b.fa[PP ? a : 0][j] = __ldg(prow[a] + (size_t)gg * 16 + 4 * j);
                const int2 q = __ldg(qrow[a] + gg);
                b.dx[PP ? a : 0] = __int_as_float(q.x);
                b.sq[PP ? a : 0] = q.y;
            }
        };
        auto load = [&](Grp& b, int gg, bool with_planes) {
            if (PR & 2) {  // probe: no code or scale loads
#pragma unroll
                for (int s = 0; s < SL; s++) b.w[s] = make_uint4(gg ^ s, lane + gg, gg * 3 + s, lane ^ s);
                b.dl = 0.5f + gg;
            } else if (PR & 8) {  // probe: the same bytes, each warp load 512 contiguous bytes
                // (a tile-major layout [tile][group][slab][lane]; values meaningless)
                const size_t last = (size_t)rows * C - 1;
#pragma unroll
                for (int s = 0; s < SL; s++)
                    b.w[s] = load_codes(codes + min(last, ((size_t)tl * G + gg) * (SL * 32) + s * 32 + lane));
                b.dl = f16_to_f32(__ldg(drow + gg));
            } else {
#pragma unroll
                for (int s = 0; s < SL; s++) b.w[s] = load_codes(crow[s] + 4 * gg);
                b.dl = f16_to_f32(__ldg(drow + gg));
            }
            if (PP && with_planes) planes_of(b, gg);
        };
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        auto mult = [&](const Grp& b, int gg) {
            uint4 fl[NA][4];
            float dxl[NA];
            int sql[NA];
#pragma unroll
            for (int a = 0; a < NA; a++) {
                if (PP) {
#pragma unroll
                    for (int j = 0; j < 4; j++) fl[a][j] = b.fa[PP ? a : 0][j];
                    dxl[a] = b.dx[PP ? a : 0];
                    sql[a] = b.sq[PP ? a : 0];
                } else {
#pragma unroll
                    for (int j = 0; j < 4; j++) fl[a][j] = __ldg(prow[a] + (size_t)gg * 16 + 4 * j);
                    const int2 q = __ldg(qrow[a] + gg);
                    dxl[a] = __int_as_float(q.x);
                    sql[a] = q.y;
                }
            }
            if (JM) {
                float d[SL][2];
                int c[SL][NA][4];
#pragma unroll
                for (int s = 0; s < SL; s++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) d[s][e] = __shfl_sync(0xffffffffu, b.dl, 8 * s + 2 * t + e);
#pragma unroll
                    for (int a = 0; a < NA; a++) c[s][a][0] = c[s][a][1] = c[s][a][2] = c[s][a][3] = 0;
                }
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int s = 0; s < SL; s++) {
                        const u32 b0 = word(b.w[s], j) & mask, b1 = (word(b.w[s], j) >> 4) & mask;
#pragma unroll
                        for (int a = 0; a < NA; a++)
                            mma_s8u8(c[s][a], fl[a][j].x, fl[a][j].y, fl[a][j].z, fl[a][j].w, b0, b1);
                    }
#pragma unroll
                for (int s = 0; s < SL; s++)
#pragma unroll
                    for (int a = 0; a < NA; a++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            acc[s][a][e] += (d[s][e] * dxl[a]) * (float)(128 * c[s][a][e] + c[s][a][2 + e] - sql[a]);
                return;
            }
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
                    for (int a = 0; a < NA; a++) {
                        if (PR & 4) {  // probe: no mma (one integer op per register instead)
                            c[a][0] += fl[a][j].x ^ b0, c[a][1] += fl[a][j].y ^ b1;
                            c[a][2] += fl[a][j].z ^ b0, c[a][3] += fl[a][j].w ^ b1;
                        } else {
                            mma_s8u8(c[a], fl[a][j].x, fl[a][j].y, fl[a][j].z, fl[a][j].w, b0, b1);
                        }
                    }
                }
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] += (d[e] * dxl[a]) * (float)(128 * c[a][e] + c[a][2 + e] - sql[a]);
            }
        };
        Grp ga, gbuf;
        if (gb < ge) load(ga, gb, false);
        if (!waited) {
#if __CUDA_ARCH__ >= 900
            asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
            waited = true;
        }
        if (PP && gb < ge) planes_of(ga, gb);
        for (int gg = gb; gg < ge; gg += 2) {
            if (gg + 1 < ge) load(gbuf, gg + 1, true);
            mult(ga, gg);
            if (gg + 1 < ge) {
                if (gg + 2 < ge) load(ga, gg + 2, true);
                mult(gbuf, gg + 1);
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

#define I8Y_KERNEL(name, NA, W, BLOCKS, PP)                                                     \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8y_body<NA, W, PP>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }
// s: scales by shuffle; sp: and the planes a group ahead. (warps, blocks per SM) as the runtime's
// unless named.
I8Y_KERNEL(i8y_s_g8, 1, 8, 2, false)
I8Y_KERNEL(i8y_sp_g8, 1, 8, 2, true)
I8Y_KERNEL(i8y_sp_g8w16, 1, 16, 1, true)
I8Y_KERNEL(i8y_s_g16, 2, 12, 1, false)
I8Y_KERNEL(i8y_sp_g16, 2, 12, 1, true)
I8Y_KERNEL(i8y_sp_g16w8, 2, 8, 1, true)
I8Y_KERNEL(i8y_s_g32, 4, 8, 1, false)
I8Y_KERNEL(i8y_sp_g32, 4, 8, 1, true)

// lab6: the j-major multiply (JM) on the sp body.
#define I8Z_KERNEL(name, NA, W, BLOCKS)                                                         \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8y_body<NA, W, true, true>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);   \
    }
I8Z_KERNEL(i8z_g8, 1, 8, 2)
I8Z_KERNEL(i8z_g8w12, 1, 12, 1)
I8Z_KERNEL(i8z_g16, 2, 12, 1)
I8Z_KERNEL(i8z_g16w8, 2, 8, 1)
I8Z_KERNEL(i8z_g32, 4, 8, 1)

// s39 lab8: probes (PR bits above) on the sp body at 8 warps, 16 and 32 rows; lab9: at 16 warps
// per SM (2 blocks of 8, or 1 of 16) within 128 registers, on the s body (planes not held a
// group ahead, so that it fits).
#define I8Y_PROBE_WB(name, NA, W, B, PP, PR)                                                    \
    extern "C" __global__ void __launch_bounds__(W * 32, B)                                     \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8y_body<NA, W, PP, false, PR>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);\
    }
I8Y_PROBE_WB(i8y_s_g16b2, 2, 8, 2, false, 0)
I8Y_PROBE_WB(i8y_s_g16w16, 2, 16, 1, false, 0)
I8Y_PROBE_WB(i8y_s_g16w8, 2, 8, 1, false, 0)
I8Y_PROBE_WB(i8y_s_pr3_g16b2, 2, 8, 2, false, 3)
I8Y_PROBE_WB(i8y_s_pr3_g16w16, 2, 16, 1, false, 3)
I8Y_PROBE_WB(i8y_s_pr3_g16w8, 2, 8, 1, false, 3)
#define I8Y_PROBE(name, NA, PR) I8Y_PROBE_WB(name, NA, 8, 1, true, PR)
I8Y_PROBE(i8y_pr1_g16, 2, 1)
I8Y_PROBE(i8y_pr2_g16, 2, 2)
I8Y_PROBE(i8y_pr3_g16, 2, 3)
I8Y_PROBE(i8y_pr4_g16, 2, 4)
I8Y_PROBE(i8y_pr7_g16, 2, 7)
I8Y_PROBE(i8y_pr1_g32, 4, 1)
I8Y_PROBE(i8y_pr2_g32, 4, 2)
I8Y_PROBE(i8y_pr3_g32, 4, 3)
I8Y_PROBE(i8y_pr4_g32, 4, 4)
// lab10: tile-major code reads (PR = 8) at 8 / 16 / 32 rows, the runtime's warps and blocks.
I8Y_PROBE_WB(i8y_pr8_g8, 1, 8, 2, true, 8)
I8Y_PROBE_WB(i8y_pr8_g16, 2, 8, 1, true, 8)
I8Y_PROBE_WB(i8y_pr8_g32, 4, 8, 1, true, 8)
I8Y_PROBE_WB(i8y_pr16_g16, 2, 8, 1, true, 16)
I8Y_PROBE_WB(i8y_pr24_g16, 2, 8, 1, true, 24)
I8Y_PROBE_WB(i8y_pr16_g32, 4, 8, 1, true, 16)
I8Y_PROBE_WB(i8y_pr24_g32, 4, 8, 1, true, 24)
I8Y_PROBE_WB(i8y_pr32_g16, 2, 8, 1, true, 32)
