//! `crunch._crunch`: the extension module behind the Python package `crunch` (decision 110).
//!
//! The commands (`info`, `evaluate`, `quantize`, ..., `pack`) run the CLI's own code: the
//! Python layer turns keyword arguments into the CLI's flags, `crunch_cli::run_captured` parses
//! them with the CLI's parser and returns the object `--json` prints. The rest reaches the
//! library crates directly: tensors as NumPy arrays (`tensors.rs`), GPTQ on arrays, and the
//! generation engine (`model.rs`).
//!
//! Every call that can take long runs on a worker thread with the GIL released ([`blocking`]);
//! the calling thread waits, checking for signals, and a Ctrl-C stops the worker at its next
//! progress update (`crunch_cli::progress::interrupt`), removes the unfinished output and
//! raises `KeyboardInterrupt`. Errors become `crunch.CrunchError` subclasses carrying
//! crunch's messages ([`errors`]); a panic becomes a `CrunchError`, never an abort.

mod errors;
mod model;
mod tensors;

use crunch_cli::progress::{clear_interrupt, interrupt, Interrupted};
use pyo3::prelude::*;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

pub use errors::{CrunchError, FormatError, InputError, OutputError, RecipeError};

/// How often the waiting thread checks for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Stack of the worker thread: what the CLI's main thread gets on Linux.
const WORKER_STACK: usize = 8 << 20;

type Outcome<T> = Result<anyhow::Result<T>, Box<dyn Any + Send>>;

/// Runs `work` on a worker thread with the GIL released, checking for signals meanwhile (see
/// the module docs). A signal handler's exception (KeyboardInterrupt) is raised once the
/// worker has stopped and the unfinished output is removed.
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    let (tx, rx) = channel::<Outcome<T>>();
    std::thread::scope(|s| {
        // The main thread's stack size, which the CLI runs with.
        let spawned = std::thread::Builder::new()
            .name("crunch".into())
            .stack_size(WORKER_STACK)
            .spawn_scoped(s, move || {
                let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
            });
        if let Err(e) = spawned {
            return Err(CrunchError::new_err(format!("cannot start a thread: {e}")));
        }
        let mut rx: Receiver<Outcome<T>> = rx;
        let mut signal: Option<PyErr> = None;
        loop {
            let (got, back) = py.detach(move || (rx.recv_timeout(SIGNAL_POLL), rx));
            rx = back;
            match got {
                Ok(outcome) => return finish(outcome, signal),
                Err(RecvTimeoutError::Timeout) => {
                    if signal.is_none() {
                        if let Err(e) = py.check_signals() {
                            signal = Some(e);
                            interrupt();
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CrunchError::new_err(
                        "internal error: the worker thread vanished",
                    ))
                }
            }
        }
    })
}

fn finish<T>(outcome: Outcome<T>, signal: Option<PyErr>) -> PyResult<T> {
    if let Some(e) = signal {
        // Whatever the worker got to, the call was interrupted: its unfinished output goes.
        crunch_export::output::remove_own_temps(true);
        clear_interrupt();
        return Err(e);
    }
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::to_py(&e)),
        Err(payload) if payload.is::<Interrupted>() => {
            // Interrupted without a signal of ours (another call's Ctrl-C).
            crunch_export::output::remove_own_temps(true);
            Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(()))
        }
        Err(payload) => {
            let msg =
                crunch_cli::panic_message(&*payload).unwrap_or_else(|| "unknown panic".into());
            Err(CrunchError::new_err(format!(
                "internal error (a bug in crunch, please report it): {msg}"
            )))
        }
    }
}

/// Runs a `crunch` command given as its arguments (without the program name) and returns the
/// JSON records it produced, as one JSON array. Used by every command function of the Python
/// layer.
#[pyfunction]
fn _run(py: Python<'_>, args: Vec<String>) -> PyResult<String> {
    let argv: Vec<String> = std::iter::once("crunch".to_string()).chain(args).collect();
    let records = blocking(py, move || {
        crunch_cli::run_captured(argv).map_err(|e| match e {
            crunch_cli::RunError::Usage(u) => anyhow::Error::new(errors::Usage(u)),
            crunch_cli::RunError::Failed(f) => f,
        })
    })?;
    Ok(serde_json::Value::Array(records).to_string())
}

/// The `--help` text of a command (`["quantize"]`), or of crunch (`[]`).
#[pyfunction]
fn _help(args: Vec<String>) -> PyResult<String> {
    let argv: Vec<String> = std::iter::once("crunch".to_string())
        .chain(args)
        .chain(std::iter::once("--help".to_string()))
        .collect();
    match crunch_cli::run_captured(argv) {
        Err(crunch_cli::RunError::Usage(e)) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            Ok(e.render().to_string())
        }
        Err(crunch_cli::RunError::Usage(e)) => Err(errors::usage(&e)),
        _ => Err(InputError::new_err("no help for these arguments")),
    }
}

/// A recipe given as a Python dict (passed as JSON), as the TOML text `--recipe` reads.
#[pyfunction]
fn _recipe_toml(json: &str) -> PyResult<String> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| RecipeError::new_err(format!("recipe: not a table of values: {e}")))?;
    let table: toml::Table =
        serde_json::from_value(value).map_err(|e| RecipeError::new_err(format!("recipe: {e}")))?;
    let text = toml::to_string(&table).map_err(|e| RecipeError::new_err(format!("recipe: {e}")))?;
    // Parsed here too, so that a bad recipe is refused with the recipe parser's message.
    crunch_calib::RecipeFile::parse(&text)
        .map_err(|e| RecipeError::new_err(format!("recipe: {e}")))?;
    Ok(text)
}

#[pymodule]
fn _crunch(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // candle's element-wise ops on the calling thread, as the CLI runs its calibrating
    // commands (decision 119): set here, at import, because candle sizes its barrier pool
    // once, at the first candle op of the process, and a Python process may run any command
    // first (an `evaluate` before a `quantize` would otherwise fix the pool for the
    // calibration too). No thread of crunch's exists yet (rayon's pool and the workers of
    // `blocking` start at the first call). The split of an element-wise op never changes
    // its values, so every command's outputs are the same bits.
    crunch_runtime::threads::serial_elementwise_ops();
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CrunchError", py.get_type::<CrunchError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("RecipeError", py.get_type::<RecipeError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("OutputError", py.get_type::<OutputError>())?;
    m.add_function(wrap_pyfunction!(_run, m)?)?;
    m.add_function(wrap_pyfunction!(_help, m)?)?;
    m.add_function(wrap_pyfunction!(_recipe_toml, m)?)?;
    tensors::register(m)?;
    model::register(m)?;
    Ok(())
}
