//! Live changes to a running phase: its learning rate (`+`, `-`, an adopted finder suggestion)
//! and how many layer groups train (`[`, `]`). Each takes effect from the next batch and is
//! recorded in the recipe.

use super::Trainer;
use crate::train::recipe::Action;
use crate::train::{Event, Phase};
use candle_core::Var;

impl Trainer {
    /// The variables the optimiser updates, with their learning-rate multipliers: the head at
    /// 1, each trainable backbone group at `layer_lr_decay` per group from the head.
    pub(super) fn optimised_vars(&self) -> Vec<(Var, f64)> {
        let n_groups = self.backbone.parts().groups.len();
        let decay = self.config.train.layer_lr_decay;
        let head = self.head.vars().into_iter().map(|v| (v, 1.0));
        let backbone = self
            .backbone
            .trainable_vars()
            .into_iter()
            .map(|(group, var)| (var, decay.powi((n_groups - group) as i32)));
        head.chain(backbone).collect()
    }

    /// Multiplies the running phase's peak rate by `factor`; the schedule goes on from there.
    pub(super) fn scale_lr(&mut self, factor: f64) {
        if let Some(peak) = self.run.as_ref().map(|r| r.base_lr * factor) {
            self.set_peak_lr(peak, Action::ScaleLr { factor });
        } else {
            self.warn("no phase is running: + and - change the rate of a running phase");
        }
    }

    /// Makes `lr` the running phase's peak rate (the finder's suggestion) and resumes the phase
    /// the finder held; between phases, the rate of the next phase ([`Trainer::next_phase`]).
    pub(super) fn adopt_lr(&mut self, lr: f64) {
        if self.run.is_some() {
            self.set_peak_lr(lr, Action::AdoptLr { lr });
            self.control.pause(false);
            return;
        }
        let phase = self.next_phase();
        match phase {
            Phase::Warmup => self.config.train.warmup_lr = lr,
            Phase::Finetune => self.config.train.finetune_lr = lr,
        }
        self.decide(Action::AdoptLr { lr });
        self.emit(Event::LrChanged {
            phase,
            peak: lr,
            lr,
        });
    }

    fn set_peak_lr(&mut self, peak: f64, action: Action) {
        let run = self.run.as_mut().expect("checked by the callers");
        run.base_lr = peak;
        let event = Event::LrChanged {
            phase: run.phase,
            peak,
            lr: run.lr(),
        };
        self.decide(action);
        self.emit(event);
    }

    /// Unfreezes (`more` > 0) or freezes (`more` < 0) that many more groups from the head side.
    pub(super) fn unfreeze(&mut self, more: isize) -> anyhow::Result<()> {
        let groups = &self.backbone.parts().groups;
        let trainable = groups.iter().filter(|g| g.trainable).count();
        let wanted = trainable.saturating_add_signed(more).min(groups.len());
        if wanted != trainable {
            self.set_trainable_groups(wanted)?;
        }
        Ok(())
    }

    /// During fine-tuning, lets exactly the last `groups` layer groups train; the optimiser keeps
    /// its state for the groups that stay trainable.
    pub(super) fn set_trainable_groups(&mut self, groups: usize) -> anyhow::Result<()> {
        if self.run.as_ref().map(|r| r.phase) != Some(Phase::Finetune) {
            self.warn("layer groups are frozen and unfrozen during fine-tuning (press f first)");
            return Ok(());
        }
        let n_groups = self.backbone.parts().groups.len();
        let groups = groups.min(n_groups);
        for i in 0..n_groups {
            self.backbone.set_trainable(i, i >= n_groups - groups);
        }
        let vars = self.optimised_vars();
        self.run
            .as_mut()
            .expect("checked above")
            .optimizer
            .retarget(vars)?;
        self.decide(Action::TrainableGroups { groups });
        self.emit_freeze();
        Ok(())
    }

    fn warn(&self, message: &str) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }
}
