//! The label review (`i`): the label-issue finder's suspects, one at a time, and what the user
//! decides about each (relabel, exclude, keep), saved at once in the dataset's corrections file,
//! which the next run on the dataset applies.

use super::keys::Action;
use super::{App, Level, Panel, Status};
use crate::data::corrections::{key_of, Correction, CorrectionsFile, Decision};
use crate::train::label_issues::{Flagged, LabelIssues, DEFAULT_FOLDS};
use crate::train::Command;
use crossterm::event::{KeyCode, KeyEvent};
use std::collections::HashMap;
use std::path::Path;

/// The finder's result and where the review of it stands.
#[derive(Debug, Default)]
pub struct Review {
    /// The finder's last result.
    pub issues: Option<LabelIssues>,
    /// The finder was asked for and has not answered yet.
    pub running: bool,
    /// Index of the suspect shown.
    pub selected: usize,
    /// The class `o` offers instead of the suggestion; Enter files the suspect under it.
    pub other: Option<String>,
    /// The decision that counts for each image, by corrections-file key.
    pub decided: HashMap<String, Correction>,
    /// The dataset's corrections file, opened at the first decision.
    file: Option<CorrectionsFile>,
}

impl Review {
    /// The finder's suspects, most suspicious first (none before its result).
    pub fn flagged(&self) -> &[Flagged] {
        self.issues.as_ref().map_or(&[], |i| i.flagged.as_slice())
    }

    /// The suspect shown.
    pub fn current(&self) -> Option<&Flagged> {
        let flagged = self.flagged();
        flagged.get(self.selected.min(flagged.len().saturating_sub(1)))
    }
}

/// A decision in words, as the review panel and the log show it.
pub fn describe(c: &Correction) -> String {
    match (c.decision, &c.label) {
        (Decision::Relabel, Some(label)) => format!("relabel as {label}"),
        (Decision::Relabel, None) => "relabel".into(),
        (Decision::Exclude, _) => "exclude".into(),
        (Decision::Keep, _) => "keep the given label".into(),
    }
}

impl App {
    /// `i`: shows the review (asking the engine for the finder the first time, once the engine
    /// can run it), or closes it when shown.
    pub(super) fn toggle_review(&mut self) -> Option<Action> {
        if self.panel == Panel::LabelReview {
            self.panel = Panel::Layers;
            return None;
        }
        self.panel = Panel::LabelReview;
        let ready = self.features.is_some()
            || matches!(
                self.status,
                Status::Idle | Status::Running(_) | Status::Paused(_)
            );
        if self.review.issues.is_some() || self.review.running || !ready {
            return None;
        }
        let action = self.send(Command::FindLabelIssues {
            folds: DEFAULT_FOLDS,
        });
        self.review.running = action.is_some();
        action
    }

    /// The keys of the review panel; `None` for a key it leaves to the rest of the dashboard.
    pub(super) fn review_key(&mut self, key: KeyEvent) -> Option<Option<Action>> {
        match key.code {
            KeyCode::Esc => self.panel = Panel::Layers,
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Enter | KeyCode::Char('y') => {
                let Some(f) = self.review.current() else {
                    return Some(None);
                };
                let label = self
                    .review
                    .other
                    .clone()
                    .unwrap_or_else(|| f.suggested.clone());
                if label == f.given {
                    self.decide(Decision::Keep, None);
                } else {
                    self.decide(Decision::Relabel, Some(label));
                }
            }
            KeyCode::Char('o') => self.other_class(),
            KeyCode::Char('x') => self.decide(Decision::Exclude, None),
            KeyCode::Char('g') => self.decide(Decision::Keep, None),
            KeyCode::Char('u') => self.undo_decision(),
            _ => return None,
        }
        Some(None)
    }

    /// Moves the selection by `by` suspects, within the list.
    fn select(&mut self, by: isize) {
        let last = self.review.flagged().len().saturating_sub(1);
        self.review.selected = self.review.selected.saturating_add_signed(by).min(last);
        self.review.other = None;
    }

