//! Structures that live in segments and their process-local handles.

pub mod atomic;
pub mod block;
