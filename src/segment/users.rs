//! The lifetime scheme: which live processes use a segment.
//!
//! Each process that maps a segment holds one slot in the header's user table (pid + start time). Leaving
//! clears the slot; the process that leaves last, finding no live user in the table, unlinks the name. A process
//! that died without leaving (SIGKILL, `os._exit`) is recognised as dead by its (pid, start time) and its slot is
//! cleared by whoever looks next, so dead processes never keep a segment alive.
//!
//! The table is guarded by `users_lock`, a word holding the holder's pid; a holder that died is detected and
//! the lock taken over. The critical sections only write whole slots, so a takeover sees at worst one
//! half-written slot, whose start time will not match a live process and which is therefore cleared as dead.

use super::header::{SegmentHeader, UserSlot, STATE_UNLINKED, USER_ON_BEHALF};
use crate::base::atomic::Ordering;
use crate::error::corrupt;
use crate::platform::limits;
use crate::platform::process::{self, ProcessId};
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
                    if holder != me && !process::pid_alive(holder) {
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

fn slot_id(slot: &UserSlot) -> ProcessId {
    ProcessId { pid: slot.pid.load(Ordering::Relaxed), start_time: slot.start_time.load(Ordering::Relaxed) }
}

fn clear(slot: &UserSlot) {
    slot.pid.store(0, Ordering::Relaxed);
    slot.start_time.store(0, Ordering::Relaxed);
    slot.flags.store(0, Ordering::Relaxed);
}

/// Clears the slots of dead processes; returns how many live ones remain.
fn reap(table: &[UserSlot]) -> usize {
    let mut live = 0;
    for slot in table {
        let id = slot_id(slot);
        if id.pid == 0 {
            continue;
        }
        // A start time of 0 is a half-written slot (its writer died mid-attach): max(1) makes it mismatch.
        if process::is_alive(ProcessId { pid: id.pid, start_time: id.start_time.max(1) }) {
            live += 1;
        } else {
            clear(slot);
        }
    }
    live
}

/// Registers `me` in a free slot and returns its index. Fails with [`Error::NotFound`] if the segment was
/// already unlinked, [`Error::Full`] if every slot holds a live process, and [`Error::Corrupt`] if the table's
/// lock stays held (see [`lock`]).
pub fn attach(hdr: &SegmentHeader, table: &[UserSlot], me: ProcessId) -> Result<u32> {
    let _g = lock(hdr, me.pid)?;
    if hdr.state.load(Ordering::Acquire) == STATE_UNLINKED {
        return Err(Error::NotFound(String::new()));
    }
    let free = |t: &[UserSlot]| t.iter().position(|s| s.pid.load(Ordering::Relaxed) == 0);
    let idx = match free(table) {
        Some(i) => i,
        None => {
            reap(table);
            free(table).ok_or_else(|| {
                Error::Full(format!(
                    "{} live processes already use this segment, the most one segment can track",
                    table.len()
                ))
            })?
        }
    };
    let slot = &table[idx];
    slot.start_time.store(me.start_time, Ordering::Relaxed);
    slot.pid.store(me.pid, Ordering::Relaxed);
    hdr.attach_count.fetch_add(1, Ordering::Relaxed);
    Ok(idx as u32)
}

/// Clears slot `slot` (if it still belongs to `me`) and reaps dead users. Returns true when no live user is
/// left: the state was then switched to unlinked under the lock (so no process can attach any more) and the
/// caller must `shm_unlink` the name. Fails only if the table's lock stays held (see [`lock`]): the slot then
/// stays, and is reaped as dead once this process has exited.
pub fn detach(hdr: &SegmentHeader, table: &[UserSlot], slot: u32, me: ProcessId) -> Result<bool> {
    let _g = lock(hdr, me.pid)?;
    if let Some(s) = table.get(slot as usize) {
        if slot_id(s) == me {
            clear(s);
        }
    }
    // Registrations made on our behalf by another process end with ours.
    for s in table {
        if slot_id(s) == me && s.flags.load(Ordering::Relaxed) & USER_ON_BEHALF != 0 {
            clear(s);
        }
    }
    Ok(reap(table) == 0 && mark_unlinked(hdr))
}

/// Registers other live processes as users (flagged [`USER_ON_BEHALF`]) unless they already are: for a segment
/// that belongs to a structure those processes use but have not mapped yet (a dict's extension segment), so
/// that it outlives its creator while they live. A process clears such a slot when it detaches itself; a dead
/// one is reaped like any other.
pub fn attach_on_behalf(hdr: &SegmentHeader, table: &[UserSlot], ids: &[ProcessId], me: ProcessId) -> Result<()> {
    let _g = lock(hdr, me.pid)?;
    if hdr.state.load(Ordering::Acquire) == STATE_UNLINKED {
        return Ok(());
    }
    for &id in ids {
        if id.pid == 0 || table.iter().any(|s| slot_id(s) == id) || !process::is_alive(id) {
            continue;
        }
        let Some(slot) = table.iter().find(|s| s.pid.load(Ordering::Relaxed) == 0) else { return Ok(()) };
        slot.start_time.store(id.start_time, Ordering::Relaxed);
        slot.flags.store(USER_ON_BEHALF, Ordering::Relaxed);
        slot.pid.store(id.pid, Ordering::Relaxed);
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
    if reap(table) > 0 {
        return Ok(false);
    }
    mark_unlinked(hdr);
    Ok(true)
}

/// The live users, after reaping dead ones.
pub fn live_users(hdr: &SegmentHeader, table: &[UserSlot]) -> Result<Vec<ProcessId>> {
    let _g = lock(hdr, process::current().pid)?;
    reap(table);
    Ok(table.iter().map(slot_id).filter(|id| id.pid != 0).collect())
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
}
