//! tltui: a terminal trainer for transfer learning of image classifiers.
//!
//! The pieces, one concern each: [`config`] (settings), [`data`] (folders of images to batches).

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
pub mod train;
pub mod ui;
