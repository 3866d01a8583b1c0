//! Checks the `#[repr(C)]` structs that live in shared memory against their documents in `shm-layouts/`.
//!
//! Each document has sections `## struct NAME` with a `size: N` line, a `version: V` line and a field table
//! `| field | offset | size | meaning |`. A struct whose size, field offsets, field sizes or version differ from
//! its document fails here, so a layout cannot change without its document (and version) changing too.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

#[derive(Debug, PartialEq)]
struct Layout {
    size: usize,
    version: u32,
    /// (name, offset, size) in offset order.
    fields: Vec<(String, usize, usize)>,
}

/// Builds the expected layout of a Rust struct; field sizes are the gaps between consecutive offsets (the last
/// one runs to the end of the struct), so every field of the struct must be listed, in order.
macro_rules! rust_layout {
    ($ty:ty, $version:expr, [$($field:ident),* $(,)?]) => {{
        let offsets: Vec<(String, usize)> = vec![$((stringify!($field).to_string(), offset_of!($ty, $field))),*];
        let size = size_of::<$ty>();
        let mut fields = Vec::new();
        for (i, (name, off)) in offsets.iter().enumerate() {
            let end = offsets.get(i + 1).map(|(_, o)| *o).unwrap_or(size);
            fields.push((name.clone(), *off, end - off));
        }
        Layout { size, version: $version, fields }
    }};
}

fn parse_doc(file: &str) -> BTreeMap<String, Layout> {
    let path = format!("{}/shm-layouts/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Layout)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("## struct ") {
            if let Some((n, l)) = current.take() {
                out.insert(n, l);
            }
            current = Some((name.trim().to_string(), Layout { size: 0, version: 0, fields: vec![] }));
            continue;
        }
        if line.starts_with("## ") {
            if let Some((n, l)) = current.take() {
                out.insert(n, l);
            }
            continue;
        }
        let Some((_, layout)) = current.as_mut() else {
            continue;
        };
        if let Some(v) = line.strip_prefix("size:") {
            layout.size = v.trim().parse().unwrap_or_else(|_| panic!("{file}: bad size line {line:?}"));
        } else if let Some(v) = line.strip_prefix("version:") {
            let num = v.split_whitespace().next().unwrap_or("");
            layout.version = num.parse().unwrap_or_else(|_| panic!("{file}: bad version line {line:?}"));
        } else if line.starts_with('|') {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 3 || cells[0] == "field" || cells[0].starts_with("---") {
                continue;
            }
            let (Ok(off), Ok(size)) = (cells[1].parse(), cells[2].parse()) else {
                continue;
            };
            layout.fields.push((cells[0].to_string(), off, size));
        }
    }
    if let Some((n, l)) = current.take() {
        out.insert(n, l);
    }
    out
}

fn check(file: &str, name: &str, expected: Layout) {
    let docs = parse_doc(file);
    let doc = docs.get(name).unwrap_or_else(|| panic!("shm-layouts/{file} does not document struct {name}"));
    assert_eq!(
        doc, &expected,
        "shm-layouts/{file}, struct {name}: the document (left) and the Rust struct (right) disagree; update the \
         document and bump the layout version"
    );
}

#[test]
fn segment_header() {
    use pyconc::segment::header::{SegmentHeader, UserSlot, LAYOUT_VERSION};
    check(
        "segment-header.md",
        "SegmentHeader",
        rust_layout!(
            SegmentHeader,
            LAYOUT_VERSION,
            [
                magic,
                layout_version,
                kind,
                total_size,
                creator_pid,
                state,
                creator_start_time,
                users_lock,
                user_capacity,
                users_offset,
                data_offset,
                data_size,
                kind_version,
                reserved0,
                attach_count,
                reserved
            ]
        ),
    );
    check("segment-header.md", "UserSlot", rust_layout!(UserSlot, LAYOUT_VERSION, [owner, flags, reserved]));
}

