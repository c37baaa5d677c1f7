//! The backbone panel: download gauges, then the cache and feature state.

use super::{block, clock, fg};
use crate::train::FeatureStatus;
use crate::ui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::Line;
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

/// Download gauges while the backbone arrives, then the cache and feature state.
pub fn download(f: &mut Frame, app: &App, area: Rect) {
    let outer = block("Backbone");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let mut rows: Vec<Line> = Vec::new();
    // (ratio, label) of each gauge: files downloading, then a long pass in progress.
    let mut gauges: Vec<(f64, String)> = Vec::new();
    for d in &app.downloads {
        if d.from_cache {
            rows.push(Line::from(format!(
                "{}: from cache ({:.1} MB)",
                d.file,
                d.total as f64 / 1e6
            )));
        } else if d.complete {
            rows.push(Line::from(format!(
                "{}: downloaded {:.1} MB",
                d.file,
                d.total as f64 / 1e6
            )));
        } else {
            let ratio = if d.total > 0 {
                d.done as f64 / d.total as f64
            } else {
                0.0
            };
            let label = format!(
                "{} {:.1}/{:.1} MB {:.1} MB/s",
                d.file,
                d.done as f64 / 1e6,
                d.total as f64 / 1e6,
                d.bytes_per_sec / 1e6
            );
            gauges.push((ratio, label));
        }
    }
    if let Some(p) = app.progress.filter(|p| p.done < p.total) {
        let label = format!(
            "{} {}/{} {:.0} img/s ETA {}",
            p.pass,
            p.done,
            p.total,
            p.images_per_sec,
            clock(p.eta_seconds as u64)
        );
        gauges.push((p.done as f64 / p.total as f64, label));
    }
    if app.downloads.is_empty() && !app.device.is_empty() {
        rows.push(Line::from(format!("weights: {}", app.backbone)));
    }
    if let Some((done, total)) = app.decoding.filter(|(d, t)| d < t) {
        rows.push(Line::from(format!("decoding images {done}/{total}")));
    }
    match &app.features {
        Some(FeatureStatus::Loaded { images, .. }) => {
            rows.push(Line::from(format!("features: {images} from disk cache")))
        }
        Some(FeatureStatus::Computed {
            images, seconds, ..
        }) => rows.push(Line::from(format!(
            "features: {images} computed in {seconds:.1} s"
        ))),
        None => {}
    }
    let areas = Layout::vertical(
        gauges
            .iter()
            .map(|_| Constraint::Length(1))
            .chain([Constraint::Min(0)]),
    )
    .split(inner);
    for ((ratio, label), a) in gauges.into_iter().zip(areas.iter()) {
        f.render_widget(
            Gauge::default()
                .gauge_style(fg(app, Color::Blue))
                .ratio(ratio.min(1.0))
                .label(label),
            *a,
        );
    }
    if let Some(rest) = areas.last() {
        f.render_widget(Paragraph::new(rows), *rest);
    }
}
