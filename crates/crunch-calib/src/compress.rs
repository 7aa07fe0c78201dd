//! Compressing a whole checkpoint by a recipe: stages, each a method applied to the linear
//! layers matching its patterns (llm-compressor's "modifiers"). A layer gets at most one main
//! compression (quantize, prune or factor) and at most one correction (EoRA) on top of it.
//! Every command that writes a model runs through here (`crunch quantize` is a one-stage
//! recipe like `crunch prune` and `crunch lowrank`).
//!
//! Low-rank stages choose ranks from one global budget per stage, which needs every matched
//! layer's spectrum before the first layer is factored: plain SVD reads the weights; whitened
//! SVD runs one calibration pass over the *uncompressed* model to get each layer's whitened
//! spectrum, then the sequential pass factors with those ranks (its Hessians then include the
//! upstream compression, as for every other method).

use crate::device_gptq::{linalg, DeviceGptq};
use crate::recipe_file::{pattern_matches, RecipeFile};
use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::stages::{Family, LayerInput, Method};
use crate::{Error, Result};
use crunch_compress::{allocate_ranks, CompressError, DenseLinAlg, LayerSpectrum, RankChoice};
use crunch_model::layout::{all_linears, LinearRole};
use crunch_model::{Checkpoint, LinearId};
use crunch_repr::format::{layer_recipe, Calibration, Recipe};
use crunch_repr::{check_nm, Compressed, CompressedLayer, Planned, Produces, Sparsity};
use crunch_runtime::Backend;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The stages of one layer: its main compression and its correction, as indices into the
/// recipe's stages.
type Assigned = (Option<usize>, Option<usize>);

/// (main stage, correction stage) for a layer; an error if two of a kind overlap.
fn stages_for(recipe: &RecipeFile, name: &str) -> Result<Assigned> {
    if recipe.skip.iter().any(|p| pattern_matches(p, name)) {
        return Ok((None, None));
    }
    let (mut main, mut corr) = (None, None);
    for (i, s) in recipe.stages.iter().enumerate() {
        if !s.matches(name) {
            continue;
        }
        let slot = if s.method.family() == Family::Correction {
            &mut corr
        } else {
            &mut main
        };
        if let Some(j) = *slot {
            let j: usize = j;
            return Err(Error::Overlap {
                layer: name.into(),
                first: j + 1,
                first_method: recipe.stages[j].method.name(),
                second: i + 1,
                second_method: s.method.name(),
            });
        }
        *slot = Some(i);
    }
    Ok((main, corr))
}

/// Every block linear layer the recipe may compress: all of them but the routers of sparse
/// MLPs, unless `routers` (a recipe's `[moe] routers`) asks for those too.
pub(crate) fn block_layer_names(ckpt: &Checkpoint, routers: bool) -> Vec<(LinearId, String)> {
    all_linears(&ckpt.config)
        .into_iter()
        .filter(|s| routers || s.role != LinearRole::Router)
        .map(|s| (s.id, s.id.full_name()))
        .collect()
}

/// The `[rows, cols]` of layer `name`'s weight.
pub(crate) fn weight_shape(ckpt: &Checkpoint, name: &str) -> Result<(usize, usize)> {
    let full = format!("{name}.weight");
    match ckpt.weights.info(&full).map(|i| i.shape) {
        Some(s) if s.len() == 2 => Ok((s[0], s[1])),
        _ => Err(Error::MissingTensor {
            path: ckpt.path.clone(),
            tensor: full,
        }),
    }
}

pub(crate) fn read_weight(ckpt: &Checkpoint, name: &str) -> Result<(Vec<f32>, usize, usize)> {
    let (rows, cols) = weight_shape(ckpt, name)?;
    let w = ckpt
        .weights
        .read(&format!("{name}.weight"), &[rows, cols], &ckpt.config)?;
    Ok((w, rows, cols))
}

