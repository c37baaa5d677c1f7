//! Drawing the whole dashboard: the screen's layout, each part handed to its panel.

use super::app::{App, Panel};
use super::panels;
use ratatui::layout::{Constraint, Layout};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Smallest terminal the layout fits.
pub const MIN_SIZE: (u16, u16) = (60, 20);

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = format!(
            "terminal too small: {}x{}; tltui needs at least {}x{}",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(Paragraph::new(msg), area);
        return;
    }
    let log_h = if area.height >= 30 { 8 } else { 5 };
    let [header, top, middle, log, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(6),
        Constraint::Min(8),
        Constraint::Length(log_h),
        Constraint::Length(1),
    ])
    .areas(area);
    panels::header(f, app, header);
    let [dataset, download] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    panels::dataset(f, app, dataset);
    panels::download(f, app, download);
    match app.panel {
        Panel::TopLosses => panels::top_losses(f, app, middle),
        Panel::Augmentations => panels::augmentations(f, app, middle),
        Panel::History => panels::history(f, app, middle),
        Panel::LrFinder => panels::lr_finder(f, app, middle),
        Panel::LabelReview => panels::label_review(f, app, middle),
        Panel::Layers | Panel::Confusion => {
            let [side, charts] =
                Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(middle);
            if app.panel == Panel::Confusion {
                panels::confusion(f, app, side);
            } else {
                panels::layers(f, app, side);
            }
            let [loss, acc] =
                Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(charts);
            panels::metric(f, app, loss, "Loss", false);
            let name = match app.task {
                crate::data::Task::SingleLabel => "Accuracy",
                crate::data::Task::MultiLabel => "Exact match (validation: mAP)",
            };
            panels::metric(f, app, acc, name, true);
        }
    }
    panels::log(f, app, log);
    panels::footer(f, app, footer);
    if app.show_help {
        panels::help(f, app, area);
    }
    if app.confirm_quit {
        panels::confirm_quit(f, app, area);
    }
}
