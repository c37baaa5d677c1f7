//! The top-losses panel: the worst validation images.

use super::{block, fg};
use crate::data::label_names;
use crate::ui::app::{App, TOP_LOSS_PICTURES};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The last validation's highest-loss images (true, predicted, probability, file) and the
/// selected one's picture.
pub fn top_losses(f: &mut Frame, app: &mut App, area: Rect) {
    let outer = block("Top losses of the last validation (j/k select, l close)");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    if app.top_losses.is_empty() {
        f.render_widget(Paragraph::new("no validation yet"), inner);
        return;
    }
    let [list_area, picture_area] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(inner);
    let classes: Vec<String> = app.classes.iter().map(|c| c.name.clone()).collect();
    let name = |labels: &[usize]| label_names(&classes, labels);
    let lines: Vec<Line> = app
        .top_losses
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let file = t.path.file_name().map_or_else(
                || t.path.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            let text = format!(
                "{:>2} {} -> {} {:.3}  {file}",
                i + 1,
                name(&t.truth),
                name(&t.predicted),
                t.probability,
            );
            let style = if t.truth == t.predicted {
                Style::default()
            } else {
                fg(app, Color::Red)
            };
            let style = if i == app.selected_loss {
                style.add_modifier(Modifier::REVERSED)
            } else {
                style
            };
            Line::styled(text, style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), list_area);
    let selected = &app.top_losses[app.selected_loss.min(app.top_losses.len() - 1)];
    let [picture, caption] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(picture_area);
    let path = selected.path.clone();
    let key = format!("{TOP_LOSS_PICTURES}{}", path.display());
    let shown = app.pictures.draw(f, picture, &key, || {
        crate::data::decode::decode_rgb(&path, u64::MAX).map(image::DynamicImage::ImageRgb8)
    });
    let caption_text = match shown {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("cannot show {}: {e}", path.display()),
    };
    f.render_widget(Paragraph::new(caption_text), caption);
}
