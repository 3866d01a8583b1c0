//! The shared deque used by several processes, some of them killed (`_exit` at a crash point, or SIGKILL) in
//! the middle of operations: afterwards the deque must hold only whole items, leak no block, and keep working.
//!
//! Child processes are this test binary re-run on `child_worker` with `PYCONC_DEQUE_CHILD` set.

use pyconc::base::atomic::Ordering;
use pyconc::deque::{records, End, SharedDeque, CRASH_POINT};
use pyconc::platform::futex::Deadline;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// An item: its tag repeated up to a length that varies, so a torn or mixed item is detected.
fn item(tag: u64, x: u64) -> Vec<u8> {
    let t = format!("<{tag}>");
    t.as_bytes().iter().cycle().take(t.len() * (1 + (x % 40) as usize)).copied().collect()
}

fn valid(v: &[u8]) -> bool {
    let Some(end) = v.iter().position(|&b| b == b'>') else { return false };
    let t = &v[..=end];
    v[0] == b'<' && v.len() % t.len() == 0 && v.chunks(t.len()).all(|c| c == t)
}

fn forever() -> Deadline {
    Deadline::after(None)
}

fn work(d: &SharedDeque, id: u64, rounds: u64) {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    for round in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut g = d.lock(&forever()).unwrap();
        match x % 16 {
            0..=4 => g.push(End::Back, &item(id * 1_000_000 + round, x >> 8)).unwrap(),
            5..=7 => g.push(End::Front, &item(id * 1_000_000 + round, x >> 8)).unwrap(),
            8..=10 => {
                out.clear();
                if g.pop(End::Front, &mut out).unwrap() {
                    assert!(valid(&out), "torn item");
                }
            }
            11 | 12 => {
                out.clear();
                if g.pop(End::Back, &mut out).unwrap() {
                    assert!(valid(&out), "torn item");
                }
            }
            13 => g.rotate((x >> 16) as i64 % 9 - 4).unwrap(),
            14 => {
                let n = g.len();
                if n > 2 {
                    g.remove_at((x >> 20) % n).unwrap();
                }
            }
            _ => {
                if (x >> 12) % 50 == 0 {
                    g.clear().unwrap();
                }
            }
        }
    }
}

#[test]
fn child_worker() {
    let Ok(spec) = std::env::var("PYCONC_DEQUE_CHILD") else {
        return;
    };
    let mut parts = spec.split(':');
    let name = parts.next().unwrap();
    let id: u64 = parts.next().unwrap().parse().unwrap();
    let crash: u32 = parts.next().unwrap().parse().unwrap();
    let d = SharedDeque::open(name).unwrap();
    work(&d, id, 500);
    CRASH_POINT.store(crash, Ordering::Relaxed);
    work(&d, id + 1000, 10_000_000);
}

fn spawn(name: &str, id: u64, crash: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_worker", "--quiet", "--test-threads=1"])
        .env("PYCONC_DEQUE_CHILD", format!("{name}:{id}:{crash}"))
        .spawn()
        .unwrap()
}

/// Every item whole, and the blocks in use are exactly the ring and the items.
fn check(d: &SharedDeque) {
    let mut g = d.lock(&Deadline::after(Some(Duration::from_secs(10)))).expect("deque lock");
    let mut buf = Vec::new();
    let n = g.dump(&mut buf).unwrap();
    for r in records(&buf) {
        assert!(valid(r.unwrap().1), "torn item");
    }
    assert_eq!(g.reclaim().unwrap(), 0, "the repair freed every leaked block");
    assert_eq!(g.used_blocks().unwrap(), n as u64 + 1);
}

#[test]
fn holders_killed_mid_operation_leave_the_deque_consistent() {
    if std::env::var("PYCONC_DEQUE_CHILD").is_ok() {
        return;
    }
    // A small first heap and a maxlen: segment growth (crash point 8) and maxlen drops (2) happen.
    let d = SharedDeque::create(Some(3000), 16 << 10).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for crash in 1..=9u32 {
        let mut c = spawn(d.segment().name(), crash as u64, crash);
        work(&d, 77 + crash as u64, 300);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert_eq!(st.code(), Some(9), "crash point {crash} was reached");
                break;
            }
            assert!(Instant::now() < deadline, "child hung");
            std::thread::sleep(Duration::from_millis(5));
        }
        check(&d);
    }
    assert!(d.repairs() >= 9, "every crash point left a dead holder or an intent");
    for round in 0..6u64 {
        let mut kids: Vec<Child> = (0..2).map(|i| spawn(d.segment().name(), 100 + round * 2 + i, 0)).collect();
        std::thread::sleep(Duration::from_millis(20 + (round * 37) % 60));
        for c in &mut kids {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        check(&d);
        work(&d, 500 + round, 500);
    }
    check(&d);
}
