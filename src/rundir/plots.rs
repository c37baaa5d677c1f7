//! The run directory's pictures, drawn with plotters' bitmap backend (text in an embedded
//! DejaVu Sans) into an RGB buffer that the `image` crate encodes as PNG: the history of loss
//! and accuracy per epoch, the confusion matrix (counts and normalised), and the worst
//! validation images.

use super::EpochRow;
use crate::train::metrics::TopLoss;
use crate::train::Phase;
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";
/// Training's colour in the history.
const TRAIN: RGBColor = RGBColor(230, 126, 34);
/// Validation's colour in the history.
const VAL: RGBColor = RGBColor(41, 128, 185);
/// Top-loss images drawn, at most.
const TOP_LOSSES: usize = 12;
/// A top-loss tile's picture size in pixels.
const TILE: u32 = 200;
/// The text below a top-loss picture.
const CAPTION: u32 = 48;

/// Registers the embedded font once (plotters' ab_glyph text finds fonts by family name).
fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans as the crate ships it parses; a failure would only leave text out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A plotters error as text (its error types borrow the backend's).
fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

/// Draws with `draw` on a white `width`x`height` canvas (or on `base`, when given) and writes
/// the PNG to `path` atomically.
fn picture(
    path: &Path,
    (width, height): (u32, u32),
    base: Option<RgbImage>,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    font();
    let mut buf = base
        .map(|b| b.into_raw())
        .unwrap_or_else(|| vec![255; (width * height * 3) as usize]);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(plot_error)?;
    }
    let img = RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| anyhow::anyhow!("picture buffer of the wrong size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    crate::atomic::atomic_write(path, &png)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A text style of `size` pixels anchored at `pos`.
fn text(size: u32, color: &'static RGBColor, pos: Pos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(pos)
}

/// An epoch's short name: `w3` (warm-up epoch 3), `f1`.
fn tick(row: &EpochRow) -> String {
    match row.phase {
        Some(Phase::Warmup) => format!("w{}", row.epoch),
        Some(Phase::Finetune) => format!("f{}", row.epoch),
        None => format!("v{}", row.epoch),
    }
}

/// Picks an epoch's training value (absent before any batch) and validation value.
type Pick = fn(&EpochRow) -> (Option<f32>, f32);

/// `history.png`: training and validation loss (left) and accuracy (right; multi-label: exact
/// match, and mAP for validation, as the dashboard charts them) per epoch, a grey line where a
/// phase starts, the epochs named `w1…` (warm-up) and `f1…` (fine-tune).
pub fn history(path: &Path, rows: &[EpochRow]) -> anyhow::Result<()> {
    let n = rows.len();
    let boundaries: Vec<f64> = rows
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].phase != w[1].phase || w[1].epoch <= w[0].epoch)
        .map(|(i, _)| i as f64 + 1.5)
        .collect();
    picture(path, (1200, 480), None, |root| {
        let halves = root.split_evenly((1, 2));
        let accuracy = if rows.iter().any(|r| r.val_map.is_some()) {
            "Exact match (validation: mAP)"
        } else {
            "Accuracy"
        };
        let metrics: [(&str, Pick); 2] = [
            ("Loss", |r| (r.train_loss, r.val_loss)),
            (accuracy, |r| {
                (r.train_accuracy, r.val_map.unwrap_or(r.val_accuracy))
            }),
        ];
        for (area, (name, pick)) in halves.iter().zip(metrics) {
            let train: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| pick(r).0.map(|v| (i as f64 + 1.0, f64::from(v))))
                .collect();
            let val: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (i as f64 + 1.0, f64::from(pick(r).1)))
                .collect();
            let values = train.iter().chain(&val).map(|p| p.1);
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let y = if name == "Loss" {
                0.0..hi + pad
            } else {
                (lo - pad).max(0.0)..(hi + pad).min(1.0)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 22))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.5..n as f64 + 0.5, y.clone())
                .map_err(plot_error)?;
            let label = |x: &f64| {
                let i = x.round() as usize;
                if (x - i as f64).abs() < 1e-6 && (1..=n).contains(&i) {
                    tick(&rows[i - 1])
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .x_labels(n.min(16))
                .x_label_formatter(&label)
                .x_desc("epoch (w: warm-up, f: fine-tune)")
                .label_style((FONT, 14))
                .draw()
                .map_err(plot_error)?;
            for b in &boundaries {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(*b, y.start), (*b, y.end)],
                        ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
                    )))
                    .map_err(plot_error)?;
            }
            for (series, color, name) in [(&train, TRAIN, "train"), (&val, VAL, "validation")] {
                chart
                    .draw_series(LineSeries::new(
                        series.iter().copied(),
                        ShapeStyle::from(&color).stroke_width(2),
                    ))
                    .map_err(plot_error)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 20, y)],
                            ShapeStyle::from(&color).stroke_width(2),
                        )
                    });
                chart
                    .draw_series(
                        series
                            .iter()
                            .map(|p| Circle::new(*p, 3, ShapeStyle::from(&color).filled())),
                    )
                    .map_err(plot_error)?;
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(if name == "Loss" {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .draw()
                .map_err(plot_error)?;
        }
        Ok(())
    })
}

