// s37 (issue 17, batched products): packed/mma.cu's int8 rows kernel (decision 155) with each
// warp's codes and scales streamed through a per-warp cp.async ring of S groups in shared
// memory instead of two register buffers of one group.
//
// Why: at 16 rows mma_i8_g16 streams the weights at ~24% of the bandwidth. It holds one group
// of codes per register buffer (1 KB per warp in flight while it multiplies, 2 blocks of 8
// warps per SM: ~16 KB per SM), which by Little's law at ~1.5 µs of loaded HBM latency caps an
// SM near 11 GB/s, about a third of its share. A ring keeps S groups in flight without holding
// registers. Every lane copies and later reads only its own bytes, so no barrier is needed
// between the copy and the read (cp.async.wait_group makes a thread's own copies visible to it).
// BR: x's planes and (dx, 8·Σq) of each group go through the same ring (their L2 latency off
// the multiply too); they are written by the split kernel, so they are copied only after the
// grid dependency wait.
// The items of a warp are (tile, group) pairs: its groups gb..ge of each of its block's tiles in
// turn, so the ring runs across tile boundaries without restarting.

__device__ __forceinline__ void i8q_cp(void* dst, const void* src, int bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    if (bytes == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
    else if (bytes == 8)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(s), "l"(src) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(src) : "memory");
}

// uint4 units per ring slot: codes [2][32], scales [2][32] u32, then (BR) planes [NT][2][32]
// and (dx, 8Σq) [NT][32] int2.
#define I8Q_SLOT(NT, BR) (64 + 16 + ((BR) ? 80 * (NT) : 0))
#define I8Q_SMEM(NT, S, BR) (MMA_WARPS * (S) * I8Q_SLOT(NT, BR) * 16)

template <int NT, int S, bool BR>
__device__ __forceinline__ void i8q_body(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const uint4* __restrict__ planes,
                                         const int2* __restrict__ dq, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int n) {
    __shared__ float red[MMA_WARPS][4 * NT * 16];
    constexpr int SU = I8Q_SLOT(NT, BR);
    const int C = k >> 5, G = k >> 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per), ng = ge - gb;
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int my = (int)blockIdx.x < tiles ? (tiles - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int items = my * ng;
    uint4* ring = mma_smem + (size_t)warp * S * SU;
    u32 mask = 0x0f0f0f0fu;
    asm volatile("" : "+r"(mask));
    auto issue = [&](int i) {
        if (i < items) {
            const int tl = (int)blockIdx.x + (i / ng) * (int)gridDim.x, gg = gb + i % ng;
            const MmaMat s = mma_pick(tl, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
            uint4* st = ring + (i % S) * SU;
            u32* sc = reinterpret_cast<u32*>(st + 64);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const size_t r = min(s.rows - 1, s.tile * 16 + g + 8 * e);
                i8q_cp(st + 32 * e + lane, s.codes + r * C + 4 * gg + t, 16);
                i8q_cp(sc + 32 * e + lane, s.d + ((r * G + gg) & ~(size_t)1), 4);
            }
            if (BR) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    if (4 * nt < n) {
                        const int rb = min(n - 1, 4 * nt + (g >> 1));
                        const uint4* src = planes + ((size_t)rb * G + gg) * 16 + (g & 1) * 8 + 2 * t;
                        i8q_cp(st + 80 + 64 * nt + lane, src, 16);
                        i8q_cp(st + 80 + 64 * nt + 32 + lane, src + 1, 16);
                        i8q_cp(reinterpret_cast<int2*>(st + 80 + 64 * NT) + 32 * nt + lane,
                               dq + (size_t)min(n - 1, 4 * nt + t) * G + gg, 8);
                    }
            }
        }
        asm volatile("cp.async.commit_group;" ::: "memory");  // empty groups keep the count
    };
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
    if (BR) asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#pragma unroll
    for (int i = 0; i < S - 1; i++) issue(i);
