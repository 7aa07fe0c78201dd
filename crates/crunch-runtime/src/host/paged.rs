//! The host's paged key/value pool (decision 141): one block's store is an [`F32Kv`] of
//! `slots` positions (`[kv_heads, slots, head_dim]`, as a sequence's own store lays them
//! out), written a row at a time to the slots the caller's block tables say, and attended
//! by the host's attention reading positions through a block table (`KvView::pages`), one
//! sequence after another.

use super::attention::{self, KvView};
use super::{dims3, F32Kv, HostTensor, Shape};
use crate::{AttentionMask, Error, PagedSeq, Result};

/// Row `i` of `k`/`v` `[rows, kv_heads, head_dim]` into slot `slots[i]` of `pool`.
pub(super) fn write(pool: &mut F32Kv, slots: &[u32], k: &HostTensor, v: &HostTensor) -> Result<()> {
    let (t, kvh, d) = dims3("kv_pool_write", k)?;
    if kvh != pool.kv_heads || d != pool.head_dim || k.shape != v.shape || slots.len() != t {
        return Err(Error(format!(
            "kv_pool_write: keys {:?} / values {:?} and {} slots for a pool of {} heads of {}",
            k.shape,
            v.shape,
            slots.len(),
            pool.kv_heads,
            pool.head_dim
        )));
    }
    if let Some(&bad) = slots.iter().find(|&&s| s as usize >= pool.capacity) {
        return Err(Error(format!(
            "kv_pool_write: slot {bad} outside a pool of {} slots",
            pool.capacity
        )));
    }
    let (ks, vs) = (k.f32s("kv_pool_write")?, v.f32s("kv_pool_write")?);
    for (i, &slot) in slots.iter().enumerate() {
        for g in 0..kvh {
            let src = (i * kvh + g) * d;
            let dst = (g * pool.capacity + slot as usize) * d;
            pool.k[dst..dst + d].copy_from_slice(&ks[src..src + d]);
            pool.v[dst..dst + d].copy_from_slice(&vs[src..src + d]);
        }
    }
    Ok(())
}

