//! Listing pyconc segments and collecting those whose users all died (`python -m pyconc ls` / `gc`), and the
//! automatic reaping that makes `gc` unnecessary after a crash.
//!
//! Reaping applies `gc`'s rule (every user dead by its (pid, start time), or an invalid header older than the
//! grace period) to the current namespace, within a time budget, when pyconc is imported and at most every
//! [`REAP_INTERVAL`] when a process creates a segment or maps one it did not have. A segment with a live user, or
//! one being created (its header is written before its name can be handed out, and the creator is its first
//! user), is never touched.

use super::header::{Kind, LAYOUT_VERSION, MAGIC};
use super::namespace;
use super::shm::{is_segment_name, Segment, SHM_DIR};
use crate::base::atomic::local::{AtomicU64, Ordering};
use crate::platform::process::ProcessId;
use crate::Error;
use std::time::{Duration, Instant, SystemTime};

/// Which segments a listing or collection looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The current namespace (see [`namespace`]).
    Namespace,
    /// Every pyconc segment on the machine.
    All,
}

/// Grace period for segments whose header is invalid: a creator may be writing it right now.
pub const INVALID_GRACE: Duration = Duration::from_secs(60);
/// Least time between two automatic reaping passes of one process.
pub const REAP_INTERVAL: Duration = Duration::from_secs(2);
/// Time budget of an automatic pass at segment creation (a pass inspects a segment in about 10-20 µs).
pub const REAP_BUDGET: Duration = Duration::from_millis(2);

/// One row of `pyconc ls`.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Segment name.
    pub name: String,
    /// Structure kind, `None` when the header is invalid.
    pub kind: Option<Kind>,
    /// File size in bytes.
    pub size: u64,
    /// Creator pid (0 when the header is invalid).
    pub creator_pid: u32,
    /// Live users.
    pub users: Vec<ProcessId>,
    /// Why the header is invalid, if it is.
    pub problem: Option<String>,
    /// For an arena: how many objects live in it (after releasing what dead processes held).
    pub objects: Option<u64>,
}

/// Names of the pyconc segments in `/dev/shm` in `scope`, sorted.
pub fn segment_names(scope: Scope) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(SHM_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_segment_name(n) && (scope == Scope::All || namespace::is_current(n)))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn file_facts(name: &str) -> (u64, Option<SystemTime>) {
    match std::fs::metadata(format!("{SHM_DIR}/{name}")) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (0, None),
    }
}

/// Describes the pyconc segments in `scope` (dead users are cleared from the tables as a side effect).
pub fn list(scope: Scope) -> Vec<SegmentInfo> {
    segment_names(scope)
        .into_iter()
        .map(|name| {
            let (size, _) = file_facts(&name);
            match Segment::inspect(&name) {
                Ok(seg) => {
                    let (users, problem) = match seg.live_users() {
                        Ok(users) if seg.is_unlinked() => {
                            (users, Some("marked unlinked, but its file remains (gc removes it)".to_string()))
                        }
                        Ok(users) => (users, None),
                        // The user table's lock stays held: report it and go on with the other segments.
                        Err(e) => (vec![], Some(e.to_string())),
                    };
                    let objects =
                        (seg.info().kind == Kind::Arena).then(|| super::arena::inspect_live(&seg).ok()).flatten();
                    SegmentInfo {
                        kind: Some(seg.info().kind),
                        size,
                        creator_pid: seg.creator_pid(),
                        users,
                        problem,
                        objects,
                        name,
                    }
                }
                Err(e) => {
                    let problem = Some(e.to_string());
                    SegmentInfo { kind: None, size, creator_pid: 0, users: vec![], problem, objects: None, name }
                }
            }
        })
        .collect()
}

/// Result of a collection pass.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// Segments removed because every user had died.
    pub removed: Vec<String>,
    /// Segments with an invalid header older than the grace period, removed (creator died while creating).
    pub removed_invalid: Vec<String>,
    /// Segments kept because a live process uses them.
    pub kept: usize,
    /// Segments kept because their user table could not be read (its lock stays held), with the reason.
    pub corrupt: Vec<(String, String)>,
}

/// Removes every pyconc segment in `scope` whose users are all dead, and those whose header says they were
/// unlinked already (their unlinker died before removing the name). Segments whose header is invalid are removed
/// only if their file is older than `grace` (a creator may be initialising one right now). A segment whose user
/// table stays locked by a live process is kept and listed in [`GcReport::corrupt`]; the pass goes on.
pub fn collect(grace: Duration, scope: Scope) -> GcReport {
    let mut report = GcReport::default();
    for name in segment_names(scope) {
        collect_one(&name, grace, &mut report);
    }
    report
}

