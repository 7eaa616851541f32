import XCTest
@testable import WaveFlow

final class ModelTests: XCTestCase {
    /// A tiny configuration: h = 8, two flows, two layers, three channels.
    static func tinyConfig(h: Int = 8, flows: Int = 2, layers: Int = 2) -> ModelConfig {
        var c = ModelConfig()
        c.nFFT = 32; c.winLength = 32; c.hopLength = max(16, h); c.nMels = 4
        c.upsampleFactors = c.hopLength == 16 ? [4, 4] : [2, c.hopLength / 2]
        c.nGroup = h; c.nFlows = flows; c.nLayers = layers; c.channels = 3
        return c
    }

    /// A model with every parameter random (output layer included, small, so
    /// the flow is far from the identity).
    static func randomModel<T: Real>(_ c: ModelConfig, seed: UInt64 = 1, _: T.Type = T.self) -> FlowModel<T> {
        let m = FlowModel<T>(config: c)
        var rng = TestRNG(seed)
        for v in m.params.views {
            let scale: T = v.name.contains(".output.") ? 0.1 : 0.5
            for i in v.range { m.params.valueBuffer[i] = rng.uniform(scale) }
        }
        return m
    }

    func testDefaultConfigMatchesSpecSizes() throws {
        let c = ModelConfig()
        try c.validate()
        XCTAssertEqual(Double(c.parameterCount) / 1e6, 5.93, accuracy: 0.01)
        XCTAssertEqual(Double(c.macsPerPosition) / 1e6, 5.9, accuracy: 0.1)
        XCTAssertEqual(c.macsPerSample / 1e6, 5.5, accuracy: 0.1)
        XCTAssertEqual(FlowModel<Float>(config: c).params.count, c.parameterCount)
        for name in ModelConfig.presets.keys { XCTAssertNoThrow(try ModelConfig.presets[name]!.validate(), name) }
    }

    /// The permutations of the spec, and the condition rows following them.
    func testPermutationsAndRowMaps() {
        var c = ModelConfig(); c.nGroup = 8; c.nFlows = 4
        XCTAssertEqual(c.permutation(0), [7, 6, 5, 4, 3, 2, 1, 0])
        XCTAssertEqual(c.permutation(2), [3, 2, 1, 0, 7, 6, 5, 4])
        // Apply the permutations physically to a labelled condition.
        var rows = Array(0..<8)
        for k in 0..<4 {
            XCTAssertEqual(c.rowMaps[k], rows, "flow \(k)")
            let p = c.permutation(k)
            rows = (0..<8).map { rows[p[$0]] }
        }
        // And through the model's gather: Cd[m, b, i, j] = 100 i + j.
        let cfg = Self.tinyConfig(flows: 4)
        let model = FlowModel<Double>(config: cfg)
        let (batch, w) = (2, 3)
        var cd = [Double](repeating: 0, count: cfg.nMels * batch * 8 * w)
        for mi in 0..<cfg.nMels { for b in 0..<batch { for i in 0..<8 { for j in 0..<w {
            cd[((mi * batch + b) * 8 + i) * w + j] = Double(100 * i + j)
        } } } }
        var physical = Array(0..<8)
        for k in 0..<4 {
            let cin = model.coupling(k)!.networkConditionInput(cd, batch: batch, width: w)
            for i in 0..<7 { XCTAssertEqual(cin[i * w], Double(100 * physical[i + 1]), "flow \(k) row \(i)") }
            let p = cfg.permutation(k)
            physical = (0..<8).map { physical[p[$0]] }
        }
    }

    /// log|det J| of audio -> z, computed column by column with finite
    /// differences (Float64), equals the model's sum of log_s.
    func testLogDeterminantMatchesBruteForceJacobian() {
        for h in [8, 16] {
            let cfg = Self.tinyConfig(h: h, flows: 2, layers: 2)
            let model: FlowModel<Double> = Self.randomModel(cfg)
            let frames = 2
            let tPrime = frames * cfg.hopLength
            var rng = TestRNG(3)
            let mel: [Double] = rng.array(cfg.nMels * frames)
            let x: [Double] = rng.array(tPrime, scale: 0.5)
            let s = model.forward(audio: x, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32)
            XCTAssertEqual(GradientCheck.bruteForceLogDet(model, audio: x, mel: mel, frames: frames), s.logdet[0],
                           accuracy: Tolerance.bruteForceLogDet, "h=\(h)")
        }
    }

