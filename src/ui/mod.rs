//! The dashboard: app state fed by engine events ([`app`]), keys turned into engine commands
//! ([`App::on_key`]), the screen laid out by [`draw`], one function per panel ([`panels`]). The
//! engine runs on its own thread; this loop never waits for it.

pub mod app;
mod draw;
pub mod panels;
pub mod pictures;

pub use draw::{draw, MIN_SIZE};

use crate::cli::TrainArgs;
use crate::config::AutoStart;
use crate::rundir::RunLog;
use crate::train::{Command, Engine, Event};
use app::{Action, App};
use futures::StreamExt;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Redraw period (about 15 frames a second).
const TICK: Duration = Duration::from_millis(66);

/// Runs the dashboard on `dataset` until the user quits.
pub fn run(args: &TrainArgs, dataset: &Path) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("standard output is not a terminal; run with --headless (add --json for machine-readable output)");
    }
    let config = args.data.config.load(|c| {
        args.model.apply(c);
        args.plan.apply(c);
    })?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app = App::new(
        dataset.display().to_string(),
        config.hub.backbone.clone(),
        config.train.warmup_epochs,
        config.train.finetune_epochs,
        color,
    );
    let auto = config.train.auto_start;
    let source = args.data.source.options(&config);
    let resume = args.resume.as_deref();
    let setup = crate::train::EngineSetup::new(dataset, source, config, &args.model, resume)?;
    app.weights_origin = Some((&setup.weights).into());
    app.corrections_path = crate::cache_dir()
        .map(|cache| crate::data::corrections::CorrectionsFile::path_for(&cache, dataset));
    let mut run_log = RunLog::new(&setup.checkpoint_dir);
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::spawn(setup, tx);
    let commands = engine.commands();
    match auto {
        AutoStart::Warmup => {
            let _ = commands.send(Command::Warmup {
                epochs: app.warmup_epochs,
            });
        }
        AutoStart::Finetune => {
            let _ = commands.send(Command::Finetune {
                epochs: app.finetune_epochs,
                groups: None,
            });
        }
        AutoStart::None => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // ratatui::init installs a panic hook that restores the terminal before the message prints.
    let mut terminal = ratatui::init();
    app.pictures = pictures::Pictures::detect();
    crate::train::quiet_engine_panics();
    let result = runtime.block_on(event_loop(
        &mut terminal,
        &mut app,
        &mut run_log,
        &rx,
        &commands,
    ));
    ratatui::restore();
    match result? {
        Exit::Quit => {
            let _ = commands.send(Command::Stop);
            Ok(ExitCode::SUCCESS)
        }
        Exit::Interrupted => {
            let _ = commands.send(Command::Interrupt);
            eprintln!("interrupted; saving a checkpoint…");
            for e in rx.iter() {
                for message in run_log.observe(&e) {
                    eprintln!("warning: {message}");
                }
                match e {
                    Event::CheckpointSaved { path, .. } => {
                        eprintln!("checkpoint saved: {}", path.display())
                    }
                    Event::Error { message } => eprintln!("error: {message}"),
                    Event::Finished(_) => break,
                    _ => {}
                }
            }
            engine.join();
            Ok(ExitCode::from(130))
        }
    }
}

/// How the dashboard ended.
enum Exit {
    /// The user quit (after confirming, when progress was unsaved).
    Quit,
    /// Ctrl-C or a termination signal: the engine saves an `interrupted` checkpoint.
    Interrupted,
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    run_log: &mut RunLog,
    events: &std::sync::mpsc::Receiver<Event>,
    commands: &std::sync::mpsc::Sender<Command>,
) -> anyhow::Result<Exit> {
    let mut keys = crossterm::event::EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    let mut stop = crate::stop_signals::StopSignals::listen(true)?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Coalesce: take everything the engine sent since the last frame.
                for e in events.try_iter() {
                    for message in run_log.observe(&e) {
                        app.apply(Event::Warning { message });
                    }
                    app.apply(e);
                }
                if app.should_quit {
                    return Ok(Exit::Quit);
                }
                terminal.draw(|f| draw(f, app))?;
                if crate::fault::injected("panic-ui") && app.status != app::Status::Preparing {
                    panic!("injected fault: panic in the dashboard");
                }
            }
            key = keys.next() => match key {
                Some(Ok(crossterm::event::Event::Key(k))) if k.kind == crossterm::event::KeyEventKind::Press => {
                    match app.on_key(k) {
                        Some(Action::Quit) => return Ok(Exit::Quit),
                        Some(Action::SaveAndQuit) => {
                            let _ = commands.send(Command::Save);
                        }
                        Some(Action::Engine(Command::Interrupt)) => return Ok(Exit::Interrupted),
                        Some(Action::Engine(c)) => {
                            let _ = commands.send(c);
                        }
                        None => {}
                    }
                    terminal.draw(|f| draw(f, app))?;
                }
                Some(Ok(_)) => terminal.draw(|f| draw(f, app)).map(|_| ())?,
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(Exit::Quit),
            },
            _ = stop.recv() => return Ok(Exit::Interrupted),
        }
    }
}
