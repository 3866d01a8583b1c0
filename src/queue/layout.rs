//! The queue's shared-memory layout (`shm-layouts/queue.md`).
//!
//! ```text
//! data_offset:  QueueHeader (1,280 B: config, then producer, consumer, wait, recovery, stats, growth and ring
//!               sections, each on its own 128-byte line pair so the two sides never share a line)
//!               rings 0..rings: Slot x ring_slots(g) each (64 B a slot, each ring 4 times the one before; ring 0
//!               is reserved at creation, ring g + 1 when ring g fills up, so an empty queue holds 64 KiB of
//!               slots, not its whole capacity)
//!               Participant x PARTICIPANTS (128 B each; reserved in /dev/shm PARTICIPANT_GROWTH entries at a time
//!               as `participants_high` grows, so an empty queue holds 4 KiB of them, not 128 KiB)
//!               heap (HeapHeader + region) for messages that do not fit inline
//! ```

use crate::base::atomic::{AtomicU32, AtomicU64};
use crate::shm_struct;

/// Payload layout version of [`Kind::Queue`](crate::segment::Kind::Queue) segments.
pub const QUEUE_VERSION: u32 = 3;
/// `QueueHeader::magic`.
pub const QUEUE_MAGIC: u32 = u32::from_le_bytes(*b"QUEU");
/// Size of a slot.
pub const SLOT_SIZE: usize = 64;
/// Bytes of payload a slot holds inline.
pub const INLINE_MAX: usize = 48;
/// Processes that can use one queue at the same time (a slot's owner field holds index + 1 in 16 bits).
pub const PARTICIPANTS: usize = 1024;
/// Participant entries reserved at creation, and added (reserved in /dev/shm) each time every entry in use is
/// taken: one 4 KiB page of them.
pub const PARTICIPANT_GROWTH: usize = 32;
/// Operations one process can have in flight on one queue (threads that release the GIL while blocked).
pub const OPS_PER_PARTICIPANT: usize = 4;
/// Slots of a queue's first ring (64 KiB); each further ring is 4 times the one before ([`RING_GROWTH_BITS`]), up to the
/// capacity.
pub const FIRST_RING_SLOTS: u64 = 1024;
/// How much larger each ring is than the one before. Four: a queue that filled up to its capacity holds its last
/// ring plus at most a third as much again in the smaller ones (rings are not freed), and grows few times.
pub const RING_GROWTH_BITS: u32 = 2;
/// Most rings a queue can have (enough to grow from one slot to 2^32 slots).
pub const MAX_RINGS: usize = 24;
/// Bits of a `tail`/`head` word that hold the position; the ring (generation) is in the bits above.
pub const POS_BITS: u32 = 56;
/// The position part of a `tail`/`head` word.
pub const POS_MASK: u64 = (1 << POS_BITS) - 1;

/// A `tail`/`head` word: position `pos` (56 bits) in ring `ring`.
#[inline]
pub const fn cursor(ring: usize, pos: u64) -> u64 {
    ((ring as u64) << POS_BITS) | (pos & POS_MASK)
}

/// The ring of a `tail`/`head` word.
#[inline]
pub const fn cursor_ring(c: u64) -> usize {
    (c >> POS_BITS) as usize
}

/// The position of a `tail`/`head` word.
#[inline]
pub const fn cursor_pos(c: u64) -> u64 {
    c & POS_MASK
}

/// Slots of ring `g` of a queue of `capacity` slots whose first ring has `first` slots.
#[inline]
pub const fn ring_slots(first: u64, capacity: u64, g: usize) -> u64 {
    if g as u32 * RING_GROWTH_BITS >= 40 {
        return capacity;
    }
    let s = first << (g as u32 * RING_GROWTH_BITS);
    if s < capacity {
        s
    } else {
        capacity
    }
}

/// Number of rings of a queue of `capacity` slots whose first ring has `first` slots (the last one has
/// `capacity` slots), or `None` if that is more than [`MAX_RINGS`].
pub const fn ring_count(first: u64, capacity: u64) -> Option<usize> {
    let mut g = 0;
    while g < MAX_RINGS {
        if ring_slots(first, capacity, g) >= capacity {
            return Some(g + 1);
        }
        g += 1;
    }
    None
}

