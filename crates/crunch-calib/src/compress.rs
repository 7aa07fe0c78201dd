//! Compressing a whole checkpoint by a plan: stages, each a method applied to the linear layers
//! matching its patterns (llm-compressor's "modifiers"). A layer gets at most one main
//! compression (quantize, prune or factor) and at most one correction (EoRA) on top of it.
//!
//! Low-rank stages choose ranks from one global budget per stage, which needs every matched
//! layer's spectrum before the first layer is factored: plain SVD reads the weights; whitened
//! SVD runs one calibration pass over the *uncompressed* model to get each layer's whitened
//! spectrum, then the sequential pass factors with those ranks (its Hessians then include the
//! upstream compression, as for every other method).

use crate::device_gptq::{linalg, DeviceGptq};
use crate::quantize::pattern_matches;
use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::{Error, Result};
use crunch_compress::{
    allocate_ranks, check_nm, eora_with, gptq, magnitude, rtn, singular_values_with, sparsegpt,
    truncated_svd_with, wanda, whitened_singular_values_with, whitened_svd_with, Compressed,
    CompressedLayer, DenseLinAlg, EoraOptions, Factored, GptqOptions, Hessian, LayerSpectrum,
    PrunedWeight, QuantSpec, RankChoice, SparseGptOptions, Sparsity, WhitenOptions,
};
use crunch_model::model::BLOCK_LINEARS;
use crunch_model::{Checkpoint, LinearId};
use crunch_runtime::Backend;
use rayon::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum StageMethod {
    Rtn {
        spec: QuantSpec,
        mse_clip: bool,
    },
    Gptq {
        spec: QuantSpec,
        opts: GptqOptions,
    },
    Magnitude {
        sparsity: Sparsity,
    },
    Wanda {
        sparsity: Sparsity,
    },
    /// SparseGPT, optionally quantizing the kept weights in the same pass.
    SparseGpt {
        sparsity: Sparsity,
        quant: Option<QuantSpec>,
        opts: SparseGptOptions,
    },
    /// Truncated SVD keeping `keep` of the matched layers' parameters.
    Svd {
        keep: f64,
    },
    /// SVD-LLM: truncation in the whitened space of the calibration inputs.
    WhitenedSvd {
        keep: f64,
    },
    /// EoRA correction of the given rank on top of the layer's main compression.
    Eora {
        rank: usize,
    },
}

