//! The layers panel: layer groups and their freeze state.

use super::{block, fg, human};
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

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
