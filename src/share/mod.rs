//! Sharing a trained model: `tltui push` and the model card it writes. It sits above [`crate::train`],
//! [`crate::cli`] and [`crate::infer`], which it reads, so that [`crate::hub`] stays the download
//! client that training uses.

pub mod card;
pub mod push;