impl StageMethod {
    pub fn name(&self) -> &'static str {
        match self {
            StageMethod::Rtn { .. } => "rtn",
            StageMethod::Gptq { .. } => "gptq",
            StageMethod::Magnitude { .. } => "magnitude",
            StageMethod::Wanda { .. } => "wanda",
            StageMethod::SparseGpt { .. } => "sparsegpt",
            StageMethod::Svd { .. } => "svd",
            StageMethod::WhitenedSvd { .. } => "whitened-svd",
            StageMethod::Eora { .. } => "eora",
        }
    }

    pub fn needs_calibration(&self) -> bool {
        !matches!(
            self,
            StageMethod::Rtn { .. } | StageMethod::Magnitude { .. } | StageMethod::Svd { .. }
        )
    }

    fn is_correction(&self) -> bool {
        matches!(self, StageMethod::Eora { .. })
    }

    fn keep(&self) -> Option<f64> {
        match self {
            StageMethod::Svd { keep } | StageMethod::WhitenedSvd { keep } => Some(*keep),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub method: StageMethod,
    /// Patterns of layer names (`*` wildcards, else substrings); empty = every block linear.
    pub layers: Vec<String>,
}

impl Stage {
    pub fn matches(&self, name: &str) -> bool {
        self.layers.is_empty() || self.layers.iter().any(|p| pattern_matches(p, name))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompressPlan {
    pub stages: Vec<Stage>,
    /// Layers no stage touches.
    pub skip: Vec<String>,
}

impl CompressPlan {
    pub fn needs_calibration(&self) -> bool {
        self.stages.iter().any(|s| s.method.needs_calibration())
    }

    /// Whether `name` is left alone by the plan's skip patterns.
    pub fn skips(&self, name: &str) -> bool {
        self.skip.iter().any(|p| pattern_matches(p, name))
    }

    /// (main stage, correction stage) for a layer; an error if two of a kind overlap.
    fn stages_for(&self, name: &str) -> Result<(Option<usize>, Option<usize>)> {
        if self.skip.iter().any(|p| pattern_matches(p, name)) {
            return Ok((None, None));
        }
        let (mut main, mut corr) = (None, None);
        for (i, s) in self.stages.iter().enumerate() {
            if !s.matches(name) {
                continue;
            }
            let slot = if s.method.is_correction() {
                &mut corr
            } else {
                &mut main
            };
            if let Some(j) = *slot {
                let j: usize = j;
                return Err(Error::Data(format!(
                    "{name}: matched by stage {} ({}) and stage {} ({}); a layer takes one \
                     main compression and one correction (chaining, e.g. quantizing factors, \
                     is not supported yet)",
                    j + 1,
                    self.stages[j].method.name(),
                    i + 1,
                    s.method.name()
                )));
            }
            *slot = Some(i);
        }
        Ok((main, corr))
    }
}

fn block_layer_names(ckpt: &Checkpoint) -> Vec<(LinearId, String)> {
    (0..ckpt.config.layers)
        .flat_map(|layer| {
            BLOCK_LINEARS.iter().map(move |&name| {
                let id = LinearId { layer, name };
                (id, id.full_name())
            })
        })
        .collect()
}

fn read_weight(ckpt: &Checkpoint, name: &str) -> Result<(Vec<f32>, usize, usize)> {
    let full = format!("{name}.weight");
    let info = ckpt
        .weights
        .info(&full)
        .ok_or_else(|| Error::Data(format!("{}: missing `{full}`", ckpt.path.display())))?;
    let (rows, cols) = (info.shape[0], info.shape[1]);
    Ok((
        ckpt.weights.read(&full, &[rows, cols], &ckpt.config)?,
        rows,
        cols,
    ))
}

/// Collects whitened spectra during a pass that changes nothing.
struct SpectrumCollector<'a> {
    la: &'a dyn DenseLinAlg,
    wanted: &'a BTreeMap<String, usize>,
    spectra: BTreeMap<String, LayerSpectrum>,
}

impl<B: Backend> LayerCompressor<B> for SpectrumCollector<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        if self.wanted.contains_key(&name) {
            let s = whitened_singular_values_with(
                self.la,
                job.weight()?,
                job.rows,
                job.cols,
                job.hessian()?,
                &WhitenOptions::default(),
            )
            .map_err(|e| Error::Compress(format!("{name}: {e}")))?;
            self.spectra.insert(
                name,
                LayerSpectrum {
                    rows: job.rows,
                    cols: job.cols,
                    singular_values: s,
                },
            );
        }
        Ok(None)
    }
}

/// Rank per layer for every low-rank stage, from its global budget.
fn plan_ranks<B: Backend>(
    backend: &B,
    la: &dyn DenseLinAlg,
    ckpt: &Checkpoint,
    plan: &CompressPlan,
    mains: &BTreeMap<String, usize>,
    windows: Option<&[Vec<u32>]>,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, RankChoice>> {
    let mut ranks = BTreeMap::new();
    for (si, stage) in plan.stages.iter().enumerate() {
        let Some(keep) = stage.method.keep() else {
            continue;
        };
        let layers: BTreeMap<String, usize> = mains
            .iter()
            .filter(|(_, &s)| s == si)
            .map(|(n, &s)| (n.clone(), s))
            .collect();
        if layers.is_empty() {
            continue;
        }
        let spectra: BTreeMap<String, LayerSpectrum> = match stage.method {
            StageMethod::Svd { .. } => {
                progress.step("singular values");
                let names: Vec<&String> = layers.keys().collect();
                names
                    .par_iter()
                    .map(|name| {
                        let (w, rows, cols) = read_weight(ckpt, name)?;
                        let s = singular_values_with(la, &w, rows, cols)
                            .map_err(|e| Error::Compress(format!("{name}: {e}")))?;
                        Ok((
                            (*name).clone(),
                            LayerSpectrum {
                                rows,
                                cols,
                                singular_values: s,
                            },
                        ))
                    })
                    .collect::<Result<_>>()?
            }
            _ => {
                let w = windows.ok_or_else(|| {
                    Error::Data("whitened SVD needs calibration data (--calib)".into())
                })?;
                let mut c = SpectrumCollector {
                    la,
                    wanted: &layers,
                    spectra: BTreeMap::new(),
                };
                run_sequential(backend, ckpt, w, &mut c, progress)?;
                c.spectra
            }
        };
        let names: Vec<&String> = spectra.keys().collect();
        let list: Vec<LayerSpectrum> = spectra.values().cloned().collect();
        let rp = allocate_ranks(&list, keep)
            .map_err(|e| Error::Compress(format!("stage {}: {e}", si + 1)))?;
        for (name, choice) in names.into_iter().zip(rp.choices) {
            ranks.insert(name.clone(), choice);
        }
    }
    Ok(ranks)
}

struct Driver<'a> {
    plan: &'a CompressPlan,
    device: DeviceGptq,
    la: &'a dyn DenseLinAlg,
    stages: BTreeMap<String, (Option<usize>, Option<usize>)>,
    ranks: BTreeMap<String, RankChoice>,
    done: BTreeMap<String, CompressedLayer>,
}

