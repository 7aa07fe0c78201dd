// ---- candidate (s36): 2–16 activation rows on the int8 tensor cores. mma_gemm_wide's shape
// (packed/mma.cu: tiles of 16 weight rows, up to 3 matrices per launch, the groups split over
// the 8 warps, fixed-order sums in shared memory), with a different inner product:
// - x is quantized per row and group of 128 (not act.rs's 32) to 15 bits, q = 128·a + b, a and b
//   int8 planes (the CPU kernel's planes, one scale per group), by i8_split_acts;
// - mma.m16n8k32 u8 × s8 → s32: A = 16 weight rows' codes as bytes (u, 0..15), B's 8 columns =
//   4 activation rows × the 2 planes. The k order inside a group is free (both operands follow
//   it): thread t of a quad holds the group's chunk t; in mma j it supplies word j's low nibbles
//   (a0/a1: k = 32t + 4j + 0..3) and high nibbles (a2/a3: k = 32t + 16 + 4j + 0..3), and B's
//   matching plane bytes are words j of its 32 bytes [32t, 32t + 32) of the plane;
// - the group's 4 mma accumulate in s32, so one scale step per group: Σ(u − 8)q = 128·Σu·a +
//   Σu·b − 8·Σq, y += d·dx·that. Against the bf16 kernel: 4 mma per group and n-tile instead of 8,
//   one lop3 (+ shift) per 4 codes instead of lop3 + fma per 2, half the B bytes.
// Outputs differ from the bf16 kernels by x's quantization (15 bits per group of 128: ≤ 2^-15
// of the group's largest |x| per element).
__device__ __forceinline__ void mma_i8(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                       u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// x [n][k] → planes [n][G][2][128] bytes (a then b) and dq [n][G] = (dx, 8·Σq). One warp per
// (row, group): lane l holds elements 4l..4l+3 of the group.
extern "C" __global__ void i8_split_acts(const float4* __restrict__ x, u32* __restrict__ planes,
                                         int2* __restrict__ dq, int n, int k, int bf16) {
    const int K4 = k >> 2, G = k >> 7;
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)n * K4) return;  // whole warps (K4 is a multiple of 32)
    const int j = (int)(idx / K4), i = (int)(idx % K4), grp = i >> 5, l = i & 31;
    float4 f = x[idx];
    if (bf16) {
        f.x = round_bf16(f.x);
        f.y = round_bf16(f.y);
        f.z = round_bf16(f.z);
        f.w = round_bf16(f.w);
    }
    float amax = fmaxf(fmaxf(fabsf(f.x), fabsf(f.y)), fmaxf(fabsf(f.z), fabsf(f.w)));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float d = act_step(amax, &inv);
    const float e[4] = {f.x, f.y, f.z, f.w};
    u32 pa = 0, pb = 0;
    int s = 0;
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int q = act_code(e[u], inv);
        s += q;
        pa |= (u32)((q >> 7) & 0xff) << (8 * u);
        pb |= (u32)(q & 127) << (8 * u);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    u32* at = planes + ((size_t)j * G + grp) * 64;
    at[l] = pa;
    at[32 + l] = pb;
    if (l == 0) dq[(size_t)j * G + grp] = make_int2(__float_as_int(d), 8 * s);
}

// One group for NT n-tiles (4 activation rows each), added to yv[nt][e] (weight row g + 8e of
// the tile, activation row 4nt + t).
template <int NT>
__device__ __forceinline__ void i8_group(float (&yv)[NT][2], const uint4 (&w)[2], const float (&d)[2],
                                         const uint4* __restrict__ planes,
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
            const int rb = min(n - 1, 4 * nt + (g >> 1));  // B column g: row 4nt + g/2, plane g & 1
            const uint4* src = planes + ((size_t)rb * G + grp) * 16 + (g & 1) * 8 + 2 * t;
            const uint4 b0 = __ldg(src), b1 = __ldg(src + 1);
            int c[4] = {0, 0, 0, 0};
            mma_i8(c, lo[0][0], lo[1][0], hi[0][0], hi[1][0], b0.x, b1.x);
            mma_i8(c, lo[0][1], lo[1][1], hi[0][1], hi[1][1], b0.y, b1.y);
            mma_i8(c, lo[0][2], lo[1][2], hi[0][2], hi[1][2], b0.z, b1.z);
            mma_i8(c, lo[0][3], lo[1][3], hi[0][3], hi[1][3], b0.w, b1.w);
            const int ra = min(n - 1, 4 * nt + t);
            const int2 q = __ldg(dq + (size_t)ra * G + grp);
            const float dx = __int_as_float(q.x);
            yv[nt][0] += (d[0] * dx) * (float)(128 * c[0] + c[1] - q.y);
            yv[nt][1] += (d[1] * dx) * (float)(128 * c[2] + c[3] - q.y);
        }
    }
}

template <int NT, int U>
__device__ __forceinline__ void i8_gemm_wide(const uint4* c0, const u16* d0, const uint4* c1,
                                             const u16* d1, const uint4* c2, const u16* d2,
                                             const uint4* __restrict__ planes,
                                             const int2* __restrict__ dq, float* __restrict__ y,
                                             int r0, int r1, int r2, int k, int n) {
    __shared__ float red[MMA_WARPS][4 * NT * 16];
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    int tile = blockIdx.x;
    int row[1][2];
    uint4 wa[U][1][2];
    float da[U][1][2], ma[U][1][2];
    MmaMat cur;
    auto first_loads = [&](int tl) -> MmaMat {
        MmaMat s = mma_pick(tl, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
#pragma unroll
        for (int e = 0; e < 2; e++) row[0][e] = min(s.rows - 1, s.tile * 16 + g + 8 * e);
        if (gb < ge) mma_load<false, 1, U>(wa, da, ma, s.codes, s.d, s.m, row, gb, G, C, t);
        return s;
    };
    if (tile < tiles) cur = first_loads(tile);
    for (; tile < tiles; tile += gridDim.x) {
        float yv[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) yv[nt][0] = yv[nt][1] = 0.0f;
        double_buffered<false, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                i8_group<NT>(yv, w[0], d[0], planes, dq, mask, n, G, grp, g, t);
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
            if (j < n && r < done.rows) y[(size_t)n * done.ybase + (size_t)j * done.rows + r] = s;
        }
        __syncthreads();
    }
}
#define I8_KERNEL(name, NT, U, BLOCKS)                                                          \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8_gemm_wide<NT, U>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }
I8_KERNEL(i8_g4, 1, 2, 2)
I8_KERNEL(i8_g8, 2, 2, 2)
I8_KERNEL(i8_g16, 4, 2, 1)
I8_KERNEL(i8_g16b2, 4, 2, 2)
I8_KERNEL(i8_g16u1, 4, 1, 2)
