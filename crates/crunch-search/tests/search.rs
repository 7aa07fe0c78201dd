//! The search on a tiny model made in code: variants cached and read back, a budget-respecting
//! result never worse than its seeds (the uniform configurations that fit) on the held windows,
//! the same result for the same seed, and a resumed search equal to an uninterrupted one; the
//! fill pass spends a budget the search left unused and never makes the result worse.

use crunch_calib::{compress_model, windows, LevelInputs, RecipeFile, Stage};
use crunch_model::testing::{reference_ids, tiny_checkpoint};
use crunch_model::Checkpoint;
use crunch_runtime::Cpu;
use crunch_search::evo::Step;
use crunch_search::{
    fill_round, search, Budget, Database, Elite, EvoParams, Level, ModelFitness, SearchState,
    Variants,
};

fn levels() -> Vec<Level> {
    [2, 3, 4]
        .iter()
        .map(|&b| Level::quant("gptq", b, 32).unwrap())
        .collect()
}

fn params(generations: usize) -> EvoParams {
    EvoParams {
        generations,
        offspring: 6,
        steps: vec![
            Step {
                windows: 2,
                survivors: 2,
            },
            Step {
                windows: 4,
                survivors: 1,
            },
        ],
        seed: 5,
        fill_rounds: 0,
        patience: 0,
        jump: 1,
    }
}

/// The tiny model (its folder lives as long as the guard) and 8 windows of 32 tokens.
fn tiny_with_pool() -> (tempfile::TempDir, Checkpoint, Vec<Vec<u32>>) {
    let (d, ckpt) = tiny_checkpoint();
    let text = reference_ids(ckpt.config.vocab, 4096);
    let pool = windows(&text, 8, 32, 0).unwrap();
    (d, ckpt, pool)
}

/// Every level's variants of `ckpt` on `pool`, not cached.
fn uncached(ckpt: &Checkpoint, pool: &[Vec<u32>], inputs: LevelInputs) -> Database {
    Database::build(&Cpu, ckpt, &levels(), inputs, Some(pool), None, &mut ()).unwrap()
}

/// A ladder given out of order is sorted by the uniform models' sizes, with each unit's
/// variants moved alongside its level (no refusal after the variants were made).
#[test]
fn a_ladder_out_of_order_is_sorted_by_size() {
    let (_d, ckpt, pool) = tiny_with_pool();
    let given: Vec<Level> = levels().into_iter().rev().collect();
    let db = Database::build(
        &Cpu,
        &ckpt,
        &given,
        LevelInputs::Independent,
        Some(&pool),
        None,
        &mut (),
    )
    .unwrap();
    let sorted = uncached(&ckpt, &pool, LevelInputs::Independent);
    let names = |d: &Database| d.levels.iter().map(|l| l.short()).collect::<Vec<_>>();
    assert_eq!(names(&db), ["gptq2g32", "gptq3g32", "gptq4g32"]);
    assert_eq!(names(&db), names(&sorted));
    assert_eq!(db.variants, sorted.variants);
    assert_eq!(db.order, sorted.order);
    assert_eq!(db.costs().unwrap(), sorted.costs().unwrap());
}

/// Runs `generations` from `resume`, returning the final state and every saved state.
fn run(
    ckpt: &Checkpoint,
    db: &Database,
    pool: &[Vec<u32>],
    generations: usize,
    resume: Option<SearchState>,
) -> (SearchState, Vec<SearchState>) {
    let budget = Budget {
        costs: db.costs().unwrap(),
        limit: 3.0 * db.weights() as f64,
    };
    let base = ckpt.load(Cpu, |_| {}).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let mut fit = ModelFitness::new(&base, model, db, pool, 5);
    let mut saved = Vec::new();
    let seeds = budget.uniform_fits();
    let s = search(
        &budget,
        &params(generations),
        "k",
        &mut fit,
        &seeds,
        resume,
        &mut |s| {
            saved.push(s.clone());
            Ok(())
        },
    )
    .unwrap();
    assert!(budget.cost(&s.parent) <= budget.limit);
    assert!(budget.cost(s.chosen()) <= budget.limit);
    // Never worse than a seed: the answer's KL on the held windows is at most every uniform
    // configuration's that fits (each scored again here, independently of the search).
    let got = fit.held_kl(s.chosen()).unwrap();
    assert_eq!(Some(got), s.elite.as_ref().map(|e| e.fitness));
    for seed in &seeds {
        let f = fit.held_kl(seed).unwrap();
        assert!(got <= f, "result {got} worse than seed {seed:?} at {f}");
    }
    (s, saved)
}

