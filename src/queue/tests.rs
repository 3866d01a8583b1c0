use super::layout::*;
use super::*;
use crate::platform::futex::Deadline;
use std::time::Duration;

fn now() -> Deadline {
    Deadline::after(Some(Duration::ZERO))
}

fn within(ms: u64) -> Deadline {
    Deadline::after(Some(Duration::from_millis(ms)))
}

fn small(slots: u64) -> SharedQueue {
    SharedQueue::create(QueueConfig { slots, first_ring: 0, heap_bytes: 1 << 20, lock_free: false, joinable: false })
        .unwrap()
}

fn put(q: &SharedQueue, msg: &[u8]) -> Attempt {
    q.ring().unwrap().put(msg, now(), WaitPolicy::DEFAULT).unwrap()
}

fn get(q: &SharedQueue) -> Option<Vec<u8>> {
    let mut out = vec![];
    match q.ring().unwrap().get(&mut out, now(), WaitPolicy::DEFAULT).unwrap() {
        Attempt::Done => Some(out),
        _ => None,
    }
}

fn heap_used(q: &SharedQueue) -> u64 {
    Heap::attach(q.segment(), Offset::new(q.header().heap_offset.load(Ordering::Relaxed))).unwrap().stats().used_blocks
}

#[test]
fn fifo_inline_and_heap_messages() {
    let q = small(8);
    let msgs: Vec<Vec<u8>> =
        [0usize, 1, 7, 8, 47, 48, 49, 100, 5000].iter().map(|&n| (0..n).map(|i| i as u8).collect()).collect();
    for m in &msgs[..8] {
        assert_eq!(put(&q, m), Attempt::Done);
    }
    assert_eq!(put(&q, &msgs[8]), Attempt::WouldBlock, "8 slots hold 8 messages");
    assert_eq!(q.ring().unwrap().len(), 8);
    for m in &msgs[..8] {
        assert_eq!(get(&q).as_ref(), Some(m));
    }
    assert_eq!(get(&q), None);
    assert_eq!(heap_used(&q), 0, "heap blocks are freed after the get");
    // Many laps around a small ring.
    for round in 0..1000u32 {
        let m = round.to_le_bytes().repeat((round % 20) as usize);
        assert_eq!(put(&q, &m), Attempt::Done);
        assert_eq!(get(&q), Some(m));
    }
}

#[test]
fn message_larger_than_capacity_is_rejected() {
    let q = small(4);
    let max = q.ring().unwrap().max_message();
    assert!(max >= 512 * 1024, "{max}");
    let err = q.ring().unwrap().put(&vec![0u8; max as usize + 1], now(), WaitPolicy::DEFAULT).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(put(&q, &vec![1u8; max as usize]), Attempt::Done);
    assert_eq!(get(&q).map(|m| m.len()), Some(max as usize));
    let inline_only =
        SharedQueue::create(QueueConfig { slots: 4, first_ring: 0, heap_bytes: 0, lock_free: false, joinable: false })
            .unwrap();
    assert!(inline_only.ring().unwrap().put(&[0u8; 49], now(), WaitPolicy::DEFAULT).is_err());
}

#[test]
fn full_heap_blocks_until_a_get_frees_space() {
    let q = SharedQueue::create(QueueConfig {
        slots: 64,
        first_ring: 0,
        heap_bytes: 64 << 10,
        lock_free: false,
        joinable: false,
    })
    .unwrap();
    let big = vec![7u8; 20_000];
    let mut n = 0;
    while put(&q, &big) == Attempt::Done {
        n += 1;
    }
    assert!(n >= 2, "{n}");
    assert_eq!(heap_used(&q), n);
    assert_eq!(get(&q), Some(big.clone()));
    assert_eq!(put(&q, &big), Attempt::Done);
}

#[test]
fn blocking_get_times_out_then_receives() {
    let q = small(4);
    let t0 = std::time::Instant::now();
    let mut out = vec![];
    let r = q.ring().unwrap().get(&mut out, within(30), WaitPolicy::DEFAULT).unwrap();
    assert_eq!(r, Attempt::WouldBlock);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(29) && waited < Duration::from_millis(500), "{waited:?}");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(put(&q, b"late"), Attempt::Done);
        });
        let mut out = vec![];
        let r = q.ring().unwrap().get(&mut out, within(5000), WaitPolicy::DEFAULT).unwrap();
        assert_eq!((r, out.as_slice()), (Attempt::Done, &b"late"[..]));
    });
}

