//! One file per panel; each draws a part of [`App`](super::app::App) into its area. The helpers
//! they share (styles, axis bounds and labels) live here.

mod augmentations;
mod confirm_quit;
mod confusion;
mod dataset;
mod download;
mod footer;
mod header;
mod help;
mod history;
mod label_review;
mod layers;
mod log;
mod lr_finder;
mod metric;
mod top_losses;

pub use augmentations::augmentations;
pub use confirm_quit::confirm_quit;
pub use confusion::confusion;
pub use dataset::dataset;
pub use download::download;
pub use footer::footer;
pub use header::header;
pub use help::help;
pub use history::history;
pub use label_review::label_review;
pub use layers::layers;
pub use log::log;
pub use lr_finder::lr_finder;
pub use metric::metric;
pub use top_losses::top_losses;

use crate::train::Phase;
use crate::ui::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders};

/// Style with a foreground colour, or plain under `NO_COLOR`.
fn fg(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn block<'a>(title: &'a str) -> Block<'a> {
    Block::default().borders(Borders::ALL).title(title)
}

fn phase_color(p: Phase) -> Color {
    match p {
        Phase::Warmup => Color::Yellow,
        Phase::Finetune => Color::Cyan,
    }
}

fn short(p: Phase) -> &'static str {
    match p {
        Phase::Warmup => "w",
        Phase::Finetune => "f",
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A class name by index, as the dataset panel lists them.
fn class_name(app: &App, i: usize) -> &str {
    app.classes.get(i).map_or("?", |c| c.name.as_str())
}

/// Bounds of `values` with a margin, for a chart axis.
fn bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return [0.0, 1.0];
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    [lo - pad, hi + pad]
}

/// Three labels along `[lo, hi]`, formatted by `fmt`.
fn labels(b: [f64; 2], fmt: impl Fn(f64) -> String) -> Vec<Line<'static>> {
    [b[0], (b[0] + b[1]) / 2.0, b[1]]
        .into_iter()
        .map(|v| Line::from(fmt(v)))
        .collect()
}

/// A vertical line at `x` across `y`, as chart points.
fn vertical(x: f64, y: [f64; 2]) -> Vec<(f64, f64)> {
    (0..=20)
        .map(|i| (x, y[0] + (y[1] - y[0]) * i as f64 / 20.0))
        .collect()
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
