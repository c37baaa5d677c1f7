//! A small builder for an ONNX graph (nodes in the order they are added, weights as
//! initializers, tensors named after the timm layer that computes them), and the layers the
//! architectures share, written with opset 17 operators.

use super::proto::{attribute_type, AttributeProto, NodeProto, TensorProto, FLOAT, INT64};
use crate::model::layers::BatchNorm;
use crate::model::ops::bn_act::Activation;
use crate::model::Params;
use candle_core::{DType, Tensor};
use std::collections::HashSet;

/// The name of a tensor in the graph.
pub type Value = String;

/// An ONNX graph under construction.
#[derive(Default)]
pub struct Graph {
    /// The operators, in topological order.
    pub nodes: Vec<NodeProto>,
    /// The weights and constants.
    pub initializers: Vec<TensorProto>,
    taken: HashSet<String>,
}

/// An operator attribute.
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
}

impl Graph {
    /// `name`, or `name` with the first free `_N` suffix when it is taken.
    fn unique(&mut self, name: &str) -> String {
        let mut out = name.to_string();
        let mut i = 1;
        while self.taken.contains(&out) {
            out = format!("{name}_{i}");
            i += 1;
        }
        self.taken.insert(out.clone());
        out
    }

    /// An f32 initializer of `dims` holding `data`.
    pub fn floats(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Value {
        let name = self.unique(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A 1-D int64 initializer.
    pub fn ints(&mut self, name: &str, data: &[i64]) -> Value {
        self.int_tensor(name, &[data.len()], data)
    }

    /// An int64 scalar initializer (a `Gather` index that drops its axis).
    pub fn int_scalar(&mut self, name: &str, v: i64) -> Value {
        self.int_tensor(name, &[], &[v])
    }

    fn int_tensor(&mut self, name: &str, dims: &[usize], data: &[i64]) -> Value {
        let name = self.unique(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: INT64,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A candle tensor (any float type) as an f32 initializer of its shape.
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> anyhow::Result<Value> {
        let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(self.floats(name, t.dims(), &data))
    }

    /// The tensor `key` of `params` as an initializer named `key`.
    pub fn param(&mut self, params: &Params, key: &str) -> anyhow::Result<Value> {
        let t = params
            .dims(key)
            .map(|_| params.var(key).as_tensor().clone())
            .ok_or_else(|| anyhow::anyhow!("the weights lack {key:?}"))?;
        self.tensor(key, &t)
    }

    /// Operator `op` of `inputs`, named `name`; returns its (single) output.
    pub fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> Value {
        let out = self.unique(name);
        let attribute = attrs
            .into_iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: n.into(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => (p.i, p.r#type) = (Some(i), attribute_type::INT),
                    Attr::Float(f) => (p.f, p.r#type) = (Some(f), attribute_type::FLOAT),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v, attribute_type::INTS),
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
        });
        out
    }

    /// `a (op) b` for a binary elementwise operator (`Add`, `Mul`, ...).
    pub fn binary(&mut self, op: &str, name: &str, a: &str, b: &str) -> Value {
        self.op(op, name, &[a, b], vec![])
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, name: &str, v: f32) -> Value {
        self.floats(name, &[], &[v])
    }

    /// `act(x)`.
    pub fn activation(&mut self, x: &str, name: &str, act: Activation) -> Value {
        match act {
            Activation::None => x.to_string(),
            Activation::Relu => self.op("Relu", name, &[x], vec![]),
            Activation::Relu6 => {
                let (lo, hi) = (
                    self.scalar(&format!("{name}.min"), 0.0),
                    self.scalar(&format!("{name}.max"), 6.0),
                );
                self.op("Clip", name, &[x, &lo, &hi], vec![])
            }
            Activation::Silu => {
                let s = self.op("Sigmoid", &format!("{name}.sigmoid"), &[x], vec![]);
                self.binary("Mul", name, x, &s)
            }
            Activation::HardSwish => self.op("HardSwish", name, &[x], vec![]),
            Activation::Sigmoid => self.op("Sigmoid", name, &[x], vec![]),
            // relu6(z + 3) / 6 = clip(z / 6 + 1/2, 0, 1).
            Activation::HardSigmoid => self.op(
                "HardSigmoid",
                name,
                &[x],
                vec![
                    ("alpha", Attr::Float(1.0 / 6.0)),
                    ("beta", Attr::Float(0.5)),
                ],
            ),
        }
    }

    /// A 2-D convolution of NCHW `x` with initializers `w` (and `b`); `pads` is ONNX's
    /// `[top, left, bottom, right]`.
    pub fn conv(&mut self, x: &str, name: &str, w: &str, b: Option<&str>, geo: ConvGeo) -> Value {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.op(
            "Conv",
            name,
            &inputs,
            vec![
                ("strides", Attr::Ints(vec![geo.stride as i64; 2])),
                (
                    "pads",
                    Attr::Ints(geo.pads.iter().map(|&p| p as i64).collect()),
                ),
                ("group", Attr::Int(geo.group as i64)),
            ],
        )
    }

    /// Convolution `conv_key` (a timm weight `[Co, Ci/g, K, K]`) followed by inference-mode
    /// BatchNorm `bn`, folded into one convolution with a bias, then `act`.
    pub fn conv_bn(
        &mut self,
        params: &Params,
        x: &str,
        conv_key: &str,
        bn: &BatchNorm,
        geo: ConvGeo,
        act: Activation,
    ) -> anyhow::Result<Value> {
        let w = params.var(conv_key).as_tensor();
        let (scale, shift, _) = bn.inference_affine(params)?;
        let folded = w.broadcast_mul(&scale.reshape((w.dim(0)?, 1, 1, 1))?)?;
        let name = conv_key.trim_end_matches(".weight");
        let wv = self.tensor(conv_key, &folded)?;
        let bv = self.tensor(&format!("{}.bias", bn.prefix), &shift)?;
        let y = self.conv(x, name, &wv, Some(&bv), geo);
        Ok(self.activation(&y, &format!("{name}.act"), act))
    }

    /// NCHW `[N, C, H, W]` to `[N, C]` by global average pooling.
    pub fn global_pool(&mut self, x: &str, name: &str) -> Value {
        let p = self.op("GlobalAveragePool", name, &[x], vec![]);
        self.flatten(&p, &format!("{name}.flatten"))
    }

    /// `[N, ...]` to `[N, rest]`.
    pub fn flatten(&mut self, x: &str, name: &str) -> Value {
        self.op("Flatten", name, &[x], vec![("axis", Attr::Int(1))])
    }

    /// Axes permuted by `perm`.
    pub fn transpose(&mut self, x: &str, name: &str, perm: &[i64]) -> Value {
        self.op(
            "Transpose",
            name,
            &[x],
            vec![("perm", Attr::Ints(perm.to_vec()))],
        )
    }

    /// `x` reshaped to `shape` (0 keeps that axis, the dynamic batch).
    pub fn reshape(&mut self, x: &str, name: &str, shape: &[i64]) -> Value {
        let s = self.ints(&format!("{name}.shape"), shape);
        self.op("Reshape", name, &[x, &s], vec![])
    }

    /// `nn.Linear` `prefix` (`weight` `[Out, In]`, or a 1x1 convolution's `[Out, In, 1, 1]`, and
    /// `bias`) on the last axis of `x`.
    pub fn linear(&mut self, params: &Params, x: &str, prefix: &str) -> anyhow::Result<Value> {
        let w = params.var(&format!("{prefix}.weight")).as_tensor();
        let wt = w.reshape((w.dim(0)?, ()))?.t()?;
        let wv = self.tensor(&format!("{prefix}.weight"), &wt)?;
        let bv = self.param(params, &format!("{prefix}.bias"))?;
        let y = self.binary("MatMul", &format!("{prefix}.matmul"), x, &wv);
        Ok(self.binary("Add", prefix, &y, &bv))
    }

    /// LayerNorm over the last axis with the affine map at `prefix`.
    pub fn layer_norm(
        &mut self,
        params: &Params,
        x: &str,
        prefix: &str,
        eps: f32,
    ) -> anyhow::Result<Value> {
        let w = self.param(params, &format!("{prefix}.weight"))?;
        let b = self.param(params, &format!("{prefix}.bias"))?;
        Ok(self.op(
            "LayerNormalization",
            prefix,
            &[x, &w, &b],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
        ))
    }

    /// The exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`.
    pub fn gelu(&mut self, x: &str, name: &str) -> Value {
        let r2 = self.scalar(&format!("{name}.sqrt2"), std::f32::consts::SQRT_2);
        let one = self.scalar(&format!("{name}.one"), 1.0);
        let half = self.scalar(&format!("{name}.half"), 0.5);
        let d = self.binary("Div", &format!("{name}.div"), x, &r2);
        let e = self.op("Erf", &format!("{name}.erf"), &[&d], vec![]);
        let e = self.binary("Add", &format!("{name}.add"), &e, &one);
        let y = self.binary("Mul", &format!("{name}.mul"), x, &e);
        self.binary("Mul", name, &y, &half)
    }
}

/// Stride, padding and groups of a convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeo {
    /// The same stride along both axes.
    pub stride: usize,
    /// `[top, left, bottom, right]`, ONNX's order.
    pub pads: [usize; 4],
    /// Channel groups (the channel count for a depthwise convolution).
    pub group: usize,
}

impl ConvGeo {
    /// A dense convolution padded `pad` on every side.
    pub fn dense(stride: usize, pad: usize) -> Self {
        Self {
            stride,
            pads: [pad; 4],
            group: 1,
        }
    }

    /// The output size `(h, w)` of a `kernel` x `kernel` window on an `h` x `w` input.
    pub fn out(&self, (h, w): (usize, usize), kernel: usize) -> (usize, usize) {
        let p = self.pads;
        (
            (h + p[0] + p[2] - kernel) / self.stride + 1,
            (w + p[1] + p[3] - kernel) / self.stride + 1,
        )
    }
}
