// Attention over a compressed key/value cache held on the device (decision 138).
// Compiled at run time by NVRTC; no headers.
//
// The codes were decided by the host's quantizer (crate::kvq) and uploaded position-major:
//   codes   u8  [cap, kvh, row_bytes]          (f16 mode: u16 rows [cap, kvh, d])
//   scales, offsets  f16 bits: per token [cap, kvh, d / channels], per channel
//                              [ceil(cap / tokens), kvh, d]
//   tail    f16 ring [slots, kvh, d], position p in slot p % slots (KIVI's unquantized rows)
//   sink    f16 [sink, kvh, d]
// Decoding reproduces the host's `Coded::decode` bit for bit: z + s·c (c, or its Lloyd-Max
// level, decision 142) without contraction
// (__fmul_rn/__fadd_rn), then the Hadamard butterflies in the host's order, then (keys of a
// pre-RoPE store) the rotation by p·θ in double.

#define INF __int_as_float(0x7f800000)
#define CHUNK 32
#define WARPS 16
#define MAX_RPW 2   // rows per warp
#define MAX_U 4     // head_dim / 32

struct KvSide {
    unsigned long long codes, scales, offsets, tail, sink;
    int bits, absmax, channels, tokens, rotate, row_bytes;
    int lloyd;  // decision 142: 2-bit codes stand for the Lloyd-Max levels, not 0..3
};

struct KvState {
    unsigned long long inv_freq;  // double [d / 2] (pre-RoPE keys), else 0
    int kvh, d, cap, len, qlen, full_start, sink, group, residual, slots;
};

__device__ float half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ bool stored(const KvState& st, int j) {
    return st.group == 0 || (j / st.group + 1) * st.group <= st.qlen;
}

// Whether the query at position p sees position j coded (else: the f16 tail).
__device__ bool seen_coded(const KvState& st, int j, int p) {
    if (st.group == 0) return true;
    int end = (j / st.group + 1) * st.group;
    return end <= st.qlen && end + st.residual <= p + 1;
}

// Value of code `code` with scale sc and minimum z (z = −128·sc for symmetric 8-bit), before any
// rotation: z + s·c (c, or its Lloyd-Max level, decision 142) without contraction.
__device__ __forceinline__ float decode(const KvSide& s, float sc, float z, int code) {
    // The same f32 constants as crate::kvq::codec::LLOYD_MAX2.
    float level = !s.lloyd ? (float)code
        : code == 0 ? -1.5104176f : code == 1 ? -0.45278f : code == 2 ? 0.45278f : 1.5104176f;
    return __fadd_rn(z, __fmul_rn(sc, level));
}

// N consecutive f16 bit patterns from p (p aligned to 2·N bytes when N is 4, 8 or 16).
template <int N>
__device__ __forceinline__ void load_halves(const unsigned short* p, unsigned short (&h)[N]) {
    if (N % 8 == 0) {
#pragma unroll
        for (int v = 0; v < N / 8; v++) {
            const uint4 q = ((const uint4*)p)[v];
            const unsigned x[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int t = 0; t < 4; t++) {
                h[8 * v + 2 * t] = (unsigned short)(x[t] & 0xffffu);
                h[8 * v + 2 * t + 1] = (unsigned short)(x[t] >> 16);
            }
        }
    } else if (N == 4) {
        const uint2 q = *(const uint2*)p;
        h[0] = (unsigned short)(q.x & 0xffffu), h[1] = (unsigned short)(q.x >> 16);
        h[2] = (unsigned short)(q.y & 0xffffu), h[3] = (unsigned short)(q.y >> 16);
    } else {
#pragma unroll
        for (int e = 0; e < N; e++) h[e] = p[e];
    }
}