#[test]
fn heap() {
    use pyconc::segment::alloc::{BlockHeader, HeapHeader, HEAP_VERSION};
    check(
        "heap.md",
        "HeapHeader",
        rust_layout!(HeapHeader, HEAP_VERSION, [magic, version, start, end, bump, reserved_to, reserved, free_heads]),
    );
    check("heap.md", "BlockHeader", rust_layout!(BlockHeader, HEAP_VERSION, [class, state, next]));
}

#[test]
fn arena() {
    use pyconc::segment::arena::{ArenaHeader, CellMeta, ARENA_VERSION};
    check(
        "arena.md",
        "ArenaHeader",
        rust_layout!(
            ArenaHeader,
            ARENA_VERSION,
            [
                cell_size,
                cell_count,
                owner_count,
                bitmap_bytes,
                owners_offset,
                meta_offset,
                cells_offset,
                bitmaps_offset,
                bump,
                reserved_cells,
                free_head,
                live,
                reserved
            ]
        ),
    );
    check("arena.md", "CellMeta", rust_layout!(CellMeta, ARENA_VERSION, [word, next, reserved]));
}

#[test]
fn atomic_cell() {
    use pyconc::objects::cell::{AtomicCell, ATOMIC_VERSION};
    check("atomic.md", "AtomicCell", rust_layout!(AtomicCell, ATOMIC_VERSION, [value, reserved]));
}

#[test]
fn value_array_block() {
    use pyconc::objects::block::{ArrayHeader, BLOCK_VERSION};
    check(
        "block.md",
        "ArrayHeader",
        rust_layout!(ArrayHeader, BLOCK_VERSION, [lock, typecode, itemsize, length, items_offset, reserved]),
    );
}

#[test]
fn queue() {
    use pyconc::queue::layout::{OpRecord, Participant, QueueHeader, Slot, QUEUE_VERSION};
    check(
        "queue.md",
        "QueueHeader",
        rust_layout!(
            QueueHeader,
            QUEUE_VERSION,
            [
                magic,
                version,
                capacity,
                max_message,
                flags,
                participants,
                participants_offset,
                slots_offset,
                heap_offset,
                heap_size,
                maxsize,
                first_slots,
                rings,
                head_ring,
                reserved0,
                tail,
                reserved1,
                head,
                reserved2,
                cons_wake,
                cons_waiters,
                prod_wake,
                prod_waiters,
                shutdown,
                reserved3,
                unfinished,
                join_wake,
                join_waiters,
                reserved4,
                orphan_count,
                participants_high,
                orphans,
                reserved6,
                dropped,
                redelivered,
                recovered,
                reserved7,
                grow_owner,
                reserved8,
                starts,
                ends
            ]
        ),
    );
    check("queue.md", "Participant", rust_layout!(Participant, QUEUE_VERSION, [owner, reserved, ops, pad]));
    check("queue.md", "OpRecord", rust_layout!(OpRecord, QUEUE_VERSION, [kind, flags, pos, block]));
    check("queue.md", "Slot", rust_layout!(Slot, QUEUE_VERSION, [state, len, kind, data]));
}

#[test]
fn sync_primitives() {
    use pyconc::sync::barrier::{BarrierSlot, BarrierState};
    use pyconc::sync::condvar::{CondSlot, CondState};
    use pyconc::sync::lock::LockState;
    use pyconc::sync::rwlock::{ReaderSlot, RwState};
    use pyconc::sync::semaphore::{EventState, SemState};
    use pyconc::sync::shared::{SyncHeader, SYNC_VERSION};
    let v = SYNC_VERSION;
    check("sync.md", "SyncHeader", rust_layout!(SyncHeader, v, [type_code, param, reserved]));
    check("sync.md", "LockState", rust_layout!(LockState, v, [word, flags, owner_start, owner_tid, count, takeovers]));
    check("sync.md", "SemState", rust_layout!(SemState, v, [value, waiters, maxvalue, reserved]));
    check("sync.md", "EventState", rust_layout!(EventState, v, [flag, waiters, reserved]));
    check("sync.md", "CondState", rust_layout!(CondState, v, [next_ticket, used, reserved0, reserved, slots]));
    check("sync.md", "CondSlot", rust_layout!(CondSlot, v, [owner, state, ticket]));
    check(
        "sync.md",
        "BarrierState",
        rust_layout!(BarrierState, v, [lock, seq, sleepers, parties, phase, count, generation, rounds]),
    );
    check("sync.md", "BarrierSlot", rust_layout!(BarrierSlot, v, [owner, outcome, reserved]));
    check("sync.md", "RwState", rust_layout!(RwState, v, [wlock, rgen, rsleepers, drain, writers, reserved, slots]));
    check("sync.md", "ReaderSlot", rust_layout!(ReaderSlot, v, [owner, count, reserved]));
    // The embedded lock must fit the 64 bytes a Value/Array block reserves for it.
    assert!(size_of::<LockState>() <= 64);
}

