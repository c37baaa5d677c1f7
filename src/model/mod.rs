//! Backbones in candle with timm's key names, their layer groups, and the custom ops they use.

pub mod ops;
