//! The label-review panel: the label-issue finder's suspects, one at a time, with a picture.

use super::{block, fg};
use crate::data::corrections::{Correction, Decision};
use crate::ui::app::{review, App, LABEL_REVIEW_PICTURES};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use std::path::Path;

/// Keys of the panel, as its title shows them.
const KEYS: &str = "Enter accept  o other class  x exclude  g keep  u undo  j/k move  i close";

/// The suspect shown (picture, given and suggested label, their probabilities, its decision),
/// the list of suspects with their decisions, and the images that fit no class.
pub fn label_review(f: &mut Frame, app: &mut App, area: Rect) {
    let n = app.review.flagged().len();
    let title = match &app.review.issues {
        Some(_) if n > 0 => format!(
            "Label review {} of {n} ({KEYS})",
            app.review.selected.min(n - 1) + 1
        ),
        _ => "Label review (i close)".to_string(),
    };
    let outer = block(&title);
    let inner = outer.inner(area);
    f.render_widget(outer, area);
    let Some(issues) = &app.review.issues else {
        let text = if app.review.running {
            let progress = app
                .progress
                .filter(|p| p.total > 0 && p.done < p.total)
                .map(|p| format!(" ({}: {} of {})", p.pass, p.done, p.total))
                .unwrap_or_default();
            format!("finding label issues: out-of-fold heads on the backbone's features…{progress}")
        } else {
            "press i to run the label-issue finder (it needs the backbone's features; the phase in progress waits)"
                .to_string()
        };
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    };
    let dataset = Path::new(&app.dataset).to_path_buf();
    let outliers: Vec<Line> = issues
        .outliers
        .iter()
        .map(|m| {
            Line::from(format!(
                "  {} ({}): {}",
                shown_path(&dataset, &m.path),
                m.given,
                m.reason
            ))
        })
        .collect();
    let outliers_h = if outliers.is_empty() {
        0
    } else {
        (outliers.len() as u16 + 1).min(inner.height / 4).max(2)
    };
    let [main, misfits] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(outliers_h)]).areas(inner);
    if outliers_h > 0 {
        let mut lines = vec![Line::styled(
            format!("Fit no class ({})", issues.outliers.len()),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        lines.extend(outliers);
        f.render_widget(Paragraph::new(lines), misfits);
    }
    let Some(current) = app.review.current().cloned() else {
        f.render_widget(
            Paragraph::new(format!(
                "no suspect labels among {} images (out-of-fold accuracy {:.4})",
                issues.images, issues.out_of_fold_accuracy
            )),
            main,
        );
        return;
    };
    let [picture_area, text_area] =
        Layout::horizontal([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(main);
    let decision_of =
        |path: &Path| -> Option<&Correction> { app.review.decided.get(&app.correction_key(path)) };
    let decided = decision_of(&current.path).map(review::describe);
    let mut details = vec![
        Line::from(vec![
            Span::styled(
                format!("{} of {n}  ", app.review.selected.min(n - 1) + 1),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(shown_path(&dataset, &current.path)),
        ]),
        Line::from(vec![
            Span::raw("given:     "),
            Span::styled(format!("{:<16}", current.given), fg(app, Color::Red)),
            Span::raw(format!(" p {:.3}", current.given_probability)),
        ]),
        Line::from(vec![
            Span::raw("suggested: "),
            Span::styled(format!("{:<16}", current.suggested), fg(app, Color::Green)),
            Span::raw(format!(" p {:.3}", current.suggested_probability)),
        ]),
        Line::from(match &decided {
            Some(d) => Span::styled(format!("decided:   {d}"), fg(app, Color::Cyan)),
            None => Span::raw("decided:   not yet"),
        }),
    ];
    if let Some(other) = &app.review.other {
        details.push(Line::styled(
            format!("relabel as {other}? (Enter accepts, o next class)"),
            fg(app, Color::Yellow),
        ));
    }
    let details_h = details.len() as u16 + 1;
    let [details_area, list_area] =
        Layout::vertical([Constraint::Length(details_h), Constraint::Min(1)]).areas(text_area);
    f.render_widget(Paragraph::new(details), details_area);
    let selected = app.review.selected.min(n - 1);
    let rows = list_area.height as usize;
    let first = (selected + 1).saturating_sub(rows);
    let lines: Vec<Line> = app
        .review
        .flagged()
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, s)| {
            let decision = decision_of(&s.path);
            let mark = match decision.map(|c| c.decision) {
                Some(Decision::Relabel) => "R",
                Some(Decision::Exclude) => "X",
                Some(Decision::Keep) => "K",
                None => " ",
            };
            let what = decision.map(review::describe).unwrap_or_default();
            let text = format!(
                "{mark} {:>3} {} -> {} {:.3}  {}  {what}",
                i + 1,
                s.given,
                s.suggested,
                s.suggested_probability,
                shown_path(&dataset, &s.path),
            );
            let style = if decision.is_some() {
                fg(app, Color::DarkGray)
            } else {
                Style::default()
            };
            let style = if i == selected {
                style.add_modifier(Modifier::REVERSED)
            } else {
                style
            };
            Line::styled(text, style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), list_area);
    let [picture, caption] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(picture_area);
    let path = current.path.clone();
    let key = format!("{LABEL_REVIEW_PICTURES}{}", path.display());
    let shown = app.pictures.draw(f, picture, &key, || {
        image::ImageReader::open(&path)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .decode()
            .map_err(|e| e.to_string())
    });
    if let Err(e) = shown {
        f.render_widget(
            Paragraph::new(format!("cannot show the picture: {e}")).wrap(Wrap { trim: true }),
            picture,
        );
    }
    f.render_widget(
        Paragraph::new(format!("{} → {}", current.given, current.suggested)),
        caption,
    );
}

/// `path` relative to the dataset folder, when it lies inside it.
fn shown_path(dataset: &Path, path: &Path) -> String {
    crate::data::corrections::key_of(dataset, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Epochs;
    use crate::train::label_issues::{Flagged, LabelIssues, Misfit};
    use crate::train::{Event, FeatureStatus};
    use crate::ui::app::Panel;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(app: &mut App, w: u16, h: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal
            .draw(|f| label_review(f, app, Rect::new(0, 0, w, h)))
            .unwrap();
        let buf = terminal.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn the_suspect_its_labels_probabilities_decisions_and_the_misfits_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let picture = dir.path().join("cat").join("1.png");
        std::fs::create_dir_all(picture.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
            .save(&picture)
            .unwrap();
        let dataset = dir.path().display().to_string();
        let mut app = App::new(dataset, "timm/x".into(), Epochs::Count(3), 2, true);
        app.corrections_path = Some(dir.path().join("corrections.csv"));
        app.panel = Panel::LabelReview;
        app.review.running = true;
        assert!(screen(&mut app, 100, 20).contains("finding label issues"));
        let suspect = |file: &str, given: &str, suggested: &str| Flagged {
            path: dir.path().join(file),
            given: given.into(),
            suggested: suggested.into(),
            given_probability: 0.0625,
            suggested_probability: 0.875,
        };
        app.apply(Event::LabelIssues(LabelIssues {
            method: "confident learning".into(),
            folds: 5,
            images: 40,
            out_of_fold_accuracy: 0.9,
            flagged: vec![
                suspect("cat/1.png", "cat", "dog"),
                suspect("dog/2.png", "dog", "cat"),
            ],
            outliers: vec![Misfit {
                path: dir.path().join("dog/odd.png"),
                given: "dog".into(),
                reason: "far from every class".into(),
            }],
            features: FeatureStatus::Computed {
                images: 40,
                seconds: 1.0,
                path: None,
            },
            seconds: 0.2,
        }));
        let s = screen(&mut app, 120, 24);
        for text in [
            "Label review 1 of 2",
            "cat/1.png",
            "given:     cat",
            "p 0.062",
            "suggested: dog",
            "p 0.875",
            "decided:   not yet",
            "dog/2.png",
            "Fit no class (1)",
            "dog/odd.png (dog): far from every class",
        ] {
            assert!(s.contains(text), "{text:?} missing:\n{s}");
        }
        assert!(!s.contains("cannot show"), "the picture is drawn:\n{s}");
        app.on_key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE));
        let s = screen(&mut app, 120, 24);
        assert!(s.contains("Label review 2 of 2"), "{s}");
        assert!(
            s.contains("X   1 cat -> dog") && s.contains("exclude"),
            "{s}"
        );
        // Small panels still draw.
        for (w, h) in [(60, 8), (40, 5)] {
            screen(&mut app, w, h);
        }
    }
}
