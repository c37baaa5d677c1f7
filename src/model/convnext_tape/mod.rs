//! ConvNeXt's passes without a candle graph, on the CPU: the inference forward and the training
//! forward that records a [`Tape`], with the backward over it. Activations live in plain buffers
//! from a [`BufferPool`] that the next pass reuses (no fresh zero-filled pages), and each layer is
//! one or two fused passes over memory around the matrix products:
//!
//! - a block is the 7x7 depthwise with its bias, LayerNorm, `fc1` into bias+GELU, and `fc2` with
//!   the layer scale folded into its weight (`gamma * (a @ W2^T + b2) = a @ (gamma W2)^T +
//!   gamma b2`) accumulating onto the residual; its backward reads `gamma`'s gradient off the
//!   folded weight's, and the depthwise's input gradient accumulates onto the residual's;
//! - a downsample is LayerNorm writing straight into the 2x2 patches, and one product;
//! - the stem gathers its 4x4 patches once and multiplies them with the weight.

mod backward;
mod forward;

pub use forward::forward;

use super::convnext::ConvNeXt;
use super::Params;
use candle_core::{Result, Tensor};
use std::sync::Mutex;

/// Rows per parallel task of the row-wise passes.
const ROWS_PER_TASK: usize = 64;

/// Buffers handed back by finished passes, for the next ones to take instead of allocating.
/// It holds at most as many bytes as the largest pass took, the oldest buffers dropped first.
#[derive(Default)]
pub struct BufferPool(Mutex<PoolState>);

#[derive(Default)]
struct PoolState {
    free: Vec<Vec<f32>>,
    taken_this_pass: usize,
    largest_pass: usize,
}

impl BufferPool {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts counting the values a new pass takes.
    fn begin_pass(&self) {
        self.state().taken_this_pass = 0;
    }

    /// A buffer of `len` values with arbitrary contents.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut s = self.state();
        s.taken_this_pass += len;
        s.largest_pass = s.largest_pass.max(s.taken_this_pass);
        match s.free.iter().position(|v| v.len() == len) {
            Some(i) => s.free.swap_remove(i),
            None => vec![0.0; len],
        }
    }

    /// Returns `buf` for later passes.
    fn give(&self, buf: Vec<f32>) {
        let mut s = self.state();
        s.free.push(buf);
        let mut held: usize = s.free.iter().map(Vec::len).sum();
        while held > s.largest_pass {
            held -= s.free.remove(0).len();
        }
    }
}

/// The values of tensor `name`, row-major.
fn values(params: &Params, name: &str) -> Result<Vec<f32>> {
    params.var(name).as_tensor().flatten_all()?.to_vec1()
}

/// `[Co, Ci, K, K]` as `[Co, K, K, Ci]` (the order of a channels-last patch) or back
/// (`to_patch_order` false).
fn permute_kernel(w: &[f32], co: usize, ci: usize, k: usize, to_patch_order: bool) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for t in 0..k * k {
                let (conv, patch) = ((o * ci + i) * k * k + t, (o * k * k + t) * ci + i);
                if to_patch_order {
                    out[patch] = w[conv];
                } else {
                    out[conv] = w[patch];
                }
            }
        }
    }
    out
}

/// The weights of one block, laid out for the passes.
struct BlockWeights {
    /// Depthwise kernel `[K, K, C]`.
    dw: Vec<f32>,
    dw_bias: Vec<f32>,
    norm_w: Vec<f32>,
    norm_b: Vec<f32>,
    /// `[4C, C]`.
    fc1: Vec<f32>,
    fc1_bias: Vec<f32>,
    /// `[C, 4C]`, and the same rows times `gamma`.
    fc2: Vec<f32>,
    fc2_scaled: Vec<f32>,
    fc2_bias: Vec<f32>,
    /// `gamma * fc2_bias`.
    fc2_bias_scaled: Vec<f32>,
    gamma: Vec<f32>,
    kernel: usize,
}

