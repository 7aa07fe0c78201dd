//! The host backend against the candle one, operation by operation.

use crate::{AttentionMask, Backend, Cpu, Host, PackedMatrix};
use crunch_kernels::{Bytes, DType};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503));
            ((x >> 8) as f32 / (1u32 << 24) as f32) - 0.5
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn both(data: &[f32], shape: &[usize]) -> (crate::HostTensor, candle_core::Tensor) {
    (
        Host.upload(data.to_vec(), shape).unwrap(),
        Cpu.upload(data.to_vec(), shape).unwrap(),
    )
}

#[test]
fn elementwise_ops_match_candle() {
    for &(rows, d) in &[(1, 64), (3, 96), (700, 128)] {
        let (xh, xc) = both(&values(rows * d, 1), &[rows, d]);
        let (yh, yc) = both(&values(rows * d, 2), &[rows, d]);
        let (wh, wc) = both(&values(d, 3), &[d]);
        let h = Host.to_f32(&Host.add(&xh, &yh).unwrap()).unwrap();
        let c = Cpu.to_f32(&Cpu.add(&xc, &yc).unwrap()).unwrap();
        assert_eq!(h, c);
        let h = Host
            .to_f32(&Host.rms_norm(&xh, &wh, 1e-6).unwrap())
            .unwrap();
        let c = Cpu.to_f32(&Cpu.rms_norm(&xc, &wc, 1e-6).unwrap()).unwrap();
        assert!(max_diff(&h, &c) < 1e-6, "rms_norm {rows}x{d}");
        let h = Host.to_f32(&Host.silu_mul(&xh, &yh).unwrap()).unwrap();
        let c = Cpu.to_f32(&Cpu.silu_mul(&xc, &yc).unwrap()).unwrap();
        assert!(max_diff(&h, &c) < 1e-6, "silu_mul {rows}x{d}");
        let (hd, heads) = (32, d / 32);
        let (xh3, xc3) = both(&values(rows * d, 4), &[rows, heads, hd]);
        let (ch, cc) = both(&values(rows * hd / 2, 5), &[rows, hd / 2]);
        let (sh, sc) = both(&values(rows * hd / 2, 6), &[rows, hd / 2]);
        let h = Host.to_f32(&Host.rope(&xh3, &ch, &sh).unwrap()).unwrap();
        let c = Cpu.to_f32(&Cpu.rope(&xc3, &cc, &sc).unwrap()).unwrap();
        assert!(max_diff(&h, &c) < 1e-6, "rope {rows}x{d}");
    }
}

#[test]
fn linear_and_embedding_match_candle() {
    let (n, k, m) = (5, 96, 33);
    let w = values(m * k, 7);
    let b = values(m, 8);
    let x = values(n * k, 9);
    let h = Host
        .linear(
            &Host.upload(x.clone(), &[n, k]).unwrap(),
            &Host.upload_weight(w.clone(), &[m, k]).unwrap(),
            Some(&Host.upload(b.clone(), &[m]).unwrap()),
        )
        .unwrap();
    let c = Cpu
        .linear(
            &Cpu.upload(x, &[n, k]).unwrap(),
            &Cpu.upload_weight(w.clone(), &[m, k]).unwrap(),
            Some(&Cpu.upload(b, &[m]).unwrap()),
        )
        .unwrap();
    assert_eq!(Host.shape(&h), vec![n, m]);
    assert!(max_diff(&Host.to_f32(&h).unwrap(), &Cpu.to_f32(&c).unwrap()) < 1e-5);
    // A packed (Q8_0) table gives the dequantized rows.
    let mut q8 = Vec::new();
    for blk in 0..m * k / 32 {
        q8.extend(half::f16::from_f32(0.01 * (blk % 7 + 1) as f32).to_le_bytes());
        q8.extend((0..32).map(|j| ((j * 5 + blk) % 255) as u8));
    }
    let table = PackedMatrix::new(DType::Q8_0, m, k, Bytes::owned(q8)).unwrap();
    let dense = table.dequantize();
    let t = Host.upload_packed(table).unwrap();
    let e = Host
        .to_f32(&Host.embedding(&t, &[3, 0, 32, 3]).unwrap())
        .unwrap();
    for (i, &id) in [3usize, 0, 32, 3].iter().enumerate() {
        assert_eq!(&e[i * k..(i + 1) * k], &dense[id * k..(id + 1) * k]);
    }
    assert!(Host.embedding(&t, &[33]).is_err());
}

