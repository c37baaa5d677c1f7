//! The hand-written backward of [`VisionTransformer`]: a forward pass without a candle graph
//! that keeps what each block's gradient needs ([`Tape`]), and the backward over it
//! ([`Tape::backward`]). Per block it keeps the input and the normalised input of both
//! LayerNorms, the packed qkv projection, the attention weights, the heads' output and the MLP's
//! pre-activation (its GELU is recomputed), where candle's graph keeps every intermediate. Blocks
//! before the first trainable group are run without a record and not visited backward. The last
//! block computes only what the class token needs: its attention for the class token's query,
//! its projection and MLP on the class token's row.
//!
//! The linear layers add their bias (and the residual) inside the matrix product
//! ([`linear`]), the attention's scale is fused into its softmax, and layer scale (DINOv2's
//! `ls1` / `ls2`) is folded into the projection and `fc2`: `ls * (x @ W^T + b)` is
//! `x @ (ls W)^T + ls b`.

use super::ops::attention::{self_attention, self_attention_backward};
use super::ops::channel_affine::{add_bias, sum_rows};
use super::ops::gelu::{bias_gelu, bias_gelu_backward};
use super::ops::layer_norm::{layer_norm, layer_norm_backward};
use super::ops::linear::{linear, product};
use super::vit::{VisionTransformer, LN_EPS};
use super::{layers::stem_patches, GroupMode, Params};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// What the backward of one block needs from its forward.
struct BlockRecord {
    /// The block's input `[N*T, D]` (LayerNorm 1's input).
    input: Tensor,
    normed1: Tensor,
    /// The qkv projection `[N*T, 3D]`, laid out `[N, T, 3, heads, head dim]`.
    qkv: Tensor,
    /// Softmax weights `[N, heads, R, T]` of the R query rows (all T tokens, or the class token
    /// in the last block); the rows below are `[N*R, ...]`.
    attention: Tensor,
    /// The heads' output before the projection `[N*R, D]`.
    heads: Tensor,
    /// The residual stream after attention (LayerNorm 2's input).
    mid: Tensor,
    normed2: Tensor,
    /// `fc1`'s product before its bias and GELU `[N*T, hidden]`.
    hidden: Tensor,
}

/// The record of a [`TapedPass`].
pub struct Tape {
    grid: (usize, usize),
    /// The input's patches `[N*gh*gw, 3*p*p]`, when the patch embedding trains.
    patches: Option<Tensor>,
    /// Records of the blocks from the first one in a trainable group, by block index.
    blocks: Vec<(usize, BlockRecord)>,
    /// The class tokens after the last block, before the final norm `[N, D]`.
    pooled: Tensor,
}

/// A block's weights as the taped pass applies them, layer scale folded in.
struct BlockWeights {
    prefix: String,
    norm1: (Tensor, Tensor),
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    norm2: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

/// A forward pass of a [`VisionTransformer`] without a candle graph.
pub struct TapedPass<'a> {
    vit: &'a VisionTransformer,
    /// Whether to keep a record for the backward (a training pass).
    record: bool,
}

/// The tensor `name`, detached.
fn detached(params: &Params, name: &str) -> Tensor {
    params.var(name).as_tensor().detach()
}

/// The class token's rows `[N, D]` of tokens `x` `[N*T, D]`.
fn class_tokens(x: &Tensor, t: usize) -> Result<Tensor> {
    let d = x.dim(1)?;
    x.reshape(((), t, d))?
        .narrow(1, 0, 1)?
        .squeeze(1)?
        .contiguous()
}

/// The gradient `[N*T, D]` of all tokens from that of the class tokens `g` `[N, D]`.
fn spread_class_tokens(g: &Tensor, t: usize) -> Result<Tensor> {
    let (n, d) = g.dims2()?;
    let rest = Tensor::zeros((n, t - 1, d), g.dtype(), g.device())?;
    Tensor::cat(&[&g.unsqueeze(1)?, &rest], 1)?.reshape((n * t, d))
}

/// `(ls W, ls b)`: a linear layer followed by layer scale `ls`, as one linear layer.
fn fold_layer_scale(w: &Tensor, b: &Tensor, ls: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((w.broadcast_mul(&ls.unsqueeze(1)?)?, (b * ls)?))
}