/// Which stages every block linear layer of `ckpt` gets, after checking the recipe against the
/// model: at least one stage, no layer matched by two main stages (or two corrections), every
/// stage's settings valid for the shapes of its layers (group sizes, N:M patterns). Also notes
/// for the user (a group size that leaves a shorter last group, once per stage and width).
fn assign(
    ckpt: &Checkpoint,
    recipe: &RecipeFile,
) -> Result<(BTreeMap<String, Assigned>, Vec<String>)> {
    if recipe.stages.is_empty() {
        return Err(Error::NoStages);
    }
    let (mut out, mut notes, mut seen) = (BTreeMap::new(), Vec::new(), BTreeSet::new());
    for (_, name) in block_layer_names(ckpt, recipe.moe().routers) {
        let assigned = stages_for(recipe, &name)?;
        let (main, corr) = assigned;
        for si in [main, corr].into_iter().flatten() {
            let method = &recipe.stages[si].method;
            let (rows, cols) = weight_shape(ckpt, &name)?;
            let note = method.stage().check_shape(rows, cols);
            let note = note.map_err(|source| Error::Layer {
                layer: name.clone(),
                method: method.name(),
                source,
            })?;
            if let Some(n) = note.filter(|_| seen.insert((si, cols))) {
                notes.push(format!("{name} (and every layer of its width): {n}"));
            }
        }
        out.insert(name, assigned);
    }
    Ok((out, notes))
}

/// Checks `recipe` against `ckpt` before anything is computed (see `assign`: overlapping
/// stages, group sizes and N:M patterns against every layer), so a caller can run it before
/// drawing or sampling calibration data. Returns notes for the user.
pub fn check_recipe(ckpt: &Checkpoint, recipe: &RecipeFile) -> Result<Vec<String>> {
    Ok(assign(ckpt, recipe)?.1)
}

/// What `recipe` will store in `ckpt`, layer by layer, before anything runs: what each layer's
/// main stage stores, and a [`Produces::Correction`] entry for each layer that also gets a
/// correction. An output format checks this list.
pub fn planned(ckpt: &Checkpoint, recipe: &RecipeFile) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (layer, (main, corr)) in assign(ckpt, recipe)?.0 {
        let Some(mi) = main else {
            continue;
        };
        let shape = weight_shape(ckpt, &layer)?;
        let main = recipe.stages[mi].method.produces();
        for produces in [Some(main), corr.map(|_| Produces::Correction)]
            .into_iter()
            .flatten()
        {
            out.push(Planned {
                layer: layer.clone(),
                shape,
                produces,
            });
        }
    }
    Ok(out)
}

/// The first stage that needs calibration data, if any.
pub fn first_calibrated(recipe: &RecipeFile) -> Option<&Method> {
    recipe
        .stages
        .iter()
        .map(|s| &s.method)
        .find(|m| m.needs_calibration())
}

/// The input of one layer for `method`, with its Hessian when the method needs one.
pub(crate) fn layer_input<'a, B: Backend>(
    job: &'a LayerJob<B>,
    name: &'a str,
    method: &Method,
    la: &'a dyn DenseLinAlg,
) -> Result<LayerInput<'a>> {
    Ok(LayerInput {
        name,
        weight: job.weight()?,
        rows: job.rows,
        cols: job.cols,
        hessian: match method.needs_calibration() {
            true => Some(job.hessian()?),
            false => None,
        },
        la,
        rank: None,
        base: None,
    })
}

/// A stage's failure on layer `name`, as the error that names both.
fn layer_error(name: &str, method: &Method) -> impl FnOnce(CompressError) -> Error {
    let (layer, method) = (name.to_string(), method.name());
    move |source| Error::Layer {
        layer,
        method,
        source,
    }
}

/// What a main stage made of a layer, and the new weight when it stays on the device.
pub(crate) type Ran<T> = (Compressed, Option<Replacement<T>>);

/// One main stage on one layer: on the GPU when the method has a GPU solver (GPTQ,
/// SparseGPT) and the layer is there, with the new weight still on the device; else on the
/// host. `None`: the method leaves the layer as it is.
pub(crate) fn run_main<B: Backend>(
    job: &LayerJob<B>,
    name: &str,
    method: &Method,
    device: &mut DeviceGptq,
    la: &dyn DenseLinAlg,
    rank: Option<RankChoice>,
) -> Result<Option<Ran<B::Tensor>>> {
    if let Some(work) = method.stage().on_gpu() {
        if let Some((c, new)) = device.run(job, method.name(), work)? {
            return Ok(Some((c, Some(new))));
        }
    }
    let mut input = layer_input(job, name, method, la)?;
    input.rank = rank;
    let c = method
        .stage()
        .compress(&input)
        .map_err(layer_error(name, method))?;
    Ok(c.map(|c| (c, None)))
}