/// Capacity of the list of messages to redeliver (taken by consumers that died mid-get).
pub const ORPHANS: usize = 12;
/// [`QueueHeader::flags`]: spin longer before sleeping.
pub const FLAG_LOCK_FREE: u32 = 1;
/// [`QueueHeader::flags`]: keep the unfinished-task count for `task_done()`/`join()`.
pub const FLAG_JOINABLE: u32 = 2;

/// An `orphans` entry being filled in by a recoverer.
pub const ORPHAN_RESERVED: u64 = u64::MAX;

/// `Slot::state` states (bits 32..40 of the word).
pub mod state {
    /// Free for the position in `seq`: a producer may claim it.
    pub const EMPTY: u8 = 0;
    /// Claimed by producer `owner` for position `seq`; payload being written.
    pub const WRITING: u8 = 1;
    /// A message for position `seq`, ready to be taken.
    pub const FULL: u8 = 2;
    /// Claimed by consumer `owner`; payload being read.
    pub const READING: u8 = 3;
    /// The producer died mid-put: no message; consumers skip it and count it.
    pub const DROPPED: u8 = 4;
}

/// Packs a slot state word: `seq` (low 32 bits of the lap, `position / capacity`) | state << 32 | owner << 40
/// (16 bits; bits 56..64 are zero). A zeroed slot is `EMPTY` for lap 0, so a fresh (zero-filled) ring needs no
/// initialisation.
#[inline]
pub const fn word(lap: u64, st: u8, owner: u16) -> u64 {
    (lap & 0xffff_ffff) | ((st as u64) << 32) | ((owner as u64) << 40)
}

/// The lap tag of a state word.
#[inline]
pub const fn word_seq(w: u64) -> u32 {
    w as u32
}

/// The state of a state word.
#[inline]
pub const fn word_state(w: u64) -> u8 {
    (w >> 32) as u8
}

/// The owner (participant index + 1, 0 = none) of a state word.
#[inline]
pub const fn word_owner(w: u64) -> u16 {
    (w >> 40) as u16
}

/// `Slot::kind`: the payload is inline.
pub const PAYLOAD_INLINE: u32 = 0;
/// `Slot::kind`: the payload is a heap block whose payload offset is in `data[0]`.
pub const PAYLOAD_HEAP: u32 = 1;

shm_struct! {
    /// One ring slot: a state word, the message length, where the payload is, and 48 inline bytes.
    pub struct Slot {
        /// `word(seq, state, owner)`.
        pub state: AtomicU64,
        /// Message length in bytes.
        pub len: AtomicU32,
        /// [`PAYLOAD_INLINE`] or [`PAYLOAD_HEAP`].
        pub kind: AtomicU32,
        /// Inline payload, or `data[0]` = heap payload offset.
        pub data: [AtomicU64; 6],
    }
}

shm_struct! {
    /// One in-flight operation of a participant, recorded before it touches a slot so that, if the process dies,
    /// a survivor can tell exactly what it left half done.
    pub struct OpRecord {
        /// 0 free; else [`OP_PUT`] or [`OP_GET`].
        pub kind: AtomicU32,
        /// [`OP_HEAP`] once a put has allocated a heap block (stays set until the record is released).
        pub flags: AtomicU32,
        /// The position the operation is claiming or holds.
        pub pos: AtomicU64,
        /// A put's heap block (payload offset), 0 if none: freed by the recoverer if the message never got
        /// published.
        pub block: AtomicU64,
    }
}

/// [`OpRecord::kind`]: a put.
pub const OP_PUT: u32 = 1;
/// [`OpRecord::kind`]: a get.
pub const OP_GET: u32 = 2;
/// [`OpRecord::flags`]: the put's payload is in a heap block.
pub const OP_HEAP: u32 = 1;

shm_struct! {
    /// A process using the queue, an entry of a [`segment::owners`](crate::segment::owners) table. Its index + 1
    /// is the `owner` in slot words it claims.
    pub struct Participant {
        /// [`Owner`](crate::segment::owners::Owner) word: pid and start time; 0 free; the `REAPING` bit set while
        /// a survivor cleans up after a dead process.
        pub owner: AtomicU64,
        /// Unused; zero.
        pub reserved: AtomicU64,
        /// In-flight operations.
        pub ops: [OpRecord; OPS_PER_PARTICIPANT],
        /// Unused; zero (pads the entry to 128 bytes).
        pub pad: [AtomicU64; 2],
    }
}