#[test]
fn shutdown_drains_then_fails() {
    let q = small(8);
    put(&q, b"a");
    put(&q, b"b");
    q.ring().unwrap().shutdown(false);
    assert_eq!(put(&q, b"c"), Attempt::ShutDown);
    assert_eq!(get(&q), Some(b"a".to_vec()));
    assert_eq!(get(&q), Some(b"b".to_vec()));
    let mut out = vec![];
    assert_eq!(q.ring().unwrap().get(&mut out, within(1000), WaitPolicy::DEFAULT).unwrap(), Attempt::ShutDown);
    let q2 = small(8);
    put(&q2, b"a");
    q2.ring().unwrap().shutdown(true);
    assert_eq!(q2.ring().unwrap().get(&mut out, now(), WaitPolicy::DEFAULT).unwrap(), Attempt::ShutDown);
}

#[test]
fn shutdown_wakes_a_blocked_consumer() {
    let q = small(8);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut out = vec![];
            q.ring().unwrap().get(&mut out, within(10_000), WaitPolicy::DEFAULT).unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        q.ring().unwrap().shutdown(false);
        assert_eq!(h.join().unwrap(), Attempt::ShutDown);
    });
}

#[test]
fn threads_mpmc_every_message_exactly_once() {
    let q = SharedQueue::create(QueueConfig {
        slots: 64,
        first_ring: 0,
        heap_bytes: 1 << 20,
        lock_free: false,
        joinable: false,
    })
    .unwrap();
    const P: u32 = 3;
    const N: u32 = 20_000;
    let received = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for p in 0..P {
            let q = &q;
            s.spawn(move || {
                for i in 0..N {
                    let len = if i % 10 == 0 { 200 } else { 8 };
                    let mut m = vec![0u8; len];
                    m[..4].copy_from_slice(&p.to_le_bytes());
                    m[4..8].copy_from_slice(&i.to_le_bytes());
                    let r = q.ring().unwrap().put(&m, within(30_000), WaitPolicy::DEFAULT).unwrap();
                    assert_eq!(r, Attempt::Done);
                }
            });
        }
        for _ in 0..3 {
            let (q, received) = (&q, &received);
            s.spawn(move || {
                let mut mine = vec![];
                let mut out = vec![];
                while mine.len() < (P * N) as usize {
                    out.clear();
                    match q.ring().unwrap().get(&mut out, within(300), WaitPolicy::DEFAULT).unwrap() {
                        Attempt::Done => {
                            let p = u32::from_le_bytes(out[..4].try_into().unwrap());
                            let i = u32::from_le_bytes(out[4..8].try_into().unwrap());
                            assert_eq!(out.len(), if i % 10 == 0 { 200 } else { 8 });
                            mine.push((p, i));
                        }
                        _ => break, // idle for 300 ms: the producers are done
                    }
                }
                received.lock().unwrap().extend(mine);
            });
        }
    });
    let mut all = received.into_inner().unwrap();
    all.sort();
    let expected: Vec<(u32, u32)> = (0..P).flat_map(|p| (0..N).map(move |i| (p, i))).collect();
    assert_eq!(all.len(), expected.len(), "lost or duplicated messages");
    assert_eq!(all, expected);
    assert_eq!(heap_used(&q), 0);
}

/// An owner word naming a process that is certainly dead (a reaped child).
fn dead_owner() -> Owner {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    Owner::of(crate::platform::process::ProcessId { pid, start_time: 1 })
}

/// Registers a fake participant for a dead process and returns its index.
fn fake_dead_participant(q: &SharedQueue) -> usize {
    let (i, p) = q.parts().iter().enumerate().find(|(_, p)| p.owner.load(Ordering::Relaxed) == 0).unwrap();
    p.owner.store(dead_owner().0, Ordering::Relaxed);
    i
}

