//! `gpu_packed check`'s paged key/value pool (decision 141): the same random keys and values
//! written to the host's pool and to the CUDA backend's through block tables whose pages
//! interleave, then one attention call over four sequences at once (decoding rows, a prefill
//! of 40 rows, a sequence inside one page, a long one), with and without a sliding window, on
//! both. Required: issue 17's 1e-3 (max |GPU − CPU| / max |CPU|) for heads of 64 and 128
//! channels; the kernel's host transcription meets 1e-5 against the same host attention
//! (`cuda::kvpaged::tests`), so `max_rel_diff` should be about 1e-6.

use anyhow::Result;
use crunch_rng::SplitMix64;
use crunch_runtime::{Backend, BlockTable, Cuda, Host, PagePool, PagedSeq};
use serde_json::json;

/// Runs the comparison; returns how many failed.
pub fn check_kv_paged(gpu: &Cuda) -> Result<usize> {
    let mut failed = 0;
    for d in [64usize, 128] {
        for window in [None, Some(100)] {
            let worst = compare(gpu, d, window)?;
            let pass = worst <= 1e-3;
            failed += usize::from(!pass);
            println!(
                "{}",
                json!({"check": "kv_paged_attention", "head_dim": d, "window": window,
                       "sequences": SHAPES.len(), "max_rel_diff": worst, "tolerance": 1e-3,
                       "pass": pass})
            );
        }
    }
    Ok(failed)
}

/// (positions after the step, query rows) of each sequence.
const SHAPES: [(usize, usize); 4] = [(700, 1), (300, 40), (9, 1), (1500, 1)];

fn compare(gpu: &Cuda, d: usize, window: Option<usize>) -> Result<f64> {
    let (kvh, heads, ps) = (4usize, 16usize, 16usize);
    let mut rng = SplitMix64(41);
    let mut pool = PagePool::new(200, ps)?;
    let mut hs = Host
        .kv_pool_alloc(pool.slots(), kvh, d)?
        .expect("the host pages");
    let mut gs = gpu
        .kv_pool_alloc(pool.slots(), kvh, d)?
        .expect("the GPU pages");
    let mut tables: Vec<BlockTable> = SHAPES.iter().map(|_| BlockTable::default()).collect();
    // Grown a page at a time in turn, so that the sequences' pages interleave.
    for grow in (1..=SHAPES[3].0.div_ceil(ps)).map(|n| n * ps) {
        for (t, &(len, _)) in tables.iter_mut().zip(&SHAPES) {
            pool.reserve(t, grow.min(len))?;
        }
    }
    let mut q = Vec::new();
    for (t, &(len, rows)) in tables.iter_mut().zip(&SHAPES) {
        let n = len * kvh * d;
        let k: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let slots: Vec<u32> = (0..len)
            .map(|p| t.slot(p, ps).expect("reserved") as u32)
            .collect();
        let shape = [len, kvh, d];
        Host.kv_pool_write(
            &mut hs,
            &slots,
            &Host.upload(k.clone(), &shape)?,
            &Host.upload(v.clone(), &shape)?,
        )?;
        gpu.kv_pool_write(
            &mut gs,
            &slots,
            &gpu.upload(k, &shape)?,
            &gpu.upload(v, &shape)?,
        )?;
        t.len = len;
        q.extend((0..rows * heads * d).map(|_| rng.uniform()));
    }
    let seqs: Vec<PagedSeq> = tables
        .iter()
        .zip(&SHAPES)
        .map(|(t, &(len, rows))| PagedSeq {
            pages: &t.pages,
            len,
            rows,
        })
        .collect();
    let rows: usize = SHAPES.iter().map(|s| s.1).sum();
    let scale = (d as f32).powf(-0.5);
    let want = Host.to_f32(&Host.kv_pool_attention(
        &Host.upload(q.clone(), &[rows, heads, d])?,
        &hs,
        &seqs,
        ps,
        window,
        scale,
    )?)?;
    let got = gpu.to_f32(&gpu.kv_pool_attention(
        &gpu.upload(q, &[rows, heads, d])?,
        &gs,
        &seqs,
        ps,
        window,
        scale,
    )?)?;
    let bound = want
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    Ok(got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs())) as f64
        / bound as f64)
}
