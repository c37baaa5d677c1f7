//! One function per panel; each draws a part of [`App`] into its area.

use super::app::{App, Level, Status, AUGMENTATION_PICTURES, TOP_LOSS_PICTURES};
use crate::data::DataReport;
use crate::train::{FeatureStatus, Phase};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Bar, BarChart, BarGroup, Block, Borders, Chart, Clear, Dataset, Gauge, GraphType,
    Paragraph, Sparkline, SparklineBar, Wrap,
};
use ratatui::Frame;

/// Style with a foreground colour, or plain under `NO_COLOR`.
fn fg(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn block<'a>(title: &'a str) -> Block<'a> {
    Block::default().borders(Borders::ALL).title(title)
}

fn phase_color(p: Phase) -> Color {
    match p {
        Phase::Warmup => Color::Yellow,
        Phase::Finetune => Color::Cyan,
    }
}

fn short(p: Phase) -> &'static str {
    match p {
        Phase::Warmup => "w",
        Phase::Finetune => "f",
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Two lines: where the data and model come from; what the engine is doing.
pub fn header(f: &mut Frame, app: &App, area: Rect) {
    let status = match app.status {
        Status::Preparing => Span::styled("preparing", fg(app, Color::Gray)),
        Status::Idle => Span::styled(
            "idle — press w (warm-up) or f (fine-tune)",
            fg(app, Color::Green),
        ),
        Status::Running(p) => Span::styled(
            p.to_string(),
            fg(app, phase_color(p)).add_modifier(Modifier::BOLD),
        ),
        Status::Paused(p) => Span::styled(
            format!("paused ({p})"),
            fg(app, Color::Magenta).add_modifier(Modifier::BOLD),
        ),
        Status::Finished => Span::styled("finished", fg(app, Color::Gray)),
    };
    let mut second = vec![Span::raw("phase "), status];
    if matches!(app.status, Status::Running(_) | Status::Paused(_)) && app.steps_per_epoch > 0 {
        second.push(Span::raw(format!(
            "  epoch {}/{}  step {}/{}  {:.1} img/s  lr {:.1e}",
            app.epoch, app.phase_epochs, app.step, app.steps_per_epoch, app.images_per_sec, app.lr
        )));
    }
    second.push(Span::raw(format!(
        "  elapsed {}",
        clock(app.started.elapsed().as_secs())
    )));
    if let Some(eta) = app.eta() {
        second.push(Span::raw(format!("  epoch ETA {}", clock(eta.as_secs()))));
    }
    let first = Line::from(vec![
        Span::styled("tltui ", fg(app, Color::Cyan).add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{}{}  backbone {}  device {}",
            app.dataset,
            app.class_root
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            app.backbone,
            if app.device.is_empty() {
                "-"
            } else {
                &app.device
            }
        )),
    ]);
    f.render_widget(Paragraph::new(vec![first, Line::from(second)]), area);
}