#[test]
fn producer_killed_mid_put_is_dropped_and_counted() {
    let q = small(8);
    put(&q, b"before");
    // A dead producer claimed the next slot (and allocated a heap block) but never published it.
    let dead = fake_dead_participant(&q);
    let ring = q.ring().unwrap();
    let heap = Heap::attach(q.segment(), Offset::new(q.header().heap_offset.load(Ordering::Relaxed))).unwrap();
    let block = heap.alloc(1000).unwrap();
    let t = q.header().tail.load(Ordering::Relaxed);
    let op = &q.parts()[dead].ops[0];
    op.kind.store(OP_PUT, Ordering::Relaxed);
    op.flags.store(OP_HEAP, Ordering::Relaxed);
    op.pos.store(t, Ordering::Relaxed);
    op.block.store(block, Ordering::Relaxed);
    q.slots()[t as usize % 8].state.store(word(t / 8, state::WRITING, dead as u16 + 1), Ordering::Relaxed);
    q.header().tail.store(t + 1, Ordering::Relaxed);
    put(&q, b"after");

    assert_eq!(get(&q), Some(b"before".to_vec()));
    assert_eq!(get(&q), None, "the half-written slot blocks until its producer is known dead");
    assert_eq!(ring.recover_dead_participants(), 1);
    assert_eq!(get(&q), Some(b"after".to_vec()), "the dropped message is skipped");
    assert_eq!(q.stats(), (1, 0, 1));
    assert_eq!(heap_used(&q), 0, "the dead producer's block was freed");
    assert_eq!(q.parts()[dead].owner.load(Ordering::Relaxed), 0, "its entry is free again");
}

#[test]
fn consumer_killed_mid_get_has_its_message_redelivered() {
    let q = small(8);
    put(&q, b"first");
    put(&q, &[9u8; 300]);
    put(&q, b"third");
    // A dead consumer claimed the first message and never finished reading it.
    let dead = fake_dead_participant(&q);
    let h = q.header().head.load(Ordering::Relaxed);
    let op = &q.parts()[dead].ops[2];
    op.kind.store(OP_GET, Ordering::Relaxed);
    op.pos.store(h, Ordering::Relaxed);
    q.slots()[h as usize].state.store(word(0, state::READING, dead as u16 + 1), Ordering::Relaxed);
    q.header().head.store(h + 1, Ordering::Relaxed);

    assert_eq!(get(&q), Some(vec![9u8; 300]));
    assert_eq!(q.ring().unwrap().recover_dead_participants(), 1);
    assert_eq!(get(&q), Some(b"first".to_vec()), "redelivered before newer messages");
    assert_eq!(get(&q), Some(b"third".to_vec()));
    assert_eq!(get(&q), None);
    assert_eq!(q.stats(), (0, 1, 1));
}

#[test]
fn a_blocked_consumer_recovers_a_dead_producer_by_itself() {
    let q = small(8);
    let dead = fake_dead_participant(&q);
    let op = &q.parts()[dead].ops[0];
    op.kind.store(OP_PUT, Ordering::Relaxed);
    op.pos.store(0, Ordering::Relaxed);
    q.slots()[0].state.store(word(0, state::WRITING, dead as u16 + 1), Ordering::Relaxed);
    q.header().tail.store(1, Ordering::Relaxed);
    put(&q, b"x");
    let t0 = std::time::Instant::now();
    let mut out = vec![];
    let r = q.ring().unwrap().get(&mut out, within(5000), WaitPolicy::DEFAULT).unwrap();
    assert_eq!((r, out.as_slice()), (Attempt::Done, &b"x"[..]));
    assert!(t0.elapsed() < Duration::from_secs(1), "recovered within a second: {:?}", t0.elapsed());
}

#[test]
fn participants_are_registered_per_handle_and_released() {
    let q = small(4);
    put(&q, b"x");
    let q2 = SharedQueue::open(q.segment().name()).unwrap();
    assert_eq!(get(&q2), Some(b"x".to_vec()));
    let registered = |q: &SharedQueue| q.parts().iter().filter(|p| p.owner.load(Ordering::Relaxed) != 0).count();
    assert_eq!(registered(&q), 2);
    drop(q2);
    assert_eq!(registered(&q), 1);
}

#[test]
fn corrupt_queue_header_is_an_error() {
    let q = small(4);
    q.header().capacity.store(1 << 40, Ordering::Relaxed);
    assert!(matches!(SharedQueue::from_segment(q.segment().clone()), Err(Error::Corrupt(_))));
    q.header().capacity.store(4, Ordering::Relaxed);
    q.header().slots_offset.store(u64::MAX - 8, Ordering::Relaxed);
    assert!(matches!(SharedQueue::from_segment(q.segment().clone()), Err(Error::Corrupt(_))));
}