// Rows of positions j0.. into A (`stored` positions past the sink only) as whole 32-bit words of
// codes (f16 rows: BITS = 16), PER = 32 / BITS channels each (codec::pack's order: channel e of
// a word in its bits e·BITS..), decision 163:
// - a thread requests 4 words before it decodes any, so its loads are in flight together
//   rather than one element's chain at a time;
// - a word's scale index is computed once: per token, one scale and minimum for the word when
//   `channels` is a multiple of PER (else one per channel, as before); per channel (KIVI keys),
//   the word's PER scales and minima are consecutive and read as vectors.
// Rows are row_bytes = d·BITS/8 bytes, a multiple of 4 (d % 32 == 0, device_head_dim).
template <int BITS>
__device__ __forceinline__ void load_words(const KvSide& s, const KvState& st, int g, int j0,
                                           float* A) {
    constexpr int PER = 32 / BITS;
    const int d = st.d, w = d + 1, words = d / PER, n = CHUNK * words;
    const unsigned* codes = (const unsigned*)s.codes;
    const unsigned short* sc16 = (const unsigned short*)s.scales;
    const unsigned short* z16 = (const unsigned short*)s.offsets;
    const size_t row_words = BITS == 16 ? (size_t)d / 2 : (size_t)s.row_bytes / 4;
    for (int i0 = threadIdx.x; i0 < n; i0 += 4 * blockDim.x) {
        unsigned cw[4];
        bool live[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * blockDim.x, j = j0 + i / words;
            live[u] = i < n && j < st.len && j >= st.sink && stored(st, j);
            cw[u] = live[u] ? codes[((size_t)j * st.kvh + g) * row_words + i % words] : 0u;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (!live[u]) continue;
            const int i = i0 + u * blockDim.x, jj = i / words, j = j0 + jj;
            const int c0 = (i % words) * PER;
            float* out = A + jj * w + c0;
            auto code = [&](int e) { return (int)((cw[u] >> (e * BITS)) & ((1u << BITS) - 1)); };
            if (BITS == 16) {
#pragma unroll
                for (int e = 0; e < PER; e++) out[e] = half_to_float((unsigned short)code(e));
            } else if (s.tokens != 0) {
                const size_t at = ((size_t)(j / s.tokens) * st.kvh + g) * d + c0;
                unsigned short hs[PER], hz[PER];
                load_halves<PER>(sc16 + at, hs);
                if (!s.absmax) load_halves<PER>(z16 + at, hz);
#pragma unroll
                for (int e = 0; e < PER; e++) {
                    const float sc = half_to_float(hs[e]);
                    out[e] = decode(s, sc, s.absmax ? -128.0f * sc : half_to_float(hz[e]), code(e));
                }
            } else if (s.channels % PER == 0) {
                const size_t at = ((size_t)j * st.kvh + g) * (d / s.channels) + c0 / s.channels;
                const float sc = half_to_float(sc16[at]);
                const float z = s.absmax ? -128.0f * sc : half_to_float(z16[at]);
#pragma unroll
                for (int e = 0; e < PER; e++) out[e] = decode(s, sc, z, code(e));
            } else {
#pragma unroll
                for (int e = 0; e < PER; e++) {
                    const size_t at =
                        ((size_t)j * st.kvh + g) * (d / s.channels) + (c0 + e) / s.channels;
                    const float sc = half_to_float(sc16[at]);
                    out[e] = decode(s, sc, s.absmax ? -128.0f * sc : half_to_float(z16[at]),
                                    code(e));
                }
            }
        }
    }
}

