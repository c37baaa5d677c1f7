//! The dataset panel: class (or label) counts and the data checks.

use super::{block, fg};
use crate::data::DataReport;
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Paragraph, Wrap};
use ratatui::Frame;

/// Columns between the class bars and the data checks, so the longest bar never touches the text.
const GAP: u16 = 2;

/// Class counts as horizontal bars, train and validation per class, beside the data checks:
/// which class root was chosen and why, copies, and leakage. The checks wrap inside their own
/// column, [`GAP`] columns right of the bars.
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
        Layout::horizontal([Constraint::Percentage(45), Constraint::Fill(1)])
            .spacing(GAP)
            .areas(inner);
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
    if let Some(m) = &report.multi_label {
        lines.push(Line::from(format!("multi-label: {}", m.summary())));
        for p in &m.frequent_pairs {
            lines.push(Line::from(format!("  {p}")));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Epochs;
    use crate::ui::app::dataset_ready;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// Bar glyphs (full and partial blocks) of a horizontal bar chart.
    const BAR: &str = "█▉▊▋▌▍▎▏";

    #[test]
    fn the_checks_wrap_in_their_own_column_right_of_the_bars() {
        let mut app = App::new("data".into(), "timm/x".into(), Epochs::Count(3), 2, true);
        app.apply(dataset_ready());
        for (w, h) in [(50, 14), (80, 10), (60, 14)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal
                .draw(|f| dataset(f, &app, Rect::new(0, 0, w, h)))
                .unwrap();
            let buf = terminal.backend().buffer();
            let cell = |x: u16, y: u16| buf[(x, y)].symbol().to_string();
            let screen: String = (0..h)
                .map(|y| (0..w).map(|x| cell(x, y)).collect::<String>() + "\n")
                .collect();
            // The longest bar reaches the right edge of the bars' column.
            let bar_right = (1..h - 1)
                .flat_map(|y| (1..w - 1).map(move |x| (x, y)))
                .filter(|&(x, y)| BAR.contains(cell(x, y).as_str()))
                .map(|(x, _)| x)
                .max()
                .expect("bars drawn");
            let text_left = bar_right + 1 + GAP;
            let mut checks = String::new();
            for y in 1..h - 1 {
                for x in bar_right + 1..text_left {
                    assert_eq!(cell(x, y), " ", "gap at ({x},{y}) at {w}x{h}:\n{screen}");
                }
                let row: String = (text_left..w - 1).map(|x| cell(x, y)).collect();
                checks.push_str(row.trim());
                checks.push(' ');
            }
            // Every word of the checks is in their column, wrapped rather than cut off.
            let words = "leaked val images: 3 copies: 0 group(s) root Data/Train_Data: ranked first: named like training data, most images";
            let checks = checks.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                checks.starts_with(words),
                "{checks:?} at {w}x{h}:\n{screen}"
            );
            // Nothing of the checks lands in the bars' column.
            for y in 1..h - 1 {
                let bars: String = (1..=bar_right).map(|x| cell(x, y)).collect();
                for word in ["leaked", "copies", "root", "ranked", "training"] {
                    assert!(
                        !bars.contains(word),
                        "{word} in the bars at {w}x{h}:\n{screen}"
                    );
                }
            }
        }
    }
}
