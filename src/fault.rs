//! Fault injection for the reliability tests: `TLTUI_FAULT=panic-engine` panics inside the
//! training engine at its first step, `TLTUI_FAULT=panic-ui` inside the dashboard's loop.

/// Whether the fault `name` was asked for.
pub fn injected(name: &str) -> bool {
    std::env::var("TLTUI_FAULT").is_ok_and(|v| v == name)
}
