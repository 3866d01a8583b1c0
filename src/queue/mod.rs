//! A bounded multi-producer multi-consumer queue of byte messages in one shared segment.
//!
//! * [`layout`]: the `#[repr(C)]` structures (`shm-layouts/queue.md`).
//! * [`ring`]: the algorithm: claiming, publishing, consuming, sleeping, crash recovery.
//!
//! [`SharedQueue`] is the process-local handle: it maps the segment, registers the process as a participant
//! (lazily, again after `fork`) and hands out [`Ring`] views for operations. Messages are opaque bytes here;
//! the Python layer encodes values with the codec.

pub mod layout;
pub mod ring;

use crate::base::atomic::{AtomicU64, Ordering};
use crate::error::corrupt;
use crate::segment::alloc::{Heap, HeapHeader};
use crate::segment::owners::{Owner, OwnerTable};
use crate::segment::shm::Reserve;
use crate::segment::shm::FORK_GENERATION;
use crate::segment::{Kind, Mapped, MappedSlice, Offset, Segment};
use crate::{Error, Result};
use layout::*;
pub use ring::{Attempt, Ring, WaitPolicy};

/// How to size a new queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// The most messages the queue holds at once. A bound, not an allocation: the queue starts with a ring of
    /// `first_ring` slots and adds rings of twice the size as it fills, up to one of `slots`.
    pub slots: u64,
    /// Slots of the first ring (0: [`FIRST_RING_SLOTS`]; at most `slots`).
    pub first_ring: u64,
    /// Bytes for messages larger than [`INLINE_MAX`] (their total at any time, plus allocator rounding).
    pub heap_bytes: u64,
    /// Spin longer before sleeping.
    pub lock_free: bool,
    /// Count unfinished tasks for `task_done()`/`join()`.
    pub joinable: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { slots: 65_536, first_ring: 0, heap_bytes: 64 << 20, lock_free: false, joinable: false }
    }
}

/// Process-local handle to a queue. Cheap to clone the segment; each handle registers its own participant.
pub struct SharedQueue {
    seg: Segment,
    hdr: Mapped<QueueHeader>,
    slots: MappedSlice<Slot>,
    /// Where each ring's slots are in `slots` (computed from the header's configuration).
    areas: Vec<ring::RingArea>,
    parts: MappedSlice<Participant>,
    /// The heap's place, validated at attach (so operations do not re-read its header).
    heap: Option<crate::segment::alloc::HeapPlace>,
    /// `(fork generation << 16) | (participant index + 1)`; 0 = not registered.
    me: AtomicU64,
    /// Participant entries this process has checked are reserved in /dev/shm (it touches no others).
    reserved_parts: crate::base::atomic::local::AtomicU32,
    /// Operations this process has in flight on its participant entry (see `Ring::acquire_op`).
    in_flight: crate::base::atomic::local::AtomicU32,
}

