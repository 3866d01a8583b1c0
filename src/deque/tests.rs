use super::*;
use std::collections::VecDeque;
use std::time::Duration;

fn forever() -> Deadline {
    Deadline::after(None)
}

fn contents(d: &SharedDeque) -> Vec<Vec<u8>> {
    let g = d.lock(&forever()).unwrap();
    let mut buf = Vec::new();
    g.dump(&mut buf).unwrap();
    records(&buf).map(|r| r.unwrap().1.to_vec()).collect()
}

fn model(m: &VecDeque<Vec<u8>>) -> Vec<Vec<u8>> {
    m.iter().cloned().collect()
}

#[test]
fn matches_a_vecdeque_under_random_operations() {
    let d = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    let mut m: VecDeque<Vec<u8>> = VecDeque::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::new();
    for step in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let item = format!("item{step}-{}", "x".repeat((x % 300) as usize)).into_bytes();
        let mut g = d.lock(&forever()).unwrap();
        match x % 11 {
            0..=2 => {
                g.push(End::Back, &item).unwrap();
                m.push_back(item);
            }
            3 | 4 => {
                g.push(End::Front, &item).unwrap();
                m.push_front(item);
            }
            5 => {
                out.clear();
                assert_eq!(g.pop(End::Back, &mut out).unwrap(), m.back().is_some());
                if let Some(v) = m.pop_back() {
                    assert_eq!(out, v);
                }
            }
            6 => {
                out.clear();
                assert_eq!(g.pop(End::Front, &mut out).unwrap(), m.front().is_some());
                if let Some(v) = m.pop_front() {
                    assert_eq!(out, v);
                }
            }
            7 => {
                let n = (x >> 20) as i64 % 7 - 3;
                g.rotate(n).unwrap();
                if !m.is_empty() {
                    let k = n.rem_euclid(m.len() as i64) as usize;
                    m.rotate_right(k);
                }
            }
            8 if !m.is_empty() => {
                let i = (x >> 24) % m.len() as u64;
                assert!(g.remove_at(i).unwrap());
                m.remove(i as usize);
            }
            9 if !m.is_empty() => {
                let i = (x >> 24) % m.len() as u64;
                out.clear();
                assert!(g.get(i, &mut out).unwrap());
                assert_eq!(out, m[i as usize]);
            }
            10 if step % 500 == 0 => {
                g.clear().unwrap();
                m.clear();
            }
            _ => {}
        }
        assert_eq!(g.len(), m.len() as u64);
        drop(g);
        if step % 997 == 0 {
            assert_eq!(contents(&d), model(&m));
        }
    }
    assert_eq!(contents(&d), model(&m));
    // Nothing leaked: the blocks in use are the ring and the items.
    let mut g = d.lock(&forever()).unwrap();
    assert_eq!(g.reclaim().unwrap(), 0);
    assert_eq!(g.used_blocks().unwrap(), m.len() as u64 + 1);
}

#[test]
fn rotate_matches_collections_deque_semantics() {
    let d = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    for len in [0u64, 1, 2, 5, 8, 9, 16] {
        for n in [-20i64, -9, -1, 0, 1, 3, 8, 17] {
            let mut g = d.lock(&forever()).unwrap();
            g.clear().unwrap();
            let mut m: VecDeque<Vec<u8>> = VecDeque::new();
            for i in 0..len {
                g.push(End::Back, &[i as u8]).unwrap();
                m.push_back(vec![i as u8]);
            }
            g.rotate(n).unwrap();
            if len > 0 {
                m.rotate_right(n.rem_euclid(len as i64) as usize);
            }
            drop(g);
            assert_eq!(contents(&d), model(&m), "len {len}, rotate {n}");
        }
    }
}

#[test]
fn maxlen_drops_from_the_other_end() {
    let d = SharedDeque::create(Some(3), DEFAULT_HEAP_BYTES).unwrap();
    let mut g = d.lock(&forever()).unwrap();
    for i in 0..5u8 {
        g.push(End::Back, &[i]).unwrap();
    }
    drop(g);
    assert_eq!(contents(&d), vec![vec![2], vec![3], vec![4]]);
    let mut g = d.lock(&forever()).unwrap();
    g.push(End::Front, &[9]).unwrap();
    drop(g);
    assert_eq!(contents(&d), vec![vec![9], vec![2], vec![3]]);
    let z = SharedDeque::create(Some(0), DEFAULT_HEAP_BYTES).unwrap();
    z.lock(&forever()).unwrap().push(End::Back, b"x").unwrap();
    assert_eq!(z.len(), 0);
    let mut g = d.lock(&forever()).unwrap();
    assert_eq!(g.reclaim().unwrap(), 0);
    assert_eq!(g.used_blocks().unwrap(), 4);
}

