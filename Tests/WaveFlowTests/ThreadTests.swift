import Foundation
import Synchronization
import XCTest
@testable import WaveFlow

/// `Threads.parallelFor` and the `WorkerTeam` under it: every index runs
/// exactly once, nested loops run serially on the calling thread, and a
/// second caller while the team is busy still gets its loop done.
final class ThreadTests: XCTestCase {
    /// Counts of how often each index ran, from many threads.
    private final class Tally: @unchecked Sendable {
        let counts: UnsafeMutablePointer<Atomic<Int>>
        let n: Int
        init(_ n: Int) {
            self.n = n
            counts = .allocate(capacity: n)
            for i in 0..<n { (counts + i).initialize(to: Atomic(0)) }
        }
        func hit(_ i: Int) { counts[i].add(1, ordering: .relaxed) }
        func value(_ i: Int) -> Int { counts[i].load(ordering: .relaxed) }
        deinit { counts.deinitialize(count: n); counts.deallocate() }
    }

    func testEveryIndexRunsOnceWhateverTheCount() {
        let team = WorkerTeam(size: 3)
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            for linger in [true, false] {
                let tally = Tally(max(n, 1))
                XCTAssertTrue(team.run(n, linger: linger) { tally.hit($0) })
                for i in 0..<n { XCTAssertEqual(tally.value(i), 1, "n \(n) index \(i)") }
            }
        }
        // Many short loops back to back (the synthesis pattern), with sleeps between some of them.
        let tally = Tally(4)
        for round in 0..<2000 {
            if round % 500 == 499 { usleep(UInt32(WorkerTeam.spinLimit / 1000) * 2) } // the workers fall asleep
            XCTAssertTrue(team.run(4) { tally.hit($0) })
        }
        for i in 0..<4 { XCTAssertEqual(tally.value(i), 2000) }
    }

    func testTeamThreadsDoTheWork() {
        // With 2 threads, index 1 runs on another thread than the caller.
        let team = WorkerTeam(size: 2)
        let caller = pthread_self()
        nonisolated(unsafe) var other = false
        XCTAssertTrue(team.run(2) { i in if i == 1 { other = pthread_equal(pthread_self(), caller) == 0 } })
        XCTAssertTrue(other)
    }

    func testNestedLoopsRunSerially() {
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = 2
        let tally = Tally(8 * 8)
        Threads.parallelFor(8) { i in
            let thread = pthread_self()
            XCTAssertTrue(Threads.insideParallelLoop)
            Threads.parallelFor(8) { j in
                XCTAssertEqual(pthread_equal(pthread_self(), thread), 1, "a nested loop stays on its thread")
                tally.hit(i * 8 + j)
            }
        }
        XCTAssertFalse(Threads.insideParallelLoop)
        for i in 0..<64 { XCTAssertEqual(tally.value(i), 1) }
    }

    func testBusyTeamRefusesAndParallelForStillRuns() {
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = 2
        // Two plain threads call parallelFor at once, many times: one of them
        // finds the team busy now and then and takes Dispatch's pool.
        let tally = Tally(2 * 300 * 16)
        DispatchQueue.concurrentPerform(iterations: 2) { caller in
            for round in 0..<300 {
                Threads.parallelFor(16) { i in tally.hit((caller * 300 + round) * 16 + i) }
            }
        }
        for i in 0..<tally.n { XCTAssertEqual(tally.value(i), 1, "index \(i)") }

        // And a team held by one caller says no to another.
        let team = WorkerTeam(size: 2)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let holder = Thread {
            _ = team.run(2) { i in if i == 0 { entered.signal(); release.wait() } }
        }
        holder.start()
        entered.wait()
        XCTAssertFalse(team.run(2) { _ in XCTFail("ran on a busy team") })
        release.signal()
    }
}
