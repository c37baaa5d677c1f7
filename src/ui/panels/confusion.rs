//! The confusion panel: the last validation's confusion matrix, or (multi-label) each label's
//! scores.

use super::{block, class_name, fg};
use crate::train::multi_label::MultiLabelScores;
use crate::ui::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The last validation's confusion matrix: rows are true classes, columns predictions.
pub fn confusion(f: &mut Frame, app: &App, area: Rect) {
    if let Some(scores) = &app.label_scores {
        return per_label(f, scores, area);
    }
    let outer = block("Confusion (rows true, columns predicted)");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(matrix) = &app.confusion else {
        f.render_widget(Paragraph::new("no validation yet"), inner);
        return;
    };
    let name = |i: usize| -> String { class_name(app, i).chars().take(8).collect() };
    let mut lines = vec![Line::from(
        std::iter::once(format!("{:<9}", ""))
            .chain((0..matrix.len()).map(|j| format!("{:>9}", name(j))))
            .collect::<String>(),
    )];
    for (i, row) in matrix.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{:<9}", name(i)))];
        for (j, count) in row.iter().enumerate() {
            let style = if i == j {
                fg(app, Color::Green)
            } else if *count > 0 {
                fg(app, Color::Red)
            } else {
                Style::default()
            };
            spans.push(Span::styled(format!("{count:>9}"), style));
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// Each label's average precision, F1, precision, recall and threshold at the last validation.
fn per_label(f: &mut Frame, scores: &MultiLabelScores, area: Rect) {
    let outer = block("Per label (last validation)");
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let mut lines = vec![
        Line::from(format!(
            "mAP {:.3}  F1 micro {:.3} macro {:.3}",
            scores.map, scores.f1_micro, scores.f1_macro
        )),
        Line::from(format!(
            "{:<12}{:>6}{:>6}{:>6}{:>6}{:>6}",
            "label", "AP", "F1", "prec", "rec", "thr"
        )),
    ];
    for l in &scores.per_label {
        let name: String = l.name.chars().take(11).collect();
        let ap = l.ap.map_or("-".into(), |a| format!("{a:.2}"));
        lines.push(Line::from(format!(
            "{name:<12}{ap:>6}{:>6.2}{:>6.2}{:>6.2}{:>6.2}",
            l.f1, l.precision, l.recall, l.threshold
        )));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
