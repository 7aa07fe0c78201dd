//! Reading crunch's own format: quantized linear layers are dequantized on read, so the rest
//! of crunch sees an ordinary checkpoint. The layout is described in `crunch_formats::recipe`.

use crunch_compress::{unpack_codes, QuantSpec, QuantizedWeight};
use crunch_formats::recipe::{LayerRecipe, Recipe};
use crunch_formats::safetensors::SafetensorsModel;
use crunch_formats::{DType, FormatError, Result, TensorInfo, TensorSource};
use half::f16;
use std::path::Path;

pub struct CrunchSource {
    inner: SafetensorsModel,
    recipe: Recipe,
}

impl CrunchSource {
    pub fn new(inner: SafetensorsModel, recipe: Recipe) -> Self {
        Self { inner, recipe }
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn quantized_layer(&self, name: &str) -> Option<(&str, &LayerRecipe)> {
        let prefix = name.strip_suffix(".weight")?;
        self.recipe
            .layers
            .get_key_value(prefix)
            .map(|(k, v)| (k.as_str(), v))
    }

    fn bad(&self, msg: String) -> FormatError {
        FormatError::invalid(self.inner.path(), msg)
    }

    /// The stored parts of quantized layer `prefix`.
    pub fn quantized_weight(&self, prefix: &str, layer: &LayerRecipe) -> Result<QuantizedWeight> {
        let spec = QuantSpec::new(layer.bits, layer.group_size, layer.symmetric);
        let (rows, cols) = (layer.rows, layer.cols);
        let groups = spec.n_groups(cols);
        let part = |suffix: &str, dtype: DType, len: usize| -> Result<&[u8]> {
            let name = format!("{prefix}.{suffix}");
            let info = self
                .inner
                .info(&name)
                .ok_or_else(|| self.bad(format!("quantized layer `{prefix}` lacks `{name}`")))?;
            if info.dtype != dtype || info.numel() != len {
                return Err(self.bad(format!(
                    "`{name}` is {:?} {:?}, expected {dtype:?} with {len} elements",
                    info.dtype, info.shape
                )));
            }
            self.inner.raw(&name)
        };
        let packed_len = (rows * cols * layer.bits as usize).div_ceil(8);
        let codes = unpack_codes(
            part("qcodes", DType::U8, packed_len)?,
            layer.bits,
            rows * cols,
        )
        .map_err(|e| self.bad(format!("`{prefix}.qcodes`: {e}")))?;
        let scales = part("qscales", DType::F16, rows * groups)?
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect();
        let zeros = part("qzeros", DType::U8, rows * groups)?.to_vec();
        let g_idx = if self.inner.info(&format!("{prefix}.g_idx")).is_some() {
            let raw = part("g_idx", DType::I32, cols)?;
            let idx: Vec<u32> = raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
                .collect();
            if idx.iter().any(|&g| g as usize >= groups) {
                return Err(self.bad(format!("`{prefix}.g_idx` names a group past {groups}")));
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
}

impl TensorSource for CrunchSource {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        self.inner.tensors()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        match self.quantized_layer(name) {
            Some((_, l)) => Some(TensorInfo {
                name: name.to_string(),
                dtype: DType::F32,
                shape: vec![l.rows, l.cols],
            }),
            None => self.inner.info(name),
        }
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.quantized_layer(name) {
            Some((prefix, layer)) => Ok(self.quantized_weight(prefix, layer)?.dequantize()),
            None => self.inner.read_f32(name),
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        self.inner.bytes_on_disk()
    }
}
