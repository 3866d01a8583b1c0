//! Linux-specific pieces, isolated behind small interfaces (one file per concern).

pub mod futex;
pub mod limits;
pub mod process;
