//! Named POSIX shared-memory segments.
//!
//! * [`header`]: the `#[repr(C)]` header every segment starts with, and its validation.
//! * [`offset`]: [`Offset<T>`], the only way one object in a segment refers to another, and the
//!   [`ShmSafe`] marker for types that may live in shared memory.
//! * [`mapped`]: [`Mapped`], [`MappedSlice`], [`MappedBytes`]: process-local handles to structures in a segment
//!   that keep it mapped; the one place that holds pointers into shared memory.
//! * [`shm`]: creating, opening and mapping segments; the per-process registry that maps each segment once.
//! * [`owners`]: the one robust owner table (slots claimed by a live process, reaped with cleanup once it died).
//! * [`users`]: the lifetime scheme (which live processes use a segment; unlink when the last one lets go).
//! * [`arena`]: many small objects in one segment, each in a cell with its own lifetime.
//! * [`alloc`]: a multi-process block allocator over a region of a segment.
//! * [`extents`]: structures that grow into extension segments (main + extensions, each with a heap).
//! * [`gc`]: listing segments and removing those whose users all died (by hand, and automatically).
//! * [`namespace`]: the namespace a process tree's segment names carry (`PYCONC_NAMESPACE`).

pub mod alloc;
pub mod arena;
pub mod extents;
pub mod gc;
pub mod header;
pub mod mapped;
pub mod namespace;
pub mod offset;
pub mod owners;
pub mod shm;
pub mod users;

pub use header::{Kind, SegmentHeader, LAYOUT_VERSION};
pub use mapped::{Mapped, MappedBytes, MappedSlice};
pub use offset::{Offset, ShmSafe};
pub use shm::Segment;
