//! A phase's epochs: starting a phase (freezing, schedule, optimiser), each step through the
//! head or the whole network, the end of an epoch (validation, auto warm-up's early stop, the
//! best checkpoint).

use super::*;

/// The phase in progress.
pub(super) struct Run {
    pub(super) phase: Phase,
    pub(super) epochs: usize,
    pub(super) epoch: usize,
    pub(super) step: usize,
    pub(super) steps_per_epoch: usize,
    pub(super) total_steps: usize,
    pub(super) ramp_steps: usize,
    pub(super) order: Vec<usize>,
    pub(super) optimizer: AdamW,
    pub(super) base_lr: f64,
    /// Augmented images through the backbone (else cached features through the head).
    pub(super) through_backbone: bool,
    /// An `auto` warm-up: early stopping and the best head so far (else a cosine schedule).
    pub(super) auto: Option<AutoStop>,
}

impl Run {
    /// The learning rate of the next step.
    pub(super) fn lr(&self) -> f64 {
        if self.auto.is_some() {
            return self.base_lr;
        }
        let global = self.epoch * self.steps_per_epoch + self.step;
        cosine_with_ramp(self.base_lr, global, self.total_steps, self.ramp_steps)
    }
}

/// The state of an `auto` warm-up.
pub(super) struct AutoStop {
    pub(super) plateau: Plateau,
    /// Epoch, validation scores, weight and bias of the best head so far.
    pub(super) best: Option<(usize, Scores, Tensor, Tensor)>,
}

/// Validation loss and accuracy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scores {
    loss: f32,
    accuracy: f32,
    /// What the best checkpoint is chosen by: accuracy, or (multi-label) mAP.
    score: f32,
}

/// Whether `phase` trains on augmented images.
fn augments(augment: &AugmentConfig, phase: Phase) -> bool {
    match phase {
        Phase::Warmup => augment.warmup,
        Phase::Finetune => augment.finetune,
    }
}

impl Trainer {
    /// Switches to `phase` for `epochs` epochs, at a batch boundary.
    pub(super) fn start(
        &mut self,
        phase: Phase,
        epochs: usize,
        groups: Option<usize>,
    ) -> anyhow::Result<()> {
        let unfrozen = self.freeze_for(phase, groups);
        self.emit_freeze();
        self.control.pause(false);
        self.emit(Event::PhaseChanged {
            phase: Some(phase),
            epochs,
        });
        if epochs == 0 {
            self.run = None;
            return Ok(());
        }
        let run = self.new_run(phase, epochs)?;
        self.record.phases.push(PhaseRecord {
            phase,
            epochs: 0,
            lr: run.base_lr,
            unfrozen_groups: unfrozen,
            groups: self.backbone.parts().groups.len(),
            augmented: augments(&self.config.augment, phase),
        });
        self.run = Some(run);
        Ok(())
    }

    /// Freezes the backbone for `phase`: all of it to warm up, all but the last `groups`
    /// (`train.finetune_groups` when `None`; 0 = none) to fine-tune. Returns the unfrozen count.
    pub(super) fn freeze_for(&mut self, phase: Phase, groups: Option<usize>) -> usize {
        let n_groups = self.backbone.parts().groups.len();
        let unfrozen = match phase {
            Phase::Warmup => 0,
            Phase::Finetune => match groups.unwrap_or(self.config.train.finetune_groups) {
                0 => n_groups,
                k => k.min(n_groups),
            },
        };
        for i in 0..n_groups {
            self.backbone.set_trainable(i, i >= n_groups - unfrozen);
        }
        unfrozen
    }

    /// A fresh run of `phase` over `epochs` epochs with the backbone frozen as it stands
    /// (features prepared when it trains on them).
    pub(super) fn new_run(&mut self, phase: Phase, epochs: usize) -> anyhow::Result<Run> {
        let through_backbone = phase == Phase::Finetune || augments(&self.config.augment, phase);
        if !through_backbone {
            self.ensure_features()?;
        }
        let t = &self.config.train;
        let base_lr = match phase {
            Phase::Warmup => t.warmup_lr,
            Phase::Finetune => t.finetune_lr,
        };
        let steps_per_epoch = self
            .dataset
            .train
            .len()
            .div_ceil(self.config.data.batch_size);
        let total_steps = steps_per_epoch * epochs;
        let ramp_steps = match phase {
            Phase::Warmup => 0,
            Phase::Finetune => (total_steps as f64 * t.finetune_ramp_fraction).ceil() as usize,
        };
        Ok(Run {
            phase,
            epochs,
            epoch: 0,
            step: 0,
            steps_per_epoch,
            total_steps,
            ramp_steps,
            order: self.epoch_order(0),
            optimizer: AdamW::new(self.optimised_vars(), t.weight_decay)?,
            base_lr,
            through_backbone,
            auto: None,
        })
    }

