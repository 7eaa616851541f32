import XCTest
@testable import WaveFlow

/// The LPC front of MODEL-SPEC section 11.
final class LPCFrontTests: XCTestCase {
    /// Envelope, excitation and synthesis within these of the independent
    /// NumPy/SciPy implementation (`scripts/make-lpc-fixtures.py`): relative
    /// to the largest value of each quantity.
    static let fixtureTolerance = 1e-5
    /// The recursive synthesis filter amplifies rounding of its Float32 input.
    static let synthesisTolerance: Float = 1e-4

    static func clip0LogMel() throws -> NPYArray {
        var m = try NPY.read(fixture("clip0_mel.npy"))
        m.values = m.values.map { Foundation.log(max($0, MelSpectrogram.logFloor)) }
        return m
    }

    /// The Swift front equals the NumPy one on a real clip's mel: the
    /// envelope (coefficients and gains), the excitation of the real audio,
    /// and the synthesis from a fixed excitation.
    func testMatchesIndependentImplementation() throws {
        let mel = try Self.clip0LogMel()
        let frames = mel.shape[1]
        let front = LPCFront(order: 16, mel: MelConfig())
        let env = front.envelope(logMel: mel.values, frames: frames)
        let refA = try NPY.read(fixture("lpc_clip0_coefficients.npy")).values.map(Double.init)
        let refG = try NPY.read(fixture("lpc_clip0_gains.npy")).values.map(Double.init)
        XCTAssertEqual(env.coefficients.count, refA.count)
        XCTAssertLessThanOrEqual(normRelativeError(env.coefficients, refA), Self.fixtureTolerance)
        XCTAssertLessThanOrEqual(maxRelativeError(env.gains, refG, floor: 1e-12), 1e-4, "gains, elementwise")
        // (NPY.read gives Float32 values; the fixtures were written as <f8.)
        let pcm = try NPY.read(fixture("clip0_pcm.npy")).values.map { $0 / 32768 }
        let e = front.analyse(pcm, envelope: env)
        let refE = try NPY.read(fixture("lpc_clip0_excitation.npy")).values
        XCTAssertLessThanOrEqual(Double(normRelativeError(e, refE)), Self.fixtureTolerance)
        let z = try NPY.read(fixture("lpc_clip0_synthesis_input.npy")).values
        let y = front.synthesise(z, envelope: env)
        XCTAssertLessThanOrEqual(normRelativeError(y, try NPY.read(fixture("lpc_clip0_synthesis.npy")).values), Self.synthesisTolerance)
    }

    /// The fast envelope (sparse bands, cosine table, Levinson–Durbin)
    /// equals the naive twin (dense sums, cosines evaluated, Gaussian
    /// elimination of the normal equations) on random and extreme mels.
    func testEnvelopeMatchesNaiveTwin() {
        var rng = TestRNG(3)
        let cfg = MelConfig()
        for order in [1, 4, 16, 24] {
            let front = LPCFront(order: order, mel: cfg)
            let frames = 6
            var mel: [Float] = (0 ..< cfg.nMels * frames).map { _ in rng.uniform(3) - 4 }
            for m in 0..<cfg.nMels { mel[m * frames] = Foundation.log(1e-5) } // a silent frame: the floors
            let fast = front.envelope(logMel: mel, frames: frames)
            let naive = front.envelopeNaive(logMel: mel, frames: frames)
            XCTAssertLessThanOrEqual(normRelativeError(fast.coefficients, naive.coefficients), 1e-9, "order \(order)")
            XCTAssertLessThanOrEqual(maxRelativeError(fast.gains, naive.gains, floor: 1e-300), 1e-9, "order \(order)")
        }
    }