#[test]
fn search_on_a_tiny_model() {
    let (_d, ckpt) = tiny_checkpoint();
    let text = reference_ids(ckpt.config.vocab, 4096);
    let pool = windows(&text, 8, 32, 0).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let build = |data: &[Vec<u32>]| {
        Database::build(
            &Cpu,
            &ckpt,
            &levels(),
            LevelInputs::Independent,
            Some(data),
            Some(cache.path()),
            &mut (),
        )
        .unwrap()
    };
    let db = build(&pool);
    assert_eq!((db.cached, db.made), (0, 14 * 3));
    // A second build reads every variant back, identical.
    let again = build(&pool);
    assert_eq!((again.cached, again.made), (14 * 3, 0));
    assert_eq!(again.variants, db.variants);
    // Other calibration data is another database.
    let other = windows(&text, 8, 32, 1).unwrap();
    assert_eq!(build(&other).made, 14 * 3);

    let (a, saved) = run(&ckpt, &db, &pool, 6, None);
    assert_eq!(a.history.len(), 6);
    // The search may only improve on the start as measured on each generation's data; it
    // must at least have moved levels around (not everything at 3 bits).
    assert!(a.parent.iter().any(|&l| l != 1), "{:?}", a.parent);
    let (b, _) = run(&ckpt, &db, &pool, 6, None);
    assert_eq!(a, b, "same seed, same search");
    // Killed after generation 3, resumed from its state: the same search.
    let (c, _) = run(&ckpt, &db, &pool, 6, Some(saved[2].clone()));
    assert_eq!(a, c, "resumed search differs");
    // A state of another search is not resumed.
    let mut foreign = saved[2].clone();
    foreign.key = "other".into();
    let (d, _) = run(&ckpt, &db, &pool, 6, Some(foreign));
    assert_eq!(a, d);
}

/// Sequential inputs: the variants of each level are exactly the model the recipe driver makes
/// with that level on every layer (what a search is compared with).
#[test]
fn sequential_levels_are_the_uniform_models() {
    let (_d, ckpt, pool) = tiny_with_pool();
    let db = uncached(&ckpt, &pool, LevelInputs::Sequential);
    let independent = uncached(&ckpt, &pool, LevelInputs::Independent);
    for (l, level) in levels().iter().enumerate() {
        let recipe = RecipeFile {
            stages: vec![Stage {
                method: level.stage.method.clone(),
                layers: Vec::new(),
            }],
            ..RecipeFile::default()
        };
        let uniform = compress_model(&Cpu, &ckpt, &recipe, Some(&pool), &mut ()).unwrap();
        for (u, id) in db.units.iter().enumerate() {
            assert_eq!(
                db.variants[u][l],
                uniform[&id.full_name()],
                "{} at {}",
                id.full_name(),
                level.short()
            );
        }
    }
    // The first layer sees the same inputs either way; later ones do not.
    assert_eq!(db.variants[0], independent.variants[0]);
    assert_ne!(db.variants.last(), independent.variants.last());
}

/// The fill pass on a tiny model: from uniform 3 bits under a budget half-way to uniform 4 bits
/// it raises layers into the unused budget, each kept raise lowering the held KL, within the
/// budget, the same on a second run; a search with the fill is never worse on the held windows
/// than the same search without it, whose elite it starts from.
#[test]
fn fill_uses_the_slack_on_a_tiny_model() {
    let (_d, ckpt, pool) = tiny_with_pool();
    let db = uncached(&ckpt, &pool, LevelInputs::Independent);
    let costs = db.costs().unwrap();
    let three = vec![1u8; costs.len()];
    let four = vec![2u8; costs.len()];
    // Half-way between uniform 3 and 4 bits: room for about half of the layers' raises.
    let probe = Budget {
        costs: costs.clone(),
        limit: 0.0,
    };
    let budget = Budget {
        limit: 0.5 * (probe.cost(&three) + probe.cost(&four)),
        costs,
    };
    let base = ckpt.load(Cpu, |_| {}).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let mut fit = ModelFitness::new(&base, model, &db, &pool, 5);
    let elite = Elite {
        fitness: fit.held_kl(&three).unwrap(),
        config: three.clone(),
    };
    let (got, round) = fill_round(&budget, &mut fit, &elite).unwrap();
    assert!(round.kept > 0, "{round:?}");
    assert!(budget.cost(&got.config) > budget.cost(&three));
    assert!(budget.cost(&got.config) <= budget.limit);
    assert!(got.fitness < elite.fitness, "{round:?}");
    assert_eq!(got.fitness, fit.held_kl(&got.config).unwrap());
    assert_eq!(fill_round(&budget, &mut fit, &elite).unwrap().0, got);

    for generations in [0, 3] {
        let mut p = params(generations);
        let mut run = |p: &EvoParams| {
            let seeds = [three.clone()];
            search(&budget, p, "k", &mut fit, &seeds, None, &mut |_| Ok(())).unwrap()
        };
        let without = run(&p);
        p.fill_rounds = 2;
        let with = run(&p);
        let (a, b) = (without.elite.unwrap(), with.elite.clone().unwrap());
        assert!(b.fitness <= a.fitness, "fill made it worse: {b:?} vs {a:?}");
        assert!(budget.cost(&b.config) <= budget.limit);
        assert!(!with.fill.is_empty() && with.fill[0].before == a.fitness);
        assert_eq!(run(&p), with, "same seed, same fill");
    }
}

