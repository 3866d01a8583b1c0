//! Creating, opening and mapping segments; the per-process registry that maps each segment once.

use super::header::{
    HeaderInfo, Kind, SegmentHeader, UserSlot, DATA_OFFSET, HEADER_PAGE, LAYOUT_VERSION, MAGIC, STATE_OPEN,
    STATE_UNLINKED, USERS_OFFSET, USER_CAPACITY,
};
use super::offset::{check_range, Offset, ShmSafe};
use super::users;
use crate::base::atomic::{AtomicBool, AtomicU32, Ordering};
use crate::base::spin::SpinMutex;
use crate::error::corrupt;
use crate::platform::process;
use crate::{Error, Result};
use memmap2::MmapRaw;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Weak};

pub use super::namespace::NAME_PREFIX;
/// Directory where Linux exposes POSIX shared memory.
pub const SHM_DIR: &str = "/dev/shm";

/// A mapped segment. Cheap to clone; all clones in a process share one mapping. When the last clone in a
/// process is dropped, the process leaves the segment's user table, and the last live user unlinks the name.
#[derive(Clone)]
pub struct Segment(Arc<Mapping>);

struct Mapping {
    name: String,
    map: MmapRaw,
    info: HeaderInfo,
    /// The pid this process is registered under in the user table, 0 if not registered. After `fork` the child
    /// re-registers itself (see [`after_fork_child`]) and this changes to the child's pid.
    registered_pid: AtomicU32,
    /// The user-table slot of the registration.
    slot: AtomicU32,
    /// Whether the name may be known outside this process: set when the name is read ([`Segment::name`]),
    /// when other processes are registered on our behalf, before every `fork`, and from the start for opened
    /// segments. A creator whose segment never got this far (and that has not forked since: `forks_at_create`)
    /// is its only possible user, so dropping it just unlinks the name without touching the user table, and no
    /// page of the mapping is faulted in for it.
    shared: AtomicBool,
    /// [`FORKS`] when this mapping was made.
    forks_at_create: u64,
}

/// A reference to a segment's mapping that does not keep it (see [`Segment::downgrade`]).
#[derive(Clone)]
pub struct WeakSegment(Weak<Mapping>);

impl WeakSegment {
    /// The segment, if some handle in this process still keeps its mapping.
    pub fn upgrade(&self) -> Option<Segment> {
        self.0.upgrade().map(Segment)
    }
}

type Registry = HashMap<String, Weak<Mapping>>;
static REGISTRY: SpinMutex<Option<Registry>> = SpinMutex::new(None);

fn shm_path(name: &str) -> String {
    format!("/{name}")
}

/// A fresh unguessable name: the prefix, the namespace and 128 random bits in hex.
fn random_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Os(std::io::Error::other(e.to_string())))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    super::namespace::make_name(&hex)
}

/// Whether `name` has the shape of a pyconc segment name.
pub fn is_segment_name(name: &str) -> bool {
    super::namespace::split(name).is_some()
}

/// A failed `mmap`: `ENOMEM` there is most often the per-process limit on mappings (`vm.max_map_count`), which
/// every segment a process maps counts against.
fn map_failed(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(nix::Error::ENOMEM as i32) {
        let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
        return Error::Full(format!(
            "cannot map another segment: this process has reached its limit of memory mappings (vm.max_map_count = \
             {}) or is out of memory; small objects share arena segments, but every queue, dict, array, condition, \
             barrier and RW lock takes a mapping of its own",
            limit.trim()
        ));
    }
    e.into()
}

/// A process-local table that could not grow (the allocator failed: Rust would abort, so we check first).
pub(crate) fn out_of_memory() -> Error {
    Error::Full("out of memory for pyconc's process-local tables".into())
}

fn too_big(bytes: u64) -> Error {
    Error::Invalid(format!("a segment of {bytes} bytes does not fit in this process's address space"))
}

fn no_space(needed: u64, what: &str) -> Error {
    let avail = nix::sys::statvfs::statvfs(SHM_DIR)
        .map(|st| st.blocks_available().saturating_mul(st.fragment_size()).to_string())
        .unwrap_or_else(|_| "too few".into());
    Error::NoSpace(format!(
        "{SHM_DIR} has {avail} bytes free, {what} needs {needed}; free space there (python -m pyconc ls) or \
         shrink the structure"
    ))
}

