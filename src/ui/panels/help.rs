//! The help overlay.

use super::{block, centered};
use crate::ui::app::App;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

/// The help overlay.
pub fn help(f: &mut Frame, app: &App, area: Rect) {
    let text = vec![
        Line::from(format!(
            "w  warm up: backbone frozen, the new head trains ({} epochs)",
            app.warmup_epochs
        )),
        Line::from(format!(
            "f  fine-tune: unfreeze the backbone ({} epochs)",
            app.finetune_epochs
        )),
        Line::from("s  save a checkpoint now"),
        Line::from("p  pause / resume (space too)"),
        Line::from("v  run validation now"),
        Line::from("+ -  double / halve the running phase's learning rate"),
        Line::from("] [  fine-tuning: unfreeze / freeze one more layer group"),
        Line::from("r  learning-rate finder; the phase waits: Enter adopts the suggestion, Esc keeps the rate"),
        Line::from("h  history: loss and accuracy per epoch across phases"),
        Line::from("c  confusion matrix of the last validation / layer groups"),
        Line::from("l  top losses: worst validation images, with a picture (j/k select)"),
        Line::from("a  augmentation preview of a training image (n: another image)"),
        Line::from("i  label review: the finder's suspect labels; Enter accepts the suggestion, o another class, x exclude, g keep, u undo, j/k move"),
        Line::from("Tab  next panel: layers, confusion, top losses, augmentations, history, label review"),
        Line::from("q  quit (asks first when progress is unsaved)"),
        Line::from("?  this help; Esc closes it"),
        Line::from(""),
        Line::from("Commands apply at the next batch boundary."),
    ];
    let r = centered(area, 76, 24);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text)
            .block(block("Help"))
            .wrap(Wrap { trim: false }),
        r,
    );
}
