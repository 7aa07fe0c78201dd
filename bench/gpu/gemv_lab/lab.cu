// Batch-1 int4 g128 product lab (issue 17): times crunch's one-row kernels (the tensor-core
// ones of crates/crunch-runtime/src/cuda/packed.cu + packed/mma.cu, and the CUDA-core cc_u4 of
// packed/cc.cu, decision 151, all included as they are) against candidate changes and probes,
// per product and as a chain of Llama-3-8B blocks, on random codes. Build and run on the GPU
// machine: bench/gpu/gemv_lab/run.sh (or the s34_lab*.sh scripts, which pick kernels with
// LAB_ONLY). Prints one JSON line per timing; outputs are compared with mma_u4_w2's after the
// stream has finished (before s34 they were read too early: decision 151). s36 (decision 154):
// ccr.cu (codes through a per-lane cp.async ring) and chain.cu (the chain as one persistent
// kernel, timed after the kernel list unless LAB_NO_CHAIN is set).
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <algorithm>
#include <vector>
#include <string>
#include "../../../crates/crunch-runtime/src/cuda/reduce.cu"  // block_sum, rms_inv_by (cc.cu's fused norm)
#include "../../../crates/crunch-runtime/src/cuda/packed.cu"
#include "mma_lab.cu"  // packed/mma.cu with its sm_80 guard opened (run.sh)
#include "../../../crates/crunch-runtime/src/cuda/packed/cc.cu"  // the runtime's CUDA-core kernels (decision 151)
#include "ccr.cu"  // s36: cc_u4 through a per-lane cp.async ring
#include "chain.cu"  // s36: the chain as one persistent kernel (probe)
#include "i8s.cu"  // s36: the int8 rows kernels with several tiles per block pass
#include "i8q.cu"  // s37: the int8 rows kernel with codes through a per-warp cp.async ring
#include "i8x.cu"  // s37: the int8 rows kernel with activations as A, weights as B
#include "i8p.cu"  // s38: the runtime's swapped kernel with L2 bulk prefetch of the next tile
#include "i8f.cu"  // s38: the swapped kernel on planes in the mma's fragment order
#include "i8y.cu"  // s38: ... with scales by shuffle and the planes a group ahead
#include "../../../crates/crunch-runtime/src/cuda/reduce.cu"
#include "../../../crates/crunch-runtime/src/cuda/kernels.cu"  // s39 lab12: rms_norm, silu_mul
#include "../../../crates/crunch-runtime/src/cuda/packed/feed.cu"  // s39 lab12, in the runtime since s40: producers that write the int8 planes

// ---- candidate: mma_gemv_wide with programmatic dependent launch (sm_90): the first codes
// are requested, then `griddepcontrol.wait` holds the block until the previous grid has ended
// and its writes are visible, so a product's weights stream in while the previous product's
// last blocks finish. Tiles, split and sums as mma_gemv_wide: outputs bit-identical.
template <int U>
__device__ __forceinline__ void lab_wide_pdl(const uint4* c0, const u16* d0, const uint4* c1,
                                             const u16* d1, const uint4* c2, const u16* d2,
                                             const float* __restrict__ x, float* __restrict__ y,
                                             int r0, int r1, int r2, int k, int bf16) {
    asm volatile("griddepcontrol.launch_dependents;");
    const int C = k >> 5, G = k >> 7, P = MMA_PLANE(k);
    uint4* act = mma_smem;
    float* gsum = (float*)(mma_smem + 8 * P);
    float* red = gsum + G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
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
    asm volatile("griddepcontrol.wait;" ::: "memory");
    stage_x<false>(x, act, gsum, P, k, bf16, lane);
    const uint2* act2 = (const uint2*)act;
    for (; tile < tiles; tile += gridDim.x) {
        float yv[1][2] = {{0.0f, 0.0f}};
        double_buffered<false, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                mma_group<false, 1>(yv, w, d, m, act2, gsum, P, grp, g, t);
            });
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) cur = first_loads(tile + gridDim.x);
        if (t == 0) {
            red[warp * 16 + g] = yv[0][0];
            red[warp * 16 + g + 8] = yv[0][1];
        }
        __syncthreads();
        if (threadIdx.x < 16) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
            const int r = done.tile * 16 + threadIdx.x;
            if (r < done.rows) y[done.ybase + r] = s;
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(MMA_THREADS, 3)
    lab_w2_pdl(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,
               const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,
               float* y, int r0, int r1, int r2, int k, int bf16) {
    lab_wide_pdl<2>(c0, d0, c1, d1, c2, d2, x, y, r0, r1, r2, k, bf16);
}

// ---- candidate: a tile-major code layout. Each (16-row tile, group of 128) is 1 KB stored in
// the order the warp reads it (load e of lane l at uint4 64·(tile·G + group) + 32e + l), so
// each load instruction is 512 contiguous bytes (4 whole 128-byte lines) instead of 8 rows'
// 64-byte halves; scales [tile][group][16]. Timing only (the codes are random either way).
template <int U>
__device__ __forceinline__ void tm_load(uint4 (&w)[U][1][2], float (&d)[U][1][2],
                                        const uint4* __restrict__ codes,
                                        const u16* __restrict__ dsc, int tile, int gs, int G,
                                        int lane, int g) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int gg = min(gs + u, G - 1);
        const size_t base = (size_t)tile * G + gg;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            w[u][0][e] = load_codes(codes + base * 64 + 32 * e + lane);
            d[u][0][e] = f16_to_f32(__ldg(dsc + base * 16 + g + 8 * e));
        }
    }
}

template <int U>
__device__ __forceinline__ void lab_tm(const uint4* c0, const u16* d0, const uint4* c1,
                                       const u16* d1, const uint4* c2, const u16* d2,
                                       const float* __restrict__ x, float* __restrict__ y,
                                       int r0, int r1, int r2, int k, int bf16) {
    const int G = k >> 7, P = MMA_PLANE(k);
    uint4* act = mma_smem;
    float* gsum = (float*)(mma_smem + 8 * P);
    float* red = gsum + G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    int tile = blockIdx.x;
    uint4 wa[U][1][2], wb[U][1][2];
    float da[U][1][2], db[U][1][2], m[1][2] = {{0.f, 0.f}};
    MmaMat cur;
    if (tile < tiles) {
        cur = mma_pick(tile, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
        if (gb < ge) tm_load<U>(wa, da, cur.codes, cur.d, cur.tile, gb, G, lane, g);
    }
    stage_x<false>(x, act, gsum, P, k, bf16, lane);
    const uint2* act2 = (const uint2*)act;
    for (; tile < tiles; tile += gridDim.x) {
        float yv[1][2] = {{0.0f, 0.0f}};
        for (int gs = gb; gs < ge; gs += 2 * U) {
            if (gs + U < ge) tm_load<U>(wb, db, cur.codes, cur.d, cur.tile, gs + U, G, lane, g);
#pragma unroll
            for (int u = 0; u < U; u++)
                if (gs + u < ge) mma_group<false, 1>(yv, wa[u], da[u], m, act2, gsum, P, gs + u, g, t);
            if (gs + U < ge) {
                if (gs + 2 * U < ge) tm_load<U>(wa, da, cur.codes, cur.d, cur.tile, gs + 2 * U, G, lane, g);
#pragma unroll
                for (int u = 0; u < U; u++)
                    if (gs + U + u < ge)
                        mma_group<false, 1>(yv, wb[u], db[u], m, act2, gsum, P, gs + U + u, g, t);
            }
        }
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) {
            cur = mma_pick(tile + gridDim.x, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
            if (gb < ge) tm_load<U>(wa, da, cur.codes, cur.d, cur.tile, gb, G, lane, g);
        }
        if (t == 0) {
            red[warp * 16 + g] = yv[0][0];
            red[warp * 16 + g + 8] = yv[0][1];
        }
        __syncthreads();
        if (threadIdx.x < 16) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
            const int r = done.tile * 16 + threadIdx.x;
            if (r < done.rows) y[done.ybase + r] = s;
        }
        __syncthreads();
    }
}

#define LAB_TM(name, U, BLOCKS)                                                                \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                          \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,    \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,     \
             float* y, int r0, int r1, int r2, int k, int bf16) {                              \
        lab_tm<U>(c0, d0, c1, d1, c2, d2, x, y, r0, r1, r2, k, bf16);                          \
    }
LAB_TM(lab_tm2, 2, 3)
LAB_TM(lab_tm2b2, 2, 2)
LAB_TM(lab_tm4, 4, 2)

MMA_GEMM_WIDE_KERNEL(lab_g4_b2, false, 1, 2, 2)

// ---- candidate: the runtime's kernel (mma_u4_w2), with each block's share of the next
// product's first bytes requested into L2 (`prefetch.global.L2`), so that HBM stays busy
// through this product's tail and the next launch's ramp (the lab's cost model: ~4 µs per
// product that streams nothing). PF = 1: after the block's last tile; PF = 2: before staging x;
// EL: the prefetch with L2::evict_last. Outputs bit-identical to mma_u4_w2 (same body).
struct Pf {
    const char* p[3];
    long long n[3];  // bytes of each range (multiples of 128)
};
template <int EL>
__device__ __forceinline__ void l2_share(const Pf& pf) {
    const long long total = pf.n[0] + pf.n[1] + pf.n[2];
    if (total <= 0) return;
    const long long per = ((total + gridDim.x - 1) / gridDim.x + 127) & ~127ll;
    const long long s = (long long)blockIdx.x * per, e = min(total, s + per);
    for (long long a = s + threadIdx.x * 128ll; a < e; a += (long long)blockDim.x * 128ll) {
        int j = 0;
        long long o = a;
        if (o >= pf.n[0]) {
            o -= pf.n[0];
            j = 1;
            if (o >= pf.n[1]) o -= pf.n[1], j = 2;
        }
        const char* q = pf.p[j] + o;
        if (EL) asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(q));
        else asm volatile("prefetch.global.L2 [%0];" ::"l"(q));
    }
}
#define LAB_PF(name, PF, EL)                                                                   \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, 3)                               \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,    \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,     \
             float* y, int r0, int r1, int r2, int k, int bf16, Pf pf) {                       \
        if (PF == 2) l2_share<EL>(pf);                                                         \
        mma_gemv_wide<false, 2>(c0, d0, m0, c1, d1, m1, c2, d2, m2, x, y, r0, r1, r2, k, bf16); \
        if (PF == 1) l2_share<EL>(pf);                                                         \
    }
LAB_PF(lab_pf_end, 1, 0)
LAB_PF(lab_pf_start, 2, 0)
LAB_PF(lab_pf_end_el, 1, 1)

