//! The footer: keys and the command waiting for the engine.

use super::fg;
use crate::ui::app::{App, Panel};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The keys, and the command waiting for the engine.
pub fn footer(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    let keys: &[(&str, &str)] = if app.panel == Panel::LabelReview {
        &[
            ("Enter", "accept"),
            ("o", "other class"),
            ("x", "exclude"),
            ("g", "keep"),
            ("u", "undo"),
            ("j/k", "move"),
            ("i", "close"),
            ("?", "help"),
        ]
    } else {
        &[
            ("w", "warm-up"),
            ("f", "fine-tune"),
            ("s", "save"),
            ("p", "pause"),
            ("v", "validate"),
            ("c/l/a/i", "confusion/losses/augment/labels"),
            ("q", "quit"),
            ("?", "help"),
        ]
    };
    for &(k, what) in keys {
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
