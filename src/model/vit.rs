//! Vision Transformers as timm builds them (`timm/models/vision_transformer.py`): ViT, DeiT and
//! DINOv2. Patch embedding, class token, absolute position embeddings, pre-norm blocks
//! (attention and GELU MLP, with layer scale in DINOv2), the final `norm`; the pooled features are
//! the class token after `norm` (timm's `global_pool="token"`).
//!
//! Width, depth and heads come from a table for the names listed in [`super::SUPPORTED`], or,
//! for other `vit_*`, `deit_*` and `deit3_*` names, from the checkpoint's keys and shapes (the
//! heads, which the weights do not record, from the name's size word and the width as timm's
//! tables give them, else 64 wide). The MLP's hidden width always comes from the checkpoint.
//! Every tensor of the checkpoint is checked against them, and weights of a variant this model
//! does not compute (register or distillation tokens, average pooling, CLIP's pre-norm, a gated
//! MLP, ...) are refused.
//!
//! The model runs at any input size: when the patch grid differs from the one the position
//! embeddings were trained for, they are resampled as timm's `resample_abs_pos_embed` does
//! (antialiased bicubic on the grid, the class token's embedding kept), inside the graph, so that
//! fine-tuning trains the stored embeddings.
//!
//! On the CPU, inference and taped training passes run without a candle graph
//! ([`super::vit_tape`]).

use super::layers::{input_conv_nhwc, weight};
use super::ops::batched_matmul::batched_matmul;
use super::ops::channel_affine::{add_bias, scale_channels};
use super::ops::gelu::bias_gelu;
use super::ops::layer_norm::layer_norm;
use super::ops::softmax::softmax_last_dim;
use super::vit_tape::{self, TapedPass};
use super::{Backbone, BackboneParts, GroupMode, Params};
use candle_core::{Device, Result, Tensor};

/// LayerNorm epsilon of every timm ViT.
pub(crate) const LN_EPS: f32 = 1e-6;

/// Block groups for freezing and partial unfreezing.
const BLOCK_GROUPS: usize = 6;

/// Width, depth and heads of a timm ViT, its patch size and its native input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitSpec {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub patch_size: usize,
    pub img_size: usize,
    /// Blocks scale their branches by `ls1.gamma` / `ls2.gamma` (DINOv2, DeiT III).
    pub layer_scale: bool,
}

impl VitSpec {
    /// The spec of a timm architecture name, if it is a supported ViT.
    pub fn for_arch(arch: &str) -> Option<Self> {
        let (width, patch_size, img_size) = match arch {
            "vit_tiny_patch16_224" | "deit_tiny_patch16_224" => ("tiny", 16, 224),
            "vit_small_patch16_224" | "deit_small_patch16_224" => ("small", 16, 224),
            "vit_base_patch16_224" | "deit_base_patch16_224" => ("base", 16, 224),
            "vit_tiny_patch16_384" => ("tiny", 16, 384),
            "vit_small_patch16_384" => ("small", 16, 384),
            "vit_base_patch16_384" => ("base", 16, 384),
            "vit_small_patch14_dinov2" => ("small", 14, 518),
            "vit_base_patch14_dinov2" => ("base", 14, 518),
            "vit_large_patch14_dinov2" => ("large", 14, 518),
            _ => return None,
        };
        let (embed_dim, depth, num_heads) = match width {
            "tiny" => (192, 12, 3),
            "small" => (384, 12, 6),
            "base" => (768, 12, 12),
            _ => (1024, 24, 16),
        };
        Some(Self {
            embed_dim,
            depth,
            num_heads,
            patch_size,
            img_size,
            layer_scale: is_dinov2(arch),
        })
    }

    /// Whether `arch` names a ViT family that [`VitSpec::from_params`] sizes (`vit_*`, `deit_*`,
    /// `deit3_*`).
    pub fn is_vit_name(arch: &str) -> bool {
        ["vit_", "deit_", "deit3_"]
            .iter()
            .any(|family| arch.starts_with(family))
    }

