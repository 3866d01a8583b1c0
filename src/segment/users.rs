//! The lifetime scheme: which live processes use a segment.
//!
//! Each process that maps a segment holds one slot in the header's user table, a
//! [`segment::owners`](super::owners) table: the slot's owner word is the process's identity (pid and start
//! time), written by one compare-and-swap, so a process killed at any instant leaves a free slot or a slot naming
//! it. Leaving frees the slot; the process that leaves last, finding no live user in the table, unlinks the name.
//! A process that died without leaving (SIGKILL, `os._exit`) is recognised as dead by its owner word and its slot
//! is reaped by whoever looks next, so dead processes never keep a segment alive.
//!
//! The table is guarded by `users_lock`, a word holding the holder's pid, which makes "no live user is left, so
//! the segment is unlinked" one decision that no attach can slip into; a holder that died is detected and the
//! lock taken over (the critical sections only swap whole owner words, so a takeover finds a consistent table).

use super::header::{SegmentHeader, UserSlot, STATE_UNLINKED, USER_ON_BEHALF};
use super::owners::{Owner, OwnerTable};
use crate::base::atomic::Ordering;
use crate::error::corrupt;
use crate::platform::limits;
use crate::platform::process::{self, ProcessId, Start};
use crate::{Error, Result};
use std::time::{Duration, Instant};

struct UsersGuard<'a> {
    hdr: &'a SegmentHeader,
}

impl Drop for UsersGuard<'_> {
    fn drop(&mut self) {
        self.hdr.users_lock.store(0, Ordering::Release);
    }
}

/// Takes the user-table lock, waiting at most [`limits::lock_timeout`] for a live holder (the critical sections
/// last microseconds, so a holder that keeps it longer is stopped, or the word is corrupt).
fn lock(hdr: &SegmentHeader, me: u32) -> Result<UsersGuard<'_>> {
    lock_within(hdr, me, limits::lock_timeout())
}

fn lock_within(hdr: &SegmentHeader, me: u32, patience: Duration) -> Result<UsersGuard<'_>> {
    let backoff = crossbeam_utils::Backoff::new();
    let start = Instant::now();
    let mut last_check = start;
    loop {
        match hdr.users_lock.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(UsersGuard { hdr }),
            Err(holder) => {
                if !backoff.is_completed() {
                    backoff.snooze();
                    continue;
                }
                std::thread::sleep(Duration::from_micros(50));
                if holder != 0 && last_check.elapsed() > Duration::from_millis(5) {
                    last_check = Instant::now();
                    // The critical sections last microseconds; a holder that is gone died inside one.
                    if holder != me && !process::alive(holder, Start::Any) {
                        let _ = hdr.users_lock.compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed);
                        continue;
                    }
                    if start.elapsed() >= patience {
                        return Err(corrupt!(
                            "its user-table lock has been held by live process {holder} for more than {:.1} s (a \
                             stopped process, or a corrupt segment); set {} to wait longer",
                            patience.as_secs_f64(),
                            limits::LOCK_TIMEOUT_ENV
                        ));
                    }
                }
            }
        }
    }
}

/// The identity an owner word names (the start time as far as the word keeps it: 41 bits, all of it in practice).
fn id_of(o: Owner) -> ProcessId {
    ProcessId { pid: o.pid(), start_time: o.start_time_bits() }
}

/// Frees slot `s` if `who` owns it (flags first: a free slot has none).
fn release(t: &OwnerTable<'_, UserSlot>, i: usize, who: Owner) {
    if t.slot(i).owner.load(Ordering::Relaxed) == who.0 {
        t.slot(i).flags.store(0, Ordering::Relaxed);
        t.release(i, who);
    }
}

/// Reaps the slots of dead processes; returns how many live ones remain (slots another live process is reaping
/// count as live: it holds no lock here, so that only happens with a corrupt word, which the next pass reaps).
fn reap(t: &OwnerTable<'_, UserSlot>) -> usize {
    t.reap(|_, s, _| {
        s.flags.store(0, Ordering::Relaxed);
        true
    });
    t.owners().count()
}

/// Registers `me` in a free slot and returns its index. Fails with [`Error::NotFound`] if the segment was
/// already unlinked, [`Error::Full`] if every slot holds a live process, and [`Error::Corrupt`] if the table's
/// lock stays held (see [`lock`]).
pub fn attach(hdr: &SegmentHeader, table: &[UserSlot], me: ProcessId) -> Result<u32> {
    let _g = lock(hdr, me.pid)?;
    if hdr.state.load(Ordering::Acquire) == STATE_UNLINKED {
        return Err(Error::NotFound(String::new()));
    }
    let t = OwnerTable::new(table);
    let idx = t.claim(Owner::of(me), 0).or_else(|| {
        reap(&t);
        t.claim(Owner::of(me), 0)
    });
    let idx = idx.ok_or_else(|| {
        Error::Full(format!("{} live processes already use this segment, the most one segment can track", table.len()))
    })?;
    hdr.attach_count.fetch_add(1, Ordering::Relaxed);
    Ok(idx as u32)
}

