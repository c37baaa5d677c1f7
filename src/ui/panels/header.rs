//! The header: where the data and model come from, and what the engine is doing.

use super::{clock, fg, phase_color};
use crate::ui::app::{App, Status};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Two lines: where the data and model come from; what the engine is doing.
pub fn header(f: &mut Frame, app: &App, area: Rect) {
    let status = match app.status {
        Status::Preparing => Span::styled("preparing", fg(app, Color::Gray)),
        Status::Idle => Span::styled(
            "idle — press w (warm-up) or f (fine-tune)",
            fg(app, Color::Green),
        ),
        Status::Running(p) => Span::styled(
            p.to_string(),
            fg(app, phase_color(p)).add_modifier(Modifier::BOLD),
        ),
        Status::Paused(p) => Span::styled(
            format!("paused ({p})"),
            fg(app, Color::Magenta).add_modifier(Modifier::BOLD),
        ),
        Status::Finished => Span::styled("finished", fg(app, Color::Gray)),
    };
    let mut second = vec![Span::raw("phase "), status];
    if matches!(app.status, Status::Running(_) | Status::Paused(_)) && app.steps_per_epoch > 0 {
        second.push(Span::raw(format!(
            "  epoch {}/{}  step {}/{}  {:.1} img/s  lr {:.1e}",
            app.epoch, app.phase_epochs, app.step, app.steps_per_epoch, app.images_per_sec, app.lr
        )));
    }
    second.push(Span::raw(format!(
        "  elapsed {}",
        clock(app.started.elapsed().as_secs())
    )));
    if let Some(eta) = app.eta() {
        second.push(Span::raw(format!("  epoch ETA {}", clock(eta.as_secs()))));
    }
    let first = Line::from(vec![
        Span::styled("tltui ", fg(app, Color::Cyan).add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{}{}  backbone {}  device {}",
            app.dataset,
            app.class_root
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            app.backbone,
            if app.device.is_empty() {
                "-"
            } else {
                &app.device
            }
        )),
    ]);
    f.render_widget(Paragraph::new(vec![first, Line::from(second)]), area);
}
