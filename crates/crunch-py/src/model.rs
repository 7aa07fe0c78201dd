//! `crunch.load(model)`: a model loaded once into the CPU runtime (crunch-generate's `Engine`,
//! weights kept in their compressed encoding), generating as `crunch generate` does.

use crate::blocking;
use crate::errors::{usage, InputError};
use crunch_cli::generate::{complete, record};
use crunch_generate::Engine;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded model (`crunch.load`).
#[pyclass(module = "crunch._crunch", name = "_Model", frozen)]
struct Model {
    engine: Arc<Engine>,
}

/// Loads `model` for generation; `ctx`: the longest conversation in tokens (default: the
/// model's, at most 4096), as `crunch generate --ctx`.
#[pyfunction]
#[pyo3(signature = (model, ctx=None))]
fn _load(py: Python<'_>, model: PathBuf, ctx: Option<usize>) -> PyResult<Model> {
    let engine = blocking(py, move || crunch_cli::generate::load(&model, ctx, true))?;
    Ok(Model {
        engine: Arc::new(engine),
    })
}

#[pymethods]
impl Model {
    /// One completion of `prompt`; `flags`: `crunch generate`'s (`--max-tokens=32`, `--chat`,
    /// `--temperature=0.7` ...), parsed by its parser. Returns the record `crunch generate
    /// --json` prints, as JSON text.
    fn generate(&self, py: Python<'_>, prompt: String, flags: Vec<String>) -> PyResult<String> {
        let model = self.engine.path.to_string_lossy().into_owned();
        let mut argv = flags;
        argv.extend(["--prompt=".to_string() + &prompt, "--".into(), model]);
        let args = crunch_cli::generate::parse_args(argv).map_err(|e| usage(&e))?;
        if args.model.ctx.is_some() {
            return Err(InputError::new_err(
                "ctx is the context of the loaded model: give it to crunch.load",
            ));
        }
        if args.model.device != crunch_cli::device::Device::Cpu {
            return Err(InputError::new_err(
                "device: crunch.load runs the model on the CPU (`crunch generate --device cuda` \
                 runs it on a GPU)",
            ));
        }
        let engine = Arc::clone(&self.engine);
        blocking(py, move || {
            let (g, capacity) = complete(&engine, &args.completion(&prompt), &mut |_| {})?;
            Ok(record(&engine, &g, capacity, args.sampling.kv_cache).to_string())
        })
    }

    /// The context the model was loaded with, in tokens.
    #[getter]
    fn context(&self) -> usize {
        self.engine.context()
    }

    /// Bytes of weights held (in their encoding).
    #[getter]
    fn weight_bytes(&self) -> usize {
        self.engine.weight_bytes()
    }

    /// The model's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.engine.path.clone()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(_load, m)?)?;
    Ok(())
}