/// The swap cache and reused buffers change only the time: the same search with no cache, a
/// cache small enough to evict, and one that keeps everything reaches the same state, and the
/// held KL of every configuration is the same to the bit.
/// A two-generation search from `seeds`, and the held-window KL bits of every seed and of the
/// chosen configuration: what two fitness paths must agree on to the bit.
fn searched_held_kls<B: crunch_runtime::Backend>(
    budget: &Budget,
    fit: &mut ModelFitness<'_, B>,
    seeds: &[Vec<u8>],
) -> (SearchState, Vec<u64>) {
    let s = search(budget, &params(2), "k", fit, seeds, None, &mut |_| Ok(())).unwrap();
    let kls = seeds
        .iter()
        .chain([s.chosen().to_vec()].iter())
        .map(|c| fit.held_kl(c).unwrap().to_bits())
        .collect();
    (s, kls)
}

#[test]
fn the_swap_cache_changes_no_result() {
    let (_d, ckpt, pool) = tiny_with_pool();
    let db = uncached(&ckpt, &pool, LevelInputs::Independent);
    let budget = Budget {
        costs: db.costs().unwrap(),
        limit: 3.0 * db.weights() as f64,
    };
    let base = ckpt.load(Cpu, |_| {}).unwrap();
    let largest = db
        .shapes
        .iter()
        .map(|(r, c)| 4 * (r * c) as u64)
        .max()
        .unwrap();
    let mut runs = Vec::new();
    for cache in [0, 3 * largest, u64::MAX] {
        let model = ckpt.load(Cpu, |_| {}).unwrap();
        let mut fit = ModelFitness::new(&base, model, &db, &pool, 5).with_swap_cache(cache);
        let seeds = budget.uniform_fits();
        let (s, kls) = searched_held_kls(&budget, &mut fit, &seeds);
        let t = fit.timing();
        assert!(t.layers_swapped > 0);
        if cache == 0 {
            assert_eq!(t.cache_hits, 0);
        } else {
            assert!(t.cache_hits > 0, "{t:?}");
        }
        runs.push((s, kls));
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}

/// A CPU backend with "device" memory: it keeps quantized codes packed as the CUDA backend
/// does (`QuantCodes::pack_words`) and expands them with the kernel's host transcription
/// (`QuantCodes::value`), reports `free` bytes free, and refuses the first `refuse` expansions
/// (a weight the device cannot write: the fitness's fallback to the host path).
struct FakeDevice {
    free: u64,
    refuse: std::sync::atomic::AtomicUsize,
}

struct FakeCodes {
    words: Vec<u32>,
    scales: Vec<half::f16>,
    zeros: Vec<u8>,
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
}

mod fake_device {
    use super::{FakeCodes, FakeDevice};
    use crunch_runtime::{AttentionMask, Backend, Cpu, KvSpec, QuantCodes, Result};
    use std::sync::atomic::Ordering;
    type T = <Cpu as Backend>::Tensor;

    impl Backend for FakeDevice {
        type Tensor = T;
        type Codes = FakeCodes;
        type KvStore = <Cpu as Backend>::KvStore;
        fn upload(&self, d: Vec<f32>, s: &[usize]) -> Result<T> {
            Cpu.upload(d, s)
        }
        fn upload_weight(&self, d: Vec<f32>, s: &[usize]) -> Result<T> {
            Cpu.upload_weight(d, s)
        }
        fn to_f32(&self, t: &T) -> Result<Vec<f32>> {
            Cpu.to_f32(t)
        }
        fn shape(&self, t: &T) -> Vec<usize> {
            Cpu.shape(t)
        }
        fn reshape(&self, t: &T, s: &[usize]) -> Result<T> {
            Cpu.reshape(t, s)
        }
        fn rows(&self, t: &T, a: usize, n: usize) -> Result<T> {
            Cpu.rows(t, a, n)
        }
        fn concat_rows(&self, p: &[&T]) -> Result<T> {
            Cpu.concat_rows(p)
        }
        fn embedding(&self, t: &T, ids: &[u32]) -> Result<T> {
            Cpu.embedding(t, ids)
        }
        fn linear(&self, x: &T, w: &T, b: Option<&T>) -> Result<T> {
            Cpu.linear(x, w, b)
        }
        fn add(&self, a: &T, b: &T) -> Result<T> {
            Cpu.add(a, b)
        }
        fn rms_norm(&self, x: &T, w: &T, eps: f32) -> Result<T> {
            Cpu.rms_norm(x, w, eps)
        }
        fn rope(&self, x: &T, c: &T, s: &T) -> Result<T> {
            Cpu.rope(x, c, s)
        }
        fn attention(&self, q: &T, k: &T, v: &T, m: AttentionMask, s: f32) -> Result<T> {
            Cpu.attention(q, k, v, m, s)
        }
        fn silu_mul(&self, g: &T, u: &T) -> Result<T> {
            Cpu.silu_mul(g, u)
        }
        fn gelu_mul(&self, g: &T, u: &T) -> Result<T> {
            Cpu.gelu_mul(g, u)
        }
        fn scale_rows(&self, x: &T, f: &[f32]) -> Result<T> {
            Cpu.scale_rows(x, f)
        }
        fn columns(&self, x: &T, a: usize, n: usize) -> Result<T> {
            Cpu.columns(x, a, n)
        }
        fn kv_alloc(&self, s: KvSpec) -> Result<Self::KvStore> {
            Cpu.kv_alloc(s)
        }
        fn kv_append(&self, kv: &mut Self::KvStore, k: &T, v: &T) -> Result<()> {
            Cpu.kv_append(kv, k, v)
        }
        fn kv_len(&self, kv: &Self::KvStore) -> usize {
            Cpu.kv_len(kv)
        }
        fn kv_attention(&self, q: &T, kv: &Self::KvStore, m: AttentionMask, s: f32) -> Result<T> {
            Cpu.kv_attention(q, kv, m, s)
        }
        fn free_memory(&self) -> Result<Option<u64>> {
            Ok(Some(self.free))
        }
        fn upload_codes(&self, q: &QuantCodes) -> Result<Option<FakeCodes>> {
            q.check()?;
            Ok(Some(FakeCodes {
                words: q.pack_words(),
                scales: q.scales.to_vec(),
                zeros: q.zeros.to_vec(),
                rows: q.rows,
                cols: q.cols,
                bits: q.bits,
                group: q.group,
            }))
        }
        fn dequantize_codes(&self, c: &FakeCodes, w: &mut T) -> Result<bool> {
            if Cpu.shape(w) != [c.rows, c.cols] {
                return Ok(false);
            }
            let left = self.refuse.load(Ordering::Relaxed);
            if left > 0 {
                self.refuse.store(left - 1, Ordering::Relaxed);
                return Ok(false);
            }
            // Only the words, scales and zero points are read (the codes were packed).
            let q = QuantCodes {
                rows: c.rows,
                cols: c.cols,
                bits: c.bits,
                group: c.group,
                codes: &[],
                scales: &c.scales,
                zeros: &c.zeros,
            };
            let values = (0..c.rows * c.cols)
                .map(|k| q.value(&c.words, k / c.cols, k % c.cols))
                .collect();
            *w = Cpu.upload_weight(values, &[c.rows, c.cols])?;
            Ok(true)
        }
    }
}

/// Decision 137 on the host: the same search with every variant kept "on the device" (the
/// fake above), with some expansions refused (the host path mid-search), with too little
/// free memory (the fallback), and on the plain CPU (no device memory): the same states and
/// held KLs to the bit, and counters that say which path ran.
#[test]
fn device_variants_change_no_result() {
    use std::sync::atomic::AtomicUsize;
    let (_d, ckpt, pool) = tiny_with_pool();
    let db = uncached(&ckpt, &pool, LevelInputs::Independent);
    let budget = Budget {
        costs: db.costs().unwrap(),
        limit: 3.0 * db.weights() as f64,
    };
    let need: u64 = (0..db.units.len())
        .flat_map(|u| (0..db.levels.len()).map(move |l| (u, l)))
        .map(|(u, l)| db.codes(u, l).expect("quantized").device_bytes())
        .sum();
    let seeds = budget.uniform_fits();
    let mut runs = Vec::new();
    // (free bytes, expansions refused, kept on the device)
    for (free, refuse, kept) in [
        (u64::MAX, 0, true),
        (u64::MAX, 5, true),
        (need, 0, false), // the codes need more than three quarters of it
    ] {
        let dev = FakeDevice {
            free,
            refuse: AtomicUsize::new(refuse),
        };
        let base = ckpt
            .load(
                FakeDevice {
                    free,
                    refuse: AtomicUsize::new(0),
                },
                |_| {},
            )
            .unwrap();
        let model = ckpt.load(dev, |_| {}).unwrap();
        let mut fit = ModelFitness::new(&base, model, &db, &pool, 5);
        let dv = fit.keep_variants_on_device().unwrap();
        assert!(dv.device);
        assert_eq!(dv.kept > 0, kept, "{dv:?}");
        if kept {
            assert_eq!(
                (dv.kept, dv.bytes, dv.on_host),
                (db.units.len() * 3, need, 0)
            );
            assert_eq!(dv.reason, None);
        } else {
            assert!(dv.reason.as_deref().unwrap().contains("exceed"), "{dv:?}");
        }
        let (s, kls) = searched_held_kls(&budget, &mut fit, &seeds);
        let t = fit.timing();
        assert_eq!(t.device_variants, kept);
        if kept {
            assert_eq!(t.device_variant_bytes, need);
            // Every swap on the device but the refused ones.
            assert_eq!(t.layers_swapped - t.device_swaps, refuse, "{t:?}");
            assert_eq!(t.cache_hits, 0);
        } else {
            assert_eq!(t.device_swaps, 0);
        }
        runs.push((s, kls));
    }
    // The plain CPU: no device memory, nothing kept.
    let base = ckpt.load(Cpu, |_| {}).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let mut fit = ModelFitness::new(&base, model, &db, &pool, 5);
    let dv = fit.keep_variants_on_device().unwrap();
    assert!(!dv.device && dv.kept == 0, "{dv:?}");
    let s = search(
        &budget,
        &params(2),
        "k",
        &mut fit,
        &seeds,
        None,
        &mut |_| Ok(()),
    )
    .unwrap();
    let kls: Vec<u64> = seeds
        .iter()
        .chain([s.chosen().to_vec()].iter())
        .map(|c| fit.held_kl(c).unwrap().to_bits())
        .collect();
    assert!(!fit.timing().device_variants);
    let cpu = (s, kls);
    for r in &runs {
        assert_eq!(r, &cpu);
    }
}

/// Levels with coded group scales (decision 145, `2g16s6`-style): variants made by GPTQ with
/// every scale on its row's grid, cached under their own record version and read back
/// identical, costs in the order given, and a search over them within its budget.
#[test]
fn coded_scale_levels_search_and_cache() {
    let (_d, ckpt, pool) = tiny_with_pool();
    let six = [("scale_bits", toml::Value::from(6))];
    let levels: Vec<Level> = [(2, 16), (3, 32), (3, 16)]
        .iter()
        .map(|&(b, g)| Level::quant_with("gptq", b, g, &six).unwrap())
        .collect();
    let names: Vec<String> = levels.iter().map(|l| l.short()).collect();
    assert_eq!(names, ["gptq2g16s6", "gptq3g32s6", "gptq3g16s6"]);
    let cache = tempfile::tempdir().unwrap();
    let build = || {
        Database::build(
            &Cpu,
            &ckpt,
            &levels,
            LevelInputs::Sequential,
            Some(&pool),
            Some(cache.path()),
            &mut (),
        )
        .unwrap()
    };
    let db = build();
    let again = build();
    assert_eq!((again.cached, again.made), (db.made, 0));
    assert_eq!(again.variants, db.variants);
    for v in db.variants.iter().flatten() {
        let q = v.main.quantized().unwrap();
        assert_eq!(q.spec.scale_bits, Some(6));
        assert!(q.coded_scales().unwrap().is_some());
    }
    for c in db.costs().unwrap() {
        assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
    }
    run(&ckpt, &db, &pool, 3, None);
}
