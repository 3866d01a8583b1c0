//! One robust owner table: slots in shared memory that a live process claims, and that any process may reclaim
//! once the claimer has died, with a hook to clean up what the dead owner left behind.
//!
//! A slot's owner is one word, [`Owner`]: the pid and the start time of the claiming process packed together, so
//! claiming and releasing are one compare-and-swap each and a process killed at any instant leaves either a free
//! slot or a slot naming it (never a half-written identity). A slot whose owner is dead is reaped in two steps:
//! the reaper swaps the dead owner for itself with the [`REAPING`] bit set, runs the caller's cleanup, then frees
//! the slot. A reaper that dies mid-cleanup leaves `REAPING | its own identity`, which the next reaper takes over
//! in the same way, so cleanups are never lost and never run twice at once.
//!
//! Liveness is the crate's one check, [`process::alive`] ([`Owner::is_alive`]): a `/proc` read per slot, so `reap` belongs on slow paths
//! (a full table, a timed-out wait, a periodic sweep), never on every claim.

use crate::base::atomic::{AtomicU64, Ordering};
use crate::platform::process::{self, ProcessId, Start};
use crate::shm_struct;

/// Bits of an [`Owner`] word that hold the pid (Linux pids are below `PID_MAX_LIMIT` = 2^22).
pub const PID_BITS: u32 = 22;
/// Bits that hold the start time (clock ticks since boot: at 100 Hz, 41 bits last about 700 years).
pub const START_BITS: u32 = 41;
/// Set while a reaper (named by the rest of the word) cleans up after a dead owner.
pub const REAPING: u64 = 1 << 63;

const PID_MASK: u64 = (1 << PID_BITS) - 1;
const START_MASK: u64 = (1 << START_BITS) - 1;

/// A process identity in one word: pid in bits 0..22, the low 41 bits of its start time in bits 22..63. 0 is
/// nobody (no process has pid 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(pub u64);

impl Owner {
    /// Nobody: a free slot.
    pub const NONE: Owner = Owner(0);

    /// The identity of `id`.
    pub fn of(id: ProcessId) -> Owner {
        Owner((id.pid as u64 & PID_MASK) | ((id.start_time & START_MASK) << PID_BITS))
    }

    /// The calling process.
    pub fn me() -> Owner {
        Owner::of(process::current())
    }

    /// The pid.
    pub fn pid(self) -> u32 {
        (self.0 & PID_MASK) as u32
    }

    /// The low 41 bits of the start time.
    pub fn start_time_bits(self) -> u64 {
        (self.0 >> PID_BITS) & START_MASK
    }

    /// Whether the word marks a cleanup in progress.
    pub fn is_reaping(self) -> bool {
        self.0 & REAPING != 0
    }

    /// The same identity with [`REAPING`] set.
    pub fn reaping(self) -> Owner {
        Owner(self.0 | REAPING)
    }

    /// The identity without the [`REAPING`] bit.
    pub fn process(self) -> Owner {
        Owner(self.0 & !REAPING)
    }

    /// Whether the process this word names is alive ([`process::alive`] with the 41 recorded bits of the start
    /// time, so a reused pid is not mistaken for the owner). Nobody (0) and pid 0 are never alive. Reads `/proc`.
    pub fn is_alive(self) -> bool {
        process::alive(self.pid(), Start::Low { value: self.start_time_bits(), bits: START_BITS })
    }
}

/// A slot type with an owner word. `OwnerSlot` is the plain one; structures with more per-owner state embed an
/// owner word and implement this.
pub trait HasOwner: crate::segment::ShmSafe {
    /// The slot's owner word ([`Owner`]; 0 = free).
    fn owner(&self) -> &AtomicU64;
}

shm_struct! {
    /// A slot holding an owner and one word of the owner's data.
    pub struct OwnerSlot {
        /// [`Owner`] of the slot; 0 = free.
        pub owner: AtomicU64,
        /// The owner's data (what the table's user records per owner, e.g. a count); 0 when free.
        pub data: AtomicU64,
    }
}

impl HasOwner for OwnerSlot {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

/// A table of owner slots (a view; the slots live in a segment).
pub struct OwnerTable<'a, S: HasOwner> {
    slots: &'a [S],
}

/// Outcome of looking at one slot while reaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Free, or owned by a live process.
    Fine,
    /// The owner was dead; this process cleaned up and freed the slot.
    Reaped,
    /// Another live process is reaping it.
    Busy,
}

impl<'a, S: HasOwner> OwnerTable<'a, S> {
    /// The table over `slots`.
    pub fn new(slots: &'a [S]) -> Self {
        OwnerTable { slots }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slot `i`.
    pub fn slot(&self, i: usize) -> &'a S {
        &self.slots[i]
    }

