//! The graph of a timm ResNet, mirroring `model::resnet`: the 7x7 stem, the max-pool, basic or
//! bottleneck blocks with BatchNorm folded into their convolutions, the global pool.

use super::graph::{ConvGeo, Graph, Value};
use crate::model::ops::bn_act::Activation;
use crate::model::resnet::{Block, ResNet};
use crate::model::Backbone;

/// Convolution `conv` and BatchNorm `bn` of `model` on `x`, then `act`.
fn conv_bn(
    g: &mut Graph,
    model: &ResNet,
    x: &str,
    conv: &str,
    bn: &str,
    stride: usize,
    act: Activation,
) -> anyhow::Result<Value> {
    let params = &model.parts().params;
    let key = format!("{conv}.weight");
    let pad = params.var(&key).dim(2)? / 2;
    g.conv_bn(
        params,
        x,
        &key,
        &model.bns[bn],
        ConvGeo::dense(stride, pad),
        act,
    )
}

fn block(g: &mut Graph, model: &ResNet, x: &str, b: &Block) -> anyhow::Result<Value> {
    let p = &b.prefix;
    let (relu, none) = (Activation::Relu, Activation::None);
    let cb = |g: &mut Graph, x: &str, i: usize, stride, act| {
        conv_bn(
            g,
            model,
            x,
            &format!("{p}.conv{i}"),
            &format!("{p}.bn{i}"),
            stride,
            act,
        )
    };
    let h = if model.spec.bottleneck {
        let h = cb(g, x, 1, 1, relu)?;
        let h = cb(g, &h, 2, b.stride, relu)?;
        cb(g, &h, 3, 1, none)?
    } else {
        let h = cb(g, x, 1, b.stride, relu)?;
        cb(g, &h, 2, 1, none)?
    };
    let shortcut = if b.downsample {
        let (c, bn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
        conv_bn(g, model, x, &c, &bn, b.stride, none)?
    } else {
        x.to_string()
    };
    let sum = g.binary("Add", &format!("{p}.residual"), &h, &shortcut);
    Ok(g.activation(&sum, &format!("{p}.act"), relu))
}

/// Pooled features of `model` on the NCHW input `x`.
pub fn resnet(g: &mut Graph, model: &ResNet, x: &str) -> anyhow::Result<Value> {
    let h = conv_bn(g, model, x, "conv1", "bn1", 2, Activation::Relu)?;
    let mut h = g.op(
        "MaxPool",
        "maxpool",
        &[&h],
        vec![
            ("kernel_shape", super::graph::Attr::Ints(vec![3, 3])),
            ("strides", super::graph::Attr::Ints(vec![2, 2])),
            ("pads", super::graph::Attr::Ints(vec![1; 4])),
        ],
    );
    for b in model.stages.iter().flatten() {
        h = block(g, model, &h, b)?;
    }
    Ok(g.global_pool(&h, "global_pool"))
}