// ---- candidate "lean": mma_u4_w2's tiles, split and loads with fewer instructions per code.
// The kernel is issue-bound, not memory-bound (ncu, s34: 0.63 warp-instructions issued per
// scheduler-cycle at 42% of DRAM peak; its time scales with the SM clock), so each 32-bit A
// register is made by one lop3 alone: (v & 0x000f000f) | 0x43004300 is the bf16 pair
// (128 + u0, 128 + u1), exact, and the offset comes out per group in f32 as
// Σ(u − 8)x = Σ(128 + u)x − 136·Σx, with Σx (of hi + lo, the B operand exactly) from stage_x.
// The subtraction cancels ~136·Σ|x| to the result's ~8·√128·|x|: relative error ~1e-5 of the
// output's scale (f32 accumulate), not bit-identical to mma_u4_w2.
__device__ __forceinline__ u32 magic_bf16(u32 v, u32 mask) {
    u32 b;
    asm("lop3.b32 %0, %1, %2, 0x43004300, 0xEA;" : "=r"(b) : "r"(v), "r"(mask));
    return b;
}
__device__ __forceinline__ void lean_group(float (&yv)[1][2], const uint4 (&w)[1][2],
                                           const float (&d)[1][2], const uint2* act2,
                                           const float* gsum, int P, int grp, int g, int t) {
    const int c0 = 4 * grp;
    u32 mask = 0x000f000fu;
    asm volatile("" : "+r"(mask));
    float acc[2][4];
#pragma unroll
    for (int j = 0; j < 4; j++) acc[0][j] = acc[1][j] = 0.0f;
#pragma unroll
    for (int s = 0; s < 8; s++) {
        const int q = s & 3, sh = 4 * (s >> 2);
        uint2 b = act2[2 * (s * P + c0 + t) + (g & 1)];
        u32 w0 = word(w[0][0], q), w1 = word(w[0][1], q);
        mma_bf16(acc[s & 1], magic_bf16(w0 >> sh, mask), magic_bf16(w1 >> sh, mask),
                 magic_bf16(w0 >> (8 + sh), mask), magic_bf16(w1 >> (8 + sh), mask), b.x, b.y);
    }
    const float sx = 136.0f * gsum[grp];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float v = (acc[0][2 * e] + acc[0][2 * e + 1]) + (acc[1][2 * e] + acc[1][2 * e + 1]);
        yv[0][e] += d[0][e] * (v - sx);
    }
}
template <int U>
__device__ __forceinline__ void lab_lean(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const float* __restrict__ x, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int bf16) {
    const int C = k >> 5, G = k >> 7, P = MMA_PLANE(k);
    uint4* act = mma_smem;
    float* gsum = (float*)(mma_smem + 8 * P);
    float* red = gsum + G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
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
    stage_x<true>(x, act, gsum, P, k, bf16, lane);
    const uint2* act2 = (const uint2*)act;
    for (; tile < tiles; tile += gridDim.x) {
        float yv[1][2] = {{0.0f, 0.0f}};
        double_buffered<false, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                lean_group(yv, w, d, act2, gsum, P, grp, g, t);
            });
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) cur = first_loads(tile + gridDim.x);
        if (t == 0) {
            red[warp * 16 + g] = yv[0][0];
            red[warp * 16 + g + 8] = yv[0][1];
        }
        __syncthreads();
        if (threadIdx.x < 16) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
            const int r = done.tile * 16 + threadIdx.x;
            if (r < done.rows) y[done.ybase + r] = s;
        }
        __syncthreads();
    }
}
#define LAB_LEAN(name, U, BLOCKS)                                                              \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                          \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,    \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,     \
             float* y, int r0, int r1, int r2, int k, int bf16) {                              \
        lab_lean<U>(c0, d0, c1, d1, c2, d2, x, y, r0, r1, r2, k, bf16);                        \
    }
LAB_LEAN(lab_lean2, 2, 3)
LAB_LEAN(lab_lean2b2, 2, 2)
LAB_LEAN(lab_lean4, 4, 2)

// ---- candidate "bulk": the codes stream into shared memory by the copy engine
// (cp.async.bulk, completion on an mbarrier per stage), ST stages of 16 rows × 512 bytes
// (1,024 weights: 8 groups, one per warp) in flight per block, kept full across tile ends. The
// register-buffered kernels keep at most 2–4 groups per warp in flight and drain them at every
// tile end; here the loads in flight do not depend on the warps' progress (one
// __syncthreads per stage frees it). The group math is mma_u4_w2's (mma_group); a warp sums
// groups w, w + 8, … of a tile, so sums are in another order (not bit-identical). Needs
// k % 1024 == 0 (every Llama-3-8B width).
#define BK_SEG 512
#define BK_ROW (BK_SEG + 16)  // smem row stride: rows 512 bytes apart would hit the same banks
#define BK_STAGE (16 * BK_ROW)
__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void bk_wait(unsigned long long* bar, u32 parity) {
    u32 ok;
    do {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            " selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(ok)
            : "r"(smem_u32(bar)), "r"(parity)
            : "memory");
    } while (!ok);
}
template <int ST>
__device__ __forceinline__ void lab_bulk(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const float* __restrict__ x, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int bf16) {
    const int G = k >> 7, P = MMA_PLANE(k), S = k >> 10;
    const size_t rowb = (size_t)k >> 1;
    unsigned long long* bar = (unsigned long long*)mma_smem;  // [ST], in the first 128 bytes
    char* stg = (char*)(mma_smem + 8);
    uint4* act = (uint4*)(stg + ST * BK_STAGE);
    float* gsum = (float*)(act + 8 * P);
    float* red = gsum + G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int mine = tiles > (int)blockIdx.x ? (tiles - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
    const int units = mine * S;
    auto issue = [&](int u) {  // thread 0: unit u's 16 row segments into stage u % ST
        const int tl = blockIdx.x + (u / S) * gridDim.x, seg = u % S;
        const MmaMat m = mma_pick(tl, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
        unsigned long long* b = bar + (u % ST);
        char* dst = stg + (u % ST) * BK_STAGE;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)),
                     "r"(16 * BK_SEG)
                     : "memory");
#pragma unroll 4
        for (int i = 0; i < 16; i++) {
            const int r = min(m.rows - 1, m.tile * 16 + i);
            const char* src = (const char*)m.codes + (size_t)r * rowb + (size_t)seg * BK_SEG;
            asm volatile(
                "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                "%2, [%3];" ::"r"(smem_u32(dst + i * BK_ROW)),
                "l"(src), "r"(BK_SEG), "r"(smem_u32(b))
                : "memory");
        }
    };
    if (threadIdx.x == 0) {
        for (int i = 0; i < ST; i++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar + i)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        for (int u = 0; u < min(ST, units); u++) issue(u);
    }
    stage_x<false>(x, act, gsum, P, k, bf16, lane);  // ends with __syncthreads
    const uint2* act2 = (const uint2*)act;
    auto scales = [&](int u, float (&d)[1][2]) {
        const int tl = blockIdx.x + (u / S) * gridDim.x, grp = (u % S) * 8 + warp;
        const MmaMat m = mma_pick(tl, c0, d0, d0, c1, d1, d1, c2, d2, d2, r0, r1, r2);
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int r = min(m.rows - 1, m.tile * 16 + g + 8 * e);
            d[0][e] = f16_to_f32(__ldg(m.d + (size_t)r * G + grp));
        }
    };
    float yv[1][2] = {{0.0f, 0.0f}};
    float dc[1][2] = {{0.0f, 0.0f}}, dn[1][2] = {{0.0f, 0.0f}};
    const float mz[1][2] = {{0.0f, 0.0f}};
    if (units > 0) scales(0, dc);
    for (int u = 0; u < units; u++) {
        const int seg = u % S;
        if (u + 1 < units) scales(u + 1, dn);
        bk_wait(bar + u % ST, (u / ST) & 1);
        const char* sb = stg + (u % ST) * BK_STAGE + warp * 64 + t * 16;
        uint4 w[1][2];
        w[0][0] = *(const uint4*)(sb + g * BK_ROW);
        w[0][1] = *(const uint4*)(sb + (g + 8) * BK_ROW);
        mma_group<false, 1>(yv, w, dc, mz, act2, gsum, P, seg * 8 + warp, g, t);
        const bool last = seg == S - 1;
        if (last && t == 0) {
            red[warp * 16 + g] = yv[0][0];
            red[warp * 16 + g + 8] = yv[0][1];
        }
        __syncthreads();  // stage u % ST is free, red is complete
        if (threadIdx.x == 0 && u + ST < units) issue(u + ST);
        if (last) {
            if (threadIdx.x < 16) {
                const MmaMat m = mma_pick(blockIdx.x + (u / S) * gridDim.x, c0, d0, d0, c1, d1,
                                          d1, c2, d2, d2, r0, r1, r2);
                float s = 0.0f;
#pragma unroll
                for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
                const int r = m.tile * 16 + threadIdx.x;
                if (r < m.rows) y[m.ybase + r] = s;
            }
            if (S == 1) __syncthreads();  // red is written again in the next unit
            yv[0][0] = yv[0][1] = 0.0f;
        }
        dc[0][0] = dn[0][0], dc[0][1] = dn[0][1];
    }
}
#define LAB_BULK(name, ST, BLOCKS)                                                             \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, BLOCKS)                          \
        name(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,    \
             const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,     \
             float* y, int r0, int r1, int r2, int k, int bf16) {                              \
        lab_bulk<ST>(c0, d0, c1, d1, c2, d2, x, y, r0, r1, r2, k, bf16);                       \
    }
LAB_BULK(lab_bulk4, 4, 2)
LAB_BULK(lab_bulk6, 6, 2)
LAB_BULK(lab_bulk3, 3, 3)

