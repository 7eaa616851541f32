import CKernels
import Foundation
import Synchronization

/// A fixed team of threads for `Threads.parallelFor`: the calling thread
/// plus `size - 1` workers that wait for the next loop by spinning for a
/// short while before they sleep.
///
/// Why: synthesis hands work to the other core at every layer of every row
/// (h16-c32: about 2,200 parallel loops of 20-200 µs per 2 s of audio).
/// `DispatchQueue.concurrentPerform` wakes a sleeping pool thread each
/// time; the wake-up and the idle wait cost h16-c32 synthesis a third of its
/// second core (measured on a Xeon, 2 cores: 1.3-1.4x the one-thread rate).
/// A worker that is still spinning picks a new loop up within a microsecond.
///
/// Spinning is bounded (`spinLimit`, then the worker sleeps on a condition
/// variable), so an idle program does not hold its cores. One caller at a
/// time: `run` returns false at once while another thread is running a
/// loop on the team, and the caller then uses another way.
final class WorkerTeam: @unchecked Sendable {
    /// Threads including the caller.
    let size: Int
    /// How long a worker (or the caller, waiting for the workers) spins before it sleeps or yields.
    static let spinLimit: UInt64 = 200_000 // ns

    /// Bumped (releasing) to publish a new loop in `task`/`count`.
    private let generation = Atomic<Int>(0)
    /// Workers that have not finished the current loop.
    private let pending = Atomic<Int>(0)
    /// Workers asleep (or about to sleep) on `wake`.
    private let sleepers = Atomic<Int>(0)
    /// Held by the one caller whose loop is on the team.
    private let busy = Atomic<Bool>(false)
    /// Whether workers spin after the current loop (else they sleep at once).
    private let linger = Atomic<Bool>(true)
    private var task: ((Int) -> Void)?
    private var count = 0
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()

    /// Starts `size - 1` worker threads. They hold the team, and both live
    /// as long as the process (asleep when unused).
    init(size: Int) {
        self.size = max(1, size)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        for w in 1..<self.size {
            let thread = Thread { self.work(worker: w) }
            thread.stackSize = 8 << 20
            thread.name = "waveflow worker \(w)"
            thread.start()
        }
    }

    /// Runs `body(i)` for i in 0..<n, thread t taking i = t, t + size, ...
    /// (the caller is thread 0); returns when all are done. Returns false,
    /// having run nothing, when the team is busy with another caller's loop.
    /// `linger`: the workers spin for the next loop afterwards (false: they
    /// sleep at once, leaving the cores to, say, a multi-threaded BLAS call).
    func run(_ n: Int, linger: Bool = true, _ body: (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            task = body
            count = n
            pending.store(size - 1, ordering: .relaxed)
            self.linger.store(linger, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent) // publishes task and count
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_broadcast(&wake)
                pthread_mutex_unlock(&mutex)
            }
            var i = 0
            while i < n { body(i); i += size }
            Self.wait { pending.load(ordering: .acquiring) == 0 }
            task = nil
        }
        return true
    }

    private func work(worker w: Int) {
        Threads.markInsideParallelLoop(true)
        var seen = 0, spinning = true
        while true {
            // Spin (after a loop that asked for it), then sleep, until a new loop is published.
            if !spinning || !Self.spin(until: { generation.load(ordering: .acquiring) != seen }) {
                pthread_mutex_lock(&mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(&wake, &mutex) }
                sleepers.subtract(1, ordering: .relaxed)
                pthread_mutex_unlock(&mutex)
            }
            seen = generation.load(ordering: .acquiring)
            spinning = linger.load(ordering: .relaxed)
            if let body = task {
                var i = w
                while i < count { body(i); i += size }
            }
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// Spins until `done()` or `spinLimit` has passed; whether `done()` became true.
    private static func spin(until done: () -> Bool) -> Bool {
        var start: UInt64 = 0
        var tries = 0
        while !done() {
            wf_spin_pause()
            tries += 1
            if tries & 63 == 0 {
                let now = DispatchTime.now().uptimeNanoseconds
                if start == 0 { start = now } else if now - start > spinLimit { return false }
            }
        }
        return true
    }

    /// Spins, then yields the core, until `done()`.
    private static func wait(until done: () -> Bool) {
        if spin(until: done) { return }
        while !done() { sched_yield() }
    }
}
