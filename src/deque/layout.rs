//! The `#[repr(C)]` structs of a shared deque (documented in `shm-layouts/deque.md`).

use crate::base::atomic::{AtomicU32, AtomicU64};
use crate::shm_struct;
use crate::sync::lock::LockState;

/// Payload layout version of [`Kind::Deque`](crate::segment::Kind::Deque) segments.
pub const DEQUE_VERSION: u32 = 1;
/// `DequeHeader::magic` (`b"DEQU"`).
pub const DEQUE_MAGIC: u32 = u32::from_le_bytes(*b"DEQU");
/// Most segments one deque may span (the main one included).
pub const MAX_SEGMENTS: usize = 24;
/// Bytes reserved for one extension segment name (names are 39 ASCII bytes).
pub const NAME_WORDS: usize = 6;
/// `maxlen` of a deque without a bound.
pub const MAXLEN_NONE: u64 = u64::MAX;
/// Slots of the smallest ring.
pub const MIN_RING: u64 = 8;
/// Most slots of a ring (the span packs the length in 32 bits).
pub const MAX_RING: u64 = 1 << 31;

/// A reference to bytes of a deque: `(segment index << REF_SHIFT) | byte offset in that segment`.
pub const REF_SHIFT: u32 = 40;
/// Mask of the offset part of a reference.
pub const REF_OFFSET_MASK: u64 = (1 << REF_SHIFT) - 1;

/// `Intent::op`: nothing in flight.
pub const OP_NONE: u64 = 0;
/// `Intent::op`: replace the ring: store `a` in `ring`, `b` in `cap`, `c` in `span`.
pub const OP_SWAP_RING: u64 = 1;
/// `Intent::op`: rotate one slot at a time until the head is `a` (`b` = 0: items move from the back to the
/// front, 1: from the front to the back).
pub const OP_ROTATE: u64 = 2;

/// Bit 0 of `DequeHeader::items`: a popper may be asleep on the word (pushers then bump it and wake).
pub const ITEMS_SLEEPERS: u32 = 1;

shm_struct! {
    /// The operation record of the lock holder: what a holder that dies must have finished, so the next holder
    /// can complete it.
    pub struct Intent {
        /// [`OP_NONE`], [`OP_SWAP_RING`] or [`OP_ROTATE`]; written last (Release) when the arguments are in place.
        pub op: AtomicU64,
        /// First argument.
        pub a: AtomicU64,
        /// Second argument.
        pub b: AtomicU64,
        /// Third argument.
        pub c: AtomicU64,
    }
}

shm_struct! {
    /// At the start of the main segment's payload.
    pub struct DequeHeader {
        /// [`DEQUE_MAGIC`] once initialised.
        pub magic: AtomicU32,
        /// [`DEQUE_VERSION`].
        pub version: AtomicU32,
        /// Most items ([`MAXLEN_NONE`]: unbounded). Never changes.
        pub maxlen: AtomicU64,
        /// Segments in use (1 = only the main one). Grows only, under `lock`, after the name is written.
        pub nsegs: AtomicU32,
        /// Unused; zero.
        pub reserved0: AtomicU32,
        /// Heap bytes of the last segment added.
        pub last_seg_size: AtomicU64,
        /// The robust lock every change holds.
        pub lock: LockState,
        /// Reference to the ring block: `cap` item references.
        pub ring: AtomicU64,
        /// Slots of the ring (a power of two, `MIN_RING..=MAX_RING`).
        pub cap: AtomicU64,
        /// `head | len << 32`: the live items are ring slots `head, head + 1, ... head + len - 1` (mod `cap`).
        /// One store of it publishes a push or a pop.
        pub span: AtomicU64,
        /// Bumped by every change (a `remove` checks that nothing moved between its scan and its removal).
        pub version_counter: AtomicU64,
        /// Futex word of blocked pops: bit 0 = [`ITEMS_SLEEPERS`]; pushers that see it add 2 (clearing it) and wake.
        pub items: AtomicU32,
        /// Unused; zero.
        pub reserved1: AtomicU32,
        /// Next item id (items carry a unique id, so a `remove` finds its item again after others moved).
        pub next_id: AtomicU64,
        /// Repairs done after holders died (diagnostics).
        pub repairs: AtomicU64,
        /// Unused; zero.
        pub reserved2: AtomicU64,
        /// The holder's operation record.
        pub intent: Intent,
        /// Unused; zero. Pads to the names.
        pub reserved3: [AtomicU64; 4],
        /// Names of the extension segments (index 0, the main segment, is unused): ASCII, zero padded.
        pub seg_names: [[AtomicU64; NAME_WORDS]; MAX_SEGMENTS],
    }
}

shm_struct! {
    /// The start of an item block, followed by `len` bytes of the item's encoding.
    pub struct ItemHeader {
        /// Unique id (from `DequeHeader::next_id`).
        pub id: AtomicU64,
        /// Length of the encoding.
        pub len: AtomicU64,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Intent>() == 32);
    assert!(offset_of!(DequeHeader, lock) == 32);
    assert!(offset_of!(DequeHeader, ring) == 64);
    assert!(offset_of!(DequeHeader, span) == 80);
    assert!(offset_of!(DequeHeader, items) == 96);
    assert!(offset_of!(DequeHeader, intent) == 128);
    assert!(offset_of!(DequeHeader, seg_names) == 192);
    assert!(size_of::<DequeHeader>() == 192 + 48 * MAX_SEGMENTS);
    assert!(size_of::<ItemHeader>() == 16);
};

/// `head` of a span word.
pub const fn span_head(span: u64) -> u64 {
    span & 0xffff_ffff
}

/// `len` of a span word.
pub const fn span_len(span: u64) -> u64 {
    span >> 32
}

/// A span word.
pub const fn span(head: u64, len: u64) -> u64 {
    (head & 0xffff_ffff) | (len << 32)
}