/// A class name cut to `chars` characters.
fn shorten(name: &str, chars: usize) -> String {
    if name.chars().count() <= chars {
        name.to_string()
    } else {
        let cut: String = name.chars().take(chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `confusion_matrix.png`: the last validation's confusion matrix as counts (left) and
/// normalised by true class (right); rows are true classes, columns predictions, each cell
/// shaded by its share of the row.
pub fn confusion(path: &Path, classes: &[String], counts: &[Vec<usize>]) -> anyhow::Result<()> {
    let k = counts.len();
    anyhow::ensure!(k > 0, "an empty confusion matrix");
    let (panel_w, panel_h) = (620u32, 600u32);
    let (left, top) = (130i32, 90i32);
    let cell = ((panel_w as i32 - left - 20).min(panel_h as i32 - top - 30) / k as i32).max(2);
    let name = |i: usize| {
        classes
            .get(i)
            .map(String::as_str)
            .unwrap_or("?")
            .to_string()
    };
    picture(path, (2 * panel_w, panel_h), None, |root| {
        let panels = root.split_evenly((1, 2));
        for (p, area) in panels.iter().enumerate() {
            let normalised = p == 1;
            let title = if normalised {
                "Confusion matrix (normalised by true class)"
            } else {
                "Confusion matrix (counts)"
            };
            let centre = Pos::new(HPos::Center, VPos::Center);
            let draw_text = |s: &str, at: (i32, i32), style: &TextStyle| {
                area.draw_text(s, style, at).map_err(plot_error)
            };
            draw_text(title, (panel_w as i32 / 2, 22), &text(18, &BLACK, centre))?;
            let grid_w = cell * k as i32;
            draw_text(
                "predicted",
                (left + grid_w / 2, top - 40),
                &text(15, &BLACK, centre),
            )?;
            draw_text(
                "true",
                (14, top + grid_w / 2),
                &text(15, &BLACK, Pos::new(HPos::Left, VPos::Center)),
            )?;
            let label_size = (cell as u32 / 2).clamp(9, 15);
            for (t, row) in counts.iter().enumerate() {
                let total = row.iter().sum::<usize>().max(1) as f64;
                let y = top + t as i32 * cell;
                if cell >= 10 {
                    draw_text(
                        &shorten(&name(t), 12),
                        (left - 6, y + cell / 2),
                        &text(label_size, &BLACK, Pos::new(HPos::Right, VPos::Center)),
                    )?;
                }
                for (q, &count) in row.iter().enumerate() {
                    let share = count as f64 / total;
                    let x = left + q as i32 * cell;
                    let shade = RGBColor(
                        (255.0 - 214.0 * share) as u8,
                        (255.0 - 127.0 * share) as u8,
                        (255.0 - 70.0 * share) as u8,
                    );
                    area.draw(&Rectangle::new(
                        [(x, y), (x + cell, y + cell)],
                        shade.filled(),
                    ))
                    .map_err(plot_error)?;
                    area.draw(&Rectangle::new(
                        [(x, y), (x + cell, y + cell)],
                        RGBColor(200, 200, 200),
                    ))
                    .map_err(plot_error)?;
                    if cell >= 24 {
                        let value = if normalised {
                            format!("{share:.2}")
                        } else {
                            count.to_string()
                        };
                        let ink = if share > 0.55 { &WHITE } else { &BLACK };
                        let size = (cell as u32 / 3).clamp(9, 20);
                        draw_text(
                            &value,
                            (x + cell / 2, y + cell / 2),
                            &text(size, ink, centre),
                        )?;
                    }
                }
            }
            if cell >= 10 {
                for q in 0..k {
                    draw_text(
                        &shorten(&name(q), (cell as usize / 8).max(3)),
                        (left + q as i32 * cell + cell / 2, top - 12),
                        &text(label_size, &BLACK, centre),
                    )?;
                }
            }
        }
        Ok(())
    })
}

/// A picture fitted into a `TILE`-pixel square on grey, or a grey square when the file cannot
/// be read (its caption says so).
fn tile(path: &Path) -> (RgbImage, bool) {
    let mut square = RgbImage::from_pixel(TILE, TILE, image::Rgb([230, 230, 230]));
    match image::open(path) {
        Ok(img) => {
            let thumb = img.thumbnail(TILE, TILE).to_rgb8();
            let x = (TILE - thumb.width()) / 2;
            let y = (TILE - thumb.height()) / 2;
            image::imageops::overlay(&mut square, &thumb, x.into(), y.into());
            (square, true)
        }
        Err(_) => (square, false),
    }
}

/// `top_losses.png`: the worst validation images (at most [`TOP_LOSSES`], worst first), each
/// with its true class, the predicted class and that prediction's probability, and its file.
pub fn top_losses(path: &Path, classes: &[String], losses: &[TopLoss]) -> anyhow::Result<()> {
    let shown = &losses[..losses.len().min(TOP_LOSSES)];
    anyhow::ensure!(!shown.is_empty(), "no validation images to show");
    let columns = shown.len().min(4) as u32;
    let rows = (shown.len() as u32).div_ceil(columns);
    let (cell_w, cell_h) = (TILE + 16, TILE + CAPTION + 12);
    let (width, height) = (columns * cell_w, 40 + rows * cell_h);
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut readable = Vec::new();
    for (i, loss) in shown.iter().enumerate() {
        let (picture, ok) = tile(&loss.path);
        let (x, y) = (
            (i as u32 % columns) * cell_w + 8,
            40 + (i as u32 / columns) * cell_h,
        );
        image::imageops::overlay(&mut canvas, &picture, x.into(), y.into());
        readable.push(ok);
    }
    let name = |labels: &[usize]| crate::data::label_names(classes, labels);
    picture(path, (width, height), Some(canvas), |root| {
        let left = Pos::new(HPos::Left, VPos::Top);
        root.draw_text(
            "Top losses: the worst validation images (true / predicted, probability)",
            &text(16, &BLACK, left),
            (8, 10),
        )
        .map_err(plot_error)?;
        for (i, loss) in shown.iter().enumerate() {
            let (x, y) = (
                ((i as u32 % columns) * cell_w + 8) as i32,
                (40 + (i as u32 / columns) * cell_h + TILE + 4) as i32,
            );
            let wrong = loss.truth != loss.predicted;
            let line = format!(
                "{} / {} {:.2}",
                shorten(&name(&loss.truth), 12),
                shorten(&name(&loss.predicted), 12),
                loss.probability
            );
            let ink: &'static RGBColor = if wrong {
                &RGBColor(192, 57, 43)
            } else {
                &BLACK
            };
            root.draw_text(&line, &text(15, ink, left), (x, y))
                .map_err(plot_error)?;
            let file = loss
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let file = if readable[i] {
                format!("{} · loss {:.2}", shorten(&file, 20), loss.loss)
            } else {
                format!("{} (unreadable)", shorten(&file, 18))
            };
            root.draw_text(&file, &text(12, &RGBColor(90, 90, 90), left), (x, y + 20))
                .map_err(plot_error)?;
        }
        Ok(())
    })
}
