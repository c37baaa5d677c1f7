//! `tltui export --format onnx`: a trained classifier as one ONNX file (opset 17) that carries
//! its class names and preprocessing in `metadata_props`, optionally with the preprocessing
//! itself in the graph (uint8 RGB pixels in, so a deployer cannot normalise or order channels
//! differently). Each architecture family writes its graph beside the others here, mirroring
//! the model files: the graph reads the model's own parameter tensors by their timm names.

pub mod convnext;
pub mod efficientnet;
pub mod graph;
pub mod proto;
pub mod resnet;
pub mod vit;

pub use graph::{Graph, Value};

use crate::data::{Preprocess, PretrainedCfg};
use crate::model::{Architecture, Backbone, Head};
use graph::Attr;
use prost::Message;
use proto::{
    GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, ValueInfoProto, FLOAT,
    UINT8,
};

/// The operator set the graphs are written in (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// The ONNX IR version of opset 17.
const IR_VERSION: i64 = 8;

/// The file `export` writes and `push --onnx` uploads.
pub const FILE_NAME: &str = "model.onnx";

/// What the exported graph adds around the classifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// A second output, `probabilities`: the softmax of `logits` (multi-label: the sigmoid of
    /// each).
    pub softmax: bool,
    /// The input is `pixels`, uint8 RGB `[N, H, W, 3]` already resized and cropped to the input
    /// size; scaling, normalisation and the channel reordering run in the graph.
    pub with_preprocessing: bool,
}

impl Options {
    /// What `push --onnx` uploads: the preprocessing inside and a `probabilities` output.
    pub const DEPLOY: Options = Options {
        softmax: true,
        with_preprocessing: true,
    };
}

/// The model card's section on running the pushed `model.onnx` of `repo` in onnxruntime.
pub fn card_section(repo: &str) -> String {
    format!(
        "\n\n## With ONNX Runtime\n\n`model.onnx` (opset 17) takes uint8 RGB pixels `[N, H, W, 3]` \
         resized as below and does the scaling, normalisation and channel order itself; its \
         metadata holds the class names (`label_names`) and the preprocessing \
         (`input_size`, `resize`, `interpolation`, `crop_pct`, `mean`, `std`):\n\n\
         ```python\n\
         import json, numpy as np, onnxruntime as ort\n\
         from huggingface_hub import hf_hub_download\n\
         from PIL import Image\n\n\
         session = ort.InferenceSession(hf_hub_download(\"{repo}\", \"model.onnx\"))\n\
         meta = session.get_modelmeta().custom_metadata_map\n\
         labels = json.loads(meta[\"label_names\"])\n\
         size, resize = json.loads(meta[\"input_size\"])[1], int(meta[\"resize\"])\n\n\
         img = Image.open(\"image.jpg\").convert(\"RGB\")\n\
         w, h = img.size  # shorter side to `resize` (bicubic), then the center crop\n\
         nw, nh = (resize, resize * h // w) if w <= h else (resize * w // h, resize)\n\
         img = img.resize((nw, nh), Image.BICUBIC)\n\
         left, top = round((nw - size) / 2), round((nh - size) / 2)\n\
         pixels = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)[None]\n\n\
         probs = session.run([\"probabilities\"], {{\"pixels\": pixels}})[0][0]\n\
         print(labels[int(probs.argmax())], float(probs.max()))\n\
         ```\n"
    )
}

/// What the file's metadata says about the model besides its graph.
#[derive(Debug, Clone)]
pub struct Info {
    /// timm's architecture name.
    pub architecture: String,
    /// Class names, in the order of the logits.
    pub classes: Vec<String>,
    /// The backbone's `pretrained_cfg` (its interpolation, crop fraction, mean and std).
    pub pretrained_cfg: PretrainedCfg,
    /// The eval transform the model was trained with; its size is the graph's input size.
    pub preprocess: Preprocess,
    /// The backbone's Hub id (or local weights path), when known.
    pub backbone: Option<String>,
    /// The Hub commit the backbone's weights came from, when known.
    pub revision: Option<String>,
    /// Multi-label: each label's threshold (the outputs are then independent sigmoids).
    pub thresholds: Option<Vec<f32>>,
}