impl BlockWeights {
    fn load(params: &Params, prefix: &str, kernel: usize) -> Result<Self> {
        let v = |n: &str| values(params, &format!("{prefix}.{n}"));
        let raw_dw = v("conv_dw.weight")?;
        let c = raw_dw.len() / (kernel * kernel);
        let mut dw = vec![0f32; raw_dw.len()];
        for ch in 0..c {
            for t in 0..kernel * kernel {
                dw[t * c + ch] = raw_dw[ch * kernel * kernel + t];
            }
        }
        let (fc2, fc2_bias, gamma) = (v("mlp.fc2.weight")?, v("mlp.fc2.bias")?, v("gamma")?);
        let hidden = fc2.len() / c;
        let fc2_scaled = fc2
            .chunks(hidden)
            .zip(&gamma)
            .flat_map(|(row, &g)| row.iter().map(move |w| w * g))
            .collect();
        let fc2_bias_scaled = fc2_bias.iter().zip(&gamma).map(|(b, g)| b * g).collect();
        Ok(Self {
            dw,
            dw_bias: v("conv_dw.bias")?,
            norm_w: v("norm.weight")?,
            norm_b: v("norm.bias")?,
            fc1: v("mlp.fc1.weight")?,
            fc1_bias: v("mlp.fc1.bias")?,
            fc2,
            fc2_scaled,
            fc2_bias,
            fc2_bias_scaled,
            gamma,
            kernel,
        })
    }
}

/// A channels-last map `[N, H, W, C]`.
struct Map {
    data: Vec<f32>,
    dims: (usize, usize, usize, usize),
}

impl Map {
    fn rows(&self) -> usize {
        let (n, h, w, _) = self.dims;
        n * h * w
    }
}

/// What the backward of one layer needs, in forward order.
enum Record {
    /// The stem's gathered patches and its convolution's output (with bias), its norm's input.
    Stem { patches: Tensor, conv: Map },
    /// The downsample before stage `stage`: its norm's input and the normed 2x2 patches.
    Downsample {
        stage: usize,
        input: Map,
        patches: Vec<f32>,
        out_hw: (usize, usize),
    },
    /// Block `block` of stage `stage`: its input, the depthwise's output, the normed rows, `fc1`'s
    /// product (before its bias) and the GELU's output.
    Block {
        stage: usize,
        block: usize,
        input: Map,
        dw_out: Vec<f32>,
        normed: Vec<f32>,
        hidden: Vec<f32>,
        act: Vec<f32>,
    },
    /// The pooled features (`head.norm`'s input) of the last map, of `dims`.
    Head {
        pooled: Vec<f32>,
        dims: (usize, usize, usize, usize),
    },
}

/// The activations of a [`forward`] pass that its backward needs, each with its layer group.
pub struct Tape {
    records: Vec<(usize, Record)>,
}

/// The activations a block's backward needs: input, depthwise output, normed, hidden, GELU.
type BlockActivations = (Map, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// The weights of the downsample before stage `stage`: norm weight and bias, the kernel in
/// patch order `[Co, K, K, Ci]`, the bias, and `(Co, K)`.
type DownsampleWeights = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, (usize, usize));