/// Collects low-rank spectra during a pass that changes nothing.
struct SpectrumCollector<'a> {
    recipe: &'a RecipeFile,
    method: &'a Method,
    la: &'a dyn DenseLinAlg,
    wanted: &'a BTreeMap<String, usize>,
    spectra: BTreeMap<String, LayerSpectrum>,
}

impl<B: Backend> LayerCompressor<B> for SpectrumCollector<'_> {
    fn expert_min_tokens(&self) -> usize {
        self.recipe.moe().expert_min_tokens
    }
    fn compresses_routers(&self) -> bool {
        self.recipe.moe().routers
    }

    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        if self.wanted.contains_key(&name) {
            let input = layer_input(job, &name, self.method, self.la)?;
            let s = self.method.stage().spectrum(&input);
            let singular_values = s.map_err(|source| Error::Layer {
                layer: name.clone(),
                method: self.method.name(),
                source,
            })?;
            let spectrum = LayerSpectrum {
                rows: job.rows,
                cols: job.cols,
                singular_values,
            };
            self.spectra.insert(name, spectrum);
        }
        Ok(None)
    }
}

/// Rank per layer for every low-rank stage, from its global budget.
fn plan_ranks<B: Backend>(
    backend: &B,
    la: &dyn DenseLinAlg,
    ckpt: &Checkpoint,
    recipe: &RecipeFile,
    mains: &BTreeMap<String, usize>,
    windows: Option<&[Vec<u32>]>,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, RankChoice>> {
    let mut ranks = BTreeMap::new();
    for (si, stage) in recipe.stages.iter().enumerate() {
        let method = &stage.method;
        let Some(keep) = method.stage().budget() else {
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
        let spectra: BTreeMap<String, LayerSpectrum> = if method.needs_calibration() {
            let w = windows.ok_or(Error::NeedsCalibration {
                method: method.name(),
            })?;
            let mut c = SpectrumCollector {
                recipe,
                method,
                la,
                wanted: &layers,
                spectra: BTreeMap::new(),
            };
            run_sequential(backend, ckpt, w, &mut c, progress)?;
            c.spectra
        } else {
            progress.step("singular values");
            let names: Vec<&String> = layers.keys().collect();
            names
                .par_iter()
                .map(|name| {
                    let (w, rows, cols) = read_weight(ckpt, name)?;
                    let input = LayerInput {
                        name,
                        weight: &w,
                        rows,
                        cols,
                        hessian: None,
                        la,
                        rank: None,
                        base: None,
                    };
                    let s = method.stage().spectrum(&input);
                    let singular_values = s.map_err(|source| Error::Layer {
                        layer: (*name).clone(),
                        method: method.name(),
                        source,
                    })?;
                    let spectrum = LayerSpectrum {
                        rows,
                        cols,
                        singular_values,
                    };
                    Ok(((*name).clone(), spectrum))
                })
                .collect::<Result<_>>()?
        };
        let names: Vec<&String> = spectra.keys().collect();
        let list: Vec<LayerSpectrum> = spectra.values().cloned().collect();
        let rp = allocate_ranks(&list, keep).map_err(|source| Error::Budget {
            stage: si + 1,
            method: method.name(),
            source,
        })?;
        for (name, choice) in names.into_iter().zip(rp.choices) {
            ranks.insert(name.clone(), choice);
        }
    }
    Ok(ranks)
}

struct Driver<'a> {
    recipe: &'a RecipeFile,
    device: DeviceGptq,
    la: &'a dyn DenseLinAlg,
    stages: BTreeMap<String, Assigned>,
    ranks: BTreeMap<String, RankChoice>,
    done: BTreeMap<String, CompressedLayer>,
}

impl<B: Backend> LayerCompressor<B> for Driver<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        let (main, corr) = self.stages.get(&name).copied().unwrap_or((None, None));
        let Some(mi) = main else {
            return Ok(None);
        };
        let method = &self.recipe.stages[mi].method;
        let rank = self.ranks.get(&name).copied();
        let Some((c, on_device)) = run_main(job, &name, method, &mut self.device, self.la, rank)?
        else {
            return Ok(None);
        };
        check_pattern(&name, &c)?;
        let mut layer = CompressedLayer::new(method.name(), c);
        layer.expert = job.expert;
        let Some(ci) = corr else {
            // Without a correction, a GPU result's new weight stays on the device.
            let new = on_device.unwrap_or_else(|| Replacement::Host(layer.dense()));
            self.done.insert(name, layer);
            return Ok(Some(new));
        };
        let method = &self.recipe.stages[ci].method;
        let base = layer.main.dense();
        let mut input = layer_input(job, &name, method, self.la)?;
        input.base = Some(&base);
        if let Some(Compressed::Factored(f)) = method
            .stage()
            .compress(&input)
            .map_err(layer_error(&name, method))?
        {
            layer.correction = Some(f);
        }
        let dense = layer.dense();
        self.done.insert(name, layer);
        Ok(Some(Replacement::Host(dense)))
    }

    fn expert_min_tokens(&self) -> usize {
        self.recipe.moe().expert_min_tokens
    }
    fn compresses_routers(&self) -> bool {
        self.recipe.moe().routers
    }
}

