//! A key/value store made of the backend's own tensors, grown by concatenation: what the
//! candle and CUDA backends use (their `Backend::attention` takes whole key/value tensors).

use crate::{AttentionMask, Backend, Error, Result};

pub struct ConcatKv<T> {
    kv: Option<(T, T)>,
    len: usize,
    capacity: usize,
}

impl<T: Clone> ConcatKv<T> {
    pub fn new(capacity: usize) -> Self {
        ConcatKv {
            kv: None,
            len: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append<B: Backend<Tensor = T>>(&mut self, b: &B, k: &T, v: &T) -> Result<()> {
        let t = b.shape(k)[0];
        if self.len + t > self.capacity {
            return Err(Error(format!(
                "key/value cache full: {} positions stored, {t} more do not fit in {}",
                self.len, self.capacity
            )));
        }
        self.kv = Some(match self.kv.take() {
            Some((kc, vc)) => (b.concat_rows(&[&kc, k])?, b.concat_rows(&[&vc, v])?),
            None => (k.clone(), v.clone()),
        });
        self.len += t;
        Ok(())
    }

    pub fn attention<B: Backend<Tensor = T>>(
        &self,
        b: &B,
        q: &T,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<T> {
        let (k, v) = self
            .kv
            .as_ref()
            .ok_or_else(|| Error("attention over an empty key/value cache".into()))?;
        b.attention(q, k, v, mask, scale)
    }
}
