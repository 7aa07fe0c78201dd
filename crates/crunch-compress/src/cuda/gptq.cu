// GPTQ on the GPU (gptq_cuda.rs): preparing the inverse-Hessian factor and the column loop.
// Compiled at run time by NVRTC; no headers. Arithmetic that decides codes is written without
// fused multiply-adds (__fmul_rn/__fsub_rn) so it rounds like the host code in gptq.rs.

#define MAX_BLOCK 256

extern "C" __global__ void diag_of(const float* h, float* d, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) d[i] = h[(size_t)i * n + i];
}

// a = J·P·(H + damping)·Pᵀ·J in f64, J the reversal: a[i][j] = H[perm[n-1-i]][perm[n-1-j]],
// with the dampened diagonal dd (indexed by processing position) on the diagonal.
extern "C" __global__ void build_reversed(const float* h, const int* perm, const double* dd,
                                          double* a, int n) {
    long long total = (long long)n * n;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int i = (int)(idx / n), j = (int)(idx % n);
        int pi = perm[n - 1 - i], pj = perm[n - 1 - j];
        a[idx] = i == j ? dd[n - 1 - i] : (double)h[(size_t)pi * n + pj];
    }
}

extern "C" __global__ void identity(double* b, int n) {
    long long total = (long long)n * n;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x)
        b[idx] = (idx / n == idx % n) ? 1.0 : 0.0;
}

// U[i][j] = L⁻¹[n-1-i][n-1-j] (L⁻¹ column-major), upper triangle, f32; bad set if not finite.
extern "C" __global__ void reverse_to_upper(const double* linv, float* u, int n, int* bad) {
    long long total = (long long)n * n;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int i = (int)(idx / n), j = (int)(idx % n);
        float v = 0.0f;
        if (j >= i) {
            v = (float)linv[(size_t)(n - 1 - j) * n + (n - 1 - i)];
            if (!(fabsf(v) <= 3.402823466e38f)) *bad = 1;  // NaN or ±inf
        }
        u[idx] = v;
    }
}

__device__ float to_f32(float v) { return v; }
__device__ float to_f32(unsigned short bf16) { return __uint_as_float((unsigned int)bf16 << 16); }

// wt[i][r] = W[r][perm[i]] (0 for dead columns): column-major W in processing order, from an
// f32 or a bf16 weight.
template <typename T>
__device__ void gather(const T* w, float* wt, const int* perm, const unsigned char* dead,
                       int rows, int cols) {
    long long total = (long long)rows * cols;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int i = (int)(idx / rows), r = (int)(idx % rows);
        int c = perm[i];
        wt[idx] = dead[c] ? 0.0f : to_f32(w[(size_t)r * cols + c]);
    }
}

extern "C" __global__ void gather_f32(const float* w, float* wt, const int* perm,
                                      const unsigned char* dead, int rows, int cols) {
    gather(w, wt, perm, dead, rows, cols);
}

extern "C" __global__ void gather_bf16(const unsigned short* w, float* wt, const int* perm,
                                       const unsigned char* dead, int rows, int cols) {
    gather(w, wt, perm, dead, rows, cols);
}

// Smallest f16 value ≥ x (x > 0 finite); +inf if none (the host then reports the overflow).
__device__ float f16_at_least(float x) {
    if (x <= 0.0f) return 5.9604645e-8f;  // the smallest f16 subnormal
    // x in [2^b, 2^(b+1)) with b its unbiased f32 exponent: f16 values there are 2^(b-10)
    // apart (10 mantissa bits), and 2^-24 apart below 2^-14 (f16 subnormals).
    int b = (int)((__float_as_uint(x) >> 23) & 0xff) - 127;
    int ulp_exp = max(b - 10, -24);
    float ulp = __uint_as_float((unsigned int)(ulp_exp + 127) << 23);
    float h = ceilf(x / ulp) * ulp;
    return h > 65504.0f ? __int_as_float(0x7f800000) : h;
}

// Grid of one group fitted on the current values v[0..len) (min–max, no clipping search).
__device__ void fit_group(const float* v, int len, float maxq, int symmetric, float* scale,
                          float* zero) {
    float lo = 0.0f, hi = 0.0f;
    for (int k = 0; k < len; k++) { lo = fminf(lo, v[k]); hi = fmaxf(hi, v[k]); }
    if (symmetric) {
        float m = fmaxf(hi, -lo);
        if (m == 0.0f) m = 1.0f;
        lo = -m; hi = m;
    } else if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f; hi = 1.0f;
    }
    float s = f16_at_least((hi - lo) / maxq);
    *scale = s;
    *zero = symmetric ? (maxq + 1.0f) * 0.5f : fminf(fmaxf(rintf(-lo / s), 0.0f), maxq);
}