/// Download gauges while the backbone arrives, then the cache and feature state.
pub fn download(f: &mut Frame, app: &App, area: Rect) {
    let outer = block("Backbone");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let mut rows: Vec<Line> = Vec::new();
    // (ratio, label) of each gauge: files downloading, then a long pass in progress.
    let mut gauges: Vec<(f64, String)> = Vec::new();
    for d in &app.downloads {
        if d.from_cache {
            rows.push(Line::from(format!(
                "{}: from cache ({:.1} MB)",
                d.file,
                d.total as f64 / 1e6
            )));
        } else if d.complete {
            rows.push(Line::from(format!(
                "{}: downloaded {:.1} MB",
                d.file,
                d.total as f64 / 1e6
            )));
        } else {
            let ratio = if d.total > 0 {
                d.done as f64 / d.total as f64
            } else {
                0.0
            };
            let label = format!(
                "{} {:.1}/{:.1} MB {:.1} MB/s",
                d.file,
                d.done as f64 / 1e6,
                d.total as f64 / 1e6,
                d.bytes_per_sec / 1e6
            );
            gauges.push((ratio, label));
        }
    }
    if let Some(p) = app.progress.filter(|p| p.done < p.total) {
        let label = format!(
            "{} {}/{} {:.0} img/s ETA {}",
            p.pass,
            p.done,
            p.total,
            p.images_per_sec,
            clock(p.eta_seconds as u64)
        );
        gauges.push((p.done as f64 / p.total as f64, label));
    }
    if app.downloads.is_empty() && !app.device.is_empty() {
        rows.push(Line::from(format!("weights: {}", app.backbone)));
    }
    if let Some((done, total)) = app.decoding.filter(|(d, t)| d < t) {
        rows.push(Line::from(format!("decoding images {done}/{total}")));
    }
    match &app.features {
        Some(FeatureStatus::Loaded { images, .. }) => {
            rows.push(Line::from(format!("features: {images} from disk cache")))
        }
        Some(FeatureStatus::Computed {
            images, seconds, ..
        }) => rows.push(Line::from(format!(
            "features: {images} computed in {seconds:.1} s"
        ))),
        None => {}
    }
    let areas = Layout::vertical(
        gauges
            .iter()
            .map(|_| Constraint::Length(1))
            .chain([Constraint::Min(0)]),
    )
    .split(inner);
    for ((ratio, label), a) in gauges.into_iter().zip(areas.iter()) {
        f.render_widget(
            Gauge::default()
                .gauge_style(fg(app, Color::Blue))
                .ratio(ratio.min(1.0))
                .label(label),
            *a,
        );
    }
    if let Some(rest) = areas.last() {
        f.render_widget(Paragraph::new(rows), *rest);
    }
}

