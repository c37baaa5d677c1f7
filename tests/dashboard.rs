//! The dashboard rendered into ratatui's TestBackend from scripted engine events.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use image::{Rgb, RgbImage};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use std::path::PathBuf;
use tltui::data::groups::Leakage;
use tltui::data::{CandidateReport, ClassCount, DataReport};
use tltui::model::LayerGroup;
use tltui::train::metrics::TopLoss;
use tltui::train::{Command, Picture};
use tltui::train::{Event, Phase};
use tltui::ui::app::Action;
use tltui::ui::app::App;
use tltui::ui::draw;

fn render(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().buffer().clone()
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let buf = render(app, w, h);
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
        tltui::config::Epochs::Count(3),
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
        task: tltui::data::Task::SingleLabel,
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
        report: DataReport {
            multi_label: None,
            candidates: vec![
                CandidateReport {
                    path: "Data/Train_Data".into(),
                    images: 1399,
                    chosen: true,
                    reason: "ranked first: named like training data".into(),
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
    });
    app.apply(Event::FreezeChanged {
        groups: groups(false),
        trainable_params: 2562,
    });
    app
}

#[test]
fn dataset_panel_names_the_class_root_and_the_leakage() {
    let mut app = ready_app();
    let s = screen(&mut app, 120, 30);
    assert!(s.contains("leaked val images: 3"), "{s}");
    assert!(s.contains("root Data/Train_Data"), "{s}");
    assert!(s.contains("copies: 0 group(s)"), "{s}");
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
    let idle = screen(&mut app, 80, 24);
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
    let warm = screen(&mut app, 80, 24);
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
    let fine = screen(&mut app, 80, 24);
    assert!(fine.contains("fine-tune"), "{fine}");
    assert_eq!(frozen_marks(&fine), (3, 0), "{fine}");
    assert!(fine.contains("6.6k trainable"), "{fine}");
}

#[test]
fn charts_grow_with_batches_and_validation_shows() {
    let mut app = ready_app();
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Warmup),
        epochs: 3,
    });
    app.apply(batch(Phase::Warmup, 1, 0.7));
    let few = braille_cells(&render(&mut app, 100, 30), None);
    for step in 2..30 {
        app.apply(batch(Phase::Warmup, step, 0.7 / step as f32));
    }
    let many = braille_cells(&render(&mut app, 100, 30), None);
    assert!(many > few + 20, "{few} -> {many}");
    app.apply(Event::Validation {
        multi_label: None,
        phase: Some(Phase::Warmup),
        epoch: 1,
        loss: 0.0987,
        accuracy: 0.9771,
        accuracy_clean: None,
        per_class_accuracy: vec![0.97, 0.98],
        confusion: vec![vec![170, 5], vec![3, 172]],
        top_losses: vec![],
        seconds: 0.1,
    });
    let s = screen(&mut app, 100, 30);
    assert!(s.contains("w1 0.9771") && s.contains("w1 0.0987"), "{s}");
}

#[test]
fn small_terminals_are_told_so_and_help_overlays() {
    let mut app = ready_app();
    assert!(screen(&mut app, 50, 15).contains("terminal too small"));
    app.show_help = true;
    let s = screen(&mut app, 80, 24);
    assert!(
        s.contains("Help") && s.contains("fine-tune: unfreeze"),
        "{s}"
    );
}

