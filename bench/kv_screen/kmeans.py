# Screening: per (layer, head, channel group) k-means codebooks from pre-RoPE key / value dumps.
# usage: kmeans.py DUMP OUT kdim kbits vdim vbits [window] [nsamp] [iters] [kweight]
import numpy as np, sys, os
dump, out = sys.argv[1], sys.argv[2]
kdim, kbits, vdim, vbits = map(int, sys.argv[3:7])
window = int(sys.argv[7]) if len(sys.argv) > 7 else 512
nsamp = int(sys.argv[8]) if len(sys.argv) > 8 else 8192
iters = int(sys.argv[9]) if len(sys.argv) > 9 else 15
L, H, D = 30, 3, 64
rng = np.random.default_rng(0)

def groups(dim, key):
    h = D // 2
    if not key: return [list(range(g*dim, (g+1)*dim)) for g in range(D//dim)]
    if dim == 1: return [[c] for c in range(D)]
    if dim == 2: return [[i, i+h] for i in range(h)]
    if dim == 4: return [[2*m, 2*m+1, 2*m+h, 2*m+1+h] for m in range(h//2)]
    if dim == 8: return [[4*m+j for j in range(4)] + [4*m+j+h for j in range(4)] for m in range(h//4)]

def kmeans(X, n):
    # X [G, N, dim] batched over groups; k-means++-lite init: random distinct samples
    G, N, dim = X.shape
    idx = np.stack([rng.choice(N, n, replace=False) for _ in range(G)])
    C = np.take_along_axis(X, idx[:, :, None], axis=1).copy()
    for it in range(iters):
        d2 = (X*X).sum(-1)[:, :, None] - 2*np.einsum('gnd,gkd->gnk', X, C) + (C*C).sum(-1)[:, None, :]
        a = d2.argmin(-1)
        for g in range(G):
            cnt = np.bincount(a[g], minlength=n)
            s = np.stack([np.bincount(a[g], weights=X[g][:, j], minlength=n) for j in range(dim)], 1)
            empty = cnt == 0
            C[g][~empty] = (s[~empty] / cnt[~empty, None])
            if empty.any():  # re-seed empty clusters at the worst-fit points
                far = np.argsort(-d2[g][np.arange(N), a[g]])[:empty.sum()]
                C[g][empty] = X[g][far]
    return C

books = {'k': [], 'v': []}
for side, dim, bits in (('k', kdim, kbits), ('v', vdim, vbits)):
    gs = np.array(groups(dim, side == 'k'))
    for l in range(L):
        x = np.fromfile(f'{dump}/{side}{l}.f32', np.float32).reshape(-1, H, D)
        keep = np.arange(len(x)) % window != 0
        x = x[keep]
        sel = rng.choice(len(x), min(nsamp, len(x)), replace=False)
        x = x[sel]
        for h in range(H):
            X = x[:, h, :][:, gs].transpose(1, 0, 2).astype(np.float32)  # [G, N, dim]
            C = kmeans(X, 1 << bits)
            books[side].append(C.astype(np.float32))
        print(side, l, flush=True, file=sys.stderr)
with open(out, 'wb') as f:
    f.write(f'{L} {H} {D} {kdim} {kbits} {vdim} {vbits}\n'.encode())
    for side in 'kv':
        for C in books[side]:
            f.write(C.astype('<f4').tobytes())
