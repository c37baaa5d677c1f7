//! The graph of a timm Vision Transformer (ViT, DeiT, DINOv2), mirroring `model::vit`: the patch
//! embedding, the class token expanded to the dynamic batch, the position embeddings (resampled
//! at export time when the input's patch grid differs from the stored one), pre-norm blocks, the
//! class token after `norm`.

use super::graph::{Attr, ConvGeo, Graph, Value};
use crate::model::vit::{VisionTransformer, LN_EPS};
use crate::model::{Backbone, GroupMode};

/// `x` times layer scale `{prefix}.{ls}.gamma`, or `x` without layer scale.
fn scaled(
    g: &mut Graph,
    model: &VisionTransformer,
    x: Value,
    prefix: &str,
    ls: &str,
) -> anyhow::Result<Value> {
    if !model.spec.layer_scale {
        return Ok(x);
    }
    let gamma = g.param(&model.parts().params, &format!("{prefix}.{ls}.gamma"))?;
    Ok(g.binary("Mul", &format!("{prefix}.{ls}"), &x, &gamma))
}

/// Multi-head self-attention of block `prefix` on `x` `[N, T, D]`.
fn attention(
    g: &mut Graph,
    model: &VisionTransformer,
    x: &str,
    t: usize,
    prefix: &str,
) -> anyhow::Result<Value> {
    let params = &model.parts().params;
    let (d, heads) = (model.spec.embed_dim, model.spec.num_heads);
    let hd = d / heads;
    let a = format!("{prefix}.attn");
    let qkv = g.linear(params, x, &format!("{a}.qkv"))?;
    let qkv = g.reshape(
        &qkv,
        &format!("{a}.split"),
        &[0, t as i64, 3, heads as i64, hd as i64],
    );
    let qkv = g.transpose(&qkv, &format!("{a}.heads"), &[2, 0, 3, 1, 4]);
    let part = |g: &mut Graph, i: i64, name: &str| {
        let idx = g.int_scalar(&format!("{a}.{name}.index"), i);
        g.op(
            "Gather",
            &format!("{a}.{name}"),
            &[&qkv, &idx],
            vec![("axis", Attr::Int(0))],
        )
    };
    let (q, k, v) = (part(g, 0, "q"), part(g, 1, "k"), part(g, 2, "v"));
    let scale = g.scalar(&format!("{a}.scale"), (hd as f32).powf(-0.5));
    let q = g.binary("Mul", &format!("{a}.q_scaled"), &q, &scale);
    let kt = g.transpose(&k, &format!("{a}.k_t"), &[0, 1, 3, 2]);
    let scores = g.binary("MatMul", &format!("{a}.scores"), &q, &kt);
    let attn = g.op(
        "Softmax",
        &format!("{a}.softmax"),
        &[&scores],
        vec![("axis", Attr::Int(-1))],
    );
    let o = g.binary("MatMul", &format!("{a}.context"), &attn, &v);
    let o = g.transpose(&o, &format!("{a}.merge"), &[0, 2, 1, 3]);
    let o = g.reshape(&o, &format!("{a}.merged"), &[0, t as i64, d as i64]);
    g.linear(params, &o, &format!("{a}.proj"))
}

/// Pooled features (the class token after `norm`) of `model` on the NCHW input `x` of spatial
/// size `hw`.
pub fn vit(
    g: &mut Graph,
    model: &VisionTransformer,
    x: &str,
    (h, w): (usize, usize),
) -> anyhow::Result<Value> {
    let params = &model.parts().params;
    let (d, p) = (model.spec.embed_dim, model.spec.patch_size);
    let (gh, gw) = (h / p, w / p);
    let t = 1 + gh * gw;
    let wv = g.param(params, "patch_embed.proj.weight")?;
    let bv = g.param(params, "patch_embed.proj.bias")?;
    let patches = g.conv(x, "patch_embed.proj", &wv, Some(&bv), ConvGeo::dense(p, 0));
    let patches = g.reshape(
        &patches,
        "patch_embed.flatten",
        &[0, d as i64, (gh * gw) as i64],
    );
    let patches = g.transpose(&patches, "patch_embed.tokens", &[0, 2, 1]);
    // The class token broadcast to [N, 1, D]: Expand to (N from the input's shape, 1, D).
    let shape = g.op("Shape", "batch.shape", &[x], vec![]);
    let (start, end) = (g.ints("batch.start", &[0]), g.ints("batch.end", &[1]));
    let n = g.op("Slice", "batch.n", &[&shape, &start, &end], vec![]);
    let rest = g.ints("cls_token.rest", &[1, d as i64]);
    let cls_shape = g.op(
        "Concat",
        "cls_token.shape",
        &[&n, &rest],
        vec![("axis", Attr::Int(0))],
    );
    let cls = g.param(params, "cls_token")?;
    let cls = g.op("Expand", "cls_token.expand", &[&cls, &cls_shape], vec![]);
    let tokens = g.op(
        "Concat",
        "tokens",
        &[&cls, &patches],
        vec![("axis", Attr::Int(1))],
    );
    let frozen = GroupMode {
        trainable: false,
        batch_stats: false,
    };
    let pos = g.tensor("pos_embed", &model.pos_embed(gh, gw, frozen)?)?;
    let mut hs = g.binary("Add", "pos_embed.add", &tokens, &pos);
    for i in 0..model.spec.depth {
        let bp = format!("blocks.{i}");
        let y = g.layer_norm(params, &hs, &format!("{bp}.norm1"), LN_EPS)?;
        let y = attention(g, model, &y, t, &bp)?;
        let y = scaled(g, model, y, &bp, "ls1")?;
        hs = g.binary("Add", &format!("{bp}.residual1"), &hs, &y);
        let y = g.layer_norm(params, &hs, &format!("{bp}.norm2"), LN_EPS)?;
        let y = g.linear(params, &y, &format!("{bp}.mlp.fc1"))?;
        let y = g.gelu(&y, &format!("{bp}.mlp.act"));
        let y = g.linear(params, &y, &format!("{bp}.mlp.fc2"))?;
        let y = scaled(g, model, y, &bp, "ls2")?;
        hs = g.binary("Add", &format!("{bp}.residual2"), &hs, &y);
    }
    let first = g.int_scalar("cls_index", 0);
    let cls = g.op(
        "Gather",
        "cls_pool",
        &[&hs, &first],
        vec![("axis", Attr::Int(1))],
    );
    g.layer_norm(params, &cls, "norm", LN_EPS)
}
