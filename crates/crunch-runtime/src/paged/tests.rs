use super::*;
use proptest::prelude::*;

#[test]
fn reserve_grows_a_page_at_a_time_and_release_frees_all() {
    let mut pool = PagePool::new(4, 16).unwrap();
    assert_eq!((pool.slots(), pool.free_pages()), (64, 4));
    let mut a = BlockTable::default();
    pool.reserve(&mut a, 1).unwrap();
    assert_eq!(a.pages, [0]);
    pool.reserve(&mut a, 16).unwrap(); // still one page
    assert_eq!(a.pages, [0]);
    pool.reserve(&mut a, 17).unwrap();
    assert_eq!(a.pages, [0, 1]);
    assert_eq!(
        (a.slot(0, 16), a.slot(17, 16), a.slot(32, 16)),
        (Some(0), Some(17), None)
    );
    let mut b = BlockTable::default();
    pool.reserve(&mut b, 20).unwrap();
    assert_eq!(b.pages, [2, 3]);
    assert_eq!(b.slot(16, 16), Some(3 * 16));
    assert_eq!(pool.used_pages(), 4);
    pool.release(&mut a);
    assert!(a.pages.is_empty());
    assert_eq!(pool.free_pages(), 2);
    let mut c = BlockTable::default();
    pool.reserve(&mut c, 32).unwrap();
    assert_eq!(c.pages, [0, 1], "freed pages are reused");
}

#[test]
fn out_of_pages_is_all_or_nothing() {
    let mut pool = PagePool::new(3, 4).unwrap();
    let mut a = BlockTable::default();
    pool.reserve(&mut a, 8).unwrap();
    let mut b = BlockTable::default();
    let e = pool.reserve(&mut b, 9).unwrap_err();
    assert_eq!(
        e,
        OutOfPages {
            wanted: 3,
            free: 1,
            total: 3
        }
    );
    assert!(e.to_string().contains("exhausted"), "{e}");
    assert!(b.pages.is_empty());
    assert_eq!(pool.free_pages(), 1);
    pool.reserve(&mut b, 4).unwrap();
    assert_eq!(pool.free_pages(), 0);
}

#[test]
fn bad_pools_are_errors() {
    assert!(PagePool::new(0, 16).is_err());
    assert!(PagePool::new(4, 0).is_err());
    assert!(PagePool::new(usize::MAX / 2, 16).is_err());
}

#[derive(Clone, Debug)]
enum Op {
    /// Sequence `s` (mod live ones) appends `n` positions.
    Append(usize, usize),
    /// Sequence `s` finishes.
    Free(usize),
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8, 1usize..40).prop_map(|(s, n)| Op::Append(s, n)),
        1 => (0usize..8).prop_map(Op::Free),
        2 => Just(Op::Start),
    ]
}

proptest! {
    /// Sequences appending and finishing in any order over a shared store never see another's
    /// positions: every live sequence reads back through its table exactly what it wrote.
    #[test]
    fn interleavings_keep_every_sequence_intact(ops in prop::collection::vec(op(), 1..120),
                                                page_size in 1usize..9) {
        let mut pool = PagePool::new(24, page_size).unwrap();
        let mut store = vec![u64::MAX; pool.slots()];
        // (id, table): the value of position p of sequence id is id << 32 | p.
        let mut live: Vec<(u64, BlockTable)> = Vec::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Start => {
                    live.push((next, BlockTable::default()));
                    next += 1;
                }
                Op::Free(s) if !live.is_empty() => {
                    let (_, mut t) = live.remove(s % live.len());
                    pool.release(&mut t);
                }
                Op::Append(s, n) if !live.is_empty() => {
                    let i = s % live.len();
                    let (id, t) = &mut live[i];
                    let before = (t.pages.clone(), pool.free_pages());
                    match pool.reserve(t, t.len + n) {
                        Ok(()) => {
                            for p in t.len..t.len + n {
                                store[t.slot(p, page_size).unwrap()] = *id << 32 | p as u64;
                            }
                            t.len += n;
                        }
                        Err(e) => {
                            prop_assert_eq!(&before, &(t.pages.clone(), pool.free_pages()));
                            prop_assert!(e.wanted > e.free);
                        }
                    }
                }
                _ => {}
            }
            let held: usize = live.iter().map(|(_, t)| t.pages.len()).sum();
            prop_assert_eq!(held, pool.used_pages());
            for (id, t) in &live {
                prop_assert!(t.room(page_size) >= t.len);
                for p in 0..t.len {
                    prop_assert_eq!(store[t.slot(p, page_size).unwrap()], *id << 32 | p as u64);
                }
            }
        }
    }
}
