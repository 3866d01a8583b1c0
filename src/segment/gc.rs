//! Listing pyconc segments and collecting those whose users all died (`python -m pyconc ls` / `gc`).

use super::header::Kind;
use super::shm::{is_segment_name, Segment, SHM_DIR};
use crate::platform::process::ProcessId;
use crate::Error;
use std::time::{Duration, SystemTime};

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
}

/// Names of all pyconc segments in `/dev/shm`.
pub fn segment_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(SHM_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_segment_name(n))
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

/// Describes every pyconc segment (dead users are cleared from the tables as a side effect).
pub fn list() -> Vec<SegmentInfo> {
    segment_names()
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
                    SegmentInfo {
                        kind: Some(seg.info().kind),
                        size,
                        creator_pid: seg.creator_pid(),
                        users,
                        problem,
                        name,
                    }
                }
                Err(e) => {
                    SegmentInfo { kind: None, size, creator_pid: 0, users: vec![], problem: Some(e.to_string()), name }
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

/// Removes every pyconc segment whose users are all dead, and those whose header says they were unlinked
/// already (their unlinker died before removing the name). Segments whose header is invalid are removed only if
/// their file is older than `grace` (a creator may be initialising one right now). A segment whose user table
/// stays locked by a live process is kept and listed in [`GcReport::corrupt`]; the pass goes on.
pub fn collect(grace: Duration) -> GcReport {
    let mut report = GcReport::default();
    for name in segment_names() {
        match Segment::inspect(&name) {
            Ok(seg) => match seg.collect_if_unused() {
                Ok(true) => report.removed.push(name),
                Ok(false) => report.kept += 1,
                Err(e) => {
                    report.kept += 1;
                    report.corrupt.push((name, e.to_string()));
                }
            },
            Err(Error::NotFound(_)) => {}
            Err(_) => {
                let (_, mtime) = file_facts(&name);
                let old = mtime.and_then(|t| t.elapsed().ok()).is_some_and(|age| age > grace);
                if old && nix::sys::mman::shm_unlink(format!("/{name}").as_str()).is_ok() {
                    report.removed_invalid.push(name);
                } else {
                    report.kept += 1;
                }
            }
        }
    }
    report
}
