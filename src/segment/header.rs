//! The header at offset 0 of every pyconc segment (layout: `shm-layouts/segment-header.md`).

use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::error::corrupt;
use crate::shm_struct;
use crate::{Error, Result};

/// `b"PYCONC\0\x01"` read as a little-endian u64. Written last by the creator (Release), so a reader that sees
/// it (Acquire) sees an initialised header.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PYCONC\0\x01");

/// Version of the header + user-table layout. Bump it with any change to [`SegmentHeader`] or [`UserSlot`],
/// and update `shm-layouts/segment-header.md` (a test compares the two). 2: a user slot is an owner word.
pub const LAYOUT_VERSION: u32 = 2;

/// Size of the header page: header, user table, and the first 256 bytes of the payload.
pub const HEADER_PAGE: u64 = 4096;
/// Where the payload of every segment starts: the last 256 bytes of the header page, so that a small structure
/// (an atomic cell, a lock, an array's header) shares the one page creation has to touch anyway. Arrays put
/// their items at the next page boundary.
pub const DATA_OFFSET: u64 = HEADER_PAGE - 256;
/// Where the user table starts.
pub const USERS_OFFSET: u64 = 256;
/// How many processes may use one segment at the same time.
pub const USER_CAPACITY: u32 = ((DATA_OFFSET - USERS_OFFSET) / std::mem::size_of::<UserSlot>() as u64) as u32;

/// [`UserSlot::flags`]: registered on this process's behalf by another one (see `Segment::register_on_behalf`).
pub const USER_ON_BEHALF: u32 = 1;

/// `state`: usable; new processes may attach.
pub const STATE_OPEN: u32 = 1;
/// `state`: the name was unlinked (last user left, or `unlink()`); attaching fails with `FileNotFoundError`.
pub const STATE_UNLINKED: u32 = 2;

/// What layout a segment's payload has. Stored in the header so that opening a handle of the wrong kind fails.
/// One tag per segment layout, not per object type: which primitive lives in a `Sync` segment (or embedded in a
/// `Block`) is the separate [`SyncType`](crate::sync::shared::SyncType) tag of that object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// An [`AtomicCell`](crate::objects::cell::AtomicCell): `AtomicInt64`, `AtomicFlag`.
    Atomic = 1,
    /// A [`RawBlock`](crate::objects::block::RawBlock): `Value`, `Array`, `RawValue`, `RawArray`.
    Block = 2,
    /// A bare allocator heap (tests and tools).
    Heap = 3,
    /// A synchronisation primitive (`Lock`, `RLock`, `Semaphore`, `Event`, `Condition`, `Barrier`, `RWLock`).
    Sync = 4,
    /// A queue.
    Queue = 5,
    /// A dict (or one of its extension segments).
    Dict = 6,
    /// A deque (or one of its extension segments).
    Deque = 7,
    /// An arena of small objects (`segment::arena`): atomics, locks, semaphores, events in cells.
    Arena = 8,
}

impl Kind {
    /// Decodes a stored kind.
    pub fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Atomic,
            2 => Kind::Block,
            3 => Kind::Heap,
            4 => Kind::Sync,
            5 => Kind::Queue,
            6 => Kind::Dict,
            7 => Kind::Deque,
            8 => Kind::Arena,
            _ => return None,
        })
    }

    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Atomic => "atomic",
            Kind::Block => "block",
            Kind::Heap => "heap",
            Kind::Sync => "sync",
            Kind::Queue => "queue",
            Kind::Dict => "dict",
            Kind::Deque => "deque",
            Kind::Arena => "arena",
        }
    }
}

shm_struct! {
    /// The segment header. Every field is an atomic: other processes read it concurrently and a hostile one may
    /// write anything, so nothing here is trusted before [`SegmentHeader::validate`] has checked it.
    pub struct SegmentHeader {
        /// [`MAGIC`] once initialised.
        pub magic: AtomicU64,
        /// [`LAYOUT_VERSION`] of the build that created the segment.
        pub layout_version: AtomicU32,
        /// A [`Kind`].
        pub kind: AtomicU32,
        /// Size of the whole segment in bytes, header included.
        pub total_size: AtomicU64,
        /// pid of the creating process.
        pub creator_pid: AtomicU32,
        /// [`STATE_OPEN`] or [`STATE_UNLINKED`].
        pub state: AtomicU32,
        /// Start time of the creating process (see `platform::process`).
        pub creator_start_time: AtomicU64,
        /// Lock over the user table: 0 when free, else the holder's pid (so a dead holder can be detected).
        pub users_lock: AtomicU32,
        /// Number of [`UserSlot`]s at `users_offset`.
        pub user_capacity: AtomicU32,
        /// Offset of the user table.
        pub users_offset: AtomicU64,
        /// Offset of the payload.
        pub data_offset: AtomicU64,
        /// Size of the payload.
        pub data_size: AtomicU64,
        /// Version of the payload layout of this kind.
        pub kind_version: AtomicU32,
        /// Unused; zero.
        pub reserved0: AtomicU32,
        /// Total number of attaches over the segment's life (for `pyconc ls`).
        pub attach_count: AtomicU64,
        /// Unused; zero.
        pub reserved: [AtomicU64; 21],
    }
}

