//! Tensors in and out as NumPy arrays: a model's tensors (dequantized, under their Hugging Face
//! names, from any format crunch reads), the stored parts of a layer crunch quantized, GPTQ on
//! a weight and a Hessian, and the calibration Hessians GPTQ sees.
//!
//! Arrays handed out are made from the `Vec` crunch produced without a copy (NumPy takes the
//! allocation); arrays handed in are read in place when C-contiguous.

use crate::blocking;
use crate::errors::InputError;
use anyhow::{anyhow, bail};
use crunch_calib::{run_sequential, LayerCompressor, LayerJob, Method, Replacement, Stage};
use crunch_cli::calib_args::CalibArgs;
use crunch_compress::Hessian;
use crunch_model::layout::tensor_shapes;
use crunch_model::Checkpoint;
use crunch_repr::format::CrunchSource;
use crunch_runtime::Backend;
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A flat row-major `Vec` as an array of `shape`, without copying it.
fn array<'py, T: numpy::Element>(
    py: Python<'py>,
    data: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(data.into_pyarray(py).reshape(shape.to_vec())?.into_any())
}

/// Every tensor of the model the forward pass reads, by Hugging Face name, with its shape.
#[pyfunction]
fn _tensors(py: Python<'_>, model: PathBuf) -> PyResult<Vec<(String, Vec<usize>)>> {
    blocking(py, move || {
        let ckpt = Checkpoint::open(&model)?;
        Ok(tensor_shapes(&ckpt.config))
    })
}

/// One tensor, dequantized to f32, as the model runs it.
#[pyfunction]
fn _weight<'py>(py: Python<'py>, model: PathBuf, name: String) -> PyResult<Bound<'py, PyAny>> {
    let (data, shape) = blocking(py, move || {
        let ckpt = Checkpoint::open(&model)?;
        let shape = tensor_shapes(&ckpt.config)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                anyhow!(
                    "{}: no tensor `{name}` (crunch.tensors() lists them, by Hugging Face name)",
                    model.display()
                )
            })?;
        let data = ckpt.weights.read(&name, &shape, &ckpt.config)?;
        Ok((data, shape))
    })?;
    array(py, data, &shape)
}

/// The stored parts of a layer quantized by crunch (crunch's format): codes, scales, zero
/// points, and the grid.
#[pyfunction]
fn _quantized<'py>(py: Python<'py>, model: PathBuf, layer: String) -> PyResult<Bound<'py, PyDict>> {
    let q = blocking(py, move || {
        let ckpt = Checkpoint::open(&model)?;
        let Some(recipe) = ckpt.recipe.clone() else {
            bail!(
                "{}: not in crunch's format (no crunch.json): it holds no quantized layers",
                model.display()
            );
        };
        let prefix = layer.strip_suffix(".weight").unwrap_or(&layer).to_string();
        let Some(entry) = recipe.layers.get(&prefix).cloned() else {
            bail!("{}: `{prefix}` is not a compressed layer", model.display());
        };
        // By what the layer stores, not by which method made it: a new quantization method
        // needs no edit here.
        if entry.sparsity.is_some() || entry.rank.is_some() {
            bail!(
                "{}: `{prefix}` was made by {}, not quantized",
                model.display(),
                entry.method
            );
        }
        let source = crunch_formats::safetensors::SafetensorsModel::open(&model)?;
        let source = CrunchSource::new(source, recipe)?;
        Ok(source.quantized_weight(&prefix, &entry)?)
    })?;
    quantized_dict(py, q)
}

fn quantized_dict(py: Python<'_>, q: crunch_repr::QuantizedWeight) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let (rows, cols, groups) = (q.rows, q.cols, q.n_groups());
    let weight = q.dequantize();
    d.set_item("bits", q.spec.bits)?;
    d.set_item("group_size", q.spec.group_size.unwrap_or(0))?;
    d.set_item("symmetric", q.spec.symmetric)?;
    let scales: Vec<f32> = q.scales.iter().map(|s| s.to_f32()).collect();
    d.set_item("codes", array(py, q.codes, &[rows, cols])?)?;
    d.set_item("scales", array(py, scales, &[rows, groups])?)?;
    d.set_item("zeros", array(py, q.zeros, &[rows, groups])?)?;
    d.set_item("weight", array(py, weight, &[rows, cols])?)?;
    Ok(d)
}

/// A C-contiguous 2-D f32 array's values, or an `InputError` naming `what`.
fn matrix(a: &PyReadonlyArray2<'_, f32>, what: &str) -> PyResult<(Vec<f32>, usize, usize)> {
    let shape = a.shape();
    let data = a
        .as_slice()
        .map_err(|_| InputError::new_err(format!("{what}: not a C-contiguous array")))?;
    Ok((data.to_vec(), shape[0], shape[1]))
}

