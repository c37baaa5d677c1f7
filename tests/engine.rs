//! The training engine on a small generated dataset with a small random-weight backbone.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use tltui::config::{Config, Epochs};
use tltui::train::recipe::Recipe;
use tltui::train::{Command, Engine, EngineSetup, Event, Phase, WeightsSource};

struct Fixture {
    _dir: tempfile::TempDir,
    dataset: PathBuf,
    weights: PathBuf,
    checkpoints: PathBuf,
}

fn fixture(classes: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, classes, 16);
    let weights =
        common::write_random_model(&dir.path().join("model"), "tf_efficientnet_lite0", 64);
    Fixture {
        dataset,
        weights,
        checkpoints: dir.path().join("checkpoints"),
        _dir: dir,
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.data.batch_size = 8;
    c.data.val_fraction = 0.25;
    c.train.warmup_lr = 0.01;
    c.train.dropout = 0.0;
    c
}

fn setup(f: &Fixture, config: Config) -> EngineSetup {
    EngineSetup {
        dataset: f.dataset.clone(),
        source: tltui::data::SourceOptions::folders(),
        config,
        weights: WeightsSource::Local {
            weights: f.weights.clone(),
        },
        checkpoint_dir: f.checkpoints.clone(),
        feature_cache_dir: None,
        device: candle_core::Device::Cpu,
        replay: None,
    }
}

fn start(s: EngineSetup) -> (Engine, Receiver<Event>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (Engine::spawn(s, tx), rx)
}