/// Class counts as horizontal bars, train and validation per class, beside the data checks:
/// which class root was chosen and why, copies, and leakage.
pub fn dataset(f: &mut Frame, app: &App, area: Rect) {
    let title = format!("Dataset — {} skipped", app.skipped);
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    if app.classes.is_empty() {
        f.render_widget(Paragraph::new("finding classes…"), inner);
        return;
    }
    let [bars_area, checks_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(inner);
    if let Some(report) = &app.data_report {
        f.render_widget(
            Paragraph::new(data_checks(app, report)).wrap(Wrap { trim: true }),
            checks_area,
        );
    }
    class_bars(f, app, bars_area);
}

/// The data checks as lines: chosen root, runners-up, copies, leakage.
fn data_checks(app: &App, report: &DataReport) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let leaked = report.leakage.val_images_with_train_twin;
    let leak_style = if leaked > 0 {
        fg(app, Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        fg(app, Color::Green)
    };
    lines.push(Line::styled(
        format!("leaked val images: {leaked}"),
        leak_style,
    ));
    lines.push(Line::from(format!(
        "copies: {} group(s)",
        report.duplicates.len()
    )));
    for c in &report.candidates {
        let text = if c.chosen {
            format!("root {}: {}", c.path.display(), c.reason)
        } else {
            format!("not {}: {}", c.path.display(), c.reason)
        };
        lines.push(Line::from(text));
    }
    lines
}

fn class_bars(f: &mut Frame, app: &App, inner: Rect) {
    let name_width = app
        .classes
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .min(12);
    let mut bars = Vec::new();
    for c in &app.classes {
        let name: String = c.name.chars().take(name_width).collect();
        bars.push(
            Bar::default()
                .label(Line::from(name))
                .value(c.train as u64)
                .text_value(format!("train {}", c.train))
                .style(fg(app, Color::Green)),
        );
        bars.push(
            Bar::default()
                .label(Line::from(""))
                .value(c.val as u64)
                .text_value(format!("val {}", c.val))
                .style(fg(app, Color::Blue)),
        );
    }
    let chart = BarChart::default()
        .direction(ratatui::layout::Direction::Horizontal)
        .bar_width(1)
        .bar_gap(0)
        .data(BarGroup::default().bars(&bars));
    f.render_widget(chart, inner);
}

/// Every layer group with its parameter count and freeze state.
pub fn layers(f: &mut Frame, app: &App, area: Rect) {
    let title = format!("Layers — {} trainable", human(app.trainable_params));
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let items: Vec<Line> = app
        .groups
        .iter()
        .map(|g| {
            let (mark, style) = if g.trainable {
                ("■", fg(app, Color::Green))
            } else {
                ("□", fg(app, Color::DarkGray))
            };
            Line::from(vec![
                Span::styled(mark, style),
                Span::raw(format!(" {:<9}{:>7}", g.name, human(g.params))),
            ])
        })
        .chain(std::iter::once(Line::from(vec![
            Span::styled("■", fg(app, Color::Green)),
            Span::raw(" new head"),
        ])))
        .collect();
    let rows = inner.height.max(1) as usize;
    let columns = items.len().div_ceil(rows).max(1);
    let areas =
        Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(inner);
    for (chunk, a) in items.chunks(rows).zip(areas.iter()) {
        f.render_widget(Paragraph::new(chunk.to_vec()), *a);
    }
}

/// The last validation's confusion matrix: rows are true classes, columns predictions.
pub fn confusion(f: &mut Frame, app: &App, area: Rect) {
    let outer = block("Confusion (rows true, columns predicted)");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(matrix) = &app.confusion else {
        f.render_widget(Paragraph::new("no validation yet"), inner);
        return;
    };
    let name = |i: usize| -> String { class_name(app, i).chars().take(8).collect() };
    let mut lines = vec![Line::from(
        std::iter::once(format!("{:<9}", ""))
            .chain((0..matrix.len()).map(|j| format!("{:>9}", name(j))))
            .collect::<String>(),
    )];
    for (i, row) in matrix.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{:<9}", name(i)))];
        for (j, count) in row.iter().enumerate() {
            let style = if i == j {
                fg(app, Color::Green)
            } else if *count > 0 {
                fg(app, Color::Red)
            } else {
                Style::default()
            };
            spans.push(Span::styled(format!("{count:>9}"), style));
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// A class name by index, as the dataset panel lists them.
fn class_name(app: &App, i: usize) -> &str {
    app.classes.get(i).map_or("?", |c| c.name.as_str())
}

/// The last validation's highest-loss images (true, predicted, probability, file) and the
/// selected one's picture.
pub fn top_losses(f: &mut Frame, app: &mut App, area: Rect) {
    let outer = block("Top losses of the last validation (j/k select, l close)");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    if app.top_losses.is_empty() {
        f.render_widget(Paragraph::new("no validation yet"), inner);
        return;
    }
    let [list_area, picture_area] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(inner);
    let lines: Vec<Line> = app
        .top_losses
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let file = t.path.file_name().map_or_else(
                || t.path.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            let text = format!(
                "{:>2} {} -> {} {:.3}  {file}",
                i + 1,
                class_name(app, t.truth),
                class_name(app, t.predicted),
                t.probability,
            );
            let style = if t.truth == t.predicted {
                Style::default()
            } else {
                fg(app, Color::Red)
            };
            let style = if i == app.selected_loss {
                style.add_modifier(Modifier::REVERSED)
            } else {
                style
            };
            Line::styled(text, style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), list_area);
    let selected = &app.top_losses[app.selected_loss.min(app.top_losses.len() - 1)];
    let [picture, caption] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(picture_area);
    let path = selected.path.clone();
    let key = format!("{TOP_LOSS_PICTURES}{}", path.display());
    let shown = app.pictures.draw(f, picture, &key, || {
        crate::data::decode::decode_rgb(&path, u64::MAX).map(image::DynamicImage::ImageRgb8)
    });
    let caption_text = match shown {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("cannot show {}: {e}", path.display()),
    };
    f.render_widget(Paragraph::new(caption_text), caption);
}

/// One training image as the network sees it and its augmented variants, epoch by epoch.
pub fn augmentations(f: &mut Frame, app: &mut App, area: Rect) {
    let title = match &app.preview {
        Some(p) => format!(
            "Augmentations of {} ({}) — n another image, a close",
            p.path, p.class
        ),
        None => "Augmentations — n another image, a close".to_string(),
    };
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(preview) = &app.preview else {
        f.render_widget(
            Paragraph::new("asking the engine for a training image…"),
            inner,
        );
        return;
    };
    let tiles: Vec<(String, &crate::train::Picture)> =
        std::iter::once(("input".to_string(), &preview.original))
            .chain(
                preview
                    .variants
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("epoch {}", i + 1), p)),
            )
            .collect();
    let columns = tiles.len().div_ceil(2).max(1);
    let rows = Layout::vertical([Constraint::Ratio(1, 2); 2]).split(inner);
    for (i, (label, picture)) in tiles.iter().enumerate() {
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns])
            .split(rows[i / columns]);
        let tile = block(label);
        let tile_inner = tile.inner(cells[i % columns]);
        f.render_widget(tile, cells[i % columns]);
        let key = format!("{AUGMENTATION_PICTURES}{i}");
        if let Err(e) = app.pictures.draw(f, tile_inner, &key, || {
            Ok(image::DynamicImage::ImageRgb8(picture.0.clone()))
        }) {
            f.render_widget(Paragraph::new(e), tile_inner);
        }
    }
}