#[test]
fn confusion_panel_shows_the_last_validation() {
    let mut app = ready_app();
    app.apply(Event::Validation {
        multi_label: None,
        phase: Some(Phase::Warmup),
        epoch: 1,
        loss: 0.1,
        accuracy: 0.98,
        accuracy_clean: None,
        per_class_accuracy: vec![0.977, 0.983],
        confusion: vec![vec![171, 4], vec![3, 172]],
        top_losses: vec![],
        seconds: 0.1,
    });
    assert!(!screen(&mut app, 80, 24).contains("Confusion"));
    app.on_key(key('c'));
    let s = screen(&mut app, 80, 24);
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

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

/// Half-block picture cells (the only cells in RGB colours) with a colour `close` accepts.
fn picture_cells(buf: &Buffer, close: impl Fn(u8, u8, u8) -> bool) -> usize {
    let rgb = |c: Color| matches!(c, Color::Rgb(r, g, b) if close(r, g, b));
    buf.content()
        .iter()
        .filter(|c| rgb(c.fg) || rgb(c.bg))
        .count()
}

fn solid(rgb: [u8; 3], w: u32, h: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

#[test]
fn top_losses_panel_lists_the_worst_images_with_their_picture() {
    let dir = tempfile::tempdir().unwrap();
    let red = dir.path().join("dog.443.png");
    let blue = dir.path().join("cat.1050.png");
    solid([230, 20, 20], 120, 90).save(&red).unwrap();
    solid([20, 20, 230], 90, 120).save(&blue).unwrap();
    let missing: PathBuf = dir.path().join("gone.jpg");
    let mut app = ready_app();
    app.apply(Event::Validation {
        multi_label: None,
        phase: Some(Phase::Warmup),
        epoch: 3,
        loss: 0.03,
        accuracy: 0.99,
        accuracy_clean: None,
        per_class_accuracy: vec![0.99, 0.99],
        confusion: vec![vec![173, 2], vec![2, 173]],
        top_losses: vec![
            TopLoss {
                path: red.clone(),
                truth: vec![1],
                predicted: vec![0],
                probability: 0.904,
                loss: 2.34,
            },
            TopLoss {
                path: blue.clone(),
                truth: vec![0],
                predicted: vec![1],
                probability: 0.89,
                loss: 2.21,
            },
            TopLoss {
                path: missing,
                truth: vec![0],
                predicted: vec![0],
                probability: 0.6,
                loss: 0.51,
            },
        ],
        seconds: 0.1,
    });
    let is_red = |r: u8, g: u8, b: u8| r > 200 && g < 60 && b < 60;
    let is_blue = |r: u8, g: u8, b: u8| b > 200 && r < 60 && g < 60;
    assert_eq!(picture_cells(&render(&mut app, 100, 30), is_red), 0);

    assert_eq!(app.on_key(key('l')), None);
    let s = screen(&mut app, 100, 30);
    assert!(s.contains("Top losses"), "{s}");
    let first = s
        .lines()
        .find(|l| l.contains("dog.443.png"))
        .expect("first row");
    assert!(
        first.contains(" 1 dog") && first.contains("-> cat") && first.contains("0.904"),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.contains("cat.1050.png") && l.contains("-> dog")),
        "{s}"
    );
    let buf = render(&mut app, 100, 30);
    assert!(
        picture_cells(&buf, is_red) > 20,
        "the selected image is drawn"
    );
    assert_eq!(picture_cells(&buf, is_blue), 0);

    app.on_key(key('j'));
    let buf = render(&mut app, 100, 30);
    assert!(
        picture_cells(&buf, is_blue) > 20,
        "j selects the next image"
    );
    assert_eq!(picture_cells(&buf, is_red), 0);

    app.on_key(key('j'));
    let s = screen(&mut app, 100, 30);
    assert!(s.contains("cannot show") && s.contains("gone.jpg"), "{s}");

    app.on_key(key('l'));
    assert!(!screen(&mut app, 100, 30).contains("Top losses"));
}

#[test]
fn augmentation_panel_shows_the_input_and_each_epochs_variant() {
    let mut app = ready_app();
    assert_eq!(
        app.on_key(key('a')),
        Some(Action::Engine(Command::PreviewAugmentations))
    );
    let s = screen(&mut app, 120, 36);
    assert!(
        s.contains("Augmentations") && s.contains("asking the engine"),
        "{s}"
    );

    // Nine distinct colours: the input, then one per epoch.
    let colour = |i: u8| [20 + 25 * i, 240 - 25 * i, 60 + 10 * i];
    app.apply(Event::AugmentationPreview {
        path: "Data/Train_Data/cat/cat.7.jpg".into(),
        class: "cat".into(),
        original: Picture(solid(colour(0), 224, 224)),
        variants: (1..=8)
            .map(|i| Picture(solid(colour(i), 224, 224)))
            .collect(),
    });
    let buf = render(&mut app, 120, 36);
    let s = screen(&mut app, 120, 36);
    assert!(s.contains("cat.7.jpg") && s.contains("input"), "{s}");
    for epoch in 1..=8 {
        assert!(s.contains(&format!("epoch {epoch}")), "{s}");
    }
    for i in 0..=8u8 {
        let [r, g, b] = colour(i);
        let n = picture_cells(&buf, |x, y, z| {
            x.abs_diff(r) <= 2 && y.abs_diff(g) <= 2 && z.abs_diff(b) <= 2
        });
        assert!(n > 10, "tile {i} drawn ({n} cells)");
    }
    assert_eq!(
        app.on_key(key('n')),
        Some(Action::Engine(Command::PreviewAugmentations)),
        "n asks for another image"
    );
    assert_eq!(app.on_key(key('a')), None);
    assert!(!screen(&mut app, 120, 36).contains("Augmentations"));
}

fn braille_cells(buf: &Buffer, color: Option<Color>) -> usize {
    buf.content()
        .iter()
        .filter(|c| {
            c.symbol()
                .chars()
                .any(|ch| ('\u{2801}'..='\u{28ff}').contains(&ch))
                && color.is_none_or(|col| c.fg == col)
        })
        .count()
}

#[test]
fn finder_panel_draws_the_curve_and_marks_the_suggestion() {
    use tltui::train::lr_find::{lr_at, Curve, LrFind, Suggestion, Verdict};
    let mut app = ready_app();
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Warmup),
        epochs: 3,
    });
    assert_eq!(
        app.on_key(key('r')),
        Some(Action::Engine(Command::FindLr { adopt: false }))
    );
    app.apply(Event::Progress {
        pass: tltui::train::Pass::LrFind,
        done: 320,
        total: 3200,
        images_per_sec: 5000.0,
        eta_seconds: 0.6,
    });
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("LR finder") && s.contains("range test: 320/3200"),
        "{s}"
    );
    let mut curve = Curve::default();
    for i in 0..80 {
        let lr = lr_at(i, 100);
        let x = lr.log10();
        curve.push(
            lr,
            (0.7 - 0.3 * (x + 7.0).min(4.0) / 4.0 + (x + 2.0).max(0.0)) as f32,
        );
    }
    app.apply(Event::LrFind(LrFind {
        points: curve.points,
        verdict: Verdict::Suggested,
        message: Verdict::Suggested.to_string(),
        suggestion: Some(Suggestion {
            steepest: 1e-4,
            valley: 2e-4,
        }),
        diverged: true,
        adopted: None,
        seconds: 0.4,
    }));
    let buf = render(&mut app, 100, 30);
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("valley 2.0e-4 (Enter adopts)") && s.contains("learning rate"),
        "{s}"
    );
    assert!(
        braille_cells(&buf, Some(Color::Yellow)) > 30,
        "the curve\n{s}"
    );
    assert!(
        braille_cells(&buf, Some(Color::Green)) >= 5,
        "the valley mark\n{s}"
    );
    assert!(
        s.contains("1e-7"),
        "log axis from the first rate tried\n{s}"
    );
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        Some(Action::Engine(Command::AdoptLr(2e-4)))
    );
    assert!(!screen(&mut app, 100, 30).contains("LR finder"));
}