/// See `Backend::kv_pool_attention`.
pub(super) fn attend(
    pool: &F32Kv,
    q: &HostTensor,
    seqs: &[PagedSeq],
    page_size: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<HostTensor> {
    let (rows, heads, d) = dims3("kv_pool_attention q", q)?;
    let wanted: usize = seqs.iter().map(|s| s.rows).sum();
    if d != pool.head_dim || heads % pool.kv_heads != 0 || wanted != rows || page_size == 0 {
        return Err(Error(format!(
            "kv_pool_attention: q {:?} ({wanted} rows asked for) against a pool of {} heads \
             of {}, pages of {page_size}",
            q.shape, pool.kv_heads, pool.head_dim
        )));
    }
    let qs = q.f32s("kv_pool_attention")?;
    let width = heads * d;
    let mut out = Vec::with_capacity(rows * width);
    let mut row = 0;
    for s in seqs {
        if s.rows > s.len || s.pages.len() * page_size < s.len {
            return Err(Error(format!(
                "kv_pool_attention: a sequence of {} positions ({} new) has {} pages of \
                 {page_size}",
                s.len,
                s.rows,
                s.pages.len()
            )));
        }
        if let Some(&bad) = s
            .pages
            .iter()
            .find(|&&p| (p as usize + 1) * page_size > pool.capacity)
        {
            return Err(Error(format!(
                "kv_pool_attention: page {bad} outside a pool of {} slots",
                pool.capacity
            )));
        }
        let view = KvView {
            k: &pool.k,
            v: &pool.v,
            len: s.len,
            kv_heads: pool.kv_heads,
            head_dim: d,
            head_stride: pool.capacity * d,
            pos_stride: d,
            pages: Some((s.pages, page_size)),
        };
        let mask = AttentionMask {
            window,
            query_offset: s.len - s.rows,
        };
        let qrows = &qs[row * width..(row + s.rows) * width];
        out.extend(attention::attend(qrows, s.rows, heads, &view, mask, scale)?);
        row += s.rows;
    }
    Ok(HostTensor::from_vec(out, Shape::new(&[rows, width])?))
}

#[cfg(test)]
mod tests {
    use crate::{AttentionMask, Backend, BlockTable, Host, KvMode, KvSpec, PagePool, PagedSeq};
    use crunch_rng::SplitMix64;

    fn rand(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform()).collect()
    }

    /// Two sequences whose pages interleave in the pool, one decoding a row and one
    /// prefilling several (the tiled path): attention through their block tables equals
    /// attention over their own contiguous stores bit for bit, with and without a window.
    #[test]
    fn attention_through_pages_equals_contiguous_stores() {
        let (kvh, heads, d, ps) = (2, 4, 16, 4);
        let b = Host;
        let mut rng = SplitMix64(7);
        let mut pool = PagePool::new(24, ps).unwrap();
        let mut store = b.kv_pool_alloc(pool.slots(), kvh, d).unwrap().unwrap();
        // (length, query rows)
        let shapes = [(37usize, 1usize), (21, 6), (3, 3)];
        let mut tables: Vec<BlockTable> = shapes.iter().map(|_| BlockTable::default()).collect();
        let mut data = Vec::new();
        // Grow the sequences a page's worth at a time in turn so that their pages interleave.
        for step in 0.. {
            let mut grew = false;
            for (t, &(len, _)) in tables.iter_mut().zip(&shapes) {
                let want = ((step + 1) * ps).min(len);
                if t.room(ps) < want {
                    pool.reserve(t, want).unwrap();
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        assert_ne!(
            tables[0].pages,
            (0..10).collect::<Vec<u32>>(),
            "pages interleave"
        );
        let mut qs = Vec::new();
        for (t, &(len, rows)) in tables.iter_mut().zip(&shapes) {
            let (k, v) = (rand(&mut rng, len * kvh * d), rand(&mut rng, len * kvh * d));
            let slots: Vec<u32> = (0..len).map(|p| t.slot(p, ps).unwrap() as u32).collect();
            let up = |x: &Vec<f32>| b.upload(x.clone(), &[len, kvh, d]).unwrap();
            b.kv_pool_write(&mut store, &slots, &up(&k), &up(&v))
                .unwrap();
            t.len = len;
            qs.extend(rand(&mut rng, rows * heads * d));
            data.push((k, v));
        }
        let q = b
            .upload(qs.clone(), &[qs.len() / (heads * d), heads, d])
            .unwrap();
        for window in [None, Some(5)] {
            let seqs: Vec<PagedSeq> = tables
                .iter()
                .zip(&shapes)
                .map(|(t, &(len, rows))| PagedSeq {
                    pages: &t.pages,
                    len,
                    rows,
                })
                .collect();
            let got = b
                .to_f32(
                    &b.kv_pool_attention(&q, &store, &seqs, ps, window, 0.25)
                        .unwrap(),
                )
                .unwrap();
            let mut want = Vec::new();
            let mut row = 0;
            for ((k, v), &(len, rows)) in data.iter().zip(&shapes) {
                let mut own = b.kv_alloc(KvSpec::new(len, kvh, d, KvMode::F32)).unwrap();
                let up = |x: &Vec<f32>| b.upload(x.clone(), &[len, kvh, d]).unwrap();
                b.kv_append(&mut own, &up(k), &up(v)).unwrap();
                let qrows = qs[row * heads * d..(row + rows) * heads * d].to_vec();
                let qt = b.upload(qrows, &[rows, heads, d]).unwrap();
                let mask = AttentionMask {
                    window,
                    query_offset: len - rows,
                };
                want.extend(
                    b.to_f32(&b.kv_attention(&qt, &own, mask, 0.25).unwrap())
                        .unwrap(),
                );
                row += rows;
            }
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "window {window:?}: paged attention differs from the contiguous store's"
            );
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let b = Host;
        let mut store = b.kv_pool_alloc(8, 1, 4).unwrap().unwrap();
        let k = b.upload(vec![0.0; 4], &[1, 1, 4]).unwrap();
        assert!(
            b.kv_pool_write(&mut store, &[8], &k, &k).is_err(),
            "slot outside"
        );
        assert!(
            b.kv_append(&mut store, &k, &k).is_err(),
            "a pool is not a sequence store"
        );
        let q = b.upload(vec![0.0; 4], &[1, 1, 4]).unwrap();
        let short = [PagedSeq {
            pages: &[0],
            len: 5,
            rows: 1,
        }];
        assert!(b
            .kv_pool_attention(&q, &store, &short, 4, None, 1.0)
            .is_err());
    }
}
