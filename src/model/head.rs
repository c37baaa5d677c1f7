//! The new classification head: dropout, then a linear map to the dataset's classes, stored under
//! timm's `classifier.*` keys.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;

/// Dropout + linear layer from `num_features` to `num_classes`.
pub struct Head {
    pub weight: Var,
    pub bias: Var,
    pub dropout: f32,
}

impl Head {
    /// PyTorch's `nn.Linear` initialisation (uniform in ±1/sqrt(fan_in)), drawn from `rng`.
    pub fn new(
        num_features: usize,
        num_classes: usize,
        dropout: f32,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (num_features as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let weight = Tensor::from_vec(
            draw(num_classes * num_features),
            (num_classes, num_features),
            device,
        )?;
        let bias = Tensor::from_vec(draw(num_classes), num_classes, device)?;
        Ok(Self {
            weight: Var::from_tensor(&weight)?,
            bias: Var::from_tensor(&bias)?,
            dropout,
        })
    }

    /// A head from existing tensors (a checkpoint's `classifier.*`).
    pub fn from_tensors(weight: &Tensor, bias: &Tensor, dropout: f32) -> Result<Self> {
        Ok(Self {
            weight: Var::from_tensor(&weight.to_dtype(DType::F32)?)?,
            bias: Var::from_tensor(&bias.to_dtype(DType::F32)?)?,
            dropout,
        })
    }

    /// Logits of pooled `features` `[N, C]`; with `rng`, dropout is applied (training).
    pub fn forward(&self, features: &Tensor, rng: Option<&mut impl Rng>) -> Result<Tensor> {
        let x = match rng {
            Some(rng) if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let mask: Vec<f32> = (0..features.elem_count())
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                features.mul(&Tensor::from_vec(
                    mask,
                    features.shape(),
                    features.device(),
                )?)?
            }
            _ => features.clone(),
        };
        x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}
