import Foundation
import XCTest
@testable import WaveFlow

final class TrainingTests: XCTestCase {
    static func corpus(_ test: XCTestCase, segment: Int) throws -> Corpus {
        let dir = temporaryFolder(test)
        return try Corpus.load(folder: exampleAudio(""), config: ModelConfig.presets["tiny"]!.mel,
                               cache: try FeatureCache(folder: dir + "/cache"), minSamples: segment)
    }

    static func options(steps: Int) -> TrainOptions {
        var o = TrainOptions()
        o.steps = steps; o.batch = 2; o.segment = 4096; o.lr = 3e-3; o.warmup = 5
        o.checkpointEvery = 1000; o.validateEvery = 1000; o.validationSeconds = 1; o.seed = 7
        return o
    }

    /// A tiny model trained for a few dozen steps on Audio/ scores its
    /// held-out files better than it did at the start.
    func testValidationNLLFalls() throws {
        let data = try Self.corpus(self, segment: 4096)
        XCTAssertEqual(data.validation.count, 1)
        XCTAssertTrue(data.skipped.isEmpty)
        let model = FlowModel<Float>(config: ModelConfig.presets["tiny"]!)
        model.initialise(seed: 1)
        let trainer = Trainer(model: model, options: Self.options(steps: 80), runFolder: temporaryFolder(self), context: .fp32)
        let before = trainer.validate(data.validation)
        try trainer.run(corpus: data)
        let after = trainer.validate(data.validation)
        XCTAssertLessThan(after, before - 0.2, "validation NLL \(before) -> \(after)")
        // Checkpoints, best model, log and plot are on disk.
        for name in ["latest.safetensors", "best.safetensors", "metrics.jsonl", "nll.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: trainer.runFolder + "/" + name), name)
        }
    }

    /// Interrupted at step 3 and resumed from the checkpoint, a run ends with
    /// the same weights as one that ran straight through.
    func testResumedRunEqualsUninterruptedRun() throws {
        let data = try Self.corpus(self, segment: 4096)
        func fresh(_ folder: String) -> Trainer {
            let model = FlowModel<Float>(config: ModelConfig.presets["tiny"]!)
            model.initialise(seed: 1)
            return Trainer(model: model, options: Self.options(steps: 6), runFolder: folder, context: .fp32)
        }
        let straight = fresh(temporaryFolder(self))
        try straight.run(corpus: data)

        let folder = temporaryFolder(self)
        let first = fresh(folder)
        try first.run(corpus: data, pauseAt: 3)
        XCTAssertEqual(first.step, 3)
        let ck = try Checkpoint.load(folder + "/latest.safetensors")
        let second = Trainer(model: ck.model, options: Self.options(steps: 6), runFolder: folder, context: .fp32)
        try second.restore(ck.trainTensors)
        XCTAssertEqual(second.step, 3)
        try second.run(corpus: data)
        XCTAssertEqual(second.step, 6)
        XCTAssertLessThanOrEqual(maxRelativeError(second.model.params.values, straight.model.params.values, floor: 1e-3), 1e-6)
    }
}

final class TrainingShardTests: XCTestCase {
    /// A batch split over two shards (the model and a replica that reads the
    /// model's weights in place) gives the gradient of one shard, and still
    /// does after the model's weights change: the replica sees them.
    func testTwoShardsGiveTheOneShardGradient() throws {
        let data = try TrainingTests.corpus(self, segment: 4096)
        let config = ModelConfig.presets["tiny"]!
        func trainer(threads: Int) -> Trainer {
            let model = FlowModel<Float>(config: config)
            model.initialise(seed: 3)
            return Trainer(model: model, options: TrainingTests.options(steps: 2), runFolder: temporaryFolder(self),
                           context: ComputeContext(precision: .fp32, threads: threads))
        }
        let one = trainer(threads: 1), two = trainer(threads: 2)
        for round in 0..<2 {
            let batch = data.sampleBatch(parts: 1, batch: 2, segment: 4096, hop: config.hopLength, seed: UInt64(11 + round))
            let (l1, l2) = (one.forwardBackward(batch), two.forwardBackward(batch))
            XCTAssertEqual(l1, l2, accuracy: 1e-5 * abs(l1), "round \(round)")
            XCTAssertLessThanOrEqual(maxRelativeError(two.model.params.grads, one.model.params.grads, floor: 1e-3), 1e-4,
                                     "round \(round)")
            // New weights for the next round, the same in both.
            var rng = TestRNG(UInt64(round + 5))
            let w = one.model.params.values.map { $0 * (1 + rng.uniform(Float(0.05))) + rng.uniform(Float(0.01)) }
            one.model.params.values = w
            two.model.params.values = w
        }
    }
}

final class TrainingRobustnessTests: XCTestCase {
    /// A step whose loss is not finite is skipped: the weights stay as they were.
    func testNonFiniteStepIsSkipped() throws {
        let model = FlowModel<Float>(config: ModelConfig.presets["tiny"]!)
        model.initialise(seed: 1)
        let trainer = Trainer(model: model, options: TrainingTests.options(steps: 10), runFolder: temporaryFolder(self), context: .fp32)
        let before = model.params.values
        var audio = [Float](repeating: 0.1, count: 2 * 4096)
        audio[100] = .nan
        let r = try trainer.trainStep(Batch(audio: audio, mel: [Float](repeating: -5, count: 2 * 80 * 16), batch: 2, frames: 16))
        XCTAssertTrue(r.skipped)
        XCTAssertEqual(model.params.values, before)
    }