#[test]
fn dict() {
    use pyconc::dict::layout::*;
    let v = DICT_VERSION;
    check(
        "dict.md",
        "DictHeader",
        rust_layout!(
            DictHeader,
            v,
            [magic, version, nshards, nsegs, shards_off, heap_off, last_seg_size, reserved, grow_lock, seg_names]
        ),
    );
    check("dict.md", "Shard", rust_layout!(Shard, v, [lock, seq, table, len, tombstones, spare, reserved]));
    check("dict.md", "TableHeader", rust_layout!(TableHeader, v, [magic, reserved, capacity]));
    check("dict.md", "TableSlot", rust_layout!(TableSlot, v, [hash, entry]));
    check("dict.md", "EntryHeader", rust_layout!(EntryHeader, v, [key_len, orig_len, cap, val_len, reserved, state]));
}

#[test]
fn deque() {
    use pyconc::deque::layout::*;
    let v = DEQUE_VERSION;
    check(
        "deque.md",
        "DequeHeader",
        rust_layout!(
            DequeHeader,
            v,
            [
                magic,
                version,
                maxlen,
                nsegs,
                reserved0,
                last_seg_size,
                lock,
                ring,
                cap,
                span,
                version_counter,
                items,
                reserved1,
                next_id,
                repairs,
                reserved2,
                intent,
                reserved3,
                seg_names
            ]
        ),
    );
    check("deque.md", "Intent", rust_layout!(Intent, v, [op, a, b, c]));
    check("deque.md", "ItemHeader", rust_layout!(ItemHeader, v, [id, len]));
}

#[test]
fn every_documented_struct_is_checked() {
    // A struct documented here but not checked above would silently drift: list them all.
    let checked = [
        ("segment-header.md", vec!["SegmentHeader", "UserSlot"]),
        ("heap.md", vec!["BlockHeader", "HeapHeader"]),
        ("arena.md", vec!["ArenaHeader", "CellMeta"]),
        ("atomic.md", vec!["AtomicCell"]),
        ("block.md", vec!["ArrayHeader"]),
        ("queue.md", vec!["OpRecord", "Participant", "QueueHeader", "Slot"]),
        ("dict.md", vec!["DictHeader", "EntryHeader", "Shard", "TableHeader", "TableSlot"]),
        ("deque.md", vec!["DequeHeader", "Intent", "ItemHeader"]),
        (
            "sync.md",
            vec![
                "BarrierSlot",
                "BarrierState",
                "CondSlot",
                "CondState",
                "EventState",
                "LockState",
                "ReaderSlot",
                "RwState",
                "SemState",
                "SyncHeader",
            ],
        ),
    ];
    let dir = format!("{}/shm-layouts", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if !file.ends_with(".md") || file == "README.md" {
            continue;
        }
        let documented: Vec<String> = parse_doc(&file).into_keys().collect();
        let Some((_, names)) = checked.iter().find(|(f, _)| *f == file) else {
            assert!(
                documented.is_empty(),
                "shm-layouts/{file} documents {documented:?} but tests/layouts.rs checks none"
            );
            continue;
        };
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        names.sort();
        assert_eq!(documented, names, "shm-layouts/{file}: documented structs vs checked structs");
    }
}
