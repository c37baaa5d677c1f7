//! Commands during a long pass: [`Control`] takes pause, resume, stop and interrupt between
//! batches, a [`Halt`] ends the pass, a [`Meter`] reports its rate and ETA.

use crate::train::{Command, Event, Pass};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

/// A long pass cut short by `Stop` (or `Interrupt`); the engine then finishes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Halt {
    pub(super) interrupted: bool,
}

impl Halt {
    /// The halt `command` asks for: `Stop` and `Interrupt` end a pass, others do not.
    pub(super) fn of(command: &Command) -> Option<Self> {
        match command {
            Command::Stop => Some(Self { interrupted: false }),
            Command::Interrupt => Some(Self { interrupted: true }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped during a long pass")
    }
}

impl std::error::Error for Halt {}

/// The command channel, and whether training is paused. Long passes call
/// [`Control::between_batches`], which acts on pause, resume, stop and interrupt at once and
/// keeps other commands for when the pass ends.
pub(super) struct Control {
    pub(super) rx: Receiver<Command>,
    pub(super) queued: VecDeque<Command>,
    pub(super) events: Sender<Event>,
    pub(super) paused: bool,
    /// The dashboard's finder runs: pause when it ends, unless a `Resume` came meanwhile.
    pub(super) hold_after_finder: bool,
}

impl Control {
    /// The next command: a queued one, else one from the channel (waiting for it when `wait`);
    /// a closed channel reads as `Stop`.
    pub(super) fn next(&mut self, wait: bool) -> Option<Command> {
        if let Some(c) = self.queued.pop_front() {
            return Some(c);
        }
        if wait {
            return Some(self.rx.recv().unwrap_or(Command::Stop));
        }
        match self.rx.try_recv() {
            Ok(c) => Some(c),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Command::Stop),
        }
    }

    pub(super) fn pause(&mut self, paused: bool) {
        self.hold_after_finder &= paused;
        if self.paused != paused {
            self.paused = paused;
            let _ = self.events.send(if paused {
                Event::Paused
            } else {
                Event::Resumed
            });
        }
    }

    /// Reports a long pass's progress, then takes the commands that arrived: waits while
    /// paused; `Stop` and `Interrupt` end the pass with a [`Halt`] error.
    pub(super) fn between_batches(&mut self, meter: &Meter, done: usize) -> anyhow::Result<()> {
        let _ = self.events.send(meter.event(done));
        loop {
            let command = if self.paused {
                self.rx.recv().unwrap_or(Command::Stop)
            } else {
                match self.rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => Command::Stop,
                }
            };
            if let Some(halt) = Halt::of(&command) {
                return Err(halt.into());
            }
            match command {
                Command::Pause => self.pause(true),
                Command::Resume => self.pause(false),
                other => self.queued.push_back(other),
            }
        }
    }
}

/// Rate and ETA of a long pass.
pub(super) struct Meter {
    pub(super) pass: Pass,
    pub(super) total: usize,
    pub(super) started: Instant,
}

impl Meter {
    pub(super) fn new(pass: Pass, total: usize) -> Self {
        Self {
            pass,
            total,
            started: Instant::now(),
        }
    }

    pub(super) fn event(&self, done: usize) -> Event {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        Event::Progress {
            pass: self.pass,
            done,
            total: self.total,
            images_per_sec: rate,
            eta_seconds: if rate > 0.0 {
                self.total.saturating_sub(done) as f64 / rate
            } else {
                0.0
            },
        }
    }
}
