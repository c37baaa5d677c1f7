//! Images in the terminal: the graphics protocol the terminal speaks (sixel, kitty, iTerm2, or
//! half-block characters everywhere else) and the pictures encoded for it.

use image::DynamicImage;
use ratatui::layout::Rect;
use ratatui::Frame;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::StatefulProtocol;
use ratatui_image::{FilterType, Resize, StatefulImage};
use std::collections::HashMap;

/// The graphics protocol the terminal's environment variables name, outside tmux.
fn protocol_from_env() -> Option<ProtocolType> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let (term, program) = (var("TERM"), var("TERM_PROGRAM"));
    if !var("TMUX").is_empty() || term.starts_with("tmux") || term.starts_with("screen") {
        None
    } else if term.contains("kitty") || !var("KITTY_WINDOW_ID").is_empty() || program == "ghostty" {
        Some(ProtocolType::Kitty)
    } else if program == "iTerm.app" || program == "WezTerm" || var("LC_TERMINAL") == "iTerm2" {
        Some(ProtocolType::Iterm2)
    } else if term.starts_with("foot") || term.starts_with("mlterm") {
        Some(ProtocolType::Sixel)
    } else {
        None
    }
}

/// Longest side, in pixels, a picture is kept at; thumbnails need no more.
const MAX_SIDE: u32 = 384;

/// The terminal's picture protocol and the pictures prepared for it, by key.
pub struct Pictures {
    picker: Picker,
    prepared: HashMap<String, Result<StatefulProtocol, String>>,
}

impl Pictures {
    /// Half-block characters: works in every terminal (and in tests).
    pub fn halfblocks() -> Self {
        Self {
            picker: Picker::halfblocks(),
            prepared: HashMap::new(),
        }
    }

    /// The graphics protocol the environment names (kitty, iTerm2/WezTerm, foot/mlterm sixel),
    /// sized by the window's pixel size; half blocks otherwise, inside tmux, or when the terminal
    /// does not report its pixel size. Nothing is read from stdin: ratatui-image's stdin query
    /// leaves a reader behind when the terminal does not answer, which swallows the first keys.
    pub fn detect() -> Self {
        let window = crossterm::terminal::window_size().ok();
        let picker = match (protocol_from_env(), window) {
            (Some(protocol), Some(w))
                if w.width > 0 && w.height > 0 && w.columns > 0 && w.rows > 0 =>
            {
                // Deprecated in favour of the stdin query this avoids (see above).
                #[allow(deprecated)]
                let mut picker = Picker::from_fontsize((w.width / w.columns, w.height / w.rows));
                picker.set_protocol_type(protocol);
                picker
            }
            _ => Picker::halfblocks(),
        };
        Self {
            picker,
            prepared: HashMap::new(),
        }
    }

    /// Forgets the pictures whose key starts with `prefix`.
    pub fn forget(&mut self, prefix: &str) {
        self.prepared.retain(|k, _| !k.starts_with(prefix));
    }

    /// Draws picture `key` scaled into `area`, preparing it with `load` the first time; returns
    /// the reason when it cannot be shown.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        key: &str,
        load: impl FnOnce() -> Result<DynamicImage, String>,
    ) -> Result<(), String> {
        let picker = &self.picker;
        let entry = self.prepared.entry(key.to_string()).or_insert_with(|| {
            load().map(|img| {
                let img = if img.width().max(img.height()) > MAX_SIDE {
                    img.thumbnail(MAX_SIDE, MAX_SIDE)
                } else {
                    img
                };
                picker.new_resize_protocol(img)
            })
        });
        match entry {
            Ok(protocol) => {
                f.render_stateful_widget(
                    StatefulImage::default().resize(Resize::Scale(Some(FilterType::Triangle))),
                    area,
                    protocol,
                );
                Ok(())
            }
            Err(e) => Err(e.clone()),
        }
    }
}
