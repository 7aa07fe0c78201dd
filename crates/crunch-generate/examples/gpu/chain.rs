//! Dependent products through other kernels (decision 151): each product reads the output
//! of the kernel before it, so a PDL launch that read x or wrote y before its predecessor
//! finished would be caught. A small MLP stack at one row — rms_norm → gate/up (one launch)
//! → silu_mul → down → add, 4 blocks — on the GPU with every one-row variant against the
//! same stack on the host (the CPU packed kernel: the same activation quantization); 1, 3
//! and 16 rows (decision 155: under `cc+pdl` the 2–16-row split and product are PDL
//! launches between the non-PDL norm, silu_mul and add). The norm and silu_mul are told
//! which products read them (`rms_norm_for`, `silu_mul_for`), so with the `cc` variants at
//! 2–32 rows they write the int8 planes and the products skip their split (decision 159);
//! at one row they write none (the products fuse them instead, decision 161). "feed" then
//! holds the stack bit for bit to the same stack without that (`rms_norm`, `silu_mul`, a
//! split or staging per product), at 1–32 rows, f32 and bf16 activations, and requires the
//! planes at 2–32 rows and none at one. "fused" runs the stack (with q/k/v-like products of
//! each normed input) through `Backend::linears_fused` (decision 161) and requires it bit for
//! bit equal to the steps, with 3 fused launches per block at one row and none at more.

use super::{random_blocks, rel_diff, Rng};
use anyhow::Result;
use crunch_formats::DType;
use crunch_runtime::{Backend, Cuda, Epilogue, Gemv, Host, PackedMatrix, Prologue};
use serde_json::json;

