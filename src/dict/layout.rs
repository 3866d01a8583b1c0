//! The `#[repr(C)]` structs of a shared dict (documented in `shm-layouts/dict.md`).

use crate::base::atomic::{AtomicU32, AtomicU64};
use crate::shm_struct;
use crate::sync::lock::LockState;

/// Payload layout version of [`Kind::Dict`](crate::segment::Kind::Dict) segments.
pub const DICT_VERSION: u32 = 2;
/// `DictHeader::magic` (`b"DICT"`).
pub const DICT_MAGIC: u32 = u32::from_le_bytes(*b"DICT");
/// `TableHeader::magic` (`b"TABL"`).
pub const TABLE_MAGIC: u32 = u32::from_le_bytes(*b"TABL");
/// Most segments one dict may span (the main one included).
pub const MAX_SEGMENTS: usize = 32;
/// Bytes reserved for one extension segment name (names are 39 ASCII bytes).
pub const NAME_WORDS: usize = 6;
/// Most shards.
pub const MAX_SHARDS: u32 = 4096;

/// A reference to bytes of a dict: `(segment index << REF_SHIFT) | byte offset in that segment`.
pub const REF_SHIFT: u32 = 40;
/// Mask of the offset part of a reference.
pub const REF_OFFSET_MASK: u64 = (1 << REF_SHIFT) - 1;
/// A slot's `entry` when the slot was never used (ends a probe sequence).
pub const SLOT_EMPTY: u64 = 0;
/// A slot's `entry` after its key was deleted (probing continues past it).
pub const SLOT_TOMBSTONE: u64 = 1;

shm_struct! {
    /// At the start of the main segment's payload.
    pub struct DictHeader {
        /// [`DICT_MAGIC`] once initialised.
        pub magic: AtomicU32,
        /// [`DICT_VERSION`].
        pub version: AtomicU32,
        /// Number of shards.
        pub nshards: AtomicU32,
        /// Segments in use (1 = only the main one). Grows only, under `grow_lock`, after the name is written.
        pub nsegs: AtomicU32,
        /// Offset of the shard array in the main segment.
        pub shards_off: AtomicU64,
        /// Offset of the main segment's heap header.
        pub heap_off: AtomicU64,
        /// Payload size of the last segment added (extension segments double it).
        pub last_seg_size: AtomicU64,
        /// Unused; zero.
        pub reserved: [AtomicU64; 3],
        /// Serialises adding extension segments.
        pub grow_lock: LockState,
        /// Names of the extension segments (index 0, the main segment, is unused): ASCII, zero padded.
        pub seg_names: [[AtomicU64; NAME_WORDS]; MAX_SEGMENTS],
    }
}

shm_struct! {
    /// One shard: a lock, a seqlock version and a table.
    pub struct Shard {
        /// Robust write lock.
        pub lock: LockState,
        /// Seqlock version: odd while a writer changes the table; readers retry when it moved.
        pub seq: AtomicU64,
        /// Reference to the table block (a [`TableHeader`] followed by `capacity` [`TableSlot`]s).
        pub table: AtomicU64,
        /// Live keys.
        pub len: AtomicU64,
        /// Tombstone slots.
        pub tombstones: AtomicU64,
        /// Blocks this shard retired and keeps for reuse (0 = none): overwrites then recycle blocks without
        /// touching the shared heap header, which every process would otherwise contend on.
        pub spare: [AtomicU64; 4],
        /// Unused; zero. Pads the shard to two cache lines.
        pub reserved: [AtomicU64; 4],
    }
}

shm_struct! {
    /// The start of a table block.
    pub struct TableHeader {
        /// [`TABLE_MAGIC`].
        pub magic: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
        /// Number of slots (a power of two).
        pub capacity: AtomicU64,
    }
}

shm_struct! {
    /// One open-addressing slot.
    pub struct TableSlot {
        /// Stable hash of the key (meaningful only while `entry` is a reference).
        pub hash: AtomicU64,
        /// [`SLOT_EMPTY`], [`SLOT_TOMBSTONE`] or a reference to an entry block.
        pub entry: AtomicU64,
    }
}

shm_struct! {
    /// The start of an entry block, followed by the key bytes, the as-inserted key bytes, then two value buffers of
    /// `cap` bytes each (one holds the current value, the other takes the next overwrite in place).
    pub struct EntryHeader {
        /// Length of the canonical key encoding.
        pub key_len: AtomicU32,
        /// Length of the as-inserted key encoding (0: the canonical bytes decode to the key as inserted).
        pub orig_len: AtomicU32,
        /// Capacity of each value buffer.
        pub cap: AtomicU32,
        /// Length of the value in each buffer (meaningful for the active one).
        pub val_len: [AtomicU32; 2],
        /// Unused; zero.
        pub reserved: AtomicU32,
        /// [`ENTRY_MARK`] | lock owner (pid, low start-time bits; 0 = unlocked) | version << 1 | active buffer.
        pub state: AtomicU64,
    }
}

/// Always set in an entry's `state`: no other word a heap block can hold at that offset has it (table slots
/// hold references below 2^45), so a stale compare-and-swap can only ever match an entry header.
pub const ENTRY_MARK: u64 = 1 << 63;
/// Position of the lock owner's pid (22 bits: Linux pids stay below 2^22) in an entry's `state`.
pub const ENTRY_PID_SHIFT: u32 = 41;
/// The lock owner's pid bits of an entry's `state`.
pub const ENTRY_PID_MASK: u64 = 0x3f_ffff << ENTRY_PID_SHIFT;
/// Position of the low 16 bits of the lock owner's start time in an entry's `state`: with the pid they tell a
/// live owner from an unrelated process that got the pid of a dead one.
pub const ENTRY_START_SHIFT: u32 = 25;
/// The owner start-time bits of an entry's `state`.
pub const ENTRY_START_MASK: u64 = 0xffff << ENTRY_START_SHIFT;
/// Every owner bit of an entry's `state` (all zero while unlocked).
pub const ENTRY_OWNER_MASK: u64 = ENTRY_PID_MASK | ENTRY_START_MASK;
/// The version bits (1..=24) of an entry's `state`, bumped by 2 (one version) per in-place overwrite.
pub const ENTRY_VERSION_MASK: u64 = 0x1ff_fffe;

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<DictHeader>() == 96 + 48 * MAX_SEGMENTS);
    assert!(offset_of!(DictHeader, shards_off) == 16);
    assert!(offset_of!(DictHeader, grow_lock) == 64);
    assert!(offset_of!(DictHeader, seg_names) == 96);
    assert!(size_of::<Shard>() == 128);
    assert!(offset_of!(Shard, seq) == 32);
    assert!(offset_of!(Shard, table) == 40);
    assert!(offset_of!(Shard, spare) == 64);
    assert!(size_of::<TableHeader>() == 16);
    assert!(size_of::<TableSlot>() == 16);
    assert!(size_of::<EntryHeader>() == 32);
    assert!(offset_of!(EntryHeader, val_len) == 12);
    assert!(offset_of!(EntryHeader, state) == 24);
};
