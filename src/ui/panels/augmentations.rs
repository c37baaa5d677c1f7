//! The augmentation preview panel.

use super::block;
use crate::ui::app::{App, AUGMENTATION_PICTURES};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// One training image as the network sees it and its augmented variants, epoch by epoch.
pub fn augmentations(f: &mut Frame, app: &mut App, area: Rect) {
    let title = match &app.preview {
        Some(p) => format!(
            "Augmentations of {} ({}) — n another image, a close",
            p.path, p.class
        ),
        None => "Augmentations — n another image, a close".to_string(),
    };
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(preview) = &app.preview else {
        f.render_widget(
            Paragraph::new("asking the engine for a training image…"),
            inner,
        );
        return;
    };
    let tiles: Vec<(String, &crate::train::Picture)> =
        std::iter::once(("input".to_string(), &preview.original))
            .chain(
                preview
                    .variants
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("epoch {}", i + 1), p)),
            )
            .collect();
    let columns = tiles.len().div_ceil(2).max(1);
    let rows = Layout::vertical([Constraint::Ratio(1, 2); 2]).split(inner);
    for (i, (label, picture)) in tiles.iter().enumerate() {
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns])
            .split(rows[i / columns]);
        let tile = block(label);
        let tile_inner = tile.inner(cells[i % columns]);
        f.render_widget(tile, cells[i % columns]);
        let key = format!("{AUGMENTATION_PICTURES}{i}");
        if let Err(e) = app.pictures.draw(f, tile_inner, &key, || {
            Ok(image::DynamicImage::ImageRgb8(picture.0.clone()))
        }) {
            f.render_widget(Paragraph::new(e), tile_inner);
        }
    }
}