/// Frees slot `slot` (if it still belongs to `me`) and reaps dead users. Returns true when no live user is
/// left: the state was then switched to unlinked under the lock (so no process can attach any more) and the
/// caller must `shm_unlink` the name. Fails only if the table's lock stays held (see [`lock`]): the slot then
/// stays, and is reaped as dead once this process has exited.
pub fn detach(hdr: &SegmentHeader, table: &[UserSlot], slot: u32, me: ProcessId) -> Result<bool> {
    let _g = lock(hdr, me.pid)?;
    let t = OwnerTable::new(table);
    let who = Owner::of(me);
    if (slot as usize) < t.len() {
        release(&t, slot as usize, who);
    }
    // Registrations made on our behalf by another process end with ours.
    for (i, o) in t.owners().collect::<Vec<_>>() {
        if o == who && t.slot(i).flags.load(Ordering::Relaxed) & USER_ON_BEHALF != 0 {
            release(&t, i, who);
        }
    }
    Ok(reap(&t) == 0 && mark_unlinked(hdr))
}

/// Registers other live processes as users (flagged [`USER_ON_BEHALF`]) unless they already are: for a segment
/// that belongs to a structure those processes use but have not mapped yet (a dict's extension segment), so
/// that it outlives its creator while they live. A process frees such a slot when it detaches itself; a dead
/// one is reaped like any other. A full table registers fewer (they then keep the segment alive once they map it).
pub fn attach_on_behalf(hdr: &SegmentHeader, table: &[UserSlot], ids: &[ProcessId], me: ProcessId) -> Result<()> {
    let _g = lock(hdr, me.pid)?;
    if hdr.state.load(Ordering::Acquire) == STATE_UNLINKED {
        return Ok(());
    }
    let t = OwnerTable::new(table);
    for &id in ids {
        let who = Owner::of(id);
        if id.pid == 0 || t.find(who).is_some() || !who.is_alive() {
            continue;
        }
        // Under the lock nobody else claims or frees slots, so the flag written right after the claim is seen
        // by every later reader of the table; a death in between leaves a plain registration of `id`, reaped
        // when `id` dies.
        let Some(i) = t.claim(who, 0) else { return Ok(()) };
        t.slot(i).flags.store(USER_ON_BEHALF, Ordering::Relaxed);
    }
    Ok(())
}

/// Switches the state to unlinked; true if this call did it (and so must `shm_unlink` the name).
pub fn mark_unlinked(hdr: &SegmentHeader) -> bool {
    hdr.state.swap(STATE_UNLINKED, Ordering::AcqRel) != STATE_UNLINKED
}

/// Reaps dead users; if none is alive, marks the segment unlinked and returns true (the caller must
/// `shm_unlink` the name). Also true for a segment already marked unlinked: its name should be gone, and is
/// still there only because the process that marked it died before removing it. Used by `gc`.
pub fn reap_all_dead(hdr: &SegmentHeader, table: &[UserSlot]) -> Result<bool> {
    if hdr.state.load(Ordering::Acquire) == STATE_UNLINKED {
        return Ok(true);
    }
    let _g = lock(hdr, process::current().pid)?;
    if reap(&OwnerTable::new(table)) > 0 {
        return Ok(false);
    }
    mark_unlinked(hdr);
    Ok(true)
}

