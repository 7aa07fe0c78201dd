// The paged key/value pool on the GPU (decision 141, kvpaged.rs): every block's store is f32
// rows [slots, kv_heads, head_dim]; a sequence's position j lives in slot
// tables[table_off[seq] + j / page_size] * page_size + j % page_size.
//
// kv_paged_write: row r of this step's keys and values to slot slots[r], all sequences in one
// launch. kv_paged_attend: one launch for every query row of every sequence of a step; a block
// of PW warps takes one (query row, head), each warp an online softmax over every PW-th
// position the row sees, then warp 0 merges the PW partial results.
// Limits: head_dim <= 32 * MAXC = 128 channels (the host checks).

#define PW 4
#define MAXC 4
// No headers under NVRTC: -infinity spelled out.
#define NEG_INF __int_as_float(0xff800000)

extern "C" __global__ void kv_paged_write(float* kp, float* vp, const float* k, const float* v,
                                          const int* slots, int rows, int width) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * width) return;
    int r = (int)(i / width);
    int c = (int)(i % width);
    long dst = (long)slots[r] * width + c;
    kp[dst] = k[i];
    vp[dst] = v[i];
}

extern "C" __global__ void kv_paged_attend(const float* q, const float* kp, const float* vp,
                                           const int* row_seq, const int* row_pos,
                                           const int* table_off, const int* tables, float* out,
                                           int heads, int kv_heads, int d, int page_size,
                                           int window, float scale) {
    int row = blockIdx.x;
    int h = blockIdx.y;
    int warp = threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    int g = h / (heads / kv_heads);
    int p = row_pos[row];
    const int* table = tables + table_off[row_seq[row]];
    int lo = window > 0 ? max(0, p + 1 - window) : 0;
    const float* qrow = q + ((long)row * heads + h) * d;
    float qr[MAXC];
    float acc[MAXC];
    for (int i = 0; i < MAXC; i++) {
        int c = lane + 32 * i;
        qr[i] = c < d ? qrow[c] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF;
    float l = 0.0f;
    for (int j = lo + warp; j <= p; j += PW) {
        long slot = (long)table[j / page_size] * page_size + j % page_size;
        long at = (slot * kv_heads + g) * d;
        float s = 0.0f;
        for (int i = 0; i < MAXC; i++) {
            int c = lane + 32 * i;
            if (c < d) s += qr[i] * kp[at + c];
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        float mn = fmaxf(m, s);
        float a = expf(m - mn);  // 0 for the first position (m = -inf)
        float b = expf(s - mn);
        l = l * a + b;
        for (int i = 0; i < MAXC; i++) {
            int c = lane + 32 * i;
            if (c < d) acc[i] = acc[i] * a + b * vp[at + c];
        }
        m = mn;
    }
    __shared__ float sm[PW];
    __shared__ float sl[PW];
    __shared__ float sacc[PW][32 * MAXC];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
    for (int i = 0; i < MAXC; i++) {
        int c = lane + 32 * i;
        if (c < d) sacc[warp][c] = acc[i];
    }
    __syncthreads();
    if (warp != 0) return;
    float mx = NEG_INF;
    for (int w = 0; w < PW; w++) mx = fmaxf(mx, sm[w]);
    float z = 0.0f;
    for (int w = 0; w < PW; w++)
        if (sl[w] > 0.0f) z += sl[w] * expf(sm[w] - mx);
    float* orow = out + ((long)row * heads + h) * d;
    for (int i = 0; i < MAXC; i++) {
        int c = lane + 32 * i;
        if (c >= d) continue;
        float o = 0.0f;
        for (int w = 0; w < PW; w++)
            if (sl[w] > 0.0f) o += sacc[w][c] * expf(sm[w] - mx);
        orow[c] = o / z;
    }
}