    /// The feature cache returns what was stored, misses when the file or
    /// the config changes, and never trusts a corrupt entry.
    func testFeatureCache() throws {
        let dir = temporaryFolder(self)
        let cache = try FeatureCache(folder: dir + "/cache")
        let wav = dir + "/a.wav"
        try FileManager.default.copyItem(atPath: fixture("sine_pcm16.wav"), toPath: wav)
        let config = MelConfig()
        XCTAssertNil(cache.lookup(wav, config: config))
        let mel = try MelSpectrogram(config: config).compute(file: wav)
        cache.store(mel, for: wav, config: config)
        XCTAssertEqual(cache.lookup(wav, config: config), mel)
        var other = config; other.nMels = 40
        XCTAssertNil(cache.lookup(wav, config: other))
        // Corrupt the entry: it is not returned.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: cache.entry(for: wav, config: config)))
        XCTAssertNil(cache.lookup(wav, config: config))
        // A changed file (new size and time) misses.
        cache.store(mel, for: wav, config: config)
        try FileManager.default.removeItem(atPath: wav)
        try FileManager.default.copyItem(atPath: fixture("sine_float.wav"), toPath: wav)
        XCTAssertNil(cache.lookup(wav, config: config))
    }
}

/// Opening a run in the library: a new run's options are the defaults with
/// the overrides; a resumed one keeps its saved options (and seed) under
/// new overrides; what cannot be resumed is refused.
final class TrainingRunTests: XCTestCase {
    func testNewAndResumedRunOptions() throws {
        let folder = temporaryFolder(self) + "/r"
        assertFails(["no run to resume here"]) { try TrainingRun(folder: folder, resume: true, config: nil, overrides: TrainOverrides()) }
        let fresh = try TrainingRun(folder: folder, resume: false, config: "tiny",
                                    overrides: TrainOverrides(steps: 4, batch: 2, seed: 9, validateEvery: 7))
        XCTAssertNil(fresh.resumedFrom)
        XCTAssertTrue(fresh.trainState.isEmpty)
        XCTAssertEqual([fresh.options.steps, fresh.options.batch, fresh.options.validateEvery], [4, 2, 7])
        XCTAssertEqual(fresh.options.segment, TrainOptions().segment)
        XCTAssertEqual(fresh.options.seed, 9)
        let initial = FlowModel<Float>(config: ModelConfig.presets["tiny"]!)
        initial.initialise(seed: 9)
        XCTAssertEqual(fresh.model.params.values, initial.params.values)
        try fresh.makeTrainer(corpus: "somewhere", communicator: SingleProcess(), context: .fp32).saveCheckpoint()

        assertFails(["run already exists"]) { try TrainingRun(folder: folder, resume: false, config: "tiny", overrides: TrainOverrides()) }
        assertFails(["differs from the run's model"]) {
            try TrainingRun(folder: folder, resume: true, config: "lpc-tiny", overrides: TrainOverrides())
        }
        let resumed = try TrainingRun(folder: folder, resume: true, config: "tiny", overrides: TrainOverrides(steps: 6, seed: 3))
        XCTAssertEqual(resumed.resumedFrom, folder + "/latest.safetensors")
        XCTAssertNotNil(resumed.trainState["train.adam.m"])
        XCTAssertEqual([resumed.options.steps, resumed.options.batch, resumed.options.validateEvery], [6, 2, 7])
        XCTAssertEqual(resumed.options.seed, 9)
        XCTAssertEqual(resumed.model.params.values, initial.params.values)
        XCTAssertEqual(try Checkpoint.load(folder + "/latest.safetensors").configJSON["corpus"] as? String, "somewhere")
    }

    /// Step checkpoints rotate to the newest `keep`; a `latest.safetensors`
    /// that cannot be replaced is a warning, not a failed checkpoint.
    func testRunFolderRotatesAndSurvivesABadLatest() throws {
        let run = RunFolder(temporaryFolder(self) + "/r")
        for step in 1...4 { _ = try run.saveStep(step, keep: 2) { try Data([UInt8(step)]).write(to: URL(fileURLWithPath: $0)) } }
        XCTAssertEqual(run.stepFiles().map { ($0 as NSString).lastPathComponent }, ["step-0000003.safetensors", "step-0000004.safetensors"])
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: run.latest), "step-0000004.safetensors")
        try FileManager.default.removeItem(atPath: run.latest)
        try makeDirectory(run.latest + "/in-the-way")
        let path = try run.saveStep(5, keep: 2) { try Data([5]).write(to: URL(fileURLWithPath: $0)) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: run.path).contains { $0.hasSuffix(".tmp") })
        assertFails(["disk full"]) {
            try RunFolder(run.path + "/file").saveStep(1, keep: 2) { _ in throw WaveFlowError("disk full") }
        }
    }
}
