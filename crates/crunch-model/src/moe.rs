//! Sparse mixture-of-experts MLPs (Mixtral, Qwen3-MoE): a linear router scores every expert
//! for every token, each token runs through its `top_k` best experts, and their outputs are
//! summed weighted by the routing probabilities.
//!
//! Routing is decided on the host from the router's logits (`[tokens, experts]`, small), in
//! f32 as transformers does it: softmax, top-k, optional renormalisation. Each expert then
//! runs on the rows routed to it only (gathered with [`Backend::embedding`], the row gather),
//! its output rows are scaled by their weights, and every token's `top_k` contributions are
//! gathered back and added in ascending expert order, transformers' `index_add_` order. Only
//! `linear`, `embedding`, `scale_rows`, `concat_rows` and `add` are used, so every backend
//! runs it.

use crate::config::{Activation, MoeConfig, MoeNaming};
use crate::hooks::{LinearHook, LinearId};
use crate::layout::{expert_linear, moe_names};
use crate::model::{gated, Linear};
use crate::Result;
use crunch_runtime::Backend;

/// One expert: a gated MLP.
pub struct Expert<B: Backend> {
    pub gate: Linear<B>,
    pub up: Linear<B>,
    pub down: Linear<B>,
}

/// A sparse MLP's weights and routing rule.
pub struct Moe<B: Backend> {
    /// `[experts, hidden]`.
    pub router: Linear<B>,
    pub experts: Vec<Expert<B>>,
    pub top_k: usize,
    pub normalize_top_k: bool,
    pub naming: MoeNaming,
}

/// Each token's experts and weights, `top_k` per token, sorted by expert index.
pub fn route(
    logits: &[f32],
    experts: usize,
    top_k: usize,
    normalize: bool,
) -> Vec<Vec<(usize, f32)>> {
    logits
        .chunks(experts)
        .map(|row| {
            // softmax in f32, then the top k probabilities (ties: the lower index first, as
            // torch.topk on CPU).
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|&x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            let p: Vec<f32> = e.iter().map(|&x| x / z).collect();
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let mut top: Vec<(usize, f32)> = order[..top_k].iter().map(|&i| (i, p[i])).collect();
            if normalize {
                let s: f32 = top.iter().map(|t| t.1).sum();
                top.iter_mut().for_each(|t| t.1 /= s);
            }
            top.sort_by_key(|t| t.0);
            top
        })
        .collect()
}

impl<B: Backend> Moe<B> {
    /// The expert `name` (relative, e.g. `mlp.experts.3.up_proj`) or the router.
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear<B>> {
        let (module, router, parts) = moe_names(self.naming);
        if name == router {
            return Some(&mut self.router);
        }
        let rest = name.strip_prefix(module)?.strip_prefix(".experts.")?;
        let (e, part) = rest.split_once('.')?;
        let expert = self.experts.get_mut(e.parse::<usize>().ok()?)?;
        match parts.iter().position(|p| *p == part)? {
            0 => Some(&mut expert.gate),
            1 => Some(&mut expert.up),
            _ => Some(&mut expert.down),
        }
    }

