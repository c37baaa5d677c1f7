//! The history chart: loss and accuracy per epoch.

use super::{block, bounds, fg, labels, short, vertical};
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

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
    let series = |pick: fn(&crate::ui::app::EpochPoint) -> f32| -> Vec<(f64, f64)> {
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
        let mut y = bounds(train.iter().chain(val).map(|p| p.1));
        // Losses and accuracies are never negative: the margin stops at zero.
        y[0] = y[0].max(0.0);
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
