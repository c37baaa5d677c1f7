//! Applying engine events to the dashboard state, and the log lines they leave (the start-up
//! story: backbone and its origin, dataset rule, images used and skipped, warm-up features).

use super::*;

impl App {
    /// Updates the state from one engine event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Decoding { done, total } => self.decoding = Some((done, total)),
            Event::DatasetReady {
                task,
                class_root,
                classes,
                skipped,
                ignored,
                report,
                source,
                ..
            } => {
                self.task = task;
                self.class_root = Some(format!("{} — {source}", class_root.display()));
                // A multi-label image counts under each of its labels: its report counts images.
                let (train, val, what) = match &report.multi_label {
                    Some(m) => (m.train_images, m.val_images, "labels (multi-label)"),
                    None => {
                        let (t, v) = classes
                            .iter()
                            .fold((0, 0), |(t, v), c| (t + c.train, v + c.val));
                        (t, v, "classes")
                    }
                };
                self.log(
                    Level::Info,
                    format!(
                        "dataset: {} {what} by {source}, root {}",
                        classes.len(),
                        class_root.display()
                    ),
                );
                self.log(
                    Level::Info,
                    format!(
                        "images: {} used ({train} train, {val} validation), {} skipped, {ignored} ignored (hidden or not images)",
                        train + val,
                        skipped.len()
                    ),
                );
                self.classes = classes;
                self.skipped = skipped.len();
                self.data_report = Some(report);
                for s in skipped {
                    self.log(
                        Level::Warning,
                        format!("skipped {}: {}", s.path.display(), s.reason),
                    );
                }
            }
            Event::Download { progress } => self.download(progress),
            Event::ModelReady {
                backbone,
                architecture,
                device,
                groups,
                ..
            } => {
                let line = self.backbone_line(&backbone, &architecture, &device);
                self.log(Level::Info, line);
                self.backbone = backbone;
                self.architecture = architecture;
                self.device = device;
                self.groups = groups;
                self.status = Status::Idle;
            }
            Event::Features { status } => {
                let line = match &status {
                    FeatureStatus::Loaded { path, images } => format!(
                        "warm-up features: {images} images loaded from the cache {} (no backbone pass)",
                        path.display()
                    ),
                    FeatureStatus::Computed {
                        images,
                        seconds,
                        path,
                    } => format!(
                        "warm-up features: {images} images computed by the backbone in {seconds:.1} s{}",
                        path.as_ref()
                            .map(|p| format!(", cached at {}", p.display()))
                            .unwrap_or_else(|| ", not cached".into())
                    ),
                };
                self.log(Level::Info, line);
                self.features = Some(status);
            }
            Event::Progress {
                pass,
                done,
                total,
                images_per_sec,
                eta_seconds,
            } => {
                self.progress = Some(PassProgress {
                    pass,
                    done,
                    total,
                    images_per_sec,
                    eta_seconds,
                })
            }
            Event::LrChanged { phase, peak, lr } => {
                self.pending = None;
                self.lr = lr;
                self.log(
                    Level::Info,
                    format!("{phase} learning rate: peak {peak:.2e}, next batch {lr:.2e}"),
                );
            }
            Event::LabelIssues(issues) => {
                self.pending = None;
                self.log(
                    Level::Info,
                    format!(
                        "label issues: {} of {} images flagged, {} fit no class (out-of-fold accuracy {:.4}, {:.2} s)",
                        issues.flagged.len(),
                        issues.images,
                        issues.outliers.len(),
                        issues.out_of_fold_accuracy,
                        issues.seconds
                    ),
                );
                self.review.running = false;
                self.review.selected = 0;
                self.review.other = None;
                self.pictures.forget(LABEL_REVIEW_PICTURES);
                self.review.issues = Some(issues);
            }
            Event::LrFind(result) => {
                self.pending = None;
                let text = match result.suggestion {
                    Some(s) => format!(
                        "lr finder: suggestion {:.2e} (valley), steepest descent at {:.2e}",
                        s.valley, s.steepest
                    ),
                    None => format!("lr finder: {}", result.message),
                };
                self.log(Level::Info, text);
                self.lr_find = Some(result);
            }
            Event::PhaseChanged { phase, epochs } => {
                self.pending = None;
                self.status = match phase {
                    Some(p) => Status::Running(p),
                    None => Status::Idle,
                };
                self.phase_epochs = epochs;
                self.epoch = 0;
                self.step = 0;
                if let Some(p) = phase {
                    self.log(Level::Info, format!("{p} started ({epochs} epochs)"));
                }
            }
            Event::FreezeChanged {
                groups,
                trainable_params,
            } => {
                self.pending = None;
                self.groups = groups;
                self.trainable_params = trainable_params;
            }
            Event::Batch {
                phase,
                epoch,
                step,
                steps_per_epoch,
                loss,
                accuracy,
                lr,
                images_per_sec,
            } => {
                if step == 1 {
                    self.epoch_started = Some(Instant::now());
                    self.epoch_sums = (0.0, 0.0, 0);
                }
                self.epoch_sums.0 += loss as f64;
                self.epoch_sums.1 += accuracy as f64;
                self.epoch_sums.2 += 1;
                self.status = match self.status {
                    Status::Paused(_) => Status::Paused(phase),
                    _ => Status::Running(phase),
                };
                (self.epoch, self.step, self.steps_per_epoch) = (epoch, step, steps_per_epoch);
                self.images_per_sec = images_per_sec;
                self.lr = lr;
                self.batches += 1;
                self.losses.push(self.batches, phase, loss);
                self.accuracies.push(self.batches, phase, accuracy);
                self.unsaved = true;
            }
            Event::Validation {
                phase,
                epoch,
                loss,
                accuracy,
                accuracy_clean,
                seconds,
                confusion,
                top_losses,
                multi_label,
                ..
            } => {
                self.last_validation_secs = seconds;
                self.confusion = Some(confusion);
                // Multi-label runs chart mAP where single-label ones chart accuracy.
                let charted = multi_label.as_ref().map_or(accuracy, |m| m.map);
                self.top_losses = top_losses;
                self.selected_loss = 0;
                self.pictures.forget(TOP_LOSS_PICTURES);
                self.validations.push(ValPoint {
                    step: self.batches,
                    phase,
                    epoch,
                    loss,
                    accuracy: charted,
                });
                let (sum_loss, sum_acc, n) = self.epoch_sums;
                if let (Some(phase), true) = (phase, n > 0) {
                    self.history.push(EpochPoint {
                        phase,
                        epoch,
                        train_loss: (sum_loss / n as f64) as f32,
                        train_accuracy: (sum_acc / n as f64) as f32,
                        val_loss: loss,
                        val_accuracy: charted,
                    });
                }
                let label = crate::train::validation_label(phase, epoch);
                let clean = accuracy_clean
                    .map(|a| format!(" ({a:.4} without leaked images)"))
                    .unwrap_or_default();
                let scores = match &multi_label {
                    Some(m) => format!(
                        "mAP {:.4}, F1 micro {:.4} macro {:.4}, exact match {accuracy:.4}",
                        m.map, m.f1_micro, m.f1_macro
                    ),
                    None => format!("accuracy {accuracy:.4}{clean}"),
                };
                self.log(
                    Level::Info,
                    format!("{label}: val loss {loss:.4}, {scores}"),
                );
                self.label_scores = multi_label;
            }
            Event::AugmentationPreview {
                path,
                class,
                original,
                variants,
            } => {
                self.pending = None;
                self.pictures.forget(AUGMENTATION_PICTURES);
                self.preview = Some(AugmentationPreview {
                    path: path.display().to_string(),
                    class,
                    original,
                    variants,
                });
            }
            Event::PhaseFinished {
                phase,
                epochs,
                reason,
            } => {
                self.log(
                    Level::Info,
                    format!("{phase} finished after {epochs} epochs: {reason}"),
                );
            }
            Event::Paused => {
                self.pending = None;
                if let Status::Running(p) = self.status {
                    self.status = Status::Paused(p);
                }
            }
            Event::Resumed => {
                self.pending = None;
                if let Status::Paused(p) = self.status {
                    self.status = Status::Running(p);
                }
            }
            Event::CheckpointSaved { path, reason } => {
                if reason != "best" {
                    self.unsaved = false;
                    self.pending = None;
                }
                self.log(
                    Level::Info,
                    format!("checkpoint ({reason}) saved: {}", path.display()),
                );
                if self.quit_after_save && reason == "manual" {
                    self.should_quit = true;
                }
            }
            Event::Warning { message } => {
                self.pending = None;
                self.log(Level::Warning, message)
            }
            Event::Error { message } => {
                self.pending = None;
                // The finder, if it was running, ended with this error; `i` can ask again.
                self.review.running = false;
                self.quit_after_save = false;
                self.log(Level::Error, message);
            }
            Event::Finished(summary) => {
                self.status = Status::Finished;
                if summary.error.is_none() {
                    self.log(Level::Info, "the engine stopped".into());
                }
            }
        }
    }

    /// The start-up log's line for the backbone: what it is, where it runs, and where its
    /// weights came from (for a Hub repository, whether its files were downloaded or cached).
    fn backbone_line(&self, backbone: &str, architecture: &str, device: &str) -> String {
        let origin = match &self.weights_origin {
            Some(WeightsOrigin::Hub(repo)) => {
                let files = |cached: bool| {
                    self.downloads
                        .iter()
                        .filter(|d| d.complete && d.from_cache == cached)
                        .count()
                };
                let how = match (files(false), files(true)) {
                    (0, 0) => String::new(),
                    (0, _) => ", files from the local cache".into(),
                    (n, 0) => format!(", {n} file(s) downloaded"),
                    (n, c) => format!(", {n} file(s) downloaded, {c} from the local cache"),
                };
                return format!("backbone {architecture} on {device}: Hub repo {repo}{how}");
            }
            Some(WeightsOrigin::Local(path)) => {
                return format!("backbone {architecture} on {device}: local weights {path}")
            }
            Some(WeightsOrigin::Checkpoint(path)) => format!(": checkpoint {path}"),
            None => String::new(),
        };
        format!("backbone {backbone} ({architecture}) on {device}{origin}")
    }

    fn download(&mut self, progress: DownloadProgress) {
        let (file, done, total, complete, from_cache) = match progress {
            DownloadProgress::Bytes { file, done, total } => (file, done, total, false, false),
            DownloadProgress::Done { file, bytes } => (file, bytes, bytes, true, false),
            DownloadProgress::Cached { file, bytes } => (file, bytes, bytes, true, true),
            DownloadProgress::Retry {
                file,
                attempt,
                reason,
            } => {
                self.log(
                    Level::Warning,
                    format!("retrying {file} (attempt {attempt}): {reason}"),
                );
                return;
            }
        };
        let entry = match self.downloads.iter().position(|d| d.file == file) {
            Some(i) => &mut self.downloads[i],
            None => {
                self.downloads.push(FileDownload {
                    file,
                    done: 0,
                    total,
                    bytes_per_sec: 0.0,
                    from_cache,
                    complete: false,
                    started: Instant::now(),
                });
                self.downloads.last_mut().unwrap()
            }
        };
        entry.done = done;
        entry.total = total;
        entry.complete = complete;
        entry.from_cache = from_cache;
        let secs = entry.started.elapsed().as_secs_f64();
        if secs > 0.0 && !from_cache {
            entry.bytes_per_sec = done as f64 / secs;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::groups::Leakage;
    use crate::data::{CandidateReport, Skipped};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The dataset of the start-up events: two classes, one skipped file, a long root reason.
    pub(crate) fn dataset_ready() -> Event {
        let class = |name: &str, train, val| ClassCount {
            name: name.into(),
            train,
            val,
        };
        Event::DatasetReady {
            task: crate::data::Task::SingleLabel,
            class_root: "Data/Train_Data".into(),
            classes: vec![class("cat", 525, 175), class("dog", 524, 175)],
            skipped: vec![Skipped {
                path: "Data/Train_Data/cat/broken.jpg".into(),
                reason: "not a decodable image".into(),
            }],
            ignored: 2,
            cached_images: 1399,
            report: DataReport {
                multi_label: None,
                candidates: vec![
                    CandidateReport {
                        path: "Data/Train_Data".into(),
                        images: 1399,
                        chosen: true,
                        reason: "ranked first: named like training data, most images".into(),
                    },
                    CandidateReport {
                        path: "Data/Layer_Outputs/Cat".into(),
                        images: 128,
                        chosen: false,
                        reason: "looks like generated output (`output`)".into(),
                    },
                ],
                duplicates: vec![],
                leakage: Leakage {
                    val_images_with_train_twin: 3,
                    pairs: vec![],
                },
                corrections: vec![],
            },
            source: "class folders".into(),
        }
    }

    fn model_ready(backbone: &str) -> Event {
        Event::ModelReady {
            backbone: backbone.into(),
            architecture: "tf_efficientnet_lite0".into(),
            device: "cpu".into(),
            groups: vec![],
            head_params: 2562,
        }
    }

    fn has(app: &App, text: &str) -> bool {
        app.log.iter().any(|(_, l)| l.contains(text))
    }

    fn started(origin: WeightsOrigin, backbone: &str) -> App {
        let mut a = App::new("data".into(), backbone.into(), Epochs::Count(3), 2, true);
        a.weights_origin = Some(origin);
        a
    }

    #[test]
    fn the_log_tells_the_start_up_story() {
        let repo = "timm/tf_efficientnet_lite0.in1k";
        let mut a = started(WeightsOrigin::Hub(repo.into()), repo);
        for file in ["config.json", "model.safetensors"] {
            a.apply(Event::Download {
                progress: DownloadProgress::Cached {
                    file: file.into(),
                    bytes: 10,
                },
            });
        }
        a.apply(dataset_ready());
        a.apply(model_ready(repo));
        let log: Vec<&str> = a.log.iter().map(|(_, l)| l.as_str()).collect();
        assert!(
            has(
                &a,
                "dataset: 2 classes by class folders, root Data/Train_Data"
            ),
            "{log:#?}"
        );
        assert!(
            has(
                &a,
                "images: 1399 used (1049 train, 350 validation), 1 skipped, 2 ignored"
            ),
            "{log:#?}"
        );
        assert!(
            has(&a, "skipped Data/Train_Data/cat/broken.jpg"),
            "{log:#?}"
        );
        assert!(
            has(
                &a,
                "backbone tf_efficientnet_lite0 on cpu: Hub repo timm/tf_efficientnet_lite0.in1k, files from the local cache"
            ),
            "{log:#?}"
        );
        assert_eq!(a.status, Status::Idle);

        // At idle the log panel shows them.
        let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
        terminal.draw(|f| crate::ui::draw(f, &mut a)).unwrap();
        let buf = terminal.backend().buffer();
        let screen: String = (0..30)
            .map(|y| (0..100).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect();
        assert!(
            screen.contains("dataset: 2 classes by class folders"),
            "{screen}"
        );
        assert!(
            screen.contains("backbone tf_efficientnet_lite0 on cpu"),
            "{screen}"
        );

        a.apply(Event::Features {
            status: FeatureStatus::Loaded {
                path: "/tmp/features/abc.safetensors".into(),
                images: 1399,
            },
        });
        assert!(
            has(
                &a,
                "warm-up features: 1399 images loaded from the cache /tmp/features/abc.safetensors"
            ),
            "{:#?}",
            a.log
        );
        a.apply(Event::Features {
            status: FeatureStatus::Computed {
                images: 1399,
                seconds: 12.34,
                path: None,
            },
        });
        assert!(
            has(
                &a,
                "warm-up features: 1399 images computed by the backbone in 12.3 s, not cached"
            ),
            "{:#?}",
            a.log
        );
    }

    #[test]
    fn the_log_names_local_weights_and_checkpoints() {
        let weights = "hub/timm/lite0/model.safetensors";
        let mut a = started(WeightsOrigin::Local(weights.into()), weights);
        a.apply(model_ready(weights));
        assert!(
            has(
                &a,
                "backbone tf_efficientnet_lite0 on cpu: local weights hub/timm/lite0/model.safetensors"
            ),
            "{:#?}",
            a.log
        );
        let repo = "timm/tf_efficientnet_lite0.in1k";
        let mut b = started(
            WeightsOrigin::Checkpoint("ck/best.safetensors".into()),
            repo,
        );
        b.apply(model_ready(repo));
        assert!(
            has(
                &b,
                "backbone timm/tf_efficientnet_lite0.in1k (tf_efficientnet_lite0) on cpu: checkpoint ck/best.safetensors"
            ),
            "{:#?}",
            b.log
        );
        let mut c = started(WeightsOrigin::Hub(repo.into()), repo);
        c.apply(Event::Download {
            progress: DownloadProgress::Done {
                file: "model.safetensors".into(),
                bytes: 10,
            },
        });
        c.apply(model_ready(repo));
        assert!(has(
            &c,
            "Hub repo timm/tf_efficientnet_lite0.in1k, 1 file(s) downloaded"
        ));
    }
}
