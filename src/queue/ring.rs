//! The queue algorithm: a bounded multi-producer multi-consumer slot ring with crash recovery.
//!
//! Each slot's state word packs `(seq, state, owner)` (see [`layout`](super::layout)). For position `p` the slot
//! at `p % capacity` goes `EMPTY(p) -> WRITING(p, producer) -> FULL(p) -> READING(p, consumer) ->
//! EMPTY(p + capacity)`. Producers claim the slot at `tail` with one CAS on its state word (which records who
//! claimed it), then advance `tail` (anyone who sees the slot claimed helps advance it); consumers do the same
//! at `head`. `tail` and `head` only ever move forward, one position at a time.
//!
//! Ordering: the payload is written with Relaxed stores (or a memcpy into a heap block) before the Release
//! store of `FULL`; a consumer's Acquire load of `FULL` makes it visible. Symmetrically a consumer reads the
//! payload before its Release store of `EMPTY(p + capacity)`, which the next producer loads with Acquire.
//!
//! Sleeping uses one futex word per side: a would-be sleeper sets bit 0 of `*_wake` ("someone may sleep"),
//! issues a SeqCst fence, re-checks its condition, then futex-waits on the word; the other side, after its
//! Release store, issues a SeqCst fence and, only if bit 0 is set, clears it with a CAS (changing the word) and
//! wakes every sleeper. One of the two fences is ordered first, so either the sleeper sees the new state or the
//! waker sees the bit: no lost wakeups, no system call when nobody sleeps, and one per sleep, not per item.
//!
//! Growth: a queue has up to [`MAX_RINGS`] rings, each 4 times the one before; `tail` and `head` are cursors
//! `(ring, position)`. A producer that finds its ring full moves `tail` into the next ring at the same position
//! (`Ring::grow`: one CAS, which also decides whether a producer's claim of that position in the old ring holds);
//! consumers drain the old ring up to where `tail` left it, then move `head` on. Rings are never reused, so a
//! stale cursor only ever meets its own ring's states.
//!
//! Crash recovery: before touching a slot, every operation writes its intent (kind, position, heap block) in an
//! [`OpRecord`] of its process's [`Participant`] entry. When a survivor finds a participant dead, it
//! inspects exactly the slots named by its intents: a `WRITING` slot the dead producer owned becomes `DROPPED`
//! (consumers skip it; counted in `dropped`) and its heap block is freed; a `READING` slot the dead consumer
//! owned becomes `FULL` again and its position goes on the `orphans` list, from which the next consumer takes
//! it (counted in `redelivered`): a message whose put returned is delivered exactly once, possibly out of
//! order. A consumer marks its slot `EMPTY` only after copying the payload out, and frees the heap block only
//! after that, so a redelivered message is never read from freed memory (a consumer killed between the two
//! leaks one block).

use super::layout::*;
use crate::base::atomic::{fence, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::segment::alloc::Heap;
use crate::segment::owners::OwnerTable;
use crate::segment::Segment;
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// What a non-blocking attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Done.
    Done,
    /// No room (put) or nothing to take (get).
    WouldBlock,
    /// The queue was shut down.
    ShutDown,
}

/// How long a blocked operation spins before sleeping, and how often a sleeper looks for dead participants.
#[derive(Debug, Clone, Copy)]
pub struct WaitPolicy {
    /// Spin (re-trying, with `spin_loop` hints and yields) this long before sleeping on the futex.
    pub spin: Duration,
    /// Longest single sleep; between sleeps the waiter checks for dead participants and returns
    /// [`Error::Interrupted`]-free control to the caller at most this late.
    pub slice: Duration,
}

impl WaitPolicy {
    /// Default: a short spin (waking a process on the other CPU is expensive; most waits are short).
    pub const DEFAULT: WaitPolicy = WaitPolicy { spin: Duration::from_micros(50), slice: Duration::from_millis(50) };
    /// `lock_free=True`: spin much longer before sleeping (more CPU, lower latency).
    pub const SPIN: WaitPolicy = WaitPolicy { spin: Duration::from_millis(2), slice: Duration::from_millis(50) };
}

/// Scans in a row (the later ones ~100 µs apart, so about 10 ms in all) that must find an entry's records all busy
/// with fewer operations in flight before `acquire_op` reports a corrupt queue.
const CORRUPT_AFTER_SCANS: u32 = 160;

/// A view of a queue in a mapped segment, for one calling participant.
pub struct Ring<'a> {
    pub(crate) hdr: &'a QueueHeader,
    /// The slots of every ring, ring after ring (`areas` says where each one is).
    pub(crate) slots: &'a [Slot],
    /// Where each ring's slots are in `slots` (process-local, from [`ring_areas`]).
    pub(crate) areas: &'a [RingArea],
    pub(crate) parts: &'a [Participant],
    pub(crate) heap: Option<Heap<'a>>,
    pub(crate) seg: Option<&'a Segment>,
    /// Participant index of the caller.
    pub(crate) me: usize,
    /// Operations this process has in flight on its participant entry (process-local), if it keeps count: all
    /// its records busy with fewer in flight means the records are corrupt.
    pub(crate) in_flight: Option<&'a crate::base::atomic::local::AtomicU32>,
}

/// Consecutive slots found ahead of their position (`tail`/`head` not moving) after which a put or get reports
/// the queue as corrupt. A consistent queue shows at most one per crashed operation.
const AHEAD_LIMIT: u32 = 4096;

#[cold]
fn no_ring(c: u64) -> Error {
    Error::Corrupt(format!("queue: ring {} of cursor {c:#x} does not exist (corrupt queue)", cursor_ring(c)))
}

/// Where one ring's slots are in the slot array: the index of its first slot and its number of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingArea {
    /// Index of the ring's first slot in the slot array.
    pub base: usize,
    /// Slots in the ring (at least 1).
    pub cap: u64,
}