/// Runs `f` on a thread, failing (instead of hanging the test) if it does not return within 20 s.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("hung")
}

#[test]
fn slot_ahead_of_its_position_is_helped_past_or_reported() {
    // Issue 11, hang 3: a slot state ahead of its position made put/get retry forever, ignoring the timeout.
    let q = std::sync::Arc::new(small(4));
    assert_eq!(put(&q, b"a"), Attempt::Done);
    assert_eq!(get(&q).as_deref(), Some(&b"a"[..]));
    // One slot ahead (lap + 1) at `tail`: what a producer killed between claiming and advancing `tail` leaves
    // once its slot was dropped and skipped. The put passes it and succeeds.
    q.slots()[1].state.store(word(1, state::EMPTY, 0), Ordering::Relaxed);
    let q2 = q.clone();
    assert_eq!(within_deadline(move || put(&q2, b"b")), Attempt::Done);
    assert_eq!(get(&q).as_deref(), Some(&b"b"[..]));
    // Every slot far ahead: a corrupt ring. Puts and gets end (an error, or any result: `tail`/`head` may jump
    // to where the slots say they are) instead of spinning.
    for s in q.slots() {
        s.state.store(word(1000, state::EMPTY, 0), Ordering::Relaxed);
    }
    let q2 = q.clone();
    let r = within_deadline(move || q2.ring().unwrap().put(b"c", within(100), WaitPolicy::DEFAULT));
    assert!(matches!(r, Err(Error::Corrupt(_)) | Ok(_)), "{r:?}");
    for s in q.slots() {
        s.state.store(word(1000, state::FULL, 0), Ordering::Relaxed);
    }
    let q2 = q.clone();
    let r = within_deadline(move || q2.ring().unwrap().get(&mut vec![], within(100), WaitPolicy::DEFAULT));
    assert!(matches!(r, Err(Error::Corrupt(_)) | Ok(_)), "{r:?}");
    // Far enough ahead that helping cannot catch up within the limit: reported.
    for s in q.slots() {
        s.state.store(word(u32::MAX as u64 / 4, state::EMPTY, 0), Ordering::Relaxed);
    }
    let q2 = q.clone();
    let r = within_deadline(move || q2.ring().unwrap().put(b"d", within(100), WaitPolicy::DEFAULT));
    assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
}

#[test]
fn a_redelivered_message_taken_before_head_moved_does_not_stall_consumers() {
    // A consumer killed between claiming position 0 and advancing `head`; the recoverer made the slot FULL
    // again and listed it for redelivery, and the redelivery consumed it while `head` still pointed at it.
    let q = std::sync::Arc::new(small(4));
    assert_eq!(put(&q, b"x"), Attempt::Done);
    assert_eq!(put(&q, b"y"), Attempt::Done);
    q.slots()[0].state.store(word(1, state::EMPTY, 0), Ordering::Relaxed);
    let q2 = q.clone();
    assert_eq!(within_deadline(move || get(&q2)).as_deref(), Some(&b"y"[..]));
}

#[test]
fn busy_operation_records_of_a_free_or_own_entry_do_not_block() {
    // Issue 11, hang 4: every op record of a free participant entry marked busy made acquire_op spin forever.
    let q = small(4);
    for p in q.parts() {
        for op in &p.ops {
            op.kind.store(OP_GET, Ordering::Relaxed);
        }
    }
    // Registering takes a free entry and clears its records.
    assert_eq!(put(&q, b"a"), Attempt::Done);
    // Our own entry's records corrupted while we use it: an error, not a wait.
    let me = q.participant().unwrap();
    for op in &q.parts()[me].ops {
        op.kind.store(OP_PUT, Ordering::Relaxed);
    }
    let r = q.ring().unwrap().put(b"b", within(100), WaitPolicy::DEFAULT);
    assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
    for op in &q.parts()[me].ops {
        op.kind.store(0, Ordering::Relaxed);
    }
    assert_eq!(get(&q).as_deref(), Some(&b"a"[..]));
}

