import XCTest
@testable import WaveFlow

/// The WaveGlow family (MODEL-SPEC section 12): against the independent
/// NumPy reference (scripts/make-waveglow-fixtures.py), finite-difference
/// gradients, a brute-force Jacobian, inverses and their naive twins.
final class WaveGlowTests: XCTestCase {
    /// A tiny WaveGlow: G = 8, 3 flows with an early output of 2 at flow 2,
    /// 2 layers, 3 channels, 4 bands, hop 16.
    static func tinyConfig(coupling: String = "affine", alternate: Bool = false, flows: Int = 3) -> ModelConfig {
        var c = ModelConfig()
        c.family = "waveglow"
        c.nFFT = 32; c.winLength = 32; c.hopLength = 16; c.nMels = 4
        c.nGroup = 8; c.nFlows = flows; c.nLayers = 2; c.channels = 3; c.kernelSize = [3]
        c.nEarlyEvery = 2; c.nEarlySize = 2; c.coupling = coupling; c.alternateHalves = alternate
        return c
    }

    /// Every tensor random; each W the identity plus noise (well conditioned, det != 1).
    static func randomModel<T: Real>(_ c: ModelConfig, seed: UInt64 = 1, _: T.Type = T.self) -> FlowModel<T> {
        let m = FlowModel<T>(config: c)
        var rng = TestRNG(seed)
        for v in m.params.views {
            let scale: T = v.name.contains(".end.") ? 0.2 : 0.5
            for i in v.range { m.params.valueBuffer[i] = rng.uniform(scale) }
            if v.name.hasPrefix("convinv.") {
                for d in 0..<v.shape[0] { m.params.valueBuffer[v.offset + d * v.shape[0] + d] += 1 }
            }
        }
        return m
    }

    static let variants = ["affine", "additive", "alternate"]

    /// z, log-det, NLL and synthesis of the three fixture models equal the
    /// NumPy reference's: Float32 within the reordering tolerance, Float64
    /// within what the Float32-read references hold.
    func testMatchesIndependentReference() throws {
        let mel = try NPY.read(fixture("waveglow/mel.npy"))
        let audio = try NPY.read(fixture("waveglow/audio.npy")).values
        let latent = try NPY.read(fixture("waveglow/latent.npy")).values
        let frames = mel.shape[1]
        for v in Self.variants {
            let ck = try Checkpoint.load(fixture("waveglow/\(v).safetensors"))
            XCTAssertEqual(ck.config.family, "waveglow")
            XCTAssertEqual(ck.config.coupling, v == "additive" ? "additive" : "affine")
            XCTAssertEqual(ck.config.alternateHalves, v == "alternate")
            let refZ = try NPY.read(fixture("waveglow/\(v)_z.npy")).values
            let refLogdet = Double(try NPY.read(fixture("waveglow/\(v)_logdet.npy")).values[0])
            let refNLL = Double(try NPY.read(fixture("waveglow/\(v)_nll.npy")).values[0])
            let refSynth = try NPY.read(fixture("waveglow/\(v)_synth.npy")).values

            let s = ck.model.forward(audio: audio, mel: mel.values, batch: 1, frames: frames, keepCache: false, context: .fp32)
            XCTAssertLessThan(normRelativeError(s.z, refZ), Tolerance.float32Reordered, "\(v) z")
            XCTAssertEqual(Double(s.logdet[0]), refLogdet, accuracy: 1e-5 * abs(refLogdet) + 1e-5, "\(v) logdet")
            XCTAssertEqual(Double(s.nll[0]), refNLL, accuracy: 1e-5, "\(v) nll")
            let x = ck.model.synthesise(mel: mel.values, frames: frames, z: latent, context: .fp32)
            XCTAssertLessThan(normRelativeError(x, refSynth), Tolerance.float32Reordered, "\(v) synthesis")

            let m64 = FlowModel<Double>(config: ck.config)
            m64.params.values = ck.model.params.values.map(Double.init)
            let s64 = m64.forward(audio: audio.map(Double.init), mel: mel.values.map(Double.init), batch: 1, frames: frames,
                                  keepCache: false, context: .fp32)
            XCTAssertLessThan(normRelativeError(s64.z, refZ.map(Double.init)), 1e-6, "\(v) z (Float64)")
            XCTAssertEqual(Double(s64.nll[0]), refNLL, accuracy: 1e-7, "\(v) nll (Float64)")
        }
    }