#[test]
fn grows_into_extension_segments_and_shrinks_its_ring() {
    let d = SharedDeque::create(None, 16 << 10).unwrap();
    let item = vec![7u8; 1000];
    let mut g = d.lock(&forever()).unwrap();
    for _ in 0..2000 {
        g.push(End::Back, &item).unwrap();
    }
    assert_eq!(g.len(), 2000);
    drop(g);
    assert!(d.segments() > 1, "a 16 KiB heap cannot hold 2 MB");
    // Another handle (a fresh open) sees every item.
    let e = SharedDeque::open(d.segment().name()).unwrap();
    assert_eq!(contents(&e).len(), 2000);
    let mut g = e.lock(&forever()).unwrap();
    let mut out = Vec::new();
    while g.pop(End::Front, &mut out).unwrap() {
        assert_eq!(out, item);
        out.clear();
    }
    assert_eq!(d.header().cap.load(Ordering::Relaxed), MIN_RING);
    assert_eq!(g.used_blocks().unwrap(), 1);
}

#[test]
fn remove_by_id_finds_the_item_after_others_moved() {
    let d = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    let mut g = d.lock(&forever()).unwrap();
    for i in 0..10u8 {
        g.push(End::Back, &[i]).unwrap();
    }
    let mut buf = Vec::new();
    g.dump(&mut buf).unwrap();
    let id5 = records(&buf).nth(5).unwrap().unwrap().0;
    g.push(End::Front, b"new").unwrap();
    g.rotate(3).unwrap();
    assert!(g.remove_id(id5).unwrap());
    assert!(!g.remove_id(id5).unwrap());
    drop(g);
    let c = contents(&d);
    assert_eq!(c.len(), 10);
    assert!(!c.contains(&vec![5]));
}

#[test]
fn blocked_pop_wakes_on_push_from_another_thread() {
    let d = std::sync::Arc::new(SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap());
    let d2 = d.clone();
    let t = std::thread::spawn(move || {
        let dl = Deadline::after(Some(Duration::from_secs(20)));
        assert!(d2.wait_nonempty(&dl).unwrap());
    });
    std::thread::sleep(Duration::from_millis(50));
    d.lock(&forever()).unwrap().push(End::Back, b"x").unwrap();
    t.join().unwrap();
    // Timeout on an empty deque.
    let e = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    assert!(!e.wait_nonempty(&Deadline::after(Some(Duration::from_millis(30)))).unwrap());
}

#[test]
fn repair_rolls_recorded_operations_forward() {
    let d = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    let mut g = d.lock(&forever()).unwrap();
    for i in 0..5u8 {
        g.push(End::Back, &[i]).unwrap();
    }
    // A half-done rotation: intent written, one step of three done.
    let (head, _) = g.state();
    let ring = g.ring().unwrap();
    let cap = ring.cap;
    let it = &d.header().intent;
    it.a.store(head.wrapping_sub(3) & (cap - 1), Ordering::Relaxed);
    it.b.store(0, Ordering::Relaxed);
    it.op.store(OP_ROTATE, Ordering::Release);
    g.rotate_step(&ring, true);
    drop(g);
    // The next locker sees the intent and completes it.
    let g = d.lock(&forever()).unwrap();
    assert_eq!(d.repairs(), 1);
    drop(g);
    assert_eq!(contents(&d), vec![vec![2], vec![3], vec![4], vec![0], vec![1]]);
    // A half-done ring replacement: the new ring written, intent set, nothing stored yet.
    let g = d.lock(&forever()).unwrap();
    let (head, len) = g.state();
    let old = g.ring().unwrap();
    let nr = d.alloc(16 * 8).unwrap();
    let new = d.ring_at(nr, 16).unwrap();
    for k in 0..len {
        new.slot(k).store(old.slot(head + k).load(Ordering::Relaxed), Ordering::Relaxed);
    }
    it.a.store(nr, Ordering::Relaxed);
    it.b.store(16, Ordering::Relaxed);
    it.c.store(span(0, len), Ordering::Relaxed);
    it.op.store(OP_SWAP_RING, Ordering::Release);
    drop(g);
    let mut g = d.lock(&forever()).unwrap();
    assert_eq!(d.header().cap.load(Ordering::Relaxed), 16);
    // The old ring was freed by the repair's reclaim.
    assert_eq!(g.used_blocks().unwrap(), 6);
    assert_eq!(g.reclaim().unwrap(), 0);
    drop(g);
    assert_eq!(contents(&d), vec![vec![2], vec![3], vec![4], vec![0], vec![1]]);
}

#[test]
fn corrupt_references_are_dropped_not_followed() {
    let d = SharedDeque::create(None, DEFAULT_HEAP_BYTES).unwrap();
    let mut g = d.lock(&forever()).unwrap();
    for i in 0..4u8 {
        g.push(End::Back, &[i]).unwrap();
    }
    let (head, _) = g.state();
    g.ring().unwrap().slot(head + 1).store(make_ref(0, 1 << 39), Ordering::Relaxed);
    let mut out = Vec::new();
    assert!(g.get(1, &mut out).is_err());
    g.repair().unwrap();
    drop(g);
    assert_eq!(contents(&d), vec![vec![0], vec![2], vec![3]]);
    // A garbage ring becomes an empty one.
    d.header().cap.store(3, Ordering::Relaxed);
    let mut g = d.lock(&forever()).unwrap();
    g.repair().unwrap();
    assert_eq!(g.len(), 0);
    assert_eq!(g.used_blocks().unwrap(), 1);
}