/// A per-batch sparkline (warm-up and fine-tune coloured apart) with current/min/max and the
/// validation points.
pub fn metric(f: &mut Frame, app: &App, area: Rect, name: &str, accuracy: bool) {
    let series = if accuracy {
        &app.accuracies
    } else {
        &app.losses
    };
    let values: Vec<f32> = series.iter().map(|(_, v)| *v).collect();
    let stats = match (
        values.last(),
        values.iter().cloned().reduce(f32::min),
        values.iter().cloned().reduce(f32::max),
    ) {
        (Some(c), Some(lo), Some(hi)) => format!(" cur {c:.4} min {lo:.4} max {hi:.4}"),
        _ => String::new(),
    };
    let vals: Vec<String> = app
        .validations
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|v| {
            let tag = v
                .phase
                .map(|p| format!("{}{}", short(p), v.epoch))
                .unwrap_or_else(|| "v".into());
            format!("{tag} {:.4}", if accuracy { v.accuracy } else { v.loss })
        })
        .collect();
    let title = format!("{name}{stats}");
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let [spark_area, val_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let width = spark_area.width as usize;
    let visible = series.iter().skip(series.len().saturating_sub(width));
    let hi = if accuracy {
        1.0
    } else {
        visible.clone().map(|(_, v)| *v).fold(1e-6, f32::max)
    };
    let bars: Vec<SparklineBar> = visible
        .map(|(p, v)| {
            SparklineBar::from((v / hi * 1000.0).max(0.0) as u64).style(fg(app, phase_color(*p)))
        })
        .collect();
    f.render_widget(Sparkline::default().data(bars).max(1000), spark_area);
    let legend = if vals.is_empty() {
        "val: —".to_string()
    } else {
        format!("val: {}", vals.join("  "))
    };
    f.render_widget(
        Paragraph::new(legend).style(fg(app, Color::White)),
        val_area,
    );
}

/// Bounds of `values` with a margin, for a chart axis.
fn bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return [0.0, 1.0];
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    [lo - pad, hi + pad]
}

/// Three labels along `[lo, hi]`, formatted by `fmt`.
fn labels(b: [f64; 2], fmt: impl Fn(f64) -> String) -> Vec<Line<'static>> {
    [b[0], (b[0] + b[1]) / 2.0, b[1]]
        .into_iter()
        .map(|v| Line::from(fmt(v)))
        .collect()
}

/// A vertical line at `x` across `y`, as chart points.
fn vertical(x: f64, y: [f64; 2]) -> Vec<(f64, f64)> {
    (0..=20)
        .map(|i| (x, y[0] + (y[1] - y[0]) * i as f64 / 20.0))
        .collect()
}

