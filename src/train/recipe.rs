//! The recipe of a run: the configuration it used, where its backbone came from, and every
//! decision that shaped its weights with the global step it took effect at. Written as
//! `recipe.toml` beside the checkpoints and into each checkpoint's metadata; replaying it
//! (`--headless --recipe FILE`) issues the same commands at the same steps.

use super::Command;
use crate::config::{Config, Epochs};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// File name of the recipe beside the checkpoints.
pub const FILE_NAME: &str = "recipe.toml";

/// Everything needed to train the same weights again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The tltui version that recorded it.
    pub tltui: String,
    /// The backbone's Hub id (or local weights path).
    pub backbone: String,
    /// The Hub commit the weights came from, when they came from the Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub seed: u64,
    /// The class folder the run trained on.
    pub class_root: PathBuf,
    /// The decisions, in the order they took effect.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// The label corrections applied to the dataset's images, replayed as recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrections: Vec<crate::data::corrections::Correction>,
    /// The configuration the run used.
    pub config: Config,
}

/// One decision and the number of optimisation steps done before it took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub step: usize,
    #[serde(flatten)]
    pub action: Action,
}

/// A command that changes what training does (pause, resume, save and validation do not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Warmup {
        epochs: Epochs,
    },
    Finetune {
        epochs: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<usize>,
    },
    /// `+` / `-`: the phase's rate multiplied by `factor`.
    ScaleLr {
        factor: f64,
    },
    /// The finder's suggestion adopted as the phase's peak rate.
    AdoptLr {
        lr: f64,
    },
    /// `[` / `]`: this many layer groups, from the head side, now train.
    TrainableGroups {
        groups: usize,
    },
}

impl Action {
    /// The command that replays this decision.
    pub fn command(&self) -> Command {
        match *self {
            Action::Warmup { epochs } => Command::Warmup { epochs },
            Action::Finetune { epochs, groups } => Command::Finetune { epochs, groups },
            Action::ScaleLr { factor } => Command::ScaleLr(factor),
            Action::AdoptLr { lr } => Command::AdoptLr(lr),
            Action::TrainableGroups { groups } => Command::TrainableGroups(groups),
        }
    }
}

impl Recipe {
    /// Reads a recipe from a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read recipe {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("recipe {}: {e}", path.display()))
    }

    /// The recipe as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Writes the recipe atomically to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::atomic::atomic_write(path, self.to_toml()?.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write recipe {}: {e}", path.display()))
    }

    /// Appends a decision taken after `step` optimisation steps.
    pub fn record(&mut self, step: usize, action: Action) {
        self.decisions.push(Decision { step, action });
    }

    /// The decisions, ready to be replayed.
    pub fn replay(&self) -> Replay {
        Replay(self.decisions.iter().cloned().collect())
    }
}

/// The decisions of a recipe not yet replayed.
#[derive(Debug, Clone)]
pub struct Replay(VecDeque<Decision>);

/// What a replay asks of the engine at a batch boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Apply this command now.
    Now(Command),
    /// Keep training: the next decision comes at a later step.
    Later,
    /// Every decision was replayed and the engine is idle.
    Done,
}

impl Replay {
    /// What to do after `steps` optimisation steps, `idle` when no phase runs.
    pub fn due(&mut self, steps: usize, idle: bool) -> anyhow::Result<Due> {
        match self.0.front() {
            Some(d) if d.step == steps => {
                Ok(Due::Now(self.0.pop_front().unwrap().action.command()))
            }
            Some(d) if d.step < steps || idle => anyhow::bail!(
                "the recipe's {:?} at step {} cannot be replayed: the run is {} at step {steps} \
                 (another dataset, split or configuration?)",
                d.action,
                d.step,
                if idle { "idle" } else { "past it" }
            ),
            Some(_) => Ok(Due::Later),
            None if idle => Ok(Due::Done),
            None => Ok(Due::Later),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        let mut r = Recipe {
            tltui: "0.1.0".into(),
            backbone: "timm/x".into(),
            revision: Some("abc".into()),
            seed: 42,
            class_root: "/data/pets".into(),
            decisions: Vec::new(),
            corrections: vec![crate::data::corrections::Correction {
                file: "cat/12.jpg".into(),
                decision: crate::data::corrections::Decision::Relabel,
                label: Some("dog".into()),
            }],
            config: Config::default(),
        };
        r.record(
            0,
            Action::Warmup {
                epochs: Epochs::Count(1),
            },
        );
        r.record(3, Action::ScaleLr { factor: 2.0 });
        r.record(
            8,
            Action::Finetune {
                epochs: 2,
                groups: Some(1),
            },
        );
        r.record(11, Action::TrainableGroups { groups: 2 });
        r.record(11, Action::AdoptLr { lr: 3e-4 });
        r
    }

    #[test]
    fn toml_round_trip() {
        let r = recipe();
        let text = r.to_toml().unwrap();
        assert!(text.contains("action = \"scale_lr\""), "{text}");
        assert_eq!(toml::from_str::<Recipe>(&text).unwrap(), r);
    }

    #[test]
    fn replay_issues_each_decision_at_its_step() {
        let mut replay = recipe().replay();
        assert_eq!(
            replay.due(0, true).unwrap(),
            Due::Now(Command::Warmup {
                epochs: Epochs::Count(1)
            })
        );
        assert_eq!(replay.due(1, false).unwrap(), Due::Later);
        assert_eq!(
            replay.due(3, false).unwrap(),
            Due::Now(Command::ScaleLr(2.0))
        );
        assert!(replay.due(9, false).is_err(), "step 8 was missed");
    }

    #[test]
    fn an_idle_run_before_the_next_decision_is_an_error_and_the_end_is_done() {
        let mut replay = recipe().replay();
        replay.due(0, true).unwrap();
        let e = replay.due(2, true).unwrap_err().to_string();
        assert!(e.contains("step 3") && e.contains("idle"), "{e}");
        let mut empty = Replay(VecDeque::new());
        assert_eq!(empty.due(5, true).unwrap(), Due::Done);
        assert_eq!(empty.due(5, false).unwrap(), Due::Later);
    }
}