#if __CUDA_ARCH__ >= 900
    if (!BR) asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    int i = 0;
    for (int ti = 0; ti < my; ti++) {
        const MmaMat cur = mma_pick((int)blockIdx.x + ti * (int)gridDim.x, c0, d0, d0, c1, d1,
                                    d1, c2, d2, d2, r0, r1, r2);
        float yv[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) yv[nt][0] = yv[nt][1] = 0.0f;
        for (int q = 0; q < ng; q++, i++) {
            issue(i + S - 1);
            asm volatile("cp.async.wait_group %0;" ::"n"(S - 1) : "memory");
            const uint4* st = ring + (i % S) * SU;
            const u32* sc = reinterpret_cast<const u32*>(st + 64);
            const int grp = gb + q;
            uint4 w[2];
            float d[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                w[e] = st[32 * e + lane];
                const size_t r = min(cur.rows - 1, cur.tile * 16 + g + 8 * e);
                const u32 v = sc[32 * e + lane];
                d[e] = f16_to_f32((u16)(((r * G + grp) & 1) ? v >> 16 : v & 0xffffu));
            }
            if (!BR) {
                i8_group<NT>(yv, w, d, planes, dq, mask, n, G, grp, g, t);
            } else {
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
                    if (4 * nt < n) {
                        const uint4 b0 = st[80 + 64 * nt + lane], b1 = st[80 + 64 * nt + 32 + lane];
                        int c[4] = {0, 0, 0, 0};
                        mma_i8(c, lo[0][0], lo[1][0], hi[0][0], hi[1][0], b0.x, b1.x);
                        mma_i8(c, lo[0][1], lo[1][1], hi[0][1], hi[1][1], b0.y, b1.y);
                        mma_i8(c, lo[0][2], lo[1][2], hi[0][2], hi[1][2], b0.z, b1.z);
                        mma_i8(c, lo[0][3], lo[1][3], hi[0][3], hi[1][3], b0.w, b1.w);
                        const int2 qq = reinterpret_cast<const int2*>(st + 80 + 64 * NT)[32 * nt + lane];
                        const float dx = __int_as_float(qq.x);
                        yv[nt][0] += (d[0] * dx) * (float)(128 * c[0] + c[1] - qq.y);
                        yv[nt][1] += (d[1] * dx) * (float)(128 * c[2] + c[3] - qq.y);
                    }
                }
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            red[warp][(4 * nt + t) * 16 + g] = yv[nt][0];
            red[warp][(4 * nt + t) * 16 + g + 8] = yv[nt][1];
        }
        __syncthreads();
        for (int o = threadIdx.x; o < 4 * NT * 16; o += MMA_THREADS) {
            const int j = o >> 4, r = cur.tile * 16 + (o & 15);
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp][o];
            if (j < n && r < cur.rows) y[(size_t)n * cur.ybase + (size_t)j * cur.rows + r] = s;
        }
        __syncthreads();
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
}

#define I8Q_KERNEL(name, NT, S, BR, BLOCKS)                                                     \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                           \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,   \
             const u16* d2, const uint4* planes, const int2* dq, float* y, int r0, int r1,      \
             int r2, int k, int n) {                                                            \
        i8q_body<NT, S, BR>(c0, d0, c1, d1, c2, d2, planes, dq, y, r0, r1, r2, k, n);           \
    }

I8Q_KERNEL(i8q_g8s4, 2, 4, false, 2)
I8Q_KERNEL(i8q_g8s8, 2, 8, false, 2)
I8Q_KERNEL(i8q_g16s3, 4, 3, false, 2)
I8Q_KERNEL(i8q_g16s4, 4, 4, false, 2)
I8Q_KERNEL(i8q_g16s6, 4, 6, false, 2)
I8Q_KERNEL(i8q_g16s8, 4, 8, false, 2)
I8Q_KERNEL(i8q_g16s4x3, 4, 4, false, 3)
I8Q_KERNEL(i8q_g16b2, 4, 2, true, 2)
I8Q_KERNEL(i8q_g16b3, 4, 3, true, 1)
I8Q_KERNEL(i8q_g16b4, 4, 4, true, 1)
I8Q_KERNEL(i8q_g32s4, 8, 4, false, 2)
I8Q_KERNEL(i8q_g32s6, 8, 6, false, 2)
I8Q_KERNEL(i8q_g32b2, 8, 2, true, 1)
