//! The per-batch loss and accuracy panels.

use super::{block, fg, phase_color, short};
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::widgets::{Paragraph, Sparkline, SparklineBar};
use ratatui::Frame;

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
