//! Backbones in candle with timm's key names, their layer groups, the new classification head,
//! and the custom ops they use.

pub mod convnext;
pub mod convnext_tape;
pub mod efficientnet;
pub mod efficientnet_blocks;
pub mod efficientnet_tape;
pub mod head;
pub mod layers;
pub mod mobilenetv3;
pub mod ops;
pub mod params;
pub mod resnet;
pub mod resnet_tape;
pub mod vit;
pub mod vit_tape;

use crate::data::{Preprocess, PretrainedCfg};
use candle_core::{Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use head::Head;
pub use params::Params;

/// Architectures tltui can build, as timm names them (the MobileNets in every width and depth
/// variant of their families, and ConvNeXt, ViT and DeiT names outside this list: the checkpoint
/// sizes them).
pub const SUPPORTED: &[&str] = &[
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "tf_efficientnet_lite3",
    "tf_efficientnet_lite4",
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "resnet18",
    "resnet34",
    "resnet50",
    "convnext_atto",
    "convnext_femto",
    "convnext_pico",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_tiny_patch16_384",
    "vit_small_patch16_384",
    "vit_base_patch16_384",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "vit_small_patch14_dinov2",
    "vit_base_patch14_dinov2",
    "vit_large_patch14_dinov2",
    "mobilenetv1_100",
    "mobilenetv1_100h",
    "mobilenetv1_125",
    "mobilenetv2_035",
    "mobilenetv2_050",
    "mobilenetv2_075",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobilenetv2_110d",
    "mobilenetv2_120d",
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "mobilenetv3_large_150d",
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "tf_mobilenetv3_large_075",
    "tf_mobilenetv3_large_100",
    "tf_mobilenetv3_large_minimal_100",
    "tf_mobilenetv3_small_075",
    "tf_mobilenetv3_small_100",
    "tf_mobilenetv3_small_minimal_100",
];

/// The fields of a timm `config.json` that tltui reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: String,
    #[serde(default)]
    pub num_features: Option<usize>,
    pub pretrained_cfg: PretrainedCfg,
}

impl ModelConfig {
    /// Parses a `config.json`; a malformed file is an error naming it.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a usable timm config.json: {e}", path.display())
        })
    }

    /// This config at an input side of `image_size` pixels (0 keeps the backbone's own), with
    /// the eval transform for it: the one place a size override reaches both the preprocessing
    /// and the model, which reads `pretrained_cfg.input_size`.
    pub fn at_image_size(mut self, image_size: u32) -> anyhow::Result<(Self, Preprocess)> {
        if image_size > 0 {
            let n = image_size as usize;
            self.pretrained_cfg.input_size = [3, n, n];
        }
        let prep = Preprocess::from_cfg(&self.pretrained_cfg, 0).map_err(anyhow::Error::msg)?;
        Ok((self, prep))
    }

    /// The input side a run on `device` uses, for [`crate::data::Preprocess::from_cfg`]:
    /// `requested` (`data.image_size`, `--image-size`) when non-zero, otherwise 0 for the native
    /// size, except DINOv2 on the CPU, which defaults to 224 px (its native 518 px costs about
    /// six times as much); the message says so when that default applies.
    pub fn image_size(&self, requested: u32, device: &Device) -> (u32, Option<String>) {
        if requested == 0 && device.is_cpu() && vit::is_dinov2(&self.architecture) {
            let native = self.pretrained_cfg.input_size[1];
            let note = format!(
                "{} runs at 224 px on the CPU (native {native} px; set data.image_size or \
                 --image-size to change it)",
                self.architecture
            );
            return (224, Some(note));
        }
        (requested, None)
    }
}

/// A named set of parameters that is frozen or trained as one: the stem, each stage, the head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerGroup {
    pub name: String,
    /// Key prefixes (timm names) of the group's tensors.
    #[serde(skip)]
    pub prefixes: Vec<String>,
    /// Number of trainable values (BatchNorm running statistics excluded).
    pub params: usize,
    pub trainable: bool,
}