fn check_space(file: &File, bytes: u64) -> Result<()> {
    // A quick refusal (with a clear message) when the filesystem plainly lacks the room for what creation
    // reserves; the reservation itself (`posix_fallocate`) is what guarantees it.
    if let Ok(st) = nix::sys::statvfs::fstatvfs(file) {
        let avail = st.blocks_available().saturating_mul(st.fragment_size());
        if avail > 0 && bytes > avail {
            return Err(no_space(bytes, "the segment"));
        }
    }
    Ok(())
}

/// Allocates the file's pages `[0, len)` now, so that no write through the mapping can meet a full tmpfs (a
/// SIGBUS): a full /dev/shm is an [`Error::NoSpace`] here instead.
fn reserve_file(file: &File, len: u64) -> Result<()> {
    let off_len = i64::try_from(len).map_err(|_| too_big(len))?;
    match nix::fcntl::posix_fallocate(file, 0, off_len) {
        Ok(()) => Ok(()),
        Err(nix::Error::ENOSPC) | Err(nix::Error::ENOMEM) => Err(no_space(len, "reserving the segment")),
        Err(e) => Err(e.into()),
    }
}

/// How much of a new segment's payload to reserve (allocate in /dev/shm) at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// All of it: no write to the segment can fail later.
    All,
    /// The first `n` payload bytes (the fixed part of a structure whose heap reserves what it hands out, see
    /// [`Segment::reserve`]).
    Prefix(u64),
    /// Only the header page, written at creation (`Array(..., reserve=False)`: creation as fast as
    /// `SharedMemory`, and like it a write to a page a full /dev/shm cannot back is a SIGBUS).
    HeaderOnly,
}

impl Segment {
    /// Creates a new segment holding `data_size` payload bytes of `kind` (payload version `kind_version`), maps
    /// it and registers the calling process as its first user. The payload is zero-filled.
    pub fn create(kind: Kind, kind_version: u32, data_size: u64) -> Result<Segment> {
        Self::create_with(kind, kind_version, data_size, &[])
    }

    /// Like [`create`](Self::create), with the first `payload.len()` bytes of the payload set to `payload`.
    ///
    /// The header page and this payload prefix are written with one `pwrite` before the file is mapped, and
    /// nothing here reads them back: the first touch of a page through a fresh mapping costs a fault and a page
    /// table (about 5 µs here, 10 µs if the page is new), which would make creating an array slower than
    /// `multiprocessing.shared_memory`. Callers keep that property by not reading the header right away.
    ///
    /// The whole segment is reserved in /dev/shm (see [`Reserve`]): a full /dev/shm is an [`Error::NoSpace`] now,
    /// never a SIGBUS at a later write.
    pub fn create_with(kind: Kind, kind_version: u32, data_size: u64, payload: &[u8]) -> Result<Segment> {
        Self::create_reserving(kind, kind_version, data_size, payload, Reserve::All)
    }

