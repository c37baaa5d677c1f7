//! Key handling: a key press changes dashboard-only state or becomes an engine [`Command`].

use super::{App, Panel, Status};
use crate::train::Command;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks of the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this to the engine.
    Engine(Command),
    /// Leave now.
    Quit,
    /// Save, then leave once the checkpoint is written.
    SaveAndQuit,
}

impl Panel {
    /// The next panel in Tab order.
    fn next(self) -> Self {
        match self {
            Panel::Layers => Panel::Confusion,
            Panel::Confusion => Panel::TopLosses,
            Panel::TopLosses => Panel::Augmentations,
            Panel::Augmentations => Panel::History,
            Panel::History => Panel::LabelReview,
            Panel::LabelReview | Panel::LrFinder => Panel::Layers,
        }
    }
}

impl App {
    /// Interprets a key: dashboard-only keys change the state here; engine commands are returned.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Engine(Command::Interrupt));
        }
        if self.confirm_quit {
            self.confirm_quit = false;
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('q') => Some(Action::Quit),
                KeyCode::Char('s') => {
                    self.quit_after_save = true;
                    self.pending = Some("save and quit".into());
                    Some(Action::SaveAndQuit)
                }
                _ => None,
            };
        }
        if self.show_help
            && matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            )
        {
            self.show_help = false;
            return None;
        }
        if self.panel == Panel::LrFinder {
            match key.code {
                KeyCode::Esc => {
                    self.panel = Panel::Layers;
                    return self.send(Command::Resume);
                }
                KeyCode::Enter => {
                    let result = self.lr_find.as_ref()?;
                    self.panel = Panel::Layers;
                    // Without a clear descent, Enter keeps the rate, as Esc does.
                    return match result.suggestion {
                        Some(s) => self.send(Command::AdoptLr(s.valley)),
                        None => self.send(Command::Resume),
                    };
                }
                _ => {}
            }
        }
        if self.panel == Panel::LabelReview {
            if let Some(action) = self.review_key(key) {
                return action;
            }
        }
        let command = match key.code {
            KeyCode::Char('w') => Command::Warmup {
                epochs: self.warmup_epochs,
            },
            KeyCode::Char('f') => Command::Finetune {
                epochs: self.finetune_epochs,
                groups: None,
            },
            KeyCode::Char('s') => Command::Save,
            KeyCode::Char('v') => Command::Validate,
            KeyCode::Char('+') | KeyCode::Char('=') => Command::ScaleLr(2.0),
            KeyCode::Char('-') => Command::ScaleLr(0.5),
            KeyCode::Char(']') => Command::Unfreeze(1),
            KeyCode::Char('[') => Command::Unfreeze(-1),
            KeyCode::Char('r') => {
                self.lr_find = None;
                self.panel = Panel::LrFinder;
                Command::FindLr { adopt: false }
            }
            KeyCode::Char('h') => return self.toggle(Panel::History),
            KeyCode::Char('p') | KeyCode::Char(' ') => match self.status {
                Status::Paused(_) => Command::Resume,
                _ => Command::Pause,
            },
            KeyCode::Char('?') => {
                self.show_help = true;
                return None;
            }
            KeyCode::Char('c') => return self.toggle(Panel::Confusion),
            KeyCode::Char('l') => return self.toggle(Panel::TopLosses),
            KeyCode::Char('a') => return self.toggle(Panel::Augmentations),
            KeyCode::Char('i') => return self.toggle_review(),
            KeyCode::Tab => return self.show(self.panel.next()),
            KeyCode::Char('n') if self.panel == Panel::Augmentations => {
                Command::PreviewAugmentations
            }
            KeyCode::Down | KeyCode::Char('j') if self.panel == Panel::TopLosses => {
                self.selected_loss =
                    (self.selected_loss + 1).min(self.top_losses.len().saturating_sub(1));
                return None;
            }
            KeyCode::Up | KeyCode::Char('k') if self.panel == Panel::TopLosses => {
                self.selected_loss = self.selected_loss.saturating_sub(1);
                return None;
            }
            KeyCode::Char('q') | KeyCode::Esc => {
                if self.unsaved {
                    self.confirm_quit = true;
                    return None;
                }
                return Some(Action::Quit);
            }
            _ => return None,
        };
        self.send(command)
    }

    /// Sends `command` to the engine unless it has ended; the footer shows it until it acts.
    pub(super) fn send(&mut self, command: Command) -> Option<Action> {
        if self.status == Status::Finished {
            return None;
        }
        self.pending = Some(describe(&command));
        Some(Action::Engine(command))
    }

    /// Shows `panel`, or the layer groups when it is already shown.
    fn toggle(&mut self, panel: Panel) -> Option<Action> {
        self.show(if self.panel == panel {
            Panel::Layers
        } else {
            panel
        })
    }

    /// Shows `panel`; the augmentation panel asks the engine for a picture the first time.
    fn show(&mut self, panel: Panel) -> Option<Action> {
        self.panel = panel;
        let wanted = panel == Panel::Augmentations && self.preview.is_none();
        (wanted && self.status != Status::Finished).then(|| {
            self.pending = Some(describe(&Command::PreviewAugmentations));
            Action::Engine(Command::PreviewAugmentations)
        })
    }
}

