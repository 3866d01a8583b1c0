//! Structures that live in segments and their process-local handles.

pub mod block;
pub mod cell;
