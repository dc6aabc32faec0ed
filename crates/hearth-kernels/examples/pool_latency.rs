//! Measures the cost of one `ThreadPool::run` dispatch with trivial tasks,
//! back to back and after idle gaps: `pool_latency [threads]`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hearth_kernels::ThreadPool;

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    let counter = AtomicUsize::new(0);
    let task = |i: usize| {
        counter.fetch_add(i, Ordering::Relaxed);
    };
    for gap_us in [0u64, 20, 100, 1000] {
        let mut samples = Vec::new();
        for _ in 0..2000 {
            if gap_us > 0 {
                let until = Instant::now() + Duration::from_micros(gap_us);
                if gap_us >= 1000 {
                    std::thread::sleep(Duration::from_micros(gap_us));
                } else {
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            }
            let t = Instant::now();
            pool.run(2 * threads, &task);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "{threads} threads, gap {gap_us:4} us: median {:.2} us, p90 {:.2} us, p99 {:.2} us",
            samples[samples.len() / 2],
            samples[samples.len() * 9 / 10],
            samples[samples.len() * 99 / 100]
        );
    }
}
