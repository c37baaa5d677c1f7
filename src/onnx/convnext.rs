//! The graph of a timm ConvNeXt, mirroring `model::convnext`: channels-last between the
//! convolutions (LayerNorm over the last axis, the MLP as matrix products), NCHW for the stem,
//! downsample and depthwise convolutions.

use super::graph::{ConvGeo, Graph, Value};
use crate::model::convnext::{ConvNeXt, NORM_EPS};
use crate::model::Backbone;

const TO_NCHW: [i64; 4] = [0, 3, 1, 2];
const TO_NHWC: [i64; 4] = [0, 2, 3, 1];

/// Convolution `prefix` (weight and bias) of channels-last `x`, back to channels-last.
fn conv_nhwc(
    g: &mut Graph,
    model: &ConvNeXt,
    x: &str,
    prefix: &str,
    geo: ConvGeo,
) -> anyhow::Result<Value> {
    let params = &model.parts().params;
    let t = g.transpose(x, &format!("{prefix}.nchw"), &TO_NCHW);
    let w = g.param(params, &format!("{prefix}.weight"))?;
    let b = g.param(params, &format!("{prefix}.bias"))?;
    let y = g.conv(&t, prefix, &w, Some(&b), geo);
    Ok(g.transpose(&y, &format!("{prefix}.nhwc"), &TO_NHWC))
}

/// Pooled features (after `head.norm`) of `model` on the NCHW input `x`.
pub fn convnext(g: &mut Graph, model: &ConvNeXt, x: &str) -> anyhow::Result<Value> {
    let params = &model.parts().params;
    let patchify = |k| ConvGeo::dense(k, 0);
    let w = g.param(params, "stem.0.weight")?;
    let b = g.param(params, "stem.0.bias")?;
    let h = g.conv(x, "stem.0", &w, Some(&b), patchify(4));
    let h = g.transpose(&h, "stem.0.nhwc", &TO_NHWC);
    let mut h = g.layer_norm(params, &h, "stem.1", NORM_EPS)?;
    for stage in &model.stages {
        let p = &stage.prefix;
        if stage.downsample {
            h = g.layer_norm(params, &h, &format!("{p}.downsample.0"), NORM_EPS)?;
            h = conv_nhwc(g, model, &h, &format!("{p}.downsample.1"), patchify(2))?;
        }
        for b in &stage.blocks {
            let bp = &b.prefix;
            let mut dw = ConvGeo::dense(1, b.kernel / 2);
            dw.group = params.var(&format!("{bp}.conv_dw.weight")).dim(0)?;
            let y = conv_nhwc(g, model, &h, &format!("{bp}.conv_dw"), dw)?;
            let y = g.layer_norm(params, &y, &format!("{bp}.norm"), NORM_EPS)?;
            let y = g.linear(params, &y, &format!("{bp}.mlp.fc1"))?;
            let y = g.gelu(&y, &format!("{bp}.mlp.act"));
            let y = g.linear(params, &y, &format!("{bp}.mlp.fc2"))?;
            let gamma = g.param(params, &format!("{bp}.gamma"))?;
            let y = g.binary("Mul", &format!("{bp}.gamma"), &y, &gamma);
            h = g.binary("Add", &format!("{bp}.residual"), &y, &h);
        }
    }
    let pooled = g.op(
        "ReduceMean",
        "global_pool",
        &[&h],
        vec![
            ("axes", super::graph::Attr::Ints(vec![1, 2])),
            ("keepdims", super::graph::Attr::Int(0)),
        ],
    );
    g.layer_norm(params, &pooled, "head.norm", NORM_EPS)
}