/// The learning-rate finder: smoothed loss against the rate on a log axis, the suggestions
/// marked.
pub fn lr_finder(f: &mut Frame, app: &App, area: Rect) {
    let title = match app.lr_find.as_ref().and_then(|r| r.suggestion) {
        Some(s) => format!(
            "LR finder — valley {:.1e} (Enter adopts) · steepest {:.1e} · Esc keeps the rate",
            s.valley, s.steepest
        ),
        None => "LR finder — Esc keeps the rate".to_string(),
    };
    let outer = block(&title);
    let Some(result) = app.lr_find.as_ref().filter(|r| r.points.len() > 1) else {
        let text = match (&app.lr_find, app.progress) {
            (Some(_), _) => "too few batches for a curve".to_string(),
            (None, Some(p)) if p.pass == crate::train::Pass::LrFind && p.done < p.total => {
                format!("range test: {}/{} images", p.done, p.total)
            }
            _ if app.status == Status::Finished => "training has ended".to_string(),
            _ => "range test running…".to_string(),
        };
        f.render_widget(Paragraph::new(text).block(outer), area);
        return;
    };
    let curve: Vec<(f64, f64)> = result
        .points
        .iter()
        .map(|p| (p.lr.log10(), p.smoothed as f64))
        .collect();
    // The tested range exactly, so that the axis ends read as the rates tried.
    let x = [curve[0].0, curve[curve.len() - 1].0];
    let y = bounds(curve.iter().map(|p| p.1));
    let marks: Vec<(String, f64, Color)> = result
        .suggestion
        .map(|s| {
            vec![
                (format!("valley {:.1e}", s.valley), s.valley, Color::Green),
                (
                    format!("steepest {:.1e}", s.steepest),
                    s.steepest,
                    Color::Magenta,
                ),
            ]
        })
        .unwrap_or_default();
    let lines: Vec<Vec<(f64, f64)>> = marks
        .iter()
        .map(|(_, lr, _)| vertical(lr.log10(), y))
        .collect();
    let mut datasets = vec![Dataset::default()
        .name("smoothed loss")
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(fg(app, Color::Yellow))
        .data(&curve)];
    for ((name, _, color), points) in marks.iter().zip(&lines) {
        datasets.push(
            Dataset::default()
                .name(name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(fg(app, *color))
                .data(points),
        );
    }
    let chart = Chart::new(datasets)
        .block(outer)
        .x_axis(
            Axis::default()
                .title("learning rate")
                .bounds(x)
                .labels(labels(x, |v| format!("{:.0e}", 10f64.powf(v)))),
        )
        .y_axis(
            Axis::default()
                .title("loss")
                .bounds(y)
                .labels(labels(y, |v| format!("{v:.3}"))),
        );
    f.render_widget(chart, area);
}

/// The run's history: training and validation loss and accuracy per epoch across phases, with
/// the phase boundaries marked.
pub fn history(f: &mut Frame, app: &App, area: Rect) {
    let outer = block("History — loss and accuracy per epoch (h close)");
    if app.history.is_empty() {
        f.render_widget(Paragraph::new("no epoch has ended yet").block(outer), area);
        return;
    }
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let [loss_area, acc_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    let x = [0.5, app.history.len() as f64 + 0.5];
    let boundaries: Vec<f64> = app
        .history
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].phase != w[1].phase || w[1].epoch <= w[0].epoch)
        .map(|(i, _)| i as f64 + 1.5)
        .collect();
    let series = |pick: fn(&super::app::EpochPoint) -> f32| -> Vec<(f64, f64)> {
        app.history
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 + 1.0, pick(p) as f64))
            .collect()
    };
    let charts = [
        (
            "Loss",
            loss_area,
            series(|p| p.train_loss),
            series(|p| p.val_loss),
        ),
        (
            "Accuracy",
            acc_area,
            series(|p| p.train_accuracy),
            series(|p| p.val_accuracy),
        ),
    ];
    for (name, a, train, val) in &charts {
        let y = bounds(train.iter().chain(val).map(|p| p.1));
        let walls: Vec<Vec<(f64, f64)>> = boundaries.iter().map(|b| vertical(*b, y)).collect();
        let mut datasets = vec![
            Dataset::default()
                .name("train")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(fg(app, Color::Yellow))
                .data(train),
            Dataset::default()
                .name("val")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(fg(app, Color::Cyan))
                .data(val),
        ];
        for w in &walls {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Dot)
                    .style(fg(app, Color::DarkGray))
                    .data(w),
            );
        }
        let ticks: Vec<Line> = app
            .history
            .iter()
            .map(|p| Line::from(format!("{}{}", short(p.phase), p.epoch)))
            .collect();
        let ticks = if ticks.len() <= 12 {
            ticks
        } else {
            vec![ticks[0].clone(), ticks[ticks.len() - 1].clone()]
        };
        let chart = Chart::new(datasets)
            .block(block(name))
            .x_axis(Axis::default().bounds(x).labels(ticks))
            .y_axis(
                Axis::default()
                    .bounds(y)
                    .labels(labels(y, |v| format!("{v:.3}"))),
            );
        f.render_widget(chart, *a);
    }
}

