//! Named POSIX shared-memory segments.
//!
//! * [`header`]: the `#[repr(C)]` header every segment starts with, and its validation.
//! * [`offset`]: [`Offset<T>`], the only way one object in a segment refers to another, and the
//!   [`ShmSafe`] marker for types that may live in shared memory.
//! * [`shm`]: creating, opening and mapping segments; the per-process registry that maps each segment once.
//! * [`users`]: the lifetime scheme (which live processes use a segment; unlink when the last one lets go).
//! * [`alloc`]: a multi-process block allocator over a region of a segment.
//! * [`gc`]: listing segments and removing those whose users all died (by hand, and automatically).
//! * [`namespace`]: the namespace a process tree's segment names carry (`PYCONC_NAMESPACE`).

pub mod alloc;
pub mod gc;
pub mod header;
pub mod namespace;
pub mod offset;
pub mod shm;
pub mod users;

pub use header::{Kind, SegmentHeader, LAYOUT_VERSION};
pub use offset::{Offset, ShmSafe};
pub use shm::Segment;
