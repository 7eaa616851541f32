import Foundation

/// Why the pool did not run a job.
enum PoolError: Error, Equatable {
    /// Every worker busy and the queue full: answered 503 with Retry-After.
    case full
    /// The job's time limit passed (waiting or running): answered 504.
    case timedOut
    /// The pool is shutting down and takes no new work.
    case stopped
}

/// A fixed set of worker threads running synthesis off the server's event
/// loops, fed from a bounded first-in first-out queue.
///
/// At most `workers` jobs run at once and at most `queueLimit` wait; a job
/// beyond that is refused at once (`PoolError.full`), so a burst costs the
/// clients a 503, not the server its memory. Each job has a deadline: a job
/// still waiting then is dropped, a running one is answered `timedOut` at
/// once and its result discarded when it ends (synthesis has no
/// cancellation points; chunked synthesis stops at its next chunk).
final class SynthesisPool: @unchecked Sendable {
    // Sendable by hand: every mutable field is touched under `lock`.

    /// One queued piece of work and the continuation of its request.
    final class Job {
        let work: (Job) -> Void
        var expired = false
        var finished = false
        init(work: @escaping (Job) -> Void) { self.work = work }
    }

    let workers: Int
    let queueLimit: Int
    private let lock = NSCondition()
    private var waiting: [Job] = []
    private var running = 0
    private var stopping = false
    private var threads: [Thread] = []
    private var exited = 0
    /// Called with (waiting, running) after every change, under no lock.
    private let onChange: @Sendable (Int, Int) -> Void

    init(workers: Int, queueLimit: Int, onChange: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) {
        self.workers = max(1, workers)
        self.queueLimit = max(0, queueLimit)
        self.onChange = onChange
        for i in 0..<self.workers {
            let t = Thread { [unowned self] in self.loop() }
            t.name = "waveflow-synthesis-\(i)"
            t.stackSize = 8 << 20
            threads.append(t)
            t.start()
        }
    }

    /// Jobs waiting for a worker.
    var queueDepth: Int { lock.lock(); defer { lock.unlock() }; return waiting.count }
    /// Jobs being synthesised.
    var inFlight: Int { lock.lock(); defer { lock.unlock() }; return running }

    /// Runs `body` on a worker and returns its result.
    /// - Parameters:
    ///   - timeout: seconds from now after which the caller gets `PoolError.timedOut`.
    ///   - body: the synthesis; it may call `isExpired()` to stop early.
    /// - Throws: `PoolError` (full, timed out, stopped) or what `body` throws.
    func run<T>(timeout: Double, _ body: @escaping (_ isExpired: () -> Bool) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            do { try submit(timeout: timeout, body) { continuation.resume(with: $0) } } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Queues `body` if there is room (else throws `PoolError.full` or
    /// `.stopped` at once); `completion` is called exactly once, with the
    /// result or `PoolError.timedOut` when `timeout` seconds pass first.
    func submit<T>(timeout: Double, _ body: @escaping (_ isExpired: () -> Bool) throws -> T,
                   completion: @escaping (Result<T, any Error>) -> Void) throws {
        let job = Job { [unowned self] job in
            let outcome = Result { try body { self.lock.lock(); defer { self.lock.unlock() }; return job.expired } }
            self.lock.lock()
            let answer = !job.finished
            job.finished = true
            self.lock.unlock()
            if answer { completion(outcome) }
        }
        lock.lock()
        if stopping {
            lock.unlock()
            throw PoolError.stopped
        }
        guard running + waiting.count < workers + queueLimit else {
            lock.unlock()
            throw PoolError.full
        }
        waiting.append(job)
        let (w, r) = (waiting.count, running)
        lock.signal()
        lock.unlock()
        onChange(w, r)
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
            guard let self else { return }
            self.lock.lock()
            guard !job.finished else { self.lock.unlock(); return }
            job.expired = true
            job.finished = true
            if let i = self.waiting.firstIndex(where: { $0 === job }) { self.waiting.remove(at: i) }
            let (w, r) = (self.waiting.count, self.running)
            self.lock.unlock()
            self.onChange(w, r)
            completion(.failure(PoolError.timedOut))
        }
    }

    /// A worker: takes the oldest waiting job, runs it, repeats; returns
    /// when the pool stops and the queue is empty.
    private func loop() {
        while true {
            lock.lock()
            while waiting.isEmpty && !stopping { lock.wait() }
            if waiting.isEmpty {
                exited += 1
                lock.broadcast()
                lock.unlock()
                return
            }
            let job = waiting.removeFirst()
            running += 1
            var (w, r) = (waiting.count, running)
            lock.unlock()
            onChange(w, r)
            job.work(job)
            lock.lock()
            running -= 1
            (w, r) = (waiting.count, running)
            lock.unlock()
            onChange(w, r)
        }
    }

    /// Takes no new jobs, lets the waiting and running ones finish, and
    /// waits for the workers to exit.
    func shutdown() {
        lock.lock()
        stopping = true
        lock.broadcast()
        while exited < threads.count { lock.wait() }
        lock.unlock()
    }
}
