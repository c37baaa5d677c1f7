//! Start-up: the dataset opened through [`crate::data::discover_source`] (every source), the
//! backbone's files fetched, the images decoded, the model built.

use super::*;
use crate::data::corrections::Decision;
use crate::data::{discover_source, SplitOptions};
use crate::train::checkpoint::LabelsRecord;

/// The largest weight a rare label's positives get.
const MAX_POSITIVE_WEIGHT: f32 = 10.0;

/// How a model of `task` is trained, in words.
fn task_words(task: Task) -> &'static str {
    match task {
        Task::SingleLabel => "with one class an image",
        Task::MultiLabel => "multi-label (a sigmoid per label)",
    }
}

impl Trainer {
    /// Opens the dataset, fetches and builds the backbone, decodes the images.
    pub(super) fn prepare(
        setup: EngineSetup,
        events: Sender<Event>,
        rx: Receiver<Command>,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let config = setup.config.clone();
        let emit = |e: Event| {
            let _ = events.send(e);
        };
        let sink = events.clone();
        let download = Arc::new(move |p| {
            let _ = sink.send(Event::Download { progress: p });
        });
        let (found, notes) = discover_source(&setup.dataset, &setup.source, download.clone())?;
        for message in notes {
            emit(Event::Warning { message });
        }
        let LocalBackbone {
            config: model_config,
            weights: weights_path,
            name: backbone_name,
            revision,
            checkpoint,
        } = fetch_backbone(&setup.weights, &setup.device, download, &emit)?;
        let prep = match &checkpoint {
            // A resumed run reads images as the checkpoint was trained, unless told a size.
            Some(ckpt) if config.data.image_size == 0 => ckpt.meta.preprocess.clone(),
            _ => {
                let (size, note) = model_config.image_size(config.data.image_size, &setup.device);
                if let Some(message) = note {
                    emit(Event::Warning { message });
                }
                Preprocess::from_cfg(&model_config.pretrained_cfg, size)
                    .map_err(anyhow::Error::msg)?
            }
        };

        let Decoded {
            store,
            bad,
            rx,
            queued,
        } = decode_images(&found.files(), prep, &config, &events, rx)?;
        let dataset = Dataset::build(
            found,
            store.fingerprints(),
            bad,
            &SplitOptions::of(&config.data),
        )?;
        for message in dataset.warnings.clone() {
            emit(Event::Warning { message });
        }
        if !dataset.skipped.is_empty() {
            emit(Event::Warning {
                message: format!(
                    "{} unusable file(s) skipped (see the dataset report)",
                    dataset.skipped.len()
                ),
            });
        }
        emit(Event::DatasetReady {
            task: dataset.task,
            class_root: dataset.class_root.clone(),
            classes: dataset.class_counts(),
            skipped: dataset.skipped.clone(),
            ignored: dataset.ignored,
            cached_images: store.cached(),
            report: dataset.report.clone(),
            source: dataset.rule.clone(),
        });

        let device = setup.device.clone();
        let params = match &checkpoint {
            Some(ckpt) => ckpt.backbone_params(),
            None => Params::load(&weights_path, &device)?,
        };
        let mut backbone = build_backbone(&model_config, params)?;
        backbone.parts_mut().train_batchnorm = config.train.train_batchnorm;
        let mut rng = ChaCha8Rng::seed_from_u64(config.data.seed);
        let classes = dataset.class_names.len();
        let mut head = Head::new(
            backbone.parts().num_features,
            classes,
            config.train.dropout,
            &mut rng,
            &device,
        )?;

        let mut phases_before = Vec::new();
        if let Some(ckpt) = checkpoint {
            if ckpt.meta.task != dataset.task {
                anyhow::bail!(
                    "cannot resume from {}: it was trained {}, but this dataset is read {}",
                    weights_path.display(),
                    task_words(ckpt.meta.task),
                    task_words(dataset.task)
                );
            }
            if ckpt.meta.classes != dataset.class_names {
                anyhow::bail!(
                    "cannot resume from {}: it was trained on classes {:?}, but this dataset has {:?}",
                    weights_path.display(),
                    ckpt.meta.classes,
                    dataset.class_names
                );
            }
            head = ckpt.head(config.train.dropout)?;
            phases_before = ckpt.meta.record.phases;
        }

        let counts: Vec<usize> = dataset.class_counts().iter().map(|c| c.train).collect();
        // Class weights (single-label) or positive weights (multi-label), and the warning
        // that says so.
        let weighting = match dataset.task {
            Task::SingleLabel => balanced_weights(&counts).map(|w| {
                let message = format!(
                    "classes are imbalanced (train counts {counts:?}); the loss is weighted by inverse class frequency {w:.2?}"
                );
                (w, message)
            }),
            Task::MultiLabel => {
                let images = dataset.train.len();
                multi_label::positive_weights(&counts, images, MAX_POSITIVE_WEIGHT).map(|w| {
                    let message = format!(
                        "some labels tag few images (train counts {counts:?} of {images}); their positives weigh negatives/positives {w:.2?} (at most {MAX_POSITIVE_WEIGHT})"
                    );
                    (w, message)
                })
            }
        };
        let weights = match weighting.filter(|_| config.train.class_weights == ClassWeights::Auto) {
            Some((w, message)) => {
                emit(Event::Warning { message });
                Some(Tensor::new(w.as_slice(), &device)?)
            }
            None => None,
        };
        let objective = match dataset.task {
            Task::SingleLabel => Objective::SingleLabel {
                class_weights: weights,
            },
            Task::MultiLabel => Objective::MultiLabel {
                pos_weights: weights,
            },
        };

        let count = |d: Decision| {
            let corrections = &dataset.report.corrections;
            corrections.iter().filter(|c| c.decision == d).count()
        };
        let record = RunRecord {
            train_counts: counts,
            val_counts: dataset.class_counts().iter().map(|c| c.val).collect(),
            phases: phases_before,
            validation: None,
            copies: CopiesRecord {
                duplicate_groups: dataset.report.duplicates.len(),
                leaked_val_images: dataset.report.leakage.val_images_with_train_twin,
                given_split: dataset.given_split,
            },
            labels: LabelsRecord {
                relabelled: count(Decision::Relabel),
                excluded: count(Decision::Exclude),
                ..LabelsRecord::default()
            },
        };
        emit(Event::ModelReady {
            backbone: backbone_name.clone(),
            architecture: model_config.architecture.clone(),
            device: device_name(&device),
            groups: backbone.parts().groups.clone(),
            head_params: head.weight.elem_count() + head.bias.elem_count(),
        });
        let preview_rng = ChaCha8Rng::seed_from_u64(config.data.seed ^ PREVIEW_SEED);
        let summary = Summary {
            leaked_val_images: dataset.report.leakage.val_images_with_train_twin,
            ..Summary::default()
        };
        let recipe = Recipe {
            tltui: env!("CARGO_PKG_VERSION").into(),
            backbone: backbone_name.clone(),
            revision,
            seed: config.data.seed,
            class_root: dataset.class_root.clone(),
            decisions: Vec::new(),
            corrections: dataset.report.corrections.clone(),
            config: config.clone(),
        };
        let control = Control {
            rx,
            queued,
            events: events.clone(),
            paused: false,
            hold_after_finder: false,
        };
        let trainer = Self {
            config,
            events,
            dataset,
            store,
            device,
            backbone,
            head,
            model_config,
            backbone_name,
            weights_path,
            objective,
            checkpoint_dir: setup.checkpoint_dir,
            feature_cache_dir: setup.feature_cache_dir,
            features: None,
            backbone_changed: false,
            rng,
            preview_rng,
            run: None,
            control,
            steps_done: 0,
            recipe,
            replay: setup.replay.as_ref().map(Recipe::replay),
            last_phase: None,
            epochs_done: 0,
            trained_since_save: false,
            record,
            summary,
            started,
        };
        trainer.emit_freeze();
        Ok(trainer)
    }
}