    /// Claims a free slot for `who`, starting the search at `hint` (spread claimers to avoid contention);
    /// `None` if every slot is taken. One pass: bounded by the table size whatever the slots hold.
    pub fn claim(&self, who: Owner, hint: usize) -> Option<usize> {
        debug_assert!(who != Owner::NONE && !who.is_reaping());
        let n = self.slots.len();
        (0..n).map(|k| (hint + k) % n).find(|&i| {
            let w = self.slots[i].owner();
            w.load(Ordering::Relaxed) == 0 && w.compare_exchange(0, who.0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })
    }

    /// [`claim`](Self::claim), and when the table is full, [`reap`](Self::reap) dead owners (with `cleanup`) and
    /// try once more.
    pub fn claim_or_reap(
        &self,
        who: Owner,
        hint: usize,
        cleanup: impl FnMut(usize, &S, Owner) -> bool,
    ) -> Option<usize> {
        self.claim(who, hint).or_else(|| {
            self.reap(cleanup);
            self.claim(who, hint)
        })
    }

    /// The first slot owned by `who`.
    pub fn find(&self, who: Owner) -> Option<usize> {
        self.slots.iter().position(|s| s.owner().load(Ordering::Acquire) == who.0)
    }

    /// Frees slot `i` if `who` owns it; false if it does not (someone reaped it, or it was never ours).
    pub fn release(&self, i: usize, who: Owner) -> bool {
        self.slots[i].owner().compare_exchange(who.0, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// The owners of taken slots (including slots being reaped), in slot order.
    pub fn owners(&self) -> impl Iterator<Item = (usize, Owner)> + 'a {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s.owner().load(Ordering::Acquire) {
            0 => None,
            w => Some((i, Owner(w))),
        })
    }

    /// Looks at slot `i`: if its owner (or the reaper working on it) is dead, takes it over, runs
    /// `cleanup(i, slot, dead_owner)` and frees the slot. A cleanup that cannot finish now (it returns false, e.g.
    /// a list it must put things on is full) gives the slot back to the dead owner, to be reaped again later.
    pub fn reap_slot(&self, i: usize, cleanup: &mut impl FnMut(usize, &S, Owner) -> bool) -> Seen {
        let slot = &self.slots[i];
        let w = Owner(slot.owner().load(Ordering::Acquire));
        // This process is alive by definition (no `/proc` read for the slots of its own threads).
        if w == Owner::NONE || w.process() == Owner::me() || w.is_alive() {
            return if w.is_reaping() { Seen::Busy } else { Seen::Fine };
        }
        let me = Owner::me().reaping();
        if slot.owner().compare_exchange(w.0, me.0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Seen::Busy; // someone else took it (a reaper, or the slot was freed and reclaimed)
        }
        // The dead owner is the process whose state the slot describes; a dead reaper's word names the reaper,
        // and what it was cleaning up is still the slot's state, which `cleanup` redoes (it must be idempotent).
        if !cleanup(i, slot, w.process()) {
            slot.owner().store(w.0, Ordering::Release);
            return Seen::Busy;
        }
        slot.owner().store(0, Ordering::Release);
        Seen::Reaped
    }

