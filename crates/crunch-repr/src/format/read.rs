//! Reading crunch's own format. The layout is described in [`super`].
//!
//! Every compressed layer `P` answers to `P.weight` as an ordinary f32 `[rows, cols]` tensor:
//! its main compression made dense (codes dequantized, pruned values scattered with zeros, or
//! A·B of a factored layer), so the rest of crunch sees an ordinary checkpoint. The stored
//! parts stay visible under their own names, which is how the model loader finds factors to run
//! as two products (`P.lr_a`, `P.lr_b`) and EoRA corrections to add (`P.eora_a`, `P.eora_b`):
//! `P.weight` never includes the correction. Every stored tensor's dtype and shape is checked
//! against the recipe when the checkpoint is opened.

use super::recipe::{LayerRecipe, Recipe};
use crate::{
    decode_scales, nm_index_bits, packed_len, unpack_codes, Bitmask, Factored, LutSpec, LutWeight,
    NmPacked, QuantSpec, QuantizedWeight, Sparsity,
};
use crunch_formats::safetensors::SafetensorsModel;
use crunch_formats::{DType, FormatError, Result, SharedBytes, TensorInfo, TensorSource};
use half::f16;
use std::path::Path;
use std::sync::Arc;

pub struct CrunchSource {
    inner: SafetensorsModel,
    recipe: Recipe,
}

/// How a recipe layer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Integer codes; `masked`: pruned jointly, with `P.mask`.
    Quantized {
        masked: bool,
    },
    /// Codes indexing codebooks (`codebook` in the recipe).
    Lut,
    /// Unstructured pruning: `P.mask` + the kept values.
    Pruned,
    /// N:M pruning: values + in-group indices.
    Nm {
        n: usize,
        m: usize,
    },
    Factored {
        rank: usize,
    },
}

/// One stored tensor a layer needs: name, dtype and shape (`None`: any 1-D length).
type Part = (String, DType, Option<Vec<usize>>);