impl BlockWeights {
    fn new(vit: &VisionTransformer, i: usize) -> Result<Self> {
        let params = &vit.parts.params;
        let prefix = format!("blocks.{i}");
        let pair = |layer: &str| {
            (
                detached(params, &format!("{prefix}.{layer}.weight")),
                detached(params, &format!("{prefix}.{layer}.bias")),
            )
        };
        let (mut proj, mut fc2) = (pair("attn.proj"), pair("mlp.fc2"));
        if vit.spec.layer_scale {
            let ls = |name: &str| detached(params, &format!("{prefix}.{name}.gamma"));
            proj = fold_layer_scale(&proj.0, &proj.1, &ls("ls1"))?;
            fc2 = fold_layer_scale(&fc2.0, &fc2.1, &ls("ls2"))?;
        }
        Ok(Self {
            norm1: pair("norm1"),
            qkv: pair("attn.qkv"),
            proj,
            norm2: pair("norm2"),
            fc1: pair("mlp.fc1"),
            fc2,
            prefix,
        })
    }
}

impl<'a> TapedPass<'a> {
    /// A pass over `vit`, recording for the backward when `record` is set.
    pub fn new(vit: &'a VisionTransformer, record: bool) -> Self {
        Self { vit, record }
    }

    fn params(&self) -> &Params {
        &self.vit.parts.params
    }

    /// Pooled features of `x` `[N, 3, H, W]`, and the tape (empty of blocks unless recording).
    pub fn run(&self, x: &Tensor) -> Result<(Tensor, Tape)> {
        let parts = &self.vit.parts;
        let first_trainable = if self.record {
            parts.groups.iter().position(|g| g.trainable)
        } else {
            None
        }
        .unwrap_or(parts.groups.len());
        let (n, d, p) = (x.dim(0)?, self.vit.spec.embed_dim, self.vit.spec.patch_size);
        let (y, patches) = stem_patches(
            x,
            &detached(self.params(), "patch_embed.proj.weight"),
            p,
            [0; 4],
        )?;
        let (_, gh, gw, _) = y.dims4()?;
        let t = 1 + gh * gw;
        let y = add_bias(&y, &detached(self.params(), "patch_embed.proj.bias"))?;
        let cls = detached(self.params(), "cls_token").broadcast_as((n, 1, d))?;
        let frozen = GroupMode {
            trainable: false,
            batch_stats: false,
        };
        let mut h = Tensor::cat(&[&cls, &y.reshape((n, gh * gw, d))?], 1)?
            .broadcast_add(&self.vit.pos_embed(gh, gw, frozen)?)?
            .reshape((n * t, d))?;
        let mut blocks = Vec::new();
        let depth = self.vit.spec.depth;
        for i in 0..depth {
            let keep = self.vit.block_group(i) >= first_trainable;
            let (out, record) = self.block(&h, n, t, i, keep, i + 1 == depth)?;
            if let Some(record) = record {
                blocks.push((i, record));
            }
            h = out;
        }
        let pooled = h;
        let (w, b) = (
            detached(self.params(), "norm.weight"),
            detached(self.params(), "norm.bias"),
        );
        let features = layer_norm(&pooled, &w, &b, LN_EPS)?;
        let tape = Tape {
            grid: (gh, gw),
            patches: (first_trainable == 0).then_some(patches),
            blocks,
            pooled,
        };
        Ok((features, tape))
    }

    /// Block `i` on `x` `[N*T, D]`, with its record when `keep` is set: all tokens `[N*T, D]`,
    /// or the class tokens `[N, D]` when `class_only` is set.
    fn block(
        &self,
        x: &Tensor,
        n: usize,
        t: usize,
        i: usize,
        keep: bool,
        class_only: bool,
    ) -> Result<(Tensor, Option<BlockRecord>)> {
        let w = BlockWeights::new(self.vit, i)?;
        let heads = self.vit.spec.num_heads;
        let normed1 = layer_norm(x, &w.norm1.0, &w.norm1.1, LN_EPS)?;
        let qkv = linear(&normed1, &w.qkv.0, &w.qkv.1, None)?;
        let rows = if class_only { 1 } else { t };
        let (heads_out, attention) = self_attention(&qkv, n, heads, rows, keep)?;
        let residual = if class_only {
            class_tokens(x, t)?
        } else {
            x.clone()
        };
        let mid = linear(&heads_out, &w.proj.0, &w.proj.1, Some(&residual))?;
        let normed2 = layer_norm(&mid, &w.norm2.0, &w.norm2.1, LN_EPS)?;
        let zero = Tensor::zeros(w.fc1.1.shape(), w.fc1.1.dtype(), x.device())?;
        let hidden = linear(&normed2, &w.fc1.0, &zero, None)?;
        let out = linear(
            &bias_gelu(&hidden, &w.fc1.1)?,
            &w.fc2.0,
            &w.fc2.1,
            Some(&mid),
        )?;
        let record = attention.map(|attention| BlockRecord {
            input: x.clone(),
            normed1,
            qkv,
            attention,
            heads: heads_out,
            mid,
            normed2,
            hidden,
        });
        Ok((out, record))
    }
}