/// The rings of a queue of `capacity` slots whose first ring has `first` slots, one after the other (ring `g` has
/// [`ring_slots`]`(first, capacity, g)` slots), and the total number of slots. `None` if the configuration is
/// impossible (no slot, more than [`MAX_RINGS`] rings, or more than 2^33 slots in all).
pub fn ring_areas(first: u64, capacity: u64) -> Option<(Vec<RingArea>, u64)> {
    if first == 0 || capacity == 0 || first > capacity || capacity > 1 << 32 {
        return None;
    }
    let n = ring_count(first, capacity)?;
    let mut areas = Vec::with_capacity(n);
    let mut total = 0u64;
    for g in 0..n {
        let cap = ring_slots(first, capacity, g);
        areas.push(RingArea { base: total as usize, cap });
        total += cap;
    }
    Some((areas, total))
}

impl<'a> Ring<'a> {
    #[inline]
    fn owner(&self) -> u16 {
        self.me as u16 + 1
    }

    /// The slot of cursor `c` (a ring and a position, as `tail`/`head` hold them) and the lap tag its state word
    /// carries: the position counted from the ring's start, divided by its size.
    #[inline]
    fn slot(&self, c: u64) -> Result<(&'a Slot, u64)> {
        let g = cursor_ring(c);
        let (Some(area), Some(start)) = (self.areas.get(g), self.hdr.starts.get(g)) else {
            return Err(no_ring(c));
        };
        let rel = cursor_pos(c).wrapping_sub(start.load(Ordering::Relaxed)) & POS_MASK;
        match self.slots.get(area.base + (rel % area.cap) as usize) {
            Some(slot) => Ok((slot, rel / area.cap)),
            None => Err(no_ring(c)),
        }
    }

    /// The most messages the queue holds at once.
    #[inline]
    fn bound(&self) -> u64 {
        self.hdr.capacity.load(Ordering::Relaxed)
    }

    /// Where ring `g` ends (its first position that belongs to ring `g + 1`), if that is known from `ends` (set
    /// just after `tail` left the ring): a cheap check for consumers, who read no producer line.
    #[inline]
    fn known_end(&self, g: usize) -> Option<u64> {
        match self.hdr.ends.get(g).map(|e| e.load(Ordering::Acquire)) {
            Some(0) | None => None,
            Some(e) => Some((e - 1) & POS_MASK),
        }
    }

    /// Where ring `g` ends, if `tail` has left it (reads `tail`; publishes `ends[g]` if its writer has not yet).
    fn end_of(&self, g: usize) -> Option<u64> {
        if let Some(e) = self.known_end(g) {
            return Some(e);
        }
        let t = self.hdr.tail.load(Ordering::Acquire);
        if cursor_ring(t) <= g {
            return None;
        }
        let end = self.hdr.starts.get(g + 1)?.load(Ordering::Relaxed) & POS_MASK;
        // The grower publishes this right after moving `tail`; if it died in between, anyone may (same value).
        self.hdr.ends[g].store(end + 1, Ordering::Release);
        Some(end)
    }

    /// Moves `head` from `h` (at the end of its ring) to the same position in the next ring.
    fn next_ring_for_consumers(&self, h: u64) {
        let g = cursor_ring(h);
        let moved = cursor(g + 1, cursor_pos(h));
        if self.hdr.head.compare_exchange(h, moved, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.hdr.head_ring.fetch_max(g as u32 + 1, Ordering::AcqRel);
        }
    }

    /// Whether a producer that claimed position `t` of ring `g` (and failed to move `tail` on from it, which
    /// is now `cur`) really holds it: `tail` moved past `t` in ring `g` (someone helped), rather than into the
    /// next ring at `t` (a grower closed ring `g` there first). Exactly one of the two CASes on `(g, t)` won.
    fn claim_holds(&self, g: usize, t: u64, cur: u64) -> bool {
        let cg = cursor_ring(cur);
        if cg == g {
            return true;
        }
        if cg < g {
            return false;
        }
        match self.hdr.starts.get(g + 1) {
            Some(s) => t < s.load(Ordering::Relaxed) & POS_MASK,
            None => false,
        }
    }

    /// Largest message this queue takes.
    pub fn max_message(&self) -> u64 {
        self.hdr.max_message.load(Ordering::Relaxed)
    }

    /// The queue's shutdown state: 0 open, 1 draining, 2 immediate.
    pub fn shutdown_state(&self) -> u32 {
        self.hdr.shutdown.load(Ordering::Acquire)
    }

    // ---- op records ---------------------------------------------------------------------------------------

