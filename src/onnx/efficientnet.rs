//! The graph of timm's `EfficientNet` and `MobileNetV3` classes (EfficientNet-Lite and B,
//! MobileNetV1/V2/V3), mirroring `model::efficientnet_blocks`: the stem, the blocks of each stage
//! with BatchNorm folded into their convolutions, TF "SAME" padding as explicit pads, and the
//! head of each class. NCHW throughout.

use super::graph::{ConvGeo, Graph, Value};
use crate::model::efficientnet::EfficientNet;
use crate::model::efficientnet_blocks::{Act, Block, BlockKind, Trunk};
use crate::model::layers::same_padding;
use crate::model::mobilenetv3::MobileNetV3;
use crate::model::ops::bn_act::Activation;
use crate::model::{Backbone, Params};

/// Padding of a `kernel` x `kernel` stride-`stride` window on an `h` x `w` input as the trunk
/// pads it: TF "SAME" in the `tf_` ports, `kernel / 2` on every side otherwise.
fn geometry(trunk: &Trunk, (h, w): (usize, usize), kernel: usize, stride: usize) -> ConvGeo {
    let pads = if trunk.family.tf {
        let (t, b) = same_padding(h, kernel, stride);
        let (l, r) = same_padding(w, kernel, stride);
        [t, l, b, r]
    } else {
        [kernel / 2; 4]
    };
    ConvGeo {
        stride,
        pads,
        group: 1,
    }
}

/// One block on `x` of spatial size `hw`; returns its output and size.
fn block(
    g: &mut Graph,
    params: &Params,
    trunk: &Trunk,
    b: &Block,
    x: &str,
    hw: (usize, usize),
) -> anyhow::Result<(Value, (usize, usize))> {
    let p = &b.prefix;
    let act = b.act.activation();
    let one = ConvGeo::dense(1, 0);
    let key = |n: &str| format!("{p}.{n}");
    let bn = |n: &str| trunk.batchnorm(&key(n));
    let mut h: Value = match b.kind {
        BlockKind::ConvBnAct => {
            let y = g.conv_bn(params, x, &key("conv.weight"), bn("bn1"), one, act)?;
            return Ok((y, hw));
        }
        BlockKind::InvertedResidual => {
            g.conv_bn(params, x, &key("conv_pw.weight"), bn("bn1"), one, act)?
        }
        BlockKind::DepthwiseSeparable { .. } => x.to_string(),
    };
    let (dw_bn, out_bn, proj) = b.layer_names();
    let mut dw = geometry(trunk, hw, b.kernel, b.stride);
    dw.group = b.mid_ch;
    let out_hw = dw.out(hw, b.kernel);
    h = g.conv_bn(params, &h, &key("conv_dw.weight"), bn(dw_bn), dw, act)?;
    if b.se_ch > 0 {
        let (reduce_act, gate_act) = trunk.family.se.activations(b.act);
        let pooled = g.op("GlobalAveragePool", &key("se.pool"), &[&h], vec![]);
        let mut s = pooled;
        for (name, a) in [("conv_reduce", reduce_act), ("conv_expand", gate_act)] {
            let w = g.param(params, &key(&format!("se.{name}.weight")))?;
            let bias = g.param(params, &key(&format!("se.{name}.bias")))?;
            let y = g.conv(&s, &key(&format!("se.{name}")), &w, Some(&bias), one);
            s = g.activation(&y, &key(&format!("se.{name}.act")), a);
        }
        h = g.binary("Mul", &key("se"), &h, &s);
    }
    let out_act = b.out_act().map_or(Activation::None, Act::activation);
    h = g.conv_bn(
        params,
        &h,
        &key(&format!("{proj}.weight")),
        bn(out_bn),
        one,
        out_act,
    )?;
    if b.skip {
        h = g.binary("Add", &key("residual"), &h, x);
    }
    Ok((h, out_hw))
}

/// The stem and every stage on the NCHW input `x` of spatial size `hw`.
fn trunk_graph(
    g: &mut Graph,
    params: &Params,
    trunk: &Trunk,
    x: &str,
    hw: (usize, usize),
) -> anyhow::Result<Value> {
    let geo = geometry(trunk, hw, 3, 2);
    let mut hw = geo.out(hw, 3);
    let act = trunk.family.act.activation();
    let mut h = g.conv_bn(
        params,
        x,
        "conv_stem.weight",
        trunk.batchnorm("bn1"),
        geo,
        act,
    )?;
    for b in trunk.stages.iter().flatten() {
        (h, hw) = block(g, params, trunk, b, &h, hw)?;
    }
    Ok(h)
}

/// Pooled features of timm's `EfficientNet` class: the trunk, `conv_head` + `bn2` when the
/// model has them, the global pool.
pub fn efficientnet(
    g: &mut Graph,
    model: &EfficientNet,
    x: &str,
    hw: (usize, usize),
) -> anyhow::Result<Value> {
    let (params, trunk) = (&model.parts().params, &model.trunk);
    let mut h = trunk_graph(g, params, trunk, x, hw)?;
    if model.head_ch.is_some() {
        let act = trunk.family.act.activation();
        let bn = trunk.batchnorm("bn2");
        let one = ConvGeo::dense(1, 0);
        h = g.conv_bn(params, &h, "conv_head.weight", bn, one, act)?;
    }
    Ok(g.global_pool(&h, "global_pool"))
}

/// Pooled features of timm's `MobileNetV3` class: the trunk, the global pool, then
/// `conv_head` (with its bias, no BatchNorm) and the activation.
pub fn mobilenetv3(
    g: &mut Graph,
    model: &MobileNetV3,
    x: &str,
    hw: (usize, usize),
) -> anyhow::Result<Value> {
    let (params, trunk) = (&model.parts().params, &model.trunk);
    let h = trunk_graph(g, params, trunk, x, hw)?;
    let pooled = g.op("GlobalAveragePool", "global_pool", &[&h], vec![]);
    let w = g.param(params, "conv_head.weight")?;
    let b = g.param(params, "conv_head.bias")?;
    let y = g.conv(&pooled, "conv_head", &w, Some(&b), ConvGeo::dense(1, 0));
    let y = g.activation(&y, "conv_head.act", trunk.family.act.activation());
    Ok(g.flatten(&y, "flatten"))
}
