//! Named model tensors (timm key names), loaded from and saved to safetensors.

use candle_core::{DType, Device, Tensor, Var};
use std::collections::BTreeMap;
use std::path::Path;

/// Whether a key names a BatchNorm buffer rather than a trained weight.
pub fn is_buffer(key: &str) -> bool {
    key.ends_with("running_mean")
        || key.ends_with("running_var")
        || key.ends_with("num_batches_tracked")
}

/// A model's tensors by name, each a candle `Var` so that it can be trained in place.
#[derive(Clone, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    /// Reads every floating-point tensor of a safetensors file (as f32). A malformed file, or a
    /// tensor of another type that the model later asks for, is an error naming the file.
    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::from_bytes(&bytes, device).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses safetensors bytes; the header is validated before any tensor is allocated.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> anyhow::Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("not a valid safetensors file: {e}"))?;
        let mut vars = BTreeMap::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype as D;
            if !matches!(view.dtype(), D::F32 | D::F16 | D::BF16 | D::F64) {
                if view.dtype() == D::I64 && name.ends_with("num_batches_tracked") {
                    continue;
                }
                anyhow::bail!(
                    "tensor {name} has type {:?}; expected floating point",
                    view.dtype()
                );
            }
            let t = candle_core::safetensors::Load::load(&view, device)?.to_dtype(DType::F32)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self { vars })
    }

    /// Tensors from a map (tests and checkpoints).
    pub fn from_tensors(
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> candle_core::Result<Self> {
        let vars = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, Var::from_tensor(&t.to_dtype(DType::F32)?)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { vars })
    }

    /// The variable `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> anyhow::Result<&Var> {
        let v = self.vars.get(name).ok_or_else(|| {
            anyhow::anyhow!("weights lack tensor {name:?} (expected shape {shape:?})")
        })?;
        if v.dims() != shape {
            anyhow::bail!(
                "tensor {name:?} has shape {:?}, expected {shape:?}",
                v.dims()
            );
        }
        Ok(v)
    }

    /// The shape of tensor `name`, if there is one (to size a model from its checkpoint).
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.vars.get(name).map(|v| v.dims())
    }

    /// Whether any tensor's name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.vars
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// The variable `name`; the model checked its presence when it was built.
    pub fn var(&self, name: &str) -> &Var {
        &self.vars[name]
    }

    /// Keeps only the tensors whose names satisfy `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.vars.retain(|k, _| keep(k));
    }

    /// Variables whose names satisfy `pred`.
    pub fn matching<'a>(
        &'a self,
        pred: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = Var> + 'a {
        self.vars
            .iter()
            .filter(move |(k, _)| pred(k))
            .map(|(_, v)| v.clone())
    }

    /// Number of values in trained tensors (buffers excluded) whose names satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.vars
            .iter()
            .filter(|(k, _)| pred(k) && !is_buffer(k))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// All tensors by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let dev = Device::Cpu;
        for bytes in [
            &b""[..],
            &b"\x08\x00\x00\x00\x00\x00\x00\x00{}"[..],
            &b"\xff\xff\xff\xff\xff\xff\xff\x7f{"[..],
            &b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4]}}"[..],
        ] {
            assert!(Params::from_bytes(bytes, &dev).is_err());
        }
    }

    #[test]
    fn shapes_and_missing_keys_are_checked() {
        let dev = Device::Cpu;
        let p = Params::from_tensors([(
            "w".to_string(),
            Tensor::zeros((2, 3), DType::F32, &dev).unwrap(),
        )])
        .unwrap();
        assert!(p.get("w", &[2, 3]).is_ok());
        assert!(p
            .get("w", &[3, 2])
            .unwrap_err()
            .to_string()
            .contains("shape"));
        assert!(p.get("v", &[1]).unwrap_err().to_string().contains("lack"));
    }
}