impl Driver<'_> {
    fn main<B: Backend>(
        &self,
        stage: &StageMethod,
        name: &str,
        job: &LayerJob<B>,
    ) -> Result<Option<Compressed>> {
        let (w, rows, cols) = (job.weight()?, job.rows, job.cols);
        let empty = Hessian::new(0);
        let h = if stage.needs_calibration() {
            job.hessian()?
        } else {
            &empty
        };
        let c = match stage {
            StageMethod::Rtn { spec, mse_clip } => {
                rtn(w, rows, cols, *spec, *mse_clip).map(Compressed::Quantized)
            }
            StageMethod::Gptq { spec, opts } => {
                gptq(w, rows, cols, h, *spec, opts).map(Compressed::Quantized)
            }
            StageMethod::Magnitude { sparsity } => {
                magnitude(w, rows, cols, *sparsity).map(Compressed::Pruned)
            }
            StageMethod::Wanda { sparsity } => {
                wanda(w, rows, cols, h, *sparsity).map(Compressed::Pruned)
            }
            StageMethod::SparseGpt {
                sparsity,
                quant,
                opts,
            } => sparsegpt(w, rows, cols, h, *sparsity, *quant, opts).map(Compressed::Pruned),
            StageMethod::Svd { .. } | StageMethod::WhitenedSvd { .. } => {
                let rank = match self.ranks.get(name) {
                    None | Some(RankChoice::Dense) => return Ok(None),
                    Some(RankChoice::Factored(r)) => *r,
                };
                if rank == 0 {
                    return Ok(Some(Compressed::Factored(Factored::zero(rows, cols))));
                }
                let lr = if matches!(stage, StageMethod::Svd { .. }) {
                    truncated_svd_with(self.la, w, rows, cols, rank)
                } else {
                    let opts = WhitenOptions::default();
                    whitened_svd_with(self.la, w, rows, cols, h, rank, &opts)
                };
                lr.map(|l| Compressed::Factored(l.factored))
            }
            StageMethod::Eora { .. } => unreachable!("corrections are not main stages"),
        };
        c.map(Some)
            .map_err(|e| Error::Compress(format!("{name}: {e}")))
    }

    fn compress<B: Backend>(
        &mut self,
        job: &LayerJob<B>,
    ) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        let (main, corr) = self.stages.get(&name).copied().unwrap_or((None, None));
        let Some(mi) = main else {
            return Ok(None);
        };
        let stage = &self.plan.stages[mi].method;
        // GPTQ and SparseGPT run on the GPU when the layer is there; without a correction the
        // new weight stays there too.
        let on_gpu = match stage {
            StageMethod::Gptq { spec, opts } => self
                .device
                .run(job, *spec, opts)?
                .map(|(q, new)| (Compressed::Quantized(q), new)),
            StageMethod::SparseGpt {
                sparsity,
                quant,
                opts,
            } => self
                .device
                .sparsegpt(job, *sparsity, *quant, opts)?
                .map(|(p, new)| (Compressed::Pruned(p), new)),
            _ => None,
        };
        let c = match on_gpu {
            Some((c, new)) if corr.is_none() => {
                if let Compressed::Pruned(p) = &c {
                    check_pattern(&name, p, job.rows, job.cols)?;
                }
                self.done
                    .insert(name, CompressedLayer::new(stage.name(), c));
                return Ok(Some(new));
            }
            Some((c, _)) => c,
            None => match self.main(stage, &name, job)? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        if let Compressed::Pruned(p) = &c {
            check_pattern(&name, p, job.rows, job.cols)?;
        }
        let mut layer = CompressedLayer::new(stage.name(), c);
        if let Some(ci) = corr {
            if let StageMethod::Eora { rank } = self.plan.stages[ci].method {
                let rank = rank.min(job.rows.min(job.cols));
                let lr = eora_with(
                    self.la,
                    job.weight()?,
                    &layer.main.dense(),
                    job.rows,
                    job.cols,
                    job.hessian()?,
                    rank,
                    &EoraOptions::default(),
                )
                .map_err(|e| Error::Compress(format!("{name}: EoRA: {e}")))?;
                layer.correction = Some(lr.factored);
            }
        }
        let dense = layer.dense();
        self.done.insert(name, layer);
        Ok(Some(Replacement::Host(dense)))
    }
}

