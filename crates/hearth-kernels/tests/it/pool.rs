//! The thread pool runs every task once, survives panics and nests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hearth_kernels::ThreadPool;

#[test]
fn runs_every_task_exactly_once() {
    for threads in [1, 2, 3, 5] {
        let pool = ThreadPool::new(threads);
        assert_eq!(pool.n_threads(), threads);
        for n_tasks in [0, 1, 2, 7, 100, 1000] {
            let counts: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n_tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "{threads} threads, {n_tasks} tasks"
            );
        }
    }
}

#[test]
fn many_back_to_back_jobs() {
    let pool = ThreadPool::new(3);
    let total = AtomicUsize::new(0);
    for round in 0..2000 {
        pool.run(round % 5 + 2, &|i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
    }
    let expected: usize = (0..2000).map(|r| (1..=r % 5 + 2).sum::<usize>()).sum();
    assert_eq!(total.load(Ordering::Relaxed), expected);
}

#[test]
fn wakes_up_after_sleeping() {
    let pool = ThreadPool::new(2);
    let ran = AtomicUsize::new(0);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(5));
        pool.run(8, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(ran.load(Ordering::Relaxed), 24);
}

#[test]
fn propagates_panics_and_stays_usable() {
    let pool = ThreadPool::new(2);
    let ran = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(16, &|i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if i == 5 {
                panic!("task five");
            }
        });
    }));
    let payload = result.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task five"));
    assert_eq!(ran.load(Ordering::Relaxed), 16, "the other tasks still ran");
    let after = AtomicUsize::new(0);
    pool.run(10, &|_| {
        after.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(after.load(Ordering::Relaxed), 10);
}

#[test]
fn nested_loops_run_serially() {
    let pool = ThreadPool::new(2);
    let total = AtomicUsize::new(0);
    pool.run(4, &|_| {
        pool.run(3, &|_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(total.load(Ordering::Relaxed), 12);
}

#[test]
fn shared_between_threads() {
    let pool = ThreadPool::new(2);
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    pool.run(4, &|_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 3 * 200 * 4);
}

#[test]
fn chunks_cover_the_slice() {
    let pool = ThreadPool::new(3);
    let mut data = vec![0usize; 103];
    pool.for_each_chunk_mut(&mut data, 10, &|i, chunk| {
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = i * 10 + j;
        }
    });
    assert!(data.iter().enumerate().all(|(i, &v)| i == v));
    pool.for_each_chunk_mut(&mut data[..0], 10, &|_, _| panic!("no chunks"));
}