/// Collects events until `stop` says so (or the engine finishes), failing after a minute.
fn until(rx: &Receiver<Event>, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("engine went quiet");
        let done = stop(&e) || matches!(e, Event::Finished(_));
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn summary(events: &[Event]) -> tltui::train::Summary {
    events
        .iter()
        .find_map(|e| match e {
            Event::Finished(s) => Some(s.clone()),
            _ => None,
        })
        .expect("finished")
}

fn batch_losses(events: &[Event]) -> Vec<(Phase, usize, f32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Batch {
                phase, epoch, loss, ..
            } => Some((*phase, *epoch, *loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn warmup_loss_falls_by_half() {
    let f = fixture(&["red", "blue", "green"]);
    let (engine, rx) = start(setup(&f, config()));
    engine
        .commands()
        .send(Command::Warmup {
            epochs: Epochs::Count(12),
        })
        .unwrap();
    let events = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    engine.commands().send(Command::Stop).unwrap();
    let end = until(&rx, |_| false);
    let losses = batch_losses(&events);
    let mean = |epoch| {
        let l: Vec<f32> = losses
            .iter()
            .filter(|(_, e, _)| *e == epoch)
            .map(|(_, _, l)| *l)
            .collect();
        l.iter().sum::<f32>() / l.len() as f32
    };
    assert!(
        mean(12) <= 0.5 * mean(1),
        "first epoch {} last {}",
        mean(1),
        mean(12)
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Features { .. })),
        "warm-up used cached features"
    );
    let s = summary(&end);
    assert!(s.error.is_none(), "{:?}", s.error);
    assert!(s.checkpoint.as_ref().is_some_and(|p| p.exists()));
    engine.join();
}

#[test]
fn phases_switch_mid_epoch_and_freeze_state_follows() {
    let f = fixture(&["red", "blue"]);
    let (engine, rx) = start(setup(&f, config()));
    let tx = engine.commands();
    tx.send(Command::Warmup {
        epochs: Epochs::Count(5),
    })
    .unwrap();
    let mut batches = 0;
    let events = until(&rx, |e| {
        if matches!(e, Event::Batch { .. }) {
            batches += 1;
            if batches == 2 {
                tx.send(Command::Finetune {
                    epochs: 1,
                    groups: Some(2),
                })
                .unwrap();
            }
        }
        matches!(
            e,
            Event::Batch {
                phase: Phase::Finetune,
                ..
            }
        )
    });
    let freeze: Vec<Vec<bool>> = events
        .iter()
        .filter_map(|e| match e {
            Event::FreezeChanged { groups, .. } => {
                Some(groups.iter().map(|g| g.trainable).collect())
            }
            _ => None,
        })
        .collect();
    let last = freeze.last().unwrap();
    assert!(
        freeze.iter().any(|f| f.iter().all(|t| !t)),
        "warm-up froze every group"
    );
    assert_eq!(
        last.iter().filter(|t| **t).count(),
        2,
        "fine-tune unfroze the last two groups: {last:?}"
    );
    assert!(last[last.len() - 1] && !last[0]);
    let first_ft = events.iter().find_map(|e| match e {
        Event::Batch {
            phase: Phase::Finetune,
            epoch,
            step,
            ..
        } => Some((*epoch, *step)),
        _ => None,
    });
    assert_eq!(first_ft, Some((1, 1)), "fine-tune starts at its first step");
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
}

#[test]
fn pause_holds_training_until_resume() {
    let f = fixture(&["red", "blue"]);
    let (engine, rx) = start(setup(&f, config()));
    let tx = engine.commands();
    tx.send(Command::Warmup {
        epochs: Epochs::Count(200),
    })
    .unwrap();
    until(&rx, |e| matches!(e, Event::Batch { .. }));
    tx.send(Command::Pause).unwrap();
    until(&rx, |e| matches!(e, Event::Paused));
    std::thread::sleep(Duration::from_millis(300));
    let during: Vec<Event> = rx.try_iter().collect();
    assert!(
        !during.iter().any(|e| matches!(e, Event::Batch { .. })),
        "no batches while paused"
    );
    tx.send(Command::Resume).unwrap();
    until(&rx, |e| matches!(e, Event::Batch { .. }));
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
}

fn saved(events: &[Event], reason: &str) -> PathBuf {
    events
        .iter()
        .find_map(|e| match e {
            Event::CheckpointSaved { path, reason: r } if r == reason => Some(path.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {reason} checkpoint in {events:?}"))
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn save_then_resume_restores_the_same_weights_and_mismatch_is_refused() {
    let f = fixture(&["red", "blue"]);
    let (engine, rx) = start(setup(&f, config()));
    let tx = engine.commands();
    tx.send(Command::Finetune {
        epochs: 1,
        groups: None,
    })
    .unwrap();
    until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    tx.send(Command::Save).unwrap();
    let events = until(
        &rx,
        |e| matches!(e, Event::CheckpointSaved { reason, .. } if reason == "manual"),
    );
    let first = saved(&events, "manual");
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();

    let mut s = setup(&f, config());
    s.weights = WeightsSource::Checkpoint {
        path: first.clone(),
    };
    s.checkpoint_dir = f.checkpoints.join("resumed");
    let (engine, rx) = start(s);
    engine.commands().send(Command::Save).unwrap();
    let events = until(&rx, |e| matches!(e, Event::CheckpointSaved { .. }));
    let second = saved(&events, "manual");
    assert_eq!(tensors(&first), tensors(&second));
    engine.commands().send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();

    let other = fixture(&["cyan", "magenta"]);
    let mut s = setup(&other, config());
    s.weights = WeightsSource::Checkpoint { path: first };
    let (engine, rx) = start(s);
    let s = summary(&until(&rx, |_| false));
    let err = s.error.expect("mismatched classes are refused");
    assert!(err.contains("classes") && err.contains("red"), "{err}");
    engine.join();
}

#[test]
fn unwritable_checkpoint_dir_is_reported_and_training_goes_on() {
    let f = fixture(&["red", "blue"]);
    let blocker = f.dataset.parent().unwrap().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let mut s = setup(&f, config());
    s.checkpoint_dir = blocker.join("checkpoints");
    let (engine, rx) = start(s);
    let tx = engine.commands();
    tx.send(Command::Warmup {
        epochs: Epochs::Count(2),
    })
    .unwrap();
    let events = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Error { message } if message.contains("checkpoint"))));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Validation { .. }))
            .count(),
        2,
        "both epochs ran"
    );
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
}

#[test]
fn same_seed_same_metrics() {
    let f = fixture(&["red", "blue"]);
    let run = || {
        let (engine, rx) = start(setup(&f, config()));
        engine
            .commands()
            .send(Command::Warmup {
                epochs: Epochs::Count(2),
            })
            .unwrap();
        engine
            .commands()
            .send(Command::Finetune {
                epochs: 1,
                groups: Some(1),
            })
            .unwrap();
        let events = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
        engine.commands().send(Command::Stop).unwrap();
        until(&rx, |_| false);
        engine.join();
        batch_losses(&events)
    };
    assert_eq!(run(), run());
}

