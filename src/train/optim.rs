//! AdamW with per-variable learning-rate multipliers, and the learning-rate schedule.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// One optimised variable with its moments and learning-rate multiplier.
#[derive(Clone)]
struct Slot {
    var: Var,
    lr_scale: f64,
    m: Tensor,
    v: Tensor,
}

/// Decoupled-weight-decay Adam (PyTorch's `AdamW`, betas 0.9/0.999, eps 1e-8). A clone is a
/// snapshot of the moments (each step replaces them, never writes into them).
#[derive(Clone)]
pub struct AdamW {
    slots: Vec<Slot>,
    weight_decay: f64,
    step: i32,
}

impl AdamW {
    /// An optimiser over `(variable, learning-rate multiplier)` pairs.
    pub fn new(vars: Vec<(Var, f64)>, weight_decay: f64) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(var, lr_scale)| {
                Ok(Slot {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    var,
                    lr_scale,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            weight_decay,
            step: 0,
        })
    }

    /// Optimises `vars` from now on: a variable already optimised keeps its moments, a new one
    /// starts from zero.
    pub fn retarget(&mut self, vars: Vec<(Var, f64)>) -> Result<()> {
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        for (var, lr_scale) in vars {
            let id = var.as_tensor().id();
            let slot = match old.iter().position(|s| s.var.as_tensor().id() == id) {
                Some(i) => Slot {
                    lr_scale,
                    ..old.swap_remove(i)
                },
                None => Slot {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    var,
                    lr_scale,
                },
            };
            self.slots.push(slot);
        }
        Ok(())
    }

    /// One update at base learning rate `lr`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.step += 1;
        let c1 = 1.0 - B1.powi(self.step);
        let c2 = 1.0 - B2.powi(self.step);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let lr = lr * s.lr_scale;
            s.m = ((&s.m * B1)? + (g * (1.0 - B1))?)?;
            s.v = ((&s.v * B2)? + (g.sqr()? * (1.0 - B2))?)?;
            let update = ((&s.m / c1)? / ((&s.v / c2)?.sqrt()? + EPS)?)?;
            let decayed = (s.var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            s.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Learning rate at `step` of `total`: a linear ramp over the first `ramp` steps, then a cosine
/// decay to zero.
pub fn cosine_with_ramp(base: f64, step: usize, total: usize, ramp: usize) -> f64 {
    if step < ramp {
        return base * (step + 1) as f64 / ramp as f64;
    }
    let span = (total - ramp).max(1) as f64;
    let t = ((step - ramp) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Early stopping on validation loss for an `auto` warm-up: the rate halves after each epoch
/// without a new best (lower by more than [`Plateau::MIN_DELTA`]), and the phase stops after
/// `patience` such epochs in a row.
#[derive(Debug, Clone)]
pub struct Plateau {
    patience: usize,
    best: f32,
    stale: usize,
}

/// What a [`Plateau`] makes of an epoch's validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new best: keep this model.
    Improved,
    /// No better: halve the rate and go on.
    Stale,
    /// No better for `patience` epochs: stop.
    Stop,
}

impl Plateau {
    /// The least fall of the loss that counts as an improvement.
    pub const MIN_DELTA: f32 = 1e-4;

    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            best: f32::INFINITY,
            stale: 0,
        }
    }

    /// Judges an epoch's validation loss.
    pub fn observe(&mut self, loss: f32) -> Verdict {
        if loss < self.best - Self::MIN_DELTA {
            self.best = loss;
            self.stale = 0;
            return Verdict::Improved;
        }
        self.stale += 1;
        if self.stale >= self.patience {
            Verdict::Stop
        } else {
            Verdict::Stale
        }
    }

    pub fn patience(&self) -> usize {
        self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_ramps_then_decays() {
        assert!((cosine_with_ramp(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((cosine_with_ramp(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((cosine_with_ramp(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!(cosine_with_ramp(1.0, 55, 100, 10) < 0.51);
        assert!(cosine_with_ramp(1.0, 99, 100, 10) < 0.01);
    }

    #[test]
    fn plateau_stops_after_patience_stale_epochs() {
        let mut p = Plateau::new(2);
        let verdicts: Vec<Verdict> = [1.0, 0.8, 0.9, 0.7, 0.75, 0.7]
            .iter()
            .map(|l| p.observe(*l))
            .collect();
        use Verdict::*;
        assert_eq!(verdicts, [Improved, Improved, Stale, Improved, Stale, Stop]);
    }

    #[test]
    fn retarget_keeps_moments_of_kept_variables() -> Result<()> {
        let a = Var::new(&[1.0f32], &Device::Cpu)?;
        let b = Var::new(&[1.0f32], &Device::Cpu)?;
        let grad = |v: &Var| (v.as_tensor() * 2.0)?.sum_all()?.backward();
        let mut opt = AdamW::new(vec![(a.clone(), 1.0)], 0.0)?;
        opt.step(&grad(&a)?, 0.1)?;
        let m = opt.slots[0].m.to_vec1::<f32>()?;
        opt.retarget(vec![(b.clone(), 1.0), (a.clone(), 0.5)])?;
        assert_eq!(opt.slots.len(), 2);
        let kept = opt
            .slots
            .iter()
            .find(|s| s.var.as_tensor().id() == a.as_tensor().id());
        assert_eq!(kept.unwrap().m.to_vec1::<f32>()?, m);
        assert_eq!(kept.unwrap().lr_scale, 0.5);
        let fresh = opt
            .slots
            .iter()
            .find(|s| s.var.as_tensor().id() == b.as_tensor().id());
        assert_eq!(fresh.unwrap().m.to_vec1::<f32>()?, [0.0]);
        Ok(())
    }

    /// One step against the closed form of PyTorch's AdamW first step: `w - lr*(sign(g) + wd*w)`.
    #[test]
    fn first_step_matches_pytorch() -> Result<()> {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
        let loss = (w.as_tensor() * &Tensor::new(&[3.0f32, -0.5], &Device::Cpu)?)?.sum_all()?;
        let mut opt = AdamW::new(vec![(w.clone(), 1.0)], 0.1)?;
        opt.step(&loss.backward()?, 0.01)?;
        let got = w.as_tensor().to_vec1::<f32>()?;
        let expect = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, e) in got.iter().zip(expect) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
        Ok(())
    }
}