// Fills A [CHUNK][d + 1] with the coded rows of positions j0.. (sink rows from the sink) and,
// for KIVI, B with the tail rows; then undoes the Hadamard rotation and (keys) the pre-RoPE.
__device__ void load_chunk(const KvSide& s, const KvState& st, int g, int j0, bool keys,
                           float* A, float* B) {
    int d = st.d, w = d + 1;
    switch (s.bits) {
    case 2: load_words<2>(s, st, g, j0, A); break;
    case 4: load_words<4>(s, st, g, j0, A); break;
    case 8: load_words<8>(s, st, g, j0, A); break;
    default: load_words<16>(s, st, g, j0, A); break;
    }
    // f16 rows: the sink (positions below st.sink) and KIVI's tail, loads first as above.
    const bool sink = j0 < st.sink, tail = st.group != 0 && j0 + CHUNK > st.full_start;
    if (sink || tail) {
        for (int i0 = threadIdx.x; i0 < CHUNK * d; i0 += 4 * blockDim.x) {
            unsigned short hs[4], ht[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = i0 + u * blockDim.x, j = j0 + i / d, c = i % d;
                const bool in = i < CHUNK * d && j < st.len;
                hs[u] = in && j < st.sink
                    ? ((const unsigned short*)s.sink)[((size_t)j * st.kvh + g) * d + c] : 0;
                ht[u] = in && st.group != 0 && j >= st.full_start
                    ? ((const unsigned short*)s.tail)[((size_t)(j % st.slots) * st.kvh + g) * d + c]
                    : 0;
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = i0 + u * blockDim.x, j = j0 + i / d, jj = i / d, c = i % d;
                if (i >= CHUNK * d || j >= st.len) continue;
                if (j < st.sink) A[jj * w + c] = half_to_float(hs[u]);
                if (st.group != 0 && j >= st.full_start) B[jj * w + c] = half_to_float(ht[u]);
            }
        }
    }
    __syncthreads();
    bool coded = s.bits != 16;
    if (coded && s.rotate) {
        int half = d / 2;
        for (int h = 1; h < d; h *= 2) {
            for (int idx = threadIdx.x; idx < CHUNK * half; idx += blockDim.x) {
                int jj = idx / half, k = idx % half, j = j0 + jj;
                if (j >= st.len || j < st.sink || !stored(st, j)) continue;
                int i = (k / h) * 2 * h + k % h;
                float a = A[jj * w + i], b = A[jj * w + i + h];
                A[jj * w + i] = __fadd_rn(a, b);
                A[jj * w + i + h] = __fsub_rn(a, b);
            }
            __syncthreads();
        }
        float norm = 1.0f / sqrtf((float)d);
        for (int idx = threadIdx.x; idx < CHUNK * d; idx += blockDim.x) {
            int jj = idx / d, c = idx % d, j = j0 + jj;
            if (j >= st.len || j < st.sink || !stored(st, j)) continue;
            A[jj * w + c] = __fmul_rn(A[jj * w + c], norm);
        }
        __syncthreads();
    }
    if (keys && st.inv_freq != 0) {
        const double* f = (const double*)st.inv_freq;
        int half = d / 2;
        for (int idx = threadIdx.x; idx < CHUNK * half; idx += blockDim.x) {
            int jj = idx / half, i = idx % half, j = j0 + jj;
            if (j >= st.len || j < st.sink || !stored(st, j)) continue;
            double sn, cs;
            sincos((double)j * f[i], &sn, &cs);
            double a = A[jj * w + i], b = A[jj * w + i + half];
            A[jj * w + i] = (float)__dsub_rn(__dmul_rn(a, cs), __dmul_rn(b, sn));
            A[jj * w + i + half] = (float)__dadd_rn(__dmul_rn(b, cs), __dmul_rn(a, sn));
        }
        __syncthreads();
    }
}

