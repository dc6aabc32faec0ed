//! A small scoped thread pool for data-parallel kernels.
//!
//! One loop (a *job*) runs at a time. The caller publishes the job in a
//! single atomic word holding a generation number and the count of
//! unclaimed task indices; workers and the caller claim indices with a
//! compare-and-swap on that word, so a worker that wakes up late can never
//! claim a task of a job that has already finished. The caller returns only
//! after every task of its job has run, which is what makes lending the
//! job's stack-borrowed closure to the workers sound.
//!
//! Idle workers wait for [`SPIN_WAIT`] (enough to bridge the gap between two
//! consecutive kernels of a decode step) and then sleep on a condition
//! variable, so an idle runtime costs no CPU and a machine whose cores are
//! shared is not starved by busy-waiting. While waiting they spin only for
//! about a microsecond and then yield the core between checks, so that a
//! thread they wait for which shares their core still gets to run. The
//! caller waits for stragglers the same way.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle thread spins before it goes to sleep.
pub const SPIN_WAIT: Duration = Duration::from_micros(60);

/// Busy-wait iterations (with a pause hint) before a waiting thread starts
/// yielding its core: about a microsecond.
const PURE_SPINS: u32 = 64;

/// How a thread waits for something another thread is about to do: a short
/// pure spin (cheapest when every thread has its own core), then yielding
/// the core between checks (so that a thread we wait for, if it shares our
/// core, gets to run), until [`SPIN_WAIT`] has passed and it is time to sleep.
struct Backoff {
    start: Instant,
    spins: u32,
}

impl Backoff {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            spins: 0,
        }
    }

    /// Waits a little; `false` once the thread should go to sleep instead.
    fn snooze(&mut self) -> bool {
        if self.spins < PURE_SPINS {
            self.spins += 1;
            std::hint::spin_loop();
            return true;
        }
        if self.start.elapsed() >= SPIN_WAIT {
            return false;
        }
        std::thread::yield_now();
        true
    }
}

/// Task count is kept in the low bits of the job word, the generation above.
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The job being run: a type-erased pointer to the caller's closure.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

/// Keeps a hot atomic on its own cache line, so that threads polling one
/// are not disturbed by writes to its neighbours.
#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    /// `generation << 32 | unclaimed tasks`.
    state: CacheLine<AtomicU64>,
    /// Points to the current [`Job`] on the caller's stack while its
    /// generation has unclaimed or running tasks.
    job: AtomicPtr<()>,
    /// Tasks of the current job that have finished.
    done: CacheLine<AtomicUsize>,
    /// The first panic payload of the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    shutdown: AtomicBool,
    /// Workers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Set while the caller sleeps waiting for the last tasks.
    caller_sleeping: AtomicBool,
    done_lock: Mutex<()>,
    all_done: Condvar,
}

