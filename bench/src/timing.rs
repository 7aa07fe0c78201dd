//! The GPTQ timing run the GPU benchmarks share: a recipe over a random checkpoint, with wall
//! time split into stages at the calibration loop's progress callbacks.

use crunch_calib::{compress_model, output_recipe, Progress, RecipeFile};
use crunch_model::Checkpoint;
use crunch_repr::CompressedLayer;
use crunch_runtime::{Backend, Cpu};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// What the timer needs from a backend beyond [`Backend`].
pub trait Device: Backend + Clone {
    fn sync(&self) {}
    fn used_memory(&self) -> Option<usize> {
        None
    }
    fn name(&self) -> String;
}

impl Device for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }
}

#[cfg(feature = "cuda")]
impl Device for crunch_runtime::Cuda {
    fn sync(&self) {
        let _ = self.synchronize();
    }
    fn used_memory(&self) -> Option<usize> {
        self.memory().ok().map(|(used, _)| used)
    }
    fn name(&self) -> String {
        self.device_name().to_string()
    }
}

/// Splits wall time into stages at the calibration loop's progress callbacks, synchronising
/// the device at each so that queued work is charged to the stage that queued it.
pub struct Timer<D: Device> {
    pub device: D,
    label: &'static str,
    last: Instant,
    pub seconds: BTreeMap<&'static str, f64>,
    block_start: Option<Instant>,
    /// Wall seconds of each decoder block, load to load.
    pub per_block: Vec<f64>,
    /// The most device memory seen in use at a stage boundary.
    pub peak_gpu: usize,
}

impl<D: Device> Timer<D> {
    fn new(device: D, start: Instant) -> Self {
        Timer {
            device,
            label: "load",
            last: start,
            seconds: BTreeMap::new(),
            block_start: None,
            per_block: vec![],
            peak_gpu: 0,
        }
    }

    fn switch(&mut self, next: &'static str) {
        self.device.sync();
        if let Some(used) = self.device.used_memory() {
            self.peak_gpu = self.peak_gpu.max(used);
        }
        let now = Instant::now();
        *self.seconds.entry(self.label).or_default() += (now - self.last).as_secs_f64();
        self.last = now;
        self.label = next;
    }
}

impl<D: Device> Progress for Timer<D> {
    fn block(&mut self, _layer: usize, _layers: usize) {
        self.switch("load");
        let now = self.last;
        if let Some(s) = self.block_start.replace(now) {
            self.per_block.push((now - s).as_secs_f64());
        }
    }
    fn step(&mut self, what: &str) {
        self.switch(match what {
            "capturing inputs" => "calibration",
            "experts on every token" => "calibration_all_tokens",
            "propagating" => "propagate",
            _ => "gptq",
        });
    }
}

/// A finished timing run.
pub struct Run<D: Device> {
    pub layers: BTreeMap<String, CompressedLayer>,
    pub timer: Timer<D>,
    /// Wall seconds from opening the checkpoint to the written output.
    pub total: f64,
}

/// Compresses `ckpt` by `recipe` (TOML) on `device` with calibration windows `wins` and writes
/// crunch's format (with `recipe.toml`) to `out`, timing every stage.
pub fn run_recipe<D: Device>(
    device: D,
    dir: &Path,
    recipe: &str,
    wins: &[Vec<u32>],
    out: &Path,
) -> anyhow::Result<Run<D>> {
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(dir)?;
    let recipe = RecipeFile::parse(recipe)?;
    let mut timer = Timer::new(device.clone(), t0);
    let layers = compress_model(&device, &ckpt, &recipe, Some(wins), &mut timer)?;
    timer.switch("save");
    if let Some(s) = timer.block_start {
        timer.per_block.push((timer.last - s).as_secs_f64());
    }
    let json = output_recipe(&recipe, dir.display().to_string(), None, &layers)?;
    let toml = recipe.to_toml();
    let extra = [("recipe.toml", toml.as_str())];
    let to = crunch_export::Target::new(out)
        .overwrite(true)
        .beside(&extra);
    crunch_export::Format::Crunch.write(&ckpt, &layers, &json, &to)?;
    timer.switch("done");
    Ok(Run {
        layers,
        timer,
        total: t0.elapsed().as_secs_f64(),
    })
}