#[test]
fn history_panel_plots_both_phases_with_the_boundary() {
    let mut app = ready_app();
    let epochs = [
        (Phase::Warmup, 1, 0.30, 0.90),
        (Phase::Warmup, 2, 0.20, 0.95),
        (Phase::Finetune, 1, 0.10, 0.97),
        (Phase::Finetune, 2, 0.08, 0.98),
    ];
    for (phase, epoch, loss, accuracy) in epochs {
        for step in 1..=4 {
            app.apply(Event::Batch {
                phase,
                epoch,
                step,
                steps_per_epoch: 4,
                loss: loss * 1.5,
                accuracy: accuracy - 0.05,
                lr: 1e-3,
                images_per_sec: 100.0,
            });
        }
        app.apply(Event::Validation {
            multi_label: None,
            phase: Some(phase),
            epoch,
            loss,
            accuracy,
            accuracy_clean: None,
            per_class_accuracy: vec![accuracy; 2],
            confusion: vec![vec![1, 0], vec![0, 1]],
            top_losses: vec![],
            seconds: 0.1,
        });
    }
    assert_eq!(app.history.len(), 4);
    assert!((app.history[0].train_loss - 0.45).abs() < 1e-6);
    app.on_key(key('h'));
    let buf = render(&mut app, 100, 30);
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("History") && s.contains("Loss") && s.contains("Accuracy"),
        "{s}"
    );
    assert!(s.contains("w1") && s.contains("f2"), "epoch ticks\n{s}");
    assert!(braille_cells(&buf, Some(Color::Yellow)) > 10, "train\n{s}");
    assert!(braille_cells(&buf, Some(Color::Cyan)) > 10, "val\n{s}");
    let boundary = buf
        .content()
        .iter()
        .filter(|c| c.symbol() == "•" && c.fg == Color::DarkGray)
        .count();
    assert!(boundary >= 4, "the warm-up/fine-tune boundary\n{s}");
    app.on_key(key('h'));
    assert!(!screen(&mut app, 100, 30).contains("History"));
}

/// The inner area of the panel whose top border starts with `title`: (left, top, right,
/// bottom), borders excluded.
fn panel(buf: &Buffer, title: &str) -> (u16, u16, u16, u16) {
    let area = buf.area;
    let row = |y: u16| -> String { (0..area.width).map(|x| buf[(x, y)].symbol()).collect() };
    let (x, y) = (0..area.height)
        .find_map(|y| {
            let r = row(y);
            let at = r.find(&format!("┌{title}"))?;
            Some((r[..at].chars().count() as u16, y))
        })
        .unwrap_or_else(|| panic!("no {title} panel"));
    let right = (x + 1..area.width)
        .find(|&c| buf[(c, y)].symbol() == "┐")
        .unwrap();
    let bottom = (y + 1..area.height)
        .find(|&r| buf[(x, r)].symbol() == "└")
        .unwrap();
    (x + 1, y + 1, right - 1, bottom - 1)
}