/// A fixed set of worker threads that run data-parallel loops.
///
/// A loop started while another is running on the same pool (from a task,
/// or from another thread) runs serially on its calling thread instead.
pub struct ThreadPool {
    n_threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the thread whose job currently owns the workers.
    busy: AtomicBool,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the
    // protected data (a unit or a panic slot) stays valid.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Claims one task index of generation `generation`, if any is left.
    fn claim(&self, generation: u64) -> Option<usize> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state >> COUNT_BITS != generation || state & COUNT_MASK == 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some((state & COUNT_MASK) as usize - 1),
                Err(now) => state = now,
            }
        }
    }

    /// Runs claimed tasks of `generation` until none is left unclaimed.
    fn work(&self, generation: u64) {
        while let Some(index) = self.claim(generation) {
            // SAFETY: a successful claim means task `index` of this
            // generation has not finished, so the caller is still blocked in
            // `run` and the job it published (before the Release store of
            // the job word that our Acquire claim synchronises with) is alive.
            let job = unsafe { &*(self.job.load(Ordering::Acquire) as *const Job<'_>) };
            let task = job.task;
            let n_tasks = job.n_tasks;
            // Tasks were claimed from the top; run them in ascending order.
            let result = catch_unwind(AssertUnwindSafe(|| task(n_tasks - 1 - index)));
            if let Err(payload) = result {
                lock(&self.panic).get_or_insert(payload);
            }
            if self.done.fetch_add(1, Ordering::SeqCst) + 1 == n_tasks {
                self.notify_caller();
            }
        }
    }

    fn notify_caller(&self) {
        if self.caller_sleeping.load(Ordering::SeqCst) {
            let _guard = lock(&self.done_lock);
            self.all_done.notify_one();
        }
    }

    fn worker_loop(&self) {
        let mut seen = 0u64;
        loop {
            let mut backoff = Backoff::new();
            // Spin, then sleep, until a new generation or shutdown appears.
            let generation = loop {
                let generation = self.state.load(Ordering::Acquire) >> COUNT_BITS;
                if generation != seen {
                    break generation;
                }
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if backoff.snooze() {
                    continue;
                }
                let guard = lock(&self.sleep_lock);
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let generation = self.state.load(Ordering::SeqCst) >> COUNT_BITS;
                if generation == seen && !self.shutdown.load(Ordering::SeqCst) {
                    drop(self.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
                } else {
                    drop(guard);
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                backoff = Backoff::new();
            };
            seen = generation;
            self.work(generation);
        }
    }
}

impl ThreadPool {
    /// A pool that runs loops on `n_threads` threads in all, the calling
    /// thread included (so `n_threads - 1` workers are spawned). `0` is
    /// treated as 1. If a worker cannot be spawned the pool runs with the
    /// threads it got.
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            state: CacheLine(AtomicU64::new(0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: CacheLine(AtomicUsize::new(0)),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            caller_sleeping: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            all_done: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(n_threads - 1);
        for i in 1..n_threads {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("hearth-worker-{i}"))
                .spawn(move || shared.worker_loop());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(_) => break,
            }
        }
        Self {
            n_threads: workers.len() + 1,
            shared,
            workers,
            busy: AtomicBool::new(false),
        }
    }

    /// Threads used by each loop, the caller included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `task(i)` for every `i` in `0..n_tasks`, spread over the pool
    /// (the calling thread takes part); returns when all have finished. If
    /// a task panics, the remaining tasks still run and the first panic is
    /// then resumed on the calling thread.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if n_tasks == 1 || self.workers.is_empty() || n_tasks as u64 > COUNT_MASK {
            return (0..n_tasks).for_each(task);
        }
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return (0..n_tasks).for_each(task);
        }
        let shared = &*self.shared;
        let job = Job { task, n_tasks };
        shared.done.store(0, Ordering::Relaxed);
        shared
            .job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        // Generation 0 is what workers start out having seen; skip it on wrap.
        let generation =
            match ((shared.state.load(Ordering::Relaxed) >> COUNT_BITS) + 1) & COUNT_MASK {
                0 => 1,
                g => g,
            };
        shared
            .state
            .store(generation << COUNT_BITS | n_tasks as u64, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&shared.sleep_lock);
            shared.wake.notify_all();
        }
        shared.work(generation);
        self.wait_done(n_tasks);
        shared.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        let panic = lock(&shared.panic).take();
        self.busy.store(false, Ordering::Release);
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }

    /// Blocks until `n_tasks` tasks of the current job have finished.
    fn wait_done(&self, n_tasks: usize) {
        let shared = &*self.shared;
        let mut backoff = Backoff::new();
        while shared.done.load(Ordering::Acquire) != n_tasks {
            if backoff.snooze() {
                continue;
            }
            let guard = lock(&shared.done_lock);
            shared.caller_sleeping.store(true, Ordering::SeqCst);
            if shared.done.load(Ordering::SeqCst) != n_tasks {
                // The flag and the done count are both SeqCst, so the last
                // worker sees the flag; the timeout is only a backstop.
                let waited = shared
                    .all_done
                    .wait_timeout(guard, Duration::from_millis(1));
                drop(waited.unwrap_or_else(|e| e.into_inner()));
            } else {
                drop(guard);
            }
            shared.caller_sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// Splits `data` into chunks of `chunk_len` (the last may be shorter) and
    /// runs `task(chunk_index, chunk)` for each, spread over the pool.
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        task: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk_len = chunk_len.max(1);
        let len = data.len();
        let n_chunks = len.div_ceil(chunk_len);
        let base = SendPtr(data.as_mut_ptr());
        self.run(n_chunks, &|i| {
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            // SAFETY: chunk `i` covers `start..end`, inside `data` and
            // disjoint from every other chunk; each index runs exactly once
            // and `data` stays mutably borrowed until `run` returns.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            task(i, chunk);
        });
    }
}

/// A raw pointer that may cross threads; users guarantee disjoint access.
pub(crate) struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn new(ptr: *mut T) -> Self {
        Self(ptr)
    }
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only dereferenced by code that partitions the
// pointee into disjoint parts per task (see each use).
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; shared references to the wrapper only copy the pointer.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = lock(&self.shared.sleep_lock);
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker only ends by returning; a join error would mean it
            // panicked outside a task, which catch_unwind rules out.
            let _ = worker.join();
        }
    }
}