    /// The whole model's loss gradient (every tensor: upsampler, 1x1
    /// matrices with their log-det, WN stacks, ends) against finite
    /// differences, for each coupling kind, over a batch of two (the
    /// condition grouped, its gradient scattered back) and of one (the
    /// condition read and its gradient added in place).
    func testModelGradientMatchesFiniteDifferences() {
        for (coupling, alternate, batch) in [("affine", false, 2), ("additive", false, 2), ("affine", true, 2), ("affine", false, 1)] {
            let cfg = Self.tinyConfig(coupling: coupling, alternate: alternate)
            let model: FlowModel<Double> = Self.randomModel(cfg, seed: 5)
            let frames = 3
            let tPrime = 40 // w = 5 < frames*hop/8: the crop of the condition is exercised
            var rng = TestRNG(9)
            let mel: [Double] = rng.array(batch * cfg.nMels * frames)
            let x: [Double] = rng.array(batch * tPrime, scale: 0.5)
            GradientCheck.checkModel(model, audio: x, mel: mel, batch: batch, frames: frames,
                                     label: "\(coupling) alternate=\(alternate) B=\(batch)")
        }
    }

    /// The audio gradient through every step (the dX each backward returns).
    func testInputGradientMatchesFiniteDifferences() {
        let cfg = Self.tinyConfig()
        let model: FlowModel<Double> = Self.randomModel(cfg, seed: 6)
        let frames = 2
        var rng = TestRNG(4)
        let mel: [Double] = rng.array(cfg.nMels * frames)
        var x: [Double] = rng.array(32, scale: 0.5)
        // d NLL / dx from the steps' backward, through z's prior gradient.
        let s = model.forward(audio: x, mel: mel, batch: 1, frames: frames, context: .fp32)
        var dz = [Double](repeating: 0, count: s.z.count)
        let dLogdet = model.prior.backward(z: s.z, dZ: &dz, batch: 1, count: 32)
        let grid = GridShape(batch: 1, rows: 8, width: 4)
        var dx = model.squeezeAudio(dz, batch: 1, width: 4)
        var dCd = [Double](repeating: 0, count: cfg.nMels * 32)
        for (step, f) in zip(model.steps, s.steps).reversed() {
            dx = step.backward(f, dOutput: dx, dLogdet: dLogdet, dCondition: &dCd, grid: grid, context: .fp32)
        }
        let analytic = model.unsqueezeAudio(dx, batch: 1, width: 4)
        GradientCheck.check(&x, analytic: analytic, label: "dx") {
            model.forward(audio: $0, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32).nll[0]
        }
    }

    /// log|det J| of audio -> z by central differences equals the model's log-det.
    func testLogDeterminantMatchesBruteForceJacobian() {
        for coupling in ["affine", "additive"] {
            let cfg = Self.tinyConfig(coupling: coupling, alternate: coupling == "affine")
            let model: FlowModel<Double> = Self.randomModel(cfg, seed: 3)
            let frames = 3, t = 48
            var rng = TestRNG(3)
            let mel: [Double] = rng.array(cfg.nMels * frames)
            let x: [Double] = rng.array(t, scale: 0.5)
            let s = model.forward(audio: x, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32)
            XCTAssertEqual(GradientCheck.bruteForceLogDet(model, audio: x, mel: mel, frames: frames), s.logdet[0],
                           accuracy: Tolerance.bruteForceLogDet, coupling)
        }
    }

