//! Pretrained features of every image for a warm-up on the head alone: from memory, from the
//! disk cache, or from one pass of the frozen backbone.

use super::*;
use crate::train::label_issues;
use crate::train::FeatureStatus;

/// Pooled features of the training and validation images, in split order.
#[derive(Clone)]
pub(super) struct Features {
    pub(super) train: Tensor,
    pub(super) val: Tensor,
    /// Where they came from.
    status: FeatureStatus,
}

impl Trainer {
    /// Makes sure pretrained features of every image are at hand: from memory, from the disk
    /// cache, or from one pass of the frozen backbone (then saved).
    pub(super) fn ensure_features(&mut self) -> anyhow::Result<()> {
        if self.features.is_some() {
            return Ok(());
        }
        let samples = features::cache_order(&self.dataset.train, &self.dataset.val);
        let path = self
            .feature_cache_dir
            .as_ref()
            .filter(|_| !self.backbone_changed)
            .map(|dir| {
                let key = features::cache_key(
                    &samples,
                    &self.weights_path,
                    &self.model_config.architecture,
                    self.store.preprocess(),
                );
                features::cache_path(dir, &key)
            });
        let meter = Meter::new(Pass::Features, samples.len());
        let control = &mut self.control;
        let (backbone, store, device) = (self.backbone.as_ref(), &self.store, &self.device);
        let batch = self.config.data.batch_size.min(PASS_CHUNK);
        let (all, status, warning) =
            features::load_or_compute(path.as_deref(), samples.len(), device, || {
                let mut progress = |done| control.between_batches(&meter, done);
                features::compute(backbone, store, &samples, batch, device, &mut progress)
            })?;
        if let Some(message) = warning {
            self.emit(Event::Warning { message });
        }
        self.emit(Event::Features {
            status: status.clone(),
        });
        self.features = Some(self.split_rows(&all, &samples, status)?);
        Ok(())
    }

    /// Runs the label-issue finder on the features of every image, training and validation
    /// alike, and reports it ([`Event::LabelIssues`]) and records its counts for checkpoints.
    pub(super) fn find_label_issues(&mut self, folds: usize) -> anyhow::Result<()> {
        if self.dataset.task == Task::MultiLabel {
            self.emit(Event::Warning {
                message: label_issues::MULTI_LABEL_FINDER.into(),
            });
            return Ok(());
        }
        self.ensure_features()?;
        let features = self.features.as_ref().expect("features were prepared");
        let all = Tensor::cat(&[&features.train, &features.val], 0)?;
        let samples: Vec<&Sample> = self.dataset.train.iter().chain(&self.dataset.val).collect();
        let issues = label_issues::find(
            &self.dataset,
            &samples,
            &all,
            features.status.clone(),
            &self.config,
            folds,
        )?;
        self.record.labels.flagged = Some(issues.flagged.len());
        self.record.labels.fit_no_class = Some(issues.outliers.len());
        self.emit(Event::LabelIssues(issues));
        Ok(())
    }

    /// The training and validation rows of features computed for `samples` (in that order).
    fn split_rows(
        &self,
        all: &Tensor,
        samples: &[&Sample],
        status: FeatureStatus,
    ) -> anyhow::Result<Features> {
        let row: std::collections::HashMap<&Path, u32> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.as_path(), i as u32))
            .collect();
        let pick = |split: &[Sample]| -> anyhow::Result<Tensor> {
            let rows: Vec<u32> = split.iter().map(|s| row[s.path.as_path()]).collect();
            Ok(all.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?)
        };
        Ok(Features {
            train: pick(&self.dataset.train)?,
            val: pick(&self.dataset.val)?,
            status,
        })
    }
}