// ---- probes (s34): the products' loads with no arithmetic, to separate the access pattern
// from the math. Outputs are meaningless (an xor of the codes, so the loads stay).
// rd_w2: mma_u4_w2's addresses, split, double buffering and per-tile sums, the math replaced
// by an xor. rd_tile: the same tiles per block, each tile's 16 rows (contiguous bytes) read
// by the whole block as one stream, 8 loads per thread in flight, no syncs.
template <int U>
__device__ __forceinline__ void rd_w2(const uint4* c0, const u16* d0, const uint4* c1,
                                      const u16* d1, const uint4* c2, const u16* d2,
                                      float* __restrict__ y, int r0, int r1, int r2, int k) {
    const int C = k >> 5, G = k >> 7;
    float* red = (float*)mma_smem;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int per = (G + MMA_WARPS - 1) / MMA_WARPS;
    const int gb = min(G, warp * per), ge = min(G, gb + per);
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
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
        u32 acc = 0;
        float fs = 0.0f;
        double_buffered<false, 1, U>(
            wa, da, ma, cur.codes, cur.d, cur.m, row, gb, ge, G, C, t,
            [&](const uint4(&w)[1][2], const float(&d)[1][2], const float(&m)[1][2], int grp) {
                acc ^= w[0][0].x ^ w[0][0].y ^ w[0][0].z ^ w[0][0].w ^ w[0][1].x ^ w[0][1].y ^
                       w[0][1].z ^ w[0][1].w;
                fs += d[0][0] + d[0][1];
            });
        const MmaMat done = cur;
        if (tile + (int)gridDim.x < tiles) cur = first_loads(tile + gridDim.x);
        if (t == 0) red[warp * 16 + g] = __uint_as_float(acc) + fs;
        __syncthreads();
        if (threadIdx.x < 16) {
            float s = 0.0f;
#pragma unroll
            for (int wp = 0; wp < MMA_WARPS; wp++) s += red[wp * 16 + threadIdx.x];
            const int r = done.tile * 16 + threadIdx.x;
            if (r < done.rows) y[done.ybase + r] = s;
        }
        __syncthreads();
    }
}
__device__ __forceinline__ void rd_tile(const uint4* c0, const uint4* c1, const uint4* c2,
                                        float* __restrict__ y, int r0, int r1, int r2, int k) {
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int n16 = k >> 1;  // 16-byte words per tile: 16 rows · k/2 bytes / 16
    u32 acc = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const MmaMat m = mma_pick(tile, c0, nullptr, nullptr, c1, nullptr, nullptr, c2, nullptr,
                                  nullptr, r0, r1, r2);
        const uint4* base = m.codes + (size_t)m.tile * n16;
        for (int i0 = threadIdx.x; i0 < n16; i0 += 8 * MMA_THREADS) {
            uint4 v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int i = i0 + u * MMA_THREADS;
                v[u] = i < n16 ? load_codes(base + i) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < 8; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
        }
    }
    if (acc == 0x12345678u) y[threadIdx.x] = 1.0f;  // keeps the loads
}
extern "C" __global__ void __launch_bounds__(MMA_THREADS, 3)
    lab_rd_w2(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,
              const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,
              float* y, int r0, int r1, int r2, int k, int bf16) {
    rd_w2<2>(c0, d0, c1, d1, c2, d2, y, r0, r1, r2, k);
}
// rd_tile under programmatic dependent launch: a block requests its first 8 loads per thread,
// then waits for the previous grid (as a product must for its x), then reads on. Launched with
// the PDL attribute, the next product's blocks can start while this one's last blocks run.
__device__ __forceinline__ void rd_tile_pdl(const uint4* c0, const uint4* c1, const uint4* c2,
                                            float* __restrict__ y, int r0, int r1, int r2, int k) {
    asm volatile("griddepcontrol.launch_dependents;");
    const int tiles = ((r0 + 15) >> 4) + ((r1 + 15) >> 4) + ((r2 + 15) >> 4);
    const int n16 = k >> 1;
    u32 acc = 0;
    bool waited = false;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const MmaMat m = mma_pick(tile, c0, nullptr, nullptr, c1, nullptr, nullptr, c2, nullptr,
                                  nullptr, r0, r1, r2);
        const uint4* base = m.codes + (size_t)m.tile * n16;
        for (int i0 = threadIdx.x; i0 < n16; i0 += 8 * MMA_THREADS) {
            uint4 v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int i = i0 + u * MMA_THREADS;
                v[u] = i < n16 ? load_codes(base + i) : make_uint4(0, 0, 0, 0);
            }
            if (!waited) {
                asm volatile("griddepcontrol.wait;" ::: "memory");
                waited = true;
            }
#pragma unroll
            for (int u = 0; u < 8; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
        }
    }
    if (!waited) asm volatile("griddepcontrol.wait;" ::: "memory");
    if (acc == 0x12345678u) y[threadIdx.x] = 1.0f;
}
extern "C" __global__ void __launch_bounds__(MMA_THREADS, 3)
    lab_rd_tile_pdl(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,
                    const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,
                    float* y, int r0, int r1, int r2, int k, int bf16) {
    rd_tile_pdl(c0, c1, c2, y, r0, r1, r2, k);
}
extern "C" __global__ void __launch_bounds__(MMA_THREADS, 3)
    lab_rd_tile(const uint4* c0, const u16* d0, const u16* m0, const uint4* c1, const u16* d1,
                const u16* m1, const uint4* c2, const u16* d2, const u16* m2, const float* x,
                float* y, int r0, int r1, int r2, int k, int bf16) {
    rd_tile(c0, c1, c2, y, r0, r1, r2, k);
}

// ---- probes of cc_u4 (s34): where its time beyond a plain read goes. The runtime's body with
// STAGE = false (no x staging: the planes are left as they are, outputs meaningless) or
// MATH = false (each batch xor-folded into acc instead of multiplied, outputs meaningless).
__device__ __forceinline__ void cc_fold(const uint4 (&w)[2][4], const u32 (&sc)[2][4],
                                        float (&acc)[2]) {
    u32 v = 0;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) v ^= w[i][j].x ^ w[i][j].y ^ w[i][j].z ^ w[i][j].w ^ sc[i][j];
    acc[0] += __uint_as_float(v & 0x3fffffffu);
}
template <bool STAGE, bool MATH>
__device__ __forceinline__ void cc_probe(const uint4* c0, const u16* d0, const uint4* c1,
                                         const u16* d1, const uint4* c2, const u16* d2,
                                         const float* __restrict__ x, float* __restrict__ y,
                                         int r0, int r1, int r2, int k, int bf16) {
    extern __shared__ uint4 cc_smem[];
    const int C = k >> 5, G = k >> 7, S = (C + 31) >> 5;
    const int NB = (S + 3) >> 2;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int items = ((r0 + 1) >> 1) + ((r1 + 1) >> 1) + ((r2 + 1) >> 1);
    const int NW = gridDim.x * (CC_THREADS / 32);
    int it = warp * gridDim.x + blockIdx.x;
    asm volatile("griddepcontrol.launch_dependents;");
    float acc[2] = {0.0f, 0.0f};
    uint4 wa[2][4], wb[2][4];
    u32 sa[2][4], sb[2][4];
    int ba = 0;
    auto pick = [&](int i) { return cc_pick(i, c0, d0, c1, d1, c2, d2, r0, r1, r2); };
    auto compute = [&](const uint4(&w)[2][4], const u32(&sc)[2][4], int b) {
        if (MATH) cc_compute(w, sc, acc, cc_smem, b, S, C, lane);
        else cc_fold(w, sc, acc);
    };
    if (it < items) cc_load(wa, sa, pick(it), 0, S, C, G, lane);
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (STAGE) cc_stage(x, cc_smem, k, bf16);
    else __syncthreads();
    while (it < items) {
        int itb = it, bb = ba + 1;
        if (bb == NB) bb = 0, itb = it + NW;
        if (itb < items) cc_load(wb, sb, pick(itb), bb, S, C, G, lane);
        compute(wa, sa, ba);
        if (ba == NB - 1) cc_store(acc, pick(it), y, lane);
        if (itb >= items) break;
        it = itb, ba = bb + 1;
        if (ba == NB) ba = 0, it = itb + NW;
        if (it < items) cc_load(wa, sa, pick(it), ba, S, C, G, lane);
        compute(wb, sb, bb);
        if (bb == NB - 1) cc_store(acc, pick(itb), y, lane);
    }
}
#define CC_PROBE(name, STAGE, MATH)                                                            \
    extern "C" __global__ void __launch_bounds__(CC_THREADS, 1)                                \
        name(const uint4* c0, const u16* d0, const uint4* c1, const u16* d1, const uint4* c2,  \
             const u16* d2, const float* __restrict__ x, float* __restrict__ y, int r0, int r1, \
             int r2, int k, int bf16) {                                                        \
        cc_probe<STAGE, MATH>(c0, d0, c1, d1, c2, d2, x, y, r0, r1, r2, k, bf16);              \
    }
CC_PROBE(cc_probe_full, true, true)
CC_PROBE(cc_probe_nostage, false, true)
CC_PROBE(cc_probe_nomath, true, false)
CC_PROBE(cc_probe_neither, false, false)
typedef void (*PfFn)(const uint4*, const u16*, const u16*, const uint4*, const u16*, const u16*,
                     const uint4*, const u16*, const u16*, const float*, float*, int, int, int,
                     int, int, Pf);


typedef void (*GemmFn)(const uint4*, const u16*, const u16*, const uint2*, const float*, float*,
                       int, int, int);
typedef void (*GWideFn)(const uint4*, const u16*, const u16*, const uint4*, const u16*,
                        const u16*, const uint4*, const u16*, const u16*, const uint2*,
                        const float*, float*, int, int, int, int, int);

typedef void (*WideFn)(const uint4*, const u16*, const u16*, const uint4*, const u16*,
                       const u16*, const uint4*, const u16*, const u16*, const float*, float*,
                       int, int, int, int, int);

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e = (x);                                                                    \
        if (e != cudaSuccess) {                                                                 \
            fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));           \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

struct Mat {
    uint4* codes;
    u16* d;
    int rows, k;
};
static Mat make_mat(int rows, int k, unsigned seed) {
    Mat m{nullptr, nullptr, rows, k};
    size_t cb = (size_t)rows * k / 2, db = (size_t)rows * (k / 128) * 2;
    CK(cudaMalloc(&m.codes, cb));
    CK(cudaMalloc(&m.d, db));
    std::vector<unsigned> h(cb / 4);
    for (auto& v : h) v = (seed = seed * 1664525u + 1013904223u);
    CK(cudaMemcpy(m.codes, h.data(), cb, cudaMemcpyHostToDevice));
    std::vector<u16> hd(db / 2, 0x1400);
    CK(cudaMemcpy(m.d, hd.data(), db, cudaMemcpyHostToDevice));
    return m;
}

struct Product {
    const char* name;
    std::vector<Mat> mats;  // 1–3 of width k
    int k;
    size_t bytes() const {
        size_t b = 0;
        for (auto& m : mats) b += (size_t)m.rows * k / 2 + (size_t)m.rows * (k / 128) * 2;
        return b;
    }
};

static int sms;
// The runtime's CUDA-core kernel (packed/cc.cu: cc_u4): CC_THREADS per block, one
// resident wave, CC_SMEM(k) bytes of shared memory, as packed/cc.rs launches them; pdl: with
// the programmatic-serialization attribute.
typedef void (*CcFn)(const uint4*, const u16*, const uint4*, const u16*, const uint4*,
                     const u16*, const float*, float*, int, int, int, int, int);