    /// Synthesis inverts scoring; the blocked inverse (several column blocks
    /// with halos, on the cores) equals the one-block naive twin.
    func testInverseAndBlockedInverse() throws {
        for v in Self.variants {
            let cfg = Self.tinyConfig(coupling: v == "additive" ? "additive" : "affine", alternate: v == "alternate", flows: 5)
            let model: FlowModel<Float> = Self.randomModel(cfg, seed: 7)
            let frames = 40, t = frames * cfg.hopLength // w = 80 columns, reach 3
            var rng = TestRNG(11)
            let mel: [Float] = rng.array(cfg.nMels * frames)
            let x: [Float] = rng.array(t, scale: 0.5)
            let z = model.forward(audio: x, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32).z
            var blocked = ComputeContext.fp32
            blocked.synthesisBlockColumns = 1 // blocks of 48 columns (16 x reach): 2 of them
            let coupling = try XCTUnwrap(model.steps.compactMap { $0 as? WaveGlowCoupling<Float> }.first)
            XCTAssertGreaterThanOrEqual(coupling.inverseBlocks(width: t / 8, context: blocked), 2)
            let back = model.synthesise(mel: mel, frames: frames, z: z, context: blocked)
            XCTAssertLessThan(normRelativeError(back, x), Tolerance.float32RoundTrip, "\(v) round trip")
            let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertLessThan(normRelativeError(back, naive), Tolerance.float32Reordered, "\(v) blocked vs naive")
            let whole = model.synthesise(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertLessThan(normRelativeError(whole, naive), Tolerance.float32Reordered, "\(v) one block vs naive")
        }
    }

    /// Synthesis with the upsampler folded into every flow's projection
    /// (`WaveGlowConditionFold`) equals the unfolded naive twin up to
    /// rounding, in one block and in several; the kept fold follows the
    /// weights (one changed value is enough); `.auto` folds only an utterance
    /// long enough to pay for it, or with a fold already kept.
    func testFoldedConditionEqualsUnfolded() throws {
        for v in Self.variants {
            let cfg = Self.tinyConfig(coupling: v == "additive" ? "additive" : "affine", alternate: v == "alternate", flows: 5)
            let model: FlowModel<Double> = Self.randomModel(cfg, seed: 9)
            let up = try XCTUnwrap(model.conditioner as? WaveGlowUpsampler<Double>)
            let frames = 40, t = frames * cfg.hopLength // w = 80 columns, P = 2 per frame
            var rng = TestRNG(12)
            let mel: [Double] = rng.array(cfg.nMels * frames), z: [Double] = rng.array(t, scale: 0.8)
            let folded = ComputeContext.fp32.with(conditionFolding: .always)
            var blocked = folded
            blocked.synthesisBlockColumns = 1 // blocks of 16 x reach columns, not frame-aligned
            XCTAssertFalse(up.hasFold)
            let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)
            for context in [folded, blocked] {
                let out = model.synthesise(mel: mel, frames: frames, z: z, context: context)
                XCTAssertLessThan(normRelativeError(out, naive), Tolerance.float64Reordered, "\(v) folded")
            }
            XCTAssertTrue(up.hasFold)
            // One changed value of a projection, then of the upsampler's bias: the fold follows.
            for name in ["WN.4.cond_layer.weight", "upsample.bias"] {
                model.params.valueBuffer[model.params.offset(name) + 1] += 0.25
                let changed = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)
                XCTAssertGreaterThan(normRelativeError(changed, naive), 1e-6, name)
                let out = model.synthesise(mel: mel, frames: frames, z: z, context: blocked)
                XCTAssertLessThan(normRelativeError(out, changed), Tolerance.float64Reordered, "\(v) after changing \(name)")
            }
        }
        // .auto: a short utterance unfolded, one past the break-even folded (and the fold kept for later ones).
        let cfg = Self.tinyConfig()
        let model: FlowModel<Float> = Self.randomModel(cfg, seed: 4)
        let up = try XCTUnwrap(model.conditioner as? WaveGlowUpsampler<Float>)
        let breakEven = up.foldSources.size.breakEvenColumns, perFrame = cfg.hopLength / cfg.nGroup
        var rng = TestRNG(5)
        for (frames, folds) in [(2, false), (breakEven / perFrame + 1, true)] {
            let mel: [Float] = rng.array(cfg.nMels * frames), z: [Float] = rng.array(frames * cfg.hopLength)
            let out = model.synthesise(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertEqual(up.hasFold, folds, "\(frames) frames, break-even \(breakEven) columns")
            let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: .fp32)
            XCTAssertLessThan(normRelativeError(out, naive), Tolerance.float32Reordered)
        }
        // Float32 in several blocks: the panel kernel's products (x86) by output row, and the halos copied.
        var blocked = ComputeContext.fp32.with(conditionFolding: .always)
        blocked.synthesisBlockColumns = 1
        let mel: [Float] = rng.array(cfg.nMels * 40), z: [Float] = rng.array(40 * cfg.hopLength)
        let coupling = try XCTUnwrap(model.steps.compactMap { $0 as? WaveGlowCoupling<Float> }.first)
        XCTAssertGreaterThanOrEqual(coupling.inverseBlocks(width: 40 * cfg.hopLength / cfg.nGroup, context: blocked), 2)
        XCTAssertLessThan(normRelativeError(model.synthesise(mel: mel, frames: 40, z: z, context: blocked),
                                            model.synthesiseNaive(mel: mel, frames: 40, z: z, context: .fp32)), Tolerance.float32Reordered)
        XCTAssertNil(up.foldForSynthesis(columns: 1 << 20, context: ComputeContext.fp32.with(conditionFolding: .never)))
        // A service builds the fold before its first request; `.auto` builds nothing ahead.
        let served: FlowModel<Float> = Self.randomModel(cfg, seed: 6)
        XCTAssertEqual(served.prepareForSynthesis(context: .fp32), 0)
        let megabytes = served.prepareForSynthesis(context: ComputeContext.fp32.with(conditionFolding: .always))
        XCTAssertEqual(megabytes, Double(cfg.nFlows * 2 * cfg.channels * cfg.nLayers * 2 * (4 * cfg.nMels + 1) * 4) / 1e6, accuracy: 1e-12)
        XCTAssertTrue(try XCTUnwrap(served.conditioner as? WaveGlowUpsampler<Float>).hasFold)
    }

    /// The dilated convolution's expansion product equals direct sums, and
    /// its adjoint is the transpose of the expansion (<E a, g> = <a, E^T g>).
    func testDilatedConvolutionMatchesNaive() {
        var rng = TestRNG(21)
        for d in [1, 2, 4, 8] {
            let s = DilatedConvShape(cin: 3, batch: 2, width: 7, dilation: d)
            let cout = 4
            let a: [Double] = rng.array(s.cin * s.n), w: [Double] = rng.array(cout * 3 * s.cin)
            var yNaive = [Double](repeating: 0, count: cout * s.n)
            DilatedConv1D.forwardNaive(s, cout: cout, input: a, weight: w, output: &yNaive)
            // Direct and by Winograd's F(4, 3), overwriting and accumulating; the
            // backward pass by Winograd against the direct one.
            let y0: [Double] = rng.array(cout * s.n), dy: [Double] = rng.array(cout * s.n)
            let dw0: [Double] = rng.array(w.count), da0: [Double] = rng.array(a.count)
            var gradients: [[Double]] = []
            for policy in WinogradPolicy.allCases {
                let context = ComputeContext.fp32.with(widthWinograd: policy)
                var e = [Double](repeating: .nan, count: DilatedConv1D.scratchCount(s, cout: cout, context: context)), de = e
                var y = [Double](repeating: .nan, count: cout * s.n), acc = y0
                DilatedConv1D.forward(context, s, cout: cout, input: a, weight: w, e: &e, output: &y, accumulate: false)
                XCTAssertLessThan(normRelativeError(y, yNaive), Tolerance.float64Reordered, "d=\(d) \(policy)")
                DilatedConv1D.forward(context, s, cout: cout, input: a, weight: w, e: &e, output: &acc, accumulate: true)
                XCTAssertLessThan(normRelativeError(acc, zip(y0, yNaive).map { $0 + $1 }), Tolerance.float64Reordered, "d=\(d) \(policy)")
                var (dw, da) = (dw0, da0)
                DilatedConv1D.backward(context, s, cout: cout, input: a, weight: w, dOutput: dy, dy16: nil, dWeight: &dw, dInput: &da,
                                       e: &e, de: &de)
                gradients.append(dw + da)
                if let count = DilatedConv1D.transformedInputCount(s, cout: cout, context: context) {
                    // Training keeps the input's transform for the backward pass, which then needs no input: the same gradients.
                    var v = [Double](repeating: .nan, count: count), yk = y
                    DilatedConv1D.forward(context, s, cout: cout, input: a, weight: w, e: &e, output: &yk, accumulate: false,
                                          keepingTransformed: &v)
                    XCTAssertEqual(yk, y, "d=\(d) \(policy)")
                    e = [Double](repeating: .nan, count: e.count) // nothing of the input left in the scratch
                    var (dwk, dak) = (dw0, da0)
                    DilatedConv1D.backward(context, s, cout: cout, input: nil, transformed: v, weight: w, dOutput: dy, dy16: nil,
                                           dWeight: &dwk, dInput: &dak, e: &e, de: &de)
                    XCTAssertEqual(dwk + dak, dw + da, "d=\(d) \(policy)")
                }
            }
            for g in gradients.dropFirst() { XCTAssertLessThan(normRelativeError(g, gradients[0]), Tolerance.float64Reordered, "d=\(d)") }
            let g: [Double] = rng.array(3 * s.cin * s.n)
            var back = [Double](repeating: 0, count: s.cin * s.n)
            DilatedConv1D.expandAdjoint(s, g, addingInto: &back)
            XCTAssertEqual(dot(expanded(s, a), g), dot(a, back), accuracy: 1e-12, "d=\(d)")
        }
    }

    private func expanded(_ s: DilatedConvShape, _ a: [Double]) -> [Double] {
        var e = [Double](repeating: 0, count: 3 * s.cin * s.n)
        DilatedConv1D.expand(s, input: a, into: &e)
        return e
    }

    /// A new model: each W a rotation with det +1, `end` zero, so z is a
    /// fixed rotation of the data and the log-det is 0; trains from there.
    func testInitialisedModelIsARotation() {
        let cfg = Self.tinyConfig()
        let model = FlowModel<Double>(config: cfg)
        model.initialise(seed: 3)
        for k in 0..<cfg.nFlows {
            let v = model.params.view("convinv.\(k).conv.weight")
            let c = v.shape[0]
            let w = Array(model.params.valueBuffer[v.range])
            XCTAssertEqual(SmallMatrix.determinant(w, n: c), 1, accuracy: 1e-12)
            for i in 0..<c { for j in 0..<c {
                let d = (0..<c).reduce(0.0) { $0 + w[i * c + $1] * w[j * c + $1] }
                XCTAssertEqual(d, i == j ? 1 : 0, accuracy: 1e-12)
            } }
            XCTAssertTrue(model.params["WN.\(k).end.weight"].allSatisfy { $0 == 0 })
        }
        var rng = TestRNG(2)
        let mel: [Double] = rng.array(cfg.nMels * 2)
        let x: [Double] = rng.array(32)
        let s = model.forward(audio: x, mel: mel, batch: 1, frames: 2, keepCache: false, context: .fp32)
        XCTAssertEqual(s.logdet[0], 0, accuracy: 1e-12)
        XCTAssertEqual(dot(s.z, s.z), dot(x, x), accuracy: 1e-10) // a rotation keeps the norm
    }

    /// Config: WaveGlow keys written and read back (kernel_size the number 3,
    /// no upsample_factors), checkpoints round-trip, bad values refused by name.
    func testConfigAndCheckpointRoundTrip() throws {
        let cfg = Self.tinyConfig(coupling: "additive", alternate: true)
        let json = cfg.json
        for key in [#""family":"waveglow""#, #""kernel_size":3"#, #""coupling":"additive""#, #""alternate_halves":true"#,
                    #""n_early_every":2"#, #""n_early_size":2"#] {
            XCTAssertTrue(json.contains(key), "\(json) lacks \(key)")
        }
        XCTAssertFalse(json.contains("upsample_factors"))
        XCTAssertEqual(try JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8)), cfg)
        // WaveFlow configs are written as before.
        XCTAssertFalse(ModelTests.tinyConfig().json.contains("coupling"))

        let dir = temporaryFolder(self)
        let model: FlowModel<Float> = Self.randomModel(cfg)
        try Checkpoint.save(model: model, to: dir + "/g.safetensors")
        let back = try Checkpoint.load(dir + "/g.safetensors")
        XCTAssertEqual(back.config, cfg)
        XCTAssertEqual(back.model.params.values, model.params.values)

        let bad: [(String, (inout ModelConfig) -> Void)] = [
            ("coupling must be", { $0.coupling = "spline" }),
            ("n_early_size must be even", { $0.nEarlySize = 3 }),
            ("at least 2 are needed", { $0.nFlows = 12; $0.nEarlyEvery = 1 }),
            ("n_group must be even", { $0.nGroup = 7 }),
            ("kernel_size must be 3", { $0.kernelSize = [5] }),
        ]
        for (words, change) in bad {
            var c = cfg
            change(&c)
            assertFails([words]) { try c.validate() }
        }
        // A WaveFlow key-set in a WaveGlow file and the other way round.
        assertFails(["'n_early_size'", "family is waveflow"]) { try ModelConfig.checkKeys(["n_early_size": 2]) }
    }
}