// One lazy-update block of columns i1..i2 (processing order) for every row, one thread per
// row: quantize column by column, spread each error over the rest of the block, and record
// the scaled errors in err [i2-i1][rows] for the GEMM that updates the columns after i2.
// mode 0: per channel (params[r]); 1: static groups of the original column; 2: groups fitted
// here when a group starts (requires groups to lie inside blocks).
extern "C" __global__ void gptq_block(float* wt, const float* u, float* err, unsigned char* codes,
                                      float* scale, float* zero, const int* perm, int rows,
                                      int cols, int i1, int i2, int mode, int group_size,
                                      int ngroups, float maxq, int symmetric) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float w[MAX_BLOCK];
    int width = i2 - i1;
    for (int k = 0; k < width; k++) w[k] = wt[(size_t)(i1 + k) * rows + r];
    for (int i = i1; i < i2; i++) {
        int g = mode == 0 ? 0 : (mode == 1 ? perm[i] / group_size : i / group_size);
        size_t p = (size_t)r * ngroups + g;
        if (mode == 2 && i % group_size == 0) {
            int end = min(i + group_size, cols);
            fit_group(w + (i - i1), end - i, maxq, symmetric, scale + p, zero + p);
        }
        float s = scale[p], z = zero[p];
        float x = w[i - i1];
        float c = fminf(fmaxf(rintf(x / s) + z, 0.0f), maxq);
        codes[(size_t)r * cols + perm[i]] = (unsigned char)c;
        float q = __fmul_rn(c - z, s);
        const float* ui = u + (size_t)i * cols;
        float e = (x - q) / ui[i];
        err[(size_t)(i - i1) * rows + r] = e;
        for (int j = i + 1; j < i2; j++) w[j - i1] = __fsub_rn(w[j - i1], __fmul_rn(e, ui[j]));
    }
}

// Dequantized weight [rows][cols], original order: (code − zero)·scale of the column's group.
extern "C" __global__ void dequantize_f32(const unsigned char* codes, const float* scale,
                                          const float* zero, float* out, int rows, int cols,
                                          int group_size, int ngroups) {
    long long total = (long long)rows * cols;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int r = (int)(idx / cols), c = (int)(idx % cols);
        size_t p = (size_t)r * ngroups + c / group_size;
        out[idx] = __fmul_rn((float)codes[idx] - zero[p], scale[p]);
    }
}

// Marks in keep[0..len) (1 = kept) the k lowest scores as pruned, ordered by (score, index):
// a weight is pruned when fewer than k others come before it.
__device__ void prune_lowest(const float* s, int len, int k, unsigned char* keep) {
    for (int a = 0; a < len; a++) {
        int before = 0;
        for (int b = 0; b < len; b++) before += (s[b] < s[a]) || (s[b] == s[a] && b < a);
        keep[a] = before >= k;
    }
}

// SparseGPT's lazy-update block (sparsegpt.rs) for every row, one thread per row: choose the
// mask (unstructured: prune_k lowest saliencies w²/U_jj² of the block; N:M when nm_m > 0: m − n
// per group of m), prune (and quantize: quant 1 per channel, 2 groups fitted when reached),
// spread each error over the rest of the block, record the errors for the trailing GEMM.
extern "C" __global__ void sparsegpt_block(float* wt, const float* u, float* err, float* out,
                                           unsigned char* kept, unsigned char* codes,
                                           float* scale, float* zero, int rows, int cols,
                                           int i1, int i2, int prune_k, int nm_n, int nm_m,
                                           int quant, int group_size, int ngroups, float maxq,
                                           int symmetric) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float w[MAX_BLOCK], s[MAX_BLOCK];
    unsigned char keep[MAX_BLOCK];
    int width = i2 - i1;
    for (int k = 0; k < width; k++) {
        w[k] = wt[(size_t)(i1 + k) * rows + r];
        keep[k] = 1;
    }
    if (nm_m == 0 && prune_k > 0) {
        for (int k = 0; k < width; k++) {
            float d = w[k] / u[(size_t)(i1 + k) * cols + i1 + k];
            s[k] = __fmul_rn(d, d);
        }
        prune_lowest(s, width, prune_k, keep);
    }
    for (int i = i1; i < i2; i++) {
        int k = i - i1;
        if (nm_m > 0 && i % nm_m == 0) {
            for (int t = 0; t < nm_m; t++) {
                float d = w[k + t] / u[(size_t)(i + t) * cols + i + t];
                s[t] = __fmul_rn(d, d);
            }
            prune_lowest(s, nm_m, nm_m - nm_n, keep + k);
        }
        float x = w[k], q;
        if (quant) {
            size_t p = (size_t)r * ngroups + (quant == 1 ? 0 : i / group_size);
            if (quant == 2 && i % group_size == 0)
                fit_group(w + k, min(i + group_size, cols) - i, maxq, symmetric, scale + p,
                          zero + p);
            float sc = scale[p], z = zero[p];
            float c = keep[k] ? fminf(fmaxf(rintf(x / sc) + z, 0.0f), maxq) : z;
            codes[(size_t)r * cols + i] = (unsigned char)c;
            q = __fmul_rn(c - z, sc);
        } else {
            q = keep[k] ? x : 0.0f;
        }
        const float* ui = u + (size_t)i * cols;
        float e = (x - q) / ui[i];
        err[(size_t)k * rows + r] = e;
        out[(size_t)r * cols + i] = q;
        kept[(size_t)r * cols + i] = keep[k];
        for (int j = i + 1; j < i2; j++) w[j - i1] = __fsub_rn(w[j - i1], __fmul_rn(e, ui[j]));
    }
}