/// GPTQ of `weight` [rows, cols] with the Hessian `hessian` [cols, cols], through the same
/// recipe stage `crunch quantize --method gptq` builds from its flags (so the same settings
/// give the same codes).
#[pyfunction]
#[pyo3(signature = (weight, hessian, bits, group_size, sym, act_order, mse, damp))]
#[allow(clippy::too_many_arguments)]
fn _gptq<'py>(
    py: Python<'py>,
    weight: PyReadonlyArray2<'py, f32>,
    hessian: PyReadonlyArray2<'py, f32>,
    bits: i64,
    group_size: i64,
    sym: bool,
    act_order: Option<bool>,
    mse: Option<bool>,
    damp: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let (w, rows, cols) = matrix(&weight, "weight")?;
    let (h, hr, hc) = matrix(&hessian, "hessian")?;
    if hr != cols || hc != cols {
        return Err(InputError::new_err(format!(
            "hessian: shape [{hr}, {hc}], expected [{cols}, {cols}] for a weight of {cols} columns"
        )));
    }
    let mut keys = toml::Table::new();
    keys.insert("method".into(), "gptq".into());
    keys.insert("bits".into(), bits.into());
    keys.insert("group_size".into(), group_size.into());
    keys.insert("symmetric".into(), sym.into());
    // Settings not given take the stage's defaults, as flags not given do.
    let optional = [
        ("act_order", act_order.map(toml::Value::from)),
        ("mse_clip", mse.map(toml::Value::from)),
        ("damp", damp.map(toml::Value::from)),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            keys.insert(key.into(), v);
        }
    }
    let stage = Stage::from_table(keys, 1)
        .map_err(|e| InputError::new_err(e.to_string().replace("stage 1 ", "")))?;
    let Method::Gptq(g) = stage.method else {
        unreachable!("a gptq stage")
    };
    let q = blocking(py, move || {
        let hessian = Hessian {
            n: cols,
            samples: 1,
            h,
        };
        crunch_compress::gptq(&w, rows, cols, &hessian, g.spec(), &g.options())
            .map_err(|e| anyhow::Error::new(e).context("gptq"))
    })?;
    quantized_dict(py, q)
}

/// Keeps the Hessian of every layer it is shown whose name matches one of `layers`, leaving
/// the weights as they are.
struct Collect {
    layers: Vec<String>,
    got: BTreeMap<String, Hessian>,
}

impl<B: Backend> LayerCompressor<B> for Collect {
    fn compress(
        &mut self,
        job: &LayerJob<B>,
    ) -> crunch_calib::Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        if self.layers.is_empty()
            || self
                .layers
                .iter()
                .any(|p| crunch_calib::pattern_matches(p, &name))
        {
            self.got.insert(name, job.hessian()?.clone());
        }
        Ok(None)
    }
}

/// The calibration Hessians 2·XᵀX/N of the matching linear layers, with the calibration
/// windows drawn as `crunch quantize` draws them (`calib`, `calib_samples`, `calib_len`,
/// `seed`). The inputs are those of the uncompressed model: for the first block they are the
/// ones GPTQ sees; later blocks see the outputs of already-compressed blocks in a real run.
#[pyfunction]
#[pyo3(signature = (model, calib, calib_samples, calib_len, seed, layers))]
fn _hessians<'py>(
    py: Python<'py>,
    model: PathBuf,
    calib: PathBuf,
    calib_samples: Option<usize>,
    calib_len: Option<usize>,
    seed: Option<u64>,
    layers: Vec<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let got = blocking(py, move || {
        let ckpt = Checkpoint::open(&model)?;
        let args = CalibArgs {
            calib: Some(calib),
            calib_samples,
            calib_len,
            seed,
        };
        let device = crunch_cli::device::Device::Cpu;
        let (windows, _) = args.load(&ckpt, device, "hessians")?;
        let mut collect = Collect {
            layers,
            got: BTreeMap::new(),
        };
        run_sequential(&crunch_runtime::Cpu, &ckpt, &windows, &mut collect, &mut ())?;
        Ok(collect.got)
    })?;
    let d = PyDict::new(py);
    for (name, h) in got {
        let n = h.n;
        d.set_item(name, array(py, h.h, &[n, n])?)?;
    }
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(_weight, m)?)?;
    m.add_function(wrap_pyfunction!(_quantized, m)?)?;
    m.add_function(wrap_pyfunction!(_gptq, m)?)?;
    m.add_function(wrap_pyfunction!(_hessians, m)?)?;
    m.add_function(wrap_pyfunction!(_tiny_model, m)?)?;
    Ok(())
}

/// Writes a tiny random model of architecture `arch` (a name of `crunch_model::testing`'s
/// reference suite, e.g. `llama`) with a byte-level tokenizer into `dir`: what the pytest suite
/// runs the API on, as the Rust tests do.
#[pyfunction]
#[pyo3(signature = (dir, arch="llama", seed=0))]
fn _tiny_model(py: Python<'_>, dir: PathBuf, arch: &str, seed: u64) -> PyResult<()> {
    let arch = arch.to_string();
    blocking(py, move || {
        let specs = crunch_model::testing::tiny_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let Some(spec) = specs.iter().find(|s| s.name == arch) else {
            bail!("no tiny model `{arch}` (one of {})", names.join(", "));
        };
        crunch_model::testing::write_tiny_model(spec, &dir, seed)?;
        let vocab = spec.config["vocab_size"].as_u64().unwrap_or(128) as usize;
        let tokenizer = crunch_model::testing::tiny_tokenizer_json(vocab);
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;
        Ok(())
    })
}