    /// The spec read off a checkpoint, for ViT names outside the table (`vit_large_patch16_224`,
    /// a retrained or pruned variant): the width from `cls_token` (or the patch embedding), the
    /// depth from the `blocks.{i}.` present, the patch size from the patch embedding's kernel,
    /// layer scale from `blocks.0.ls1.gamma`, the native input from the name's `_NNN` part (518
    /// for `*_dinov2`, else the position grid times the patch, else timm's default 224). The
    /// heads are not in the weights: see `num_heads`. Variants the model does not compute are
    /// refused by [`VisionTransformer::new`].
    pub fn from_params(arch: &str, params: &Params) -> anyhow::Result<Self> {
        let Some(&[embed_dim, _, kh, kw]) = params.dims("patch_embed.proj.weight") else {
            anyhow::bail!(
                "{arch}: cannot size a ViT from these weights: no 4-D \"patch_embed.proj.weight\""
            );
        };
        let embed_dim = match params.dims("cls_token") {
            Some(&[1, 1, d]) => d,
            _ => embed_dim,
        };
        if kh != kw {
            anyhow::bail!("{arch}: the patch embedding's kernel is {kh}x{kw}, not square");
        }
        let depth = (0..)
            .take_while(|i| params.has_prefix(&format!("blocks.{i}.")))
            .count();
        if depth == 0 {
            anyhow::bail!("{arch}: cannot size a ViT from these weights: no blocks.0.* tensors");
        }
        let pos_side = match params.dims("pos_embed") {
            Some(&[1, t, _]) if t > 1 => Some(((t - 1) as f64).sqrt().round() as usize * kh),
            _ => None,
        };
        let img_size = arch
            .rsplit('_')
            .find_map(|part| part.parse().ok())
            .or(is_dinov2(arch).then_some(518))
            .or(pos_side)
            .unwrap_or(224);
        Ok(Self {
            embed_dim,
            depth,
            num_heads: num_heads(arch, embed_dim)?,
            patch_size: kh,
            img_size,
            layer_scale: params.dims("blocks.0.ls1.gamma").is_some(),
        })
    }
}

/// The attention heads of a ViT named `arch` of width `embed_dim`, which its weights do not
/// record. timm's size words at their usual widths have timm's heads (tiny 192: 3, small 384: 6,
/// base 768: 12, large 1024: 16, huge 1280: 16, giant 1408: 16, DINOv2's giant 1536: 24,
/// gigantic 1664: 16); any other name or width gets heads 64 wide (`embed_dim / 64`), the head
/// width of every timm ViT but huge, giant and gigantic, rather than a size word's count that
/// might not divide the width.
fn num_heads(arch: &str, embed_dim: usize) -> anyhow::Result<usize> {
    const SIZES: [(&str, usize, usize); 8] = [
        ("tiny", 192, 3),
        ("small", 384, 6),
        ("base", 768, 12),
        ("large", 1024, 16),
        ("huge", 1280, 16),
        ("giant", 1408, 16),
        ("giant", 1536, 24),
        ("gigantic", 1664, 16),
    ];
    let words: Vec<&str> = arch.split('_').collect();
    if let Some(&(_, _, heads)) = SIZES
        .iter()
        .find(|(word, d, _)| *d == embed_dim && words.contains(word))
    {
        return Ok(heads);
    }
    if !embed_dim.is_multiple_of(64) {
        anyhow::bail!(
            "{arch}: cannot tell the attention heads of a width-{embed_dim} ViT (not a width \
             timm gives its size word, nor a multiple of 64)"
        );
    }
    Ok(embed_dim / 64)
}

/// Whether `arch` is a DINOv2 model (native input 518 px).
pub fn is_dinov2(arch: &str) -> bool {
    arch.ends_with("_dinov2")
}

/// A ViT backbone.
pub struct VisionTransformer {
    pub(crate) parts: BackboneParts,
    pub(crate) spec: VitSpec,
    /// Side of the patch grid the stored position embeddings cover.
    pos_grid: usize,
    /// Blocks per layer group.
    per_group: usize,
}

