//! The quit confirmation overlay.

use super::{block, centered};
use crate::ui::app::App;
use ratatui::layout::{Alignment, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// The quit confirmation.
pub fn confirm_quit(f: &mut Frame, _app: &App, area: Rect) {
    let r = centered(area, 56, 5);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(vec![
            Line::from("Training progress since the last save is unsaved."),
            Line::from("y quit anyway   s save and quit   n cancel"),
        ])
        .alignment(Alignment::Center)
        .block(block("Quit?")),
        r,
    );
}
