//! tltui: a terminal trainer for transfer learning of image classifiers.
//!
//! The pieces, one concern each: [`config`] (settings), [`data`] (every source of labelled
//! images to batches), [`hub`] (downloads), [`model`] (backbones and kernels), [`train`] (the
//! engine and its `Event`/`Command` protocol), and the front ends that drive it: [`ui`] (the
//! dashboard), [`headless`], [`inspect`], [`infer`], [`share`], [`bench`]; [`simd`] picks the
//! vector instructions the kernels run with.

pub mod atomic;
pub mod backbones;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod embed;
pub mod fault;
pub mod headless;
pub mod hub;
pub mod infer;
pub mod inspect;
pub mod model;
pub mod onnx;
pub mod rundir;
pub mod share;
pub mod simd;
pub mod stop_signals;
pub mod train;
pub mod ui;

/// tltui's folder in the user's cache directory (features, checkpoints, label corrections);
/// `None` where the system has no cache directory.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    dirs::cache_dir().map(|d| d.join("tltui"))
}