    /// Reaps every slot whose owner died; returns how many. Reads `/proc` once per taken slot.
    pub fn reap(&self, mut cleanup: impl FnMut(usize, &S, Owner) -> bool) -> usize {
        (0..self.slots.len()).filter(|&i| self.reap_slot(i, &mut cleanup) == Seen::Reaped).count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<OwnerSlot> {
        (0..n).map(|_| OwnerSlot { owner: AtomicU64::new(0), data: AtomicU64::new(0) }).collect()
    }

    fn dead_owner() -> Owner {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = process::identity_of(c.id()).unwrap_or(ProcessId { pid: c.id(), start_time: 1 });
        c.wait().unwrap();
        Owner::of(id)
    }

    #[test]
    fn identity_packs_and_checks_liveness() {
        let me = Owner::me();
        let id = process::current();
        assert_eq!(me.pid(), id.pid);
        assert_eq!(me.start_time_bits(), id.start_time & START_MASK);
        assert!(me.is_alive() && me.reaping().is_alive());
        assert!(!Owner(me.0 + (1 << PID_BITS)).is_alive(), "another start time: a reused pid");
        assert!(!Owner::NONE.is_alive());
        assert!(!dead_owner().is_alive());
    }

    #[test]
    fn claim_find_release() {
        let slots = table(3);
        let t = OwnerTable::new(&slots);
        let me = Owner::me();
        let a = t.claim(me, 1).unwrap();
        assert_eq!(a, 1, "the search starts at the hint");
        assert_eq!(t.find(me), Some(1));
        let b = t.claim(me, 1).unwrap();
        let c = t.claim(me, 1).unwrap();
        assert_eq!((b, c), (2, 0));
        assert_eq!(t.claim(me, 0), None, "full");
        assert!(t.release(a, me) && !t.release(a, me), "a second release finds the slot free");
        assert_eq!(t.owners().count(), 2);
    }

    #[test]
    fn dead_owners_are_reaped_once_with_cleanup() {
        let slots = table(4);
        let t = OwnerTable::new(&slots);
        let dead = dead_owner();
        for (i, s) in slots.iter().take(3).enumerate() {
            s.owner.store(dead.0, Ordering::Relaxed);
            s.data.store(10 + i as u64, Ordering::Relaxed);
        }
        slots[3].owner.store(Owner::me().0, Ordering::Relaxed);
        // A reaper that died mid-cleanup is taken over too.
        slots[2].owner.store(dead.reaping().0, Ordering::Relaxed);
        let mut cleaned = Vec::new();
        let n = t.reap(|i, s, who| {
            assert_eq!(who, dead);
            assert!(Owner(s.owner.load(Ordering::Relaxed)).is_reaping(), "held while cleaning");
            cleaned.push((i, s.data.swap(0, Ordering::Relaxed)));
            true
        });
        assert_eq!(n, 3);
        assert_eq!(cleaned, vec![(0, 10), (1, 11), (2, 12)]);
        assert_eq!(t.owners().collect::<Vec<_>>(), vec![(3, Owner::me())], "the live owner stays");
        assert_eq!(t.reap(|_, _, _| panic!("nothing left")), 0);
    }

    #[test]
    fn a_full_table_reaps_before_failing() {
        let slots = table(2);
        let t = OwnerTable::new(&slots);
        let dead = dead_owner();
        slots[0].owner.store(Owner::me().0, Ordering::Relaxed);
        slots[1].owner.store(dead.0, Ordering::Relaxed);
        let mut reaped = 0;
        assert_eq!(
            t.claim_or_reap(Owner::me(), 0, |_, _, _| {
                reaped += 1;
                true
            }),
            Some(1)
        );
        assert_eq!(reaped, 1);
        assert_eq!(t.claim_or_reap(Owner::me(), 0, |_, _, _| panic!("all alive")), None);
    }

    #[test]
    fn a_live_reaper_is_left_alone() {
        let slots = table(1);
        let t = OwnerTable::new(&slots);
        slots[0].owner.store(Owner::me().reaping().0, Ordering::Relaxed);
        assert_eq!(t.reap_slot(0, &mut |_, _, _| panic!("busy")), Seen::Busy);
    }

    #[test]
    fn an_unfinished_cleanup_gives_the_slot_back_to_the_dead_owner() {
        let slots = table(1);
        let t = OwnerTable::new(&slots);
        let dead = dead_owner();
        slots[0].owner.store(dead.0, Ordering::Relaxed);
        assert_eq!(t.reap_slot(0, &mut |_, _, _| false), Seen::Busy);
        assert_eq!(slots[0].owner.load(Ordering::Relaxed), dead.0, "reaped again later");
        assert_eq!(t.reap(|_, _, _| true), 1);
    }

    #[test]
    fn eleven_hundred_owners_claim_and_the_dead_ones_are_reaped() {
        // A table as large as a queue's participant table, with more claimers than slots: 1,100 simulated
        // processes, every third one dead. Claims never hand out a slot twice; reaping frees exactly the dead.
        const N: usize = 1024;
        let slots = table(N);
        let t = OwnerTable::new(&slots);
        let me = Owner::me();
        let dead = dead_owner();
        let mut held = std::collections::HashSet::new();
        for k in 0..N {
            let who = if k % 3 == 0 { dead } else { me };
            let i = t.claim(who, k * 7).expect("room");
            assert!(held.insert(i), "slot {i} handed out twice");
            slots[i].data.store(k as u64, Ordering::Relaxed);
        }
        assert_eq!(t.claim(me, 0), None, "full at {N}");
        let dead_count = (0..N).filter(|k| k % 3 == 0).count();
        let mut cleaned = 0;
        // The 1,025th claimer finds the table full, reaps the dead and gets a slot.
        assert!(t
            .claim_or_reap(me, 0, |_, _, _| {
                cleaned += 1;
                true
            })
            .is_some());
        assert_eq!(cleaned, dead_count);
        for _ in 1..(1100 - N) {
            assert!(t.claim(me, 0).is_some());
        }
        assert_eq!(t.owners().filter(|&(_, o)| o == dead).count(), 0);
        assert_eq!(t.owners().count(), N - dead_count + (1100 - N));
    }
}