/// Where the backward pass puts the gradients of trainable tensors.
struct Gradients<'a> {
    params: &'a Params,
    store: &'a mut GradStore,
}

impl Gradients<'_> {
    fn put(&mut self, name: &str, grad: Tensor) {
        self.store.insert(self.params.var(name).as_tensor(), grad);
    }

    /// The gradients of linear layer `prefix` (weight `[Out, In]`, bias `[Out]`) from its
    /// input rows and its output's gradient; with layer scale `ls` (`{ls}.gamma`) folded into
    /// it, those of the layer and of the scale.
    fn linear(
        &mut self,
        prefix: &str,
        input: &Tensor,
        grad: &Tensor,
        ls: Option<&str>,
    ) -> Result<()> {
        let (wname, bname) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let gw = product(&grad.t()?, input)?;
        let gb = sum_rows(grad)?;
        let Some(ls) = ls else {
            self.put(&wname, gw);
            self.put(&bname, gb);
            return Ok(());
        };
        let gamma_name = format!("{ls}.gamma");
        let (w, b, gamma) = (
            detached(self.params, &wname),
            detached(self.params, &bname),
            detached(self.params, &gamma_name),
        );
        let ggamma = ((&gw * &w)?.sum(1)? + (&gb * &b)?)?;
        self.put(&wname, gw.broadcast_mul(&gamma.unsqueeze(1)?)?);
        self.put(&bname, (gb * &gamma)?);
        self.put(&gamma_name, ggamma);
        Ok(())
    }

    /// The gradients of LayerNorm `prefix` at input `x`; returns the input's.
    fn layer_norm(
        &mut self,
        prefix: &str,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        trainable: bool,
    ) -> Result<Tensor> {
        let (gx, gw, gb) = layer_norm_backward(x, weight, grad, LN_EPS)?;
        if trainable {
            self.put(&format!("{prefix}.weight"), gw);
            self.put(&format!("{prefix}.bias"), gb);
        }
        Ok(gx)
    }
}

impl Tape {
    /// Gradients of every trainable tensor of `vit` from `grad`, the gradient of the pooled
    /// features, added to `grads`. Blocks before the first trainable group are not visited.
    pub fn backward(
        self,
        vit: &VisionTransformer,
        grad: &Tensor,
        grads: &mut GradStore,
    ) -> Result<()> {
        let parts = &vit.parts;
        let Some(first_trainable) = parts.groups.iter().position(|g| g.trainable) else {
            return Ok(());
        };
        let params = &parts.params;
        let mut out = Gradients {
            params,
            store: grads,
        };
        let last = parts.groups.len() - 1;
        let norm_weight = detached(params, "norm.weight");
        let gpooled = out.layer_norm(
            "norm",
            &self.pooled,
            &norm_weight,
            grad,
            parts.groups[last].trainable,
        )?;
        if first_trainable == last {
            return Ok(());
        }
        let mut g = gpooled;
        for (i, record) in self.blocks.into_iter().rev() {
            let trainable = parts.groups[vit.block_group(i)].trainable;
            g = block_backward(vit, &mut out, i, &record, &g, trainable)?;
        }
        if let Some(patches) = &self.patches {
            embedding_backward(vit, &mut out, patches, self.grid, &g)?;
        }
        Ok(())
    }
}

