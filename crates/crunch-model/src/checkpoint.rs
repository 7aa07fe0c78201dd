//! Opening a model from a path: a Hugging Face directory (config.json, safetensors, tokenizer.json)
//! or a single GGUF file (config, weights and tokenizer all from the file).

use crate::config::ModelConfig;
use crate::gguf_config::config_from_gguf;
use crate::model::Model;
use crate::structure::{validate_structure, Origin};
use crate::weights::{Naming, Weights};
use crate::{Error, Result};
use crunch_formats::gguf::GgufFile;
use crunch_formats::safetensors::SafetensorsModel;
use crunch_formats::{DType, TensorSource};
use crunch_repr::format::{CrunchSource, LayerRecipe, Recipe};
use crunch_runtime::Backend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    HuggingFace,
    Gguf,
    /// crunch's own: a Hugging Face directory plus `crunch.json` (quantized layers inside).
    Crunch,
}

/// An opened, validated checkpoint whose tensors are memory-mapped and read on demand.
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    pub config: ModelConfig,
    pub weights: Weights,
    /// What was done to this model, for crunch's own format.
    pub recipe: Option<Recipe>,
    tokenizer: TokenizerSource,
    bos_token: Option<u32>,
}

enum TokenizerSource {
    File(PathBuf),
    Gguf(Box<Tokenizer>),
    Missing,
    /// The file has a tokenizer of a kind crunch does not rebuild (the message says which).
    Unsupported(String),
}

/// Whether a GGUF file's tokenizer is a well-formed one of a model family crunch does not
/// rebuild (as opposed to a broken one, which refuses the file).
fn is_unsupported_tokenizer(file: &GgufFile) -> bool {
    file.get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .is_some_and(|m| m != "gpt2")
}

impl Checkpoint {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotAModel {
                path: path.to_path_buf(),
                problem: "no such file or directory",
            });
        }
        if path.is_dir() {
            return Self::open_hf(path);
        }
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF")
            .unwrap_or(false);
        if is_gguf {
            Self::open_gguf(path)
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            Self::open_hf(path)
        } else {
            Err(Error::NotAModel {
                path: path.to_path_buf(),
                problem: "not a model directory, GGUF file or safetensors file",
            })
        }
    }

    fn open_hf(path: &Path) -> Result<Self> {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        let config_path = dir.join("config.json");
        let json = read_json(&config_path)?;
        let config = ModelConfig::from_hf_json(&config_path, &json)?;
        let bos_token = json
            .get("bos_token_id")
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as u32);
        let source = SafetensorsModel::open(path)?;
        let tok = dir.join("tokenizer.json");
        let recipe = Recipe::read(dir)?;
        let (format, source): (Format, Box<dyn TensorSource>) = match &recipe {
            Some(r) => (
                Format::Crunch,
                Box::new(CrunchSource::new(source, r.clone())?),
            ),
            None => (Format::HuggingFace, Box::new(source)),
        };
        let weights = Weights::new(source, Naming::HuggingFace).with_arch(config.arch);
        let origin = config_path.display().to_string();
        validate_structure(
            &config,
            &weights,
            &Origin {
                config: &origin,
                layers_key: "num_hidden_layers",
            },
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            format,
            config,
            weights,
            recipe,
            tokenizer: if tok.is_file() {
                TokenizerSource::File(tok)
            } else {
                TokenizerSource::Missing
            },
            bos_token,
        })
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf(GgufFile::open(path)?)
    }

    /// A checkpoint from a parsed GGUF file (one opened from disk, or parsed from memory with
    /// `GgufFile::from_bytes`, as the fuzz targets do): config, structure and tokenizer are
    /// checked exactly as by [`Checkpoint::open`].
    pub fn from_gguf(file: GgufFile) -> Result<Self> {
        let path = file.path().to_path_buf();
        let path = path.as_path();
        let config = config_from_gguf(&file)?;
        let tokenizer = match crunch_formats::gguf::build_tokenizer(&file) {
            Ok(t) => TokenizerSource::Gguf(Box::new(t)),
            Err(_) if file.get("tokenizer.ggml.model").is_none() => TokenizerSource::Missing,
            // A tokenizer crunch cannot rebuild yet (SentencePiece's, as in Gemma's GGUF)
            // does not stop the weights from loading; it is an error when one is needed.
            Err(e) if is_unsupported_tokenizer(&file) => {
                TokenizerSource::Unsupported(e.to_string())
            }
            Err(e) => return Err(e.into()),
        };
        let unpermute_qk = file.architecture() == Some("llama");
        let layers_key = format!("{}.block_count", file.architecture().unwrap_or("?"));
        let bos_token = file
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as u32);
        let weights =
            Weights::new(Box::new(file), Naming::Gguf { unpermute_qk }).with_arch(config.arch);
        validate_structure(
            &config,
            &weights,
            &Origin {
                config: "the GGUF metadata",
                layers_key: &layers_key,
            },
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::Gguf,
            config,
            weights,
            recipe: None,
            tokenizer,
            bos_token,
        })
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match &self.tokenizer {
            TokenizerSource::File(p) => {
                Tokenizer::from_file(p).map_err(|source| Error::Tokenizer {
                    path: p.clone(),
                    source,
                })
            }
            TokenizerSource::Gguf(t) => Ok((**t).clone()),
            TokenizerSource::Missing => Err(Error::NoTokenizer {
                path: self.path.clone(),
            }),
            TokenizerSource::Unsupported(e) => Err(Error::Tokenizer {
                path: self.path.clone(),
                source: e.clone().into(),
            }),
        }
    }

    /// The tokenizer to copy into an output: `None` when the checkpoint has none, an error
    /// when it has one that does not load (an output must not silently lose it).
    pub fn tokenizer_if_present(&self) -> Result<Option<Tokenizer>> {
        match self.tokenizer {
            TokenizerSource::Missing => Ok(None),
            _ => self.tokenizer().map(Some),
        }
    }

    /// The beginning-of-sequence token id (`bos_token_id` in config.json,
    /// `tokenizer.ggml.bos_token_id` in GGUF), when the checkpoint names one inside its
    /// vocabulary.
    pub fn bos_token(&self) -> Option<u32> {
        self.bos_token.filter(|&t| (t as usize) < self.config.vocab)
    }

    pub fn load<B: Backend>(&self, backend: B, on_block: impl FnMut(usize)) -> Result<Model<B>> {
        Model::load(backend, self.config.clone(), &self.weights, on_block)
    }

    /// What `crunch info` shows.
    pub fn summary(&self) -> Summary {
        let tensors = self.weights.source().tensors();
        let mut dtypes: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let mut parameters = 0u64;
        let compressed = |name: &str| {
            let r = self.recipe.as_ref()?;
            let (prefix, _) = name.rsplit_once('.')?;
            r.layers.get_key_value(prefix).map(|(k, v)| (k.as_str(), v))
        };
        let mut counted = std::collections::BTreeSet::new();
        for t in &tensors {
            if let Some((prefix, layer)) = compressed(&t.name) {
                // Stored parts of a compressed layer: count the layer once, under what it is.
                if counted.insert(prefix) {
                    let codes = format!("{prefix}.qcodes");
                    let quantized = tensors.iter().any(|t| t.name == codes);
                    let e = dtypes.entry(layer_kind(layer, quantized)).or_default();
                    e.0 += 1;
                    e.1 += (layer.rows * layer.cols) as u64;
                    parameters += (layer.rows * layer.cols) as u64;
                }
                continue;
            }
            let e = dtypes.entry(dtype_name(t.dtype)).or_default();
            e.0 += 1;
            e.1 += t.numel() as u64;
            parameters += t.numel() as u64;
        }
        Summary {
            path: self.path.clone(),
            format: self.format,
            architecture: self.config.arch.name(),
            parameters,
            tensors: tensors.len(),
            dtypes,
            bytes_on_disk: self.weights.source().bytes_on_disk(),
        }
    }
}