    /// Synthesis inverts analysis, and the analysis' log|det| from a
    /// brute-force Jacobian (columns = the analysis of unit impulses, LU in
    /// Float64) is -sum_t log g_{f(t)}.
    func testInverseAndLogDeterminant() {
        var cfg = MelConfig(); cfg.nFFT = 64; cfg.winLength = 64; cfg.hopLength = 16; cfg.nMels = 6; cfg.fmax = 11025
        let front = LPCFront(order: 4, mel: cfg)
        var rng = TestRNG(8)
        let frames = 4, t = 57 // the last samples clamp to the last frame
        let mel: [Float] = (0 ..< cfg.nMels * frames).map { _ in rng.uniform(1.5) - 2 }
        let env = front.envelope(logMel: mel, frames: frames)
        let x: [Float] = rng.array(t, scale: 0.3)
        let back = front.synthesise(front.analyse(x, envelope: env), envelope: env)
        XCTAssertLessThanOrEqual(normRelativeError(back, x), 1e-5)
        // Brute-force Jacobian J[i][j] = d e_i / d x_j.
        var jac = [[Double]](repeating: [Double](repeating: 0, count: t), count: t)
        for j in 0..<t {
            var unit = [Float](repeating: 0, count: t); unit[j] = 1
            let col = front.analyse(unit, envelope: env)
            for i in 0..<t { jac[i][j] = Double(col[i]) }
        }
        var logDet = 0.0
        for c in 0..<t {
            let pivot = (c..<t).max { abs(jac[$0][c]) < abs(jac[$1][c]) }!
            jac.swapAt(c, pivot)
            logDet += Foundation.log(abs(jac[c][c]))
            for r in (c + 1)..<t where jac[r][c] != 0 {
                let f = jac[r][c] / jac[c][c]
                for k in c..<t { jac[r][k] -= f * jac[c][k] }
            }
        }
        XCTAssertEqual(logDet, -env.logGainSum(samples: 0..<t), accuracy: 1e-4 * Double(t))
        // logGainSum over a range equals the sample-by-sample sum.
        let bySample = (5..<t).reduce(0.0) { $0 + Foundation.log(env.gains[env.frame(ofSample: $1)]) }
        XCTAssertEqual(env.logGainSum(samples: 5..<t), bySample, accuracy: 1e-9)
    }

    /// A model with a front: its NLL is the flows' NLL of e plus the mean
    /// log-gain; synthesis from the forward's z gives back x.
    func testModelWithFrontScoresAndInverts() throws {
      for glow in [false, true] { // WaveFlow and WaveGlow flows behind the same front
        var cfg = glow ? WaveGlowTests.tinyConfig() : ModelTests.tinyConfig(h: 8, flows: 2, layers: 2)
        cfg.lpcOrder = 4
        try cfg.validate()
        let model: FlowModel<Float> = glow ? WaveGlowTests.randomModel(cfg, seed: 4) : ModelTests.randomModel(cfg, seed: 4)
        XCTAssertNotNil(model.front)
        var rng = TestRNG(21)
        let frames = 5, t = frames * cfg.hopLength
        let mel: [Float] = (0 ..< cfg.nMels * frames).map { _ in rng.uniform(1) - 2 }
        let x: [Float] = rng.array(t, scale: 0.2)
        let input = Scorer.flowInput(samples: x, logMel: mel, frames: frames, model: model)
        let env = try XCTUnwrap(input.envelope)
        let flowOnly = model.forward(audio: input.values, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32)
        XCTAssertEqual(input.nll(first: t, model: model, context: .fp32), Double(flowOnly.nll[0]) + env.logGainSum(samples: 0..<t) / Double(t),
                       accuracy: 1e-6)
        let back = model.synthesise(mel: mel, frames: frames, z: flowOnly.z, context: .fp32)
        XCTAssertLessThanOrEqual(normRelativeError(back, x), 1e-4)
        XCTAssertLessThanOrEqual(normRelativeError(model.synthesiseNaive(mel: mel, frames: frames, z: flowOnly.z, context: .fp32), x), 1e-4)
      }
    }

    /// `lpc_order` round-trips through a checkpoint, is absent from plain
    /// configs, and out-of-range orders are refused.
    func testConfigKey() throws {
        var cfg = ModelTests.tinyConfig()
        XCTAssertFalse(cfg.json.contains("lpc_order"))
        cfg.lpcOrder = 4
        XCTAssertTrue(cfg.json.contains("\"lpc_order\":4"))
        let dir = temporaryFolder(self)
        let path = dir + "/m.safetensors"
        try Checkpoint.save(model: ModelTests.randomModel(cfg, seed: 2), to: path)
        let back = try Checkpoint.load(path)
        XCTAssertEqual(back.config.lpcOrder, 4)
        XCTAssertNotNil(back.model.front)
        // A family this build does not implement is refused, not misread.
        let foreign = dir + "/glow.safetensors"
        try Checkpoint.save(model: ModelTests.randomModel(cfg, seed: 2), extra: ["family": "waveglow"], to: foreign)
        assertFails(["glow.safetensors", "family", "waveglow"]) { try Checkpoint.load(foreign) }
        let explicit = dir + "/flow.safetensors"
        try Checkpoint.save(model: ModelTests.randomModel(cfg, seed: 2), extra: ["family": "waveflow"], to: explicit)
        XCTAssertNoThrow(try Checkpoint.load(explicit))
        cfg.lpcOrder = 16 // n_fft 32: order must stay below 16
        assertFails(["lpc_order"]) { try cfg.validate() }
        cfg.lpcOrder = -1
        assertFails(["lpc_order"]) { try cfg.validate() }
    }
}
