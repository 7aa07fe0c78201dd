//! The key/value store of the candle backend ([`BackendKv`]), whose `Backend::attention`
//! takes whole key/value tensors: f32 keys and values as the backend's own tensors, grown by
//! concatenation, or a compressed [`QuantKv`] in host memory. (The CUDA backend has its own,
//! `cuda/kvdev.rs`, decision 138.)

use crate::kvq::{KvSpec, QuantKv};
use crate::{AttentionMask, Backend, Error, Result};

/// One sequence's keys and values for one block on the candle backend.
///
/// For a compressed mode, new keys and values are copied to the host as they are appended and
/// attention over them runs on the host (`crate::kvq::attend`), its result uploaded: what
/// evaluation measures is the same cache as generation's on [`crate::Host`].
pub enum BackendKv<T> {
    /// f32: the keys and values so far (`None` before the first append).
    Concat {
        kv: Option<(T, T)>,
        len: usize,
        capacity: usize,
    },
    Quant(Box<QuantKv>),
}

impl<T: Clone> BackendKv<T> {
    /// See [`crate::Backend::kv_alloc`].
    pub fn new(spec: KvSpec) -> Result<Self> {
        Ok(if spec.mode.is_full() {
            BackendKv::Concat {
                kv: None,
                len: 0,
                capacity: spec.capacity,
            }
        } else {
            BackendKv::Quant(Box::new(QuantKv::from_spec(spec)?))
        })
    }

    pub fn len(&self) -> usize {
        match self {
            BackendKv::Concat { len, .. } => *len,
            BackendKv::Quant(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append<B: Backend<Tensor = T>>(&mut self, b: &B, k: &T, v: &T) -> Result<()> {
        let t = b.shape(k)[0];
        match self {
            BackendKv::Concat { kv, len, capacity } => {
                if *len + t > *capacity {
                    return Err(Error(format!(
                        "key/value cache full: {len} positions stored, {t} more do not fit in \
                         {capacity}"
                    )));
                }
                *kv = Some(match kv.take() {
                    Some((kc, vc)) => (b.concat_rows(&[&kc, k])?, b.concat_rows(&[&vc, v])?),
                    None => (k.clone(), v.clone()),
                });
                *len += t;
                Ok(())
            }
            BackendKv::Quant(c) => c.append(&b.to_f32(k)?, &b.to_f32(v)?, t),
        }
    }

    pub fn attention<B: Backend<Tensor = T>>(
        &self,
        b: &B,
        q: &T,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<T> {
        match self {
            BackendKv::Concat { kv, .. } => {
                let (k, v) = kv
                    .as_ref()
                    .ok_or_else(|| Error("attention over an empty key/value cache".into()))?;
                b.attention(q, k, v, mask, scale)
            }
            BackendKv::Quant(c) => {
                let shape = b.shape(q);
                let &[t, heads, d] = &shape[..] else {
                    return Err(Error(format!("attention: q of shape {shape:?}")));
                };
                let out = crate::kvq::attend(&b.to_f32(q)?, t, heads, c, mask, scale)?;
                b.upload(out, &[t, heads * d])
            }
        }
    }
}

/// The key/value methods of a `Backend` whose store is [`BackendKv`] of its tensors.
macro_rules! backend_kv_methods {
    ($tensor:ty) => {
        type KvStore = $crate::BackendKv<$tensor>;

        fn kv_alloc(&self, spec: $crate::KvSpec) -> $crate::Result<Self::KvStore> {
            $crate::BackendKv::new(spec)
        }

        fn kv_append(
            &self,
            kv: &mut Self::KvStore,
            k: &$tensor,
            v: &$tensor,
        ) -> $crate::Result<()> {
            kv.append(self, k, v)
        }

        fn kv_len(&self, kv: &Self::KvStore) -> usize {
            kv.len()
        }

        fn kv_attention(
            &self,
            q: &$tensor,
            kv: &Self::KvStore,
            mask: $crate::AttentionMask,
            scale: f32,
        ) -> $crate::Result<$tensor> {
            kv.attention(self, q, mask, scale)
        }
    };
}
pub(crate) use backend_kv_methods;