    /// The sparse MLP on rows `h [tokens, hidden]` (already normalised) of block `layer`.
    pub fn forward(
        &self,
        b: &B,
        act: Activation,
        layer: usize,
        h: &B::Tensor,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        let tokens = b.shape(h)[0];
        let n = self.experts.len();
        let (_, router_name, _) = moe_names(self.naming);
        hook.linear_input(LinearId::new(layer, router_name), h)?;
        let logits = b.to_f32(&self.router.forward(b, h)?)?;
        let routes = route(&logits, n, self.top_k, self.normalize_top_k);
        // Per expert: the tokens routed to it, their weights, and where each (token, slot)
        // lands in the concatenated outputs.
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); n];
        for (t, r) in routes.iter().enumerate() {
            for &(e, w) in r {
                rows[e].push(t as u32);
                weights[e].push(w);
            }
        }
        for e in hook.all_tokens_experts(layer) {
            if let Some(x) = self.experts.get(e) {
                let id = |part| LinearId::new(layer, expert_linear(self.naming, e, part));
                hook.all_tokens_input(id(0), h)?;
                hook.all_tokens_input(id(1), h)?;
                let m = gated(
                    b,
                    act,
                    &x.gate.forward(b, h)?,
                    &x.up.forward(b, h)?,
                    &x.down,
                )?;
                hook.all_tokens_input(id(2), &m)?;
            }
        }
        let mut outs = Vec::new();
        let mut start = vec![0usize; n];
        let mut at = 0;
        for e in 0..n {
            start[e] = at;
            if rows[e].is_empty() {
                continue;
            }
            let x = &self.experts[e];
            let id = |part| LinearId::new(layer, expert_linear(self.naming, e, part));
            let xe = b.embedding(h, &rows[e])?;
            hook.linear_input(id(0), &xe)?;
            hook.linear_input(id(1), &xe)?;
            let gu = Linear::forward_all(b, &xe, &[&x.gate, &x.up])?;
            let m = gated(b, act, &gu[0], &gu[1], &x.down)?;
            hook.linear_input(id(2), &m)?;
            let y = x.down.forward(b, &m)?;
            outs.push(b.scale_rows(&y, &weights[e])?);
            at += rows[e].len();
        }
        let all = if outs.len() == 1 {
            outs.pop().expect("one part")
        } else {
            b.concat_rows(&outs.iter().collect::<Vec<_>>())?
        };
        // Slot j of token t is its j-th expert by index; the row it landed on is its expert's
        // start plus how many earlier tokens that expert took.
        let mut taken = vec![0usize; n];
        let mut slot_rows = vec![vec![0u32; tokens]; self.top_k];
        for (t, r) in routes.iter().enumerate() {
            for (j, &(e, _)) in r.iter().enumerate() {
                slot_rows[j][t] = (start[e] + taken[e]) as u32;
                taken[e] += 1;
            }
        }
        let mut sum = b.embedding(&all, &slot_rows[0])?;
        for ids in &slot_rows[1..] {
            sum = b.add(&sum, &b.embedding(&all, ids)?)?;
        }
        Ok(sum)
    }
}

/// Loads block `layer`'s experts and router named by `moe`.
pub(crate) fn load_moe<B: Backend>(
    moe: &MoeConfig,
    load: &dyn Fn(&'static str, usize, usize) -> Result<Linear<B>>,
    hidden: usize,
) -> Result<Moe<B>> {
    let (_, router, _) = moe_names(moe.naming);
    let i = moe.intermediate;
    let experts = (0..moe.experts)
        .map(|e| {
            Ok(Expert {
                gate: load(expert_linear(moe.naming, e, 0), i, hidden)?,
                up: load(expert_linear(moe.naming, e, 1), i, hidden)?,
                down: load(expert_linear(moe.naming, e, 2), hidden, i)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Moe {
        router: load(router, moe.experts, hidden)?,
        experts,
        top_k: moe.top_k,
        normalize_top_k: moe.normalize_top_k,
        naming: moe.naming,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_picks_normalises_and_orders() {
        // Two tokens over four experts.
        let logits = [0.0, 2.0, 1.0, -1.0, 3.0, 0.0, 0.0, 3.5];
        let r = route(&logits, 4, 2, true);
        assert_eq!(r[0].iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(r[1].iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 3]);
        let s: f32 = r[0].iter().map(|t| t.1).sum();
        assert!((s - 1.0).abs() < 1e-6);
        // exp(2) / (exp(2) + exp(1))
        assert!((r[0][0].1 - 0.731_058_6).abs() < 1e-6);
        let raw = route(&logits, 4, 2, false);
        let s: f32 = raw[0].iter().map(|t| t.1).sum();
        assert!(s < 0.95, "{s}");
    }
}