impl SharedQueue {
    /// Creates a queue in a new segment.
    pub fn create(cfg: QueueConfig) -> Result<SharedQueue> {
        if cfg.slots == 0 || cfg.slots > (1 << 32) {
            return Err(Error::Invalid(format!("a queue needs 1 to 2**32 slots, not {}", cfg.slots)));
        }
        let first = if cfg.first_ring == 0 { FIRST_RING_SLOTS } else { cfg.first_ring }.min(cfg.slots);
        let (_, all_slots) = ring::ring_areas(first, cfg.slots)
            .ok_or_else(|| Error::Invalid(format!("a queue of {} slots cannot start with {first}", cfg.slots)))?;
        let hdr_size = std::mem::size_of::<QueueHeader>() as u64;
        let parts_size = (PARTICIPANTS * std::mem::size_of::<Participant>()) as u64;
        let slots_size = all_slots * SLOT_SIZE as u64;
        let heap_size = if cfg.heap_bytes > 0 { Heap::footprint(cfg.heap_bytes) } else { 0 };
        let total = hdr_size + slots_size + parts_size + heap_size;
        // The header and the first ring are reserved in /dev/shm now (one fallocate), then the first participant
        // entries; later rings are reserved when producers move to them, more participant entries as processes
        // need them, and the heap reserves what it hands out.
        let first_parts = (PARTICIPANT_GROWTH * std::mem::size_of::<Participant>()) as u64;
        let fixed = hdr_size + first * SLOT_SIZE as u64;
        let seg = Segment::create_reserving(Kind::Queue, QUEUE_VERSION, total, &[], Reserve::Prefix(fixed))?;
        let base = seg.info().data_offset;
        let hdr: &QueueHeader = seg.resolve(Offset::new(base))?;
        let slots_off = base + hdr_size;
        let parts_off = slots_off + slots_size;
        let heap_off = parts_off + parts_size;
        seg.reserve(parts_off, first_parts)?;
        if heap_size > 0 {
            seg.reserve(heap_off, std::mem::size_of::<HeapHeader>() as u64)?;
        }
        hdr.participants_high.store(PARTICIPANT_GROWTH as u32, Ordering::Relaxed);
        hdr.capacity.store(cfg.slots, Ordering::Relaxed);
        hdr.first_slots.store(first, Ordering::Relaxed);
        hdr.rings.store(ring_count(first, cfg.slots).unwrap_or(1) as u32, Ordering::Relaxed);
        let flags = if cfg.lock_free { FLAG_LOCK_FREE } else { 0 } | if cfg.joinable { FLAG_JOINABLE } else { 0 };
        hdr.flags.store(flags, Ordering::Relaxed);
        hdr.participants.store(PARTICIPANTS as u32, Ordering::Relaxed);
        hdr.participants_offset.store(parts_off, Ordering::Relaxed);
        hdr.slots_offset.store(slots_off, Ordering::Relaxed);
        let max_message = if heap_size > 0 {
            Heap::init(&seg, Offset::new(heap_off), heap_size)?;
            hdr.heap_offset.store(heap_off, Ordering::Relaxed);
            hdr.heap_size.store(heap_size, Ordering::Relaxed);
            // The largest block the heap can ever hand out whole (its class rounding included).
            let region = heap_size - std::mem::size_of::<crate::segment::alloc::HeapHeader>() as u64;
            largest_payload(region).max(INLINE_MAX as u64)
        } else {
            INLINE_MAX as u64
        };
        hdr.max_message.store(max_message, Ordering::Relaxed);
        hdr.version.store(QUEUE_VERSION, Ordering::Relaxed);
        hdr.magic.store(QUEUE_MAGIC, Ordering::Release);
        Self::from_segment(seg)
    }

    /// Attaches to the queue in `seg`, validating its header against the segment.
    pub fn from_segment(seg: Segment) -> Result<SharedQueue> {
        seg.info().expect(seg.name_local(), Kind::Queue, QUEUE_VERSION)?;
        let base = seg.info().data_offset;
        let hdr: &QueueHeader = seg.resolve(Offset::new(base))?;
        if hdr.magic.load(Ordering::Acquire) != QUEUE_MAGIC {
            return Err(corrupt!("{}: queue header not initialised", seg.name_local()));
        }
        let nslots = hdr.capacity.load(Ordering::Relaxed);
        let first = hdr.first_slots.load(Ordering::Relaxed);
        let rings = hdr.rings.load(Ordering::Relaxed) as usize;
        let Some((areas, all_slots)) = ring::ring_areas(first, nslots).filter(|(a, _)| a.len() == rings) else {
            return Err(corrupt!(
                "{}: queue header has {nslots} slots in {rings} rings from {first}",
                seg.name_local()
            ));
        };
        let nparts = hdr.participants.load(Ordering::Relaxed) as usize;
        let parts_off = hdr.participants_offset.load(Ordering::Relaxed);
        let slots_off = hdr.slots_offset.load(Ordering::Relaxed);
        let heap_at = hdr.heap_offset.load(Ordering::Relaxed);
        if nparts != PARTICIPANTS || nslots == 0 || nslots > (1 << 32) {
            return Err(corrupt!("{}: queue header has {nslots} slots / {nparts} participants", seg.name_local()));
        }
        let parts_len = (PARTICIPANTS * std::mem::size_of::<Participant>()) as u64;
        crate::segment::offset::check_range(parts_off, parts_len, 64, seg.len(), "participant table")?;
        crate::segment::offset::check_range(slots_off, all_slots * SLOT_SIZE as u64, 64, seg.len(), "slots")?;
        let heap = if heap_at != 0 { Some(Heap::attach(&seg, Offset::new(heap_at))?.place()) } else { None };
        let parts = MappedSlice::new(&seg, parts_off, PARTICIPANTS)?;
        let slots = MappedSlice::new(&seg, slots_off, all_slots as usize)?;
        Ok(SharedQueue {
            hdr: Mapped::new(&seg, Offset::new(base))?,
            slots,
            areas,
            parts,
            heap,
            seg,
            me: AtomicU64::new(0),
            reserved_parts: crate::base::atomic::local::AtomicU32::new(0),
            in_flight: crate::base::atomic::local::AtomicU32::new(0),
        })
    }