#[test]
fn an_orphan_count_above_its_entries_does_not_make_the_queue_look_readable() {
    // A consumer killed between taking a redelivery entry and decrementing the count leaves it too high for
    // good; `readable` (what asyncio gets wait on) would say yes forever and the get spin.
    let q = small(4);
    q.header().orphan_count.store(1, Ordering::Relaxed);
    let r = q.ring().unwrap();
    assert!(!r.readable());
    assert_eq!(get(&q), None);
    assert!(r.announce(true).is_some(), "a get waiter would sleep, not spin");
    assert_eq!(put(&q, b"a"), Attempt::Done);
    assert!(r.readable());
}

#[test]
fn eleven_hundred_participants_fill_grow_and_reap_the_table() {
    // 1,100 participants (handles: each registers its own entry, as a process does). The table starts at one
    // page of entries and grows to PARTICIPANTS; the 1,025th fails loudly, sizes stay right while it is full,
    // and dead participants' entries are recovered (with their op records) and reused.
    let q = small(8);
    assert_eq!(q.parts().len(), PARTICIPANT_GROWTH, "an empty queue uses one page of entries");
    put(&q, b"x");
    let mut handles = vec![];
    for _ in 1..PARTICIPANTS {
        let h = SharedQueue::open(q.segment().name()).unwrap();
        h.participant().unwrap();
        handles.push(h);
    }
    assert_eq!(q.header().participants_high.load(Ordering::Relaxed) as usize, PARTICIPANTS);
    assert_eq!(q.parts().len(), PARTICIPANTS);
    let extra = SharedQueue::open(q.segment().name()).unwrap();
    assert!(matches!(extra.ring(), Err(Error::Full(_))), "the 1,025th participant is refused");
    assert_eq!((extra.len(), extra.is_empty(), extra.capacity()), (1, false, 8), "sizes need no participant");
    // A third of the participants die, one of them in the middle of a get.
    let parts = q.parts();
    let dead: Vec<usize> = (0..PARTICIPANTS).filter(|i| i % 3 == 1).collect();
    for &i in &dead {
        parts[i].owner.store(dead_owner().0, Ordering::Relaxed);
    }
    let victim = dead[0];
    let h = q.header().head.load(Ordering::Relaxed);
    parts[victim].ops[0].kind.store(OP_GET, Ordering::Relaxed);
    parts[victim].ops[0].pos.store(h, Ordering::Relaxed);
    q.slots()[h as usize].state.store(word(0, state::READING, victim as u16 + 1), Ordering::Relaxed);
    q.header().head.store(h + 1, Ordering::Relaxed);
    // The next 76 newcomers (1,100 in all) find the table full, reap the dead and get entries.
    let late: Vec<SharedQueue> =
        (0..1100 - PARTICIPANTS).map(|_| SharedQueue::open(q.segment().name()).unwrap()).collect();
    for l in &late {
        l.participant().unwrap();
    }
    assert_eq!(extra.stats().2, dead.len() as u64, "every dead participant recovered once");
    assert_eq!(get(&late[0]).as_deref(), Some(&b"x"[..]), "the dead consumer's message is redelivered");
    let taken = q.parts().iter().filter(|p| p.owner.load(Ordering::Relaxed) != 0).count();
    assert_eq!(taken, PARTICIPANTS - dead.len() + late.len());
    drop(handles);
    drop(late);
    assert_eq!(q.parts().iter().filter(|p| p.owner.load(Ordering::Relaxed) != 0).count(), 1, "released on drop");
}

#[test]
fn an_empty_queue_reserves_one_page_of_participant_entries() {
    let q = small(8);
    let size = std::mem::size_of::<Participant>();
    assert_eq!(PARTICIPANT_GROWTH * size, 4096);
    // Only the reserved page of the table is allocated in /dev/shm (the rest is a hole until needed).
    let path = format!("/dev/shm/{}", q.segment().name_local());
    let allocated = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512).unwrap();
    assert!(allocated < (PARTICIPANTS * size) as u64, "{allocated} bytes allocated");
}