fn collect_one(name: &str, grace: Duration, report: &mut GcReport) {
    match Segment::inspect(name) {
        Ok(seg) => match seg.collect_if_unused() {
            Ok(true) => report.removed.push(name.to_string()),
            Ok(false) => {
                // An arena in use: release the objects its dead processes held (freeing those nobody else holds).
                if seg.info().kind == Kind::Arena {
                    let _ = super::arena::inspect_live(&seg);
                }
                report.kept += 1
            }
            Err(e) => {
                report.kept += 1;
                report.corrupt.push((name.to_string(), e.to_string()));
            }
        },
        Err(Error::NotFound(_)) => {}
        Err(_) => {
            // Made by a pyconc build with another header layout, which may still be running: this build cannot
            // read its user table, so it leaves the segment to that build (or to removal by hand).
            if let Some(v) = foreign_layout(name) {
                report.kept += 1;
                let why = format!("header layout version {v}, this build reads {LAYOUT_VERSION}: left to its pyconc");
                report.corrupt.push((name.to_string(), why));
                return;
            }
            let (_, mtime) = file_facts(name);
            let old = mtime.and_then(|t| t.elapsed().ok()).is_some_and(|age| age > grace);
            if old && nix::sys::mman::shm_unlink(format!("/{name}").as_str()).is_ok() {
                report.removed_invalid.push(name.to_string());
            } else {
                report.kept += 1;
            }
        }
    }
}

/// The header layout version of segment `name` if its header carries pyconc's magic and a version other than
/// this build's (every version keeps `magic` and `layout_version` at offsets 0 and 8).
fn foreign_layout(name: &str) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("{SHM_DIR}/{name}")).ok()?;
    let mut b = [0u8; 12];
    f.read_exact_at(&mut b, 0).ok()?;
    let magic = u64::from_le_bytes(b[..8].try_into().ok()?);
    let version = u32::from_le_bytes(b[8..].try_into().ok()?);
    (magic == MAGIC && version != LAYOUT_VERSION).then_some(version)
}

/// Where the next bounded pass starts (an index into the sorted names), so that passes cut short by their
/// budget still visit every segment in turn.
static REAP_CURSOR: AtomicU64 = AtomicU64::new(0);
/// Milliseconds after [`epoch`] of this process's last automatic pass (0: none yet).
static LAST_REAP_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Segments a pass visits whatever its time budget.
const REAP_MIN: u64 = 32;

/// Whether automatic reaping is on: `PYCONC_REAP=0` turns it off (to look at what a crashed program left with
/// `python -m pyconc ls` before anything removes it; `gc` still works).
pub fn reaping_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("PYCONC_REAP").map_or(true, |v| v != "0"))
}

/// One bounded reaping pass over the current namespace: collects dead segments (as [`collect`] does) until
/// `budget` has passed (after at least 32), starting where the previous pass stopped. Returns what it removed;
/// nothing if [`reaping_enabled`] is false.
pub fn reap(budget: Duration) -> GcReport {
    let start = Instant::now();
    LAST_REAP_MS.store(epoch().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    let mut report = GcReport::default();
    if !reaping_enabled() {
        return report;
    }
    let names = segment_names(Scope::Namespace);
    if names.is_empty() {
        return report;
    }
    let n = names.len() as u64;
    let first = REAP_CURSOR.load(Ordering::Relaxed) % n;
    let mut visited = 0;
    while visited < n {
        let name = &names[((first + visited) % n) as usize];
        visited += 1;
        collect_one(name, INVALID_GRACE, &mut report);
        // At least REAP_MIN per pass, so that a preempted process (a loaded machine) still makes progress.
        if visited >= REAP_MIN && start.elapsed() >= budget {
            break;
        }
    }
    REAP_CURSOR.store(first + visited, Ordering::Relaxed);
    report
}

/// A [`reap`] pass with a small budget if this process has not run one for [`REAP_INTERVAL`]. Called when a
/// segment is created and when a process maps a segment it did not have, so a running pyconc program (also one
/// that only attaches to objects it is sent) removes what killed processes left within a few seconds.
pub fn reap_if_due() {
    let now = epoch().elapsed().as_millis() as u64 + 1;
    let last = LAST_REAP_MS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < REAP_INTERVAL.as_millis() as u64 {
        return;
    }
    if LAST_REAP_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        reap(REAP_BUDGET);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn set_layout_version(name: &str, v: u32) {
        let f = std::fs::OpenOptions::new().write(true).open(format!("{SHM_DIR}/{name}")).unwrap();
        f.write_all_at(&v.to_le_bytes(), 8).unwrap();
    }

    #[test]
    fn a_segment_of_another_layout_version_is_left_alone() {
        // Another pyconc build (older or newer) may be using it: its user table is not ours to read, and its
        // header is not "invalid", so not even a grace period of 0 removes it.
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        let name = seg.name().to_string();
        set_layout_version(&name, LAYOUT_VERSION + 1);
        let mut report = GcReport::default();
        collect_one(&name, Duration::ZERO, &mut report);
        assert!(report.removed.is_empty() && report.removed_invalid.is_empty(), "{report:?}");
        assert_eq!(report.kept, 1);
        assert!(report.corrupt[0].1.contains(&format!("layout version {}", LAYOUT_VERSION + 1)), "{report:?}");
        assert!(std::path::Path::new(SHM_DIR).join(&name).exists());
        set_layout_version(&name, LAYOUT_VERSION);
        seg.unlink().unwrap();
    }
}
