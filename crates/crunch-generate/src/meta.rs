//! What generation needs to know about a checkpoint beyond its weights: end-of-sequence
//! tokens, the chat template and the strings templates call `bos_token`/`eos_token`. Read
//! from GGUF metadata, or from a Hugging Face directory's `tokenizer_config.json`,
//! `config.json` and `generation_config.json`.

use crunch_formats::gguf::GgufFile;
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

#[derive(Clone, Debug, Default)]
pub struct ModelMeta {
    /// A short name for the model (`general.name`, else the file or directory name).
    pub name: String,
    /// Tokens that end generation.
    pub eos: Vec<u32>,
    pub chat_template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn token(tok: &Tokenizer, id: Option<u32>) -> String {
    id.and_then(|i| tok.id_to_token(i)).unwrap_or_default()
}

impl ModelMeta {
    pub fn read(path: &Path, tok: &Tokenizer) -> Result<ModelMeta, String> {
        if path.is_dir() || path.extension().is_some_and(|e| e == "safetensors") {
            let dir = if path.is_dir() {
                path
            } else {
                path.parent().unwrap_or(Path::new("."))
            };
            Self::read_hf(dir, tok)
        } else {
            Self::read_gguf(path, tok)
        }
    }

    fn read_gguf(path: &Path, tok: &Tokenizer) -> Result<ModelMeta, String> {
        let f = GgufFile::open(path).map_err(|e| e.to_string())?;
        let id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        );
        let mut eos_ids: Vec<u32> = eos.into_iter().collect();
        // llama.cpp's end-of-turn token, when a file names one besides EOS.
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            if !eos_ids.contains(&eot) {
                eos_ids.push(eot);
            }
        }
        Ok(ModelMeta {
            name: f
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| file_name(path)),
            eos: eos_ids,
            chat_template: f
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            bos_token: token(tok, bos),
            eos_token: token(tok, eos),
        })
    }

    fn read_hf(dir: &Path, tok: &Tokenizer) -> Result<ModelMeta, String> {
        let json = |name: &str| -> Result<Option<Value>, String> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => serde_json::from_str(&t)
                    .map(Some)
                    .map_err(|e| format!("{}: not valid JSON: {e}", p.display())),
                Err(_) => Ok(None),
            }
        };
        let tc = json("tokenizer_config.json")?.unwrap_or(Value::Null);
        let config = json("config.json")?.unwrap_or(Value::Null);
        let generation = json("generation_config.json")?.unwrap_or(Value::Null);
        // A token given as a string or as {"content": ...}.
        let token_str = |v: &Value| -> Option<String> {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.get("content").and_then(Value::as_str).map(str::to_string))
        };
        let bos_token = token_str(&tc["bos_token"]).unwrap_or_default();
        let eos_token = token_str(&tc["eos_token"]).unwrap_or_default();
        let mut eos: Vec<u32> = Vec::new();
        for v in [&generation["eos_token_id"], &config["eos_token_id"]] {
            match v {
                Value::Number(n) => eos.extend(n.as_u64().map(|x| x as u32)),
                Value::Array(a) => eos.extend(a.iter().filter_map(Value::as_u64).map(|x| x as u32)),
                _ => {}
            }
        }
        if let Some(id) = tok.token_to_id(&eos_token) {
            eos.push(id);
        }
        eos.sort_unstable();
        eos.dedup();
        // A string, or a list of named templates (take "default").
        let chat_template = match &tc["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        };
        Ok(ModelMeta {
            name: file_name(dir),
            eos,
            chat_template,
            bos_token,
            eos_token,
        })
    }
}
