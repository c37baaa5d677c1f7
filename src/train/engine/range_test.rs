//! The learning-rate finder on the engine: a range test from the current weights of the running
//! phase (or, between phases, of the phase that comes next), which leaves weights, optimiser
//! state, freezing, random draws and data order as they were.

use super::{Meter, Trainer};
use crate::train::lr_find::{self, Curve, LrFind};
use crate::train::{Event, Pass, Phase};
use candle_core::{Tensor, Var};
use std::time::Instant;

impl Trainer {
    /// Runs the range test over the batches the phase would train on next; `adopt` makes the
    /// suggestion the phase's rate. Between phases it tests a trial run of
    /// [`Trainer::next_phase`], frozen as that phase starts by default.
    pub(super) fn find_lr(&mut self, adopt: bool) -> anyhow::Result<()> {
        let adopted = match self.run {
            Some(_) => self.range_test(adopt)?,
            None => self.trial_range_test(adopt)?,
        };
        if let Some(lr) = adopted {
            self.adopt_lr(lr);
        }
        Ok(())
    }

    /// The range test of a one-epoch trial run of the next phase; freezing is restored after.
    fn trial_range_test(&mut self, adopt: bool) -> anyhow::Result<Option<f64>> {
        let trainable: Vec<bool> = self
            .backbone
            .parts()
            .groups
            .iter()
            .map(|g| g.trainable)
            .collect();
        let phase = self.next_phase();
        self.freeze_for(phase, None);
        let result = self.new_run(phase, 1).and_then(|run| {
            self.run = Some(run);
            self.range_test(adopt)
        });
        self.run = None;
        for (i, trainable) in trainable.into_iter().enumerate() {
            self.backbone.set_trainable(i, trainable);
        }
        result
    }

    /// The range test of the running phase: emits the curve; the rate to adopt, if `adopt`.
    fn range_test(&mut self, adopt: bool) -> anyhow::Result<Option<f64>> {
        let run = self.run.as_ref().expect("a phase runs");
        let started = Instant::now();
        let optimizer = run.optimizer.clone();
        let mut vars = self.head.vars();
        if run.phase == Phase::Finetune {
            vars.extend(self.backbone.parts().params.iter().map(|(_, v)| v.clone()));
        }
        let weights = vars
            .into_iter()
            .map(|v| Ok((v.as_tensor().copy()?, v)))
            .collect::<candle_core::Result<Vec<(Tensor, Var)>>>()?;
        let (rng, features, backbone_changed) = (
            self.rng.clone(),
            self.features.clone(),
            self.backbone_changed,
        );
        let batches = self.upcoming_batches(lr_find::STEPS);

        let mut curve = Curve::default();
        let meter = Meter::new(Pass::LrFind, batches.iter().map(|(b, _)| b.len()).sum());
        let mut done = 0;
        let mut diverged = false;
        let result = (|| -> anyhow::Result<()> {
            for (i, (idx, epoch)) in batches.iter().enumerate() {
                let lr = lr_find::lr_at(i, batches.len());
                let (loss, _) = self.train_batch(idx, *epoch, lr)?;
                if curve.push(lr, loss) {
                    diverged = i + 1 < batches.len();
                    break;
                }
                done += idx.len();
                self.control.between_batches(&meter, done)?;
            }
            Ok(())
        })();

        for (value, var) in &weights {
            var.set(value)?;
        }
        self.run.as_mut().expect("the phase still runs").optimizer = optimizer;
        (self.rng, self.features, self.backbone_changed) = (rng, features, backbone_changed);
        result?;

        let (verdict, suggestion) = lr_find::read(&curve.points);
        let adopted = suggestion.filter(|_| adopt).map(|s| s.valley);
        self.emit(Event::LrFind(LrFind {
            points: curve.points,
            verdict,
            message: verdict.to_string(),
            suggestion,
            diverged,
            adopted,
            seconds: started.elapsed().as_secs_f64(),
        }));
        Ok(adopted)
    }

    /// The next `n` batches of training samples from the running phase's position, with the
    /// phase epoch each belongs to (later epochs in their own seeded order).
    fn upcoming_batches(&self, n: usize) -> Vec<(Vec<usize>, usize)> {
        let run = self.run.as_ref().expect("a phase runs");
        let bs = self.config.data.batch_size;
        let mut epoch = run.epoch;
        let mut order = run.order[(run.step * bs).min(run.order.len())..].to_vec();
        let mut batches = Vec::with_capacity(n);
        while batches.len() < n && !self.dataset.train.is_empty() {
            if order.is_empty() {
                epoch += 1;
                order = self.epoch_order(epoch);
            }
            let take = bs.min(order.len());
            batches.push((order.drain(..take).collect(), epoch));
        }
        batches
    }
}
