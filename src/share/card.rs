//! The model card (`README.md`) of a pushed model: the YAML front matter the Hub reads, then
//! what the checkpoint records of the classes, the last validation and the training recipe, and
//! how to load the model.

use crate::hub::RepoId;
use crate::train::checkpoint::CheckpointMeta;
use crate::train::metrics::Confusion;
use crate::train::Phase;
use std::fmt::Write;

/// What a card is made from besides the checkpoint's metadata.
pub struct CardInput<'a> {
    /// The repository pushed to (its revision is the branch).
    pub repo: &'a RepoId,
    pub meta: &'a CheckpointMeta,
    /// The backbone's Hub repository, when it came from the Hub.
    pub base_model: Option<&'a RepoId>,
    /// The backbone card's `license`, when known.
    pub license: Option<&'a str>,
    /// A Hub dataset id the model was trained on.
    pub dataset: Option<&'a str>,
    /// The run directory's files pushed beside the model (paths in the repository): the
    /// pictures it shows and the TensorBoard files it mentions.
    pub run_files: &'a [&'a str],
}

/// The one-line timm call that loads `repo`.
pub fn timm_snippet(repo: &RepoId) -> String {
    format!(
        "timm.create_model(\"hf-hub:{}\", pretrained=True)",
        hub_id(repo)
    )
}

/// `ORG/NAME`, with `@REVISION` when it is not `main` (timm's and `tltui predict`'s syntax).
fn hub_id(repo: &RepoId) -> String {
    repo.to_string()
}

