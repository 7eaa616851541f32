import Foundation
import XCTest
@testable import WaveFlow

/// Data-parallel training over Open MPI: `mpirun -np 2 waveflow train`.
/// Needs Open MPI's `mpirun` (Debian: openmpi-bin, installed by
/// scripts/setup.sh); its absence is a failure, not a skip.
final class DistributedTests: XCTestCase {
    static var mpirun: String? {
        for dir in ["/usr/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/mpirun") {
            return dir + "/mpirun"
        }
        return nil
    }

    /// Runs the tool under `mpirun -np ranks` (or directly when ranks is 0).
    func launch(ranks: Int, _ args: [String]) throws -> CLITests.Result {
        guard ranks > 0 else { return try CLITests.run(executable: CLITests.toolPath, args) }
        return try CLITests.run(executable: try mpirun(), mpirunArguments(ranks: ranks) + args)
    }

    func mpirun() throws -> String {
        try XCTUnwrap(Self.mpirun, "Open MPI's mpirun is not installed (scripts/setup.sh installs openmpi-bin)")
    }

    /// `mpirun`'s arguments up to the tool's own. Root and more ranks than
    /// cores are refused by default; shared-memory single-copy needs ptrace
    /// rights that containers often lack.
    func mpirunArguments(ranks: Int) -> [String] {
        ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
         "-np", String(ranks), CLITests.toolPath]
    }

    /// Process ids whose parent is `parent` (from /proc/PID/stat's fourth field).
    static func children(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            // "pid (comm) state ppid ...": fields after the command name.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == parent
        }.sorted()
    }

    static let segment = 4096, batch = 4, seed: UInt64 = 11

    func trainArgs(_ folder: String, steps: Int, resume: Bool = false) -> [String] {
        var a = ["train", exampleAudio(""), "--config", "tiny", "--steps", String(steps), "--batch", String(Self.batch),
                 "--segment", String(Self.segment), "--lr", "3e-3", "--warmup", "2", "--seed", String(Self.seed),
                 "--checkpoint-every", "1000", "--validate-every", "1000", "--checkpoints", folder,
                 "--precision", "fp32"] // compared with the library's own fp32 training
        if resume { a.append("--resume") }
        return a
    }

    /// The same run in one process: batches drawn as two parts, exactly as
    /// two ranks draw them.
    func singleProcessWeights(steps: Int, parts: Int) throws -> [Float] {
        let data = try Corpus.load(folder: exampleAudio(""), config: ModelConfig.presets["tiny"]!.mel, cache: nil,
                                   minSamples: Self.segment)
        let model = FlowModel<Float>(config: ModelConfig.presets["tiny"]!)
        model.initialise(seed: Self.seed)
        var o = TrainOptions()
        o.steps = steps; o.batch = Self.batch; o.segment = Self.segment; o.lr = 3e-3; o.warmup = 2; o.seed = Self.seed
        o.checkpointEvery = 1000; o.validateEvery = 1000
        let trainer = Trainer(model: model, options: o, runFolder: temporaryFolder(self), context: .fp32)
        trainer.dataParts = parts
        try trainer.run(corpus: data)
        return model.params.values
    }

    /// Two ranks end a few steps with the weights of one process that
    /// trained on the same combined batches (within 1e-5 relative); the
    /// comparison can tell: one-part batches end elsewhere.
    func testTwoRanksEqualOneProcessOnTheSameBatches() throws {
        let dir = temporaryFolder(self)
        let r = try launch(ranks: 2, trainArgs(dir, steps: 4))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("2 ranks"), r.stderr)
        // One progress line, from rank 0 only.
        XCTAssertEqual(r.stderr.components(separatedBy: "done at step 4").count, 2, r.stderr)
        let ranked = try Checkpoint.load(dir + "/run/latest.safetensors").model.params.values

        let single = try singleProcessWeights(steps: 4, parts: 2)
        let initial = { () -> [Float] in
            let m = FlowModel<Float>(config: ModelConfig.presets["tiny"]!); m.initialise(seed: Self.seed); return m.params.values
        }()
        let err = normRelativeError(ranked, single)
        print("2 ranks vs 1 process: relative difference \(err)")
        XCTAssertLessThan(err, 1e-5, "2 ranks vs 1 process: relative difference \(err)")
        XCTAssertLessThan(maxRelativeError(ranked, single, floor: 1e-3), 1e-4)
        XCTAssertGreaterThan(normRelativeError(ranked, initial), 1e-3, "training moved the weights")
        let otherBatches = try singleProcessWeights(steps: 4, parts: 1)
        XCTAssertGreaterThan(normRelativeError(ranked, otherBatches), 100 * max(err, 1e-7), "different batches give different weights")
    }

    /// A rank killed mid-run stops the whole job with Open MPI's message,
    /// and the last checkpoint (written atomically by rank 0) loads and
    /// resumes.
    func testDeadRankStopsTheJobAndLeavesAResumableCheckpoint() throws {
        let dir = temporaryFolder(self)
        var args = trainArgs(dir, steps: 100_000)
        args[args.firstIndex(of: "--checkpoint-every")! + 1] = "3"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try mpirun())
        p.arguments = mpirunArguments(ranks: 2) + args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let latest = dir + "/run/latest.safetensors"
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: latest) && Date() < deadline { usleep(100_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: latest), "no checkpoint within 60 s")
        // The ranks are mpirun's children; kill the last one (rank 0 or 1: either must stop the job).
        let pids = Self.children(of: p.processIdentifier)
        XCTAssertEqual(pids.count, 2, "ranks: \(pids)")
        kill(pids.last!, SIGKILL)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(stderr.contains("exited on signal 9"), stderr)
        let ck = try Checkpoint.load(latest)
        let step = try XCTUnwrap(ck.configJSON["step"] as? Int)
        let r = try launch(ranks: 0, trainArgs(dir, steps: step + 2, resume: true))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("done at step \(step + 2)"), r.stderr)
    }

    /// A run started on two ranks resumes on one, and one started on one
    /// resumes on two; the step count carries over and the metrics log grows.
    func testResumeWithADifferentRankCount() throws {
        let dir = temporaryFolder(self)
        var r = try launch(ranks: 2, trainArgs(dir, steps: 2))
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try launch(ranks: 0, trainArgs(dir, steps: 4, resume: true))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("done at step 4"), r.stderr)
        r = try launch(ranks: 2, trainArgs(dir, steps: 6, resume: true))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("done at step 6"), r.stderr)
        let ck = try Checkpoint.load(dir + "/run/latest.safetensors")
        XCTAssertEqual(ck.configJSON["step"] as? Int, 6)
        let lines = try String(contentsOfFile: dir + "/run/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.contains("\"loss\"") }.count, 6)
    }
}
