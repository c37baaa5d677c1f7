//! The dataset panel: class counts and the data checks.

use super::{block, fg};
use crate::data::DataReport;
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Paragraph, Wrap};
use ratatui::Frame;

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
