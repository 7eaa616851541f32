import XCTest
@testable import WaveFlow

final class InverseTests: XCTestCase {
    /// inverse(forward(x)) = x for every h the tests can afford, with random
    /// weights and a non-zero output layer; the cached inverse equals the naive one.
    func testInverseUndoesForward() {
        for h in [8, 16, 32, 64] {
            var cfg = ModelTests.tinyConfig(h: h, flows: 4, layers: h >= 32 ? 4 : 3)
            cfg.hopLength = max(16, h); cfg.upsampleFactors = [2, cfg.hopLength / 2]
            let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: UInt64(h))
            let frames = 3, t = frames * cfg.hopLength
            var rng = TestRNG(11)
            let mel: [Float] = rng.array(cfg.nMels * frames)
            let x: [Float] = rng.array(t, scale: 0.5)
            let z = model.forward(audio: x, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32).z
            let back = model.synthesise(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertLessThanOrEqual(normRelativeError(back, x), Tolerance.float32RoundTrip, "h=\(h)")
            let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertLessThanOrEqual(normRelativeError(back, naive), Tolerance.float32Reordered, "h=\(h) cached vs naive")
        }
    }
}

final class InverseBlockTests: XCTestCase {
    /// Synthesis in several column blocks (and a partial last block) equals
    /// the naive inverse, and the lazily computed condition rows equal the
    /// materialised condition.
    func testBlockedSynthesisMatchesNaive() throws {
        var cfg = ModelTests.tinyConfig(h: 8, flows: 2, layers: 3)
        cfg.hopLength = 16; cfg.upsampleFactors = [4, 4]
        let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: 9)
        let frames = 7, t = frames * 16, w = t / 8 // w = 14
        var rng = TestRNG(5)
        let mel: [Float] = rng.array(cfg.nMels * frames)
        let z: [Float] = rng.array(t)
        var blocks = ComputeContext.fp32
        blocks.synthesisBlockColumns = 5 // blocks of 5, 5, 4 columns; width dilation 4 reaches across blocks
        let blocked = model.synthesise(mel: mel, frames: frames, z: z, context: blocks)
        XCTAssertLessThanOrEqual(normRelativeError(blocked, model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)), Tolerance.float32Reordered)
        let upsampler = try XCTUnwrap(model.upsampler)
        let full = upsampler.upsample(mel: mel, batch: 1, frames: frames).stages.last!
        let cond = upsampler.condition(mel: mel, frames: frames, rows: cfg.nGroup)
        for i in 0..<8 {
            let row = cond.row(i)
            for mi in 0..<cfg.nMels { for j in 0..<w { XCTAssertEqual(row[mi * w + j], full[mi * t + j * 8 + i], accuracy: 1e-5) } }
        }
    }
}

final class SynthesisConditionTests: XCTestCase {
    /// The vectorised condition row equals its scalar twin for f = h, f < h
    /// (strided input) and f > h (the twin's own path), whole rows and blocks.
    func testConditionRowMatchesNaive() {
        var rng = TestRNG(17)
        for (h, f) in [(16, 16), (32, 16), (64, 16), (8, 16), (16, 4), (12, 8)] {
            let m = 5, t = 12 * h * f / gcd(h, f) // divisible by h and f, at least 12 columns
            let cond = SynthesisCondition<Float>(input: rng.array(m * t / f), weight: rng.array(3 * 2 * f), bias: 0.1,
                                                 bands: m, inWidth: t / f, factor: f, rows: h, columns: t / h, slope: 0.4)
            let w = t / h
            for i in 0..<h {
                for js in [0..<w, 1..<min(w, 9), w / 2 ..< w] {
                    var fast = [Float](repeating: -1, count: m * (js.count + 3)) // 3 columns of padding per row
                    var naive = fast
                    cond.row(i, columns: js, into: &fast, rowStride: js.count + 3)
                    cond.rowNaive(i, columns: js, into: &naive, rowStride: js.count + 3)
                    XCTAssertLessThanOrEqual(zip(fast, naive).map { abs($0 - $1) }.max()!, 1e-5, "h \(h) f \(f) row \(i) \(js)")
                }
            }
        }
    }

    private func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}

final class DenoiserTests: XCTestCase {
    /// The STFT and its overlap-add inverse reconstruct the signal.
    func testSTFTRoundTrip() throws {
        var rng = TestRNG(21)
        let x: [Float] = rng.array(5000, scale: 0.5)
        let w = (0..<1024).map { Float(0.5 - 0.5 * cos(2 * Double.pi * Double($0) / 1024)) }
        let stft = STFT(nFFT: 1024, hop: 256, window: w)
        let back = stft.inverse(try stft.forward(x), length: x.count)
        XCTAssertLessThanOrEqual(normRelativeError(back, x), 1e-5)
    }