/// A backbone's config and weights file, what to call it, and the checkpoint it comes from when
/// the run resumes one.
struct LocalBackbone {
    config: ModelConfig,
    weights: PathBuf,
    name: String,
    /// The Hub commit the weights came from, when known.
    revision: Option<String>,
    checkpoint: Option<Checkpoint>,
}

/// The backbone's local files: given with `--weights`, fetched from the Hub (a warning when the
/// Hub is unreachable and the cache serves them), or the checkpoint resumed.
fn fetch_backbone(
    source: &WeightsSource,
    device: &Device,
    progress: Arc<dyn Fn(hub::DownloadProgress) + Send + Sync>,
    emit: &dyn Fn(Event),
) -> anyhow::Result<LocalBackbone> {
    let local = |config: &Path, weights: &Path, name: String| -> anyhow::Result<LocalBackbone> {
        Ok(LocalBackbone {
            config: ModelConfig::from_file(config)?,
            weights: weights.to_path_buf(),
            revision: hub_revision(weights),
            name,
            checkpoint: None,
        })
    };
    match source {
        WeightsSource::Local { weights } => {
            let config = weights
                .parent()
                .unwrap_or(Path::new("."))
                .join("config.json");
            local(&config, weights, weights.display().to_string())
        }
        WeightsSource::Hub { repo, options } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let files = runtime.block_on(hub::fetch_backbone(repo, options, progress))?;
            if files.offline_fallback {
                emit(Event::Warning {
                    message: format!(
                        "the Hub at {} is unreachable; using the cached snapshot of {repo}",
                        options.endpoint.as_deref().unwrap_or("(HF_ENDPOINT)")
                    ),
                });
            }
            local(&files.config, &files.weights, repo.to_string())
        }
        WeightsSource::Checkpoint { path } => {
            let ckpt = Checkpoint::load(path, device)?;
            Ok(LocalBackbone {
                config: ckpt.model_config(),
                weights: path.clone(),
                name: ckpt.meta.backbone.clone(),
                revision: ckpt.meta.recipe.as_ref().and_then(|r| r.revision.clone()),
                checkpoint: Some(ckpt),
            })
        }
    }
}