/// Rows of the chart part of a metric panel (above its legend line) that hold braille cells
/// in `color`, and those rows' count.
fn chart_rows(buf: &Buffer, title: &str, color: Color) -> (usize, usize) {
    let (left, top, right, bottom) = panel(buf, title);
    let rows = (top..bottom).collect::<Vec<_>>();
    let used = rows
        .iter()
        .filter(|&&y| {
            (left..=right).any(|x| {
                let c = &buf[(x, y)];
                c.fg == color
                    && c.symbol()
                        .chars()
                        .any(|ch| ('\u{2801}'..='\u{28ff}').contains(&ch))
            })
        })
        .count();
    (used, rows.len())
}

fn cells_in(buf: &Buffer, title: &str, symbol: &str, color: Color) -> usize {
    let (left, top, right, bottom) = panel(buf, title);
    (top..=bottom)
        .flat_map(|y| (left..=right).map(move |x| (x, y)))
        .filter(|&(x, y)| buf[(x, y)].symbol() == symbol && buf[(x, y)].fg == color)
        .count()
}

#[test]
fn high_accuracies_fill_the_accuracy_panel_with_a_trend_and_validation_marks() {
    let mut app = ready_app();
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Warmup),
        epochs: 3,
    });
    for step in 1..=240 {
        // Per-batch accuracies between 0.97 and 1.0, as after a converged warm-up.
        let wobble = ((step * 7919) % 31) as f32 / 30.0;
        app.apply(Event::Batch {
            phase: Phase::Warmup,
            epoch: 1 + step / 80,
            step: 1 + step % 80,
            steps_per_epoch: 80,
            loss: 0.02 + 0.05 * wobble + if step % 80 == 40 { 0.8 } else { 0.0 },
            accuracy: 0.97 + 0.03 * wobble,
            lr: 1e-3,
            images_per_sec: 100.0,
        });
        if step % 80 == 0 {
            app.apply(Event::Validation {
                multi_label: None,
                phase: Some(Phase::Warmup),
                epoch: step / 80,
                loss: 0.04,
                accuracy: 0.985,
                accuracy_clean: None,
                per_class_accuracy: vec![0.98, 0.99],
                confusion: vec![vec![172, 3], vec![2, 173]],
                top_losses: vec![],
                seconds: 0.1,
            });
        }
    }
    let buf = render(&mut app, 160, 48);
    let text = screen(&mut app, 160, 48);
    let (used, rows) = chart_rows(&buf, "Accuracy", Color::Yellow);
    assert!(
        2 * used > rows,
        "the points use {used} of {rows} rows\n{text}"
    );
    let trend = chart_rows(&buf, "Accuracy", Color::White).0;
    assert!(trend >= 2, "the trend line is drawn ({trend} rows)\n{text}");
    assert!(
        cells_in(&buf, "Accuracy", "█", Color::Green) >= 2,
        "the validations are marked\n{text}"
    );
    assert!(text.contains("trend 0."), "{text}");
    // The loss panel's spikes (one batch in 80) do not flatten the rest.
    let (used, rows) = chart_rows(&buf, "Loss", Color::Yellow);
    assert!(
        2 * used > rows,
        "loss points use {used} of {rows} rows\n{text}"
    );
}

#[test]
fn the_finder_says_when_it_found_no_clear_descent() {
    use tltui::train::lr_find::{lr_at, Curve, LrFind, Verdict};
    let mut app = ready_app();
    app.apply(Event::PhaseChanged {
        phase: Some(Phase::Finetune),
        epochs: 1,
    });
    app.on_key(key('r'));
    let mut curve = Curve::default();
    for i in 0..60 {
        curve.push(lr_at(i, 100), 0.03 + 0.01 * ((i * 13) % 7) as f32 / 7.0);
    }
    app.apply(Event::LrFind(LrFind {
        points: curve.points,
        verdict: Verdict::NoClearDescent,
        message: Verdict::NoClearDescent.to_string(),
        suggestion: None,
        diverged: true,
        adopted: None,
        seconds: 0.4,
    }));
    let s = screen(&mut app, 120, 30);
    assert!(s.contains("no clear descent: keep the current rate"), "{s}");
    assert!(!s.contains("valley"), "{s}");
    let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(
        app.on_key(enter),
        Some(Action::Engine(Command::Resume)),
        "Enter keeps the rate"
    );
}
