use super::*;
use crate::{Backend, BlockTable, Host, PagePool};
use crunch_rng::SplitMix64;

/// The kernel's loops and index arrays, run on the host over the device layout, give the host
/// backend's paged attention (which equals contiguous stores bit for bit) to 1e-5: the only
/// difference is the order of the online softmax's sums.
#[test]
fn transcription_matches_host_paged_attention() {
    let (kvh, heads, d, ps) = (3, 9, 64, 16);
    let mut rng = SplitMix64(11);
    let mut pool = PagePool::new(16, ps).unwrap();
    let slots = pool.slots();
    let host = Host;
    let mut hstore = host.kv_pool_alloc(slots, kvh, d).unwrap().unwrap();
    let mut dev_k = vec![0f32; slots * kvh * d];
    let mut dev_v = vec![0f32; slots * kvh * d];
    // (length, rows): decoding rows, a prefill, a sequence inside one page.
    let shapes = [(70usize, 1usize), (33, 5), (9, 1), (48, 1)];
    let mut tables: Vec<BlockTable> = shapes.iter().map(|_| BlockTable::default()).collect();
    for grow in (1..=5).map(|n| n * ps) {
        for (t, &(len, _)) in tables.iter_mut().zip(&shapes) {
            pool.reserve(t, grow.min(len)).unwrap();
        }
    }
    let mut q = Vec::new();
    for (t, &(len, rows)) in tables.iter_mut().zip(&shapes) {
        let n = len * kvh * d;
        let k: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let sl: Vec<u32> = (0..len).map(|p| t.slot(p, ps).unwrap() as u32).collect();
        for (p, &s) in sl.iter().enumerate() {
            let (src, dst) = (p * kvh * d, s as usize * kvh * d);
            dev_k[dst..dst + kvh * d].copy_from_slice(&k[src..src + kvh * d]);
            dev_v[dst..dst + kvh * d].copy_from_slice(&v[src..src + kvh * d]);
        }
        let kt = host.upload(k, &[len, kvh, d]).unwrap();
        let vt = host.upload(v, &[len, kvh, d]).unwrap();
        host.kv_pool_write(&mut hstore, &sl, &kt, &vt).unwrap();
        t.len = len;
        q.extend((0..rows * heads * d).map(|_| rng.uniform()));
    }
    let seqs: Vec<PagedSeq> = tables
        .iter()
        .zip(&shapes)
        .map(|(t, &(len, rows))| PagedSeq {
            pages: &t.pages,
            len,
            rows,
        })
        .collect();
    let rows: usize = shapes.iter().map(|s| s.1).sum();
    let args = PagedArgs::new(&seqs, ps, slots).unwrap();
    assert_eq!(args.row_pos, [69, 28, 29, 30, 31, 32, 8, 47]);
    assert_eq!(args.row_seq, [0, 1, 1, 1, 1, 1, 2, 3]);
    let qt = host.upload(q.clone(), &[rows, heads, d]).unwrap();
    for window in [None, Some(20)] {
        let want = host
            .to_f32(
                &host
                    .kv_pool_attention(&qt, &hstore, &seqs, ps, window, 0.125)
                    .unwrap(),
            )
            .unwrap();
        let got = transcribe_attend(
            &q,
            &dev_k,
            &dev_v,
            &args,
            heads,
            kvh,
            d,
            ps,
            window.unwrap_or(0),
            0.125,
        );
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "window {window:?}: off by {worst}");
    }
}

#[test]
fn args_reject_tables_that_do_not_cover_or_fit() {
    let short = [PagedSeq {
        pages: &[0],
        len: 17,
        rows: 1,
    }];
    assert!(PagedArgs::new(&short, 16, 64).is_err());
    let outside = [PagedSeq {
        pages: &[4],
        len: 3,
        rows: 1,
    }];
    assert!(PagedArgs::new(&outside, 16, 64).is_err());
    assert!(PagedArgs::new(&outside, 16, 80).is_ok());
}
