//! The log panel.

use super::{block, fg};
use crate::ui::app::{App, Level};
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

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