/// How `crunch info` names a compressed layer: "INT4 g128 sym", "2:4 sparse F16",
/// "0.5 sparse INT4 channel", "rank 64 F16", "LUT3 per row" (a codebook per row, decision
/// 143), each with " + EoRA r16" for a correction.
fn layer_kind(layer: &LayerRecipe, quantized: bool) -> String {
    let int = || {
        if layer.codebook {
            let g = layer
                .group_size
                .map_or("per row".into(), |g| format!("g{g}"));
            return format!("LUT{} {g}", layer.bits);
        }
        let g = layer
            .group_size
            .map_or("channel".into(), |g| format!("g{g}"));
        let sym = if layer.symmetric { " sym" } else { "" };
        // Two-level scales (decision 145): "INT3 g16 s6".
        let k = layer.scale_bits.map_or(String::new(), |k| format!(" s{k}"));
        format!("INT{} {g}{sym}{k}", layer.bits)
    };
    let main = match (&layer.rank, &layer.sparsity) {
        (Some(r), _) => format!("rank {r} F16"),
        (None, Some(s)) if quantized => format!("{s} sparse {}", int()),
        (None, Some(s)) => format!("{s} sparse F16"),
        (None, None) => int(),
    };
    match layer.correction_rank {
        Some(r) => format!("{main} + EoRA r{r}"),
        None => main,
    }
}

fn dtype_name(d: DType) -> String {
    d.safetensors_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{d:?}").to_uppercase())
}

#[derive(Debug)]
pub struct Summary {
    pub path: PathBuf,
    pub format: Format,
    pub architecture: &'static str,
    pub parameters: u64,
    pub tensors: usize,
    /// dtype -> (tensor count, parameter count)
    pub dtypes: BTreeMap<String, (usize, u64)>,
    pub bytes_on_disk: u64,
}

/// A JSON file (a Hugging Face `config.json`, `tokenizer_config.json`...), its errors naming
/// the file: [`Error::Read`] when it cannot be read, [`Error::Json`] when it is not JSON.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
