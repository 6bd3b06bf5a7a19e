//! Unit tests of the heartbeat slots and the load board at their edges
//! (beside `heartbeat.rs` so that file's own tests stay as they are): every
//! slot's words are its own, siblings are looked at up to the highest slot
//! handed out, a published 0 is a load, the clock is the monotonic clock
//! in milliseconds, and the last handle's drop unmaps the slots.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::heartbeat::{Heartbeat, LoadBoard, Slots, now_ms};

fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[test]
fn now_ms_is_the_monotonic_clock_in_milliseconds() {
    // The coarse clock lags the fine one by at most a tick (1 to 10 ms).
    let (before, now, after) = (monotonic_ms(), now_ms(), monotonic_ms());
    assert!(
        now + 20 >= before && now <= after,
        "{before} <= {now} <= {after}"
    );
    // And it advances with time.
    let t0 = Instant::now();
    let a = now_ms();
    std::thread::sleep(Duration::from_millis(60));
    let b = now_ms();
    let took = t0.elapsed().as_millis() as u64;
    assert!(
        b - a + 20 >= took && b - a <= took + 20,
        "{} ms on the clock in {took} ms",
        b - a
    );
}

#[test]
fn each_slot_has_its_own_beat_and_load() {
    let slots = Slots::new(4).unwrap();
    assert_eq!(slots.len(), 4);
    for i in 0..4 {
        slots.prepare(i);
    }
    let beats: Vec<Heartbeat> = (0..4).map(|i| Heartbeat::new(slots.clone(), i)).collect();
    let boards: Vec<LoadBoard> = (0..4).map(|i| LoadBoard::new(slots.clone(), i)).collect();
    for (i, b) in boards.iter().enumerate() {
        b.publish(Some(10 + i));
    }
    // Publishing touches no beat.
    for i in 0..4 {
        assert_eq!(slots.slot(i).load(Ordering::Relaxed), 0, "slot {i}");
    }
    beats[2].beat();
    let beat = slots.slot(2).load(Ordering::Relaxed);
    assert!(beat > 0);
    // Beating touches no load: each board sees its siblings' loads.
    for (i, b) in boards.iter().enumerate() {
        let want = if i == 0 { 11 } else { 10 };
        assert_eq!(b.least_loaded(), Some(want), "board {i}");
    }
    for i in 0..4 {
        let want = if i == 2 { beat } else { 0 };
        assert_eq!(slots.slot(i).load(Ordering::Relaxed), want, "slot {i}");
    }
}

#[test]
fn slot_2_publishing_0_is_a_sibling_with_no_connections() {
    let slots = Slots::new(4).unwrap();
    for i in 0..4 {
        slots.prepare(i);
    }
    let boards: Vec<LoadBoard> = (0..4).map(|i| LoadBoard::new(slots.clone(), i)).collect();
    boards[2].publish(Some(0));
    boards[3].publish(Some(4));
    assert_eq!(boards[0].least_loaded(), Some(0));
    assert_eq!(boards[1].least_loaded(), Some(0));
    assert_eq!(boards[2].least_loaded(), Some(4));
    // The largest count is still a count, not "not accepting".
    boards[2].publish(Some(usize::MAX));
    assert_eq!(boards[2].least_loaded(), Some(4));
    boards[3].publish(None);
    assert_eq!(
        boards[0].least_loaded(),
        Some((u64::MAX - 1).min(usize::MAX as u64) as usize)
    );
}

#[test]
fn only_the_last_slot_handed_out_publishing_is_seen() {
    let slots = Slots::new(8).unwrap();
    // Slot 0 and slot 3 in use (1 and 2 free, 4 to 7 never handed out).
    slots.prepare(0);
    slots.prepare(3);
    let first = LoadBoard::new(slots.clone(), 0);
    let last = LoadBoard::new(slots.clone(), 3);
    assert_eq!(first.least_loaded(), None);
    last.publish(Some(2));
    assert_eq!(first.least_loaded(), Some(2));
    assert_eq!(last.least_loaded(), None);
    first.publish(Some(5));
    assert_eq!(last.least_loaded(), Some(5));
    // Slots past the highest handed out are not looked at.
    LoadBoard::new(slots.clone(), 6).publish(Some(1));
    assert_eq!(first.least_loaded(), Some(2));
    slots.prepare(6);
    LoadBoard::new(slots.clone(), 6).publish(Some(1));
    assert_eq!(first.least_loaded(), Some(1));
    // A slot handed out again is at "not accepting" until it publishes.
    slots.prepare(3);
    slots.prepare(6);
    assert_eq!(first.least_loaded(), None);
}

