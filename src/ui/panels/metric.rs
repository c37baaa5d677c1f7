//! The per-batch loss and accuracy panels: the raw points, their trend and the validations on
//! one axis fitted to the data.

use super::{block, fg, labels, phase_color, short};
use crate::train::Phase;
use crate::ui::app::{App, BatchPoint};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::symbols::Marker;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

/// Share of the visible points left outside the fitted axis at each end (a loss spike, one bad
/// batch of accuracy): those are drawn on the edge, not given the axis.
const OUTLIERS: f64 = 0.02;
/// The smallest span of the value axis.
const MIN_SPAN: f64 = 1e-3;
/// Columns the value axis's labels take.
const LABEL_WIDTH: u16 = 7;

/// A per-batch chart (warm-up and fine-tune points coloured apart) with its trend line, the
/// validation results marked at the step they were taken, current/trend/min/max in the title
/// and the last validations in words below.
pub fn metric(f: &mut Frame, app: &App, area: Rect, name: &str, accuracy: bool) {
    let series = if accuracy {
        &app.accuracies
    } else {
        &app.losses
    };
    let value =
        |v: &crate::ui::app::ValPoint| f64::from(if accuracy { v.accuracy } else { v.loss });
    let stats = match (
        series.points.back(),
        series.points.iter().map(|p| p.value).reduce(f32::min),
        series.points.iter().map(|p| p.value).reduce(f32::max),
    ) {
        (Some(c), Some(lo), Some(hi)) => format!(
            " cur {:.4} trend {:.4} min {lo:.4} max {hi:.4}",
            c.value, c.trend
        ),
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
            format!("{tag} {:.4}", value(v))
        })
        .collect();
    let title = format!("{name}{stats}");
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let [chart_area, val_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let legend = if vals.is_empty() {
        "val: —".to_string()
    } else {
        format!("val: {} (◆ on the chart)", vals.join("  "))
    };
    f.render_widget(
        Paragraph::new(legend).style(fg(app, Color::White)),
        val_area,
    );
    // Braille cells hold two points across: as many points as that shows.
    let width = 2 * chart_area.width.saturating_sub(LABEL_WIDTH + 1).max(1) as usize;
    let visible: Vec<&BatchPoint> = series
        .points
        .iter()
        .skip(series.points.len().saturating_sub(width))
        .collect();
    let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
        return;
    };
    let x = [
        first.step as f64,
        (last.step as f64).max(first.step as f64 + 1.0),
    ];
    let marks: Vec<(f64, f64)> = app
        .validations
        .iter()
        .filter(|v| (first.step..=last.step).contains(&v.step))
        .map(|v| (v.step as f64, value(v)))
        .collect();
    // The trend is a mean of the points, inside their range but for the outliers' pull: it
    // is clamped like them rather than given the axis.
    let y = fitted(
        visible.iter().map(|p| f64::from(p.value)).collect(),
        marks.iter().map(|m| m.1),
        accuracy,
    );
    let clamp = |v: f32| f64::from(v).clamp(y[0], y[1]);
    let raw: Vec<(Phase, Vec<(f64, f64)>)> = [Phase::Warmup, Phase::Finetune]
        .into_iter()
        .map(|phase| {
            let points = visible
                .iter()
                .filter(|p| p.phase == phase)
                .map(|p| (p.step as f64, clamp(p.value)))
                .collect();
            (phase, points)
        })
        .collect();
    let trend: Vec<(f64, f64)> = visible
        .iter()
        .map(|p| (p.step as f64, clamp(p.trend)))
        .collect();
    let mut datasets: Vec<Dataset> = raw
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .map(|(phase, points)| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Scatter)
                .style(fg(app, phase_color(*phase)))
                .data(points)
        })
        .collect();
    datasets.push(
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(fg(app, Color::White))
            .data(&trend),
    );
    datasets.push(
        Dataset::default()
            .marker(Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(fg(app, Color::Green))
            .data(&marks),
    );
    let digits = if y[1] - y[0] < 0.05 { 4 } else { 3 };
    let chart = Chart::new(datasets)
        .x_axis(Axis::default().bounds(x))
        .y_axis(
            Axis::default()
                .bounds(y)
                .labels(labels(y, |v| format!("{v:.digits$}"))),
        );
    f.render_widget(chart, chart_area);
}

/// The value axis for `raw` points and the `keep` values (the validations) that must show:
/// the raw points without the [`OUTLIERS`] at each end, widened to every kept value, with a
/// margin, at least [`MIN_SPAN`] wide; a loss axis does not run below zero nor an accuracy
/// axis outside [0, 1].
pub fn fitted(mut raw: Vec<f64>, keep: impl Iterator<Item = f64>, accuracy: bool) -> [f64; 2] {
    raw.retain(|v| v.is_finite());
    raw.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = match (raw.first(), raw.last()) {
        (Some(_), Some(_)) => {
            let cut = (raw.len() as f64 * OUTLIERS) as usize;
            (raw[cut], raw[raw.len() - 1 - cut])
        }
        _ => (f64::INFINITY, f64::NEG_INFINITY),
    };
    for v in keep.filter(|v| v.is_finite()) {
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    if lo > hi {
        return [0.0, 1.0];
    }
    let pad = ((hi - lo) * 0.05).max(MIN_SPAN / 2.0);
    let (mut lo, mut hi) = ((lo - pad).max(0.0), hi + pad);
    if accuracy {
        hi = hi.min(1.0);
        lo = lo.min(hi - MIN_SPAN);
    }
    if hi - lo < MIN_SPAN {
        hi = lo + MIN_SPAN;
    }
    [lo, hi]
}

#[cfg(test)]
mod tests {
    use super::fitted;

    #[test]
    fn the_axis_fits_high_accuracies_and_keeps_losses_above_zero() {
        let acc: Vec<f64> = (0..100).map(|i| 0.97 + 0.0003 * i as f64).collect();
        let [lo, hi] = fitted(acc, std::iter::empty(), true);
        assert!(lo > 0.96 && lo < 0.97 && hi <= 1.0, "{lo} {hi}");
        let [lo, hi] = fitted(vec![1.0; 50], std::iter::empty(), true);
        assert!(hi == 1.0 && lo < 1.0, "{lo} {hi}");
        let [lo, _] = fitted(vec![0.001, 0.002, 0.0015], std::iter::empty(), false);
        assert!(lo >= 0.0);
    }

    #[test]
    fn a_spike_does_not_take_the_axis_but_a_validation_does() {
        let mut loss = vec![0.02; 99];
        loss.push(3.0);
        let [_, hi] = fitted(loss.clone(), std::iter::empty(), false);
        assert!(hi < 0.1, "{hi}");
        let [_, hi] = fitted(loss, [0.5].into_iter(), false);
        assert!(hi >= 0.5, "{hi}");
    }
}