impl crate::segment::owners::HasOwner for Participant {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

shm_struct! {
    /// The queue header. Read-only configuration first, then one 128-byte section per writer group.
    pub struct QueueHeader {
        // -- configuration, written once by the creator (0..128)
        /// [`QUEUE_MAGIC`].
        pub magic: AtomicU32,
        /// [`QUEUE_VERSION`].
        pub version: AtomicU32,
        /// Number of slots.
        pub capacity: AtomicU64,
        /// Largest message in bytes.
        pub max_message: AtomicU64,
        /// Bit 0 ([`FLAG_LOCK_FREE`]): spin longer before sleeping. Bit 1 ([`FLAG_JOINABLE`]): count unfinished
        /// tasks.
        pub flags: AtomicU32,
        /// Number of participant entries ([`PARTICIPANTS`]).
        pub participants: AtomicU32,
        /// Offset of the participant table in the segment.
        pub participants_offset: AtomicU64,
        /// Offset of the slot array.
        pub slots_offset: AtomicU64,
        /// Offset of the heap header (0: no heap).
        pub heap_offset: AtomicU64,
        /// Heap footprint in bytes.
        pub heap_size: AtomicU64,
        /// `maxsize` the queue was created with (informational; the slot count enforces it).
        pub maxsize: AtomicU64,
        /// Slots of ring 0 (each further ring is 4 times larger, up to `capacity`).
        pub first_slots: AtomicU64,
        /// Number of rings (1..[`MAX_RINGS`]); ring `rings - 1` has `capacity` slots.
        pub rings: AtomicU32,
        /// Highest ring `head` has reached (only grows): producers in a ring above it check the item count
        /// against `capacity` (older rings still hold items), those at or below it need not.
        pub head_ring: AtomicU32,
        /// Unused; zero.
        pub reserved0: [AtomicU64; 5],
        // -- producers (128..256)
        /// Next position to claim.
        pub tail: AtomicU64,
        /// Unused; zero.
        pub reserved1: [AtomicU64; 15],
        // -- consumers (256..384)
        /// Next position to take.
        pub head: AtomicU64,
        /// Unused; zero.
        pub reserved2: [AtomicU64; 15],
        // -- sleeping (384..512)
        /// Futex word consumers sleep on; producers bump it to wake them.
        pub cons_wake: AtomicU32,
        /// Consumers asleep or about to sleep.
        pub cons_waiters: AtomicU32,
        /// Futex word producers sleep on (queue full); consumers bump it.
        pub prod_wake: AtomicU32,
        /// Producers asleep or about to sleep.
        pub prod_waiters: AtomicU32,
        /// 0 open, 1 shut down (drain then raise), 2 shut down immediately.
        pub shutdown: AtomicU32,
        /// Unused; zero.
        pub reserved3: AtomicU32,
        /// Joinable queues: items put and not yet marked done with `task_done()`.
        pub unfinished: AtomicU64,
        /// Futex word `join()` sleeps on; bumped when `unfinished` reaches 0.
        pub join_wake: AtomicU32,
        /// Threads in `join()`.
        pub join_waiters: AtomicU32,
        /// Unused; zero.
        pub reserved4: [AtomicU64; 11],
        // -- recovery (512..640)
        /// Number of nonzero entries in `orphans`.
        pub orphan_count: AtomicU32,
        /// Participant entries in use (reserved in /dev/shm): claims, scans and reaping look at these only. Only
        /// grows, by [`PARTICIPANT_GROWTH`], up to [`PARTICIPANTS`].
        pub participants_high: AtomicU32,
        /// Positions (+1) of messages whose consumer died mid-get, to be redelivered.
        pub orphans: [AtomicU64; ORPHANS],
        /// Unused; zero.
        pub reserved6: [AtomicU64; 3],
        // -- statistics (640..768)
        /// Half-written messages dropped because their producer died.
        pub dropped: AtomicU64,
        /// Messages redelivered because their consumer died.
        pub redelivered: AtomicU64,
        /// Dead participants cleaned up.
        pub recovered: AtomicU64,
        /// Unused; zero.
        pub reserved7: [AtomicU64; 13],
        // -- growth (768..896)
        /// Owner word (pid, start time) of the process adding a ring; 0 free. A dead holder's claim is cleared by
        /// the next waiter's slice-end scan.
        pub grow_owner: AtomicU64,
        /// Unused; zero.
        pub reserved8: [AtomicU64; 15],
        // -- rings (896..1280): written once per ring, read by every operation
        /// `starts[g]`: the first position of ring `g` (the position at which `tail` moved into it).
        pub starts: [AtomicU64; MAX_RINGS],
        /// `ends[g]`: one past ring `g`'s last position, plus one (0 while producers may still use it): the
        /// position at which `tail` left it, published after the move.
        pub ends: [AtomicU64; MAX_RINGS],
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Slot>() == SLOT_SIZE);
    assert!(offset_of!(Slot, data) == 16);
    assert!(size_of::<OpRecord>() == 24);
    assert!(size_of::<Participant>() == 128);
    assert!(offset_of!(Participant, ops) == 16);
    assert!(size_of::<QueueHeader>() == 1280);
    assert!(offset_of!(QueueHeader, first_slots) == 72);
    assert!(offset_of!(QueueHeader, grow_owner) == 768);
    assert!(offset_of!(QueueHeader, starts) == 896);
    assert!(offset_of!(QueueHeader, ends) == 1088);
    assert!(offset_of!(QueueHeader, tail) == 128);
    assert!(offset_of!(QueueHeader, head) == 256);
    assert!(offset_of!(QueueHeader, cons_wake) == 384);
    assert!(offset_of!(QueueHeader, orphan_count) == 512);
    assert!(offset_of!(QueueHeader, dropped) == 640);
    assert!(INLINE_MAX == 6 * 8);
    assert!(PARTICIPANTS < u16::MAX as usize && PARTICIPANTS % PARTICIPANT_GROWTH == 0);
};

/// Zero-valued constructors for loom models (in shared memory the structures start as zero bytes).
#[cfg(loom)]
mod loom_new {
    use super::*;

