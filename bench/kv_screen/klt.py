# Screening: per (layer, head, side) mean, KLT basis and greedy bit allocation.
# usage: klt.py DUMP OUT kbudget vbudget [identity] [maxbits]
# budget: average bits per element incl. 1 bit of f16 scale+min per used component (G=32).
import numpy as np, sys
dump, out = sys.argv[1], sys.argv[2]
kb, vb = float(sys.argv[3]), float(sys.argv[4])
ident = len(sys.argv) > 5 and sys.argv[5] == '1'
maxb = int(sys.argv[6]) if len(sys.argv) > 6 else 8
L, H, D = 30, 3, 64
D_b = {0: 1.0, 2: 16/(9*12), 3: 16/(49*12), 4: 16/(225*12), 5: 16/(961*12), 6: 16/(3969*12), 7: 16/(16129*12), 8: 16/(65025*12)}
def alloc(lam, budget):
    b = np.zeros(D, int); total = budget * D
    used = 0.0
    while True:
        best = None
        for i in range(D):
            nb = 2 if b[i] == 0 else b[i] + 1
            if nb > maxb: continue
            cost = 3 if b[i] == 0 else 1
            if used + cost > total + 1e-9: continue
            gain = lam[i] * (D_b[b[i]] - D_b[nb]) / cost
            if best is None or gain > best[0]: best = (gain, i, nb, cost)
        if best is None: break
        _, i, nb, cost = best; b[i] = nb; used += cost
    return b
rec = []
for side, budget in (('k', kb), ('v', vb)):
    for l in range(L):
        x = np.fromfile(f'{dump}/{side}{l}.f32', np.float32).reshape(-1, H, D)
        x = x[np.arange(len(x)) % 512 != 0].astype(np.float64)
        for h in range(H):
            X = x[:, h, :]
            mu = X.mean(0)
            C = np.cov((X - mu).T)
            if ident:
                U = np.eye(D); lam = np.diag(C)
            else:
                lam, U = np.linalg.eigh(C); lam = lam[::-1]; U = U[:, ::-1]
            b = alloc(np.maximum(lam, 0), budget)
            rec.append((mu, U, b))
            if h == 0 and l % 6 == 0:
                print(side, l, 'bits', ''.join(str(v) for v in b), 'AM/GM', lam.mean()/np.exp(np.log(np.maximum(lam,1e-12)).mean()), file=sys.stderr)
with open(out, 'wb') as f:
    f.write(f'{L} {H} {D}\n'.encode())
    for mu, U, b in rec:
        f.write(mu.astype('<f4').tobytes()); f.write(U.astype('<f4').tobytes()); f.write(b.astype('<f4').tobytes())