/// Refuses, naming the reason, weights of a timm ViT variant that this model would compute
/// wrongly and that shows in tensors it would otherwise not check or read.
fn refuse_variants(arch: &str, params: &Params) -> anyhow::Result<()> {
    let gated = params.has_prefix("blocks.0.mlp.fc1_g.")
        || matches!(
            (params.dims("blocks.0.mlp.fc1.weight"), params.dims("blocks.0.mlp.fc2.weight")),
            (Some(&[h1, _]), Some(&[_, h2])) if h1 == 2 * h2
        );
    let variants = [
        (
            params.has_prefix("reg_token"),
            "register tokens (reg_token, as in timm's *_reg4_dinov2)",
        ),
        (
            params.has_prefix("dist_token"),
            "a distillation token (dist_token, as in DeiT's *_distilled_*)",
        ),
        (
            params.has_prefix("fc_norm."),
            "fc_norm (a ViT that pools by averaging its patch tokens, global_pool=avg)",
        ),
        (
            params.has_prefix("norm_pre."),
            "norm_pre (a norm before the blocks, CLIP's pre_norm)",
        ),
        (gated, "a gated MLP (SwiGLU, as in DINOv2's giant)"),
    ];
    if let Some((_, what)) = variants.iter().find(|(present, _)| *present) {
        anyhow::bail!(
            "{arch}: weights with {what} are not supported: this ViT does not compute it"
        );
    }
    Ok(())
}

/// Why a ViT variant lacks tensor `name`, when its absence marks one this model does not compute.
fn missing_reason(name: &str) -> Option<&'static str> {
    if name == "cls_token" {
        Some("no class token (timm's class_token=False, a ViT pooled by averaging or attention)")
    } else if name.ends_with(".attn.qkv.bias") {
        Some("the attention's qkv projection has no bias (timm's qkv_bias=False)")
    } else {
        None
    }
}

impl VisionTransformer {
    /// Builds `arch` from `params`, checking every tensor it needs. The patch size is read from
    /// the patch embedding, the position grid from `pos_embed` and the MLP's hidden width from
    /// `blocks.0.mlp.fc1.weight` when present (4x the width otherwise) and checked in every
    /// block; the classifier (`head.*`) and DINOv2's `mask_token` are dropped. Weights of a
    /// variant this model would compute wrongly are refused, naming the reason: register or
    /// distillation tokens, no class token, `fc_norm`, `norm_pre`, a gated MLP, qkv without
    /// bias, `pos_embed` without the class token's slot, and any other tensor it would not read.
    pub fn new(arch: &str, spec: VitSpec, params: Params) -> anyhow::Result<Self> {
        refuse_variants(arch, &params)?;
        let mut spec = spec;
        if let Some(&[_, _, kh, kw]) = params.dims("patch_embed.proj.weight") {
            if kh == kw {
                spec.patch_size = kh;
            }
        }
        let (d, p) = (spec.embed_dim, spec.patch_size);
        let pos_grid = match params.dims("pos_embed") {
            Some(&[1, t, _]) if t > 1 => {
                let g = ((t - 1) as f64).sqrt().round() as usize;
                let side = (t as f64).sqrt().round() as usize;
                if side * side == t {
                    anyhow::bail!(
                        "{arch}: pos_embed has {t} tokens, a {side}x{side} patch grid without the \
                         class token's slot (timm's no_embed_class, as in DeiT III): not supported"
                    );
                }
                if g * g + 1 != t {
                    anyhow::bail!(
                        "pos_embed has {t} tokens: not a class token and a square patch grid"
                    );
                }
                g
            }
            _ => spec.img_size / p,
        };
        let hidden = match params.dims("blocks.0.mlp.fc1.weight") {
            Some(&[h, _]) => h,
            _ => 4 * d,
        };
        let mut needed: Vec<(String, Vec<usize>)> = vec![
            ("patch_embed.proj.weight".into(), vec![d, 3, p, p]),
            ("patch_embed.proj.bias".into(), vec![d]),
            ("cls_token".into(), vec![1, 1, d]),
            ("pos_embed".into(), vec![1, pos_grid * pos_grid + 1, d]),
        ];
        for i in 0..spec.depth {
            let mut block = vec![
                ("norm1.weight", vec![d]),
                ("norm1.bias", vec![d]),
                ("attn.qkv.weight", vec![3 * d, d]),
                ("attn.qkv.bias", vec![3 * d]),
                ("attn.proj.weight", vec![d, d]),
                ("attn.proj.bias", vec![d]),
                ("norm2.weight", vec![d]),
                ("norm2.bias", vec![d]),
                ("mlp.fc1.weight", vec![hidden, d]),
                ("mlp.fc1.bias", vec![hidden]),
                ("mlp.fc2.weight", vec![d, hidden]),
                ("mlp.fc2.bias", vec![d]),
            ];
            if spec.layer_scale {
                block.extend([("ls1.gamma", vec![d]), ("ls2.gamma", vec![d])]);
            }
            needed.extend(
                block
                    .into_iter()
                    .map(|(name, shape)| (format!("blocks.{i}.{name}"), shape)),
            );
        }
        needed.extend([
            ("norm.weight".into(), vec![d]),
            ("norm.bias".into(), vec![d]),
        ]);
        for (name, shape) in &needed {
            if let (None, Some(reason)) = (params.dims(name), missing_reason(name)) {
                anyhow::bail!(
                    "{arch}: {reason}: weights lack tensor {name:?} (expected shape {shape:?})"
                );
            }
            params.get(name, shape)?;
        }
        let read: std::collections::HashSet<&str> =
            needed.iter().map(|(n, _)| n.as_str()).collect();
        let unread: Vec<&str> = params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !read.contains(k) && !k.starts_with("head.") && *k != "mask_token")
            .collect();
        if let Some(first) = unread.first() {
            anyhow::bail!(
                "{arch}: the weights hold {} tensor(s) this ViT would not read (from a variant it \
                 does not compute), first {first:?}",
                unread.len()
            );
        }