/// Every N:M output is checked structurally, not trusted.
fn check_pattern(name: &str, c: &Compressed) -> Result<()> {
    if let Compressed::Pruned(p) = c {
        if let Sparsity::NM { n, m } = p.sparsity {
            if !check_nm(&p.dequantize(), p.rows, p.cols, n, m) {
                return Err(Error::BrokenPattern {
                    layer: name.into(),
                    n,
                    m,
                });
            }
        }
    }
    Ok(())
}

/// Runs `recipe`'s stages over every block linear layer of `ckpt` (its `skip`, `format` and
/// `calibration` are the caller's: the windows come as `windows`). Calibration `windows` are
/// needed when any stage looks at data; otherwise the weights are read one at a time.
pub fn compress_model<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    recipe: &RecipeFile,
    windows: Option<&[Vec<u32>]>,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, CompressedLayer>> {
    let (stages, _) = assign(ckpt, recipe)?;
    let mains: BTreeMap<String, usize> = stages
        .iter()
        .filter_map(|(n, (m, _))| m.map(|m| (n.clone(), m)))
        .collect();
    if let (Some(method), None) = (first_calibrated(recipe), windows) {
        return Err(Error::NeedsCalibration {
            method: method.name(),
        });
    }
    let la = linalg(backend)?;
    let ranks = plan_ranks(
        backend,
        la.as_ref(),
        ckpt,
        recipe,
        &mains,
        windows,
        progress,
    )?;
    let mut driver = Driver {
        recipe,
        device: DeviceGptq::default(),
        la: la.as_ref(),
        stages,
        ranks,
        done: BTreeMap::new(),
    };
    match windows.filter(|_| recipe.needs_calibration()) {
        Some(w) => run_sequential(backend, ckpt, w, &mut driver, progress)?,
        None => {
            let empty = crunch_compress::Hessian::new(0);
            let mut last_block = None;
            for (id, name) in &block_layer_names(ckpt, recipe.moe().routers) {
                if last_block != Some(id.layer) {
                    progress.block(id.layer, ckpt.config.layers);
                    last_block = Some(id.layer);
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

/// `crunch.json` for `layers` made by `recipe`: each layer's stored form, with the settings of
/// the stage that made it; `source` is the model's file name, `calibration` what was used.
pub fn output_recipe(
    recipe: &RecipeFile,
    source: String,
    calibration: Option<Calibration>,
    layers: &BTreeMap<String, CompressedLayer>,
) -> Result<Recipe> {
    let mut entries = BTreeMap::new();
    for (name, l) in layers {
        let mut entry = layer_recipe(l);
        if let (Some(mi), _) = stages_for(recipe, name)? {
            recipe.stages[mi].method.stage().annotate(&mut entry);
        }
        entries.insert(name.clone(), entry);
    }
    let stages = recipe.stages.iter().map(|s| s.describe()).collect();
    Ok(Recipe {
        calibration,
        ..Recipe::new(source, stages, entries)
    })
}