impl<B: Backend> LayerCompressor<B> for Driver<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        Driver::compress(self, job)
    }
}

/// Every N:M output is checked structurally, not trusted.
fn check_pattern(name: &str, p: &PrunedWeight, rows: usize, cols: usize) -> Result<()> {
    if let Sparsity::NM { n, m } = p.sparsity {
        if !check_nm(&p.dequantize(), rows, cols, n, m) {
            return Err(Error::Compress(format!(
                "{name}: output breaks the {n}:{m} pattern"
            )));
        }
    }
    Ok(())
}

/// Runs `plan` over every block linear layer of `ckpt`. Calibration `windows` are needed when
/// any stage looks at data; otherwise the weights are read one at a time.
pub fn compress_model<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    plan: &CompressPlan,
    windows: Option<&[Vec<u32>]>,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, CompressedLayer>> {
    if plan.stages.is_empty() {
        return Err(Error::Data("the plan has no stages".into()));
    }
    let names = block_layer_names(ckpt);
    let mut stages = BTreeMap::new();
    for (_, name) in &names {
        stages.insert(name.clone(), plan.stages_for(name)?);
    }
    let mains: BTreeMap<String, usize> = stages
        .iter()
        .filter_map(|(n, (m, _))| m.map(|m| (n.clone(), m)))
        .collect();
    if plan.needs_calibration() && windows.is_none() {
        let which = plan
            .stages
            .iter()
            .find(|s| s.method.needs_calibration())
            .map_or("", |s| s.method.name());
        return Err(Error::Data(format!(
            "{which} needs calibration data (--calib FILE or --calib self:NxL)"
        )));
    }
    plan.check(&ckpt.config)?;
    let la = linalg(backend)?;
    let ranks = plan_ranks(backend, la.as_ref(), ckpt, plan, &mains, windows, progress)?;
    let mut driver = Driver {
        plan,
        device: DeviceGptq::default(),
        la: la.as_ref(),
        stages,
        ranks,
        done: BTreeMap::new(),
    };
    match windows.filter(|_| plan.needs_calibration()) {
        Some(w) => run_sequential(backend, ckpt, w, &mut driver, progress)?,
        None => {
            let empty = Hessian::new(0);
            for (id, name) in &names {
                if id.name == BLOCK_LINEARS[0] {
                    progress.block(id.layer, ckpt.config.layers);
                }
                if !mains.contains_key(name) {
                    continue;
                }
                progress.step(id.name);
                let (weight, rows, cols) = read_weight(ckpt, name)?;
                let job = LayerJob::<B>::host(*id, &weight, rows, cols, &empty);
                driver.compress(&job)?;
            }
        }
    }
    Ok(driver.done)
}