    fn zeros<const N: usize>() -> [AtomicU64; N] {
        std::array::from_fn(|_| AtomicU64::new(0))
    }

    impl Default for Slot {
        /// A zeroed slot (EMPTY for lap 0).
        fn default() -> Self {
            Slot { state: AtomicU64::new(0), len: AtomicU32::new(0), kind: AtomicU32::new(0), data: zeros() }
        }
    }

    impl Default for OpRecord {
        /// A free record.
        fn default() -> Self {
            OpRecord {
                kind: AtomicU32::new(0),
                flags: AtomicU32::new(0),
                pos: AtomicU64::new(0),
                block: AtomicU64::new(0),
            }
        }
    }

    impl Default for Participant {
        /// A free entry.
        fn default() -> Self {
            Participant {
                owner: AtomicU64::new(0),
                reserved: AtomicU64::new(0),
                ops: std::array::from_fn(|_| OpRecord::default()),
                pad: zeros(),
            }
        }
    }

    impl QueueHeader {
        /// A header for `capacity` slots whose first ring has `first` slots, no heap.
        pub fn new(first: u64, capacity: u64) -> Self {
            let u32z = || AtomicU32::new(0);
            QueueHeader {
                magic: AtomicU32::new(QUEUE_MAGIC),
                version: AtomicU32::new(QUEUE_VERSION),
                capacity: AtomicU64::new(capacity),
                max_message: AtomicU64::new(INLINE_MAX as u64),
                flags: u32z(),
                participants: AtomicU32::new(PARTICIPANTS as u32),
                participants_offset: AtomicU64::new(0),
                slots_offset: AtomicU64::new(0),
                heap_offset: AtomicU64::new(0),
                heap_size: AtomicU64::new(0),
                maxsize: AtomicU64::new(0),
                first_slots: AtomicU64::new(first),
                rings: AtomicU32::new(ring_count(first, capacity).unwrap() as u32),
                head_ring: u32z(),
                reserved0: zeros(),
                tail: AtomicU64::new(0),
                reserved1: zeros(),
                head: AtomicU64::new(0),
                reserved2: zeros(),
                cons_wake: u32z(),
                cons_waiters: u32z(),
                prod_wake: u32z(),
                prod_waiters: u32z(),
                shutdown: u32z(),
                reserved3: u32z(),
                unfinished: AtomicU64::new(0),
                join_wake: u32z(),
                join_waiters: u32z(),
                reserved4: zeros(),
                orphan_count: u32z(),
                participants_high: u32z(),
                orphans: zeros(),
                reserved6: zeros(),
                dropped: AtomicU64::new(0),
                redelivered: AtomicU64::new(0),
                recovered: AtomicU64::new(0),
                reserved7: zeros(),
                grow_owner: AtomicU64::new(0),
                reserved8: zeros(),
                starts: zeros(),
                ends: zeros(),
            }
        }
    }
}