#[test]
fn validation_ranks_top_losses_and_previews_show_training_images() {
    let f = fixture(&["red", "blue"]);
    let (engine, rx) = start(setup(&f, config()));
    let tx = engine.commands();
    tx.send(Command::Validate).unwrap();
    tx.send(Command::PreviewAugmentations).unwrap();
    tx.send(Command::PreviewAugmentations).unwrap();
    let mut previews = Vec::new();
    let events = until(&rx, |e| {
        if let Event::AugmentationPreview { path, .. } = e {
            previews.push(path.clone());
        }
        previews.len() == 2
    });
    let top = events
        .iter()
        .find_map(|e| match e {
            Event::Validation { top_losses, .. } => Some(top_losses.clone()),
            _ => None,
        })
        .expect("a validation");
    assert!(!top.is_empty());
    assert!(
        top.windows(2).all(|w| w[0].loss >= w[1].loss),
        "worst first"
    );
    for t in &top {
        assert!(t.path.starts_with(&f.dataset) && t.truth[0] < 2 && t.predicted[0] < 2);
        assert!(
            (t.loss
                - (-(if t.truth == t.predicted {
                    t.probability
                } else {
                    1.0 - t.probability
                })
                .ln()))
            .abs()
                < 1e-3
        );
    }
    for e in &events {
        if let Event::AugmentationPreview {
            path,
            class,
            original,
            variants,
        } = e
        {
            assert!(
                path.starts_with(f.dataset.join(class)),
                "{path:?} is a {class}"
            );
            assert_eq!(variants.len(), 8);
            let size = original.0.dimensions();
            assert!(variants.iter().all(|v| v.0.dimensions() == size));
            assert!(variants.iter().any(|v| v.0 != original.0), "augmented");
        }
    }
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
}

#[test]
fn a_given_split_with_copies_reports_clean_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("given");
    common::shapes_dataset(&dataset.join("train"), &["red", "blue"], 16);
    // The same generator draws the same first red images: exact copies across the split.
    common::shapes_dataset(&dataset.join("test"), &["red"], 4);
    // Blue validation images unlike any training image: gradients in four directions.
    std::fs::create_dir_all(dataset.join("test/blue")).unwrap();
    for (i, (ax, ay)) in [(1i32, 0i32), (0, 1), (1, 1), (-1, 1)]
        .into_iter()
        .enumerate()
    {
        image::RgbImage::from_fn(64, 64, |x, y| {
            let v = (ax * x as i32 + ay * y as i32 + 64).clamp(0, 127) as u8 * 2;
            image::Rgb([40, 60, v])
        })
        .save(dataset.join(format!("test/blue/{i}.png")))
        .unwrap();
    }
    let f = Fixture {
        weights: common::write_random_model(&dir.path().join("model"), "tf_efficientnet_lite0", 64),
        checkpoints: dir.path().join("checkpoints"),
        dataset,
        _dir: dir,
    };
    let (engine, rx) = start(setup(&f, config()));
    engine
        .commands()
        .send(Command::Warmup {
            epochs: Epochs::Count(1),
        })
        .unwrap();
    let events = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    engine.commands().send(Command::Stop).unwrap();
    let end = until(&rx, |_| false);
    let leaked = events
        .iter()
        .find_map(|e| match e {
            Event::DatasetReady { report, .. } => Some(report.leakage.clone()),
            _ => None,
        })
        .expect("dataset ready");
    assert!(leaked.val_images_with_train_twin >= 4, "{leaked:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Warning { message } if message.contains("validation images have an exact or near copy")
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Validation {
            accuracy_clean: Some(_),
            ..
        }
    )));
    assert_eq!(
        summary(&end).leaked_val_images,
        leaked.val_images_with_train_twin
    );
    engine.join();
}

fn accuracies(events: &[Event]) -> Vec<f32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Validation { accuracy, .. } => Some(*accuracy),
            _ => None,
        })
        .collect()
}

