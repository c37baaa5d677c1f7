//! The learning-rate finder's chart.

use super::{block, bounds, fg, labels, vertical};
use crate::train::lr_find::{LrFind, Verdict};
use crate::ui::app::{App, Status};
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::symbols::Marker;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

/// The learning-rate finder: smoothed loss against the rate on a log axis, the suggestions
/// marked.
pub fn lr_finder(f: &mut Frame, app: &App, area: Rect) {
    let title = match app.lr_find.as_ref() {
        Some(LrFind {
            suggestion: Some(s),
            ..
        }) => format!(
            "LR finder — valley {:.1e} (Enter adopts) · steepest {:.1e} · Esc keeps the rate",
            s.valley, s.steepest
        ),
        Some(r) if r.verdict == Verdict::NoClearDescent => {
            format!("LR finder — {} (Enter or Esc)", r.message)
        }
        _ => "LR finder — Esc keeps the rate".to_string(),
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
