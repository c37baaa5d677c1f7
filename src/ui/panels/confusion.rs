//! The confusion panel: the last validation's confusion matrix.

use super::{block, class_name, fg};
use crate::ui::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

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