    /// The class names a suspect can be filed under: the dataset's, or the finder's when the
    /// dataset's are not known.
    pub fn review_classes(&self) -> Vec<String> {
        if !self.classes.is_empty() {
            return self.classes.iter().map(|c| c.name.clone()).collect();
        }
        let mut names: Vec<String> = self
            .review
            .flagged()
            .iter()
            .flat_map(|f| [f.given.clone(), f.suggested.clone()])
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// `o`: offers the next class after the one offered (the suggestion at first), skipping the
    /// given label (`g` keeps that).
    fn other_class(&mut self) {
        let Some(f) = self.review.current() else {
            return;
        };
        let names = self.review_classes();
        let from = self.review.other.as_ref().unwrap_or(&f.suggested);
        let start = names.iter().position(|n| n == from).unwrap_or(names.len());
        let next = (1..=names.len())
            .map(|i| &names[(start + i) % names.len()])
            .find(|n| **n != f.given);
        self.review.other = next.cloned();
    }

    /// The corrections-file key of `path`, an image of the dataset.
    pub fn correction_key(&self, path: &Path) -> String {
        let dataset = Path::new(&self.dataset);
        if !path.starts_with(dataset) {
            if let Ok(full) = std::fs::canonicalize(dataset) {
                if path.starts_with(&full) {
                    return key_of(&full, path);
                }
            }
        }
        key_of(dataset, path)
    }

    /// Opens the corrections file the first time; false (and an error line) when it cannot be.
    fn corrections_ready(&mut self) -> bool {
        if self.review.file.is_some() {
            return true;
        }
        let Some(path) = self.corrections_path.clone() else {
            self.log(
                Level::Error,
                "cannot save label corrections: no cache folder (set XDG_CACHE_HOME or HOME)"
                    .into(),
            );
            return false;
        };
        match CorrectionsFile::open(path) {
            Ok(file) => {
                self.log(
                    Level::Info,
                    format!(
                        "label corrections are saved to {}; the next run on this dataset applies them (--ignore-corrections trains on the labels as given)",
                        file.path().display()
                    ),
                );
                self.review.file = Some(file);
                self.refresh_decisions();
                true
            }
            Err(e) => {
                self.log(
                    Level::Error,
                    format!("cannot open the label corrections: {e}"),
                );
                false
            }
        }
    }

    fn refresh_decisions(&mut self) {
        self.review.decided = self.review.file.as_ref().map_or_else(HashMap::new, |f| {
            f.effective()
                .into_iter()
                .map(|c| (c.file.clone(), c))
                .collect()
        });
    }

    /// Records and saves a decision about the suspect shown, then shows the next one.
    fn decide(&mut self, decision: Decision, label: Option<String>) {
        let Some(path) = self.review.current().map(|f| f.path.clone()) else {
            return;
        };
        if !self.corrections_ready() {
            return;
        }
        let correction = Correction {
            file: self.correction_key(&path),
            decision,
            label,
        };
        let file = self.review.file.as_mut().expect("opened above");
        let saved = file.decide(correction.clone());
        self.refresh_decisions();
        match saved {
            Ok(()) => {
                self.log(
                    Level::Info,
                    format!("{}: {}", correction.file, describe(&correction)),
                );
                self.select(1);
            }
            Err(e) => self.log(
                Level::Error,
                format!(
                    "cannot save the decision about {} to {}: {e}",
                    correction.file,
                    self.corrections_path
                        .as_deref()
                        .unwrap_or(Path::new("?"))
                        .display()
                ),
            ),
        }
    }

    /// `u`: takes back the last decision and shows its suspect.
    fn undo_decision(&mut self) {
        if !self.corrections_ready() {
            return;
        }
        let file = self.review.file.as_mut().expect("opened above");
        let undone = file.undo();
        self.refresh_decisions();
        match undone {
            Ok(Some(c)) => {
                self.log(Level::Info, format!("undone: {}: {}", c.file, describe(&c)));
                let at = self
                    .review
                    .flagged()
                    .iter()
                    .position(|f| self.correction_key(&f.path) == c.file);
                if let Some(i) = at {
                    self.review.selected = i;
                    self.review.other = None;
                }
            }
            Ok(None) => self.log(Level::Info, "no label decision to undo".into()),
            Err(e) => self.log(
                Level::Error,
                format!("cannot save the label corrections after undoing: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Epochs;
    use crate::train::label_issues::Misfit;
    use crate::train::{Event, FeatureStatus};
    use crossterm::event::KeyModifiers;
    use std::path::PathBuf;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn code(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    pub(crate) fn flagged(file: &str, given: &str, suggested: &str) -> Flagged {
        Flagged {
            path: PathBuf::from("data").join(file),
            given: given.into(),
            suggested: suggested.into(),
            given_probability: 0.125,
            suggested_probability: 0.75,
        }
    }

    /// Three suspects among cat, dog and fox images, and one image that fits no class.
    pub(crate) fn issues() -> LabelIssues {
        LabelIssues {
            method: "confident learning".into(),
            folds: DEFAULT_FOLDS,
            images: 100,
            out_of_fold_accuracy: 0.9,
            flagged: vec![
                flagged("cat/1.jpg", "cat", "dog"),
                flagged("dog/2.jpg", "dog", "cat"),
                flagged("fox/3.jpg", "fox", "cat"),
            ],
            outliers: vec![Misfit {
                path: "data/cat/9.jpg".into(),
                given: "cat".into(),
                reason: "far from every class".into(),
            }],
            features: FeatureStatus::Computed {
                images: 100,
                seconds: 1.0,
                path: None,
            },
            seconds: 0.5,
        }
    }

    fn app(dir: &Path) -> App {
        let mut a = App::new("data".into(), "timm/x".into(), Epochs::Count(3), 2, true);
        a.status = Status::Idle;
        a.corrections_path = Some(dir.join("corrections").join("data.csv"));
        a
    }

    fn row(file: &str, decision: Decision, label: Option<&str>) -> Correction {
        Correction {
            file: file.into(),
            decision,
            label: label.map(String::from),
        }
    }

    fn saved(a: &App) -> Vec<Correction> {
        CorrectionsFile::open(a.corrections_path.clone().unwrap())
            .unwrap()
            .effective()
    }

    #[test]
    fn i_asks_for_the_finder_once_and_opens_the_review() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = app(dir.path());
        a.status = super::super::Status::Preparing;
        assert_eq!(a.on_key(key('i')), None, "nothing to run it on yet");
        assert_eq!(a.panel, Panel::LabelReview);
        a.on_key(key('i'));
        assert_eq!(a.panel, Panel::Layers, "i again closes it");
        a.status = Status::Idle;
        assert_eq!(
            a.on_key(key('i')),
            Some(Action::Engine(Command::FindLabelIssues {
                folds: DEFAULT_FOLDS
            }))
        );
        assert!(a.review.running);
        a.on_key(key('i'));
        assert_eq!(a.on_key(key('i')), None, "asked once");
        a.apply(Event::LabelIssues(issues()));
        assert!(!a.review.running);
        assert_eq!(a.review.flagged().len(), 3);
        assert!(a
            .log
            .iter()
            .any(|(_, l)| l.contains("3 of 100 images flagged")));
        a.on_key(code(KeyCode::Esc));
        assert_eq!(
            a.panel,
            Panel::Layers,
            "Esc leaves the review, not the dashboard"
        );
        assert!(!a.should_quit && !a.confirm_quit);
        assert_eq!(a.on_key(key('i')), None, "the result is kept");
        assert_eq!(a.panel, Panel::LabelReview);
    }

    #[test]
    fn decisions_are_saved_at_once_and_undo_takes_back_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = app(dir.path());
        a.on_key(key('i'));
        a.apply(Event::LabelIssues(issues()));
        assert!(
            !a.corrections_path.as_ref().unwrap().exists(),
            "opened lazily"
        );
        assert_eq!(a.on_key(code(KeyCode::Enter)), None);
        assert_eq!(
            saved(&a),
            [row("cat/1.jpg", Decision::Relabel, Some("dog"))]
        );
        assert!(a
            .log
            .iter()
            .any(|(_, l)| l.contains("label corrections are saved to")
                && l.contains("--ignore-corrections")));
        assert_eq!(a.review.selected, 1, "the next suspect is shown");
        // dog/2.jpg: suggested cat; o offers the next class after it, skipping dog (given).
        a.on_key(key('o'));
        assert_eq!(a.review.other.as_deref(), Some("fox"));
        a.on_key(key('o'));
        assert_eq!(a.review.other.as_deref(), Some("cat"));
        a.on_key(key('o'));
        a.on_key(key('y'));
        a.on_key(key('x'));
        assert_eq!(
            saved(&a),
            [
                row("cat/1.jpg", Decision::Relabel, Some("dog")),
                row("dog/2.jpg", Decision::Relabel, Some("fox")),
                row("fox/3.jpg", Decision::Exclude, None),
            ]
        );
        a.on_key(key('u'));
        assert_eq!(a.review.selected, 2, "undo shows the suspect again");
        assert_eq!(saved(&a).len(), 2);
        a.on_key(key('g'));
        a.on_key(key('k'));
        a.on_key(key('k'));
        a.on_key(key('k'));
        assert_eq!(a.review.selected, 0);
        a.on_key(key('g'));
        assert_eq!(
            saved(&a),
            [
                row("cat/1.jpg", Decision::Keep, None),
                row("dog/2.jpg", Decision::Relabel, Some("fox")),
                row("fox/3.jpg", Decision::Keep, None),
            ]
        );
        assert_eq!(a.review.decided.len(), 3);
        a.on_key(key('u'));
        assert_eq!(
            saved(&a)[0],
            row("cat/1.jpg", Decision::Relabel, Some("dog")),
            "undo brings back the earlier decision"
        );
        assert!(a.log.iter().all(|(l, _)| *l != Level::Error), "{:?}", a.log);
    }

    #[test]
    fn a_failure_to_save_is_an_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a folder").unwrap();
        let mut a = app(dir.path());
        a.corrections_path = Some(blocker.join("data.csv"));
        a.on_key(key('i'));
        a.apply(Event::LabelIssues(issues()));
        a.on_key(key('x'));
        assert!(
            a.log
                .iter()
                .any(|(l, m)| *l == Level::Error && m.contains(&blocker.display().to_string())),
            "{:?}",
            a.log
        );
        assert_eq!(a.review.selected, 0, "the suspect stays shown");
        let mut b = app(dir.path());
        b.corrections_path = None;
        b.apply(Event::LabelIssues(issues()));
        b.panel = Panel::LabelReview;
        b.on_key(key('x'));
        assert!(b.log.iter().any(|(l, _)| *l == Level::Error));
    }
}
