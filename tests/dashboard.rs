//! The dashboard rendered into ratatui's TestBackend from scripted engine events.

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tltui::data::ClassCount;
use tltui::model::LayerGroup;
use tltui::train::{Event, Phase};
use tltui::ui::app::App;
use tltui::ui::draw;

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    let buf = terminal.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn groups(trainable: bool) -> Vec<LayerGroup> {
    ["stem", "blocks.0", "blocks.1", "head"]
        .iter()
        .map(|n| LayerGroup {
            name: n.to_string(),
            prefixes: vec![],
            params: 1000,
            trainable,
        })
        .collect()
}

fn batch(phase: Phase, step: usize, loss: f32) -> Event {
    Event::Batch {
        phase,
        epoch: 1,
        step,
        steps_per_epoch: 40,
        loss,
        accuracy: 0.5 + step as f32 / 100.0,
        lr: 1e-3,
        images_per_sec: 100.0,
    }
}

fn ready_app() -> App {
    let mut app = App::new(
        "Dog-Cat".into(),
        "timm/tf_efficientnet_lite0.in1k".into(),
        3,
        2,
        true,
    );
    app.apply(Event::ModelReady {
        backbone: "timm/tf_efficientnet_lite0.in1k".into(),
        architecture: "tf_efficientnet_lite0".into(),
        device: "cpu".into(),
        groups: groups(false),
        head_params: 2562,
    });
    app.apply(Event::DatasetReady {
        class_root: "Data/Train_Data".into(),
        classes: vec![
            ClassCount {
                name: "cat".into(),
                train: 525,
                val: 175,
            },
            ClassCount {
                name: "dog".into(),
                train: 524,
                val: 175,
            },
        ],
        skipped: vec![],
        ignored: 0,
        cached_images: 1399,
    });
    app.apply(Event::FreezeChanged {
        groups: groups(false),
        trainable_params: 2562,
    });
    app
}

fn frozen_marks(s: &str) -> (usize, usize) {
    (
        s.matches("■ blocks").count() + s.matches("■ stem").count(),
        s.matches("□ blocks").count() + s.matches("□ stem").count(),
    )
}

#[test]
fn shows_classes_phase_and_freeze_states_at_80x24() {
    let mut app = ready_app();
    let idle = screen(&app, 80, 24);
    assert!(
        idle.contains("cat") && idle.contains("train 525") && idle.contains("val 175"),
        "{idle}"
    );
    assert!(idle.contains("dog") && idle.contains("train 524"), "{idle}");
    assert!(idle.contains("idle"), "{idle}");
    assert_eq!(frozen_marks(&idle), (0, 3), "{idle}");

    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Warmup),
        epochs: 3,
    });
    app.apply(batch(Phase::Warmup, 1, 0.7));
    let warm = screen(&app, 80, 24);
    assert!(
        warm.contains("warm-up") && warm.contains("step 1/40"),
        "{warm}"
    );

    app.apply(Event::FreezeChanged {
        groups: groups(true),
        trainable_params: 6562,
    });
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Finetune),
        epochs: 2,
    });
    app.apply(batch(Phase::Finetune, 1, 0.2));
    let fine = screen(&app, 80, 24);
    assert!(fine.contains("fine-tune"), "{fine}");
    assert_eq!(frozen_marks(&fine), (3, 0), "{fine}");
    assert!(fine.contains("6.6k trainable"), "{fine}");
}

fn sparkline_cells(s: &str) -> usize {
    s.chars().filter(|c| "▁▂▃▄▅▆▇█".contains(*c)).count()
}

#[test]
fn sparklines_grow_with_batches_and_validation_shows() {
    let mut app = ready_app();
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Warmup),
        epochs: 3,
    });
    app.apply(batch(Phase::Warmup, 1, 0.7));
    let few = sparkline_cells(&screen(&app, 100, 30));
    for step in 2..30 {
        app.apply(batch(Phase::Warmup, step, 0.7 / step as f32));
    }
    let many = sparkline_cells(&screen(&app, 100, 30));
    assert!(many > few + 20, "{few} -> {many}");
    app.apply(Event::Validation {
        phase: Some(Phase::Warmup),
        epoch: 1,
        loss: 0.0987,
        accuracy: 0.9771,
        per_class_accuracy: vec![0.97, 0.98],
        confusion: vec![vec![170, 5], vec![3, 172]],
        seconds: 0.1,
    });
    let s = screen(&app, 100, 30);
    assert!(s.contains("w1 0.9771") && s.contains("w1 0.0987"), "{s}");
}

#[test]
fn small_terminals_are_told_so_and_help_overlays() {
    let mut app = ready_app();
    assert!(screen(&app, 50, 15).contains("terminal too small"));
    app.show_help = true;
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("Help") && s.contains("fine-tune: unfreeze"),
        "{s}"
    );
}

#[test]
fn confusion_panel_shows_the_last_validation() {
    let mut app = ready_app();
    app.apply(Event::Validation {
        phase: Some(Phase::Warmup),
        epoch: 1,
        loss: 0.1,
        accuracy: 0.98,
        per_class_accuracy: vec![0.977, 0.983],
        confusion: vec![vec![171, 4], vec![3, 172]],
        seconds: 0.1,
    });
    assert!(!screen(&app, 80, 24).contains("Confusion"));
    app.on_key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('c'),
        crossterm::event::KeyModifiers::NONE,
    ));
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("Confusion") && s.contains("171") && s.contains("172"),
        "{s}"
    );
    let row = s
        .lines()
        .find(|l| l.contains("cat") && l.contains("171"))
        .expect("the cat row");
    assert!(row.contains('4'), "{row}");
}