    /// [`create_with`](Self::create_with), reserving only what `reserve` says at creation.
    pub fn create_reserving(
        kind: Kind,
        kind_version: u32,
        data_size: u64,
        payload: &[u8],
        reserve: Reserve,
    ) -> Result<Segment> {
        // Now and then, remove what killed processes left behind (bounded; see `gc::reap_if_due`).
        super::gc::reap_if_due();
        let total = DATA_OFFSET
            .checked_add(data_size)
            .ok_or_else(|| Error::Invalid(format!("segment payload of {data_size} bytes is too large")))?
            .max(HEADER_PAGE);
        if payload.len() as u64 > data_size {
            return Err(Error::Invalid(format!("{} payload bytes do not fit in {data_size}", payload.len())));
        }
        let me = process::current();
        // The initial bytes, built in an 8-aligned local buffer through the same atomics-only structs.
        let init_len = DATA_OFFSET as usize + payload.len();
        let mut words = vec![0u64; init_len.max(HEADER_PAGE as usize).div_ceil(8)];
        {
            // SAFETY: `words` is 8-aligned and at least HEADER_PAGE bytes long; SegmentHeader and UserSlot are
            // ShmSafe (valid for zero bytes) and only accessed through atomics here.
            let hdr = unsafe { &*(words.as_ptr() as *const SegmentHeader) };
            hdr.layout_version.store(LAYOUT_VERSION, Ordering::Relaxed);
            hdr.kind.store(kind as u32, Ordering::Relaxed);
            hdr.total_size.store(total, Ordering::Relaxed);
            hdr.creator_pid.store(me.pid, Ordering::Relaxed);
            hdr.creator_start_time.store(me.start_time, Ordering::Relaxed);
            hdr.state.store(STATE_OPEN, Ordering::Relaxed);
            hdr.user_capacity.store(USER_CAPACITY, Ordering::Relaxed);
            hdr.users_offset.store(USERS_OFFSET, Ordering::Relaxed);
            hdr.data_offset.store(DATA_OFFSET, Ordering::Relaxed);
            hdr.data_size.store(data_size, Ordering::Relaxed);
            hdr.kind_version.store(kind_version, Ordering::Relaxed);
            hdr.attach_count.store(1, Ordering::Relaxed);
            // The creator takes user slot 0 directly: nobody can attach before the name is handed out.
            // SAFETY: USERS_OFFSET + 16 <= HEADER_PAGE, 8-aligned, inside `words`.
            let slot = unsafe { &*((words.as_ptr() as *const u8).add(USERS_OFFSET as usize) as *const UserSlot) };
            slot.owner.store(super::owners::Owner::of(me).0, Ordering::Relaxed);
            hdr.magic.store(MAGIC, Ordering::Relaxed);
        }
        // SAFETY: `words` holds words.len() * 8 >= init_len initialised bytes (a zeroed Vec<u64>).
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) };
        bytes[DATA_OFFSET as usize..init_len].copy_from_slice(payload);
        let bytes = &bytes[..init_len];

        let name = random_name()?;
        let fd = shm_open(
            shm_path(&name).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?;
        let file = File::from(fd);
        // The header page (and the payload prefix) are written below; the rest is reserved as asked.
        let written = (bytes.len() as u64).next_multiple_of(HEADER_PAGE).min(total);
        let reserved = match reserve {
            Reserve::All => total,
            Reserve::Prefix(n) => DATA_OFFSET.saturating_add(n).next_multiple_of(HEADER_PAGE).clamp(written, total),
            Reserve::HeaderOnly => written,
        };
        let result = (|| {
            check_space(&file, reserved)?;
            file.write_all_at(bytes, 0).map_err(|e| {
                if e.raw_os_error() == Some(nix::Error::ENOSPC as i32) {
                    no_space(reserved, "the segment")
                } else {
                    e.into()
                }
            })?;
            file.set_len(total)?;
            if reserved > written {
                reserve_file(&file, reserved)?;
            }
            let len = usize::try_from(total).map_err(|_| too_big(total))?;
            let map = memmap2::MmapOptions::new().len(len).map_raw(&file).map_err(map_failed)?;
            let info = HeaderInfo {
                kind,
                kind_version,
                total_size: total,
                data_offset: DATA_OFFSET,
                data_size,
                users_offset: USERS_OFFSET,
                user_capacity: USER_CAPACITY,
            };
            Ok::<_, Error>(Mapping {
                name: name.clone(),
                map,
                info,
                registered_pid: AtomicU32::new(me.pid),
                slot: AtomicU32::new(0),
                shared: AtomicBool::new(false),
                forks_at_create: FORKS.load(Ordering::Relaxed),
            })
        })();
        match result {
            Ok(mapping) => {
                let arc = Arc::new(mapping);
                let mut guard = REGISTRY.lock();
                let reg = guard.get_or_insert_with(HashMap::new);
                if reg.try_reserve(1).is_err() {
                    // The mapping's drop (unmap, unlink) takes the registry lock.
                    drop(guard);
                    drop(arc);
                    return Err(out_of_memory());
                }
                reg.insert(name, Arc::downgrade(&arc));
                Ok(Segment(arc))
            }
            Err(e) => {
                let _ = shm_unlink(shm_path(&name).as_str());
                Err(e)
            }
        }
    }

    /// Opens the segment called `name`, reusing this process's mapping if it has one, and registers the calling
    /// process as a user. Fails with [`Error::NotFound`] if no such segment exists (or it was unlinked), and
    /// [`Error::Corrupt`] if the file is not a valid pyconc segment of this layout version.
    pub fn open(name: &str) -> Result<Segment> {
        if !is_segment_name(name) {
            return Err(Error::Invalid(format!("{name:?} is not a pyconc segment name")));
        }
        if let Some(existing) = lookup(name) {
            return Ok(Segment(existing));
        }
        // Mapped and registered without the registry lock: registering may wait for the segment's user-table
        // lock, and a failed attempt drops the half-built mapping, whose destructor takes the registry lock.
        let arc = Arc::new(Mapping::open_new(name)?);
        let mut guard = REGISTRY.lock();
        let reg = guard.get_or_insert_with(HashMap::new);
        if let Some(existing) = reg.get(name).and_then(Weak::upgrade) {
            // Another thread opened it meanwhile: use its mapping; ours leaves the table once the lock is free.
            drop(guard);
            drop(arc);
            return Ok(Segment(existing));
        }
        if reg.try_reserve(1).is_err() {
            drop(guard);
            return Err(out_of_memory());
        }
        reg.insert(name.to_string(), Arc::downgrade(&arc));
        drop(guard);
        // A process that only attaches (a worker that receives handles) reaps too, by the same rule as creation.
        // Only here, where a new mapping was made (a syscall or two already), never on the registry's fast path.
        super::gc::reap_if_due();
        Ok(Segment(arc))
    }

    /// Opens a segment without registering as a user and without using the registry: for tools (`ls`, `gc`)
    /// that inspect segments they do not use.
    pub fn inspect(name: &str) -> Result<Inspected> {
        let (map, info) = map_and_validate(name)?;
        Ok(Inspected { name: name.to_string(), map, info })
    }

    /// The segment's name (without the leading `/`), the way to hand the segment to another process. Reading it
    /// marks the segment as possibly shared, so the last handle's drop leaves the user table properly (see
    /// [`Mapping::shared`]).
    pub fn name(&self) -> &str {
        self.0.shared.store(true, Ordering::Relaxed);
        &self.0.name
    }

    /// The name, for use inside this process only (reopening through the registry, messages): unlike
    /// [`name`](Self::name) it does not mark the segment shared, so it must never reach another process.
    pub fn name_local(&self) -> &str {
        &self.0.name
    }

    /// The validated header facts.
    pub fn info(&self) -> &HeaderInfo {
        &self.0.info
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        self.0.header()
    }

    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.0.info.total_size
    }

    /// Never true: a segment has at least its header page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The payload's offset.
    pub fn data_offset<T>(&self) -> Offset<T> {
        Offset::new(self.0.info.data_offset)
    }

    /// Resolves an offset to a reference, checking that the whole `T` lies inside the segment and is aligned.
    pub fn resolve<T: ShmSafe>(&self, off: Offset<T>) -> Result<&T> {
        let size = std::mem::size_of::<T>() as u64;
        let align = std::mem::align_of::<T>() as u64;
        check_range(off.get(), size, align, self.len(), std::any::type_name::<T>())?;
        // SAFETY: [off, off + size) is inside the mapping and aligned for T (checked above); T is ShmSafe, so
        // every bit pattern is a valid T and shared mutation goes through atomics; the mapping lives as long as
        // the Arc behind &self.
        Ok(unsafe { &*(self.0.base().add(off.get() as usize) as *const T) })
    }

    /// A raw pointer to `len` bytes at `off`, bounds-checked. Use for payload bytes (arrays, encoded values)
    /// that are copied with `ptr::copy_nonoverlapping`; never turn it into a `&[u8]` that outlives a copy.
    pub fn bytes_ptr(&self, off: u64, len: u64) -> Result<*mut u8> {
        check_range(off, len, 1, self.len(), "byte range")?;
        // SAFETY: the range was checked to lie inside the mapping.
        Ok(unsafe { self.0.base().add(off as usize) })
    }

    /// Allocates the pages of `[off, off + len)` in /dev/shm now (`MADV_POPULATE_WRITE`), so that writing there
    /// cannot meet a full tmpfs: [`Error::NoSpace`] instead of a SIGBUS. For heaps, which reserve the fresh memory
    /// they hand out (a chunk at a time) rather than all of it at creation. On kernels before 5.14 (no
    /// `MADV_POPULATE_WRITE`) it falls back to checking the free space, which another process can still take.
    pub fn reserve(&self, off: u64, len: u64) -> Result<()> {
        check_range(off, len, 1, self.len(), "reserved range")?;
        let (o, l) = (off as usize, len as usize);
        let errno = |e: &std::io::Error| e.raw_os_error().map(nix::Error::from_raw);
        match self.0.map.advise_range(memmap2::Advice::PopulateWrite, o, l) {
            Ok(()) => Ok(()),
            // EFAULT: "a SIGBUS would have been generated"; ENOMEM: no memory for the pages.
            Err(e) if matches!(errno(&e), Some(nix::Error::EFAULT | nix::Error::ENOMEM)) => {
                Err(no_space(len, "this allocation"))
            }
            Err(e) if errno(&e) == Some(nix::Error::EINVAL) => {
                let avail = nix::sys::statvfs::statvfs(SHM_DIR)
                    .map(|st| st.blocks_available().saturating_mul(st.fragment_size()))
                    .unwrap_or(u64::MAX);
                if len > avail {
                    return Err(no_space(len, "this allocation"));
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Base address of the mapping in this process (for the PyO3 buffer protocol; never stored anywhere shared).
    pub fn base_ptr(&self) -> *mut u8 {
        self.0.base()
    }

    /// Unlinks the segment's name now: processes that have it mapped keep using it, new attaches fail with
    /// [`Error::NotFound`]. Idempotent.
    pub fn unlink(&self) -> Result<()> {
        if users::mark_unlinked(self.0.header()) {
            unlink_name(&self.0.name)?;
        }
        Ok(())
    }

    /// Whether the name has been unlinked.
    pub fn is_unlinked(&self) -> bool {
        self.0.header().state.load(Ordering::Acquire) == STATE_UNLINKED
    }

    /// Live users (the user table, after removing dead entries).
    pub fn users(&self) -> Result<Vec<process::ProcessId>> {
        users::live_users(self.0.header(), self.0.users()).map_err(|e| in_segment(e, &self.0.name))
    }

    /// Registers the processes `ids` as users of this segment on their behalf (see
    /// [`users::attach_on_behalf`]): used when a structure grows into a new segment that the other processes
    /// using the structure have not mapped yet.
    pub fn register_on_behalf(&self, ids: &[process::ProcessId]) -> Result<()> {
        self.0.shared.store(true, Ordering::Relaxed);
        users::attach_on_behalf(self.0.header(), self.0.users(), ids, process::current())
            .map_err(|e| in_segment(e, &self.0.name))
    }

    /// Number of `Segment` clones alive in this process (for tests).
    pub fn local_refs(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// A reference that does not keep the mapping (nor the process's place in the user table).
    pub fn downgrade(&self) -> WeakSegment {
        WeakSegment(Arc::downgrade(&self.0))
    }

    /// Whether two handles share one mapping.
    pub fn same_mapping(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({}, {:?}, {} bytes)", self.0.name, self.0.info.kind, self.0.info.total_size)
    }
}

/// This process's mapping of `name`, if it has one.
fn lookup(name: &str) -> Option<Arc<Mapping>> {
    let reg = REGISTRY.lock();
    // Upgrading under the lock: a mapping whose last handle is being dropped is either still listed (and then
    // its Drop, waiting for the lock, finds it replaced or gone) or already removed.
    let found = reg.as_ref().and_then(|r| r.get(name)).and_then(Weak::upgrade);
    drop(reg);
    found
}

/// Removes the name from `/dev/shm` (after the state was switched to unlinked).
fn unlink_name(name: &str) -> Result<()> {
    match shm_unlink(shm_path(name).as_str()) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn map_and_validate(name: &str) -> Result<(MmapRaw, HeaderInfo)> {
    let fd = match shm_open(shm_path(name).as_str(), OFlag::O_RDWR, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => {
            return Err(Error::NotFound(format!(
                "no pyconc segment named {name}: every process that used it has let go (it is unlinked with its \
                 last user), or it never existed. Keep a reference to the object in the sending process until \
                 the receiver has attached."
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    let file_len = file.metadata()?.len();
    if file_len < HEADER_PAGE {
        return Err(corrupt!("{name} is truncated: file has {file_len} bytes, a pyconc header needs {HEADER_PAGE}"));
    }
    let map = memmap2::MmapOptions::new()
        .len(usize::try_from(file_len).map_err(|_| too_big(file_len))?)
        .map_raw(&file)
        .map_err(map_failed)?;
    // SAFETY: the mapping is at least HEADER_PAGE bytes, page aligned, and SegmentHeader is ShmSafe.
    let hdr = unsafe { &*(map.as_mut_ptr() as *const SegmentHeader) };
    let info = hdr.validate(name, map.len() as u64)?;
    Ok((map, info))
}

impl Mapping {
    fn open_new(name: &str) -> Result<Mapping> {
        let (map, info) = map_and_validate(name)?;
        let mapping = Mapping {
            name: name.to_string(),
            map,
            info,
            registered_pid: AtomicU32::new(0),
            slot: AtomicU32::new(0),
            shared: AtomicBool::new(true),
            forks_at_create: 0,
        };
        mapping.register()?;
        Ok(mapping)
    }

    fn register(&self) -> Result<()> {
        let me = process::current();
        let slot = users::attach(self.header(), self.users(), me).map_err(|e| in_segment(e, &self.name))?;
        self.slot.store(slot, Ordering::Relaxed);
        self.registered_pid.store(me.pid, Ordering::Release);
        Ok(())
    }

    /// Leaves the user table if this process is registered (once), unlinking the name if no live user is left.
    fn leave(&self, me: process::ProcessId) {
        if self.registered_pid.compare_exchange(me.pid, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        let shared = self.shared.load(Ordering::Relaxed) || FORKS.load(Ordering::Relaxed) != self.forks_at_create;
        let last = if shared {
            // If the table's lock stays held by a live process, give up: our slot is reaped once we are gone.
            users::detach(self.header(), self.users(), self.slot.load(Ordering::Relaxed), me).unwrap_or(false)
        } else {
            // Nobody else can know the name, so nobody else is in the table: skip touching it.
            true
        };
        if last {
            let _ = unlink_name(&self.name);
        }
    }

    fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: validated at open/create: the mapping holds at least a header page, page aligned.
        unsafe { &*(self.base() as *const SegmentHeader) }
    }

    fn users(&self) -> &[UserSlot] {
        // SAFETY: the header validation checked that users_offset + capacity * 16 <= data_offset <= mapping
        // length and that users_offset is 8-aligned; UserSlot is ShmSafe.
        unsafe {
            std::slice::from_raw_parts(
                self.base().add(self.info.users_offset as usize) as *const UserSlot,
                self.info.user_capacity as usize,
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let me = process::current();
        {
            let mut reg = REGISTRY.lock();
            if let Some(reg) = reg.as_mut() {
                let ours = reg.get(&self.name).is_some_and(|w| std::ptr::eq(w.as_ptr(), self));
                if ours {
                    reg.remove(&self.name);
                }
            }
        }
        self.leave(me);
        // The MmapRaw unmaps itself.
    }
}

/// A segment mapped for inspection only (not registered as a user).
pub struct Inspected {
    name: String,
    map: MmapRaw,
    info: HeaderInfo,
}

impl Inspected {
    /// Validated header facts.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A raw pointer to `len` bytes at `off`, bounds-checked (as [`Segment::bytes_ptr`]).
    pub fn bytes_ptr(&self, off: u64, len: u64) -> Result<*mut u8> {
        check_range(off, len, 1, self.map.len() as u64, "byte range")?;
        // SAFETY: the range was checked to lie inside the mapping.
        Ok(unsafe { self.map.as_mut_ptr().add(off as usize) })
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: validated by map_and_validate.
        unsafe { &*(self.map.as_mut_ptr() as *const SegmentHeader) }
    }

    fn users(&self) -> &[UserSlot] {
        // SAFETY: as in Mapping::users; validated by map_and_validate.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().add(self.info.users_offset as usize) as *const UserSlot,
                self.info.user_capacity as usize,
            )
        }
    }

    /// Live users, removing dead entries from the table. Fails with [`Error::Corrupt`] if the table's lock
    /// stays held by a live process.
    pub fn live_users(&self) -> Result<Vec<process::ProcessId>> {
        users::live_users(self.header(), self.users()).map_err(|e| in_segment(e, &self.name))
    }

    /// Whether the header says the name was unlinked (while the file still exists: its unlinker died first).
    pub fn is_unlinked(&self) -> bool {
        self.header().state.load(Ordering::Acquire) == STATE_UNLINKED
    }

    /// Creator pid recorded in the header.
    pub fn creator_pid(&self) -> u32 {
        self.header().creator_pid.load(Ordering::Relaxed)
    }

    /// Removes dead users; if none is left alive, unlinks the segment and returns true.
    pub fn collect_if_unused(&self) -> Result<bool> {
        if users::reap_all_dead(self.header(), self.users()).map_err(|e| in_segment(e, &self.name))? {
            unlink_name(&self.name)?;
            return Ok(true);
        }
        Ok(false)
    }
}

// ---- fork handling --------------------------------------------------------------------------------------------

/// Incremented in every forked child (by [`after_fork_child`]). Process-local state that must not be shared
/// between a parent and its forked child (a queue's participant index) records the generation it was made in.
pub static FORK_GENERATION: crate::base::atomic::local::AtomicU64 = crate::base::atomic::local::AtomicU64::new(0);

/// Forks started by this process (counted in [`before_fork`]); a [`Mapping`] created before the latest one is
/// shared with a child.
static FORKS: crate::base::atomic::local::AtomicU64 = crate::base::atomic::local::AtomicU64::new(0);

/// Call in the parent just before `fork()`: holds the registry lock so the child inherits a consistent registry.
pub fn before_fork() {
    // The arenas' local table first: its holders may take the registry lock (creating an arena), never the
    // other way round.
    super::arena::before_fork();
    REGISTRY.raw_lock();
    // The child will register as a user of every segment it inherits: no creator may skip the user table now.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Call in the parent just after `fork()`.
pub fn after_fork_parent() {
    // SAFETY: before_fork took the lock in this thread, and nothing used a guard since.
    unsafe { REGISTRY.raw_unlock() };
    super::arena::after_fork_parent();
}

/// Call in the child just after `fork()`: registers the child as a user of every segment it inherited, so that
/// segments stay alive while the child uses them even if the parent exits.
pub fn after_fork_child() {
    FORK_GENERATION.fetch_add(1, crate::base::atomic::local::Ordering::AcqRel);
    // SAFETY: before_fork took the lock in the parent's forking thread, which is this thread in the child.
    let reg = unsafe { REGISTRY.raw_get() };
    if let Some(reg) = reg.as_ref() {
        for mapping in reg.values().filter_map(Weak::upgrade) {
            if mapping.register().is_err() {
                // Unlinked meanwhile, or the user table is full: the inherited mapping stays usable, the child
                // just does not keep the name alive.
                mapping.registered_pid.store(0, Ordering::Release);
            }
            // Dropping this temporary Arc must not run Mapping::drop's registry removal while we hold the lock;
            // it cannot be the last reference, because the registry only lists mappings that a handle keeps.
            drop(mapping);
        }
    }
    // SAFETY: we hold the lock (inherited from before_fork).
    unsafe { REGISTRY.raw_unlock() };
    // Then the cells of arenas: the child holds every object it inherited a handle of.
    super::arena::after_fork_child();
}

/// Leaves the user table of every segment this process uses, without unmapping anything. For process exit
/// paths that skip destructors (`os._exit` in multiprocessing children, interpreter shutdown): the mappings stay
/// valid until the process is gone, and a segment whose last user this was is unlinked now instead of waiting for
/// a `gc`. Objects used after this call still work but no longer keep their segment alive.
pub fn release_all() {
    // The objects in arenas first (their holds are per object), then the segments.
    super::arena::release_all();
    let me = process::current();
    let mappings: Vec<Arc<Mapping>> = {
        let reg = REGISTRY.lock();
        reg.as_ref().map(|r| r.values().filter_map(Weak::upgrade).collect()).unwrap_or_default()
    };
    for m in mappings {
        m.leave(me);
    }
}

/// Names the segment in an error from its user table.
fn in_segment(e: Error, name: &str) -> Error {
    match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "pyconc segment {name} was unlinked (its last user let go) before this process attached"
        )),
        Error::Corrupt(m) => Error::Corrupt(format!("pyconc segment {name}: {m}")),
        Error::Full(m) => Error::Full(format!("pyconc segment {name}: {m}")),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(name: &str) -> bool {
        std::path::Path::new(SHM_DIR).join(name).exists()
    }

    #[test]
    fn unshared_creator_unlinks_on_drop() {
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        let name = seg.0.name.clone(); // not name(): that would mark the segment shared
        assert!(exists(&name));
        assert!(!seg.0.shared.load(Ordering::Relaxed));
        drop(seg);
        assert!(!exists(&name));
    }

    #[test]
    fn shared_creator_leaves_the_segment_to_other_live_users() {
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        // Another live process (our parent, the test runner's launcher) registered as a user.
        let parent = process::identity_of(std::os::unix::process::parent_id()).unwrap();
        seg.register_on_behalf(&[parent]).unwrap();
        let name = seg.name().to_string();
        assert_eq!(seg.users().unwrap().len(), 2);
        drop(seg);
        assert!(exists(&name), "the other user keeps it");
        let seg = Segment::open(&name).unwrap();
        seg.unlink().unwrap();
        drop(seg);
        assert!(!exists(&name));
    }

    /// A segment whose table is full of live users (this process, several times over) and whose name stays when
    /// its creator drops it.
    fn crowded_segment() -> String {
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        let name = seg.name().to_string();
        let me = process::current();
        let fill = |table: &[UserSlot]| {
            for s in table {
                s.owner.store(super::super::owners::Owner::of(me).0, Ordering::Relaxed);
            }
        };
        fill(seg.0.users());
        drop(seg);
        assert!(exists(&name), "the other (live) slots keep it");
        // The creator's own slot was cleared when it let go: fill that one too.
        fill(Segment::inspect(&name).unwrap().users());
        name
    }

    fn remove(name: &str) {
        let _ = shm_unlink(shm_path(name).as_str());
    }

    /// Runs `f` on a thread and fails the test (instead of hanging it) if it does not return within 20 s.
    fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20)).expect("hung")
    }

    #[test]
    fn attaching_to_a_full_user_table_is_an_error_not_a_deadlock() {
        let name = crowded_segment();
        let n = name.clone();
        let r = within_deadline(move || Segment::open(&n).map(|_| ()));
        assert!(matches!(&r, Err(Error::Full(m)) if m.contains(&name) && m.contains("224")), "{r:?}");
        // The registry is still usable.
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        drop(seg);
        remove(&name);
    }

    #[test]
    fn attaching_to_a_segment_marked_unlinked_is_file_not_found() {
        let name = crowded_segment();
        let probe = Segment::inspect(&name).unwrap();
        probe.header().state.store(STATE_UNLINKED, Ordering::Release);
        let n = name.clone();
        let r = within_deadline(move || Segment::open(&n).map(|_| ()));
        assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
        // gc removes a name whose header says it is gone, live users or not.
        assert!(probe.collect_if_unused().unwrap());
        assert!(!exists(&name));
    }

    #[test]
    fn concurrent_opens_share_one_mapping() {
        let seg = Segment::create(Kind::Block, 1, 64).unwrap();
        let name = seg.name().to_string();
        let parent = process::identity_of(std::os::unix::process::parent_id()).unwrap();
        seg.register_on_behalf(&[parent]).unwrap();
        drop(seg);
        let opened: Vec<Segment> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(|| Segment::open(&name).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(opened.windows(2).all(|w| w[0].same_mapping(&w[1])));
        let users = opened[0].users().unwrap();
        assert_eq!(users.iter().filter(|u| u.pid == std::process::id()).count(), 1, "{users:?}");
        opened[0].unlink().unwrap();
    }
}