    /// Opens the queue in the segment called `name`.
    pub fn open(name: &str) -> Result<SharedQueue> {
        Self::from_segment(Segment::open(name)?)
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The header.
    pub fn header(&self) -> &QueueHeader {
        &self.hdr
    }

    fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The participant entries in use that this process may touch: `participants_high` of them (clamped to the
    /// table), once their pages are known to be reserved in /dev/shm (reading or writing an unreserved tmpfs page
    /// on a full /dev/shm would be a SIGBUS). If reserving fails, the entries checked so far.
    fn parts(&self) -> &[Participant] {
        use crate::base::atomic::local::Ordering as L;
        let high = (self.hdr.participants_high.load(Ordering::Acquire) as usize).clamp(1, PARTICIPANTS) as u32;
        let mut have = self.reserved_parts.load(L::Relaxed);
        if high > have {
            if self.reserve_parts(high as usize).is_ok() {
                self.reserved_parts.fetch_max(high, L::Relaxed);
            }
            have = self.reserved_parts.load(L::Relaxed);
        }
        &self.parts[..have as usize]
    }

    fn reserve_parts(&self, n: usize) -> Result<()> {
        let size = std::mem::size_of::<Participant>();
        let off = self.hdr.participants_offset.load(Ordering::Relaxed);
        self.seg.reserve(off, (n * size) as u64)
    }

    /// This process's participant index, registering it first if needed (and again in a forked child).
    fn participant(&self) -> Result<usize> {
        let gen = FORK_GENERATION.load(Ordering::Relaxed);
        let me = self.me.load(Ordering::Acquire);
        if me != 0 && me >> 16 == gen {
            return Ok((me & 0xffff) as usize - 1);
        }
        let idx = self.register()?;
        // A fresh entry (in a forked child, the threads counted in the parent do not exist).
        self.in_flight.store(0, crate::base::atomic::local::Ordering::Relaxed);
        self.me.store((gen << 16) | (idx as u64 + 1), Ordering::Release);
        Ok(idx)
    }

    /// Claims a participant entry (the lowest free one, which keeps the entries in use dense): a free one among
    /// those in use, else one freed by reaping dead participants
    /// (their cleanup recovers their op records before the entry is reused), else more entries (reserved first).
    /// Bounded: the table grows at most `PARTICIPANTS / PARTICIPANT_GROWTH` times.
    fn register(&self) -> Result<usize> {
        let me = Owner::me();
        for _ in 0..=PARTICIPANTS / PARTICIPANT_GROWTH {
            let parts = self.parts();
            let table = OwnerTable::new(parts);
            let ring = self.view(usize::MAX);
            if let Some(i) = table.claim_or_reap(me, 0, |i, _, _| ring.recover_entry(i)) {
                // A free entry has no operation in flight; records that say otherwise are corrupt and would
                // block every operation of ours.
                for op in &parts[i].ops {
                    op.block.store(0, Ordering::Relaxed);
                    op.flags.store(0, Ordering::Relaxed);
                    op.kind.store(0, Ordering::Release);
                }
                return Ok(i);
            }
            let have = parts.len();
            if have >= PARTICIPANTS {
                break;
            }
            let want = (have + PARTICIPANT_GROWTH).min(PARTICIPANTS);
            self.reserve_parts(want)?;
            self.reserved_parts.fetch_max(want as u32, crate::base::atomic::local::Ordering::Relaxed);
            self.hdr.participants_high.fetch_max(want as u32, Ordering::AcqRel);
        }
        Err(Error::Full(format!("{PARTICIPANTS} live processes already use this queue, the most it supports")))
    }

    /// A view that is no participant: for what reads or changes only the header (sizes, shutdown, tasks,
    /// recovery). It never claims slots, so the methods below need no entry of the participant table.
    fn observer(&self) -> Ring<'_> {
        self.view(usize::MAX)
    }

    /// Approximate number of messages (needs no participant entry).
    pub fn len(&self) -> u64 {
        self.observer().len()
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most messages the queue holds at once.
    pub fn capacity(&self) -> u64 {
        self.observer().capacity()
    }

    /// Slots of the ring producers use now (see [`QueueConfig::slots`]).
    pub fn ring_capacity(&self) -> u64 {
        self.observer().ring_capacity()
    }

    /// Largest message the queue takes.
    pub fn max_message(&self) -> u64 {
        self.observer().max_message()
    }

    /// See [`Ring::shutdown`].
    pub fn shutdown(&self, immediate: bool) {
        self.observer().shutdown(immediate)
    }

    /// 0 open, 1 draining, 2 immediate.
    pub fn shutdown_state(&self) -> u32 {
        self.observer().shutdown_state()
    }

    /// Whether the queue counts unfinished tasks.
    pub fn is_joinable(&self) -> bool {
        self.observer().is_joinable()
    }

    /// Number of unfinished tasks.
    pub fn unfinished(&self) -> u64 {
        self.observer().unfinished()
    }

    /// See [`Ring::task_done_n`].
    pub fn task_done_n(&self, n: u64) -> Result<()> {
        self.observer().task_done_n(n)
    }

    /// See [`Ring::join`].
    pub fn join(&self, deadline: crate::platform::futex::Deadline) -> Result<bool> {
        self.observer().join(deadline)
    }

    /// Cleans up after participants whose process died; returns how many (needs no participant entry).
    pub fn recover_dead_participants(&self) -> usize {
        self.observer().recover_dead_participants()
    }

    fn view(&self, me: usize) -> Ring<'_> {
        let heap = self.heap.as_ref().and_then(|p| Heap::reattach(&self.seg, p).ok());
        Ring {
            hdr: self.header(),
            slots: self.slots(),
            areas: &self.areas,
            parts: self.parts(),
            heap,
            seg: Some(&self.seg),
            me,
            in_flight: Some(&self.in_flight),
        }
    }

    /// A view for operations by this process.
    pub fn ring(&self) -> Result<Ring<'_>> {
        Ok(self.view(self.participant()?))
    }

