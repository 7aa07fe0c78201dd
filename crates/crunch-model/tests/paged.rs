//! Decoding over a paged key/value cache (decision 141) against per-sequence caches, for every
//! architecture of the reference suite (Mistral's sliding window included), on the host
//! backend: two sequences prefilled separately, then decoded together, their pages of 3
//! positions interleaved in the pool. The same kernels read the same values at other
//! addresses, so the logits must be identical bit for bit.

use crunch_model::testing::{reference_ids, tiny_dir, tiny_specs};
use crunch_model::{Checkpoint, KvCache, Model};
use crunch_runtime::{Backend, BlockTable, Host};

const PAGE: usize = 3;

fn logits(m: &Model<Host>, h: &<Host as Backend>::Tensor) -> Vec<f32> {
    Host.to_f32(&m.logits(h, &mut ()).unwrap()).unwrap()
}

#[test]
fn paged_decoding_equals_per_sequence_caches_bit_for_bit() {
    for spec in tiny_specs() {
        let dir = tiny_dir(&spec);
        let m = Checkpoint::open(dir.path())
            .unwrap()
            .load(Host, |_| {})
            .unwrap();
        let ids = reference_ids(m.config.vocab, 40);
        let (pa, pb) = (&ids[..5], &ids[5..14]);
        let steps: Vec<[u32; 2]> = (0..10).map(|i| [ids[14 + i], ids[24 + i]]).collect();
        let rope = m.rope_tables(32).unwrap();

        let mut own = [m.kv_cache_for(32), m.kv_cache_for(32)];
        let mut want = Vec::new();
        for (c, p) in own.iter_mut().zip([pa, pb]) {
            let h = m.hidden_states_batch(p, &mut [c], &rope, &mut ()).unwrap();
            want.push(logits(&m, &h));
        }
        for s in &steps {
            let mut refs: Vec<&mut KvCache<Host>> = own.iter_mut().collect();
            let h = m.hidden_states_batch(s, &mut refs, &rope, &mut ()).unwrap();
            want.push(logits(&m, &h));
        }

        let mut cache = m.paged_cache(30, PAGE).unwrap().expect("the host pages");
        let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
        let mut got = Vec::new();
        for (t, p) in [(&mut a, pa), (&mut b, pb)] {
            cache.reserve(t, p.len()).unwrap();
            let h = m
                .hidden_states_paged(p, &mut cache, &mut [t], &rope, &mut ())
                .unwrap();
            got.push(logits(&m, &h));
        }
        for s in &steps {
            for t in [&mut a, &mut b] {
                let n = t.len + 1;
                cache.reserve(t, n).unwrap();
            }
            let h = m
                .hidden_states_paged(s, &mut cache, &mut [&mut a, &mut b], &rope, &mut ())
                .unwrap();
            got.push(logits(&m, &h));
        }
        assert!(
            a.pages.windows(2).any(|w| w[1] != w[0] + 1),
            "pages interleave"
        );
        assert_eq!((a.len, b.len), (15, 19));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}: pass {i} differs",
                spec.name
            );
        }
        // A table that does not cover the step is an error before any work.
        let mut short = BlockTable::default();
        assert!(m
            .hidden_states_paged(&ids[..2], &mut cache, &mut [&mut short], &rope, &mut ())
            .is_err());
        cache.release(&mut a);
        cache.release(&mut b);
        assert_eq!(cache.pool().used_pages(), 0);
    }
}