/// What one group's layers do during a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMode {
    /// Gradients flow into the group's weights.
    pub trainable: bool,
    /// BatchNorm normalises with batch statistics and updates its running statistics.
    pub batch_stats: bool,
}

/// State every backbone shares: its parameters, its layer groups and their modes.
pub struct BackboneParts {
    pub architecture: String,
    pub params: Params,
    pub groups: Vec<LayerGroup>,
    /// Train BatchNorm statistics in trainable groups (otherwise inference mode everywhere).
    pub train_batchnorm: bool,
    pub num_features: usize,
}

impl BackboneParts {
    fn new(
        architecture: &str,
        params: Params,
        groups: Vec<(String, Vec<String>)>,
        num_features: usize,
    ) -> Self {
        let groups = groups
            .into_iter()
            .map(|(name, prefixes)| LayerGroup {
                params: params.count(|k| prefixes.iter().any(|p| k.starts_with(p.as_str()))),
                name,
                prefixes,
                trainable: false,
            })
            .collect();
        Self {
            architecture: architecture.to_string(),
            params,
            groups,
            train_batchnorm: false,
            num_features,
        }
    }

    /// The forward-pass mode of group `i`; `training` is whether this pass trains.
    pub fn mode(&self, i: usize, training: bool) -> GroupMode {
        let trainable = training && self.groups[i].trainable;
        GroupMode {
            trainable,
            batch_stats: trainable && self.train_batchnorm,
        }
    }
}