shm_struct! {
    /// One entry of the user table, a [`segment::owners`](super::owners) slot: a process that has the segment
    /// mapped (or was registered on its behalf).
    pub struct UserSlot {
        /// [`Owner`](super::owners::Owner) word of the user (pid and start time); 0 = free.
        pub owner: AtomicU64,
        /// [`USER_ON_BEHALF`] when another process registered this one (it has not mapped the segment itself).
        pub flags: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
    }
}

impl super::owners::HasOwner for UserSlot {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<SegmentHeader>() == 256);
    assert!(offset_of!(SegmentHeader, magic) == 0);
    assert!(offset_of!(SegmentHeader, layout_version) == 8);
    assert!(offset_of!(SegmentHeader, kind) == 12);
    assert!(offset_of!(SegmentHeader, total_size) == 16);
    assert!(offset_of!(SegmentHeader, creator_pid) == 24);
    assert!(offset_of!(SegmentHeader, state) == 28);
    assert!(offset_of!(SegmentHeader, creator_start_time) == 32);
    assert!(offset_of!(SegmentHeader, users_lock) == 40);
    assert!(offset_of!(SegmentHeader, user_capacity) == 44);
    assert!(offset_of!(SegmentHeader, users_offset) == 48);
    assert!(offset_of!(SegmentHeader, data_offset) == 56);
    assert!(offset_of!(SegmentHeader, data_size) == 64);
    assert!(offset_of!(SegmentHeader, kind_version) == 72);
    assert!(offset_of!(SegmentHeader, attach_count) == 80);
    assert!(size_of::<UserSlot>() == 16);
    assert!(offset_of!(UserSlot, owner) == 0);
    assert!(offset_of!(UserSlot, flags) == 8);
    assert!(USERS_OFFSET as usize >= size_of::<SegmentHeader>());
    assert!(USER_CAPACITY == 224);
};

/// The validated facts of a header, read once at open.
#[derive(Debug, Clone, Copy)]
pub struct HeaderInfo {
    /// Structure kind.
    pub kind: Kind,
    /// Payload layout version.
    pub kind_version: u32,
    /// Whole segment size.
    pub total_size: u64,
    /// Payload offset.
    pub data_offset: u64,
    /// Payload size.
    pub data_size: u64,
    /// User table offset.
    pub users_offset: u64,
    /// User table length.
    pub user_capacity: u32,
}

impl SegmentHeader {
    /// Checks everything a reader relies on, against the real size of the mapping, and returns it.
    pub fn validate(&self, name: &str, mapped_len: u64) -> Result<HeaderInfo> {
        let magic = self.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(corrupt!("{name} is not a pyconc segment (bad magic {magic:#018x})"));
        }
        let version = self.layout_version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(corrupt!(
                "{name}: layout version {version}, this build reads {LAYOUT_VERSION}; open it with the pyconc \
                 version that created it"
            ));
        }
        let total_size = self.total_size.load(Ordering::Relaxed);
        if total_size > mapped_len {
            return Err(corrupt!("{name} is truncated: header says {total_size} bytes, file has {mapped_len}"));
        }
        let kind_raw = self.kind.load(Ordering::Relaxed);
        let kind = Kind::from_u32(kind_raw).ok_or_else(|| corrupt!("{name}: unknown structure kind {kind_raw}"))?;
        let users_offset = self.users_offset.load(Ordering::Relaxed);
        let user_capacity = self.user_capacity.load(Ordering::Relaxed);
        let data_offset = self.data_offset.load(Ordering::Relaxed);
        let data_size = self.data_size.load(Ordering::Relaxed);
        let users_end = (user_capacity as u64)
            .checked_mul(std::mem::size_of::<UserSlot>() as u64)
            .and_then(|b| b.checked_add(users_offset));
        let ok = users_offset >= std::mem::size_of::<SegmentHeader>() as u64
            && users_offset % 8 == 0
            && matches!(users_end, Some(e) if e <= data_offset)
            && data_offset % 64 == 0
            && matches!(data_offset.checked_add(data_size), Some(e) if e <= total_size);
        if !ok {
            return Err(corrupt!(
                "{name}: inconsistent header (users at {users_offset:#x} x{user_capacity}, data at \
                 {data_offset:#x} + {data_size}, total {total_size})"
            ));
        }
        Ok(HeaderInfo {
            kind,
            kind_version: self.kind_version.load(Ordering::Relaxed),
            total_size,
            data_offset,
            data_size,
            users_offset,
            user_capacity,
        })
    }
}

impl HeaderInfo {
    /// Fails unless the segment holds `kind` with payload version `version`.
    pub fn expect(&self, name: &str, kind: Kind, version: u32) -> Result<()> {
        if self.kind != kind {
            return Err(Error::Invalid(format!(
                "{name} holds a {} structure, not a {}",
                self.kind.name(),
                kind.name()
            )));
        }
        if self.kind_version != version {
            return Err(corrupt!(
                "{name}: {} layout version {}, this build reads {version}",
                kind.name(),
                self.kind_version
            ));
        }
        Ok(())
    }
}