/// Recent log lines, newest last.
pub fn log(f: &mut Frame, app: &App, area: Rect) {
    let outer = block("Log");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let n = inner.height as usize;
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(app.log.len().saturating_sub(n))
        .map(|(level, text)| {
            let (tag, color) = match level {
                Level::Info => ("", Color::Reset),
                Level::Warning => ("warning: ", Color::Yellow),
                Level::Error => ("error: ", Color::Red),
            };
            Line::from(vec![
                Span::styled(tag, fg(app, color)),
                Span::raw(text.clone()),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

/// The keys, and the command waiting for the engine.
pub fn footer(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (k, what) in [
        ("w", "warm-up"),
        ("f", "fine-tune"),
        ("s", "save"),
        ("p", "pause"),
        ("v", "validate"),
        ("c/l/a", "confusion/losses/augment"),
        ("q", "quit"),
        ("?", "help"),
    ] {
        spans.push(Span::styled(
            k,
            fg(app, Color::Cyan).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    if let Some(p) = &app.pending {
        spans.push(Span::styled(
            format!("[{p}: sent, applies at the next batch]"),
            fg(app, Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// The help overlay.
pub fn help(f: &mut Frame, app: &App, area: Rect) {
    let text = vec![
        Line::from(format!(
            "w  warm up: backbone frozen, the new head trains ({} epochs)",
            app.warmup_epochs
        )),
        Line::from(format!(
            "f  fine-tune: unfreeze the backbone ({} epochs)",
            app.finetune_epochs
        )),
        Line::from("s  save a checkpoint now"),
        Line::from("p  pause / resume (space too)"),
        Line::from("v  run validation now"),
        Line::from("+ -  double / halve the running phase's learning rate"),
        Line::from("] [  fine-tuning: unfreeze / freeze one more layer group"),
        Line::from("r  learning-rate finder; the phase waits: Enter adopts the suggestion, Esc keeps the rate"),
        Line::from("h  history: loss and accuracy per epoch across phases"),
        Line::from("c  confusion matrix of the last validation / layer groups"),
        Line::from("l  top losses: worst validation images, with a picture (j/k select)"),
        Line::from("a  augmentation preview of a training image (n: another image)"),
        Line::from("Tab  next panel: layers, confusion, top losses, augmentations, history"),
        Line::from("q  quit (asks first when progress is unsaved)"),
        Line::from("?  this help; Esc closes it"),
        Line::from(""),
        Line::from("Commands apply at the next batch boundary."),
    ];
    let r = centered(area, 76, 21);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text)
            .block(block("Help"))
            .wrap(Wrap { trim: false }),
        r,
    );
}

/// The quit confirmation.
pub fn confirm_quit(f: &mut Frame, _app: &App, area: Rect) {
    let r = centered(area, 56, 5);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(vec![
            Line::from("Training progress since the last save is unsaved."),
            Line::from("y quit anyway   s save and quit   n cancel"),
        ])
        .alignment(Alignment::Center)
        .block(block("Quit?")),
        r,
    );
}