        let mut groups = vec![(
            "patch_embed".to_string(),
            vec![
                "patch_embed.".to_string(),
                "cls_token".to_string(),
                "pos_embed".to_string(),
            ],
        )];
        let per_group = spec.depth.div_ceil(BLOCK_GROUPS);
        for start in (0..spec.depth).step_by(per_group) {
            let end = (start + per_group).min(spec.depth);
            groups.push((
                format!("blocks.{start}-{}", end - 1),
                (start..end).map(|i| format!("blocks.{i}.")).collect(),
            ));
        }
        groups.push(("norm".to_string(), vec!["norm.".to_string()]));
        let mut params = params;
        params.retain(|k| read.contains(k));
        Ok(Self {
            parts: BackboneParts::new(arch, params, groups, d),
            spec,
            pos_grid,
            per_group,
        })
    }

    fn w(&self, name: &str, mode: GroupMode) -> Tensor {
        weight(&self.parts.params, name, mode)
    }

    /// `x @ weight^T` of rows `x` `[M, In]` with the `nn.Linear` at `prefix`, and its bias.
    fn linear_parts(&self, x: &Tensor, prefix: &str, mode: GroupMode) -> Result<(Tensor, Tensor)> {
        let w = self.w(&format!("{prefix}.weight"), mode);
        Ok((x.matmul(&w.t()?)?, self.w(&format!("{prefix}.bias"), mode)))
    }

    /// `x @ weight^T + bias` of rows `x` `[M, In]` with the `nn.Linear` at `prefix`.
    fn linear(&self, x: &Tensor, prefix: &str, mode: GroupMode) -> Result<Tensor> {
        let (y, b) = self.linear_parts(x, prefix, mode)?;
        add_bias(&y, &b)
    }

    fn norm(&self, x: &Tensor, prefix: &str, mode: GroupMode) -> Result<Tensor> {
        let w = self.w(&format!("{prefix}.weight"), mode);
        let b = self.w(&format!("{prefix}.bias"), mode);
        layer_norm(x, &w, &b, LN_EPS)
    }

    /// The block branch `h` scaled by layer scale `ls` (DINOv2), or unchanged.
    fn scaled(&self, h: Tensor, prefix: &str, ls: &str, mode: GroupMode) -> Result<Tensor> {
        if self.spec.layer_scale {
            scale_channels(&h, &self.w(&format!("{prefix}.{ls}.gamma"), mode))
        } else {
            Ok(h)
        }
    }

    /// Multi-head self-attention of `x` `[N*T, D]` (`n` images of `t` tokens).
    fn attention(
        &self,
        x: &Tensor,
        n: usize,
        t: usize,
        prefix: &str,
        mode: GroupMode,
    ) -> Result<Tensor> {
        let (d, heads) = (self.spec.embed_dim, self.spec.num_heads);
        let hd = d / heads;
        let qkv = self
            .linear(x, &format!("{prefix}.attn.qkv"), mode)?
            .reshape((n, t, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        // Each of q, k, v as [N * heads, T, head dim].
        let part = |i| qkv.get(i)?.contiguous()?.reshape((n * heads, t, hd));
        let q = (part(0)? * (hd as f64).powf(-0.5))?;
        let (k, v) = (part(1)?, part(2)?);
        let attn = softmax_last_dim(&batched_matmul(&q, &k.transpose(1, 2)?)?)?;
        let o = batched_matmul(&attn, &v)?
            .reshape((n, heads, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n * t, d))?;
        self.linear(&o, &format!("{prefix}.attn.proj"), mode)
    }

    /// One pre-norm block on `x` `[N*T, D]`.
    fn block(&self, x: &Tensor, n: usize, t: usize, i: usize, mode: GroupMode) -> Result<Tensor> {
        let p = format!("blocks.{i}");
        let h = self.norm(x, &format!("{p}.norm1"), mode)?;
        let h = self.attention(&h, n, t, &p, mode)?;
        let x = (x + self.scaled(h, &p, "ls1", mode)?)?;
        let h = self.norm(&x, &format!("{p}.norm2"), mode)?;
        let (h, b) = self.linear_parts(&h, &format!("{p}.mlp.fc1"), mode)?;
        let h = bias_gelu(&h, &b)?;
        let h = self.linear(&h, &format!("{p}.mlp.fc2"), mode)?;
        x + self.scaled(h, &p, "ls2", mode)?
    }

    /// The layer group of block `i`.
    pub(crate) fn block_group(&self, i: usize) -> usize {
        1 + i / self.per_group
    }

    /// Position embeddings `[1, 1 + gh*gw, D]` for a `gh` x `gw` patch grid.
    pub(crate) fn pos_embed(&self, gh: usize, gw: usize, mode: GroupMode) -> Result<Tensor> {
        let pos = self.w("pos_embed", mode);
        let g = self.pos_grid;
        if (gh, gw) == (g, g) {
            return Ok(pos);
        }
        resample_abs_pos_embed(&pos, g, (gh, gw))
    }
}

impl Backbone for VisionTransformer {
    fn parts(&self) -> &BackboneParts {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut BackboneParts {
        &mut self.parts
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        if !training && x.device().is_cpu() {
            return Ok(TapedPass::new(self, false).run(x)?.0);
        }
        let (n, d, p) = (x.dim(0)?, self.spec.embed_dim, self.spec.patch_size);
        let mode = self.parts.mode(0, training);
        let patches = add_bias(
            &input_conv_nhwc(x, &self.w("patch_embed.proj.weight", mode), p, [0; 4])?,
            &self.w("patch_embed.proj.bias", mode),
        )?;
        let (_, gh, gw, _) = patches.dims4()?;
        let t = 1 + gh * gw;
        let cls = self.w("cls_token", mode).broadcast_as((n, 1, d))?;
        let mut h = Tensor::cat(&[&cls, &patches.reshape((n, gh * gw, d))?], 1)?
            .broadcast_add(&self.pos_embed(gh, gw, mode)?)?
            .reshape((n * t, d))?;
        for i in 0..self.spec.depth {
            let mode = self.parts.mode(self.block_group(i), training);
            h = self.block(&h, n, t, i, mode)?;
        }
        let last = self.parts.groups.len() - 1;
        let cls = h.reshape((n, t, d))?.narrow(1, 0, 1)?.squeeze(1)?;
        self.norm(&cls, "norm", self.parts.mode(last, training))
    }

    fn architecture(&self) -> super::Architecture<'_> {
        super::Architecture::Vit(self)
    }

    fn forward_taped(&self, x: &Tensor) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        Some(vit_tape::forward_boxed(self, x))
    }

    fn backward_taped(
        &self,
        tape: Box<dyn std::any::Any + Send>,
        grad: &Tensor,
        grads: &mut candle_core::backprop::GradStore,
    ) -> Result<()> {
        vit_tape::backward_boxed(self, tape, grad, grads)
    }
}