/// A run steered by hand — warm-up, the finder (left with Esc), LR x2 mid-epoch, fine-tune with one
/// group, `]` mid-epoch, save — then its recipe replayed: the same validations and weights.
#[test]
fn a_steered_run_replays_from_its_recipe_to_the_same_weights() {
    let f = fixture(&["red", "blue"]);
    let mut c = config();
    c.data.batch_size = 2;
    // Warm-up through the backbone, so that commands land mid-epoch.
    c.augment.warmup = true;
    let (engine, rx) = start(setup(&f, c.clone()));
    let tx = engine.commands();
    tx.send(Command::Warmup {
        epochs: Epochs::Count(1),
    })
    .unwrap();
    let mut steered = Vec::new();
    let mut batches = 0;
    steered.extend(until(&rx, |e| {
        match e {
            Event::Batch { .. } => {
                batches += 1;
                if batches == 1 {
                    tx.send(Command::FindLr { adopt: false }).unwrap();
                }
            }
            // The finder holds the phase until the user chooses; Esc sends Resume.
            Event::LrFind(_) => {
                tx.send(Command::ScaleLr(2.0)).unwrap();
                tx.send(Command::Resume).unwrap();
            }
            _ => {}
        }
        matches!(e, Event::PhaseFinished { .. })
    }));
    tx.send(Command::Finetune {
        epochs: 1,
        groups: Some(1),
    })
    .unwrap();
    let mut unfrozen = false;
    steered.extend(until(&rx, |e| {
        if matches!(
            e,
            Event::Batch {
                phase: Phase::Finetune,
                ..
            }
        ) && !unfrozen
        {
            unfrozen = true;
            tx.send(Command::Unfreeze(1)).unwrap();
        }
        matches!(e, Event::PhaseFinished { .. })
    }));
    tx.send(Command::Save).unwrap();
    let events = until(
        &rx,
        |e| matches!(e, Event::CheckpointSaved { reason, .. } if reason == "manual"),
    );
    let first = saved(&events, "manual");
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();

    let lr_find = steered.iter().find_map(|e| match e {
        Event::LrFind(r) => Some(r.clone()),
        _ => None,
    });
    assert!(lr_find.is_some_and(|r| r.points.len() > 5 && r.adopted.is_none()));
    let after_finder: Vec<&Event> = steered
        .iter()
        .skip_while(|e| !matches!(e, Event::LrFind(_)))
        .skip(1)
        .filter(|e| matches!(e, Event::Paused | Event::Resumed | Event::Batch { .. }))
        .take(2)
        .collect();
    assert!(
        matches!(after_finder[..], [Event::Paused, Event::Resumed]),
        "the finder holds the phase until Resume: {after_finder:?}"
    );
    let recipe = Recipe::load(&f.checkpoints.join("recipe.toml")).unwrap();
    let actions: Vec<String> = recipe
        .decisions
        .iter()
        .map(|d| format!("{}@{:?}", d.step, d.action))
        .collect();
    eprintln!("recipe decisions: {actions:?}");
    let steps_per_epoch = 12;
    use tltui::train::recipe::Action;
    match recipe.decisions.as_slice() {
        [w, x2, ft, more] => {
            assert_eq!(w.step, 0);
            assert!(matches!(w.action, Action::Warmup { .. }));
            assert_eq!(x2.action, Action::ScaleLr { factor: 2.0 });
            assert!(
                x2.step > 0 && x2.step < steps_per_epoch,
                "x2 mid-epoch: {actions:?}"
            );
            assert_eq!(ft.step, steps_per_epoch);
            assert_eq!(
                ft.action,
                Action::Finetune {
                    epochs: 1,
                    groups: Some(1)
                }
            );
            assert_eq!(more.action, Action::TrainableGroups { groups: 2 });
            assert!(more.step > ft.step && more.step < 2 * steps_per_epoch);
        }
        _ => panic!("unexpected decisions {actions:?}"),
    }
    assert_eq!(
        tltui::train::checkpoint::Checkpoint::load(&first, &candle_core::Device::Cpu)
            .unwrap()
            .meta
            .recipe
            .as_ref(),
        Some(&recipe),
        "the checkpoint's metadata holds the recipe"
    );

    let mut s = setup(&f, recipe.config.clone());
    s.checkpoint_dir = f.checkpoints.join("replayed");
    s.replay = Some(recipe.clone());
    let (engine, rx) = start(s);
    let replayed = until(&rx, |_| false);
    let summary = summary(&replayed);
    assert!(summary.error.is_none(), "{:?}", summary.error);
    engine.join();
    assert_eq!(accuracies(&replayed), accuracies(&steered));
    let a = tensors(&first);
    let b = tensors(&saved(&replayed, "final"));
    assert_eq!(a.len(), b.len());
    let max_diff = a
        .iter()
        .zip(&b)
        .flat_map(|((ka, va), (kb, vb))| {
            assert_eq!(ka, kb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0f32, f32::max);
    eprintln!("replay: max abs weight difference {max_diff:e}");
    assert_eq!(max_diff, 0.0);
    let again = Recipe::load(&f.checkpoints.join("replayed/recipe.toml")).unwrap();
    assert_eq!(
        again.decisions, recipe.decisions,
        "the replay records the same"
    );
}

/// An `auto` warm-up stops by itself once validation loss stops improving and says why.
#[test]
fn auto_warmup_stops_on_a_plateau_and_keeps_the_best_head() {
    let f = fixture(&["red", "blue"]);
    let mut c = config();
    c.train.warmup_patience = 2;
    c.train.warmup_max_epochs = 200;
    let (engine, rx) = start(setup(&f, c));
    engine
        .commands()
        .send(Command::Warmup {
            epochs: Epochs::Auto,
        })
        .unwrap();
    let events = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    engine.commands().send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
    let losses: Vec<f32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Validation { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    let Some(Event::PhaseFinished { epochs, reason, .. }) = events.last() else {
        panic!("no end of phase");
    };
    assert_eq!(*epochs, losses.len());
    assert!(*epochs < 200, "stopped before the cap");
    assert!(reason.contains("not improved for 2 epochs"), "{reason}");
    let kept: usize = reason
        .split("kept the head of epoch ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    let best = losses.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(
        losses[kept - 1] <= best + 1e-4,
        "kept epoch {kept} of {losses:?}"
    );
    assert_eq!(losses.len(), kept + 2, "patience of two epochs: {losses:?}");
}

/// Between phases the finder tests the phase that comes next (fine-tuning after a warm-up),
/// leaves the backbone frozen as it was, and an adopted rate becomes that phase's peak; the
/// recipe replays the adoption.
#[test]
fn the_finder_between_phases_sets_the_next_phase_rate() {
    let f = fixture(&["red", "blue"]);
    let (engine, rx) = start(setup(&f, config()));
    let tx = engine.commands();
    tx.send(Command::Warmup {
        epochs: Epochs::Count(1),
    })
    .unwrap();
    until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    tx.send(Command::FindLr { adopt: false }).unwrap();
    let found = until(&rx, |e| matches!(e, Event::LrFind(_)));
    assert!(
        !found
            .iter()
            .any(|e| matches!(e, Event::Paused | Event::FreezeChanged { .. })),
        "no phase to hold, freezing untouched: {found:?}"
    );
    let Some(Event::LrFind(result)) = found.last() else {
        unreachable!()
    };
    let lr = result.suggestion.expect("a suggestion").valley;
    tx.send(Command::AdoptLr(lr)).unwrap();
    let changed = until(&rx, |e| matches!(e, Event::LrChanged { .. }));
    assert!(matches!(
        changed.last(),
        Some(Event::LrChanged { phase: Phase::Finetune, peak, .. }) if *peak == lr
    ));
    tx.send(Command::Finetune {
        epochs: 1,
        groups: None,
    })
    .unwrap();
    let tuned = until(&rx, |e| matches!(e, Event::PhaseFinished { .. }));
    let peak = tuned
        .iter()
        .filter_map(|e| match e {
            Event::Batch { lr, .. } => Some(*lr),
            _ => None,
        })
        .fold(0f64, f64::max);
    assert!(
        peak <= lr * (1.0 + 1e-9) && peak > 0.9 * lr,
        "fine-tune peaks at the adopted {lr:e}, got {peak:e}"
    );
    tx.send(Command::Stop).unwrap();
    until(&rx, |_| false);
    engine.join();
    let recipe = Recipe::load(&f.checkpoints.join("recipe.toml")).unwrap();
    assert!(recipe
        .decisions
        .iter()
        .any(|d| d.action == tltui::train::recipe::Action::AdoptLr { lr }));
}

/// An interrupt while the images decode ends the engine there: interrupted, no error, no
/// dataset, nothing saved.
#[test]
fn an_interrupt_during_decoding_ends_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 200);
    let weights =
        common::write_random_model(&dir.path().join("model"), "tf_efficientnet_lite0", 64);
    let f = Fixture {
        dataset,
        weights,
        checkpoints: dir.path().join("checkpoints"),
        _dir: dir,
    };
    let (engine, rx) = start(setup(&f, config()));
    engine.commands().send(Command::Interrupt).unwrap();
    let events = until(&rx, |_| false);
    engine.join();
    let s = summary(&events);
    assert!(s.interrupted && s.error.is_none(), "{s:?}");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::DatasetReady { .. } | Event::CheckpointSaved { .. }
        )),
        "decoding ended before the dataset was ready"
    );
    assert!(!f.checkpoints.exists() || std::fs::read_dir(&f.checkpoints).unwrap().count() == 0);
}