fn downsample_weights(net: &ConvNeXt, stage: usize) -> Result<DownsampleWeights> {
    let params = &net.parts.params;
    let p = format!("{}.downsample", net.stages[stage].prefix);
    let conv = params.var(&format!("{p}.1.weight"));
    let (co, ci, k, _) = conv.as_tensor().dims4()?;
    let kernel = permute_kernel(&values(params, &format!("{p}.1.weight"))?, co, ci, k, true);
    Ok((
        values(params, &format!("{p}.0.weight"))?,
        values(params, &format!("{p}.0.bias"))?,
        kernel,
        values(params, &format!("{p}.1.bias"))?,
        (co, k),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::convnext::ConvNeXtSpec;
    use crate::model::Backbone;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// A ConvNeXt of a few narrow blocks with seeded random weights, every group trainable.
    fn tiny_convnext() -> ConvNeXt {
        let spec = ConvNeXtSpec {
            depths: [1, 1, 2, 1],
            dims: [8, 16, 16, 24],
            conv_mlp: true,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut tensors = Vec::new();
        let mut add = |name: String, shape: &[usize], centre: f32| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| centre + rng.random_range(-0.5f32..0.5))
                .collect();
            tensors.push((name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap()));
        };
        let d = spec.dims;
        add("stem.0.weight".into(), &[d[0], 3, 4, 4], 0.0);
        add("stem.0.bias".into(), &[d[0]], 0.0);
        let norm = |add: &mut dyn FnMut(String, &[usize], f32), p: &str, c: usize| {
            add(format!("{p}.weight"), &[c], 1.0);
            add(format!("{p}.bias"), &[c], 0.0);
        };
        norm(&mut add, "stem.1", d[0]);
        for (si, (&depth, &c)) in spec.depths.iter().zip(&d).enumerate() {
            if si > 0 {
                norm(&mut add, &format!("stages.{si}.downsample.0"), d[si - 1]);
                add(
                    format!("stages.{si}.downsample.1.weight"),
                    &[c, d[si - 1], 2, 2],
                    0.0,
                );
                add(format!("stages.{si}.downsample.1.bias"), &[c], 0.0);
            }
            for bi in 0..depth {
                let p = format!("stages.{si}.blocks.{bi}");
                add(format!("{p}.conv_dw.weight"), &[c, 1, 7, 7], 0.0);
                add(format!("{p}.conv_dw.bias"), &[c], 0.0);
                norm(&mut add, &format!("{p}.norm"), c);
                add(format!("{p}.mlp.fc1.weight"), &[4 * c, c, 1, 1], 0.0);
                add(format!("{p}.mlp.fc1.bias"), &[4 * c], 0.0);
                add(format!("{p}.mlp.fc2.weight"), &[c, 4 * c, 1, 1], 0.0);
                add(format!("{p}.mlp.fc2.bias"), &[c], 0.0);
                add(format!("{p}.gamma"), &[c], 0.5);
            }
        }
        norm(&mut add, "head.norm", d[3]);
        let params = Params::from_tensors(tensors).unwrap();
        let mut net = ConvNeXt::new("convnext_tiny_test", spec, params).unwrap();
        for i in 0..net.parts.groups.len() {
            net.set_trainable(i, true);
        }
        net
    }

    /// The tape's gradient of `sum(features * r)` against central finite differences of the
    /// inference pass, on a few elements of every tensor (folded layer scale, fused depthwise
    /// residual, norms writing into and reading from the downsample's patches).
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let net = tiny_convnext();
        // 36 px: stage 0 runs at 9x9, whose last row and column the first downsample drops.
        let x = Tensor::randn(0f32, 1.0, (2, 3, 36, 36), &Device::Cpu)?;
        let (features, tape) = forward(&net, &x, Some(0))?;
        let r = Tensor::randn(0f32, 1.0, features.shape(), &Device::Cpu)?;
        let leaf = candle_core::Var::from_tensor(&features)?;
        let mut grads = leaf.as_tensor().mul(&r)?.sum_all()?.backward()?;
        let g = grads.get(leaf.as_tensor()).expect("a gradient").clone();
        tape.backward(&net, &g, &mut grads)?;
        let loss = || -> Result<f64> {
            let y = forward(&net, &x, None)?.0;
            Ok(y.mul(&r)?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let eps = 1e-2f32;
        for (_, var) in net.trainable_vars() {
            let analytic = grads
                .get(var.as_tensor())
                .expect("a taped gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for _ in 0..3 {
                let i = rng.random_range(0..base.len());
                let probe = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
                    loss()
                };
                let numeric = ((probe(eps)? - probe(-eps)?) / (2.0 * eps as f64)) as f32;
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu)?)?;
                assert!(
                    (analytic[i] - numeric).abs() <= 2e-2 * numeric.abs().max(1.0),
                    "{:?} element {i}: tape {} vs finite difference {numeric}",
                    var.dims(),
                    analytic[i]
                );
            }
        }
        Ok(())
    }
}