// grid (kvh, row tiles, splits), WARPS·32 threads. Row r of kv head g is query i = r / group,
// head g·group + r % group, at position offset + i. Each split covers a share of the chunks
// the tile's rows see and writes, per row, its unnormalised output, running max and sum:
// part [splits, kvh, t·group, d + 2].
extern "C" __global__ void __launch_bounds__(WARPS * 32, 2) kv_attend(const float* q, KvSide K, KvSide V, KvState st, int t,
                                     int heads, int offset, int window, float scale,
                                     int rows_per_block, float* part) {
    extern __shared__ float smem[];
    int d = st.d, w = d + 1, group = heads / st.kvh, rows = t * group;
    int g = blockIdx.x, r0 = blockIdx.y * rows_per_block;
    int nr = min(rows_per_block, rows - r0);
    float* qs = smem;                          // [rows_per_block][d]
    float* A = qs + rows_per_block * d;        // [CHUNK][d + 1]
    float* B = A + CHUNK * w;                  // [CHUNK][d + 1] (KIVI)
    for (int idx = threadIdx.x; idx < nr * d; idx += blockDim.x) {
        int rr = idx / d, c = idx % d, r = r0 + rr;
        int i = r / group, hh = r % group;
        qs[idx] = q[((size_t)i * heads + g * group + hh) * d + c];
    }
    int p_first = offset + r0 / group, p_last = offset + (r0 + nr - 1) / group;
    int lo = window > 0 ? max(0, p_first - window + 1) : 0;
    int c_lo = lo / CHUNK, chunks = p_last / CHUNK - c_lo + 1;
    int per = (chunks + gridDim.z - 1) / gridDim.z;
    int c_begin = c_lo + blockIdx.z * per, c_end = min(c_lo + chunks, c_begin + per);

    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int U = d / 32;
    // The per-row state stays in registers: every loop over k (rows) and u (channel words)
    // runs to its compile-time bound with the runtime bound as a guard, so no index into
    // these arrays is dynamic (else they live in local memory, 272 bytes of stack).
    float m[MAX_RPW], l[MAX_RPW], acc[MAX_RPW][MAX_U], s[MAX_RPW];
#pragma unroll
    for (int k = 0; k < MAX_RPW; k++) {
        m[k] = -INF;
        l[k] = 0.0f;
#pragma unroll
        for (int u = 0; u < MAX_U; u++) acc[k][u] = 0.0f;
    }
    __syncthreads();
    for (int ch = c_begin; ch < c_end; ch++) {
        int j0 = ch * CHUNK, j = j0 + lane;
        load_chunk(K, st, g, j0, true, A, B);
#pragma unroll
        for (int k = 0; k < MAX_RPW; k++) {
            int rr = warp + WARPS * k;
            s[k] = -INF;
            if (rr >= nr) continue;
            int p = offset + (r0 + rr) / group;
            int jlo = window > 0 ? max(0, p - window + 1) : 0;
            if (j < jlo || j > p) continue;
            const float* row = (seen_coded(st, j, p) ? A : B) + lane * w;
            const float* qr = qs + rr * d;
            float dot = 0.0f;
            for (int c = 0; c < d; c++) dot += qr[c] * row[c];
            s[k] = dot * scale;
        }
        __syncthreads();
        load_chunk(V, st, g, j0, false, A, B);
#pragma unroll
        for (int k = 0; k < MAX_RPW; k++) {
            int rr = warp + WARPS * k;
            if (rr >= nr) continue;
            int p = offset + (r0 + rr) / group;
            float mx = s[k];
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
            float mn = fmaxf(m[k], mx);
            if (mn == -INF) continue;
            float corr = m[k] == -INF ? 0.0f : expf(m[k] - mn);
            float e = s[k] == -INF ? 0.0f : expf(s[k] - mn);
            float sum = e;
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
            l[k] = l[k] * corr + sum;
            m[k] = mn;
#pragma unroll
            for (int u = 0; u < MAX_U; u++)
                if (u < U) acc[k][u] *= corr;
            for (int jj = 0; jj < CHUNK; jj++) {
                float pj = __shfl_sync(0xffffffff, e, jj);
                if (pj == 0.0f) continue;
                const float* row = (seen_coded(st, j0 + jj, p) ? A : B) + jj * w;
#pragma unroll
                for (int u = 0; u < MAX_U; u++)
                    if (u < U) acc[k][u] += pj * row[lane + 32 * u];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < MAX_RPW; k++) {
        int rr = warp + WARPS * k;
        if (rr >= nr) continue;
        float* o = part + (((size_t)blockIdx.z * st.kvh + g) * rows + r0 + rr) * (d + 2);
#pragma unroll
        for (int u = 0; u < MAX_U; u++)
            if (u < U) o[lane + 32 * u] = acc[k][u];
        if (lane == 0) {
            o[d] = m[k];
            o[d + 1] = l[k];
        }
    }
}

// One block per (kv head, row): merges the splits' partial outputs into out [t, heads·d].
extern "C" __global__ void kv_combine(const float* part, float* out, int splits, int kvh, int t,
                                      int heads, int d) {
    int group = heads / kvh, rows = t * group;
    int g = blockIdx.x / rows, r = blockIdx.x % rows, i = r / group, hh = r % group;
    float M = -INF;
    for (int z = 0; z < splits; z++)
        M = fmaxf(M, part[(((size_t)z * kvh + g) * rows + r) * (d + 2) + d]);
    float L = 0.0f;
    for (int z = 0; z < splits; z++) {
        const float* p = part + (((size_t)z * kvh + g) * rows + r) * (d + 2);
        if (p[d] != -INF) L += expf(p[d] - M) * p[d + 1];
    }
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float a = 0.0f;
        for (int z = 0; z < splits; z++) {
            const float* p = part + (((size_t)z * kvh + g) * rows + r) * (d + 2);
            if (p[d] != -INF) a += expf(p[d] - M) * p[c];
        }
        out[((size_t)i * heads + g * group + hh) * d + c] = a / L;
    }
}