/// The live users, after reaping dead ones.
pub fn live_users(hdr: &SegmentHeader, table: &[UserSlot]) -> Result<Vec<ProcessId>> {
    let _g = lock(hdr, process::current().pid)?;
    let t = OwnerTable::new(table);
    reap(&t);
    Ok(t.owners().map(|(_, o)| id_of(o.process())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::header::USER_CAPACITY;

    /// A header and table in local memory (all zero: unlocked, empty).
    fn fresh() -> (Box<SegmentHeader>, Vec<UserSlot>) {
        // SAFETY: both types are ShmSafe: every bit pattern, zero included, is valid.
        let hdr: Box<SegmentHeader> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as above.
        let table = (0..USER_CAPACITY).map(|_| unsafe { std::mem::zeroed::<UserSlot>() }).collect();
        (hdr, table)
    }

    #[test]
    fn a_live_holder_that_never_lets_go_is_reported_not_waited_on() {
        let (hdr, _) = fresh();
        let other = process::identity_of(std::os::unix::process::parent_id()).unwrap();
        hdr.users_lock.store(other.pid, Ordering::Relaxed);
        let t = Instant::now();
        let err = lock_within(&hdr, process::current().pid, Duration::from_millis(100)).err().unwrap();
        assert!(matches!(&err, Error::Corrupt(m) if m.contains(&other.pid.to_string())), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(hdr.users_lock.load(Ordering::Relaxed), other.pid, "a live holder is not robbed");
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let (hdr, table) = fresh();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        hdr.users_lock.store(dead, Ordering::Relaxed);
        let me = process::current();
        assert_eq!(attach(&hdr, &table, me).unwrap(), 0);
        assert_eq!(hdr.users_lock.load(Ordering::Relaxed), 0);
        assert!(detach(&hdr, &table, 0, me).unwrap(), "last user");
    }

    #[test]
    fn gc_removes_a_segment_marked_unlinked_even_with_live_users() {
        let (hdr, table) = fresh();
        let me = process::current();
        attach(&hdr, &table, me).unwrap();
        assert!(!reap_all_dead(&hdr, &table).unwrap(), "in use");
        assert!(mark_unlinked(&hdr));
        // The process that marked it died before removing the name: nobody can attach any more, so gc removes
        // it (live users keep their mappings).
        assert!(reap_all_dead(&hdr, &table).unwrap());
        assert!(matches!(attach(&hdr, &table, me), Err(Error::NotFound(_))));
    }

    fn dead_process() -> ProcessId {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = process::identity_of(c.id()).unwrap_or(ProcessId { pid: c.id(), start_time: 1 });
        c.wait().unwrap();
        id
    }

    #[test]
    fn a_full_table_reaps_the_dead_and_a_full_table_of_live_users_is_an_error() {
        let (hdr, table) = fresh();
        let me = process::current();
        let parent = process::identity_of(std::os::unix::process::parent_id()).unwrap();
        let dead = dead_process();
        for (i, s) in table.iter().enumerate() {
            s.owner.store(Owner::of(if i % 2 == 0 { dead } else { parent }).0, Ordering::Relaxed);
        }
        // Full: the attach reaps the dead (every second slot) and takes the first one freed.
        assert_eq!(attach(&hdr, &table, me).unwrap(), 0);
        assert_eq!(table.iter().filter(|s| s.owner.load(Ordering::Relaxed) == 0).count(), table.len() / 2 - 1);
        let users = live_users(&hdr, &table).unwrap();
        assert_eq!(users.len(), table.len() / 2 + 1);
        assert!(users.iter().all(|u| *u == me || *u == parent), "{users:?}");
        // Every slot held by a live process: an error naming the limit, not a wrong slot.
        for s in &table {
            if s.owner.load(Ordering::Relaxed) == 0 {
                s.owner.store(Owner::of(parent).0, Ordering::Relaxed);
            }
        }
        let err = attach(&hdr, &table, me).unwrap_err();
        assert!(matches!(&err, Error::Full(m) if m.contains("224")), "{err}");
        assert_eq!(table.iter().filter(|s| s.owner.load(Ordering::Relaxed) == Owner::of(me).0).count(), 1);
        // Leaving is not the last: the other live users keep the segment.
        assert!(!detach(&hdr, &table, 0, me).unwrap());
        assert_eq!(table[0].owner.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn registrations_on_behalf_end_with_the_process_and_dead_ones_are_skipped() {
        let (hdr, table) = fresh();
        let me = process::current();
        let parent = process::identity_of(std::os::unix::process::parent_id()).unwrap();
        attach(&hdr, &table, parent).unwrap();
        attach_on_behalf(&hdr, &table, &[me, parent, dead_process()], parent).unwrap();
        assert_eq!(live_users(&hdr, &table).unwrap(), vec![parent, me], "once each; the dead one not at all");
        assert_eq!(table[1].flags.load(Ordering::Relaxed), USER_ON_BEHALF);
        let mine = attach(&hdr, &table, me).unwrap();
        assert!(!detach(&hdr, &table, mine, me).unwrap());
        assert_eq!(live_users(&hdr, &table).unwrap(), vec![parent], "our own and the on-behalf slot are gone");
        assert!(table.iter().all(|s| s.flags.load(Ordering::Relaxed) == 0), "a free slot has no flags");
        assert!(detach(&hdr, &table, 0, parent).unwrap(), "the last user");
    }

    #[test]
    fn corrupt_owner_words_count_as_dead() {
        let (hdr, table) = fresh();
        let me = process::current();
        // A bare pid (no start time), all ones, a reaping word naming pid 0: none is a live identity.
        table[0].owner.store(u64::from(me.pid), Ordering::Relaxed);
        table[1].owner.store(u64::MAX, Ordering::Relaxed);
        table[2].owner.store(Owner::NONE.reaping().0 | 1 << 41, Ordering::Relaxed);
        assert_eq!(live_users(&hdr, &table).unwrap(), vec![]);
        assert!(reap_all_dead(&hdr, &table).unwrap(), "no live user: gc removes it");
    }
}