    /// Claims a free operation record of the caller's participant entry, waiting until `deadline` while every
    /// record is busy (more of this process's threads are inside operations than it has records). `None`: the
    /// deadline passed.
    fn acquire_op(&self, kind: u32, deadline: &Deadline) -> Result<Option<&'a OpRecord>> {
        let ops = &self.parts[self.me].ops;
        let mut spins = 0u32;
        // Consecutive scans that found every record busy with fewer operations of this process in flight. The
        // count and the records are updated one after the other by other threads, so one such scan can be a
        // race (a record released and its count dropped between our two reads); only a state that persists
        // means records marked busy by nobody, i.e. a corrupt entry.
        let mut suspicious = 0u32;
        loop {
            for op in ops {
                if op.kind.load(Ordering::Relaxed) == 0
                    && op.kind.compare_exchange(0, kind, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                {
                    if let Some(n) = self.in_flight {
                        n.fetch_add(1, crate::base::atomic::local::Ordering::Relaxed);
                    }
                    return Ok(Some(op));
                }
            }
            if let Some(n) = self.in_flight {
                let mine = n.load(crate::base::atomic::local::Ordering::Relaxed);
                if (mine as usize) < OPS_PER_PARTICIPANT {
                    suspicious += 1;
                    if suspicious >= CORRUPT_AFTER_SCANS {
                        return Err(Error::Corrupt(format!(
                            "queue: every operation record of this process's entry stays marked busy, but it has \
                             {mine} operations in flight (corrupt queue)"
                        )));
                    }
                } else {
                    suspicious = 0;
                }
            }
            if deadline.expired() {
                return Ok(None);
            }
            // More operations in flight in this process than records: wait for one to finish.
            spins += 1;
            if cfg!(loom) || spins < 64 {
                crate::base::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    fn op_done(&self, op: &OpRecord) {
        Self::release_op(op);
        if let Some(n) = self.in_flight {
            let _ = n.fetch_update(
                crate::base::atomic::local::Ordering::Relaxed,
                crate::base::atomic::local::Ordering::Relaxed,
                |v| v.checked_sub(1),
            );
        }
    }

    fn release_op(op: &OpRecord) {
        op.block.store(0, Ordering::Relaxed);
        op.flags.store(0, Ordering::Relaxed);
        op.kind.store(0, Ordering::Release);
    }

    // ---- payload -------------------------------------------------------------------------------------------

    fn write_inline(slot: &Slot, payload: &[u8]) {
        for (i, chunk) in payload.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            slot.data[i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn read_inline(slot: &Slot, len: usize, out: &mut Vec<u8>) {
        let mut left = len;
        for word in &slot.data {
            if left == 0 {
                break;
            }
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            let n = left.min(8);
            out.extend_from_slice(&bytes[..n]);
            left -= n;
        }
    }

    fn heap(&self) -> Result<&Heap<'a>> {
        self.heap.as_ref().ok_or_else(|| Error::Invalid("this queue has no heap for large messages".into()))
    }

    fn copy_to_block(&self, block: u64, payload: &[u8]) -> Result<()> {
        let seg = self.seg.ok_or_else(|| Error::Invalid("no segment".into()))?;
        let dst = seg.bytes_ptr(block, payload.len() as u64)?;
        // SAFETY: `dst` is in bounds for payload.len() bytes (checked), the block was just allocated to this
        // operation so nobody else reads or writes it until it is published.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), dst, payload.len()) };
        Ok(())
    }

    fn copy_from_block(&self, block: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let seg = self.seg.ok_or_else(|| Error::Invalid("no segment".into()))?;
        let heap = self.heap()?;
        if heap.usable_size(block)? < len as u64 {
            return Err(Error::Corrupt(format!("queue message of {len} bytes overruns its heap block")));
        }
        let src = seg.bytes_ptr(block, len as u64)?;
        out.reserve(len);
        // SAFETY: `src` is in bounds for len bytes (checked); the block belongs to the message this consumer
        // claimed (READING), which no producer touches until the slot is EMPTY again; `out` has room for len
        // more bytes (reserved) and set_len covers exactly the bytes copied.
        unsafe {
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr().add(out.len()), len);
            out.set_len(out.len() + len);
        }
        Ok(())
    }

    // ---- put -----------------------------------------------------------------------------------------------

    /// Checks that a message of `len` bytes can ever fit.
    pub fn check_size(&self, len: usize) -> Result<()> {
        let max = self.max_message().min(u32::MAX as u64);
        if len as u64 > max {
            return Err(Error::Invalid(format!(
                "message of {len} bytes is larger than this queue's capacity of {max} bytes per message; create \
                 the queue with a larger capacity"
            )));
        }
        Ok(())
    }

    /// Tries once to enqueue `payload`. `block` is a heap block already holding the payload (for messages
    /// larger than [`INLINE_MAX`]); on success its ownership passes to the queue.
    fn try_put_once(&self, op: &OpRecord, payload: &[u8], block: u64) -> Result<Attempt> {
        if self.hdr.shutdown.load(Ordering::Relaxed) != 0 {
            return Ok(Attempt::ShutDown);
        }
        let mut ahead = 0u32;
        let mut grows = 0u32;
        loop {
            let t = self.hdr.tail.load(Ordering::Acquire);
            op.pos.store(t, Ordering::Release);
            let g = cursor_ring(t);
            let (slot, lap) = self.slot(t)?;
            if g > 0 && (self.hdr.head_ring.load(Ordering::Relaxed) as usize) < g {
                // Older rings still hold items: the ring's own size does not bound the count, so check it.
                let h = cursor_pos(self.hdr.head.load(Ordering::Acquire));
                if cursor_pos(t).wrapping_sub(h) & POS_MASK >= self.bound() {
                    if self.hdr.tail.load(Ordering::Acquire) == t {
                        return Ok(Attempt::WouldBlock);
                    }
                    continue;
                }
            }
            let w = slot.state.load(Ordering::Acquire);
            let diff = word_seq(w).wrapping_sub(lap as u32) as i32;
            if diff == 0 {
                if word_state(w) == state::EMPTY {
                    let claimed = word(lap, state::WRITING, self.owner());
                    if slot.state.compare_exchange(w, claimed, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                        continue;
                    }
                    if let Err(cur) =
                        self.hdr.tail.compare_exchange(t, t.wrapping_add(1), Ordering::AcqRel, Ordering::Acquire)
                    {
                        if !self.claim_holds(g, cursor_pos(t), cur) {
                            // A grower moved `tail` into the next ring at this very position: it is not ours.
                            let free = word(lap, state::EMPTY, 0);
                            let _ = slot.state.compare_exchange(claimed, free, Ordering::AcqRel, Ordering::Relaxed);
                            continue;
                        }
                    }
                    slot.len.store(payload.len() as u32, Ordering::Relaxed);
                    if block == 0 {
                        slot.kind.store(PAYLOAD_INLINE, Ordering::Relaxed);
                        Self::write_inline(slot, payload);
                    } else {
                        slot.kind.store(PAYLOAD_HEAP, Ordering::Relaxed);
                        slot.data[0].store(block, Ordering::Relaxed);
                        // From here the slot references the block: a recoverer of a WRITING slot frees it
                        // through the slot, and a record with `block != 0` always means "not published".
                        op.block.store(0, Ordering::Release);
                    }
                    slot.state.store(word(lap, state::FULL, 0), Ordering::Release);
                    return Ok(Attempt::Done);
                }
                // Claimed for `t` by another producer: help it advance `tail`.
                let _ = self.hdr.tail.compare_exchange(t, t.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
            } else if diff < 0 {
                // The slot still holds the previous lap: this ring is full (or our `tail` is stale; re-check it).
                if self.hdr.tail.load(Ordering::Acquire) == t {
                    grows += 1;
                    if grows > 2 || !self.grow(t)? {
                        return Ok(Attempt::WouldBlock);
                    }
                }
            } else if self.hdr.tail.load(Ordering::Acquire) == t {
                // The slot is ahead of `t` with `tail` still at `t`: position `t` was claimed and consumed
                // without `tail` moving past it (its producer died between claiming and advancing, the
                // recoverer dropped it and a consumer skipped it), or the word is corrupt. Help `tail` on;
                // give up on a run of such slots that no crash explains.
                ahead += 1;
                if ahead > AHEAD_LIMIT {
                    return Err(Error::Corrupt(format!(
                        "queue: {ahead} slots in a row are ahead of their position (slot state {w:#x} at position \
                         {t}); the queue is corrupt"
                    )));
                }
                let _ = self.hdr.tail.compare_exchange(t, t.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
            }
            // Otherwise `tail` moved on since we read it; retry.
        }
    }

    // ---- growth --------------------------------------------------------------------------------------------

    /// Ring `tail` is in is full at `tail == t`: moves producers to the next, larger ring (reserving its slots in
    /// /dev/shm first), if there is one and the queue holds fewer than its capacity. Returns whether `tail` has
    /// moved since `t` (the caller tries again), false if the queue cannot grow now (the put waits).
    ///
    /// One process grows at a time (`grow_owner`; a busy claim means "wait", and a dead holder's claim is cleared
    /// by the slice-end scan). The grower writes the new ring's start, then moves `tail` from `(g, t)` to
    /// `(g + 1, t)` with one CAS: that CAS and a producer's `(g, t) -> (g, t + 1)` decide whether position `t` is
    /// in ring `g` (see [`claim_holds`](Self::claim_holds)). Then it publishes `ends[g]` for consumers, who drain
    /// ring `g` up to there and move `head` on.
    fn grow(&self, t: u64) -> Result<bool> {
        let g = cursor_ring(t);
        if g + 1 >= self.areas.len() {
            return Ok(false);
        }
        let h = cursor_pos(self.hdr.head.load(Ordering::Acquire));
        if cursor_pos(t).wrapping_sub(h) & POS_MASK >= self.bound() {
            return Ok(false);
        }
        let me = crate::segment::owners::Owner::me().0.max(1);
        if self.hdr.grow_owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Ok(false);
        }
        let result = self.grow_locked(t);
        self.hdr.grow_owner.store(0, Ordering::Release);
        if matches!(result, Ok(true)) {
            // Producers asleep on the full ring can go on in the new one.
            self.wake_producers(true);
        }
        result
    }

    fn grow_locked(&self, t: u64) -> Result<bool> {
        let g = cursor_ring(t);
        if self.hdr.tail.load(Ordering::Acquire) != t {
            return Ok(true);
        }
        let area = self.areas[g + 1];
        if let Some(seg) = self.seg {
            // The new ring's pages are allocated before any producer can write them (never a SIGBUS). Its slots
            // have never been used: zero, EMPTY for lap 0.
            let off = self.slots_offset() + area.base as u64 * SLOT_SIZE as u64;
            seg.reserve(off, area.cap * SLOT_SIZE as u64)?;
        }
        self.hdr.starts[g + 1].store(cursor_pos(t), Ordering::Relaxed);
        let moved = cursor(g + 1, cursor_pos(t));
        if self.hdr.tail.compare_exchange(t, moved, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.hdr.ends[g].store(cursor_pos(t) + 1, Ordering::Release);
        }
        Ok(true)
    }

    /// Offset of the slot array in the segment, from the validated mapping (not from the header, which a
    /// corrupt segment could change after attach).
    fn slots_offset(&self) -> u64 {
        match self.seg {
            Some(seg) => (self.slots.as_ptr() as u64).wrapping_sub(seg.base_ptr() as u64),
            None => 0,
        }
    }

    /// Clears a growth claim whose holder died and publishes `ends` that a grower killed after moving `tail`
    /// left unset (slow path: reads `/proc`; run at slice ends).
    pub fn repair_growth(&self) {
        let owner = self.hdr.grow_owner.load(Ordering::Acquire);
        if owner != 0 && !crate::segment::owners::Owner(owner).is_alive() {
            let _ = self.hdr.grow_owner.compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        let tg = cursor_ring(self.hdr.tail.load(Ordering::Acquire)).min(self.areas.len());
        for g in 0..tg {
            let _ = self.end_of(g);
        }
        let hg = cursor_ring(self.hdr.head.load(Ordering::Acquire)).min(self.areas.len());
        self.hdr.head_ring.fetch_max(hg as u32, Ordering::AcqRel);
    }

    fn wake_consumers(&self, _all: bool) {
        Self::wake(&self.hdr.cons_wake);
    }

    fn wake_producers(&self, _all: bool) {
        Self::wake(&self.hdr.prod_wake);
    }

    /// The waking half of the sleep protocol. Bit 0 of a wake word says "someone may be asleep on me"; the first
    /// waker to see it set clears it (the CAS also changes the word, which is what sleepers wait on) and wakes
    /// every sleeper. Later wakers find it clear and make no system call, so a consumer draining a queue whose
    /// producers sleep costs one `futex_wake`, not one per item.
    #[inline]
    fn wake(word: &crate::base::atomic::AtomicU32) {
        fence(Ordering::SeqCst);
        let w = word.load(Ordering::Relaxed);
        if w & 1 == 1 && word.compare_exchange(w, w.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            futex::wake_all(word);
        }
    }

    /// Enqueues `payload`, waiting up to `deadline` for room. Returns `Ok(Attempt::Done)`,
    /// `Ok(Attempt::WouldBlock)` when the deadline passed, `Ok(Attempt::ShutDown)`, or
    /// `Err(Error::Interrupted)` when a signal arrived (the caller handles it and calls again).
    pub fn put(&self, payload: &[u8], deadline: Deadline, policy: WaitPolicy) -> Result<Attempt> {
        self.check_size(payload.len())?;
        let joinable = self.is_joinable();
        if joinable {
            // Counted before publishing, so a fast consumer's task_done() never sees the count below zero.
            self.hdr.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        let op = match self.acquire_op(OP_PUT, &deadline) {
            Ok(Some(op)) => op,
            other => {
                if joinable {
                    self.task_done_n(1).ok();
                }
                return other.map(|_| Attempt::WouldBlock);
            }
        };
        let result = self.put_with_op(op, payload, deadline, policy);
        if joinable && !matches!(result, Ok(Attempt::Done)) {
            self.task_done_n(1).ok();
        }
        if !matches!(result, Ok(Attempt::Done)) {
            // Not published: give back the block (if any) we still own.
            let block = op.block.load(Ordering::Relaxed);
            if block != 0 {
                let _ = self.heap().and_then(|h| h.free(block));
            }
        }
        self.op_done(op);
        if matches!(result, Ok(Attempt::Done)) {
            self.wake_consumers(false);
        }
        result
    }

    fn put_with_op(&self, op: &OpRecord, payload: &[u8], deadline: Deadline, policy: WaitPolicy) -> Result<Attempt> {
        let mut block = 0;
        if payload.len() > INLINE_MAX {
            match self.alloc_waiting(op, payload.len(), &mut block, deadline, policy)? {
                Attempt::Done => {}
                other => return Ok(other),
            }
            self.copy_to_block(block, payload)?;
        }
        self.wait_loop(Side::Producer, deadline, policy, || self.try_put_once(op, payload, block))
    }

    /// Allocates a heap block for `len` bytes into `*block`, waiting for consumers to free space.
    fn alloc_waiting(
        &self,
        op: &OpRecord,
        len: usize,
        block: &mut u64,
        deadline: Deadline,
        policy: WaitPolicy,
    ) -> Result<Attempt> {
        let heap = self.heap()?;
        self.wait_loop(Side::Producer, deadline, policy, || {
            if self.hdr.shutdown.load(Ordering::Relaxed) != 0 {
                return Ok(Attempt::ShutDown);
            }
            match heap.alloc(len as u64) {
                Ok(b) => {
                    *block = b;
                    // Recorded at once, so a recoverer can free it if we die before publishing.
                    op.flags.store(OP_HEAP, Ordering::Relaxed);
                    op.block.store(b, Ordering::Release);
                    Ok(Attempt::Done)
                }
                Err(Error::Full(_)) => Ok(Attempt::WouldBlock),
                Err(e) => Err(e),
            }
        })
    }

    // ---- get -----------------------------------------------------------------------------------------------

    /// Tries once to take a message into `out` (appended). Skips dropped messages.
    fn try_get_once(&self, op: &OpRecord, out: &mut Vec<u8>) -> Result<Attempt> {
        let sd = self.hdr.shutdown.load(Ordering::Relaxed);
        if sd == 2 {
            return Ok(Attempt::ShutDown);
        }
        if self.hdr.orphan_count.load(Ordering::Relaxed) > 0 && self.take_orphan(op, out)? {
            return Ok(Attempt::Done);
        }
        let mut ahead = 0u32;
        loop {
            let h = self.hdr.head.load(Ordering::Acquire);
            op.pos.store(h, Ordering::Release);
            let (g, hp) = (cursor_ring(h), cursor_pos(h));
            let (slot, lap) = self.slot(h)?;
            let w = slot.state.load(Ordering::Acquire);
            let diff = word_seq(w).wrapping_sub(lap as u32) as i32;
            // Anything but a FULL slot at `head` may mean that `head` reached the end of its ring (FULL cannot:
            // only a producer whose claim held publishes): then consumers go on in the next ring. Where that
            // decides an action (skipping, helping), the end is read authoritatively (`end_of`, which reads
            // `tail`); where it would only say "nothing yet", the cheap `known_end` does.
            if diff == 0 {
                match word_state(w) {
                    state::FULL => {
                        let claimed = word(lap, state::READING, self.owner());
                        if slot.state.compare_exchange(w, claimed, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                            continue;
                        }
                        let _ =
                            self.hdr.head.compare_exchange(h, h.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                        self.consume(slot, lap, out)?;
                        return Ok(Attempt::Done);
                    }
                    state::DROPPED => {
                        if self.end_of(g).is_some_and(|e| hp >= e) {
                            // A producer whose claim did not hold died before giving the slot back.
                            self.next_ring_for_consumers(h);
                            continue;
                        }
                        let next = word(lap + 1, state::EMPTY, 0);
                        if slot.state.compare_exchange(w, next, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                            let _ = self.hdr.head.compare_exchange(
                                h,
                                h.wrapping_add(1),
                                Ordering::Release,
                                Ordering::Relaxed,
                            );
                            self.wake_producers(false);
                        }
                    }
                    state::EMPTY | state::WRITING => {
                        if self.known_end(g).is_some_and(|e| hp >= e) {
                            self.next_ring_for_consumers(h);
                            continue;
                        }
                        // EMPTY: nothing yet. WRITING: a producer is filling it, the message is imminent (or the
                        // producer died, which the waiter's liveness scan handles).
                        return Ok(if sd == 1 && word_state(w) == state::EMPTY {
                            Attempt::ShutDown
                        } else {
                            Attempt::WouldBlock
                        });
                    }
                    _ => {
                        // READING: another consumer took it; help advance `head`.
                        let _ =
                            self.hdr.head.compare_exchange(h, h.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                    }
                }
            } else if diff < 0 {
                // The slot still shows the previous lap being read: nothing new at `head` (unless the ring ended).
                if self.known_end(g).is_some_and(|e| hp >= e) {
                    self.next_ring_for_consumers(h);
                    continue;
                }
                if self.hdr.head.load(Ordering::Acquire) == h {
                    return Ok(if sd == 1 { Attempt::ShutDown } else { Attempt::WouldBlock });
                }
            } else if self.hdr.head.load(Ordering::Acquire) == h {
                if self.end_of(g).is_some_and(|e| hp >= e) {
                    self.next_ring_for_consumers(h);
                    continue;
                }
                // Ahead of `h` with `head` still at `h`: the message at `h` was taken without `head` moving
                // past it (a redelivery consumed it first), or the word is corrupt. As in `try_put_once`.
                ahead += 1;
                if ahead > AHEAD_LIMIT {
                    return Err(Error::Corrupt(format!(
                        "queue: {ahead} slots in a row are ahead of their position (slot state {w:#x} at position \
                         {h}); the queue is corrupt"
                    )));
                }
                let _ = self.hdr.head.compare_exchange(h, h.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
            }
        }
    }

    /// Copies the message of a slot this consumer holds in `READING` (lap `lap`), releases the slot for the
    /// next lap, then frees the block.
    fn consume(&self, slot: &Slot, lap: u64, out: &mut Vec<u8>) -> Result<()> {
        let len = slot.len.load(Ordering::Relaxed) as usize;
        let kind = slot.kind.load(Ordering::Relaxed);
        let mut block = 0;
        let copied = if kind == PAYLOAD_INLINE && len <= INLINE_MAX {
            Self::read_inline(slot, len, out);
            Ok(())
        } else if kind == PAYLOAD_HEAP {
            block = slot.data[0].load(Ordering::Relaxed);
            self.copy_from_block(block, len, out)
        } else {
            Err(Error::Corrupt(format!("queue slot (lap {lap}) has invalid payload kind {kind} / length {len}")))
        };
        slot.state.store(word(lap + 1, state::EMPTY, 0), Ordering::Release);
        if block != 0 {
            if let Ok(heap) = self.heap() {
                let _ = heap.free(block);
            }
        }
        self.wake_producers(false);
        copied
    }

    fn take_orphan(&self, op: &OpRecord, out: &mut Vec<u8>) -> Result<bool> {
        for entry in &self.hdr.orphans {
            let v = entry.load(Ordering::Acquire);
            if v == 0
                || v == ORPHAN_RESERVED
                || entry.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed).is_err()
            {
                continue;
            }
            self.hdr.orphan_count.fetch_sub(1, Ordering::AcqRel);
            let pos = v - 1;
            op.pos.store(pos, Ordering::Release);
            let Ok((slot, lap)) = self.slot(pos) else { continue };
            let full = word(lap, state::FULL, 0);
            let claimed = word(lap, state::READING, self.owner());
            if slot.state.compare_exchange(full, claimed, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.hdr.redelivered.fetch_add(1, Ordering::Relaxed);
                self.consume(slot, lap, out)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes one message into `out` (appended), waiting up to `deadline`. Same results as [`put`](Self::put).
    pub fn get(&self, out: &mut Vec<u8>, deadline: Deadline, policy: WaitPolicy) -> Result<Attempt> {
        let Some(op) = self.acquire_op(OP_GET, &deadline)? else { return Ok(Attempt::WouldBlock) };
        let result = self.wait_loop(Side::Consumer, deadline, policy, || self.try_get_once(op, out));
        self.op_done(op);
        result
    }

    /// Takes up to `max` messages without waiting, appending each to `out` and its length to `lens`, and stops
    /// early once `out` holds `max_bytes` (so a caller's buffer stays small enough to be reused). Returns how
    /// many were taken.
    pub fn get_available(
        &self,
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
        max: usize,
        max_bytes: usize,
    ) -> Result<usize> {
        let Some(op) = self.acquire_op(OP_GET, &Deadline::passed())? else { return Ok(0) };
        let mut n = 0;
        let mut result = Ok(0);
        while n < max && out.len() < max_bytes {
            let before = out.len();
            match self.try_get_once(op, out) {
                Ok(Attempt::Done) => {
                    lens.push(out.len() - before);
                    n += 1;
                }
                Ok(_) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.op_done(op);
        result.map(|_| n)
    }

    /// One non-blocking put attempt of an inline-sized message (no waiting, no heap): for model checking and
    /// callers that manage their own waiting.
    pub fn try_put(&self, payload: &[u8]) -> Result<Attempt> {
        if payload.len() > INLINE_MAX {
            return Err(Error::Invalid("try_put takes inline-sized messages only".into()));
        }
        let Some(op) = self.acquire_op(OP_PUT, &Deadline::passed())? else {
            return Ok(Attempt::WouldBlock);
        };
        let r = self.try_put_once(op, payload, 0);
        self.op_done(op);
        if matches!(r, Ok(Attempt::Done)) {
            self.wake_consumers(false);
        }
        r
    }

    /// One non-blocking get attempt (appends to `out`).
    pub fn try_get(&self, out: &mut Vec<u8>) -> Result<Attempt> {
        let Some(op) = self.acquire_op(OP_GET, &Deadline::passed())? else {
            return Ok(Attempt::WouldBlock);
        };
        let r = self.try_get_once(op, out);
        self.op_done(op);
        r
    }

    // ---- waiting -------------------------------------------------------------------------------------------

    fn wait_loop(
        &self,
        side: Side,
        deadline: Deadline,
        policy: WaitPolicy,
        mut attempt: impl FnMut() -> Result<Attempt>,
    ) -> Result<Attempt> {
        match attempt()? {
            Attempt::WouldBlock => {}
            done => return Ok(done),
        }
        if deadline.expired() {
            return Ok(Attempt::WouldBlock);
        }
        // Spin first: when the other side is running, an item or a free slot usually appears within a
        // microsecond or two, far sooner than a futex wake-up would deliver it.
        let mut outcome = None;
        crate::sync::wait::spin_up_to(policy.spin, &deadline, || match attempt() {
            Ok(Attempt::WouldBlock) => false,
            other => {
                outcome = Some(other);
                true
            }
        });
        if let Some(done) = outcome {
            return done;
        }
        if deadline.expired() {
            return Ok(Attempt::WouldBlock);
        }
        // Sleep, in slices.
        let (wake, waiters) = match side {
            Side::Consumer => (&self.hdr.cons_wake, &self.hdr.cons_waiters),
            Side::Producer => (&self.hdr.prod_wake, &self.hdr.prod_waiters),
        };
        let mut last_scan = Instant::now();
        loop {
            // Announce the sleep (set bit 0; see `wake`), then re-check: a waker either sees the bit or its
            // change is visible to this re-check (both sides put a SeqCst fence between store and load).
            let mut key = wake.load(Ordering::Acquire);
            while key & 1 == 0 {
                match wake.compare_exchange_weak(key, key | 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => key |= 1,
                    Err(w) => key = w,
                }
            }
            waiters.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let r = attempt();
            if !matches!(r, Ok(Attempt::WouldBlock)) {
                waiters.fetch_sub(1, Ordering::Relaxed);
                return r;
            }
            let slice = match deadline.remaining() {
                Some(left) if left.is_zero() => {
                    waiters.fetch_sub(1, Ordering::Relaxed);
                    return Ok(Attempt::WouldBlock);
                }
                Some(left) => left.min(policy.slice),
                None => policy.slice,
            };
            let res = futex::wait(wake, key, Some(slice));
            waiters.fetch_sub(1, Ordering::Relaxed);
            if res == futex::WaitResult::Interrupted {
                return Err(Error::Interrupted);
            }
            if last_scan.elapsed() >= policy.slice {
                last_scan = Instant::now();
                self.recover_dead_participants();
            }
            if res == futex::WaitResult::TimedOut && !deadline.expired() {
                // A slice ended: let a caller that polls for signals run its handlers (it calls again).
                crate::sync::wait::slice_ended()?;
            }
        }
    }

    // ---- joinable queues ----------------------------------------------------------------------------------

    /// Whether the queue counts unfinished tasks.
    pub fn is_joinable(&self) -> bool {
        self.hdr.flags.load(Ordering::Relaxed) & FLAG_JOINABLE != 0
    }

    /// Marks `n` tasks done. Fails (changing nothing) if that would take the count below zero.
    pub fn task_done_n(&self, n: u64) -> Result<()> {
        let mut cur = self.hdr.unfinished.load(Ordering::Acquire);
        loop {
            let new = cur.checked_sub(n).ok_or_else(|| Error::Invalid("task_done() called too many times".into()))?;
            match self.hdr.unfinished.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if new == 0 {
                        self.hdr.join_wake.fetch_add(1, Ordering::Release);
                        fence(Ordering::SeqCst);
                        if self.hdr.join_waiters.load(Ordering::Relaxed) > 0 {
                            futex::wake_all(&self.hdr.join_wake);
                        }
                    }
                    return Ok(());
                }
                Err(c) => cur = c,
            }
        }
    }

    /// Number of unfinished tasks.
    pub fn unfinished(&self) -> u64 {
        self.hdr.unfinished.load(Ordering::Acquire)
    }

    /// Waits until every task put has been marked done, or the deadline passes (returns false then), or a
    /// signal arrives (`Err(Interrupted)`).
    pub fn join(&self, deadline: Deadline) -> Result<bool> {
        loop {
            if self.hdr.unfinished.load(Ordering::Acquire) == 0 {
                return Ok(true);
            }
            self.hdr.join_waiters.fetch_add(1, Ordering::SeqCst);
            let key = self.hdr.join_wake.load(Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.hdr.unfinished.load(Ordering::Acquire) == 0 {
                self.hdr.join_waiters.fetch_sub(1, Ordering::SeqCst);
                return Ok(true);
            }
            let slice = match deadline.remaining() {
                Some(left) if left.is_zero() => {
                    self.hdr.join_waiters.fetch_sub(1, Ordering::SeqCst);
                    return Ok(false);
                }
                Some(left) => left.min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            let r = futex::wait(&self.hdr.join_wake, key, Some(slice));
            self.hdr.join_waiters.fetch_sub(1, Ordering::SeqCst);
            if r == futex::WaitResult::Interrupted {
                return Err(Error::Interrupted);
            }
            if r == futex::WaitResult::TimedOut && !deadline.expired() {
                crate::sync::wait::slice_ended()?;
            }
        }
    }

    // ---- waiting elsewhere (asyncio) -------------------------------------------------------------------

    /// Whether a get would find something now (a message, a redelivery, or shutdown).
    pub fn readable(&self) -> bool {
        if self.hdr.shutdown.load(Ordering::Relaxed) != 0 {
            return true;
        }
        // Not the count alone: a consumer killed between taking an entry and decrementing it leaves the count
        // above the entries for good, which would make an asyncio get spin instead of wait.
        if self.hdr.orphan_count.load(Ordering::Relaxed) > 0
            && self.hdr.orphans.iter().any(|e| !matches!(e.load(Ordering::Acquire), 0 | ORPHAN_RESERVED))
        {
            return true;
        }
        let h = self.hdr.head.load(Ordering::Acquire);
        let Ok((slot, lap)) = self.slot(h) else { return true }; // a get reports the corruption
        let w = slot.state.load(Ordering::Acquire);
        if self.known_end(cursor_ring(h)).is_some_and(|e| cursor_pos(h) >= e) {
            return true; // a get moves on to the next ring
        }
        word_seq(w) == lap as u32 && matches!(word_state(w), state::FULL | state::DROPPED)
    }

    /// Waits up to `deadline` until a get would find something ([`readable`](Self::readable)), without taking
    /// it: `Done` when it would, `WouldBlock` at the deadline. For a consumer that takes under a lock of its
    /// own, so that another thread may take instead while this one sleeps. Sleeps like [`get`](Self::get).
    pub fn wait_readable(&self, deadline: Deadline, policy: WaitPolicy) -> Result<Attempt> {
        self.wait_loop(Side::Consumer, deadline, policy, || {
            Ok(if self.readable() { Attempt::Done } else { Attempt::WouldBlock })
        })
    }

    /// Whether a put would find a free slot now (or the queue is shut down).
    pub fn writable(&self) -> bool {
        if self.hdr.shutdown.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let t = self.hdr.tail.load(Ordering::Acquire);
        let Ok((slot, lap)) = self.slot(t) else { return true }; // a put reports the corruption
        let w = slot.state.load(Ordering::Acquire);
        let diff = word_seq(w).wrapping_sub(lap as u32) as i32;
        let h = cursor_pos(self.hdr.head.load(Ordering::Acquire));
        let room = cursor_pos(t).wrapping_sub(h) & POS_MASK < self.bound();
        // A full ring with room in the queue: the put grows the queue into its next ring, unless another process
        // is doing that now (its grower wakes producers when done).
        let can_grow = cursor_ring(t) + 1 < self.areas.len() && self.hdr.grow_owner.load(Ordering::Acquire) == 0;
        room && (diff > 0 || (diff == 0 && word_state(w) == state::EMPTY) || can_grow)
    }

    /// For a waiter that sleeps elsewhere (the asyncio bridge's waker): announces a sleeper on the side's wake
    /// word (bit 0, as a sleeping get or put does) and returns the word with the value to
    /// sleep on, or `None` if a get (`for_get`) or put would not block now (try again instead).
    pub fn announce(&self, for_get: bool) -> Option<(&'a crate::base::atomic::AtomicU32, u32)> {
        let wake = if for_get { &self.hdr.cons_wake } else { &self.hdr.prod_wake };
        let mut key = wake.load(Ordering::Acquire);
        while key & 1 == 0 {
            match wake.compare_exchange_weak(key, key | 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => key |= 1,
                Err(w) => key = w,
            }
        }
        fence(Ordering::SeqCst);
        let ready = if for_get { self.readable() } else { self.writable() };
        (!ready).then_some((wake, key))
    }

    // ---- shutdown ------------------------------------------------------------------------------------------

    /// Shuts the queue down: puts fail from now on; gets drain what is left (`immediate == false`) or fail at
    /// once. Wakes every sleeper in every process.
    pub fn shutdown(&self, immediate: bool) {
        let new = if immediate { 2 } else { 1 };
        self.hdr.shutdown.fetch_max(new, Ordering::AcqRel);
        // Every sleeper set bit 0 of its side's word before sleeping, so these wake them all.
        self.wake_consumers(true);
        self.wake_producers(true);
    }

    // ---- recovery ------------------------------------------------------------------------------------------

    /// Finds participants whose process died and cleans up after them (through the owner table: the entry is
    /// freed only once its op records are recovered). Returns how many were recovered.
    pub fn recover_dead_participants(&self) -> usize {
        self.repair_growth();
        OwnerTable::new(self.parts).reap(|i, _, _| self.recover_entry(i))
    }

    /// Cleans up after the dead participant of entry `idx`, which the caller holds (the owner table's reaping
    /// state): finishes or undoes what its op records say was in flight. False if it could not finish now (the
    /// redelivery list is full): the entry stays the dead process's, to be recovered on a later scan. Idempotent
    /// (a reaper that dies part-way is taken over and its successor redoes this).
    pub(crate) fn recover_entry(&self, idx: usize) -> bool {
        let p = &self.parts[idx];
        let owner = idx as u16 + 1;
        let mut keep = false;
        for op in &p.ops {
            let kind = op.kind.load(Ordering::Acquire);
            if kind == 0 {
                continue;
            }
            let pos = op.pos.load(Ordering::Acquire);
            let block = op.block.load(Ordering::Acquire);
            // The slot the record names if this participant holds it (a corrupt record names none).
            let held = self.slot(pos).ok().and_then(|(slot, lap)| {
                let w = slot.state.load(Ordering::Acquire);
                (word_seq(w) == lap as u32 && word_owner(w) == owner).then_some((slot, lap, w))
            });
            match (kind, held) {
                (OP_PUT, held) => {
                    if let Some((slot, lap, w)) = held.filter(|h| word_state(h.2) == state::WRITING) {
                        // Half written: drop it. Its block is in the op record, or (once the record was cleared)
                        // fully referenced by the slot.
                        // (The slot's own kind/data may be stale from an earlier lap, so only trust them for a
                        // heap put whose record was cleared, which happens after they were written.)
                        let heap_put = op.flags.load(Ordering::Acquire) & OP_HEAP != 0;
                        let slot_block = if heap_put && block == 0 { slot.data[0].load(Ordering::Relaxed) } else { 0 };
                        let dropped = word(lap, state::DROPPED, 0);
                        if slot.state.compare_exchange(w, dropped, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                            self.hdr.dropped.fetch_add(1, Ordering::Relaxed);
                            self.free_quietly(block.max(slot_block));
                        }
                    } else {
                        // No slot of ours in WRITING: the message was published (the record's block was cleared
                        // before that) or never claimed a slot; a block still in the record is unpublished.
                        self.free_quietly(block);
                    }
                }
                (OP_GET, Some((slot, lap, w))) if word_state(w) == state::READING => {
                    // Not delivered: make it FULL again and list its position for redelivery. An entry is
                    // reserved first and filled only after the slot is FULL, so a consumer that takes the entry
                    // always finds the message.
                    let entry =
                        self.hdr.orphans.iter().find(|e| {
                            e.compare_exchange(0, ORPHAN_RESERVED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                        });
                    match entry {
                        Some(entry) => {
                            slot.state.store(word(lap, state::FULL, 0), Ordering::Release);
                            entry.store(pos.wrapping_add(1), Ordering::Release);
                            self.hdr.orphan_count.fetch_add(1, Ordering::AcqRel);
                            self.wake_consumers(true);
                        }
                        None => keep = true, // list full: try again on a later scan
                    }
                }
                _ => {}
            }
            if !keep {
                Self::release_op(op);
            }
        }
        if keep {
            return false;
        }
        self.hdr.recovered.fetch_add(1, Ordering::Relaxed);
        self.wake_producers(true);
        self.wake_consumers(true);
        true
    }

    fn free_quietly(&self, block: u64) {
        if block != 0 {
            if let Ok(heap) = self.heap() {
                let _ = heap.free(block);
            }
        }
    }

    // ---- sizes ---------------------------------------------------------------------------------------------

    /// Approximate number of messages (`tail - head`; exact when nothing is in flight).
    pub fn len(&self) -> u64 {
        let h = cursor_pos(self.hdr.head.load(Ordering::Acquire));
        let t = cursor_pos(self.hdr.tail.load(Ordering::Acquire));
        t.saturating_sub(h).saturating_add(self.hdr.orphan_count.load(Ordering::Relaxed) as u64)
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most messages the queue holds at once (the slots of its last ring).
    pub fn capacity(&self) -> u64 {
        self.bound()
    }

    /// Slots of the ring producers use now (grows from the first ring's size up to [`capacity`](Self::capacity)).
    pub fn ring_capacity(&self) -> u64 {
        self.areas.get(cursor_ring(self.hdr.tail.load(Ordering::Acquire))).map_or(0, |a| a.cap)
    }
}

#[derive(Clone, Copy)]
enum Side {
    Producer,
    Consumer,
}