#[test]
fn wait_readable_waits_for_a_message_without_taking_it() {
    let q = small(8);
    let ring = q.ring().unwrap();
    assert_eq!(ring.wait_readable(within(20), WaitPolicy::DEFAULT).unwrap(), Attempt::WouldBlock);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(put(&q, b"x"), Attempt::Done);
        });
        // Sleeps past the spin, then is woken by the put.
        assert_eq!(ring.wait_readable(within(5_000), WaitPolicy::DEFAULT).unwrap(), Attempt::Done);
    });
    assert_eq!(ring.len(), 1, "the message is still there");
    assert_eq!(get(&q).as_deref(), Some(&b"x"[..]));
    ring.shutdown(false);
    assert_eq!(ring.wait_readable(within(5_000), WaitPolicy::DEFAULT).unwrap(), Attempt::Done, "shutdown is readable");
}

fn growing(first_ring: u64, slots: u64) -> SharedQueue {
    SharedQueue::create(QueueConfig { slots, first_ring, heap_bytes: 1 << 20, lock_free: false, joinable: false })
        .unwrap()
}

#[test]
fn a_full_ring_grows_up_to_the_capacity_keeping_fifo() {
    let q = growing(4, 64);
    assert_eq!((q.ring_capacity(), q.capacity()), (4, 64));
    for i in 0..64u32 {
        assert_eq!(put(&q, &i.to_le_bytes()), Attempt::Done, "item {i}");
    }
    assert_eq!(q.ring_capacity(), 64, "rings of 4, 16, then 64 slots");
    assert_eq!(put(&q, b"one too many"), Attempt::WouldBlock, "the capacity is a bound");
    assert_eq!(q.len(), 64);
    for i in 0..64u32 {
        assert_eq!(get(&q), Some(i.to_le_bytes().to_vec()), "FIFO across the rings");
    }
    assert_eq!(get(&q), None);
    assert_eq!(q.header().head_ring.load(Ordering::Relaxed), 2, "consumers followed into the last ring");
    // The last ring is reused lap after lap.
    for round in 0..300u32 {
        assert_eq!(put(&q, &round.to_le_bytes()), Attempt::Done);
        assert_eq!(get(&q), Some(round.to_le_bytes().to_vec()));
    }
}

#[test]
fn the_capacity_bounds_the_items_while_older_rings_drain() {
    // Rings of 4 and 6 slots, capacity 6: with the first ring still full, the second takes only 2 more.
    let q = growing(4, 6);
    for i in 0..6u8 {
        assert_eq!(put(&q, &[i]), Attempt::Done);
    }
    assert_eq!(put(&q, &[6]), Attempt::WouldBlock, "6 items is the capacity, though ring 1 has free slots");
    assert!(!q.ring().unwrap().writable());
    assert_eq!(get(&q), Some(vec![0]));
    assert_eq!(put(&q, &[6]), Attempt::Done);
    for i in 1..7u8 {
        assert_eq!(get(&q), Some(vec![i]));
    }
    assert_eq!(get(&q), None);
}

#[test]
fn an_empty_default_queue_holds_well_under_a_mebibyte() {
    let q = SharedQueue::create(QueueConfig::default()).unwrap();
    let path = format!("/dev/shm/{}", q.segment().name_local());
    let blocks = || std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512).unwrap();
    assert!(blocks() < 256 << 10, "{} bytes allocated", blocks());
    for i in 0..65_536u32 {
        assert_eq!(put(&q, &i.to_le_bytes()), Attempt::Done);
    }
    assert_eq!(put(&q, b"x"), Attempt::WouldBlock);
    assert_eq!(q.ring_capacity(), 65_536);
    let full = blocks();
    assert!((4 << 20..6 << 20).contains(&full), "{full} bytes allocated with every ring in use");
}