/// `problem_type` of a multi-label model (Hugging Face transformers' name).
pub const MULTI_LABEL_PROBLEM: &str = "multi_label_classification";

impl Info {
    /// The `metadata_props` entries: timm's `pretrained_cfg` keys (JSON values where timm's
    /// are lists), the class names as `label_names`, where the backbone came from, what the
    /// input is, and the tltui version.
    pub fn metadata(&self, options: Options) -> Vec<(String, String)> {
        let s = self.preprocess.size as usize;
        let cfg = &self.pretrained_cfg;
        let json = |v: serde_json::Value| v.to_string();
        let input = if options.with_preprocessing {
            format!(
                "pixels: uint8 RGB [N, {s}, {s}, 3], the image resized ({}) so that its shorter \
                 side is {} pixels, then center-cropped to {s}x{s}; scaling, mean/std and \
                 NHWC->NCHW are in the graph",
                cfg.interpolation, self.preprocess.resize
            )
        } else {
            format!(
                "input: float32 [N, 3, {s}, {s}], the image resized ({}) so that its shorter side \
                 is {} pixels, center-cropped to {s}x{s}, scaled to 0-1, normalised with mean and \
                 std",
                cfg.interpolation, self.preprocess.resize
            )
        };
        let mut out = vec![
            ("architecture", self.architecture.clone()),
            ("label_names", json(serde_json::json!(self.classes))),
            ("num_classes", self.classes.len().to_string()),
            ("input_size", json(serde_json::json!([3, s, s]))),
            ("interpolation", cfg.interpolation.clone()),
            ("crop_pct", cfg.crop_pct.to_string()),
            ("crop_mode", cfg.crop_mode.clone()),
            ("resize", self.preprocess.resize.to_string()),
            ("mean", json(serde_json::json!(self.preprocess.mean))),
            ("std", json(serde_json::json!(self.preprocess.std))),
            ("input", input),
            ("tltui_version", env!("CARGO_PKG_VERSION").to_string()),
        ];
        if let Some(b) = &self.backbone {
            out.push(("hf_hub_id", b.clone()));
        }
        if let Some(r) = &self.revision {
            out.push(("hf_hub_revision", r.clone()));
        }
        if let Some(t) = &self.thresholds {
            out.push(("problem_type", MULTI_LABEL_PROBLEM.to_string()));
            out.push(("label_thresholds", json(serde_json::json!(t))));
        }
        out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// Adds the inference graph of `backbone`'s forward to `g` (BatchNorm in inference mode, folded
/// into the convolutions): pooled features `[N, C]` of the NCHW input `x`, whose spatial size
/// `hw` the graph fixes. An error names the layer that stops the export.
pub fn backbone_graph(
    g: &mut Graph,
    backbone: &dyn Backbone,
    x: &str,
    hw: (usize, usize),
) -> anyhow::Result<Value> {
    match backbone.architecture() {
        Architecture::EfficientNet(m) => efficientnet::efficientnet(g, m, x, hw),
        Architecture::MobileNetV3(m) => efficientnet::mobilenetv3(g, m, x, hw),
        Architecture::ResNet(m) => resnet::resnet(g, m, x),
        Architecture::ConvNeXt(m) => convnext::convnext(g, m, x),
        Architecture::Vit(m) => vit::vit(g, m, x, hw),
    }
}

/// The ONNX file of `backbone` + `head`: input `input` (or `pixels`), output `logits`
/// `[N, classes]` (and `probabilities`), a dynamic batch axis `N`.
pub fn model_bytes(
    backbone: &dyn Backbone,
    head: &Head,
    info: &Info,
    options: Options,
) -> anyhow::Result<Vec<u8>> {
    let s = info.preprocess.size as usize;
    let k = info.classes.len();
    let mut g = Graph::default();
    let input = if options.with_preprocessing {
        let (scale, shift) = info.preprocess.affine();
        let x = g.op(
            "Cast",
            "pixels.float",
            &["pixels"],
            vec![("to", Attr::Int(FLOAT as i64))],
        );
        let sc = g.floats("pixels.scale", &[3], &scale);
        let sh = g.floats("pixels.shift", &[3], &shift);
        let x = g.binary("Mul", "pixels.scaled", &x, &sc);
        let x = g.binary("Add", "pixels.normalised", &x, &sh);
        let x = g.transpose(&x, "input", &[0, 3, 1, 2]);
        (
            ValueInfoProto::tensor("pixels", UINT8, &[None, Some(s), Some(s), Some(3)]),
            x,
        )
    } else {
        let name = "input";
        let v = ValueInfoProto::tensor(name, FLOAT, &[None, Some(3), Some(s), Some(s)]);
        (v, name.to_string())
    };
    let features = backbone_graph(&mut g, backbone, &input.1, (s, s))
        .map_err(|e| anyhow::anyhow!("{}: cannot be exported to ONNX: {e}", info.architecture))?;
    let w = g.tensor("classifier.weight", head.weight.as_tensor())?;
    let b = g.tensor("classifier.bias", head.bias.as_tensor())?;
    let logits = g.op(
        "Gemm",
        "logits",
        &[&features, &w, &b],
        vec![("transB", Attr::Int(1))],
    );
    let mut outputs = vec![ValueInfoProto::tensor(&logits, FLOAT, &[None, Some(k)])];
    if options.softmax {
        let p = match info.thresholds {
            Some(_) => g.op("Sigmoid", "probabilities", &[&logits], vec![]),
            None => g.op(
                "Softmax",
                "probabilities",
                &[&logits],
                vec![("axis", Attr::Int(1))],
            ),
        };
        outputs.push(ValueInfoProto::tensor(&p, FLOAT, &[None, Some(k)]));
    }
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "tltui".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{} classifier of {k} classes trained with tltui",
            info.architecture
        ),
        graph: Some(GraphProto {
            node: g.nodes,
            name: info.architecture.clone(),
            initializer: g.initializers,
            input: vec![input.0],
            output: outputs,
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: info
            .metadata(options)
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
    };
    Ok(model.encode_to_vec())
}

/// The ONNX file of a checkpoint, its metadata naming the backbone's Hub id and commit.
pub fn checkpoint_bytes(
    ckpt: &crate::train::checkpoint::Checkpoint,
    options: Options,
) -> anyhow::Result<Vec<u8>> {
    let meta = &ckpt.meta;
    let backbone = crate::model::build_backbone(&ckpt.model_config(), ckpt.backbone_params())?;
    let info = Info::new(
        backbone.as_ref(),
        meta.classes.clone(),
        &meta.preprocess,
        &meta.pretrained_cfg,
    )
    .with_source(
        Some(meta.backbone.clone()),
        meta.recipe.as_ref().and_then(|r| r.revision.clone()),
    )
    .with_thresholds(meta.thresholds());
    model_bytes(backbone.as_ref(), &ckpt.head(0.0)?, &info, options)
}

impl Info {
    /// The metadata of `backbone` trained with `preprocess` on `classes`; the input size in
    /// `pretrained_cfg` becomes the trained one. Where the backbone came from is unknown.
    pub fn new(
        backbone: &dyn Backbone,
        classes: Vec<String>,
        preprocess: &Preprocess,
        pretrained_cfg: &PretrainedCfg,
    ) -> Self {
        let mut pretrained_cfg = pretrained_cfg.clone();
        let s = preprocess.size as usize;
        pretrained_cfg.input_size = [3, s, s];
        Self {
            architecture: backbone.parts().architecture.clone(),
            classes,
            pretrained_cfg,
            preprocess: preprocess.clone(),
            backbone: None,
            revision: None,
            thresholds: None,
        }
    }

    /// This metadata of a multi-label model with these thresholds (`None`: single-label).
    pub fn with_thresholds(mut self, thresholds: Option<Vec<f32>>) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// This metadata naming the backbone's Hub id (or local path) and Hub commit.
    pub fn with_source(mut self, backbone: Option<String>, revision: Option<String>) -> Self {
        self.backbone = backbone;
        self.revision = revision;
        self
    }
}
