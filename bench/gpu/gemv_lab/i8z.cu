// s38 (issue 17; decision 157's follow-up): i8y.cu's i8y_sp body (the runtime's since f00dda3)
// with each group's multiply ordered j-major over all slabs: SL·NA accumulators in flight instead
// of NA, every slab's scales shuffled first and every epilogue after, so an IMMA's latency is
// hidden by the other slabs' IMMA rather than exposed before each slab's epilogue. More registers
// (c: 4·SL·NA): run at the runtime's warps and with fewer. Outputs bit-identical to mma_i8x_g*'s.
// Lab only.

template <int NA, int W>
__device__ __forceinline__ void i8z_body(const uint4* c0, const u16* d0, const uint4* c1,
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
    struct Grp {
        uint4 w[SL];     // codes of weight row 8s + g, chunk t
        float dl;        // scale of tile row `lane`
        uint4 fa[NA][4];
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
        const uint4* crow[SL];
#pragma unroll
        for (int s = 0; s < SL; s++) crow[s] = codes + (size_t)min(rows - 1, tl * RT + 8 * s + g) * C + t;
        const u16* drow = dsc + (size_t)min(rows - 1, tl * RT + lane) * G;
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
        auto load = [&](Grp& b, int gg, bool with_planes) {
#pragma unroll
            for (int s = 0; s < SL; s++) b.w[s] = load_codes(crow[s] + 4 * gg);
            b.dl = f16_to_f32(__ldg(drow + gg));
            if (with_planes) planes_of(b, gg);
        };
        float acc[SL][NA][2];
#pragma unroll
        for (int s = 0; s < SL; s++)
#pragma unroll
            for (int a = 0; a < NA; a++) acc[s][a][0] = acc[s][a][1] = 0.0f;
        auto mult = [&](const Grp& b, int gg) {
            // every slab's scales first, then the mma j-major over all slabs (SL·NA independent
            // accumulators in flight instead of NA), then every epilogue
            float d[SL][2];
#pragma unroll
            for (int s = 0; s < SL; s++)
#pragma unroll
                for (int e = 0; e < 2; e++) d[s][e] = __shfl_sync(0xffffffffu, b.dl, 8 * s + 2 * t + e);
            int c[SL][NA][4];
#pragma unroll
            for (int s = 0; s < SL; s++)
#pragma unroll
                for (int a = 0; a < NA; a++) c[s][a][0] = c[s][a][1] = c[s][a][2] = c[s][a][3] = 0;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int s = 0; s < SL; s++) {
                    const u32 b0 = word(b.w[s], j) & mask, b1 = (word(b.w[s], j) >> 4) & mask;
#pragma unroll
                    for (int a = 0; a < NA; a++)
                        mma_s8u8(c[s][a], b.fa[a][j].x, b.fa[a][j].y, b.fa[a][j].z, b.fa[a][j].w, b0, b1);
                }
#pragma unroll
            for (int s = 0; s < SL; s++)
#pragma unroll
                for (int a = 0; a < NA; a++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        acc[s][a][e] += (d[s][e] * b.dx[a]) * (float)(128 * c[s][a][e] + c[s][a][2 + e] - b.sq[a]);
        };
        Grp ga, gbuf;
        if (gb < ge) load(ga, gb, false);
        if (!waited) {
#if __CUDA_ARCH__ >= 900
            asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
            waited = true;
        }
        if (gb < ge) planes_of(ga, gb);
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

#define I8Z_KERNEL(name, NA, W, BLOCKS)                                                         \
    extern "C" __global__ void __launch_bounds__(W * 32, BLOCKS)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8z_body<NA, W>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);               \
    }
I8Z_KERNEL(i8z_g8, 1, 8, 2)
I8Z_KERNEL(i8z_g8w12, 1, 12, 1)
I8Z_KERNEL(i8z_g16, 2, 12, 1)
I8Z_KERNEL(i8z_g16w8, 2, 8, 1)
I8Z_KERNEL(i8z_g32, 4, 8, 1)