#[test]
fn threads_mpmc_through_growth_keep_order_per_producer() {
    const P: u32 = 3;
    const N: u32 = 5_000;
    for _ in 0..5 {
        let q = growing(2, 512);
        let received = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for p in 0..P {
                let q = &q;
                s.spawn(move || {
                    for i in 0..N {
                        let mut m = [0u8; 8];
                        m[..4].copy_from_slice(&p.to_le_bytes());
                        m[4..].copy_from_slice(&i.to_le_bytes());
                        assert_eq!(
                            q.ring().unwrap().put(&m, within(30_000), WaitPolicy::DEFAULT).unwrap(),
                            Attempt::Done
                        );
                    }
                });
            }
            for _ in 0..2 {
                let (q, received) = (&q, &received);
                s.spawn(move || {
                    let mut mine = vec![];
                    let mut out = vec![];
                    loop {
                        out.clear();
                        match q.ring().unwrap().get(&mut out, within(300), WaitPolicy::DEFAULT).unwrap() {
                            Attempt::Done => mine.push((
                                u32::from_le_bytes(out[..4].try_into().unwrap()),
                                u32::from_le_bytes(out[4..8].try_into().unwrap()),
                            )),
                            _ => break,
                        }
                    }
                    received.lock().unwrap().push(mine);
                });
            }
        });
        let per_consumer = received.into_inner().unwrap();
        for mine in &per_consumer {
            for p in 0..P {
                let seq: Vec<u32> = mine.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]), "producer {p}'s items out of order at a consumer");
            }
        }
        let mut all: Vec<(u32, u32)> = per_consumer.into_iter().flatten().collect();
        all.sort();
        let expected: Vec<(u32, u32)> = (0..P).flat_map(|p| (0..N).map(move |i| (p, i))).collect();
        assert_eq!(all, expected, "every message exactly once");
    }
}

#[test]
fn a_grower_that_died_is_cleaned_up_by_the_slice_end_scan() {
    let q = growing(2, 8);
    put(&q, b"a");
    put(&q, b"b");
    // A dead process holds the growth claim: the full ring cannot grow for now.
    q.header().grow_owner.store(dead_owner().0, Ordering::Relaxed);
    assert_eq!(put(&q, b"c"), Attempt::WouldBlock);
    assert!(!q.ring().unwrap().writable(), "an asyncio put sleeps rather than retrying at once");
    q.recover_dead_participants();
    assert!(q.ring().unwrap().writable());
    assert_eq!(put(&q, b"c"), Attempt::Done, "the dead claim was cleared");
    // A grower killed after moving `tail` into the next ring but before publishing where the old one ends.
    assert_eq!(q.ring_capacity(), 8);
    q.header().ends[0].store(0, Ordering::Relaxed);
    assert_eq!(get(&q), Some(b"a".to_vec()));
    assert_eq!(get(&q), Some(b"b".to_vec()));
    assert_eq!(get(&q), None, "consumers do not know yet that ring 0 ended");
    q.recover_dead_participants();
    assert_eq!(get(&q), Some(b"c".to_vec()));
}

#[test]
fn a_consumer_killed_in_an_older_ring_is_redelivered_after_growth() {
    let q = growing(2, 8);
    put(&q, b"a");
    put(&q, b"b");
    put(&q, b"c"); // in ring 1
    let dead = fake_dead_participant(&q);
    let h = q.header().head.load(Ordering::Relaxed);
    let op = &q.parts()[dead].ops[0];
    op.kind.store(OP_GET, Ordering::Relaxed);
    op.pos.store(h, Ordering::Relaxed);
    q.slots()[0].state.store(word(0, state::READING, dead as u16 + 1), Ordering::Relaxed);
    q.header().head.store(h + 1, Ordering::Relaxed);
    assert_eq!(get(&q), Some(b"b".to_vec()));
    assert_eq!(get(&q), Some(b"c".to_vec()));
    assert_eq!(q.recover_dead_participants(), 1);
    assert_eq!(get(&q), Some(b"a".to_vec()), "redelivered from ring 0");
    assert_eq!(get(&q), None);
}

#[test]
fn a_corrupt_ring_configuration_is_an_error() {
    let q = growing(4, 64);
    assert_eq!(q.header().rings.load(Ordering::Relaxed), 3);
    q.header().rings.store(2, Ordering::Relaxed);
    assert!(matches!(SharedQueue::from_segment(q.segment().clone()), Err(Error::Corrupt(_))));
    q.header().rings.store(5, Ordering::Relaxed);
    q.header().first_slots.store(0, Ordering::Relaxed);
    assert!(matches!(SharedQueue::from_segment(q.segment().clone()), Err(Error::Corrupt(_))));
    q.header().first_slots.store(4, Ordering::Relaxed);
    // A cursor naming a ring that does not exist: an error, not a wild access.
    q.header().tail.store(cursor(200, 0), Ordering::Relaxed);
    assert!(matches!(q.ring().unwrap().put(b"x", now(), WaitPolicy::DEFAULT), Err(Error::Corrupt(_))));
}