    /// The wait policy the queue was created with.
    pub fn policy(&self) -> WaitPolicy {
        if self.header().flags.load(Ordering::Relaxed) & FLAG_LOCK_FREE != 0 {
            WaitPolicy::SPIN
        } else {
            WaitPolicy::DEFAULT
        }
    }

    /// Counters: (dropped, redelivered, recovered).
    pub fn stats(&self) -> (u64, u64, u64) {
        let h = self.header();
        (h.dropped.load(Ordering::Relaxed), h.redelivered.load(Ordering::Relaxed), h.recovered.load(Ordering::Relaxed))
    }
}

impl Drop for SharedQueue {
    fn drop(&mut self) {
        let me = self.me.load(Ordering::Acquire);
        if me == 0 || me >> 16 != FORK_GENERATION.load(Ordering::Relaxed) {
            return;
        }
        let parts = self.parts();
        let i = (me & 0xffff) as usize - 1;
        if i < parts.len() && parts[i].ops.iter().all(|o| o.kind.load(Ordering::Acquire) == 0) {
            OwnerTable::new(parts).release(i, Owner::me());
        }
    }
}

/// The largest payload a heap region of `region` bytes can hold in one block.
fn largest_payload(region: u64) -> u64 {
    use crate::segment::alloc::{class_size, BLOCK_HEADER, NUM_CLASSES};
    (0..NUM_CLASSES).map(class_size).take_while(|&s| s <= region).last().unwrap_or(0).saturating_sub(BLOCK_HEADER)
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