/// A backbone as the concrete model of its family: what a reader of the model's structure (the
/// ONNX writer) matches on, so that a new family is one more variant that every reader must
/// handle.
pub enum Architecture<'a> {
    EfficientNet(&'a efficientnet::EfficientNet),
    MobileNetV3(&'a mobilenetv3::MobileNetV3),
    ResNet(&'a resnet::ResNet),
    ConvNeXt(&'a convnext::ConvNeXt),
    Vit(&'a vit::VisionTransformer),
}

/// A pretrained feature extractor: input `[N, 3, H, W]` to pooled features `[N, C]`.
pub trait Backbone: Send {
    /// The shared state.
    fn parts(&self) -> &BackboneParts;
    /// The shared state, mutably.
    fn parts_mut(&mut self) -> &mut BackboneParts;
    /// Pooled features; `training` lets trainable groups record gradients.
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor>;

    /// The architecture behind this backbone, for code that reads a model's structure (the
    /// ONNX writer).
    fn architecture(&self) -> Architecture<'_>;

    /// Pooled features of a training pass without a candle graph, and a tape for
    /// [`Backbone::backward_taped`], when the backbone has a hand-written backward for its
    /// current mode (faster than candle's graph); `None` otherwise.
    fn forward_taped(
        &self,
        _x: &Tensor,
    ) -> Option<Result<(Tensor, Box<dyn std::any::Any + Send>)>> {
        None
    }

    /// Adds the gradients of the trainable tensors to `grads`, from the gradient of the pooled
    /// features of a [`Backbone::forward_taped`] pass.
    fn backward_taped(
        &self,
        _tape: Box<dyn std::any::Any + Send>,
        _grad: &Tensor,
        _grads: &mut candle_core::backprop::GradStore,
    ) -> Result<()> {
        Err(candle_core::Error::Msg(
            "this backbone has no hand-written backward".into(),
        ))
    }

    /// Freezes or unfreezes group `i`.
    fn set_trainable(&mut self, i: usize, trainable: bool) {
        self.parts_mut().groups[i].trainable = trainable;
    }

    /// Variables the optimiser updates: weights of trainable groups, never running statistics.
    fn trainable_vars(&self) -> Vec<(usize, Var)> {
        let parts = self.parts();
        parts
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.trainable)
            .flat_map(|(i, g)| {
                parts
                    .params
                    .matching(|k| {
                        g.prefixes.iter().any(|p| k.starts_with(p.as_str()))
                            && !params::is_buffer(k)
                    })
                    .map(move |v| (i, v))
            })
            .collect()
    }
}

/// The tape of a [`Backbone::forward_taped`] pass as the backbone's own tape type `T`; a tape of
/// another backbone is an error naming `backbone` ("a ViT").
pub(crate) fn own_tape<T: 'static>(
    tape: Box<dyn std::any::Any + Send>,
    backbone: &str,
) -> Result<Box<T>> {
    tape.downcast::<T>()
        .map_err(|_| candle_core::Error::Msg(format!("not {backbone} tape")))
}

/// Pooled features of a training pass: through the backbone's hand-written backward when it has
/// one for its current mode (and `use_tape` allows it, and the input is on the CPU, where the
/// hand-written kernels run), through candle's graph otherwise.
pub struct TrainingPass {
    pub features: Tensor,
    tape: Option<(Var, Box<dyn std::any::Any + Send>)>,
}

impl TrainingPass {
    /// Runs the forward pass of `x`.
    pub fn run(backbone: &dyn Backbone, x: &Tensor, use_tape: bool) -> Result<Self> {
        let taped = (use_tape && x.device().is_cpu())
            .then(|| backbone.forward_taped(x))
            .flatten();
        if let Some(pass) = taped {
            let (features, tape) = pass?;
            let leaf = Var::from_tensor(&features)?;
            return Ok(Self {
                features: leaf.as_tensor().clone(),
                tape: Some((leaf, tape)),
            });
        }
        Ok(Self {
            features: backbone.forward(x, true)?,
            tape: None,
        })
    }

    /// Completes `grads` (from the loss's backward) with the backbone's gradients; candle's
    /// graph already put them there when no tape was used.
    pub fn backward(
        self,
        backbone: &dyn Backbone,
        grads: &mut candle_core::backprop::GradStore,
    ) -> Result<()> {
        if let Some((leaf, tape)) = self.tape {
            if let Some(g) = grads.get(leaf.as_tensor()).cloned() {
                backbone.backward_taped(tape, &g, grads)?;
            }
        }
        Ok(())
    }
}

/// Builds the backbone named by `config.architecture` from timm-named `params`.
pub fn build_backbone(config: &ModelConfig, params: Params) -> anyhow::Result<Box<dyn Backbone>> {
    let arch = config.architecture.as_str();
    if let Some(spec) = efficientnet::EfficientNetSpec::for_arch(arch) {
        return Ok(Box::new(efficientnet::EfficientNet::new(
            arch, spec, params,
        )?));
    }
    if let Some(spec) = mobilenetv3::MobileNetV3Spec::for_arch(arch) {
        return Ok(Box::new(mobilenetv3::MobileNetV3::new(arch, spec, params)?));
    }
    if let Some(spec) = resnet::ResNetSpec::for_arch(arch) {
        return Ok(Box::new(resnet::ResNet::new(arch, spec, params)?));
    }
    let convnext = convnext::ConvNeXtSpec::for_arch(arch).or_else(|| {
        arch.starts_with("convnext_")
            .then(|| convnext::ConvNeXtSpec::from_params(&params))
            .flatten()
    });
    if let Some(spec) = convnext {
        return Ok(Box::new(convnext::ConvNeXt::new(arch, spec, params)?));
    }
    let vit = match vit::VitSpec::for_arch(arch) {
        Some(spec) => Some(spec),
        None if vit::VitSpec::is_vit_name(arch) => Some(vit::VitSpec::from_params(arch, &params)?),
        None => None,
    };
    if let Some(spec) = vit {
        return Ok(Box::new(vit::VisionTransformer::new(arch, spec, params)?));
    }
    anyhow::bail!(
        "unsupported architecture {arch:?}; supported: {}",
        SUPPORTED.join(", ")
    )
}