/// The `license` of a model card's front matter.
pub fn license_of(card: &str) -> Option<String> {
    let front = card.strip_prefix("---")?.split("\n---").next()?;
    front.lines().find_map(|line| {
        let value = line
            .strip_prefix("license:")?
            .trim()
            .trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A YAML scalar: plain when it is safe so, else double-quoted (JSON strings are YAML).
fn yaml(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_string()
    } else {
        serde_json::Value::from(s).to_string()
    }
}

/// A Markdown table cell: no pipes or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The card's text.
pub fn model_card(input: &CardInput) -> String {
    let mut out = String::new();
    front_matter(&mut out, input);
    let meta = input.meta;
    let _ = writeln!(out, "# {}\n", hub_id(input.repo));
    let from = match input.base_model {
        Some(base) => {
            let mut s = format!(
                "[{0}/{1}](https://huggingface.co/{0}/{1})",
                base.owner, base.name
            );
            if base.revision != "main" {
                s.push_str(&format!(" at revision `{}`", base.revision));
            }
            s
        }
        None => format!("local weights `{}`", meta.backbone),
    };
    let _ = writeln!(
        out,
        "An image classifier of {} classes, fine-tuned with tltui (a terminal trainer) \
         from {from} (timm architecture `{}`, input {}×{} pixels).\n",
        meta.classes.len(),
        meta.architecture,
        meta.preprocess.size,
        meta.preprocess.size
    );
    if input.license.is_none() {
        let _ = writeln!(
            out,
            "License: not stated here, as the base model's card was not at hand; the base model's license applies.\n"
        );
    }
    classes(&mut out, meta);
    validation(&mut out, meta);
    training_metrics(&mut out, input.run_files);
    copies(&mut out, meta);
    labels(&mut out, meta);
    recipe(&mut out, meta);
    usage(&mut out, input.repo);
    out
}

/// The pictures of the run, and where its metrics are, when they were pushed.
fn training_metrics(out: &mut String, files: &[&str]) {
    use crate::rundir::{CONFUSION_PNG, HISTORY_PNG, METRICS_CSV, RUNS_DIR, TOP_LOSSES_PNG};
    let has = |name: &str| files.contains(&name);
    let tensorboard = files.iter().any(|f| f.starts_with(&format!("{RUNS_DIR}/")));
    if files.is_empty() {
        return;
    }
    out.push_str(
        "## Training metrics

",
    );
    for (name, alt) in [
        (HISTORY_PNG, "Loss and accuracy per epoch"),
        (CONFUSION_PNG, "Confusion matrix of the last validation"),
    ] {
        if has(name) {
            let _ = writeln!(
                out,
                "![{alt}]({name})
"
            );
        }
    }
    let mut notes = Vec::new();
    if has(TOP_LOSSES_PNG) {
        notes.push(format!(
            "the worst validation images in [`{TOP_LOSSES_PNG}`]({TOP_LOSSES_PNG})"
        ));
    }
    if has(METRICS_CSV) {
        notes.push(format!(
            "every epoch's numbers in [`{METRICS_CSV}`]({METRICS_CSV})"
        ));
    }
    if tensorboard {
        notes.push(format!(
            "the TensorBoard event files in `{RUNS_DIR}/` (the Hub's \"Training metrics\" tab draws them)"
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(
            out,
            "Also in this repository: {}.
",
            notes.join("; ")
        );
    }
}

fn front_matter(out: &mut String, input: &CardInput) {
    out.push_str("---\nlibrary_name: timm\n");
    if let Some(license) = input.license {
        let _ = writeln!(out, "license: {}", yaml(license));
    }
    out.push_str(
        "tags:\n- image-classification\n- timm\n- tltui\npipeline_tag: image-classification\n",
    );
    if let Some(base) = input.base_model {
        let _ = writeln!(
            out,
            "base_model: {}",
            yaml(&format!("{}/{}", base.owner, base.name))
        );
        out.push_str("base_model_relation: finetune\n");
    }
    if let Some(dataset) = input.dataset {
        let _ = writeln!(out, "datasets:\n- {}", yaml(dataset));
    }
    out.push_str("---\n\n");
}

fn classes(out: &mut String, meta: &CheckpointMeta) {
    out.push_str("## Classes\n\n");
    let r = &meta.record;
    if r.train_counts.len() != meta.classes.len() {
        let _ = writeln!(
            out,
            "{} (image counts not recorded by this checkpoint).\n",
            meta.classes
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return;
    }
    out.push_str("| class | training images | validation images |\n| --- | ---: | ---: |\n");
    for (i, name) in meta.classes.iter().enumerate() {
        let val = r.val_counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "| {} | {} | {} |", cell(name), r.train_counts[i], val);
    }
    let _ = writeln!(
        out,
        "\nThe validation images are {:.0}% of each class, drawn at random with seed {}.\n",
        meta.val_fraction * 100.0,
        meta.seed
    );
}

fn validation(out: &mut String, meta: &CheckpointMeta) {
    out.push_str("## Validation\n\n");
    let Some(v) = &meta.record.validation else {
        match meta.val_accuracy {
            Some(a) => {
                let _ = writeln!(out, "Validation accuracy **{a:.4}** (no confusion matrix recorded by this checkpoint).\n");
            }
            None => out.push_str("No validation was recorded.\n\n"),
        }
        return;
    };
    let when = crate::train::validation_label(v.phase, v.epoch);
    if let Some(m) = &v.multi_label {
        let _ = writeln!(
            out,
            "Multi-label: a sigmoid per label, each predicted from its threshold (chosen on \
             validation for the best F1). mAP **{:.4}**, F1 micro {:.4} and macro {:.4}, exact \
             match {:.4} (after {when}; loss {:.4}).\n",
            m.map, m.f1_micro, m.f1_macro, m.exact_match, v.loss
        );
        out.push_str("| label | AP | F1 | precision | recall | threshold |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for l in &m.per_label {
            let ap = l.ap.map_or("–".into(), |a| format!("{a:.4}"));
            let _ = writeln!(
                out,
                "| {} | {ap} | {:.4} | {:.4} | {:.4} | {:.3} |",
                cell(&l.name),
                l.f1,
                l.precision,
                l.recall,
                l.threshold
            );
        }
        out.push('\n');
        return;
    }
    let confusion = Confusion {
        matrix: v.confusion.clone(),
    };
    let _ = writeln!(
        out,
        "Accuracy **{:.4}** on {} validation images (after {when}; loss {:.4}).\n",
        v.accuracy,
        confusion.total(),
        v.loss
    );
    out.push_str("| class | precision | recall |\n| --- | ---: | ---: |\n");
    for (name, (p, r)) in meta.classes.iter().zip(confusion.precision_recall()) {
        let _ = writeln!(out, "| {} | {p:.4} | {r:.4} |", cell(name));
    }
    out.push_str("\nConfusion matrix (rows: true class, columns: predicted class):\n\n| |");
    for name in &meta.classes {
        let _ = write!(out, " {} |", cell(name));
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(meta.classes.len()));
    out.push('\n');
    for (name, row) in meta.classes.iter().zip(&v.confusion) {
        let _ = write!(out, "| **{}** |", cell(name));
        for n in row {
            let _ = write!(out, " {n} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The data checks: copies among the images and leakage across the split.
fn copies(out: &mut String, meta: &CheckpointMeta) {
    let c = &meta.record.copies;
    let _ = writeln!(
        out,
        "Data checks: {} group(s) of exact or near duplicate images; {} validation image(s) with a copy in training{}.\n",
        c.duplicate_groups,
        c.leaked_val_images,
        if c.given_split {
            " (the dataset's own split)"
        } else {
            " (tltui's split keeps copies on one side)"
        }
    );
    if let Some(a) = meta
        .record
        .validation
        .as_ref()
        .and_then(|v| v.accuracy_clean)
    {
        let _ = writeln!(
            out,
            "Accuracy on the validation images without a copy in training: **{a:.4}**.\n"
        );
    }
}

/// What the label review corrected and what the finder flagged.
fn labels(out: &mut String, meta: &CheckpointMeta) {
    let l = &meta.record.labels;
    let fixed = l.relabelled + l.excluded;
    if fixed == 0 && l.flagged.is_none() {
        return;
    }
    let mut parts = Vec::new();
    if fixed > 0 {
        parts.push(format!(
            "{} image(s) relabelled and {} left out by corrections before training",
            l.relabelled, l.excluded
        ));
    }
    if let Some(flagged) = l.flagged {
        parts.push(format!(
            "the label-issue finder flagged {flagged} image(s) as likely mislabelled and {} as fitting no class",
            l.fit_no_class.unwrap_or(0)
        ));
    }
    let _ = writeln!(out, "Label review: {}.\n", parts.join("; "));
}

fn recipe(out: &mut String, meta: &CheckpointMeta) {
    out.push_str("## Training recipe\n\n");
    let phases = &meta.record.phases;
    let (c, t, a) = (&meta.config.data, &meta.config.train, &meta.config.augment);
    if phases.is_empty() {
        let last = meta.phase.map_or("none".to_string(), |p| p.to_string());
        let _ = writeln!(
            out,
            "{} epoch(s) in all, the last in phase {last} (phases not recorded by this checkpoint).\n",
            meta.epoch
        );
    } else {
        out.push_str("| phase | epochs | peak learning rate | backbone layer groups trained | augmentation |\n| --- | ---: | ---: | --- | --- |\n");
        for p in phases {
            let groups = match p.unfrozen_groups {
                0 => "none (frozen; head only)".to_string(),
                n if n == p.groups => format!("all {n}"),
                n => format!("last {n} of {}", p.groups),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {groups} | {} |",
                p.phase,
                p.epochs,
                p.lr,
                if p.augmented { "on" } else { "off" }
            );
        }
        out.push('\n');
    }
    let finetuned = phases.iter().any(|p| p.phase == Phase::Finetune);
    let _ = writeln!(
        out,
        "- optimiser: AdamW, weight decay {}, batch size {}, dropout {} before the head",
        t.weight_decay, c.batch_size, t.dropout
    );
    let _ = writeln!(
        out,
        "- schedule: cosine decay per phase{}",
        if finetuned {
            format!(
                "; fine-tuning ramps up over the first {:.0}% of its steps, and each layer group deeper from the head gets {}× the rate of the one above",
                t.finetune_ramp_fraction * 100.0,
                t.layer_lr_decay
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "- class weights: {}",
        match t.class_weights {
            crate::config::ClassWeights::Auto =>
                "inverse class frequency when the classes are imbalanced (over 1.5×)",
            crate::config::ClassWeights::Off => "off",
        }
    );
    if finetuned {
        let _ = writeln!(
            out,
            "- batch norm statistics {} while fine-tuning",
            if t.train_batchnorm {
                "updated"
            } else {
                "frozen"
            }
        );
    }
    let mut aug = Vec::new();
    if a.random_resized_crop {
        aug.push(format!(
            "random resized crop (scale {}–{}, ratio {}–{})",
            a.crop_scale[0], a.crop_scale[1], a.crop_ratio[0], a.crop_ratio[1]
        ));
    }
    if a.horizontal_flip {
        aug.push("horizontal flip".into());
    }
    if a.zoom_range > 0.0 {
        aug.push(format!("zoom ±{}", a.zoom_range));
    }
    if a.rotation_degrees > 0.0 {
        aug.push(format!("rotation ±{}°", a.rotation_degrees));
    }
    if a.brightness_range != [1.0, 1.0] {
        aug.push(format!(
            "brightness ×{}–{}",
            a.brightness_range[0], a.brightness_range[1]
        ));
    }
    let _ = writeln!(
        out,
        "- augmentation (in the phases marked on above): {}",
        if aug.is_empty() {
            "none".to_string()
        } else {
            aug.join(", ")
        }
    );
    let p = &meta.preprocess;
    let interpolation = format!("{:?}", p.interpolation).to_lowercase();
    let resize = if p.squash {
        format!(
            "resize to {0}×{0} ({interpolation}, aspect ratio not kept)",
            p.resize
        )
    } else {
        format!("resize the shorter side to {} ({interpolation})", p.resize)
    };
    let _ = writeln!(
        out,
        "- input: {resize}, center crop {0}×{0}, normalise with mean {1:?} and std {2:?}",
        p.size, p.mean, p.std
    );
    let _ = writeln!(
        out,
        "- seed {} (split, initialisation, data order, augmentation)\n",
        meta.seed
    );
}

fn usage(out: &mut String, repo: &RepoId) {
    let id = hub_id(repo);
    let _ = writeln!(
        out,
        "## How to use\n\nWith [timm](https://github.com/huggingface/pytorch-image-models):\n\n```python\nimport timm, torch\nfrom PIL import Image\n\nmodel = {}.eval()\ntransform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))\nwith torch.no_grad():\n    probs = model(transform(Image.open(\"image.jpg\").convert(\"RGB\")).unsqueeze(0)).softmax(-1)[0]\nprint(model.pretrained_cfg[\"label_names\"][probs.argmax()], probs.max().item())\n```\n\nWith tltui (downloads `config.json` and `model.safetensors` into the Hugging Face cache):\n\n```sh\ntltui predict hf-hub:{id} IMAGE_OR_DIR... [--top K] [--json]\n```",
        timm_snippet(repo)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Preprocess, PretrainedCfg};
    use crate::train::checkpoint::{
        CopiesRecord, LabelsRecord, PhaseRecord, RunRecord, ValidationRecord, FORMAT,
    };

    fn meta() -> CheckpointMeta {
        let cfg = PretrainedCfg {
            input_size: [3, 224, 224],
            interpolation: "bicubic".into(),
            crop_pct: 0.875,
            crop_mode: "center".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        CheckpointMeta {
            task: crate::data::Task::SingleLabel,
            format: FORMAT,
            classes: vec!["cat".into(), "dog".into()],
            backbone: "timm/tf_efficientnet_lite0.in1k".into(),
            architecture: "tf_efficientnet_lite0".into(),
            preprocess: Preprocess::from_cfg(&cfg, 0).unwrap(),
            pretrained_cfg: cfg,
            phase: Some(Phase::Finetune),
            epoch: 4,
            val_accuracy: Some(0.9),
            class_root: "data".into(),
            val_fraction: 0.25,
            seed: 7,
            config: crate::config::Config::default(),
            recipe: None,
            record: RunRecord {
                train_counts: vec![30, 45],
                val_counts: vec![10, 15],
                phases: vec![
                    PhaseRecord {
                        phase: Phase::Warmup,
                        epochs: 3,
                        lr: 1e-3,
                        unfrozen_groups: 0,
                        groups: 7,
                        augmented: false,
                    },
                    PhaseRecord {
                        phase: Phase::Finetune,
                        epochs: 1,
                        lr: 1e-4,
                        unfrozen_groups: 3,
                        groups: 7,
                        augmented: true,
                    },
                ],
                validation: Some(ValidationRecord {
                    multi_label: None,
                    phase: Some(Phase::Finetune),
                    epoch: 1,
                    loss: 0.25,
                    accuracy: 0.9,
                    confusion: vec![vec![8, 2], vec![1, 14]],
                    accuracy_clean: Some(0.875),
                }),
                copies: CopiesRecord {
                    duplicate_groups: 2,
                    leaked_val_images: 3,
                    given_split: true,
                },
                labels: LabelsRecord {
                    flagged: Some(6),
                    fit_no_class: Some(1),
                    relabelled: 4,
                    excluded: 2,
                },
            },
        }
    }

    fn card(license: Option<&str>, dataset: Option<&str>, base: Option<&str>) -> String {
        let repo: RepoId = "lab/pets".parse().unwrap();
        let base: Option<RepoId> = base.map(|b| b.parse().unwrap());
        model_card(&CardInput {
            repo: &repo,
            meta: &meta(),
            base_model: base.as_ref(),
            license,
            dataset,
            run_files: &[],
        })
    }

    #[test]
    fn front_matter_as_the_hub_reads_it() {
        let text = card(
            Some("apache-2.0"),
            Some("lab/pet-photos"),
            Some("timm/tf_efficientnet_lite0.in1k"),
        );
        assert!(text.starts_with(
            "---\nlibrary_name: timm\nlicense: apache-2.0\ntags:\n- image-classification\n- timm\n- tltui\n\
             pipeline_tag: image-classification\nbase_model: timm/tf_efficientnet_lite0.in1k\n\
             base_model_relation: finetune\ndatasets:\n- lab/pet-photos\n---\n\n# lab/pets\n"
        ), "{text}");
        assert_eq!(license_of(&text).as_deref(), Some("apache-2.0"));
    }

    #[test]
    fn unknown_facts_are_left_out_of_the_front_matter() {
        let text = card(None, None, None);
        let front = text.split("\n---\n").next().unwrap();
        for key in ["license", "base_model", "datasets"] {
            assert!(!front.contains(key), "{key} in {front}");
        }
        assert!(text.contains("from local weights `timm/tf_efficientnet_lite0.in1k`"));
        assert!(text.contains("License: not stated here"));
    }

    #[test]
    fn a_base_model_revision_is_named_in_the_text() {
        let text = card(None, None, Some("timm/resnet18.a1_in1k@v2"));
        assert!(
            text.contains("base_model: timm/resnet18.a1_in1k\n"),
            "{text}"
        );
        assert!(text.contains(
            "[timm/resnet18.a1_in1k](https://huggingface.co/timm/resnet18.a1_in1k) at revision `v2`"
        ));
    }

    #[test]
    fn classes_validation_and_recipe() {
        let text = card(None, None, None);
        for expected in [
            "| cat | 30 | 10 |\n| dog | 45 | 15 |",
            "The validation images are 25% of each class, drawn at random with seed 7.",
            "Accuracy **0.9000** on 25 validation images (after fine-tune epoch 1; loss 0.2500).",
            // cat: 8 of 9 predicted cats are cats, 8 of 10 cats found; dog: 14/16, 14/15.
            "| cat | 0.8889 | 0.8000 |\n| dog | 0.8750 | 0.9333 |",
            "Data checks: 2 group(s) of exact or near duplicate images; 3 validation image(s) with a copy in training (the dataset's own split).",
            "Label review: 4 image(s) relabelled and 2 left out by corrections before training; the label-issue finder flagged 6 image(s) as likely mislabelled and 1 as fitting no class.",
            "Accuracy on the validation images without a copy in training: **0.8750**.",
            "| | cat | dog |\n| --- | ---: | ---: |\n| **cat** | 8 | 2 |\n| **dog** | 1 | 14 |",
            "| warm-up | 3 | 0.001 | none (frozen; head only) | off |",
            "| fine-tune | 1 | 0.0001 | last 3 of 7 | on |",
            "- seed 7 (split, initialisation, data order, augmentation)",
            "- input: resize the shorter side to 256 (bicubic), center crop 224×224",
            "model = timm.create_model(\"hf-hub:lab/pets\", pretrained=True).eval()",
            "tltui predict hf-hub:lab/pets IMAGE_OR_DIR...",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[test]
    fn checkpoints_without_a_record_say_so() {
        let mut m = meta();
        m.record = RunRecord::default();
        let repo: RepoId = "lab/pets".parse().unwrap();
        let text = model_card(&CardInput {
            repo: &repo,
            meta: &m,
            base_model: None,
            license: None,
            dataset: None,
            run_files: &[],
        });
        assert!(text.contains("`cat`, `dog` (image counts not recorded by this checkpoint)"));
        assert!(text.contains("Validation accuracy **0.9000** (no confusion matrix recorded"));
        assert!(text.contains("4 epoch(s) in all, the last in phase fine-tune"));
    }

    #[test]
    fn yaml_values_and_licenses() {
        assert_eq!(yaml("org/data-set_1.0"), "org/data-set_1.0");
        assert_eq!(yaml("a: b"), "\"a: b\"");
        assert_eq!(yaml("-x"), "\"-x\"");
        assert_eq!(
            license_of("---\nlicense: \"mit\"\ntags: []\n---\n# x"),
            Some("mit".into())
        );
        assert_eq!(license_of("# no front matter\nlicense: mit"), None);
    }

    #[test]
    fn pushed_pictures_are_shown_and_the_tensorboard_files_named() {
        let repo: RepoId = "me/model".parse().unwrap();
        let files = [
            "history.png",
            "confusion_matrix.png",
            "metrics.csv",
            "runs/events.out.tfevents.1.host.2.0",
        ];
        let text = model_card(&CardInput {
            repo: &repo,
            meta: &meta(),
            base_model: None,
            license: None,
            dataset: None,
            run_files: &files,
        });
        assert!(text.contains("## Training metrics"), "{text}");
        assert!(text.contains("![Loss and accuracy per epoch](history.png)"));
        assert!(text.contains("![Confusion matrix of the last validation](confusion_matrix.png)"));
        assert!(text.contains("`runs/`") && text.contains("[`metrics.csv`](metrics.csv)"));
        assert!(!text.contains("top_losses.png"), "only what was pushed");
        assert!(!card(None, None, None).contains("## Training metrics"));
    }
}