#[test]
fn debug_says_which_slot() {
    let slots = Slots::new(2).unwrap();
    let hb = format!("{:?}", Heartbeat::new(slots.clone(), 1));
    assert!(
        hb.contains("slot: 1") && hb.contains("watched: true"),
        "{hb}"
    );
    let hb = format!("{:?}", Heartbeat::noop());
    assert!(hb.contains("watched: false"), "{hb}");
    let lb = format!("{:?}", LoadBoard::new(slots, 1));
    assert!(
        lb.contains("slot: 1") && lb.contains("shared: true"),
        "{lb}"
    );
    let lb = format!("{:?}", LoadBoard::alone());
    assert!(lb.contains("shared: false"), "{lb}");
}

#[test]
fn planned_exit_marks_are_words_of_their_own() {
    // The planned-exit marks follow the beats, the loads and the in-use
    // word: a mark must touch none of them, nor another slot's mark.
    let slots = Slots::new(4).unwrap();
    for i in 0..4 {
        slots.prepare(i);
    }
    let snapshot = |slots: &Slots| -> Vec<u64> {
        (0..4)
            .flat_map(|j| {
                [
                    slots.slot(j).load(Ordering::SeqCst),
                    slots.load(j).load(Ordering::SeqCst),
                ]
            })
            .collect()
    };
    for j in 0..4 {
        LoadBoard::new(slots.clone(), j).publish(Some(10 + j));
    }
    let before = snapshot(&slots);
    // Slot 0's siblings are slots 1 to 3 (the in-use word); the least
    // loaded of them holds 11.
    let siblings_seen = LoadBoard::new(slots.clone(), 0).least_loaded();
    assert_eq!(siblings_seen, Some(11));
    for i in 0..4 {
        Heartbeat::new(slots.clone(), i).planned_exit();
        for j in 0..4 {
            let want = u64::from(j <= i);
            assert_eq!(slots.planned(j).load(Ordering::SeqCst), want, "{i} {j}");
        }
        assert_eq!(snapshot(&slots), before, "mark {i}");
        assert_eq!(
            LoadBoard::new(slots.clone(), 0).least_loaded(),
            siblings_seen,
            "mark {i}"
        );
    }
    // And beats and loads leave the marks alone.
    for i in 0..4 {
        Heartbeat::new(slots.clone(), i).beat();
        LoadBoard::new(slots.clone(), i).publish(Some(7));
    }
    for j in 0..4 {
        assert_eq!(slots.planned(j).load(Ordering::SeqCst), 1, "{j}");
    }
    // A new worker in a slot starts unmarked.
    slots.prepare(1);
    assert_eq!(slots.planned(1).load(Ordering::SeqCst), 0);
    assert_eq!(slots.planned(2).load(Ordering::SeqCst), 1);
}

/// The mapping `[start, end)` with permissions `perms`, as
/// `/proc/self/maps` lists it now.
fn mapped(start: usize, end: usize, perms: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let mut f = l.split_whitespace();
        let range = f.next().unwrap_or("");
        let p = f.next().unwrap_or("");
        let (a, b) = range.split_once('-').unwrap_or(("", ""));
        usize::from_str_radix(a, 16) == Ok(start)
            && usize::from_str_radix(b, 16) == Ok(end)
            && p == perms
    })
}

#[test]
fn dropping_the_last_handle_unmaps_the_slots() {
    // A size no other test maps (5000 slots: 120 008 bytes, 30 pages), so
    // another test's mapping cannot take the freed range and look like it.
    let slots = Slots::new(5000).unwrap();
    let start = slots.slot(0) as *const _ as usize;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let end = start + ((3 * 5000 + 1) * 8usize).div_ceil(page) * page;
    assert!(mapped(start, end, "rw-s"), "{start:#x}-{end:#x} not mapped");
    let other = slots.clone();
    drop(slots);
    // Another handle keeps it mapped...
    assert!(mapped(start, end, "rw-s"));
    assert_eq!(other.slot(4999).load(Ordering::Relaxed), 0);
    // ...and the last one unmaps it (a supervisor embedded in a longer-lived
    // program leaks nothing per Arbiter).
    drop(other);
    assert!(
        !mapped(start, end, "rw-s"),
        "{start:#x}-{end:#x} still mapped"
    );
}