#[test]
fn attention_and_cache_match_candle() {
    // Head sizes: a multiple of 16 (the tiled prefill's vector path) and one that is not.
    for (h, kvh, d) in [(4, 2, 16), (3, 1, 24)] {
        attention_and_cache_match_candle_for(h, kvh, d);
    }
}

fn attention_and_cache_match_candle_for(h: usize, kvh: usize, d: usize) {
    for window in [None, Some(5)] {
        for &(t, len, offset) in &[(40, 40, 0), (1, 40, 39), (7, 40, 33), (300, 620, 320)] {
            let q = values(t * h * d, 1);
            let k = values(len * kvh * d, 2);
            let v = values(len * kvh * d, 3);
            let mask = AttentionMask {
                window,
                query_offset: offset,
            };
            let scale = 0.25;
            let (qh, qc) = both(&q, &[t, h, d]);
            let (kh, kc) = both(&k, &[len, kvh, d]);
            let (vh, vc) = both(&v, &[len, kvh, d]);
            let want = Cpu
                .to_f32(&Cpu.attention(&qc, &kc, &vc, mask, scale).unwrap())
                .unwrap();
            let got = Host
                .to_f32(&Host.attention(&qh, &kh, &vh, mask, scale).unwrap())
                .unwrap();
            assert!(
                max_diff(&got, &want) < 1e-5,
                "d {d} t {t} len {len} window {window:?}"
            );
            // The same keys appended to a cache in two pieces.
            let mut kv = Host
                .kv_alloc(crate::KvSpec::new(len + 3, kvh, d, crate::KvMode::F32))
                .unwrap();
            let cut = len / 3;
            let (k1, v1) = (&k[..cut * kvh * d], &v[..cut * kvh * d]);
            let (k2, v2) = (&k[cut * kvh * d..], &v[cut * kvh * d..]);
            Host.kv_append(
                &mut kv,
                &both(k1, &[cut, kvh, d]).0,
                &both(v1, &[cut, kvh, d]).0,
            )
            .unwrap();
            let rest = len - cut;
            Host.kv_append(
                &mut kv,
                &both(k2, &[rest, kvh, d]).0,
                &both(v2, &[rest, kvh, d]).0,
            )
            .unwrap();
            assert_eq!(Host.kv_len(&kv), len);
            let got = Host
                .to_f32(&Host.kv_attention(&qh, &kv, mask, scale).unwrap())
                .unwrap();
            assert!(
                max_diff(&got, &want) < 1e-5,
                "cached d {d} t {t} len {len} window {window:?}"
            );
        }
    }
}

#[test]
fn cache_overflow_and_bad_offsets_are_errors() {
    let mut kv = Host
        .kv_alloc(crate::KvSpec::new(4, 1, 8, crate::KvMode::F32))
        .unwrap();
    let k = Host.upload(vec![0.0; 5 * 8], &[5, 1, 8]).unwrap();
    let err = Host.kv_append(&mut kv, &k, &k).unwrap_err();
    assert!(err.to_string().contains("cache full"), "{err}");
    let q = Host.upload(vec![0.0; 2 * 8], &[2, 1, 8]).unwrap();
    let mask = AttentionMask {
        window: None,
        query_offset: 3,
    };
    assert!(Host.kv_attention(&q, &kv, mask, 1.0).is_err());
}
