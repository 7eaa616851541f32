import Foundation
import XCTest
@testable import WaveFlow

/// The bf16 backend (oneDNN, loaded at run time; scripts/setup.sh installs
/// Debian's libdnnl2, so on a CPU with bf16 its absence is a failure; only a
/// CPU without AVX-512 BF16 or AMX skips these tests).
final class BF16Tests: XCTestCase {
    func backend() throws -> OneDNN {
        switch OneDNN.bf16 {
        case .success(let d): return d
        case .failure(let e):
            let cpu = CPUInfo.current
            if !cpu.hasAVX512BF16 && !cpu.hasAMX { throw XCTSkip("this CPU has no bf16 instructions (\(e.message))") }
            XCTFail("oneDNN unavailable: \(e.message)"); throw e
        }
    }

    /// Rounding to bf16 is round-to-nearest-even on the top 16 bits.
    func testRoundingToBF16() {
        let xs: [Float] = [1, -2.5, 1 + 1.0 / 256, 1 + 3.0 / 512, 3.14159265, 1e-30, -7e20]
        var out = [UInt16](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { OneDNN.toBF16($0.baseAddress!, rows: 1, cols: xs.count, ld: xs.count, into: &out) }
        for (x, b) in zip(xs, out) {
            let back = Float(bitPattern: UInt32(b) << 16)
            XCTAssertLessThanOrEqual(abs(back - x), abs(x) / 256, "\(x) -> \(back)")
        }
        // Ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
        XCTAssertEqual(out[2], Float(1).bitPattern.high16)
    }

    /// Every orientation and accumulation matches the Float64 product of the
    /// bf16-rounded operands (so only the rounding of the inputs differs from
    /// fp32), and the fp32 product within bf16 precision.
    func testMatmulMatchesReference() throws {
        let dnnl = try backend()
        var rng = TestRNG(31)
        for (ta, tb, beta) in [(false, false, Float(0)), (false, false, 1), (true, false, 0), (false, true, 1), (true, true, 0)] {
            let (m, n, k) = (33, 70, 48)
            let lda = ta ? m + 3 : k + 2, ldb = tb ? k + 1 : n + 5, ldc = n + 7
            let a: [Float] = rng.array((ta ? k : m) * lda), b: [Float] = rng.array((tb ? n : k) * ldb)
            let c0: [Float] = rng.array(m * ldc)
            var c = c0
            try dnnl.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &c, ldc: ldc)
            let rounded = referenceProduct(ta, tb, m, n, k, a, lda, b, ldb) { Double(Float(bitPattern: UInt32($0.bitPattern.high16RoundedEven) << 16)) }
            let exact = referenceProduct(ta, tb, m, n, k, a, lda, b, ldb)
            var worst = 0.0, worstExact = 0.0
            for i in 0..<m { for j in 0..<n {
                let base = Double(beta) * Double(c0[i * ldc + j])
                worst = max(worst, abs(Double(c[i * ldc + j]) - (rounded[i * n + j] + base)))
                worstExact = max(worstExact, abs(Double(c[i * ldc + j]) - (exact[i * n + j] + base)))
            } }
            XCTAssertLessThan(worst, 1e-4, "ta \(ta) tb \(tb) beta \(beta)")
            XCTAssertLessThan(worstExact, 0.1, "ta \(ta) tb \(tb) beta \(beta)")
            // Padding between rows of C is untouched.
            for i in 0..<m { for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j]) } }
        }
    }

    /// oneDNN's f32 matmul (fp32 weight gradients) equals the Float64 product
    /// within Float32 rounding in every orientation, strided, with and
    /// without accumulation; and `Float.gemm` on a weight-gradient shape
    /// (routed there when oneDNN loads) equals OpenBLAS's product.
    func testF32MatmulMatchesReference() throws {
        // f32 products need only the library (scripts/setup.sh installs it), not a bf16 CPU.
        let dnnl: OneDNN
        switch OneDNN.shared {
        case .success(let d): dnnl = d
        case .failure(let e): XCTFail("oneDNN unavailable: \(e.message)"); throw e
        }
        var rng = TestRNG(32)
        for (ta, tb, acc) in [(false, false, false), (false, true, true), (true, false, true), (true, true, false)] {
            let (m, n, k) = (33, 70, 48)
            let lda = ta ? m + 3 : k + 2, ldb = tb ? k + 1 : n + 5, ldc = n + 7
            let a: [Float] = rng.array((ta ? k : m) * lda), b: [Float] = rng.array((tb ? n : k) * ldb)
            let c0: [Float] = rng.array(m * ldc)
            var c = c0
            try dnnl.gemmF32(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, accumulate: acc, c: &c, ldc: ldc)
            let exact = referenceProduct(ta, tb, m, n, k, a, lda, b, ldb)
            var worst = 0.0
            for i in 0..<m { for j in 0..<n {
                let base = acc ? Double(c0[i * ldc + j]) : 0
                worst = max(worst, abs(Double(c[i * ldc + j]) - (exact[i * n + j] + base)))
            } }
            XCTAssertLessThan(worst, 1e-5, "ta \(ta) tb \(tb) accumulate \(acc)")
            for i in 0..<m { for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j]) } }
        }
        // dW [64, 96] += dY [64, K] x E [96, K]^T, K = 5000: oneDNN via Float.gemm against OpenBLAS.
        let (m, n, k) = (64, 96, 5000)
        XCTAssertTrue(WeightGradients.shape(transA: false, transB: true, m: m, n: n, k: k, lda: k, ldb: k))
        let a: [Float] = rng.array(m * k), b: [Float] = rng.array(n * k), c0: [Float] = rng.array(m * n)
        var routed = c0, blas = c0
        var onOneDNN = ComputeContext.fp32, onOpenBLAS = ComputeContext.fp32
        onOneDNN.weightGradientsOnOneDNN = true
        onOpenBLAS.weightGradientsOnOneDNN = false
        Float.product(onOneDNN, transA: false, transB: true, m: m, n: n, k: k, a: a, a16: nil, lda: k, b: b, b16: nil, ldb: k,
                      accumulate: true, c: &routed, ldc: n)
        Float.product(onOpenBLAS, transA: false, transB: true, m: m, n: n, k: k, a: a, a16: nil, lda: k, b: b, b16: nil, ldb: k,
                      accumulate: true, c: &blas, ldc: n)
        XCTAssertLessThan(normRelativeError(routed, blas), Tolerance.float32Reordered)
        // A fresh output of a short reduction (WaveFlow's Winograd point
        // products; oneDNN on AVX-512): A a column window (lda > k), C's old
        // values ignored, the same as OpenBLAS's; transposed A too.
        for transA in [false, true] {
            let (m, n, k) = (128, 3000, 64), lda = transA ? m + 8 : 3 * k
            XCTAssertEqual(FreshOutputs.shape(transB: false, m: m, n: n, k: k, accumulate: false), FreshOutputs.avx512)
            let a: [Float] = rng.array((transA ? k : m) * lda), b: [Float] = rng.array(k * n), c0: [Float] = rng.array(m * n)
            var routed = c0, blas = c0
            Float.product(onOneDNN, transA: transA, transB: false, m: m, n: n, k: k, a: a, a16: nil, lda: lda, b: b, b16: nil, ldb: n,
                          accumulate: false, c: &routed, ldc: n)
            Float.product(onOpenBLAS, transA: transA, transB: false, m: m, n: n, k: k, a: a, a16: nil, lda: lda, b: b, b16: nil, ldb: n,
                          accumulate: false, c: &blas, ldc: n)
            XCTAssertLessThan(normRelativeError(routed, blas), Tolerance.float32Reordered, "transA \(transA)")
        }
    }

    /// The same primitive run from several threads at once gives each the
    /// single-threaded result (each execution has its own scratchpad; a
    /// shared one gave NaNs in training).
    func testConcurrentProductsAgree() throws {
        let dnnl = try backend()
        var rng = TestRNG(41)
        // A weight-gradient product (dW = dY x E^T: long reduction), which
        // oneDNN runs with a scratchpad.
        let (m, n, k) = (128, 192, 15360)
        let a: [Float] = rng.array(m * k), b: [Float] = rng.array(n * k)
        var reference = [Float](repeating: 0, count: m * n)
        try dnnl.gemm(transA: false, transB: true, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: k, beta: 0, c: &reference, ldc: n)
        var outs = [[Float]](repeating: [Float](repeating: 0, count: m * n), count: 8)
        var failures = [String?](repeating: nil, count: 8)
        outs.withUnsafeMutableBufferPointer { op in
            failures.withUnsafeMutableBufferPointer { fp in
                let (o, f) = (op.baseAddress!, fp.baseAddress!)
                Threads.parallelFor(8) { i in
                    do {
                        try dnnl.gemm(transA: false, transB: true, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: k, beta: 0, c: &o[i], ldc: n)
                    } catch {
                        f[i] = error.describe()
                    }
                }
            }
        }
        XCTAssertEqual(failures.compactMap { $0 }, [], "a concurrent product failed")
        for out in outs {
            let diff = zip(out, reference).map { abs($0 - $1) }.max()!
            XCTAssertEqual(diff, 0, "a concurrent product differs from the single one by \(diff)")
        }
    }

    /// With bf16 products the model's log-likelihood stays close to fp32's
    /// and so does its gradient (what bf16 training relies on).
    func testModelInBF16() throws {
        _ = try backend()
        // 4 bands: the condition products stay fp32; 16: they take bf16 with
        // Cin and dy rounded once and shared by the layer's products.
        for bands in [4, 16] { try modelInBF16(bands: bands) }
    }

    func modelInBF16(bands: Int) throws {
        var cfg = ModelTests.tinyConfig(h: 16, flows: 2, layers: 3)
        cfg.channels = 32; cfg.nMels = bands
        let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: 4)
        let frames = 8, t = frames * cfg.hopLength
        var rng = TestRNG(9)
        let mel: [Float] = rng.array(cfg.nMels * frames)
        let x: [Float] = rng.array(t, scale: 0.3)
        func nllAndGradient(_ context: ComputeContext) -> (Float, [Float]) {
            model.params.zeroGrad()
            let s = model.forward(audio: x, mel: mel, batch: 1, frames: frames, context: context)
            model.backward(s, context: context)
            return (s.nll[0], model.params.grads)
        }
        let (nll32, g32) = nllAndGradient(.fp32)
        let (nll16, g16) = nllAndGradient(ComputeContext(precision: .bf16))
        XCTAssertLessThan(abs(nll16 - nll32), 0.02, "NLL fp32 \(nll32) bf16 \(nll16), \(bands) bands")
        XCTAssertLessThan(normRelativeError(g16, g32), 0.05, "\(bands) bands")
        XCTAssertGreaterThan(normRelativeError(g16, g32), 0, "the bf16 path was taken")
    }

    /// The convolution with bf16 operands converted once per call (its
    /// expanded input, dOut, the taps) equals im2col with bf16 products,
    /// which rounds the same values in every product; forward and backward.
    func testCausalConvInBF16MatchesIm2col() throws {
        _ = try backend()
        var rng = TestRNG(19)
        let s = CausalConvShape(cin: 16, cout: 32, dh: 2, dw: 4, batch: 2, height: 6, width: 20)
        let g = s.geometry, n = s.n
        let x: [Float] = rng.array(s.cin * n), w: [Float] = rng.array(s.cout * s.cin * 9), b: [Float] = rng.array(s.cout)
        let dOut: [Float] = rng.array(s.cout * n)
        let taps = w.withUnsafeBufferPointer { CausalConv.regroup($0.baseAddress!, cin: s.cin, cout: s.cout) }
        func run(_ context: ComputeContext) -> [[Float]] {
            var e = [Float](repeating: 0, count: CausalConv.scratchCount(s, context: context)), de = e
            var col = [Float](repeating: 0, count: g.k * g.nOut)
            var out = [Float](repeating: 0, count: s.cout * n), ref = out
            CausalConv.forward(context, s, input: x, taps: taps, bias: b, output: &out, e: &e)
            Conv2D.forward(context, g, input: x, weight: w, bias: b, output: &ref, col: &col)
            var (dw, db, dx) = ([Float](repeating: 0, count: w.count), [Float](repeating: 0, count: s.cout), [Float](repeating: 0, count: x.count))
            var (rdw, rdb, rdx) = (dw, db, dx)
            CausalConv.backward(context, s, input: x, taps: taps, dOutput: dOut, dWeight: &dw, dBias: &db, dInput: &dx, e: &e, de: &de)
            Conv2D.backward(context, g, input: x, weight: w, dOutput: dOut, dWeight: &rdw, dBias: &rdb, dInput: &rdx, col: &col)
            return [out, ref, dw, rdw, dx, rdx]
        }
        let fp32 = run(.fp32)
        let bf16 = run(ComputeContext(precision: .bf16))
        for (i, name) in [(0, "forward"), (2, "dW"), (4, "dInput")] {
            XCTAssertLessThanOrEqual(normRelativeError(bf16[i], bf16[i + 1]), Tolerance.float32Reordered, "\(name): bf16 causal vs bf16 im2col")
            XCTAssertGreaterThan(normRelativeError(bf16[i], fp32[i]), 1e-4, "\(name): the bf16 path was taken")
        }
    }

    /// bf16 synthesis (operands rounded once, as stored) equals the naive
    /// inverse run with bf16 products (which rounds the same values at each
    /// product), in column blocks; and it is not the fp32 synthesis.
    func testSynthesisInBF16() throws {
        _ = try backend()
        var cfg = ModelTests.tinyConfig(h: 16, flows: 2, layers: 3)
        cfg.channels = 32; cfg.nMels = 16 // every product at least 16 wide, so the naive path also takes bf16
        let model: FlowModel<Float> = ModelTests.randomModel(cfg, seed: 6)
        let frames = 6, t = frames * cfg.hopLength
        var rng = TestRNG(13)
        let mel: [Float] = rng.array(cfg.nMels * frames)
        let z: [Float] = rng.array(t)
        var blocks = ComputeContext.fp32
        blocks.synthesisBlockColumns = 16 // w = 96: six blocks
        let fp32 = model.synthesise(mel: mel, frames: frames, z: z, context: blocks)
        let bf16Context = blocks.with(precision: .bf16)
        let bf16 = model.synthesise(mel: mel, frames: frames, z: z, context: bf16Context)
        let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z, context: bf16Context)
        XCTAssertLessThanOrEqual(normRelativeError(bf16, naive), Tolerance.float32Reordered, "bf16 synthesis vs the naive inverse in bf16")
        XCTAssertGreaterThan(normRelativeError(bf16, fp32), 1e-4, "the bf16 path was taken")
    }

    /// WaveGlow's folded synthesis with bf16 products (the projections by
    /// frames, `projectByFrames`) equals the unfolded synthesis in bf16 up to
    /// bf16 rounding, in several column blocks; and it is not fp32's.
    func testWaveGlowFoldedSynthesisInBF16() throws {
        _ = try backend()
        var cfg = WaveGlowTests.tinyConfig(flows: 3)
        cfg.channels = 16; cfg.nMels = 8 // products at least 16 wide: bf16 throughout
        let model: FlowModel<Float> = WaveGlowTests.randomModel(cfg, seed: 8)
        let frames = 40, t = frames * cfg.hopLength
        var rng = TestRNG(14)
        let mel: [Float] = rng.array(cfg.nMels * frames), z: [Float] = rng.array(t, scale: 0.8)
        var bf16 = ComputeContext(precision: .bf16).with(conditionFolding: .always)
        bf16.synthesisBlockColumns = 1 // blocks of 16 x reach columns
        let folded = model.synthesise(mel: mel, frames: frames, z: z, context: bf16)
        let unfolded = model.synthesise(mel: mel, frames: frames, z: z, context: bf16.with(conditionFolding: .never))
        let fp32 = model.synthesise(mel: mel, frames: frames, z: z, context: ComputeContext.fp32.with(conditionFolding: .always))
        XCTAssertLessThan(normRelativeError(folded, unfolded), 0.02, "folded vs unfolded, bf16")
        XCTAssertLessThan(normRelativeError(folded, fp32), 0.02, "bf16 vs fp32, folded")
        XCTAssertGreaterThan(normRelativeError(folded, fp32), 1e-5, "the bf16 path was taken")
    }

    /// With the shipped (trained) model, bf16 synthesis from the same latent
    /// stays within 2% (relative L2) of fp32's: the row-by-row inverse does
    /// not amplify the rounding. (A random model can: its flows are far from
    /// well-conditioned.)
    func testShippedModelSynthesisInBF16() throws {
        _ = try backend()
        let model = try Checkpoint.load(CLITests.repoRoot + "/Checkpoints/shipped/model.safetensors").model
        let spec = try MelSpectrogram(config: model.config.mel)
        let full = try spec.compute(file: exampleAudio("tank__sv-v-chtel.ogg"))
        let frames = min(full.shape[1], 86) // about a second
        let mel = (0 ..< model.config.nMels).flatMap { full.values[$0 * full.shape[1] ..< $0 * full.shape[1] + frames] }
        let z = Synthesizer.noise(count: frames * model.config.hopLength, sigma: 0.9, seed: 3)
        let fp32 = model.synthesise(mel: mel, frames: frames, z: z, context: .fp32)
        let bf16 = model.synthesise(mel: mel, frames: frames, z: z, context: ComputeContext(precision: .bf16))
        let apart = normRelativeError(bf16, fp32)
        XCTAssertGreaterThan(apart, 0)
        XCTAssertLessThan(apart, 0.02, "bf16 synthesis vs fp32 from the same latent")
    }
}

extension UInt32 {
    var high16: UInt16 { UInt16(self >> 16) }
    var high16RoundedEven: UInt16 { UInt16(truncatingIfNeeded: (self &+ 0x7FFF &+ ((self >> 16) & 1)) >> 16) }
}

/// op(A) op(B) [m, n] in Float64 (row-major operands with row strides lda,
/// ldb, as cblas_sgemm reads them), each operand value mapped by `value`
/// first (e.g. rounded to bf16): the oracle of the oneDNN product tests.
func referenceProduct(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ a: [Float], _ lda: Int, _ b: [Float], _ ldb: Int,
                      value: (Float) -> Double = { Double($0) }) -> [Double] {
    var out = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n {
        var s = 0.0
        for p in 0..<k { s += value(ta ? a[p * lda + i] : a[i * lda + p]) * value(tb ? b[j * ldb + p] : b[p * ldb + j]) }
        out[i * n + j] = s
    } }
    return out
}