/// Runs the chain checks ("dependent_chain", "feed", "fused") through `report`.
pub fn check_chain(
    f32_gpu: &Cuda,
    bf16_gpu: &Cuda,
    report: &mut impl FnMut(serde_json::Value, f64),
) -> Result<()> {
    let (h, inter, blocks) = (1024usize, 2048usize, 4usize);
    let mut seed = 7000u64;
    let mut mk = |rows, cols| {
        seed += 1;
        random_blocks(DType::Q4_0, rows, cols, 4, seed)
    };
    // gate, up, down, and q/k/v-like products of each block's normed input (their outputs
    // are returned too, so that the fused norm without an epilogue is compared as well).
    let stack: Vec<[PackedMatrix; 6]> = (0..blocks)
        .map(|_| {
            [
                mk(inter, h),
                mk(inter, h),
                mk(h, inter),
                mk(h, h),
                mk(256, h),
                mk(256, h),
            ]
        })
        .collect();
    let norm: Vec<f32> = (0..h).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
    /// How the stack is run: each step on its own (`rms_norm`, `silu_mul`, `add`), the
    /// producers told their readers (decision 159), or through `linears_fused` (decision
    /// 161: one fused product per step at one row under `cc`).
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Split,
        Feed,
        Fused,
    }
    fn run<B: Backend>(
        b: &B,
        stack: &[[PackedMatrix; 6]],
        norm: &[f32],
        x0: &[f32],
        mode: Mode,
    ) -> Result<Vec<f32>> {
        let h = norm.len();
        let nw = b.upload(norm.to_vec(), &[h])?;
        let mut x = b.upload(x0.to_vec(), &[x0.len() / h, h])?;
        let mut side = Vec::new();
        for ws in stack {
            let w: Vec<_> = ws
                .iter()
                .map(|m| b.upload_packed(m.clone()))
                .collect::<Result<_, _>>()?;
            let qkv = [&w[3], &w[4], &w[5]];
            let rms = || Prologue::RmsNorm {
                weight: &nw,
                eps: 1e-5,
            };
            if mode == Mode::Fused {
                for y in b.linears_fused(&x, &qkv, rms(), Epilogue::None)? {
                    side.extend(b.to_f32(&y)?);
                }
                let down = [&w[2]];
                let silu = Epilogue::SiluMul { next: &down };
                let a = b.linears_fused(&x, &[&w[0], &w[1]], rms(), silu)?;
                x = b
                    .linears_fused(&a[0], &down, Prologue::None, Epilogue::Add(&x))?
                    .remove(0);
                continue;
            }
            let feed = mode == Mode::Feed;
            let q = if feed {
                b.rms_norm_for(&x, &nw, 1e-5, &qkv)?
            } else {
                b.rms_norm(&x, &nw, 1e-5)?
            };
            for y in b.linears(&q, &qkv)? {
                side.extend(b.to_f32(&y)?);
            }
            let (n, a);
            if feed {
                n = b.rms_norm_for(&x, &nw, 1e-5, &[&w[0], &w[1]])?;
            } else {
                n = b.rms_norm(&x, &nw, 1e-5)?;
            }
            let gu = b.linears(&n, &[&w[0], &w[1]])?;
            if feed {
                a = b.silu_mul_for(&gu[0], &gu[1], &[&w[2]])?;
            } else {
                a = b.silu_mul(&gu[0], &gu[1])?;
            }
            let d = b.linear(&a, &w[2], None)?;
            x = b.add(&x, &d)?;
        }
        let mut out = b.to_f32(&x)?;
        out.extend(side);
        Ok(out)
    }
    for n in [1usize, 3, 16] {
        let x0: Vec<f32> = {
            let mut rng = Rng(99);
            (0..n * h).map(|_| rng.unit()).collect()
        };
        let want = run(&Host, &stack, &norm, &x0, Mode::Feed)?;
        for g in Gemv::ALL {
            let gpu = f32_gpu.clone().with_gemv(g);
            let got = run(&gpu, &stack, &norm, &x0, Mode::Feed)?;
            let rec = json!({"check": "dependent_chain", "hidden": h, "intermediate": inter,
                    "blocks": blocks, "n": n, "kernels": format!("gemv_{}", g.name())});
            report(rec, rel_diff(&got, &want));
        }
    }
    for n in [1usize, 2, 3, 4, 5, 8, 9, 16, 17, 32] {
        let mut rng = Rng(500 + n as u64);
        let x0: Vec<f32> = (0..n * h).map(|_| rng.unit()).collect();
        for g in Gemv::ALL
            .into_iter()
            .filter(|g| matches!(g, Gemv::Cc { .. }))
        {
            for (base, acts) in [(f32_gpu, "f32"), (bf16_gpu, "bf16")] {
                let gpu = base.clone().with_gemv(g);
                // That the producer did write planes (else "feed" would compare the
                // split with itself).
                let (w0, w1) = (
                    gpu.upload_packed(stack[0][0].clone())?,
                    gpu.upload_packed(stack[0][1].clone())?,
                );
                let normed = gpu.rms_norm_for(
                    &gpu.upload(x0.clone(), &[n, h])?,
                    &gpu.upload(norm.clone(), &[h])?,
                    1e-5,
                    &[&w0, &w1],
                )?;
                let planes = normed.carries_int8_planes();
                let fed = run(&gpu, &stack, &norm, &x0, Mode::Feed)?;
                let split = run(&gpu, &stack, &norm, &x0, Mode::Split)?;
                // And with the short kernels launched without PDL (decision 160).
                let serial = run(
                    &gpu.clone().with_pdl_between(false),
                    &stack,
                    &norm,
                    &x0,
                    Mode::Feed,
                )?;
                // "fused" (decision 161): the stack through `linears_fused`, bit for bit
                // the split one; at one row every step is a fused launch (3 per block),
                // at more rows none is (the steps run as composed).
                let before = gpu.fused_launches();
                let fused = run(&gpu, &stack, &norm, &x0, Mode::Fused)?;
                let launches = gpu.fused_launches() - before;
                let fused_differ = fused
                    .iter()
                    .zip(&split)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                let want_launches = if n == 1 { 3 * blocks as u64 } else { 0 };
                let rec = json!({"check": "fused", "hidden": h, "intermediate": inter,
                        "blocks": blocks, "n": n, "activations": acts,
                        "fused_launches": launches, "values_differing": fused_differ,
                        "values": fused.len(), "kernels": format!("gemv_{}", g.name())});
                let ok = fused_differ == 0 && launches == want_launches;
                report(rec, if ok { 0.0 } else { 1.0 });
                let differ = fed
                    .iter()
                    .zip(&split)
                    .zip(&serial)
                    .filter(|((a, b), c)| a.to_bits() != b.to_bits() || a.to_bits() != c.to_bits())
                    .count();
                let rec = json!({"check": "feed", "hidden": h, "intermediate": inter,
                        "blocks": blocks, "n": n, "activations": acts, "planes": planes,
                        "values_differing": differ, "kernels": format!("gemv_{}", g.name())});
                let ok = differ == 0 && planes == (n > 1);
                report(rec, if ok { 0.0 } else { 1.0 });
            }
        }
    }
    Ok(())
}
