import XCTest
@testable import WaveFlow

/// Winograd's F(4, 3) along the width (`WidthWinograd`), the panel product
/// kernel it runs on (`PackedWeights`, `Real.segmentProduct`), and WaveFlow
/// synthesis with it against the direct products.
final class WinogradTests: XCTestCase {
    /// Transform the kernel and a block of a row, multiply per point, and
    /// the output transform gives the direct dilated convolution (zero
    /// outside the row) to Float64 rounding: dilations 1-5 and 8, blocks
    /// shorter than a tile, with partial tiles, at the row's edges and inside.
    func testTransformsEqualDirectConvolution() {
        var rng = TestRNG(41)
        let (cin, cout) = (3, 2)
        for d in [1, 2, 3, 5, 8] {
            for (width, j0, n) in [(40, 0, 40), (40, 0, 1), (40, 3, 7), (90, 17, 29), (90, 60, 30), (13, 5, 4)] {
                let x: [Double] = rng.array(cin * width)
                let taps: [Double] = rng.array(3 * cout * cin) // tap k at [k][o, c]
                let initial: [Double] = rng.array(cout * n)
                var direct = initial
                for o in 0..<cout { for j in 0..<n { for c in 0..<cin { for k in 0..<3 {
                    let col = j0 + j + (k - 1) * d
                    if col >= 0 && col < width { direct[o * n + j] += taps[(k * cout + o) * cin + c] * x[c * width + col] }
                } } } }
                let tiling = WidthWinograd.Tiling(dilation: d, columns: n)
                XCTAssertEqual(tiling.tiles * 4, tiling.perResidue * 4 * d)
                XCTAssertGreaterThanOrEqual(tiling.rowStride, tiling.tiles)
                let ld = tiling.rowStride
                var u = [Double](repeating: 0, count: 6 * cout * cin), v = [Double](repeating: 0, count: 6 * cin * ld)
                var split = [Double](repeating: .nan, count: tiling.splitCount)
                taps.withUnsafeBufferPointer { WidthWinograd.transformKernel($0.baseAddress!, tapStride: cout * cin, ld: cin, rows: cout, cin: cin,
                                                                            into: &u, pointStride: cout * cin, ldu: cin) }
                x.withUnsafeBufferPointer {
                    WidthWinograd.transformInput($0.baseAddress!, channels: cin, rowStride: width, width: width, start: j0, tiling: tiling,
                                                 into: &v, pointStride: cin * ld, ldv: ld, split: &split)
                }
                var m = [Double](repeating: 0, count: 6 * cout * ld)
                for i in 0..<6 { for o in 0..<cout { for t in 0..<tiling.tiles { for c in 0..<cin {
                    m[(i * cout + o) * ld + t] += u[(i * cout + o) * cin + c] * v[(i * cin + c) * ld + t]
                } } } }
                var y = initial, scratch = [Double](repeating: 0, count: 4 * tiling.tiles)
                WidthWinograd.accumulateOutput(m, pointStride: cout * ld, ldm: ld, rows: cout, tiling: tiling, into: &y, ldy: n, scratch: &scratch)
                XCTAssertLessThanOrEqual(normRelativeError(y, direct), Tolerance.float64Reordered, "d=\(d) width=\(width) j0=\(j0) n=\(n)")
            }
        }
    }

