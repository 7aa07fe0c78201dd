//! The bodies of crunch's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` (open-ended, nightly) and by the replay harness that CI runs on stable
//! (`crates/crunch-cli/tests/fuzz_replay.rs`: every seed in `fuzz/seeds/<target>/` plus
//! seeded random mutations, a few seconds per target). Each must give an error or a value for
//! any input: never a panic, a hang or a huge allocation.
//!
//! Included with `#[path]` by both; it uses only crates both depend on.

#![allow(dead_code)]

use crunch_calib::{compress_model, RecipeFile};
use crunch_formats::gguf::{build_tokenizer, GgufFile};
use crunch_formats::safetensors::SafetensorsFile;
use crunch_formats::TensorSource;
use crunch_model::testing::tensor_shapes;
use crunch_model::{Checkpoint, ModelConfig};
use crunch_pack::{pack_bytes, unpack_bytes, PackOptions};
use crunch_repr::format::{layer_recipes, Recipe};
use crunch_runtime::Cpu;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many inputs got how far in the whole-model targets (the replay harness prints them, to
/// show the fuzzing reaches the config builders and the quantization, not just the parsers).
pub static REACHED: [(&str, AtomicU64); 8] = [
    (
        "gguf_model: config and structure accepted",
        AtomicU64::new(0),
    ),
    ("gguf_model: loaded and run", AtomicU64::new(0)),
    ("hf_config: from_hf_json accepted", AtomicU64::new(0)),
    ("hf_config: model built, opened, run", AtomicU64::new(0)),
    ("quantize_tiny: tiny model opened", AtomicU64::new(0)),
    ("quantize_tiny: plan accepted", AtomicU64::new(0)),
    ("quantize_tiny: quantized/pruned", AtomicU64::new(0)),
    ("quantize_tiny: written and read back", AtomicU64::new(0)),
];

fn reached(i: usize) {
    REACHED[i].1.fetch_add(1, Ordering::Relaxed);
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/seeds/*`).
pub const TARGETS: [(&str, Target); 7] = [
    ("gguf", gguf),
    ("safetensors_header", safetensors_header),
    ("unpack", unpack),
    ("recipe", recipe),
    ("gguf_model", gguf_model),
    ("hf_config", hf_config),
    ("quantize_tiny", quantize_tiny),
];

/// A scratch directory for targets that need files (the readers map files): tmpfs where
/// available, one per process and call.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("crunch-fuzz-")
        .tempdir_in(base)
        .expect("scratch directory")
}

/// The GGUF reader, dequantizer and tokenizer builder.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        let _ = file.raw(&t.name);
        if let Ok(values) = file.read_f32(&t.name) {
            assert_eq!(values.len(), t.numel());
        }
    }
    if let Ok(tokenizer) = build_tokenizer(&file) {
        let _ = tokenizer.encode("Hello 123 <|endoftext|>", true);
    }
}

/// The safetensors header parser and tensor reads.
pub fn safetensors_header(data: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("fuzz.safetensors");
    std::fs::write(&path, data).expect("write scratch file");
    let Ok(file) = SafetensorsFile::open(&path) else {
        return;
    };
    for t in file.tensors() {
        let raw = file.raw(&t.name).expect("listed tensor has bytes");
        if let Ok(values) = file.read_f32(&t.name) {
            assert_eq!(values.len(), t.numel());
            assert_eq!(raw.len(), t.numel() * t.dtype.block().1);
        }
    }
}

/// The unpacker on any bytes, and pack → unpack of any bytes bit for bit.
pub fn unpack(data: &[u8]) {
    // Packs that claim more than 64 MiB of output are refused before decoding.
    let _ = unpack_bytes(data, 64 << 20);
    let opts = PackOptions {
        threads: 1,
        chunk_size: 1 + data.first().copied().unwrap_or(0) as usize * 16,
        ..PackOptions::default()
    };
    let (packed, _) = pack_bytes("fuzz.bin", data, &opts).expect("packing bytes cannot fail");
    let files = unpack_bytes(&packed, u64::MAX).expect("a fresh pack must unpack");
    assert!(files.len() == 1 && files[0].1 == data, "round trip differs");
}

/// `crunch compress --recipe` files: a recipe or an error; a recipe survives its TOML round
/// trip.
pub fn recipe(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = RecipeFile::parse(text) else {
        return;
    };
    let again = RecipeFile::parse(&file.to_toml()).expect("own output parses");
    assert_eq!(again, file);
}

/// A whole GGUF model: metadata → `config_from_gguf` → structure checked against the
/// tensors → loaded → run on two tokens. Whatever opens is bounded by the tensors the
/// input really holds, so this stays small.
pub fn gguf_model(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    let Ok(ckpt) = Checkpoint::from_gguf(file) else {
        return;
    };
    reached(0);
    let _ = ckpt.summary();
    let _ = ckpt.tokenizer();
    if let Ok(model) = ckpt.load(Cpu, |_| {}) {
        let last = (ckpt.config.vocab - 1) as u32;
        let _ = model.forward(&[0, last]);
        reached(1);
    }
}

/// Parameters of a model of `cfg`, if it is small enough to build for fuzzing.
fn small_model_params(cfg: &ModelConfig) -> Option<usize> {
    // Bounded work before building the tensor list: at most a few layers.
    if cfg.layers > 4 {
        return None;
    }
    let mut total = 0usize;
    for (_, shape) in tensor_shapes(cfg) {
        total = total.checked_add(shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?)?;
    }
    (total <= 200_000).then_some(total)
}

/// Writes a model of `cfg` (deterministic weights, `edit` applied) into `dir`.
fn write_model(
    dir: &Path,
    config: &Value,
    cfg: &ModelConfig,
    edit: impl FnMut(&str, &mut [f32]),
) -> PathBuf {
    let model = dir.join("model");
    crunch_model::testing::write_model(&model, config, cfg, 1, edit).expect("scratch");
    model
}

/// `config.json` → `from_hf_json`: what crunch writes for a config it accepts parses back to
/// the same config with no `null` numbers, and a model of that config, when small, opens and
/// runs.
pub fn hf_config(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(cfg) = ModelConfig::from_hf_json(Path::new("fuzz/config.json"), &json) else {
        return;
    };
    reached(2);
    let written = cfg.to_hf_json();
    for (k, v) in written.as_object().expect("an object") {
        assert!(
            !v.is_null() || k == "sliding_window",
            "`{k}` written as null"
        );
    }
    let again = ModelConfig::from_hf_json(Path::new("again"), &written).expect("own output");
    assert_eq!(
        again, cfg,
        "config.json written by crunch describes another model"
    );
    if small_model_params(&cfg).is_none() {
        return;
    }
    let dir = scratch();
    let model = write_model(dir.path(), &json, &cfg, |_, _| {});
    let ckpt = Checkpoint::open(&model).expect("a model written from its own config opens");
    let m = ckpt.load(Cpu, |_| {}).expect("and loads");
    let _ = m.forward(&[0]);
    reached(3);
}

/// Bytes read front to back; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.u8() as usize % options.len()]
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// A fuzzed tiny model (architecture, sizes, switches, a few extreme weights, odd
/// `rms_norm_eps`/`rope_theta`) quantized by a fuzzed recipe (method, bits, group size) on
/// fuzzed calibration windows (token ids possibly outside the vocabulary), written in
/// crunch's format, read back and run. Every step may refuse; none may panic.
pub fn quantize_tiny(data: &[u8]) {
    let mut b = Bytes(data);
    let arch = b.pick(&["llama", "mistral", "qwen2", "qwen3"]);
    let heads = 1 + b.u8() as usize % 4;
    let kv_heads = 1 + b.u8() as usize % heads;
    let head_dim = b.pick(&[2usize, 4, 8, 16, 3, 0]);
    let hidden = match b.u8() % 8 {
        0 => b.u8() as usize % 40,
        _ => heads * head_dim.max(2),
    };
    let mut config = json!({
        "model_type": arch,
        "hidden_size": hidden,
        "intermediate_size": b.pick(&[16usize, 24, 32, 40, 0, 7]),
        "num_hidden_layers": b.pick(&[1usize, 2, 1, 0]),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": b.pick(&[16usize, 32, 48, 1]),
        "tie_word_embeddings": b.u8() % 2 == 0,
        "attention_bias": b.u8() % 2 == 0,
        "max_position_embeddings": 64,
    });
    match b.u8() % 8 {
        0 => config["rms_norm_eps"] = json!(b.f32()),
        1 => config["rope_theta"] = json!(b.f32()),
        2 => {
            config["rope_scaling"] = json!({"rope_type": "linear", "factor": b.f32()});
        }
        3 => config["sliding_window"] = json!(b.u8() % 8),
        _ => {}
    }
    let Ok(cfg) = ModelConfig::from_hf_json(Path::new("fuzz/config.json"), &config) else {
        return;
    };
    if small_model_params(&cfg).is_none() {
        return;
    }
    // A few weights set to extreme values, at fuzzed places.
    let special = [
        f32::NAN,
        f32::INFINITY,
        1e30,
        -1e30,
        1e-40,
        0.0,
        65504.0,
        1e5,
    ];
    let edits: Vec<(u8, u8, f32)> = (0..b.u8() % 4)
        .map(|_| (b.u8(), b.u8(), b.pick(&special)))
        .collect();
    let dir = scratch();
    let model = write_model(dir.path(), &config, &cfg, |name, v| {
        let which = name.len() as u8;
        for &(t, at, value) in &edits {
            if t % 16 == which % 16 && !v.is_empty() {
                let i = at as usize % v.len();
                v[i] = value;
            }
        }
    });
    let Ok(ckpt) = Checkpoint::open(&model) else {
        return;
    };
    reached(4);
    let method = b.pick(&["rtn", "gptq", "sparsegpt", "magnitude"]);
    let bits = b.pick(&[4u8, 2, 3, 8, 5, 1]);
    let group = b.pick(&[0usize, 8, 16, 32, 1, 7, 1000]);
    let stage = match method {
        "magnitude" => "method = \"magnitude\"\nsparsity = \"2:4\"\n".to_string(),
        "sparsegpt" => format!(
            "method = \"sparsegpt\"\nsparsity = \"0.5\"\nbits = {bits}\ngroup_size = {group}\n"
        ),
        m => format!("method = \"{m}\"\nbits = {bits}\ngroup_size = {group}\n"),
    };
    let Ok(plan) = RecipeFile::parse(&format!("[[stage]]\n{stage}")) else {
        return;
    };
    reached(5);
    let windows: Vec<Vec<u32>> = (0..1 + b.u8() % 3)
        .map(|_| (0..1 + b.u8() % 8).map(|_| b.u8() as u32).collect())
        .collect();
    let calib = plan.needs_calibration().then_some(windows.as_slice());
    let Ok(layers) = compress_model(&Cpu, &ckpt, &plan, calib, &mut ()) else {
        return;
    };
    reached(6);
    let recipe = Recipe::new("fuzz", vec![stage], layer_recipes(&layers));
    let out = dir.path().join("out");
    let to = crunch_export::Target::new(&out);
    if crunch_export::crunch_dir::write(&ckpt, &layers, &recipe, &to).is_err() {
        return;
    }
    let again = Checkpoint::open(&out).expect("crunch's own output opens");
    if let Ok(m) = again.load(Cpu, |_| {}) {
        let _ = m.forward(&[0, 1]);
    }
    reached(7);
}
