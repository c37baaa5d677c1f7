//! Every MobileNet family fine-tunes: a warm-up and a fine-tune epoch of the training engine on a
//! small generated dataset with a random-weight backbone, the loss finite and falling.

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;
use tltui::config::Config;
use tltui::train::{Command, Engine, EngineSetup, Event, Phase, WeightsSource};

/// Collects events until `phase` finishes, failing after two quiet minutes.
fn until_finished(rx: &Receiver<Event>, phase: Phase) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("engine went quiet");
        let done = matches!(e, Event::PhaseFinished { phase: p, .. } if p == phase)
            || matches!(e, Event::Finished(_));
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Mean batch loss of each epoch of `phase`, in order.
fn epoch_losses(events: &[Event], phase: Phase) -> Vec<f32> {
    let mut epochs: Vec<Vec<f32>> = Vec::new();
    for e in events {
        if let Event::Batch {
            phase: p,
            epoch,
            loss,
            ..
        } = e
        {
            if *p == phase {
                epochs.resize(epochs.len().max(*epoch), Vec::new());
                epochs[epoch - 1].push(*loss);
            }
        }
    }
    epochs
        .iter()
        .map(|l| l.iter().sum::<f32>() / l.len() as f32)
        .collect()
}

fn finetunes(arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("shapes");
    common::shapes_dataset(&dataset, &["red", "blue"], 16);
    let weights = common::write_random_model(&dir.path().join("model"), arch, 64);
    let mut config = Config::default();
    config.data.batch_size = 8;
    config.data.val_fraction = 0.25;
    config.train.warmup_lr = 0.01;
    config.train.dropout = 0.0;
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::spawn(
        EngineSetup {
            dataset,
            source: tltui::data::SourceOptions::folders(),
            config,
            weights: WeightsSource::Local { weights },
            checkpoint_dir: dir.path().join("checkpoints"),
            feature_cache_dir: None,
            device: candle_core::Device::Cpu,
            replay: None,
        },
        tx,
    );
    engine
        .commands()
        .send(Command::Warmup {
            epochs: tltui::config::Epochs::Count(4),
        })
        .unwrap();
    let mut events = until_finished(&rx, Phase::Warmup);
    engine
        .commands()
        .send(Command::Finetune {
            epochs: 1,
            groups: None,
        })
        .unwrap();
    events.extend(until_finished(&rx, Phase::Finetune));
    engine.commands().send(Command::Stop).unwrap();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Event::Finished(s)) => {
                assert!(s.error.is_none(), "{arch}: {:?}", s.error);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{arch}: engine went quiet: {e}"),
        }
    }
    engine.join();
    let warmup = epoch_losses(&events, Phase::Warmup);
    let finetune = epoch_losses(&events, Phase::Finetune);
    println!("{arch}: warm-up epoch losses {warmup:?}, fine-tune {finetune:?}");
    assert_eq!((warmup.len(), finetune.len()), (4, 1), "{arch}: epochs run");
    assert!(
        warmup.iter().chain(&finetune).all(|l| l.is_finite()),
        "{arch}: finite losses"
    );
    assert!(
        warmup[3] < warmup[0] && finetune[0] < warmup[0],
        "{arch}: the loss falls"
    );
}

#[test]
fn mobilenetv1_finetunes() {
    finetunes("mobilenetv1_100");
}

#[test]
fn mobilenetv2_finetunes() {
    finetunes("mobilenetv2_100");
}

#[test]
fn mobilenetv3_finetunes() {
    finetunes("mobilenetv3_large_100");
    finetunes("mobilenetv3_small_100");
}