impl CrunchSource {
    /// Wraps the tensors of a crunch directory, checking every compressed layer's stored
    /// tensors against the recipe.
    pub fn new(inner: SafetensorsModel, recipe: Recipe) -> Result<Self> {
        let s = Self { inner, recipe };
        for (prefix, layer) in &s.recipe.layers {
            for part in s.parts(prefix, layer)? {
                s.check(prefix, &part)?;
            }
        }
        Ok(s)
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn compressed_layer(&self, name: &str) -> Option<(&str, &LayerRecipe)> {
        let prefix = name.strip_suffix(".weight")?;
        self.recipe
            .layers
            .get_key_value(prefix)
            .map(|(k, v)| (k.as_str(), v))
    }

    fn bad(&self, msg: String) -> FormatError {
        FormatError::invalid(self.inner.path(), msg)
    }

    /// An error about stored tensor `tensor`, naming the file that holds it (or would).
    fn bad_in(&self, tensor: &str, msg: String) -> FormatError {
        let file = self
            .inner
            .files()
            .iter()
            .find(|f| f.info(tensor).is_some())
            .or(self.inner.files().first())
            .map_or(self.inner.path(), |f| f.path());
        FormatError::invalid(file, msg)
    }

    fn kind(&self, prefix: &str, layer: &LayerRecipe) -> Result<Kind> {
        if let Some(rank) = layer.rank {
            return Ok(Kind::Factored { rank });
        }
        if layer.codebook {
            if layer.sparsity.is_some() {
                return Err(self.bad(format!(
                    "layer `{prefix}`: crunch.json says both `codebook` and `sparsity`; a \
                     lookup-table layer is not pruned"
                )));
            }
            return Ok(Kind::Lut);
        }
        let sparsity = match &layer.sparsity {
            None => None,
            Some(s) => Some(s.parse::<Sparsity>().map_err(|e| {
                self.bad(format!("layer `{prefix}`: sparsity in crunch.json: {e}"))
            })?),
        };
        let has = |suffix: &str| self.inner.info(&format!("{prefix}.{suffix}")).is_some();
        Ok(match sparsity {
            _ if has("qcodes") => Kind::Quantized {
                masked: sparsity.is_some(),
            },
            None => Kind::Quantized { masked: false },
            Some(Sparsity::NM { n, m }) => Kind::Nm { n, m },
            Some(Sparsity::Unstructured(_)) => Kind::Pruned,
        })
    }

    /// The stored tensors of layer `prefix`, from the recipe.
    fn parts(&self, prefix: &str, layer: &LayerRecipe) -> Result<Vec<Part>> {
        let (rows, cols) = (layer.rows, layer.cols);
        let part = |suffix: &str, dtype, shape: Option<Vec<usize>>| {
            (format!("{prefix}.{suffix}"), dtype, shape)
        };
        let mask_len = (rows * cols).div_ceil(8);
        let mut parts = match self.kind(prefix, layer)? {
            Kind::Quantized { masked } => {
                if !(1..=8).contains(&layer.bits) {
                    return Err(self.bad(format!(
                        "layer `{prefix}`: {} bits in crunch.json, codes hold 1 to 8",
                        layer.bits
                    )));
                }
                let spec = layer_spec(layer);
                // Coded scales need a valid width and a group size (files without them are
                // read as before).
                if spec.scale_bits.is_some() {
                    spec.validate(cols)
                        .map_err(|e| self.bad(format!("layer `{prefix}` in crunch.json: {e}")))?;
                }
                let groups = spec.n_groups(cols);
                let codes = (rows * cols * layer.bits as usize).div_ceil(8);
                let mut p = vec![part("qcodes", DType::U8, Some(vec![codes]))];
                match spec.scale_bits {
                    // Two-level scales (decision 145): packed scale codes and zero points.
                    Some(k) => p.extend([
                        part(
                            "qscodes",
                            DType::U8,
                            Some(vec![packed_len(rows * groups, k)]),
                        ),
                        part("qrscales", DType::F16, Some(vec![rows])),
                        part(
                            "qzeros",
                            DType::U8,
                            Some(vec![packed_len(rows * groups, layer.bits)]),
                        ),
                    ]),
                    None => p.extend([
                        part("qscales", DType::F16, Some(vec![rows, groups])),
                        part("qzeros", DType::U8, Some(vec![rows, groups])),
                    ]),
                }
                if self.inner.info(&format!("{prefix}.g_idx")).is_some() {
                    p.push(part("g_idx", DType::I32, Some(vec![cols])));
                }
                if masked {
                    p.push(part("mask", DType::U8, Some(vec![mask_len])));
                }
                p
            }
            Kind::Lut => {
                let spec = LutSpec::new(layer.bits, layer.group_size);
                spec.validate(cols)
                    .map_err(|e| self.bad(format!("layer `{prefix}` in crunch.json: {e}")))?;
                let codes = packed_len(rows * cols, layer.bits);
                vec![
                    part("lcodes", DType::U8, Some(vec![codes])),
                    part(
                        "llevels",
                        DType::F16,
                        Some(vec![rows, spec.n_groups(cols), spec.levels()]),
                    ),
                ]
            }
            Kind::Pruned => vec![
                part("mask", DType::U8, Some(vec![mask_len])),
                part("values", DType::F16, None),
            ],
            Kind::Nm { n, m } => {
                if m == 0 || cols % m != 0 {
                    return Err(self.bad(format!(
                        "layer `{prefix}`: {n}:{m} sparsity does not fit {cols} columns"
                    )));
                }
                let slots = rows * cols / m * n;
                vec![
                    part("nm_values", DType::F16, Some(vec![rows, cols / m * n])),
                    part(
                        "nm_indices",
                        DType::U8,
                        Some(vec![packed_len(slots, nm_index_bits(m))]),
                    ),
                ]
            }
            Kind::Factored { rank } => vec![
                part("lr_a", DType::F16, Some(vec![rows, rank])),
                part("lr_b", DType::F16, Some(vec![rank, cols])),
            ],
        };
        if let Some(r) = layer.correction_rank {
            parts.push(part("eora_a", DType::F16, Some(vec![rows, r])));
            parts.push(part("eora_b", DType::F16, Some(vec![r, cols])));
        }
        Ok(parts)
    }

    fn check(&self, prefix: &str, (name, dtype, shape): &Part) -> Result<()> {
        let info = self.inner.info(name).ok_or_else(|| {
            self.bad_in(name, format!("compressed layer `{prefix}` lacks `{name}`"))
        })?;
        let shape_ok = match shape {
            Some(s) => &info.shape == s,
            None => info.shape.len() == 1,
        };
        if info.dtype != *dtype || !shape_ok {
            let want = shape.as_ref().map_or("1-D".into(), |s| format!("{s:?}"));
            return Err(self.bad_in(
                name,
                format!(
                    "`{name}` is {:?} {:?}, expected {dtype:?} {want}",
                    info.dtype, info.shape
                ),
            ));
        }
        Ok(())
    }

    /// The raw bytes of stored tensor `prefix.suffix`, after checking its dtype and shape.
    fn raw(&self, prefix: &str, layer: &LayerRecipe, suffix: &str) -> Result<&[u8]> {
        let name = format!("{prefix}.{suffix}");
        let part = self
            .parts(prefix, layer)?
            .into_iter()
            .find(|p| p.0 == name)
            .ok_or_else(|| self.bad(format!("layer `{prefix}` stores no `{name}`")))?;
        self.check(prefix, &part)?;
        self.inner.raw(&name)
    }

    fn f16s(&self, prefix: &str, layer: &LayerRecipe, suffix: &str) -> Result<Vec<f32>> {
        Ok(self
            .raw(prefix, layer, suffix)?
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect())
    }

    fn mask(&self, prefix: &str, layer: &LayerRecipe) -> Result<Bitmask> {
        let bytes = self.raw(prefix, layer, "mask")?.to_vec();
        Bitmask::from_bytes(layer.rows, layer.cols, bytes)
            .map_err(|e| self.bad_in(&format!("{prefix}.mask"), format!("`{prefix}.mask`: {e}")))
    }

    /// The stored parts of quantized layer `prefix`.
    pub fn quantized_weight(&self, prefix: &str, layer: &LayerRecipe) -> Result<QuantizedWeight> {
        let spec = layer_spec(layer);
        let (rows, cols) = (layer.rows, layer.cols);
        let groups = spec.n_groups(cols);
        let unpack = |suffix: &str, bits: u8, n: usize| {
            let name = format!("{prefix}.{suffix}");
            unpack_codes(self.raw(prefix, layer, suffix)?, bits, n)
                .map_err(|e| self.bad_in(&name, format!("`{name}`: {e}")))
        };
        let codes = unpack("qcodes", layer.bits, rows * cols)?;
        let f16s = |suffix: &str| -> Result<Vec<f16>> {
            Ok(crate::f16s_le(self.raw(prefix, layer, suffix)?))
        };
        let (scales, zeros) = match spec.scale_bits {
            Some(k) => {
                let scodes = unpack("qscodes", k, rows * groups)?;
                let scales =
                    decode_scales(&f16s("qrscales")?, &scodes, groups, k).map_err(|e| {
                        let name = format!("{prefix}.qscodes");
                        self.bad_in(&name, format!("`{name}` / `{prefix}.qrscales`: {e}"))
                    })?;
                (scales, unpack("qzeros", layer.bits, rows * groups)?)
            }
            None => (
                f16s("qscales")?,
                self.raw(prefix, layer, "qzeros")?.to_vec(),
            ),
        };
        let g_idx = if self.inner.info(&format!("{prefix}.g_idx")).is_some() {
            let idx: Vec<u32> = self
                .raw(prefix, layer, "g_idx")?
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
                .collect();
            if idx.iter().any(|&g| g as usize >= groups) {
                let name = format!("{prefix}.g_idx");
                return Err(self.bad_in(&name, format!("`{name}` names a group past {groups}")));
            }
            Some(idx)
        } else {
            None
        };
        Ok(QuantizedWeight {
            spec,
            rows,
            cols,
            codes,
            scales,
            zeros,
            g_idx,
        })
    }

    /// The stored parts of lookup-table layer `prefix`, checked (codes in range, codebooks
    /// finite and in increasing order).
    pub fn lut_weight(&self, prefix: &str, layer: &LayerRecipe) -> Result<LutWeight> {
        let spec = LutSpec::new(layer.bits, layer.group_size);
        let (rows, cols) = (layer.rows, layer.cols);
        let name = format!("{prefix}.lcodes");
        let codes = unpack_codes(self.raw(prefix, layer, "lcodes")?, layer.bits, rows * cols)
            .map_err(|e| self.bad_in(&name, format!("`{name}`: {e}")))?;
        let levels = crate::f16s_le(self.raw(prefix, layer, "llevels")?);
        let q = LutWeight {
            spec,
            rows,
            cols,
            codes,
            levels,
        };
        q.validate().map_err(|e| {
            let name = format!("{prefix}.llevels");
            self.bad_in(&name, format!("layer `{prefix}`: {e}"))
        })?;
        Ok(q)
    }

    /// Stored factors `prefix.{kind}_a`, `prefix.{kind}_b` (`kind` "lr" or "eora").
    pub fn factors(&self, prefix: &str, layer: &LayerRecipe, kind: &str) -> Result<Factored> {
        let a = self.f16s(prefix, layer, &format!("{kind}_a"))?;
        let b = self.f16s(prefix, layer, &format!("{kind}_b"))?;
        Ok(Factored {
            rows: layer.rows,
            cols: layer.cols,
            rank: a.len() / layer.rows.max(1),
            a,
            b,
        })
    }

    /// The dense `[rows, cols]` weight of layer `prefix`'s main compression (no correction).
    pub fn main_weight(&self, prefix: &str, layer: &LayerRecipe) -> Result<Vec<f32>> {
        let (rows, cols) = (layer.rows, layer.cols);
        match self.kind(prefix, layer)? {
            Kind::Quantized { masked } => {
                let mut w = self.quantized_weight(prefix, layer)?.dequantize();
                if masked {
                    self.mask(prefix, layer)?.apply(&mut w).map_err(|e| {
                        self.bad_in(&format!("{prefix}.mask"), format!("`{prefix}.mask`: {e}"))
                    })?;
                }
                Ok(w)
            }
            Kind::Lut => Ok(self.lut_weight(prefix, layer)?.dequantize()),
            Kind::Pruned => {
                let mask = self.mask(prefix, layer)?;
                let values = self.f16s(prefix, layer, "values")?;
                if values.len() != mask.count_kept() {
                    return Err(self.bad_in(
                        &format!("{prefix}.values"),
                        format!(
                            "`{prefix}.values` holds {} values, `{prefix}.mask` keeps {}",
                            values.len(),
                            mask.count_kept()
                        ),
                    ));
                }
                let mut w = vec![0.0f32; rows * cols];
                let kept = mask.to_bools();
                let slots = w.iter_mut().zip(kept).filter_map(|(w, k)| k.then_some(w));
                for (w, v) in slots.zip(values) {
                    *w = v;
                }
                Ok(w)
            }
            Kind::Nm { n, m } => {
                let packed = NmPacked {
                    rows,
                    cols,
                    n,
                    m,
                    values: self.f16s(prefix, layer, "nm_values")?,
                    indices: self.raw(prefix, layer, "nm_indices")?.to_vec(),
                };
                let (w, _) = packed.decode().map_err(|e| {
                    self.bad_in(
                        &format!("{prefix}.nm_indices"),
                        format!("`{prefix}.nm_indices`: {e}"),
                    )
                })?;
                Ok(w)
            }
            Kind::Factored { .. } => Ok(self.factors(prefix, layer, "lr")?.dense()),
        }
    }
}

impl TensorSource for CrunchSource {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        self.inner.tensors()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        match self.compressed_layer(name) {
            Some((_, l)) => Some(TensorInfo {
                name: name.to_string(),
                dtype: DType::F32,
                shape: vec![l.rows, l.cols],
            }),
            None => self.inner.info(name),
        }
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.compressed_layer(name) {
            Some((prefix, layer)) => self.main_weight(prefix, layer),
            None => self.inner.read_f32(name),
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        self.inner.bytes_on_disk()
    }

    /// A quantized layer's codes as GGUF blocks (see `QuantizedWeight::to_gguf_blocks`), for
    /// the CPU runtime's packed kernels; a kept tensor's own blocks; `None` for other layers
    /// (read as f32).
    fn raw_shared(&self, name: &str) -> Option<SharedBytes> {
        let Some((prefix, layer)) = self.compressed_layer(name) else {
            // A kept tensor stored as GGUF blocks (a token embedding), shared with the file.
            return self.inner.raw_shared(name);
        };
        if self.kind(prefix, layer).ok()? != (Kind::Quantized { masked: false }) {
            return None;
        }
        let (dtype, blocks) = self
            .quantized_weight(prefix, layer)
            .ok()?
            .to_gguf_blocks()?;
        let range = 0..blocks.len();
        Some(SharedBytes {
            dtype,
            buffer: Arc::new(blocks),
            range,
        })
    }
}

/// The grid a quantized layer's recipe entry describes.
fn layer_spec(layer: &LayerRecipe) -> QuantSpec {
    QuantSpec::new(layer.bits, layer.group_size, layer.symmetric).with_scale_bits(layer.scale_bits)
}