/// timm's `resample_abs_pos_embed`: the grid part of `pos` `[1, 1 + g*g, D]` resampled to
/// `gh` x `gw` as `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` does, the
/// class token's embedding kept. Built from candle operations, so gradients reach `pos`.
pub fn resample_abs_pos_embed(pos: &Tensor, g: usize, (gh, gw): (usize, usize)) -> Result<Tensor> {
    let d = pos.dim(2)?;
    let dev = pos.device();
    let prefix = pos.narrow(1, 0, 1)?;
    let grid = pos.narrow(1, 1, g * g)?.reshape((g, g * d))?;
    // Rows, then columns (with the axes swapped so each pass is one matrix product).
    let rows = aa_bicubic_matrix(g, gh, dev)?
        .matmul(&grid)?
        .reshape((gh, g, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((g, gh * d))?;
    let both = aa_bicubic_matrix(g, gw, dev)?
        .matmul(&rows)?
        .reshape((gw, gh, d))?
        .transpose(0, 1)?
        .reshape((1, gh * gw, d))?;
    Tensor::cat(&[&prefix, &both], 1)
}

/// PIL's and PyTorch's antialiased bicubic kernel (`a = -0.5`).
fn aa_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// The `[out, in]` matrix of PyTorch's antialiased bicubic resampling of one axis
/// (`_compute_indices_weights_aa`): output `i` is centred at `scale * (i + 0.5)` with
/// `scale = in / out`; when shrinking, the kernel is widened by `scale` (its support is
/// `2 * scale` input samples), and each row's weights are normalised to sum to one.
fn aa_bicubic_matrix(input: usize, output: usize, dev: &Device) -> Result<Tensor> {
    let scale = input as f64 / output as f64;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // Truncation toward zero, as PyTorch's integer cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let w: Vec<f64> = (xmin..xmax)
            .map(|j| aa_cubic((j as f64 - center + 0.5) * invscale))
            .collect();
        let total: f64 = w.iter().sum();
        for (j, wj) in (xmin..xmax).zip(w) {
            m[i * input + j] = if total != 0.0 { wj / total } else { 0.0 } as f32;
        }
    }
    Tensor::from_vec(m, (output, input), dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(input: usize, output: usize) -> Vec<Vec<f32>> {
        aa_bicubic_matrix(input, output, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    #[test]
    fn heads_follow_timm_by_size_word_and_width() {
        let heads = |arch, d| num_heads(arch, d).unwrap();
        assert_eq!(heads("vit_tiny_patch16_224", 192), 3);
        assert_eq!(heads("vit_huge_patch14_224", 1280), 16);
        assert_eq!(heads("deit3_huge_patch14_224", 1280), 16);
        assert_eq!(heads("vit_giant_patch14_224", 1408), 16);
        assert_eq!(heads("vit_giant_patch14_dinov2", 1536), 24);
        // timm's ViT-B+ is 896 wide with 14 heads of 64; unnamed widths get 64-wide heads too.
        assert_eq!(heads("vit_base_patch16_plus_240", 896), 14);
        assert_eq!(heads("vit_custom", 1280), 20);
        assert!(num_heads("vit_custom", 200).is_err());
    }

    #[test]
    fn halving_widens_the_kernel() {
        // Output 0 of 4 -> 2 is centred at 1.0 with support 4: taps at -0.25, 0.25, 0.75, 1.25
        // of the widened kernel, cubic(.) = 0.8671875, 0.8671875, 0.2265625, -0.0703125, over
        // their sum 1.890625.
        let m = matrix(4, 2);
        let want = [0.458_677_7, 0.458_677_7, 0.119_834_7, -0.037_190_08];
        for (got, want) in m[0].iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", m[0]);
        }
        let mirrored: Vec<f32> = m[1].iter().rev().copied().collect();
        assert_eq!(m[0], mirrored);
    }

    #[test]
    fn same_size_is_the_identity_and_rows_sum_to_one() {
        let m = matrix(5, 5);
        for (i, row) in m.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-6);
            }
        }
        for row in matrix(37, 16).iter().chain(&matrix(14, 24)) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn resampling_keeps_the_class_token_and_a_constant_grid() {
        let d = 3;
        let mut v = vec![7f32; d];
        v.extend(std::iter::repeat_n(2f32, 4 * 4 * d));
        let pos = Tensor::from_vec(v, (1, 17, d), &Device::Cpu).unwrap();
        let out = resample_abs_pos_embed(&pos, 4, (3, 5)).unwrap();
        assert_eq!(out.dims(), &[1, 16, d]);
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert!(out[..d].iter().all(|&x| x == 7.0));
        assert!(out[d..].iter().all(|x| (x - 2.0).abs() < 1e-5));
    }
}