static void launch_cc(WideFn fw, int threads, const Product& p, const float* x, float* y,
                      cudaStream_t st, bool pdl = false, int cap = 0, int ring = 0) {
    CcFn f = (CcFn)(void*)fw;
    int r[3] = {0, 0, 0}, items = 0;
    for (size_t j = 0; j < p.mats.size(); j++) r[j] = p.mats[j].rows, items += (r[j] + 1) / 2;
    const Mat& a = p.mats[0];
    const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
    const Mat& c = p.mats.size() > 2 ? p.mats[2] : a;
    const int smem = ring ? CCR_SMEM(p.k, ring) : CC_SMEM(p.k);
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, threads, smem));
    if (cap) per_sm = std::min(per_sm, cap);
    const int grid = std::min(std::max(per_sm, 1) * sms, items);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, f, (const uint4*)a.codes, (const u16*)a.d, (const uint4*)b.codes,
                          (const u16*)b.d, (const uint4*)c.codes, (const u16*)c.d, x, y, r[0],
                          r[1], r[2], p.k, 0));
}
static Pf g_pf = {{nullptr, nullptr, nullptr}, {0, 0, 0}};  // the next product's L2 share
static void launch(WideFn f, int per_sm, const Product& p, const float* x, float* y, bool pdl,
                   cudaStream_t st, int ring, int pf = 0) {
    int r[3] = {0, 0, 0}, tiles = 0;
    for (size_t j = 0; j < p.mats.size(); j++) r[j] = p.mats[j].rows, tiles += (r[j] + 15) / 16;
    const Mat& a = p.mats[0];
    const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
    const Mat& c = p.mats.size() > 2 ? p.mats[2] : a;
    int smem = 8 * (p.k / 32 + 1) * 16 + p.k / 128 * 4 + 8 * 16 * 4 + ring * 8 * 1088;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(std::min(tiles, per_sm * sms));
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    int bf16 = 0;
    if (pf) {
        CK(cudaLaunchKernelEx(&cfg, (PfFn)(void*)f, (const uint4*)a.codes, (const u16*)a.d,
                              (const u16*)a.d, (const uint4*)b.codes, (const u16*)b.d,
                              (const u16*)b.d, (const uint4*)c.codes, (const u16*)c.d,
                              (const u16*)c.d, x, y, r[0], r[1], r[2], p.k, bf16, g_pf));
        return;
    }
    CK(cudaLaunchKernelEx(&cfg, f, (const uint4*)a.codes, (const u16*)a.d, (const u16*)a.d,
                          (const uint4*)b.codes, (const u16*)b.d, (const u16*)b.d,
                          (const uint4*)c.codes, (const u16*)c.d, (const u16*)c.d, x, y, r[0],
                          r[1], r[2], p.k, bf16));
}