    /// The whole model's loss gradient (every tensor kind) against finite differences.
    func testModelGradientMatchesFiniteDifferences() {
        let cfg = Self.tinyConfig(h: 8, flows: 2, layers: 2)
        let model: FlowModel<Double> = Self.randomModel(cfg, seed: 5)
        let (batch, frames) = (2, 3)
        let tPrime = 40 // w = 5: shorter than frames*hop = 48, so the crop is exercised
        var rng = TestRNG(9)
        let mel: [Double] = rng.array(batch * cfg.nMels * frames)
        let x: [Double] = rng.array(batch * tPrime, scale: 0.5)
        GradientCheck.checkModel(model, audio: x, mel: mel, batch: batch, frames: frames, label: "model")
    }

    /// Training by Winograd, whose backward pass reads the input transforms
    /// the forward pass kept instead of the inputs, gives the direct
    /// products' gradient (Float64, to rounding) and matches finite
    /// differences: every layer by Winograd (`always`), and some layers
    /// each way (`auto` here: layers 0 and 1 by Winograd, layer 2, width
    /// dilation 4 over 6 columns, direct).
    func testWinogradTrainingGradientEqualsDirect() {
        let cfg = Self.tinyConfig(h: 8, flows: 2, layers: 3)
        let model: FlowModel<Double> = Self.randomModel(cfg, seed: 7)
        let (batch, frames) = (2, 3)
        var rng = TestRNG(11)
        let mel: [Double] = rng.array(batch * cfg.nMels * frames)
        let x: [Double] = rng.array(batch * 48, scale: 0.5)
        func gradient(_ context: ComputeContext) -> [Double] {
            model.params.zeroGrad()
            model.backward(model.forward(audio: x, mel: mel, batch: batch, frames: frames, context: context), context: context)
            return model.params.grads
        }
        // w = 6 columns: width dilations 1 and 2 pay for Winograd, 4 does not.
        XCTAssertTrue(WidthWinograd.pays(dilation: 2, columns: 6))
        XCTAssertFalse(WidthWinograd.pays(dilation: 4, columns: 6))
        let direct = gradient(ComputeContext.fp32.with(widthWinograd: .never))
        for policy in [WinogradPolicy.always, .auto] {
            let winograd = ComputeContext.fp32.with(widthWinograd: policy)
            XCTAssertLessThanOrEqual(normRelativeError(gradient(winograd), direct), 1e-10, "\(policy)")
            GradientCheck.checkModel(model, audio: x, mel: mel, batch: batch, frames: frames, label: "model by Winograd, \(policy)",
                                     context: winograd)
        }
    }

    /// A new model is the identity up to the row permutations: every flow
    /// copies its input, so z is x with rows permuted, and the log-det is 0.
    func testNewModelIsIdentity() {
        let cfg = Self.tinyConfig()
        let model = FlowModel<Float>(config: cfg)
        model.initialise(seed: 1)
        var rng = TestRNG(2)
        let mel: [Float] = rng.array(cfg.nMels * 2)
        let x: [Float] = rng.array(32)
        let s = model.forward(audio: x, mel: mel, batch: 1, frames: 2, keepCache: false, context: .fp32)
        // Rows end permuted by perm_{K-1} o ... o perm_0: the row map after the last flow.
        var rows = Array(0..<cfg.nGroup)
        for k in 0..<cfg.nFlows { let p = cfg.permutation(k); rows = (0..<cfg.nGroup).map { rows[p[$0]] } }
        let w = 32 / cfg.nGroup
        for j in 0..<w { for i in 0..<cfg.nGroup { XCTAssertEqual(s.z[j * cfg.nGroup + i], x[j * cfg.nGroup + rows[i]]) } }
        XCTAssertEqual(s.logdet, [0])
        let expected = x.map { Double($0 * $0) / 2 }.reduce(0, +) / 32 + GaussianNLL.halfLog2Pi
        XCTAssertEqual(Double(s.nll[0]), expected, accuracy: 1e-5)
    }
}

/// log |det A| by Gaussian elimination with partial pivoting (A n x n, row-major).
func logAbsDeterminant(_ a: [Double], _ n: Int) -> Double {
    var m = a
    var result = 0.0
    for col in 0..<n {
        var pivot = col
        for r in col..<n where abs(m[r * n + col]) > abs(m[pivot * n + col]) { pivot = r }
        if pivot != col { for j in 0..<n { m.swapAt(col * n + j, pivot * n + j) } }
        let d = m[col * n + col]
        result += log(abs(d))
        for r in (col + 1)..<n {
            let f = m[r * n + col] / d
            if f != 0 { for j in col..<n { m[r * n + j] -= f * m[col * n + j] } }
        }
    }
    return result
}