    /// The phase a finder or an adopted rate concerns while none runs: fine-tuning once a
    /// warm-up has trained the head, else the warm-up.
    pub(super) fn next_phase(&self) -> Phase {
        let warmed = self
            .record
            .phases
            .iter()
            .any(|p| p.phase == Phase::Warmup && p.epochs > 0);
        if warmed {
            Phase::Finetune
        } else {
            Phase::Warmup
        }
    }

    /// The shuffled order of training samples for an epoch (seeded).
    pub(super) fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.train.len()).collect();
        let seed = self.config.data.seed
            ^ ((self.epochs_done + epoch + 1) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        order
    }

    /// One optimisation step of the running phase.
    pub(super) fn step(&mut self) -> anyhow::Result<()> {
        if crate::fault::injected("panic-engine") {
            panic!("injected fault: panic in the engine");
        }
        let started = Instant::now();
        let bs = self.config.data.batch_size;
        let run = self.run.as_ref().expect("step runs only in a phase");
        let idx = run.order[run.step * bs..((run.step + 1) * bs).min(run.order.len())].to_vec();
        let (epoch, lr) = (run.epoch, run.lr());
        let (loss, correct) = self.train_batch(&idx, epoch, lr)?;
        let run = self.run.as_mut().expect("step runs only in a phase");
        let phase = run.phase;
        self.trained_since_save = true;
        self.steps_done += 1;
        self.last_phase = Some(phase);
        let event = Event::Batch {
            phase,
            epoch: run.epoch + 1,
            step: run.step + 1,
            steps_per_epoch: run.steps_per_epoch,
            loss,
            accuracy: correct as f32 / idx.len() as f32,
            lr,
            images_per_sec: idx.len() as f64 / started.elapsed().as_secs_f64(),
        };
        run.step += 1;
        let epoch_done = run.step == run.steps_per_epoch;
        self.emit(event);
        if epoch_done {
            self.end_epoch()?;
        }
        Ok(())
    }

    /// Forward, backward and an optimiser step of the running phase at rate `lr` on the
    /// training samples `idx` (augmented as in the phase's epoch `epoch`); the loss and the
    /// number of correct predictions.
    pub(super) fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
        lr: f64,
    ) -> anyhow::Result<(f32, usize)> {
        let run = self.run.as_mut().expect("training runs only in a phase");
        let samples: Vec<&Sample> = idx.iter().map(|&i| &self.dataset.train[i]).collect();
        let classes = self.dataset.class_names.len();
        let y = self.objective.targets(&samples, classes, &self.device)?;
        let mut pass = None;
        let features = if run.through_backbone {
            let mode = if augments(&self.config.augment, run.phase) {
                BatchMode::Augment {
                    epoch: (self.epochs_done + epoch) as u64,
                }
            } else {
                BatchMode::Eval
            };
            let x = self.store.batch(&samples, mode, &self.device)?;
            let training =
                TrainingPass::run(self.backbone.as_ref(), &x, run.phase == Phase::Finetune)?;
            let features = training.features.clone();
            pass = Some(training);
            features
        } else {
            let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let cached = &self
                .features
                .as_ref()
                .expect("features were prepared")
                .train;
            cached.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        let logits = self.head.forward(&features, Some(&mut self.rng))?;
        let loss = self.objective.loss(&logits, &y)?;
        let mut grads = loss.backward()?;
        if let Some(pass) = pass {
            pass.backward(self.backbone.as_ref(), &mut grads)?;
        }
        run.optimizer.step(&grads, lr)?;
        let correct = self.objective.correct(&logits, &samples)?;
        if run.phase == Phase::Finetune {
            self.features = None;
            self.backbone_changed = true;
        }
        Ok((loss.to_scalar::<f32>()?, correct))
    }

    pub(super) fn end_epoch(&mut self) -> anyhow::Result<()> {
        let mut scores = self.validate()?;
        let run = self.run.as_mut().expect("an epoch ends inside a phase");
        let phase = run.phase;
        run.epoch += 1;
        run.step = 0;
        if let Some(record) = self.record.phases.last_mut() {
            record.epochs += 1;
        }
        let (epoch, epochs) = (run.epoch, run.epochs);
        let mut reason = (epoch == epochs).then(|| match run.auto {
            Some(_) => format!("reached the cap of {epochs} epochs"),
            None => format!("ran all {epochs} epochs"),
        });
        if let (Some(auto), Some(s)) = (run.auto.as_mut(), scores) {
            match auto.plateau.observe(s.loss) {
                Verdict::Improved => {
                    let (w, b) = (self.head.weight.as_tensor(), self.head.bias.as_tensor());
                    auto.best = Some((epoch, s, w.copy()?, b.copy()?));
                }
                Verdict::Stale => run.base_lr *= 0.5,
                Verdict::Stop => {
                    reason = Some(format!(
                        "validation loss has not improved for {} epochs",
                        auto.plateau.patience()
                    ))
                }
            }
        }
        if let (Some(why), Some(auto)) = (reason.as_mut(), run.auto.as_ref()) {
            if let Some((best, kept, w, b)) = &auto.best {
                if *best != epoch {
                    self.head.weight.set(w)?;
                    self.head.bias.set(b)?;
                }
                scores = Some(*kept);
                let score = match self.objective.task() {
                    Task::SingleLabel => format!("accuracy {:.4}", kept.accuracy),
                    Task::MultiLabel => format!("mAP {:.4}", kept.score),
                };
                why.push_str(&format!(
                    "; kept the head of epoch {best} (val loss {:.4}, {score})",
                    kept.loss
                ));
            }
        }
        let accuracy = scores.map(|s| s.accuracy);
        match phase {
            Phase::Warmup => self.summary.warmup_val_accuracy = accuracy,
            Phase::Finetune => self.summary.finetune_val_accuracy = accuracy,
        }
        if let Some(s) = scores {
            // The best checkpoint is chosen by the score: accuracy, or (multi-label) mAP.
            let multi = self.objective.task() == Task::MultiLabel;
            let best = if multi {
                self.summary.best_val_map
            } else {
                self.summary.best_val_accuracy
            };
            if best.is_none_or(|b| s.score > b) {
                self.summary.best_val_accuracy = Some(s.accuracy);
                if multi {
                    self.summary.best_val_map = Some(s.score);
                }
                self.save("best");
            }
        }
        if let Some(reason) = reason {
            self.epochs_done += epoch;
            self.run = None;
            self.emit(Event::PhaseFinished {
                phase,
                epochs: epoch,
                reason,
            });
            self.emit(Event::PhaseChanged {
                phase: None,
                epochs: 0,
            });
        } else {
            let order = self.epoch_order(epoch);
            self.run.as_mut().unwrap().order = order;
        }
        Ok(())
    }

    /// Validation loss, accuracy, per-class accuracy and confusion; `None` without a
    /// validation split.
    pub(super) fn validate(&mut self) -> anyhow::Result<Option<Scores>> {
        if self.dataset.val.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let logits = match &self.features {
            Some(f) if !self.backbone_changed => {
                self.head.forward(&f.val, None::<&mut ChaCha8Rng>)?
            }
            _ => {
                let mut parts = Vec::new();
                let samples: Vec<&Sample> = self.dataset.val.iter().collect();
                let meter = Meter::new(Pass::Validation, samples.len());
                let mut done = 0;
                for chunk in samples.chunks(self.config.data.batch_size.min(PASS_CHUNK)) {
                    let x = self.store.batch(chunk, BatchMode::Eval, &self.device)?;
                    let f = self.backbone.forward(&x, false)?;
                    parts.push(self.head.forward(&f, None::<&mut ChaCha8Rng>)?);
                    done += chunk.len();
                    self.control.between_batches(&meter, done)?;
                }
                Tensor::cat(&parts, 0)?
            }
        };
        if self.objective.task() == Task::MultiLabel {
            return self.validate_multi_label(&logits, t).map(Some);
        }
        let labels: Vec<u32> = self.dataset.val.iter().map(|s| s.class() as u32).collect();
        let y = Tensor::new(labels.as_slice(), &self.device)?;
        let loss = self.objective.plain_loss(&logits, &y)?.to_scalar::<f32>()?;
        let predicted = predictions(&logits)?;
        let mut confusion = Confusion::new(self.dataset.class_names.len());
        confusion.add(&labels, &predicted);
        let accuracy = confusion.accuracy();
        let accuracy_clean = self.clean_accuracy(&labels, &predicted);
        let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let samples = self.dataset.val.iter().zip(&probabilities);
        let top_losses = top_losses(
            samples.map(|(s, p)| (s.path.as_path(), p.as_slice(), s.class())),
            TOP_LOSSES,
        );
        let run = self.run.as_ref();
        let (phase, epoch) = (run.map(|r| r.phase), run.map(|r| r.epoch + 1).unwrap_or(0));
        self.record.validation = Some(ValidationRecord {
            phase,
            epoch,
            loss,
            accuracy,
            confusion: confusion.matrix.clone(),
            accuracy_clean,
            multi_label: None,
        });
        self.emit(Event::Validation {
            phase,
            epoch,
            loss,
            accuracy,
            accuracy_clean,
            per_class_accuracy: confusion.per_class_accuracy(),
            confusion: confusion.matrix,
            top_losses,
            multi_label: None,
            seconds: t.elapsed().as_secs_f64(),
        });
        Ok(Some(Scores {
            loss,
            accuracy,
            score: accuracy,
        }))
    }

    /// A multi-label validation of the validation images' `logits` (begun at `started`): the
    /// scores, each label's threshold (kept in the record, so checkpoints carry it), exact
    /// match as the accuracy.
    fn validate_multi_label(
        &mut self,
        logits: &Tensor,
        started: Instant,
    ) -> anyhow::Result<Scores> {
        let samples: Vec<&Sample> = self.dataset.val.iter().collect();
        let classes = self.dataset.class_names.len();
        let y = objective::multi_hot(&samples, classes, &self.device)?;
        let loss = self.objective.plain_loss(logits, &y)?.to_scalar::<f32>()?;
        let probabilities = candle_nn::ops::sigmoid(logits)?.to_vec2::<f32>()?;
        let labels: Vec<Vec<usize>> = samples.iter().map(|s| s.labels.clone()).collect();
        let scores = multi_label::scores(&probabilities, &labels, &self.dataset.class_names, None);
        let run = self.run.as_ref();
        let (phase, epoch) = (run.map(|r| r.phase), run.map(|r| r.epoch + 1).unwrap_or(0));
        let accuracy = scores.exact_match;
        self.record.validation = Some(ValidationRecord {
            phase,
            epoch,
            loss,
            accuracy,
            confusion: Vec::new(),
            accuracy_clean: None,
            multi_label: Some(scores.clone()),
        });
        let map = scores.map;
        let top_losses = multi_label_top_losses(
            samples
                .iter()
                .zip(&probabilities)
                .map(|(s, p)| (s.path.as_path(), p.as_slice(), s.labels.as_slice())),
            &scores.thresholds(),
            TOP_LOSSES,
        );
        self.emit(Event::Validation {
            phase,
            epoch,
            loss,
            accuracy,
            accuracy_clean: None,
            per_class_accuracy: scores.per_label.iter().map(|l| l.recall).collect(),
            confusion: Vec::new(),
            top_losses,
            multi_label: Some(scores),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(Scores {
            loss,
            accuracy,
            score: map,
        })
    }

    /// Accuracy over the validation images without a twin in training, when some have one.
    pub(super) fn clean_accuracy(&self, labels: &[u32], predicted: &[u32]) -> Option<f32> {
        let leaked = self.dataset.leaked_val_paths();
        if leaked.is_empty() {
            return None;
        }
        let (right, total) = self
            .dataset
            .val
            .iter()
            .zip(labels.iter().zip(predicted))
            .filter(|(s, _)| !leaked.contains(s.path.as_path()))
            .fold((0usize, 0usize), |(r, n), (_, (l, p))| {
                (r + usize::from(l == p), n + 1)
            });
        (total > 0).then(|| right as f32 / total as f32)
    }
}