    /// Strength 0 changes nothing; subtracting the bias spectrum from the
    /// bias signal itself removes most of its energy.
    func testDenoiserRemovesTheBiasTone() throws {
        var cfg = ModelConfig(); cfg.channels = 4; cfg.nFlows = 2; cfg.nLayers = 2
        let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: 4)
        let d = try Denoiser(model: model, context: .fp32)
        let silent = [Float](repeating: log(1e-5), count: 80 * 16)
        let bias = model.synthesise(mel: silent, frames: 16, z: [Float](repeating: 0, count: 16 * 256), context: .fp32)
        let energy = { (x: [Float]) in x.reduce(0) { $0 + Double($1 * $1) } }
        XCTAssertGreaterThan(energy(bias), 0)
        XCTAssertLessThanOrEqual(normRelativeError(try d.apply(bias, strength: 0), bias), 1e-5)
        XCTAssertLessThan(energy(try d.apply(bias, strength: 1)), 0.5 * energy(bias))
    }
}

final class ConcurrentSynthesisTests: XCTestCase {
    /// Several utterances synthesised from one model on several threads at
    /// once equal the same syntheses one after another: after `init` a model
    /// holds no state that synthesis writes (offsets fixed in its steps, the
    /// compute settings passed in), so sharing it is safe by construction.
    func testConcurrentSynthesisFromOneModelEqualsSequential() {
        var cfg = ModelTests.tinyConfig(h: 8, flows: 4, layers: 3)
        cfg.hopLength = 16; cfg.upsampleFactors = [4, 4]
        let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: 21)
        var rng = TestRNG(8)
        let jobs: [(mel: [Float], z: [Float], frames: Int)] = [5, 9, 3, 12].map { frames in
            (rng.array(cfg.nMels * frames), rng.array(frames * cfg.hopLength), frames)
        }
        var context = ComputeContext.fp32
        context.synthesisBlockColumns = 4 // several blocks per row, so each call splits its own work too
        let sequential = jobs.map { model.synthesise(mel: $0.mel, frames: $0.frames, z: $0.z, context: context) }
        final class Results: @unchecked Sendable { var audio: [[Float]] = [] }
        let results = Results()
        results.audio = [[Float]](repeating: [], count: jobs.count)
        let lock = NSLock()
        for _ in 0..<3 {
            DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
                let a = model.synthesise(mel: jobs[i].mel, frames: jobs[i].frames, z: jobs[i].z, context: context)
                lock.lock(); results.audio[i] = a; lock.unlock()
            }
            for i in jobs.indices { XCTAssertEqual(results.audio[i], sequential[i], "utterance \(i)") }
        }
    }

    /// The same for WaveGlow with folded projections: the threads race to
    /// build one model's fold (one builds, the others wait for it) and
    /// every utterance equals the sequential synthesis of a twin model.
    func testConcurrentFoldedWaveGlowSynthesisEqualsSequential() throws {
        let cfg = WaveGlowTests.tinyConfig(flows: 5)
        let model: FlowModel<Float> = WaveGlowTests.randomModel(cfg, seed: 23), twin: FlowModel<Float> = WaveGlowTests.randomModel(cfg, seed: 23)
        var rng = TestRNG(9)
        let jobs: [(mel: [Float], z: [Float], frames: Int)] = [5, 9, 3, 12].map { frames in
            (rng.array(cfg.nMels * frames), rng.array(frames * cfg.hopLength), frames)
        }
        let context = ComputeContext(precision: .fp32, threads: 2).with(conditionFolding: .always)
        let sequential = jobs.map { twin.synthesise(mel: $0.mel, frames: $0.frames, z: $0.z, context: context) }
        final class Results: @unchecked Sendable { var audio: [[Float]] = [] }
        let results = Results()
        results.audio = [[Float]](repeating: [], count: jobs.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
            let a = model.synthesise(mel: jobs[i].mel, frames: jobs[i].frames, z: jobs[i].z, context: context)
            lock.lock(); results.audio[i] = a; lock.unlock()
        }
        XCTAssertTrue(try XCTUnwrap(model.conditioner as? WaveGlowUpsampler<Float>).hasFold)
        for i in jobs.indices {
            XCTAssertLessThan(normRelativeError(results.audio[i], sequential[i]), Tolerance.float32Reordered, "utterance \(i)")
        }
    }
}
