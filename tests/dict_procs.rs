//! The shared dict used by several processes, some of them SIGKILLed (or `_exit`ing) in the middle of writes:
//! afterwards every shard must be readable and consistent (every value matches its key, counters match).
//!
//! Child processes are this test binary re-run on `child_worker` (`pyconc::base::child`).

use pyconc::base::atomic::Ordering;
use pyconc::base::child;
use pyconc::codec::stable_hash;
use pyconc::dict::{records, Read, SharedDict, CRASH_POINT};
use pyconc::platform::futex::Deadline;
use std::process::Child;
use std::time::{Duration, Instant};

/// Values are the key repeated up to a length that varies with `round`, so a torn or mixed value is detected.
fn value(key: &[u8], round: u64) -> Vec<u8> {
    key.iter().cycle().take(key.len() * (1 + (round % 7) as usize)).copied().collect()
}

fn valid(key: &[u8], v: &[u8]) -> bool {
    !v.is_empty() && v.len() % key.len() == 0 && v.chunks(key.len()).all(|c| c == key)
}

fn work(d: &SharedDict, id: u64, rounds: u64, keys: u64) {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    for round in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("k{}", x % keys).into_bytes();
        let h = stable_hash(&key);
        match (x >> 29) % 4 {
            0 | 1 => {
                let v = value(&key, round);
                // Half the sets try the lock-free in-place overwrite first, as the Python layer does.
                if (x >> 40) & 1 == 0 && d.try_overwrite(&key, h, &v).unwrap() {
                    continue;
                }
                let mut g = d.lock(d.shard_index(h), &Deadline::after(None)).unwrap();
                g.set(&key, h, b"", &v).unwrap();
            }
            2 => {
                let mut g = d.lock(d.shard_index(h), &Deadline::after(None)).unwrap();
                g.remove(&key, h, None).unwrap();
            }
            _ => match d.get_into(&key, h, &mut out).unwrap() {
                Read::Found => assert!(valid(&key, &out), "torn value for {key:?}"),
                Read::Missing => {}
                Read::Busy => {
                    let mut g = d.lock(d.shard_index(h), &Deadline::after(None)).unwrap();
                    if g.get_into(&key, h, &mut out).unwrap() {
                        assert!(valid(&key, &out));
                    }
                }
            },
        }
    }
}

#[test]
fn child_worker() {
    let Some(spec) = child::spec() else {
        return;
    };
    let mut parts = spec.split(':');
    let name = parts.next().unwrap();
    let id: u64 = parts.next().unwrap().parse().unwrap();
    let crash: u32 = parts.next().unwrap().parse().unwrap();
    let d = SharedDict::open(name).unwrap();
    // Run clean for a while, then arm the crash point (if any): the process `_exit`s inside a write.
    work(&d, id, 2000, 300);
    CRASH_POINT.store(crash, Ordering::Relaxed);
    // Growing key space: table growth (crash point 8) happens too.
    work(&d, id + 1000, 1_000_000, if crash == 8 { 50_000 } else { 300 });
}

fn spawn(name: &str, id: u64, crash: u32) -> Child {
    child::spawn("child_worker", &format!("{name}:{id}:{crash}"))
}

fn check(d: &SharedDict) {
    let mut buf = Vec::new();
    let mut total = 0u64;
    for s in 0..d.nshards() {
        let g = d.lock(s, &Deadline::after(Some(Duration::from_secs(10)))).expect("shard lock");
        let n = g.dump(&mut buf).unwrap();
        for r in records(&buf) {
            let (k, _, v) = r.unwrap();
            assert!(valid(k, v), "shard {s}: value of {k:?} is torn");
        }
        total += n as u64;
    }
    assert_eq!(total, d.len().unwrap(), "shard counters match the entries");
}

#[test]
fn writers_killed_mid_write_leave_the_dict_consistent() {
    if child::spec().is_some() {
        return;
    }
    let d = SharedDict::create(3, 8 << 20).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Crash points 1..=10 (`_exit` inside a write; 9 and 10 inside an in-place overwrite), then random SIGKILLs.
    for crash in 1..=10u32 {
        let mut c = spawn(d.segment().name(), crash as u64, crash);
        work(&d, 77 + crash as u64, 300, 300);
        let st = child::wait(&mut c, deadline.saturating_duration_since(Instant::now()));
        assert_eq!(st.code(), Some(9), "crash point {crash} was reached");
        check(&d);
    }
    for round in 0..6u64 {
        let mut kids: Vec<Child> = (0..2).map(|i| spawn(d.segment().name(), 100 + round * 2 + i, 0)).collect();
        std::thread::sleep(Duration::from_millis(20 + (round * 37) % 60));
        for c in &mut kids {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        check(&d);
        work(&d, 500 + round, 500, 300);
    }
    check(&d);
    // The crash points leak blocks (built but never published, unpublished but never freed): reclaim finds
    // them, and a second pass finds nothing more.
    let dl = Deadline::after(Some(Duration::from_secs(30)));
    let freed = d.reclaim(Some(&dl)).unwrap().unwrap();
    assert!(freed > 0, "dead writers leaked blocks");
    assert_eq!(d.reclaim(Some(&dl)).unwrap(), Some(0));
    check(&d);
    work(&d, 900, 2000, 300);
    check(&d);
}