/// Decodes every image of the dataset into the store (within `data.cache_memory_mb`),
/// reporting progress; `Stop` and `Interrupt` end it (an error holding the [`Halt`]), other
/// commands wait for training.
/// What [`decode_images`] leaves: the store, the unusable files, the command channel and the
/// commands that arrived meanwhile.
struct Decoded {
    store: ImageStore,
    bad: Vec<crate::data::Skipped>,
    rx: Receiver<Command>,
    queued: VecDeque<Command>,
}

fn decode_images(
    paths: &[PathBuf],
    prep: Preprocess,
    config: &Config,
    events: &Sender<Event>,
    rx: Receiver<Command>,
) -> anyhow::Result<Decoded> {
    let inbox = std::sync::Mutex::new(Inbox {
        rx,
        queued: VecDeque::new(),
        halt: None,
    });
    let progress = |done: usize, total: usize| {
        if done.is_multiple_of(64) || done == total {
            let _ = events.send(Event::Decoding { done, total });
        }
        inbox
            .try_lock()
            .map_or(true, |mut inbox| inbox.take_commands())
    };
    let loaded = ImageStore::load(
        paths,
        prep,
        config.augment.clone(),
        config.data.seed,
        config.data.max_pixels(),
        config.data.cache_memory_mb * 1024 * 1024,
        &progress,
    );
    let Inbox { rx, queued, halt } = inbox
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((store, bad)) = loaded else {
        return Err(halt.expect("decoding ends early only on a halt").into());
    };
    Ok(Decoded {
        store,
        bad,
        rx,
        queued,
    })
}

/// Commands that arrive while `prepare` decodes images (on rayon's threads): `Stop` and
/// `Interrupt` end the decoding, the others wait for training.
struct Inbox {
    rx: Receiver<Command>,
    queued: VecDeque<Command>,
    halt: Option<Halt>,
}

impl Inbox {
    /// Takes the commands that arrived; `false` once decoding should end.
    fn take_commands(&mut self) -> bool {
        while let Ok(command) = self.rx.try_recv() {
            match Halt::of(&command) {
                Some(halt) => self.halt = Some(halt),
                None => self.queued.push_back(command),
            }
        }
        self.halt.is_none()
    }
}

/// The Hub commit of weights in the Hugging Face cache (`…/snapshots/COMMIT/model.safetensors`).
fn hub_revision(weights: &Path) -> Option<String> {
    let snapshot = weights.parent()?;
    (snapshot.parent()?.file_name()? == "snapshots")
        .then(|| snapshot.file_name()?.to_str().map(String::from))
        .flatten()
}