    /// The C transforms at every instruction-set level equal the Swift
    /// twins (Float32, up to the rounding of fused multiply-adds): dilations
    /// from 1 (the shuffle paths) to 64 and not powers of two, blocks at
    /// both edges of a row and inside it, partial tiles, blocks of a few
    /// columns and of hundreds (the vector paths' whole groups).
    func testTransformKernelsMatchSwiftTwins() {
        var rng = TestRNG(47)
        let (ch, rows) = (3, 2)
        for d in [1, 2, 3, 4, 5, 8, 16, 64] {
            for (width, j0, n) in [(40, 0, 40), (40, 0, 1), (40, 3, 7), (90, 17, 29), (700, 0, 700), (700, 64, 512), (700, 150, 550),
                                   (1024, 512, 512), (13, 5, 4)] {
                let tiling = WidthWinograd.Tiling(dilation: d, columns: n), nt = tiling.tiles, ld = tiling.rowStride + 3
                let x: [Float] = rng.array(ch * width + 5), m: [Float] = rng.array(6 * rows * ld), y0: [Float] = rng.array(rows * (n + 2))
                let dv: [Float] = rng.array(6 * ch * ld), dx0: [Float] = rng.array(ch * width + 5)
                func run(_ level: VectorKernels.Level) -> [[Float]] {
                    var v = [Float](repeating: -1, count: 6 * ch * ld), y = y0, dm = [Float](repeating: -1, count: 6 * rows * ld), dx = dx0
                    var split = [Float](repeating: .nan, count: tiling.splitCount), scratch = [Float](repeating: .nan, count: 6 * nt)
                    WidthWinograd.transformInput(x, channels: ch, rowStride: width + 1, width: width, start: j0, tiling: tiling,
                                                 into: &v, pointStride: ch * ld, ldv: ld, split: &split, level: level)
                    WidthWinograd.accumulateOutput(m, pointStride: rows * ld, ldm: ld, rows: rows, tiling: tiling, into: &y, ldy: n + 2,
                                                   scratch: &scratch, level: level)
                    WidthWinograd.outputGradient(y0, ldy: n + 2, rows: rows, tiling: tiling, into: &dm, pointStride: rows * ld, ldm: ld,
                                                 scratch: &scratch, level: level)
                    WidthWinograd.inputGradient(dv, pointStride: ch * ld, ldv: ld, channels: ch, tiling: tiling, into: &dx, rowStride: width + 1,
                                                width: width, start: j0, split: &split, scratch: &scratch, level: level)
                    return [v, y, dm, dx]
                }
                let expected = run(.swift)
                for level in VectorKernels.available where level != .swift {
                    for (k, (got, want)) in zip(run(level), expected).enumerated() {
                        XCTAssertEqual(got.count, want.count)
                        let close = zip(got, want).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }
                        XCTAssertTrue(close, "transform \(k) level \(level) d=\(d) width=\(width) j0=\(j0) n=\(n)")
                    }
                }
            }
        }
    }

    /// The panel kernel at every instruction-set level this CPU runs equals
    /// one BLAS product per segment: row counts around the 6-row panel,
    /// widths around the vector tiles (tails of one and of two vectors),
    /// 1-3 segments, overwrite and accumulate; B rows a multiple of 64
    /// values apart too (the kernel then copies column panels first).
    func testPanelProductMatchesBLAS() {
        var rng = TestRNG(43)
        let shapes = [(1, 4, 1), (5, 3, 15), (6, 8, 16), (13, 5, 17), (128, 64, 33), (64, 32, 100), (7, 2, 47), (2, 64, 47)]
        for (m, segK, n) in shapes { for ldb in [n + 3, 64 * (n / 64 + 1)] {
            let k = 3 * segK, ldc = n + 5
            let a: [Float] = rng.array(m * (k + 2))
            let packed = a.withUnsafeBufferPointer { PackedWeights($0.baseAddress! + 1, rows: m, columns: k, lda: k + 2) }
            let b: [Float] = rng.array(3 * segK * ldb), c0: [Float] = rng.array(m * ldc)
            b.withUnsafeBufferPointer { bp in
                let segs = (0..<3).map { bp.baseAddress! + $0 * segK * ldb }
                for first in 0..<3 {
                    for accumulate in [false, true] {
                        var expected = c0
                        Array(segs[first...]).withUnsafeBufferPointer {
                            Float.segmentProductBLAS(packed, firstColumn: first * segK, segments: $0.baseAddress!, count: 3 - first,
                                                     segmentRows: segK, ldb: ldb, n: n, c: &expected, ldc: ldc, accumulate: accumulate)
                        }
                        for level in VectorKernels.available {
                            var got = c0
                            let ran = Array(segs[first...]).withUnsafeBufferPointer { sp in
                                UnsafeRawPointer(sp.baseAddress!).withMemoryRebound(to: UnsafePointer<Float>?.self, capacity: 3) {
                                    VectorKernels.panelProduct(packed.panels!, m: m, kTotal: k, kFirst: first * segK, b: $0,
                                                               segments: 3 - first, segK: segK, ldb: ldb, n: n, c: &got, ldc: ldc,
                                                               accumulate: accumulate, level: level)
                                }
                            }
                            guard ran else { continue } // no C kernel at this level
                            // Columns past n and rows are untouched; the rest agrees to reordering.
                            for r in 0..<m { for j in n..<ldc { XCTAssertEqual(got[r * ldc + j], c0[r * ldc + j]) } }
                            XCTAssertLessThanOrEqual(normRelativeError(got, expected), Tolerance.float32Reordered,
                                                     "\(level) m=\(m) n=\(n) ldb=\(ldb) first=\(first) accumulate=\(accumulate)")
                        }
                    }
                }
            }
        } }
    }

    /// WaveFlow synthesis with every layer by Winograd equals the direct
    /// products in Float64 (h = 8 ... 64, so height dilations 1-16 and width
    /// dilations up to 8; several blocks, partial tiles), whatever the
    /// block width; in Float32 it equals the naive inverse to reordering.
    func testWinogradSynthesisEqualsDirect() {
        for h in [8, 16, 32, 64] {
            var cfg = ModelTests.tinyConfig(h: h, flows: 2, layers: 4)
            cfg.hopLength = max(16, h); cfg.upsampleFactors = [2, cfg.hopLength / 2]
            let frames = 9, t = frames * cfg.hopLength
            var rng = TestRNG(UInt64(50 + h))
            let mel: [Double] = rng.array(cfg.nMels * frames), z: [Double] = rng.array(t)
            let model: FlowModel<Double> = ModelTests.randomModel(cfg, seed: UInt64(h))
            var direct = ComputeContext(precision: .fp32).with(widthWinograd: .never)
            direct.synthesisBlockColumns = 7
            let reference = model.synthesise(mel: mel, frames: frames, z: z, context: direct)
            for blocks in [5, 7, 1024] {
                var winograd = ComputeContext(precision: .fp32).with(widthWinograd: .always)
                winograd.synthesisBlockColumns = blocks
                let got = model.synthesise(mel: mel, frames: frames, z: z, context: winograd)
                XCTAssertLessThanOrEqual(normRelativeError(got, reference), 1e-10, "h=\(h) blocks of \(blocks)") // rounding through h rows of inverses
            }
            let model32: FlowModel<Float> = ModelTests.randomModel(cfg, seed: UInt64(h))
            let (mel32, z32) = (mel.map(Float.init), z.map(Float.init))
            var winograd = ComputeContext.fp32.with(widthWinograd: .always)
            winograd.synthesisBlockColumns = 6
            let got = model32.synthesise(mel: mel32, frames: frames, z: z32, context: winograd)
            let naive = model32.synthesiseNaive(mel: mel32, frames: frames, z: z32, context: .fp32)
            XCTAssertLessThanOrEqual(normRelativeError(got, naive), Tolerance.float32Reordered, "h=\(h) Float32")
        }
    }

    /// The training convolution by Winograd in Float32 (the panel kernel,
    /// bands of rows with one, two and three vertical taps) equals im2col
    /// and sgemm, forward and backward, to reordering.
    func testCausalConvFloat32ByWinogradMatchesIm2col() {
        var rng = TestRNG(47)
        let shapes = [CausalConvShape(cin: 8, cout: 16, dh: 1, dw: 1, batch: 2, height: 7, width: 37),
                      CausalConvShape(cin: 6, cout: 12, dh: 2, dw: 4, batch: 2, height: 9, width: 64),
                      CausalConvShape(cin: 5, cout: 7, dh: 3, dw: 2, batch: 1, height: 5, width: 50)]
        for s in shapes {
            let g = s.geometry, n = s.n, context = ComputeContext.fp32.with(widthWinograd: .always)
            let x: [Float] = rng.array(s.cin * n), w: [Float] = rng.array(s.cout * s.cin * 9), b: [Float] = rng.array(s.cout)
            let dOut: [Float] = rng.array(s.cout * n)
            let taps = w.withUnsafeBufferPointer { CausalConv.regroup($0.baseAddress!, cin: s.cin, cout: s.cout) }
            var e = [Float](repeating: .nan, count: CausalConv.scratchCount(s, context: context)), de = e
            var out = [Float](repeating: 0, count: s.cout * n), ref = out, col = [Float](repeating: 0, count: g.k * g.nOut)
            CausalConv.forward(context, s, input: x, taps: taps, bias: b, output: &out, e: &e)
            Conv2D.forward(.fp32, g, input: x, weight: w, bias: b, output: &ref, col: &col)
            XCTAssertLessThanOrEqual(normRelativeError(out, ref), Tolerance.float32Reordered, "forward \(s)")
            var (dw, db, dx) = ([Float](repeating: 0, count: w.count), [Float](repeating: 0, count: s.cout), [Float](repeating: 0, count: x.count))
            var (rdw, rdb, rdx) = (dw, db, dx)
            CausalConv.backward(context, s, input: x, taps: taps, dOutput: dOut, dWeight: &dw, dBias: &db, dInput: &dx, e: &e, de: &de)
            Conv2D.backward(.fp32, g, input: x, weight: w, dOutput: dOut, dWeight: &rdw, dBias: &rdb, dInput: &rdx, col: &col)
            XCTAssertLessThanOrEqual(normRelativeError(dw, rdw), Tolerance.float32Reordered, "dW \(s)")
            XCTAssertLessThanOrEqual(normRelativeError(dx, rdx), Tolerance.float32Reordered, "dInput \(s)")
        }
    }

    /// The multiply-adds `info` and `bench` count with Winograd: with no
    /// tile past a block's end, the 3x3 convolutions' share halves exactly
    /// (h16-c64: 15 network rows with 1, 2, then 3 vertical taps, 8 layers,
    /// 8 flows), the rest is unchanged; other families have none.
    func testWinogradMultiplyAddCount() throws {
        let c = try ModelConfig.named("h16-c64")
        let taps = 1 + 2 + 13 * 3, conv = Double(2 * 64 * 64 * 3 * taps * 8 * 8) / 16
        XCTAssertEqual(try XCTUnwrap(c.winogradMacsPerSample(columns: 1024)), c.performedMacsPerSample - conv / 2)
        XCTAssertEqual(try XCTUnwrap(c.winogradMacsPerSample(columns: 1024)), 3_171_744) // `info --config h16-c64`: 3.172 M
        // WaveGlow: 2C x 3C per column in each layer of each flow, G samples per column; 2048 columns tile exactly.
        let wg = try ModelConfig.named("wg-c64")
        XCTAssertEqual(try XCTUnwrap(wg.winogradMacsPerSample(columns: 2048)),
                       wg.performedMacsPerSample - Double(12 * 8 * 2 * 64 * 3 * 64) / 2 / 8)
    }

    /// `auto` takes a layer when its tiles fit the blocks: never more than
    /// 60% of outputs wasted.
    func testAutoPolicyFollowsTheWaste() {
        XCTAssertTrue(WidthWinograd.pays(dilation: 1, columns: 689))
        XCTAssertTrue(WidthWinograd.pays(dilation: 128, columns: 1024))
        XCTAssertTrue(WidthWinograd.pays(dilation: 128, columns: 689)) // 1024 / 689: 49% more
        XCTAssertFalse(WidthWinograd.pays(dilation: 128, columns: 600)) // 71% more
        XCTAssertFalse(WidthWinograd.pays(dilation: 4, columns: 5))
        XCTAssertEqual(WidthWinograd.Tiling(dilation: 1, columns: 1024).rowStride, 272) // 256 is a power of two: padded
    }
}