/// Short text for a command awaiting the engine.
fn describe(c: &Command) -> String {
    match c {
        Command::Warmup { epochs } => format!("warm-up ({epochs} epochs)"),
        Command::Finetune { epochs, .. } => format!("fine-tune ({epochs} epochs)"),
        Command::Pause => "pause".into(),
        Command::Resume => "resume".into(),
        Command::Save => "save".into(),
        Command::Validate => "validate".into(),
        Command::PreviewAugmentations => "augmentation preview".into(),
        Command::Stop => "stop".into(),
        Command::Interrupt => "interrupt".into(),
        Command::ScaleLr(f) => format!("learning rate x{f}"),
        Command::AdoptLr(lr) => format!("learning rate {lr:.2e}"),
        Command::Unfreeze(n) if *n > 0 => "unfreeze a layer group".into(),
        Command::Unfreeze(_) => "freeze a layer group".into(),
        Command::TrainableGroups(n) => format!("{n} trainable layer groups"),
        Command::FindLr { .. } => "learning-rate finder".into(),
        Command::FindLabelIssues { .. } => "label-issue finder".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Epochs;
    use crate::train::lr_find::{LrFind, Verdict};
    use crate::train::{Event, Phase};

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn app() -> App {
        let mut a = App::new("data".into(), "timm/x".into(), Epochs::Count(3), 2, true);
        a.status = Status::Idle;
        a
    }

    #[test]
    fn tab_cycles_the_panels_and_the_preview_is_asked_for_once() {
        let mut a = app();
        let tab = KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE);
        let mut seen = vec![a.panel];
        let mut actions = Vec::new();
        for _ in 0..6 {
            actions.push(a.on_key(tab));
            seen.push(a.panel);
        }
        use Panel::*;
        assert_eq!(
            seen,
            [
                Layers,
                Confusion,
                TopLosses,
                Augmentations,
                History,
                LabelReview,
                Layers
            ]
        );
        assert_eq!(
            actions,
            [
                None,
                None,
                Some(Action::Engine(Command::PreviewAugmentations)),
                None,
                None,
                None
            ],
            "Tab shows the label review without running the finder"
        );
    }

    #[test]
    fn each_key_yields_its_command() {
        let mut a = app();
        assert_eq!(
            a.on_key(key('w')),
            Some(Action::Engine(Command::Warmup {
                epochs: Epochs::Count(3)
            }))
        );
        assert_eq!(a.pending.as_deref(), Some("warm-up (3 epochs)"));
        assert_eq!(
            a.on_key(key('f')),
            Some(Action::Engine(Command::Finetune {
                epochs: 2,
                groups: None
            }))
        );
        assert_eq!(a.on_key(key('s')), Some(Action::Engine(Command::Save)));
        assert_eq!(a.on_key(key('v')), Some(Action::Engine(Command::Validate)));
        a.status = Status::Running(Phase::Warmup);
        assert_eq!(a.on_key(key('p')), Some(Action::Engine(Command::Pause)));
        a.status = Status::Paused(Phase::Warmup);
        assert_eq!(a.on_key(key('p')), Some(Action::Engine(Command::Resume)));
        assert_eq!(
            a.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Engine(Command::Interrupt))
        );
        assert_eq!(a.on_key(key('?')), None);
        assert!(a.show_help);
        assert_eq!(a.on_key(key('?')), None);
        assert!(!a.show_help);
        assert_eq!(a.on_key(key('q')), Some(Action::Quit));
    }

    #[test]
    fn steering_keys_and_the_finder_panel() {
        let mut a = app();
        a.status = Status::Running(Phase::Finetune);
        assert_eq!(
            a.on_key(key('+')),
            Some(Action::Engine(Command::ScaleLr(2.0)))
        );
        assert_eq!(
            a.on_key(key('-')),
            Some(Action::Engine(Command::ScaleLr(0.5)))
        );
        assert_eq!(
            a.on_key(key(']')),
            Some(Action::Engine(Command::Unfreeze(1)))
        );
        assert_eq!(
            a.on_key(key('[')),
            Some(Action::Engine(Command::Unfreeze(-1)))
        );
        assert_eq!(
            a.on_key(key('r')),
            Some(Action::Engine(Command::FindLr { adopt: false }))
        );
        assert_eq!(a.panel, Panel::LrFinder);
        let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(a.on_key(enter), None, "nothing to adopt before the result");
        a.apply(Event::LrFind(LrFind {
            points: vec![],
            verdict: Verdict::Suggested,
            message: Verdict::Suggested.to_string(),
            suggestion: Some(crate::train::lr_find::Suggestion {
                steepest: 1e-3,
                valley: 2e-3,
            }),
            diverged: true,
            adopted: None,
            seconds: 0.1,
        }));
        assert_eq!(
            a.on_key(enter),
            Some(Action::Engine(Command::AdoptLr(2e-3)))
        );
        assert_eq!(a.panel, Panel::Layers);
        a.on_key(key('r'));
        let esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
        assert_eq!(
            a.on_key(esc),
            Some(Action::Engine(Command::Resume)),
            "Esc lets the held phase go on at its rate"
        );
        assert_eq!(
            a.panel,
            Panel::Layers,
            "Esc leaves the finder, not the dashboard"
        );
        assert!(!a.should_quit && !a.confirm_quit);
        a.on_key(key('r'));
        a.apply(Event::LrFind(LrFind {
            points: vec![],
            verdict: Verdict::NoClearDescent,
            message: Verdict::NoClearDescent.to_string(),
            suggestion: None,
            diverged: true,
            adopted: None,
            seconds: 0.1,
        }));
        assert_eq!(
            a.on_key(enter),
            Some(Action::Engine(Command::Resume)),
            "without a clear descent Enter keeps the rate"
        );
        assert!(a
            .log
            .iter()
            .any(|(_, l)| l.contains("no clear descent: keep the current rate")));
    }

    #[test]
    fn quit_asks_when_progress_is_unsaved() {
        let mut a = app();
        a.unsaved = true;
        assert_eq!(a.on_key(key('q')), None);
        assert!(a.confirm_quit);
        assert_eq!(a.on_key(key('n')), None);
        assert!(!a.confirm_quit);
        a.on_key(key('q'));
        assert_eq!(a.on_key(key('s')), Some(Action::SaveAndQuit));
        a.apply(Event::CheckpointSaved {
            path: "x".into(),
            reason: "manual".into(),
        });
        assert!(a.should_quit);
        let mut b = app();
        b.unsaved = true;
        b.on_key(key('q'));
        assert_eq!(b.on_key(key('y')), Some(Action::Quit));
    }
}