int main(int argc, char** argv) {
    int layers = argc > 1 ? atoi(argv[1]) : 8;
    int repeats = argc > 2 ? atoi(argv[2]) : 10;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    sms = prop.multiProcessorCount;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    // Streaming read bandwidth (the crunch bench's reference): the xor kernel over 4 GiB.
    // Here: cudaMemcpy device→device halves it; use a simple read kernel instead.
    std::vector<std::vector<Product>> blocks(layers);
    unsigned seed = 1;
    for (int l = 0; l < layers; l++) {
        blocks[l].push_back({"q+k+v", {make_mat(4096, 4096, seed++), make_mat(1024, 4096, seed++),
                                       make_mat(1024, 4096, seed++)}, 4096});
        blocks[l].push_back({"o", {make_mat(4096, 4096, seed++)}, 4096});
        blocks[l].push_back({"gate+up", {make_mat(14336, 4096, seed++), make_mat(14336, 4096, seed++)}, 4096});
        blocks[l].push_back({"down", {make_mat(4096, 14336, seed++)}, 14336});
    }
    float *x, *y;
    CK(cudaMalloc(&x, 14336 * 32 * 4));
    CK(cudaMalloc(&y, 28672 * 32 * 4));
    {
        std::vector<float> hx(14336 * 32);
        for (size_t i = 0; i < hx.size(); i++) hx[i] = ((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
        CK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
    }
    {  // streaming read bandwidth as crunch's read_bandwidth measures it (4 GiB, sms·8 blocks)
        size_t n = (4ull << 30) / 16;
        uint4* buf;
        u32* out;
        CK(cudaMalloc(&buf, n * 16));
        CK(cudaMalloc(&out, 4));
        CK(cudaMemset(buf, 1, n * 16));
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        float best = 1e30f;
        for (int i = 0; i < 10; i++) {
            CK(cudaEventRecord(a, st));
            stream_read<<<sms * 8, 256, 0, st>>>(buf, (long long)n, out);
            CK(cudaEventRecord(b, st));
            CK(cudaEventSynchronize(b));
            float ms;
            CK(cudaEventElapsedTime(&ms, a, b));
            if (ms < best) best = ms;
        }
        printf("{\"what\":\"hbm_read\",\"gb_per_s\":%.0f,\"device\":\"%s\"}\n", n * 16 / (best * 1e-3) / 1e9, prop.name);
        CK(cudaFree(buf));
    }
    // ring: unused (0); pf: passes the next product's L2 share; cap: blocks per SM at most
    struct K { const char* name; WideFn f; bool pdl; int ring = 0; int alloc = 0; int pf = 0; int cap = 0; int cc = 0; int ccr = 0; };
    const double pf_mb = getenv("LAB_PF_MB") ? atof(getenv("LAB_PF_MB")) : 16.0;
    // The next product's first codes (matrix by matrix) up to pf_mb MB: its first wave's tiles.
    auto set_pf = [&](const Product& nx) {
        long long left = (long long)(pf_mb * 1048576.0) & ~127ll;
        for (int j = 0; j < 3; j++) {
            g_pf.p[j] = nullptr, g_pf.n[j] = 0;
            if (j < (int)nx.mats.size()) {
                long long b = (long long)nx.mats[j].rows * nx.k / 2;
                g_pf.p[j] = (const char*)nx.mats[j].codes;
                g_pf.n[j] = std::min(left, b);
                left -= g_pf.n[j];
            }
        }
    };
    std::vector<K> ks = {
        {"mma_u4_w2", (WideFn)mma_u4_w2, false},
        {"mma_u4_w4", (WideFn)mma_u4_w4, false},
        {"mma_u4_w2+alloc", (WideFn)mma_u4_w2, false, 0, 1},
        {"lab_w2_pdl", (WideFn)lab_w2_pdl, true},
        {"lab_tm2", (WideFn)lab_tm2, false},
        {"lab_tm2b2", (WideFn)lab_tm2b2, false},
        {"lab_tm4", (WideFn)lab_tm4, false},
        {"lab_pf_end", (WideFn)(void*)lab_pf_end, false, 0, 0, 1},
        {"lab_pf_start", (WideFn)(void*)lab_pf_start, false, 0, 0, 1},
        {"lab_pf_end_el", (WideFn)(void*)lab_pf_end_el, false, 0, 0, 1},
        {"lab_w2_pdl@2", (WideFn)lab_w2_pdl, true, 0, 0, 0, 2},
        {"lab_pf_end@2", (WideFn)(void*)lab_pf_end, false, 0, 0, 1, 2},
        {"lab_lean2", (WideFn)lab_lean2, false},
        {"lab_lean2b2", (WideFn)lab_lean2b2, false},
        {"lab_lean4", (WideFn)lab_lean4, false},
        {"lab_lean2+pdl", (WideFn)lab_lean2, true},
        // ring: extra shared memory in units of 8·1088 bytes (the stages and barriers)
        {"lab_bulk4", (WideFn)lab_bulk4, false, 4},
        {"lab_bulk6", (WideFn)lab_bulk6, false, 6},
        {"lab_bulk3", (WideFn)lab_bulk3, false, 3},
        {"lab_rd_w2", (WideFn)lab_rd_w2, false},
        {"lab_rd_tile", (WideFn)lab_rd_tile, false},
        {"lab_rd_tile_pdl", (WideFn)lab_rd_tile_pdl, true},
        {"lab_rd_tile@2", (WideFn)lab_rd_tile, false, 0, 0, 0, 2},
        {"lab_rd_tile_pdl@2", (WideFn)lab_rd_tile_pdl, true, 0, 0, 0, 2},
        {"cc_u4", (WideFn)(void*)cc_u4, false, 0, 0, 0, 0, CC_THREADS},
        {"cc_u4+pdl", (WideFn)(void*)cc_u4, true, 0, 0, 0, 0, CC_THREADS},
        {"cc_probe_full+pdl", (WideFn)(void*)cc_probe_full, true, 0, 0, 0, 0, CC_THREADS},
        {"cc_probe_nostage+pdl", (WideFn)(void*)cc_probe_nostage, true, 0, 0, 0, 0, CC_THREADS},
        {"cc_probe_nomath+pdl", (WideFn)(void*)cc_probe_nomath, true, 0, 0, 0, 0, CC_THREADS},
        {"cc_probe_neither+pdl", (WideFn)(void*)cc_probe_neither, true, 0, 0, 0, 0, CC_THREADS},
        {"ccr4+pdl", (WideFn)(void*)ccr4, true, 0, 0, 0, 0, CC_THREADS, 4},
        {"ccr6+pdl", (WideFn)(void*)ccr6, true, 0, 0, 0, 0, CC_THREADS, 6},
        {"ccr8+pdl", (WideFn)(void*)ccr8, true, 0, 0, 0, 0, CC_THREADS, 8},
        {"ccr9+pdl", (WideFn)(void*)ccr9, true, 0, 0, 0, 0, CC_THREADS, 9},
        {"ccr8_nomath+pdl", (WideFn)(void*)ccr8_nomath, true, 0, 0, 0, 0, CC_THREADS, 8},
        {"ccr8_nostage+pdl", (WideFn)(void*)ccr8_nostage, true, 0, 0, 0, 0, CC_THREADS, 8},
        {"ccr8_neither+pdl", (WideFn)(void*)ccr8_neither, true, 0, 0, 0, 0, CC_THREADS, 8},
    };
    if (getenv("LAB_ONLY")) {  // e.g. LAB_ONLY=mma_u4_w2,lab_tm4: the first must be mma_u4_w2
        std::string only = std::string(",") + getenv("LAB_ONLY") + ",";
        std::vector<K> keep;
        for (auto& kk : ks)
            if (only.find(std::string(",") + kk.name + ",") != std::string::npos) keep.push_back(kk);
        ks = keep;
    }
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    size_t per_layer = 0;
    for (auto& p : blocks[0]) per_layer += p.bytes();
    for (auto& kk : ks) {
        int smax = 8 * (14336 / 32 + 1) * 16 + 14336 / 128 * 4 + 512 + kk.ring * 8 * 1088;
        if (kk.ccr) smax = CCR_SMEM(14336, kk.ccr);
        CK(cudaFuncSetAttribute(kk.f, cudaFuncAttributeMaxDynamicSharedMemorySize, smax));
        auto run = [&](int which) {  // which: -1 all products, else product index
            float best = 1e30f;
            for (int rep = 0; rep < repeats + 1; rep++) {
                spin<<<1, 1, 0, st>>>(20000000);
                CK(cudaEventRecord(e0, st));
                for (int l = 0; l < layers; l++)
                    for (int pi = 0; pi < 4; pi++) {
                        if (which >= 0 && pi != which) continue;
                        const Product& p = blocks[l][pi];
                        if (kk.cc) {
                            launch_cc(kk.f, kk.cc, p, x, y, st, kk.pdl, kk.cap, kk.ccr);
                            continue;
                        }
                        int smem = 8 * (p.k / 32 + 1) * 16 + p.k / 128 * 4 + 8 * 16 * 4 + kk.ring * 8 * 1088;
                        int per_sm = 0;
                        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kk.f, 256, smem));
                        if (kk.cap) per_sm = std::min(per_sm, kk.cap);
                        if (kk.pf) {  // the product launched after this one in the loop
                            int nl = l, np = pi + 1;
                            if (which >= 0) nl = l + 1, np = pi;
                            else if (np == 4) nl = l + 1, np = 0;
                            set_pf(blocks[nl % layers][np]);
                        }
                        if (kk.alloc) {  // as crunch's runtime: a stream-ordered output per product
                            float* yy;
                            CK(cudaMallocAsync(&yy, 28672 * 4, st));
                            launch(kk.f, std::max(per_sm, 1), p, x, yy, kk.pdl, st, kk.ring);
                            CK(cudaFreeAsync(yy, st));
                        } else {
                            launch(kk.f, std::max(per_sm, 1), p, x, y, kk.pdl, st, kk.ring, kk.pf);
                        }
                    }
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (rep > 0 && ms < best) best = ms;
            }
            return best / layers;  // ms per layer (per product when which >= 0)
        };
        float layer_ms = run(-1);
        printf("{\"kernel\":\"%s\",\"what\":\"block\",\"us\":%.2f,\"gb_per_s\":%.0f,\"token_ms\":%.3f}\n",
               kk.name, layer_ms * 1e3, per_layer / (layer_ms * 1e-3) / 1e9, layer_ms * 32);
        for (int pi = 0; pi < 4; pi++) {
            float ms = run(pi);
            size_t b = blocks[0][pi].bytes();
            printf("{\"kernel\":\"%s\",\"what\":\"%s\",\"us\":%.2f,\"gb_per_s\":%.0f}\n", kk.name,
                   blocks[0][pi].name, ms * 1e3, b / (ms * 1e-3) / 1e9);
        }
        // Outputs of layer 0's products against the first kernel's (mma_u4_w2): the candidates
        // keep its tiles, split and sums, so they must be bit-identical.
        static std::vector<std::vector<float>> ref;
        double maxdiff = 0, maxref = 0;
        for (int pi = 0; pi < 4; pi++) {
            const Product& p = blocks[0][pi];
            int rows = 0;
            for (auto& m : p.mats) rows += m.rows;
            CK(cudaMemsetAsync(y, 0, rows * 4, st));
            int smem = 8 * (p.k / 32 + 1) * 16 + p.k / 128 * 4 + 8 * 16 * 4 + kk.ring * 8 * 1088;
            int per_sm = 0;
            g_pf = Pf{{nullptr, nullptr, nullptr}, {0, 0, 0}};
            if (kk.cc) {
                launch_cc(kk.f, kk.cc, p, x, y, st, false, 0, kk.ccr);
            } else {
                CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kk.f, 256, smem));
                if (kk.cap) per_sm = std::min(per_sm, kk.cap);
                launch(kk.f, std::max(per_sm, 1), p, x, y, false, st, kk.ring, kk.pf);
            }
            std::vector<float> h(rows);
            // st is a non-blocking stream: cudaMemcpy does not wait for it (before s34 this
            // check read the outputs while the kernel still ran, and reported differences
            // of ~0.57 for candidates whose outputs were not compared at all).
            CK(cudaStreamSynchronize(st));
            CK(cudaMemcpy(h.data(), y, rows * 4, cudaMemcpyDeviceToHost));
            if (ref.size() < 4) ref.push_back(h);
            else
                for (int i = 0; i < rows; i++) {
                    maxdiff = std::max(maxdiff, (double)fabsf(h[i] - ref[pi][i]));
                    maxref = std::max(maxref, (double)fabsf(ref[pi][i]));
                }
        }
        printf("{\"kernel\":\"%s\",\"what\":\"max_abs_diff_vs_mma_u4_w2\",\"value\":%g,\"max_abs_ref\":%g}\n", kk.name, maxdiff, maxref);
        fflush(stdout);
    }
    // ---- s36 probe: the chain as one persistent kernel (chain.cu), against cc_u4 for outputs.
    if (!getenv("LAB_NO_CHAIN")) {
        unsigned* ctr;
        CK(cudaMalloc(&ctr, 4));
        auto mkprods = [&](int which, int nl) {
            std::vector<ChainProd> v;
            for (int l = 0; l < nl; l++)
                for (int pi = 0; pi < 4; pi++) {
                    if (which >= 0 && pi != which) continue;
                    const Product& p = blocks[l][pi];
                    const Mat& a = p.mats[0];
                    const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
                    const Mat& c = p.mats.size() > 2 ? p.mats[2] : a;
                    ChainProd cp;
                    cp.c0 = a.codes, cp.c1 = b.codes, cp.c2 = c.codes;
                    cp.d0 = a.d, cp.d1 = b.d, cp.d2 = c.d;
                    cp.r0 = a.rows, cp.r1 = p.mats.size() > 1 ? b.rows : 0;
                    cp.r2 = p.mats.size() > 2 ? c.rows : 0, cp.k = p.k;
                    v.push_back(cp);
                }
            ChainProd* d;
            CK(cudaMalloc(&d, v.size() * sizeof(ChainProd)));
            CK(cudaMemcpy(d, v.data(), v.size() * sizeof(ChainProd), cudaMemcpyHostToDevice));
            return std::make_pair(d, (int)v.size());
        };
        typedef void (*ChainFn)(const ChainProd*, int, const float*, float*, unsigned*);
        struct CKn { const char* name; ChainFn f; };
        std::vector<CKn> cks = {{"chain_cc", chain_cc}, {"chain_cc_cross", chain_cc_cross}};
        const int smem = CC_SMEM(14336);
        auto chain_launch = [&](ChainFn f, const ChainProd* pr, int P) {
            float* yy = y;
            const float* xx = x;
            void* args[] = {(void*)&pr, (void*)&P, (void*)&xx, (void*)&yy, (void*)&ctr};
            CK(cudaLaunchKernel((const void*)f, dim3(sms), dim3(CC_THREADS), args, smem, st));
        };
        for (auto& ck : cks) {
            CK(cudaFuncSetAttribute(ck.f, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
            auto run = [&](int which) {
                auto pr = mkprods(which, layers);
                float best = 1e30f;
                for (int rep = 0; rep < repeats + 1; rep++) {
                    CK(cudaMemsetAsync(ctr, 0, 4, st));
                    spin<<<1, 1, 0, st>>>(20000000);
                    CK(cudaEventRecord(e0, st));
                    chain_launch(ck.f, pr.first, pr.second);
                    CK(cudaEventRecord(e1, st));
                    CK(cudaEventSynchronize(e1));
                    float ms;
                    CK(cudaEventElapsedTime(&ms, e0, e1));
                    if (rep > 0 && ms < best) best = ms;
                }
                CK(cudaFree(pr.first));
                return best / layers;
            };
            float layer_ms = run(-1);
            printf("{\"kernel\":\"%s\",\"what\":\"block\",\"us\":%.2f,\"gb_per_s\":%.0f,\"token_ms\":%.3f}\n",
                   ck.name, layer_ms * 1e3, per_layer / (layer_ms * 1e-3) / 1e9, layer_ms * 32);
            for (int pi = 0; pi < 4; pi++) {
                float ms = run(pi);
                size_t b = blocks[0][pi].bytes();
                printf("{\"kernel\":\"%s\",\"what\":\"%s\",\"us\":%.2f,\"gb_per_s\":%.0f}\n", ck.name,
                       blocks[0][pi].name, ms * 1e3, b / (ms * 1e-3) / 1e9);
            }
            // Outputs of layer 0's products against cc_u4's (same sums: bit-identical expected).
            double maxdiff = 0, maxref = 0;
            for (int pi = 0; pi < 4; pi++) {
                const Product& p = blocks[0][pi];
                int rows = 0;
                for (auto& m : p.mats) rows += m.rows;
                CK(cudaFuncSetAttribute(cc_u4, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
                CK(cudaMemsetAsync(y, 0, rows * 4, st));
                launch_cc((WideFn)(void*)cc_u4, CC_THREADS, p, x, y, st);
                std::vector<float> a(rows), b(rows);
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(a.data(), y, rows * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemsetAsync(y, 0, rows * 4, st));
                auto pr = mkprods(pi, 1);
                CK(cudaMemsetAsync(ctr, 0, 4, st));
                chain_launch(ck.f, pr.first, pr.second);
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(b.data(), y, rows * 4, cudaMemcpyDeviceToHost));
                CK(cudaFree(pr.first));
                for (int i = 0; i < rows; i++) {
                    maxdiff = std::max(maxdiff, (double)fabsf(a[i] - b[i]));
                    maxref = std::max(maxref, (double)fabsf(a[i]));
                }
            }
            printf("{\"kernel\":\"%s\",\"what\":\"max_abs_diff_vs_cc_u4\",\"value\":%g,\"max_abs_ref\":%g}\n", ck.name, maxdiff, maxref);
            fflush(stdout);
        }
    }
    // ms per block: the best of `repeats` timed passes (after one untimed) over the layers'
    // blocks, each launched by one(l, pi); product pi only when which ≥ 0.
    auto time_blocks = [&](int which, auto&& one) {
        float best = 1e30f;
        for (int rep = 0; rep < repeats + 1; rep++) {
            spin<<<1, 1, 0, st>>>(20000000);
            CK(cudaEventRecord(e0, st));
            for (int l = 0; l < layers; l++)
                for (int pi = 0; pi < 4; pi++)
                    if (which < 0 || pi == which) one(l, pi);
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (rep > 0 && ms < best) best = ms;
        }
        return best / layers;
    };
    // ---- s36: 4–16 rows, the grouped bf16 kernels (decision 144) against the int8 ones (decision 155),
    // each with its own activation split per product (as the runtime runs them).
    if (!getenv("LAB_NO_I8")) {
        uint2* frag;
        float* gs;
        u32* planes;
        int2* dq;
        CK(cudaMalloc(&frag, 16 * 14336 * 4 * 2));
        CK(cudaMalloc(&gs, 16 * 112 * 4));
        CK(cudaMalloc(&planes, 32 * 112 * 256));
        CK(cudaMalloc(&dq, 32 * 112 * 8));
        typedef void (*I8Fn)(const uint4*, const u16*, const uint4*, const u16*, const uint4*,
                             const u16*, const uint4*, const int2*, float*, int, int, int, int, int);
        struct G { const char* name; int kind; void* f; int n; int smem; int threads; };
        // The int8 kernels are packed/mma.cu's (decision 155); s36's candidates, with the
        // 2-groups-per-buffer 16-row variant, are lab3's i8.cu (commit 451ef46).
        std::vector<G> gk = {
            {"mma_u4_g4", 1, (void*)mma_u4_g4, 4},   {"mma_i8_g4", 2, (void*)mma_i8_g4, 4},
            {"mma_u4_g8", 1, (void*)mma_u4_g8, 8},   {"mma_i8_g8", 2, (void*)mma_i8_g8, 8},
            {"mma_u4_g16", 1, (void*)mma_u4_g16, 16}, {"mma_i8_g16", 2, (void*)mma_i8_g16, 16},
            {"mma_u4_g16@12", 1, (void*)mma_u4_g16, 12}, {"mma_i8_g16@12", 2, (void*)mma_i8_g16, 12},
            // kind 10 + SLOTS: i8s.cu's slotted variants (grid over tiles / SLOTS)
            {"i8s2_g4", 12, (void*)i8s2_g4, 4},   {"i8s4_g4", 14, (void*)i8s4_g4, 4},
            {"i8s2_g8", 12, (void*)i8s2_g8, 8},   {"i8s4_g8", 14, (void*)i8s4_g8, 8},
            {"i8s2_g16", 12, (void*)i8s2_g16, 16}, {"i8s4_g16", 14, (void*)i8s4_g16, 16},
            {"i8s8_g16", 18, (void*)i8s8_g16, 16},
            // lab5: the runtime's body at other shapes (kind 2: packed/mma.cu's parameters)
            {"i8r_g4u1", 2, (void*)i8r_g4u1, 4},  {"i8r_g8u1", 2, (void*)i8r_g8u1, 8},
            {"i8r_g32u1", 2, (void*)i8r_g32u1, 32},
            // lab6: 2 tiles per warp pass (kind 12: grid over tiles / 2, i8s.cu's parameters)
            {"i8mt2_g8", 12, (void*)i8mt2_g8, 8}, {"i8mt2_g16", 12, (void*)i8mt2_g16, 16},
            {"i8mt2_g32", 12, (void*)i8mt2_g32, 32}, {"mma_i8_g32", 2, (void*)mma_i8_g32, 32},
            // s37 (i8q.cu): codes and scales through a per-warp cp.async ring of S groups; `b`:
            // x's planes too (kind 4: packed/mma.cu's parameters without ntot/j0, dynamic smem)
            {"i8q_g8s4", 4, (void*)i8q_g8s4, 8, I8Q_SMEM(2, 4, false)},
            {"i8q_g8s8", 4, (void*)i8q_g8s8, 8, I8Q_SMEM(2, 8, false)},
            {"i8q_g16s3", 4, (void*)i8q_g16s3, 16, I8Q_SMEM(4, 3, false)},
            {"i8q_g16s4", 4, (void*)i8q_g16s4, 16, I8Q_SMEM(4, 4, false)},
            {"i8q_g16s6", 4, (void*)i8q_g16s6, 16, I8Q_SMEM(4, 6, false)},
            {"i8q_g16s8", 4, (void*)i8q_g16s8, 16, I8Q_SMEM(4, 8, false)},
            {"i8q_g16s4x3", 4, (void*)i8q_g16s4x3, 16, I8Q_SMEM(4, 4, false)},
            {"i8q_g16b2", 4, (void*)i8q_g16b2, 16, I8Q_SMEM(4, 2, true)},
            {"i8q_g16b3", 4, (void*)i8q_g16b3, 16, I8Q_SMEM(4, 3, true)},
            {"i8q_g16b4", 4, (void*)i8q_g16b4, 16, I8Q_SMEM(4, 4, true)},
            {"i8q_g32s4", 4, (void*)i8q_g32s4, 32, I8Q_SMEM(8, 4, false)},  // s37 lab1: failed to launch (56 KB without the opt-in)
            {"i8q_g32s6", 4, (void*)i8q_g32s6, 32, I8Q_SMEM(8, 6, false)},
            {"i8q_g32b2", 4, (void*)i8q_g32b2, 32, I8Q_SMEM(8, 2, true)},
            // s37 (i8x.cu): activations as A, weights as B; tiles of 8·SL weight rows (kind
            // 10 + SL/2: grid over 16-row tiles / (SL/2))
            {"i8x_g8s4", 12, (void*)i8x_g8s4, 8}, {"i8x_g8s8", 14, (void*)i8x_g8s8, 8},
            {"i8x_g8s8x1", 14, (void*)i8x_g8s8x1, 8},
            {"i8x_g16s2", 4, (void*)i8x_g16s2, 16}, {"i8x_g16s4", 12, (void*)i8x_g16s4, 16},
            {"i8x_g16s4x1", 12, (void*)i8x_g16s4x1, 16}, {"i8x_g16s8", 14, (void*)i8x_g16s8, 16},
            {"i8x_g32s2", 4, (void*)i8x_g32s2, 32}, {"i8x_g32s4", 12, (void*)i8x_g32s4, 32},
            // s37 lab3: the runtime's swapped kernels (packed/mma.cu) and i8x with a cp.async ring
            // (s39: 8 warps at every row count; s38's 16-row runtime kernel ran 12, 384 threads)
            {"mma_i8x_g8", 12, (void*)mma_i8x_g8, 8}, {"mma_i8x_g16", 12, (void*)mma_i8x_g16, 16},
            {"mma_i8x_g32", 12, (void*)mma_i8x_g32, 32},
            {"i8xr_g8s3", 12, (void*)i8xr_g8s3, 8, I8XR_SMEM(3)},
            {"i8xr_g8s4", 12, (void*)i8xr_g8s4, 8, I8XR_SMEM(4)},
            {"i8xr_g16s3", 12, (void*)i8xr_g16s3, 16, I8XR_SMEM(3)},
            {"i8xr_g16s4", 12, (void*)i8xr_g16s4, 16, I8XR_SMEM(4)},
            {"i8xr_g16s6", 12, (void*)i8xr_g16s6, 16, I8XR_SMEM(6)},
            {"i8xr_g32s3", 12, (void*)i8xr_g32s3, 32, I8XR_SMEM(3)},
            {"i8xr_g32s4", 12, (void*)i8xr_g32s4, 32, I8XR_SMEM(4)},
            // s37 lab4: the swapped kernel with W warps per block (threads = 32·W)
            {"i8xw12_g16s4", 12, (void*)i8xw12_g16s4, 16, 0, 384},
            {"i8xw10_g16s4", 12, (void*)i8xw10_g16s4, 16, 0, 320},
            {"i8xw12_g32s4", 12, (void*)i8xw12_g32s4, 32, 0, 384},
            {"i8xw10_g32s4", 12, (void*)i8xw10_g32s4, 32, 0, 320},
            {"i8xw16_g8s4", 12, (void*)i8xw16_g8s4, 8, 0, 512},
            {"i8xw12_g8s4", 12, (void*)i8xw12_g8s4, 8, 0, 384},
            // s38 lab1: the runtime's swapped kernels with L2 bulk prefetch (i8p.cu)
            {"i8p1_g8", 12, (void*)i8p1_g8, 8}, {"i8p3_g8", 12, (void*)i8p3_g8, 8},
            {"i8p1_g16", 12, (void*)i8p1_g16, 16, 0, 384}, {"i8p3_g16", 12, (void*)i8p3_g16, 16, 0, 384},
            {"i8p1_g32", 12, (void*)i8p1_g32, 32}, {"i8p3_g32", 12, (void*)i8p3_g32, 32},
            // s38 lab2: the runtime's body (planes in the mma's fragment order) at other warp counts (i8f.cu)
            {"i8f_g8w12", 12, (void*)i8f_g8w12, 8, 0, 384}, {"i8f_g8w16", 12, (void*)i8f_g8w16, 8, 0, 512},
            {"i8f_g16w8", 12, (void*)i8f_g16w8, 16}, {"i8f_g16w16", 12, (void*)i8f_g16w16, 16, 0, 512},
            {"i8f_g32w12", 12, (void*)i8f_g32w12, 32, 0, 384},
            // s38 lab4: scales by shuffle (s), and the planes a group ahead (sp) (i8y.cu)
            {"i8y_s_g8", 12, (void*)i8y_s_g8, 8}, {"i8y_sp_g8", 12, (void*)i8y_sp_g8, 8},
            {"i8y_sp_g8w16", 12, (void*)i8y_sp_g8w16, 8, 0, 512},
            {"i8y_s_g16", 12, (void*)i8y_s_g16, 16, 0, 384}, {"i8y_sp_g16", 12, (void*)i8y_sp_g16, 16, 0, 384},
            {"i8y_sp_g16w8", 12, (void*)i8y_sp_g16w8, 16},
            {"i8y_s_g32", 12, (void*)i8y_s_g32, 32}, {"i8y_sp_g32", 12, (void*)i8y_sp_g32, 32},
            // s38 lab6: the multiply j-major over all slabs (i8y.cu, JM)
            {"i8z_g8", 12, (void*)i8z_g8, 8}, {"i8z_g8w12", 12, (void*)i8z_g8w12, 8, 0, 384},
            {"i8z_g16", 12, (void*)i8z_g16, 16, 0, 384}, {"i8z_g16w8", 12, (void*)i8z_g16w8, 16},
            {"i8z_g32", 12, (void*)i8z_g32, 32},
            // (s39 lab7's i8w.cu candidates, not kept: commit ac1fb19)
            // s39 lab8: probes on the runtime's body (i8y.cu, PR: 1 no planes, 2 no codes, 4 no mma)
            {"i8y_pr1_g16", 12, (void*)i8y_pr1_g16, 16}, {"i8y_pr2_g16", 12, (void*)i8y_pr2_g16, 16},
            {"i8y_pr3_g16", 12, (void*)i8y_pr3_g16, 16}, {"i8y_pr4_g16", 12, (void*)i8y_pr4_g16, 16},
            {"i8y_pr7_g16", 12, (void*)i8y_pr7_g16, 16},
            {"i8y_pr1_g32", 12, (void*)i8y_pr1_g32, 32}, {"i8y_pr2_g32", 12, (void*)i8y_pr2_g32, 32},
            {"i8y_pr3_g32", 12, (void*)i8y_pr3_g32, 32}, {"i8y_pr4_g32", 12, (void*)i8y_pr4_g32, 32},
            // s39 lab9: 16 warps per SM on the s body, with and without loads (i8y.cu)
            {"i8y_s_g16b2", 12, (void*)i8y_s_g16b2, 16}, {"i8y_s_g16w16", 12, (void*)i8y_s_g16w16, 16, 0, 512},
            {"i8y_s_g16w8", 12, (void*)i8y_s_g16w8, 16},
            {"i8y_s_pr3_g16b2", 12, (void*)i8y_s_pr3_g16b2, 16},
            {"i8y_s_pr3_g16w16", 12, (void*)i8y_s_pr3_g16w16, 16, 0, 512},
            {"i8y_s_pr3_g16w8", 12, (void*)i8y_s_pr3_g16w8, 16},
            // s39 lab10: the codes read tile-major, 512 contiguous bytes per warp load (i8y.cu, PR = 8)
            {"i8y_pr8_g8", 12, (void*)i8y_pr8_g8, 8}, {"i8y_pr8_g16", 12, (void*)i8y_pr8_g16, 16},
            {"i8y_pr8_g32", 12, (void*)i8y_pr8_g32, 32},
            // ... and x's planes read group-major (PR = 16), both (24)
            {"i8y_pr16_g16", 12, (void*)i8y_pr16_g16, 16}, {"i8y_pr24_g16", 12, (void*)i8y_pr24_g16, 16},
            {"i8y_pr16_g32", 12, (void*)i8y_pr16_g32, 32}, {"i8y_pr24_g32", 12, (void*)i8y_pr24_g32, 32},
            // s39 lab11: an empty product (PR = 32)
            {"i8y_pr32_g16", 12, (void*)i8y_pr32_g16, 16},
        };
        if (getenv("LAB_I8_ONLY")) {  // e.g. LAB_I8_ONLY=mma_u4_g16,mma_i8_g16,i8q_g16s4
            std::string only = std::string(",") + getenv("LAB_I8_ONLY") + ",";
            std::vector<G> keep;
            for (auto& kk : gk)
                if (only.find(std::string(",") + kk.name + ",") != std::string::npos) keep.push_back(kk);
            gk = keep;
        }
        for (auto& kk : gk)
            if (kk.smem > 0) CK(cudaFuncSetAttribute(kk.f, cudaFuncAttributeMaxDynamicSharedMemorySize, kk.smem));
        auto launch_g = [&](const G& kk, const Product& p, float* out) {
            const int n = kk.n;
            int per_sm = 0;
            const int nthr = kk.threads ? kk.threads : 256;
            CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kk.f, nthr, kk.smem));
            per_sm = std::max(per_sm, 1);
            int r[3] = {0, 0, 0}, tiles = 0;
            for (size_t j = 0; j < p.mats.size(); j++) r[j] = p.mats[j].rows, tiles += (r[j] + 15) / 16;
            const Mat& a = p.mats[0];
            const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
            const Mat& c = p.mats.size() > 2 ? p.mats[2] : a;
            const int slots = kk.kind >= 10 ? kk.kind - 10 : 1;
            const int grid = std::min((tiles + slots - 1) / slots, per_sm * sms);
            if (kk.kind == 1) {
                mma_split_acts<<<(n * p.k / 4 + 255) / 256, 256, 0, st>>>((const float4*)x, frag, gs, n, p.k, 0);
                ((GWideFn)kk.f)<<<grid, 256, 0, st>>>(a.codes, a.d, a.d, b.codes, b.d, b.d, c.codes, c.d, c.d,
                                                       frag, gs, out, r[0], r[1], r[2], p.k, n);
            } else {
                // kinds 2 and 4 (and the slotted ones): packed/mma.cu's int8 parameters (s36's
                // kind 3, passes of 16 rows through (ntot, j0), went with them in s37)
                // s38: the runtime's mma_i8x_g* (and i8f.cu's) read planes in the mma's fragment order
                const std::string kn = kk.name;
                const int frag = kn.rfind("mma_i8x", 0) == 0 || kn.rfind("i8f", 0) == 0 || kn.rfind("i8y", 0) == 0 ||
                                 kn.rfind("i8z", 0) == 0;
                // s39 lab11: LAB_I8_PDL=1 launches both as the runtime does (cuLaunchKernelEx with
                // programmatic dependent launch); LAB_NO_SPLIT=1 leaves the split out (the product
                // then reads the planes left by the last split: timing only).
                static const bool i8_pdl = getenv("LAB_I8_PDL") != nullptr;
                static const bool no_split = getenv("LAB_NO_SPLIT") != nullptr;
                cudaLaunchAttribute attr[1];
                attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
                attr[0].val.programmaticStreamSerializationAllowed = 1;
                cudaLaunchConfig_t cs = {};
                cs.gridDim = dim3((n * p.k / 4 + 255) / 256);
                cs.blockDim = dim3(256);
                cs.stream = st;
                cs.attrs = attr;
                cs.numAttrs = i8_pdl ? 1 : 0;
                if (!no_split)
                    CK(cudaLaunchKernelEx(&cs, mma_split_i8, (const float4*)x, planes, dq, n, p.k, 0, frag));
                cudaLaunchConfig_t cg = cs;
                cg.gridDim = dim3(grid);
                cg.blockDim = dim3(nthr);
                cg.dynamicSmemBytes = kk.smem;
                CK(cudaLaunchKernelEx(&cg, (I8Fn)kk.f, (const uint4*)a.codes, (const u16*)a.d,
                                      (const uint4*)b.codes, (const u16*)b.d, (const uint4*)c.codes,
                                      (const u16*)c.d, (const uint4*)planes, (const int2*)dq, out,
                                      r[0], r[1], r[2], p.k, n));
            }
        };
        for (auto& kk : gk) {
            auto run = [&](int which) {
                return time_blocks(which, [&](int l, int pi) { launch_g(kk, blocks[l][pi], y); });
            };
            float layer_ms = run(-1);
            printf("{\"kernel\":\"%s\",\"rows\":%d,\"what\":\"block\",\"us\":%.2f,\"gb_per_s\":%.0f,\"step_ms\":%.3f,\"tokens_per_s\":%.0f}\n",
                   kk.name, kk.n, layer_ms * 1e3, per_layer / (layer_ms * 1e-3) / 1e9, layer_ms * 32, kk.n / (layer_ms * 32e-3));
            for (int pi = 0; pi < 4; pi++) {
                float ms = run(pi);
                printf("{\"kernel\":\"%s\",\"rows\":%d,\"what\":\"%s\",\"us\":%.2f}\n", kk.name, kk.n, blocks[0][pi].name, ms * 1e3);
            }
            fflush(stdout);
        }
        // Outputs: the int8 kernels against the bf16 ones at the same rows, layer 0's products
        // (max |Δ| over the largest |output|; x's quantization differs, so not bit-identical).
        for (int gi = 0; gi + 1 < (int)gk.size(); gi++) {
            // refs: the bf16 kernels (kind 1) up to 16 rows, the runtime's mma_i8_g32 at 32
            // (s38: also s37's i8x_g8s4 / i8xw12_g16s4 and the runtime's mma_i8x_g8/g16, for candidates
            // that should be bit-identical; s39: and mma_i8x_g32)
            const std::string rn = gk[gi].name;
            if (gk[gi].kind != 1 && rn != "mma_i8_g32" && rn != "i8x_g8s4" && rn != "i8xw12_g16s4" &&
                rn != "mma_i8x_g8" && rn != "mma_i8x_g16" && rn != "mma_i8x_g32")
                continue;
            for (int gj = 0; gj < (int)gk.size(); gj++) {
                if (gk[gj].kind < 2 || gj == gi || gk[gj].n != gk[gi].n) continue;
                double md = 0, mr = 0;
                for (int pi = 0; pi < 4; pi++) {
                    const Product& p = blocks[0][pi];
                    int rows = 0;
                    for (auto& m : p.mats) rows += m.rows;
                    const size_t cnt = (size_t)rows * gk[gi].n;
                    std::vector<float> a(cnt), b(cnt);
                    launch_g(gk[gi], p, y);
                    CK(cudaStreamSynchronize(st));
                    CK(cudaMemcpy(a.data(), y, cnt * 4, cudaMemcpyDeviceToHost));
                    CK(cudaMemsetAsync(y, 0, cnt * 4, st));
                    launch_g(gk[gj], p, y);
                    CK(cudaStreamSynchronize(st));
                    CK(cudaMemcpy(b.data(), y, cnt * 4, cudaMemcpyDeviceToHost));
                    for (size_t i = 0; i < cnt; i++) {
                        md = std::max(md, (double)fabsf(a[i] - b[i]));
                        mr = std::max(mr, (double)fabsf(a[i]));
                    }
                }
                printf("{\"what\":\"i8_vs_bf16\",\"kernel\":\"%s\",\"ref\":\"%s\",\"rows\":%d,\"max_abs_diff\":%g,\"max_abs_ref\":%g,\"rel\":%g}\n",
                       gk[gj].name, gk[gi].name, gk[gi].n, md, mr, md / mr);
            }
        }
        // ---- s39 lab12: a block as crunch runs it at 5–32 rows, with the producers: rms_norm
        // before q+k+v and gate+up, silu_mul before down (o keeps its split: its producer is
        // attention). "split": producer, then mma_split_i8 and the product (both with PDL, as
        // the runtime); "fused": fuse.cu's producer writes the planes, then the product (PDL).
        // Producers launch plainly, as the runtime's. µs per block; then the planes, outputs
        // and products of both compared bit for bit.
        if (getenv("LAB_FUSE")) {
            float *wn, *xn, *gt, *upb, *act;
            CK(cudaMalloc(&wn, 14336 * 4));
            CK(cudaMalloc(&xn, 32 * 14336 * 4));
            CK(cudaMalloc(&gt, 32 * 14336 * 4));
            CK(cudaMalloc(&upb, 32 * 14336 * 4));
            CK(cudaMalloc(&act, 32 * 14336 * 4));
            {
                std::vector<float> h(32 * 14336);
                for (size_t i = 0; i < h.size(); i++) h[i] = ((i * 2246822519u) % 4001) / 1000.0f - 2.0f;
                CK(cudaMemcpy(gt, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
                for (size_t i = 0; i < h.size(); i++) h[i] = ((i * 3266489917u) % 2001) / 1000.0f - 1.0f;
                CK(cudaMemcpy(upb, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
                for (size_t i = 0; i < 14336; i++) h[i] = 0.5f + (i % 7) * 0.1f;
                CK(cudaMemcpy(wn, h.data(), 14336 * 4, cudaMemcpyHostToDevice));
            }
            cudaLaunchAttribute attr[1];
            attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            attr[0].val.programmaticStreamSerializationAllowed = 1;
            // One product: its producer (pi 0 and 2: rms_norm of x; 3: silu_mul of gate, up;
            // 1: none) and, unless fused, the split; then the product. Returns the product's x.
            auto step = [&](const G& kk, const Product& p, int pi, bool fused, float* out) {
                const int n = kk.n, k = p.k;
                const float* px = x;
                cudaLaunchConfig_t c = {};
                c.stream = st;
                c.attrs = attr;
                c.numAttrs = 1;
                if (pi == 0 || pi == 2) {
                    if (fused)
                        feed_rms_norm<<<n, 256, 0, st>>>(x, wn, xn, k, 1e-5f, planes, dq, 0, 1);
                    else
                        rms_norm<<<n, 256, 0, st>>>(x, wn, xn, k, 1e-5f);
                    px = xn;
                } else if (pi == 3) {
                    const long long ne = (long long)n * k;
                    if (fused)
                        feed_silu_mul<<<(unsigned)((ne / 4 + 255) / 256), 256, 0, st>>>(
                            (const float4*)gt, (const float4*)upb, (float4*)act, n, k, planes, dq, 0, 1);
                    else
                        silu_mul<<<(unsigned)((ne + 255) / 256), 256, 0, st>>>(gt, upb, act, ne);
                    px = act;
                }
                if (!(fused && pi != 1)) {
                    c.gridDim = dim3((n * k / 4 + 255) / 256);
                    c.blockDim = dim3(256);
                    CK(cudaLaunchKernelEx(&c, mma_split_i8, (const float4*)px, planes, dq, n, k, 0, 1));
                }
                int per_sm = 0;
                const int nthr = kk.threads ? kk.threads : 256;
                CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kk.f, nthr, kk.smem));
                int r[3] = {0, 0, 0}, tiles = 0;
                for (size_t j = 0; j < p.mats.size(); j++) r[j] = p.mats[j].rows, tiles += (r[j] + 31) / 32;
                const Mat& a = p.mats[0];
                const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
                const Mat& cm = p.mats.size() > 2 ? p.mats[2] : a;
                c.gridDim = dim3(std::min(tiles, std::max(per_sm, 1) * sms));
                c.blockDim = dim3(nthr);
                c.dynamicSmemBytes = kk.smem;
                CK(cudaLaunchKernelEx(&c, (I8Fn)kk.f, (const uint4*)a.codes, (const u16*)a.d,
                                      (const uint4*)b.codes, (const u16*)b.d, (const uint4*)cm.codes,
                                      (const u16*)cm.d, (const uint4*)planes, (const int2*)dq, out,
                                      r[0], r[1], r[2], k, n));
                return px;
            };
            for (auto& kk : gk) {
                if (std::string(kk.name).rfind("mma_i8x", 0) != 0) continue;
                for (int fused = 0; fused < 2; fused++) {
                    auto run = [&](int which) {
                        return time_blocks(which, [&](int l, int pi) { step(kk, blocks[l][pi], pi, fused, y); });
                    };
                    const char* v = fused ? "fused" : "split";
                    printf("{\"what\":\"fuse_block\",\"variant\":\"%s\",\"kernel\":\"%s\",\"rows\":%d,\"us\":%.2f}\n",
                           v, kk.name, kk.n, run(-1) * 1e3);
                    for (int pi = 0; pi < 4; pi++)
                        printf("{\"what\":\"fuse_product\",\"variant\":\"%s\",\"kernel\":\"%s\",\"rows\":%d,\"product\":\"%s\",\"us\":%.2f}\n",
                               v, kk.name, kk.n, blocks[0][pi].name, run(pi) * 1e3);
                    fflush(stdout);
                }
                // Bit for bit: each product's x, planes, (dx, 8·Σq) and output, split against fused.
                for (int pi : {0, 3}) {
                    const Product& p = blocks[0][pi];
                    const int n = kk.n, ng = p.k / 128;
                    int rows = 0;
                    for (auto& m : p.mats) rows += m.rows;
                    std::vector<char> pl[2], qd[2];
                    std::vector<float> xs[2], ys[2];
                    for (int fused = 0; fused < 2; fused++) {
                        CK(cudaMemsetAsync(planes, 0, (size_t)n * p.k, st));
                        CK(cudaMemsetAsync(dq, 0, (size_t)n * ng * 8, st));
                        const float* px = step(kk, p, pi, fused, y);
                        CK(cudaStreamSynchronize(st));
                        pl[fused].resize((size_t)n * p.k);
                        qd[fused].resize((size_t)n * ng * 8);
                        xs[fused].resize((size_t)n * p.k);
                        ys[fused].resize((size_t)n * rows);
                        CK(cudaMemcpy(pl[fused].data(), planes, pl[fused].size(), cudaMemcpyDeviceToHost));
                        CK(cudaMemcpy(qd[fused].data(), dq, qd[fused].size(), cudaMemcpyDeviceToHost));
                        CK(cudaMemcpy(xs[fused].data(), px, xs[fused].size() * 4, cudaMemcpyDeviceToHost));
                        CK(cudaMemcpy(ys[fused].data(), y, ys[fused].size() * 4, cudaMemcpyDeviceToHost));
                    }
                    const bool same = pl[0] == pl[1] && qd[0] == qd[1] &&
                                      memcmp(xs[0].data(), xs[1].data(), xs[0].size() * 4) == 0 &&
                                      memcmp(ys[0].data(), ys[1].data(), ys[0].size() * 4) == 0;
                    printf("{\"what\":\"fuse_check\",\"kernel\":\"%s\",\"rows\":%d,\"product\":\"%s\",\"bit_identical\":%s}\n",
                           kk.name, kk.n, p.name, same ? "true" : "false");
                }
                fflush(stdout);
            }
        }
        fflush(stdout);
    }
    // ---- 2–4 rows: decision 132's per-matrix mma_u4_n1 (one split per matrix, as the runtime
    // runs it) against the grouped mma_u4_g4 (one split per product).
    {
        uint2* frag;
        float* gs;
        CK(cudaMalloc(&frag, 4 * 14336 * 4));
        CK(cudaMalloc(&gs, 4 * 112 * 4));
        for (int n : {2, 4}) {
            struct G { const char* name; int kind; void* f; int blocks_hint; };
            std::vector<G> gk = {{"mma_u4_n1", 0, (void*)mma_u4_n1, 0},
                                 {"mma_u4_g4", 1, (void*)mma_u4_g4, 0},
                                 {"lab_g4_b2", 1, (void*)lab_g4_b2, 0}};
            for (auto& kk : gk) {
                auto split = [&](int k) {
                    mma_split_acts<<<(n * k / 4 + 255) / 256, 256, 0, st>>>((const float4*)x, frag, gs, n, k, 0);
                };
                auto run = [&](int which) {
                    return time_blocks(which, [&](int l, int pi) {
                        const Product& p = blocks[l][pi];
                        int per_sm = 0;
                        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kk.f, 256, 0));
                        per_sm = std::max(per_sm, 1);
                        if (kk.kind == 0) {
                            for (auto& m : p.mats) {
                                split(p.k);
                                int items = (m.rows + 15) / 16;
                                ((GemmFn)kk.f)<<<std::min(items, per_sm * sms), 256, 0, st>>>(
                                    m.codes, m.d, m.d, frag, gs, y, m.rows, p.k, n);
                            }
                        } else {
                            split(p.k);
                            int r[3] = {0, 0, 0}, tiles = 0;
                            for (size_t j = 0; j < p.mats.size(); j++) r[j] = p.mats[j].rows, tiles += (r[j] + 15) / 16;
                            const Mat& a = p.mats[0];
                            const Mat& b = p.mats.size() > 1 ? p.mats[1] : a;
                            const Mat& c = p.mats.size() > 2 ? p.mats[2] : a;
                            ((GWideFn)kk.f)<<<std::min(tiles, per_sm * sms), 256, 0, st>>>(
                                a.codes, a.d, a.d, b.codes, b.d, b.d, c.codes, c.d, c.d, frag, gs, y,
                                r[0], r[1], r[2], p.k, n);
                        }
                    });
                };
                float layer_ms = run(-1);
                printf("{\"kernel\":\"%s\",\"n\":%d,\"what\":\"block\",\"us\":%.2f,\"gb_per_s\":%.0f,\"token_ms\":%.3f,\"tokens_per_s\":%.0f}\n",
                       kk.name, n, layer_ms * 1e3, per_layer / (layer_ms * 1e-3) / 1e9, layer_ms * 32, n / (layer_ms * 32e-3));
                for (int pi = 0; pi < 4; pi++) {
                    float ms = run(pi);
                    printf("{\"kernel\":\"%s\",\"n\":%d,\"what\":\"%s\",\"us\":%.2f}\n", kk.name, n, blocks[0][pi].name, ms * 1e3);
                }
                fflush(stdout);
            }
        }
        // Outputs: mma_u4_g4 against mma_u4_n1 on layer 0's q+k+v at n = 3 (same B, same codes;
        // n1's per-matrix outputs are laid out [n][rows_j] back to back as g4 writes them).
        int n = 3;
        const Product& p = blocks[0][0];
        mma_split_acts<<<(n * p.k / 4 + 255) / 256, 256, 0, st>>>((const float4*)x, frag, gs, n, p.k, 0);
        int total = 6144;
        std::vector<float> a(n * total), b(n * total);
        size_t off = 0;
        for (auto& m : p.mats) {
            mma_u4_n1<<<132, 256, 0, st>>>(m.codes, m.d, m.d, frag, gs, y + off, m.rows, p.k, n);
            off += (size_t)n * m.rows;
        }
        CK(cudaMemcpy(a.data(), y, a.size() * 4, cudaMemcpyDeviceToHost));
        mma_u4_g4<<<396, 256, 0, st>>>(p.mats[0].codes, p.mats[0].d, p.mats[0].d, p.mats[1].codes, p.mats[1].d, p.mats[1].d,
                                      p.mats[2].codes, p.mats[2].d, p.mats[2].d, frag, gs, y, 4096, 1024, 1024, p.k, n);
        CK(cudaMemcpy(b.data(), y, b.size() * 4, cudaMemcpyDeviceToHost));
        double md = 0;
        for (size_t i = 0; i < a.size(); i++) md = std::max(md, (double)fabsf(a[i] - b[i]));
        printf("{\"what\":\"g4_vs_n1_max_abs_diff\",\"n\":3,\"value\":%g}\n", md);
    }
    return 0;
}