/// The backward of block `i` from the gradient `g` of its output (`[N*R, D]`, R its query rows):
/// puts its tensors' gradients when `trainable` and returns its input's `[N*T, D]`.
fn block_backward(
    vit: &VisionTransformer,
    out: &mut Gradients,
    i: usize,
    r: &BlockRecord,
    g: &Tensor,
    trainable: bool,
) -> Result<Tensor> {
    let w = BlockWeights::new(vit, i)?;
    let p = &w.prefix;
    let ls = |name| vit.spec.layer_scale.then(|| format!("{p}.{name}"));
    if trainable {
        let activation = bias_gelu(&r.hidden, &w.fc1.1)?;
        out.linear(
            &format!("{p}.mlp.fc2"),
            &activation,
            g,
            ls("ls2").as_deref(),
        )?;
    }
    let (ghidden, gfc1_bias) = bias_gelu_backward(&r.hidden, &w.fc1.1, &product(g, &w.fc2.0)?)?;
    if trainable {
        out.put(
            &format!("{p}.mlp.fc1.weight"),
            product(&ghidden.t()?, &r.normed2)?,
        );
        out.put(&format!("{p}.mlp.fc1.bias"), gfc1_bias);
    }
    let gnormed2 = product(&ghidden, &w.fc1.0)?;
    let gmid = (g + out.layer_norm(
        &format!("{p}.norm2"),
        &r.mid,
        &w.norm2.0,
        &gnormed2,
        trainable,
    )?)?;
    if trainable {
        out.linear(
            &format!("{p}.attn.proj"),
            &r.heads,
            &gmid,
            ls("ls1").as_deref(),
        )?;
    }
    let gqkv = self_attention_backward(&r.qkv, &r.attention, &product(&gmid, &w.proj.0)?)?;
    if trainable {
        out.linear(&format!("{p}.attn.qkv"), &r.normed1, &gqkv, None)?;
    }
    let gnormed1 = product(&gqkv, &w.qkv.0)?;
    let ginput = out.layer_norm(
        &format!("{p}.norm1"),
        &r.input,
        &w.norm1.0,
        &gnormed1,
        trainable,
    )?;
    let t = r.attention.dim(3)?;
    if gmid.dims() == ginput.dims() {
        gmid + ginput
    } else {
        spread_class_tokens(&gmid, t)? + ginput
    }
}

/// The gradients of the patch embedding, class token and position embeddings from the gradient
/// `g` `[N*T, D]` of the tokens entering the first block.
fn embedding_backward(
    vit: &VisionTransformer,
    out: &mut Gradients,
    patches: &Tensor,
    (gh, gw): (usize, usize),
    g: &Tensor,
) -> Result<()> {
    let d = vit.spec.embed_dim;
    let t = 1 + gh * gw;
    let g = g.reshape(((), t, d))?;
    let gtokens = g.sum_keepdim(0)?;
    out.put("cls_token", gtokens.narrow(1, 0, 1)?);
    let trainable = GroupMode {
        trainable: true,
        batch_stats: false,
    };
    let pos = vit.pos_embed(gh, gw, trainable)?;
    let pos_var = out.params.var("pos_embed").as_tensor().clone();
    let gpos = pos.mul(&gtokens)?.sum_all()?.backward()?;
    out.put(
        "pos_embed",
        gpos.get(&pos_var).expect("pos_embed's gradient").clone(),
    );
    let gpatches = g.narrow(1, 1, gh * gw)?.contiguous()?.reshape(((), d))?;
    let w = out
        .params
        .var("patch_embed.proj.weight")
        .as_tensor()
        .clone();
    out.put(
        "patch_embed.proj.weight",
        product(&gpatches.t()?, patches)?.reshape(w.shape())?,
    );
    out.put("patch_embed.proj.bias", sum_rows(&gpatches)?);
    Ok(())
}

/// [`super::Backbone::forward_taped`] of a ViT.
pub fn forward_boxed(
    vit: &VisionTransformer,
    x: &Tensor,
) -> Result<(Tensor, Box<dyn std::any::Any + Send>)> {
    let (features, tape) = TapedPass::new(vit, true).run(x)?;
    Ok((features, Box::new(tape)))
}

/// [`super::Backbone::backward_taped`] of a ViT, with a tape from [`forward_boxed`].
pub fn backward_boxed(
    vit: &VisionTransformer,
    tape: Box<dyn std::any::Any + Send>,
    grad: &Tensor,
    grads: &mut GradStore,
) -> Result<()> {
    super::own_tape::<Tape>(tape, "a ViT")?.backward(vit, grad, grads)
}
