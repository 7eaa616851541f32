import XCTest
@testable import WaveFlow

final class LayerTests: XCTestCase {
    /// Shapes that exercise every padding edge, dilations > 1 and batch 2.
    static let geometries: [ConvGeometry] = [
        ConvGeometry(cin: 3, cout: 4, kh: 3, kw: 3, dh: 1, dw: 1, padTop: 2, padBottom: 0, padLeft: 1, padRight: 1,
                     batch: 2, height: 5, width: 7),
        ConvGeometry(cin: 2, cout: 6, kh: 3, kw: 3, dh: 2, dw: 4, padTop: 4, padBottom: 0, padLeft: 4, padRight: 4,
                     batch: 2, height: 6, width: 9),
        ConvGeometry(cin: 2, cout: 3, kh: 2, kw: 3, dh: 1, dw: 2, padTop: 1, padBottom: 2, padLeft: 0, padRight: 3,
                     batch: 1, height: 4, width: 5),
        // Dilation larger than the grid: most taps fall in the padding.
        ConvGeometry(cin: 2, cout: 2, kh: 3, kw: 3, dh: 4, dw: 8, padTop: 8, padBottom: 0, padLeft: 8, padRight: 8,
                     batch: 2, height: 3, width: 4),
    ]

    func testGemmMatchesNaive() {
        var rng = TestRNG(7)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (m, n, k) = (5, 7, 9)
            let a: [Float] = rng.array(m * k), b: [Float] = rng.array(k * n)
            var c1: [Float] = rng.array(m * n)
            var c2 = c1
            Float.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1.5, a: a, lda: ta ? m : k,
                       b: b, ldb: tb ? k : n, beta: 0.5, c: &c1, ldc: n)
            Float.gemmNaive(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1.5, a: a, lda: ta ? m : k,
                            b: b, ldb: tb ? k : n, beta: 0.5, c: &c2, ldc: n)
            XCTAssertLessThanOrEqual(normRelativeError(c1, c2), 1e-5)
        }
    }

    /// Row sums equal the plain loop (accumulating onto `out`), and every
    /// build of the sum kernel equals a Float64 sum within Float32 rounding,
    /// at lengths around the vector widths.
    func testRowSumsMatchNaive() {
        var rng = TestRNG(8)
        let (rows, cols) = (6, 1001)
        let x: [Float] = rng.array(rows * cols)
        var fast: [Float] = rng.array(rows)
        var naive = fast
        x.withUnsafeBufferPointer { xp in
            accumulateRowSums(xp.baseAddress!, into: &fast, rows: rows, cols: cols)
            accumulateRowSumsNaive(xp.baseAddress!, into: &naive, rows: rows, cols: cols)
        }
        XCTAssertLessThanOrEqual(normRelativeError(fast, naive), 1e-5)
        for level in VectorKernels.available {
            for count in [1, 7, 15, 16, 17, 63, 64, 65, 1001] {
                let v: [Float] = rng.array(count)
                let want = v.reduce(0.0) { $0 + Double($1) }
                let scale = v.reduce(0.0) { $0 + Double(abs($1)) }
                let got = VectorKernels.sum(v, count: count, level: level)
                XCTAssertLessThanOrEqual(abs(Double(got) - want), 1e-6 * scale, "\(level) count \(count)")
            }
        }
    }

    /// The tap-decomposed causal convolution equals im2col + GEMM (itself
    /// checked against seven loops and finite differences) forward and
    /// backward, in Float64, including taps that reach above every row
    /// (dh >= H) and dilations wider than the row.
    func testCausalConvMatchesIm2col() {
        var rng = TestRNG(12)
        let shapes = [CausalConvShape(cin: 3, cout: 4, dh: 1, dw: 1, batch: 2, height: 5, width: 7),
                      CausalConvShape(cin: 2, cout: 6, dh: 2, dw: 4, batch: 3, height: 4, width: 6),
                      CausalConvShape(cin: 4, cout: 2, dh: 8, dw: 8, batch: 2, height: 5, width: 5),
                      CausalConvShape(cin: 5, cout: 10, dh: 1, dw: 2, batch: 1, height: 15, width: 9)]
        for s in shapes {
          for policy in WinogradPolicy.allCases { // direct, and by Winograd's F(4, 3) in width
            let context = ComputeContext.fp32.with(widthWinograd: policy)
            let g = s.geometry, n = s.n
            let x: [Double] = rng.array(s.cin * n), w: [Double] = rng.array(s.cout * s.cin * 9), b: [Double] = rng.array(s.cout)
            let dOut: [Double] = rng.array(s.cout * n)
            let taps = w.withUnsafeBufferPointer { CausalConv.regroup($0.baseAddress!, cin: s.cin, cout: s.cout) }
            var e = [Double](repeating: .nan, count: CausalConv.scratchCount(s, context: context)), de = e
            var out = [Double](repeating: 0, count: s.cout * n), ref = out
            var col = [Double](repeating: 0, count: g.k * g.nOut)
            CausalConv.forward(context, s, input: x, taps: taps, bias: b, output: &out, e: &e)
            Conv2D.forward(.fp32, g, input: x, weight: w, bias: b, output: &ref, col: &col)
            XCTAssertLessThanOrEqual(normRelativeError(out, ref), Tolerance.float64Reordered, "forward \(s) \(policy)")
            // Accumulating gradients, starting from the same non-zero values.
            let dw0: [Double] = rng.array(w.count), db0: [Double] = rng.array(s.cout), dx0: [Double] = rng.array(x.count)
            var (dw, db, dx) = (dw0, db0, dx0)
            var (rdw, rdb, rdx) = (dw0, db0, dx0)
            CausalConv.backward(context, s, input: x, taps: taps, dOutput: dOut, dWeight: &dw, dBias: &db, dInput: &dx, e: &e, de: &de)
            Conv2D.backward(.fp32, g, input: x, weight: w, dOutput: dOut, dWeight: &rdw, dBias: &rdb, dInput: &rdx, col: &col)
            XCTAssertLessThanOrEqual(normRelativeError(dw, rdw), Tolerance.float64Reordered, "dW \(s) \(policy)")
            XCTAssertLessThanOrEqual(normRelativeError(db, rdb), Tolerance.float64Reordered, "dBias \(s) \(policy)")
            XCTAssertLessThanOrEqual(normRelativeError(dx, rdx), Tolerance.float64Reordered, "dInput \(s) \(policy)")
            XCTAssertEqual(s.macs, s.cout * 3 * s.cin * s.batch * s.width * (0..<3).map { max(0, s.height - (2 - $0) * s.dh) }.reduce(0, +))
          }
        }
    }

    /// The im2col + sgemm convolution equals the seven-loop one.
    func testConvFastMatchesNaive() {
        var rng = TestRNG(1)
        for g in Self.geometries {
            let x: [Float] = rng.array(g.cin * g.nIn), w: [Float] = rng.array(g.cout * g.k), b: [Float] = rng.array(g.cout)
            var out = [Float](repeating: 0, count: g.cout * g.nOut)
            var col = [Float](repeating: 0, count: g.k * g.nOut)
            Conv2D.forward(.fp32, g, input: x, weight: w, bias: b, output: &out, col: &col)
            let naive = Conv2D.forwardNaive(g, input: x, weight: w, bias: b)
            XCTAssertLessThanOrEqual(normRelativeError(out, naive), 1e-5, "\(g)")
        }
    }

    func testConvBackwardMatchesFiniteDifferences() {
        var rng = TestRNG(2)
        for g in Self.geometries {
            var x: [Double] = rng.array(g.cin * g.nIn), w: [Double] = rng.array(g.cout * g.k), b: [Double] = rng.array(g.cout)
            let r: [Double] = rng.array(g.cout * g.nOut)
            func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
                var out = [Double](repeating: 0, count: g.cout * g.nOut), col = [Double](repeating: 0, count: g.k * g.nOut)
                Conv2D.forward(.fp32, g, input: x, weight: w, bias: b, output: &out, col: &col)
                return dot(out, r)
            }
            var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
            var db = [Double](repeating: 0, count: b.count), col = [Double](repeating: 0, count: g.k * g.nOut)
            Conv2D.backward(.fp32, g, input: x, weight: w, dOutput: r, dWeight: &dw, dBias: &db, dInput: &dx, col: &col)
            GradientCheck.check(&x, analytic: dx, label: "conv dx") { loss($0, w, b) }
            GradientCheck.check(&w, analytic: dw, label: "conv dw") { loss(x, $0, b) }
            GradientCheck.check(&b, analytic: db, label: "conv db") { loss(x, w, $0) }
        }
    }

    func testConv1x1BackwardMatchesFiniteDifferences() {
        var rng = TestRNG(3)
        let (cin, cout, n) = (3, 4, 10)
        var x: [Double] = rng.array(cin * n), w: [Double] = rng.array(cout * cin), b: [Double] = rng.array(cout)
        let r: [Double] = rng.array(cout * n)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
            var out = [Double](repeating: 0, count: cout * n)
            Conv1x1.forward(.fp32, cin: cin, cout: cout, n: n, input: x, weight: w, bias: b, output: &out)
            return dot(out, r)
        }
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        var db = [Double](repeating: 0, count: b.count)
        Conv1x1.backward(.fp32, cin: cin, cout: cout, n: n, input: x, weight: w, dOutput: r, dWeight: &dw, dBias: &db, dInput: &dx)
        GradientCheck.check(&x, analytic: dx, label: "1x1 dx") { loss($0, w, b) }
        GradientCheck.check(&w, analytic: dw, label: "1x1 dw") { loss(x, $0, b) }
        GradientCheck.check(&b, analytic: db, label: "1x1 db") { loss(x, w, $0) }
    }

    /// Each output width is exactly factor x input width, and the layer
    /// matches PyTorch's ConvTranspose2d definition written out by hand.
    func testUpsampleLayerShapeAndBackward() {
        var rng = TestRNG(4)
        for f in [2, 4] {
            let g = UpsampleGeometry(factor: f, batch: 2, height: 3, width: 4)
            var x: [Double] = rng.array(g.inCount), w: [Double] = rng.array(3 * 2 * f)
            var bias: [Double] = [0.3]
            let r: [Double] = rng.array(g.outCount)
            func run(_ x: [Double], _ w: [Double], _ b: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: g.outCount)
                ConvTranspose.forward(g, input: x, weight: w, bias: b[0], output: &out)
                return out
            }
            // Direct definition: out[y, xo] = b + sum in[yi, xi] w[y - yi + 1, xo - xi*f + f/2].
            let out = run(x, w, bias)
            for bb in 0..<2 { for y in 0..<3 { for xo in 0 ..< g.outWidth {
                var s = bias[0]
                for yi in 0..<3 { for xi in 0..<4 {
                    let i = y - yi + 1, j = xo - xi * f + f / 2
                    if i >= 0 && i < 3 && j >= 0 && j < 2 * f { s += x[(bb * 3 + yi) * 4 + xi] * w[i * 2 * f + j] }
                } }
                XCTAssertEqual(out[(bb * 3 + y) * g.outWidth + xo], s, accuracy: 1e-12)
            } } }
            var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
            var db = [Double](repeating: 0, count: 1)
            ConvTranspose.backward(g, input: x, weight: w, dOutput: r, dWeight: &dw, dBias: &db, dInput: &dx)
            GradientCheck.check(&x, analytic: dx, label: "convT dx") { dot(run($0, w, bias), r) }
            GradientCheck.check(&w, analytic: dw, label: "convT dw") { dot(run(x, $0, bias), r) }
            GradientCheck.check(&bias, analytic: db, label: "convT db") { dot(run(x, w, $0), r) }
        }
    }

    /// The row-wise upsampling layer equals its naive twin bit for bit in
    /// Float32 (same sums in the same order): factors 2 ... 16, widths of 1
    /// to many frames, several rows and batch items, accumulating gradients.
    func testUpsampleLayerEqualsNaiveTwin() {
        var rng = TestRNG(41)
        for (f, w, h, batch) in [(2, 1, 1, 1), (4, 3, 5, 2), (16, 7, 3, 2), (16, 40, 4, 1), (8, 2, 2, 3)] {
            let g = UpsampleGeometry(factor: f, batch: batch, height: h, width: w)
            let x: [Float] = rng.array(g.inCount), wt: [Float] = rng.array(3 * 2 * f), d: [Float] = rng.array(g.outCount)
            var out = [Float](repeating: .nan, count: g.outCount), outNaive = out
            ConvTranspose.forward(g, input: x, weight: wt, bias: 0.25, output: &out)
            ConvTranspose.forwardNaive(g, input: x, weight: wt, bias: 0.25, output: &outNaive)
            XCTAssertEqual(out, outNaive, "forward f=\(f) w=\(w) h=\(h) b=\(batch)")
            let dw0: [Float] = rng.array(wt.count), dx0: [Float] = rng.array(x.count)
            var (dw, db, dx) = (dw0, [Float(0.5)], dx0), (dwN, dbN, dxN) = (dw0, [Float(0.5)], dx0)
            ConvTranspose.backward(g, input: x, weight: wt, dOutput: d, dWeight: &dw, dBias: &db, dInput: &dx)
            ConvTranspose.backwardNaive(g, input: x, weight: wt, dOutput: d, dWeight: &dwN, dBias: &dbN, dInput: &dxN)
            XCTAssertEqual(dw, dwN, "dWeight f=\(f) w=\(w)")
            XCTAssertEqual(db, dbN)
            XCTAssertEqual(dx, dxN, "dInput f=\(f) w=\(w)")
            var dw2 = dw0, db2 = [Float(0)]
            ConvTranspose.backward(g, input: x, weight: wt, dOutput: d, dWeight: &dw2, dBias: &db2, dInput: nil)
            XCTAssertEqual(dw2, dwN)
        }
    }

    func testLeakyReLUAndGateBackward() {
        var rng = TestRNG(5)
        // Leaky ReLU: keep inputs away from the kink at 0.
        var x: [Double] = rng.array(20).map { $0 + ($0 >= 0 ? 0.1 : -0.1) }
        let r: [Double] = rng.array(20)
        func leaky(_ x: [Double]) -> [Double] { var y = x; LeakyReLU.forward(&y, count: y.count, slope: 0.4); return y }
        var d = r
        LeakyReLU.backward(output: leaky(x), grad: &d, count: d.count, slope: 0.4)
        GradientCheck.check(&x, analytic: d, label: "leaky") { dot(leaky($0), r) }

        let (c, n) = (3, 5)
        var y: [Double] = rng.array(2 * c * n, scale: 2)
        let rg: [Double] = rng.array(c * n)
        func gate(_ y: [Double]) -> [Double] { var g = [Double](repeating: 0, count: c * n); Gate.forward(y, &g, channels: c, n: n); return g }
        // The kept pair (Float64's form of training's one-pass backward): forward keeping tanh and sigmoid, dy from the kept values.
        var g = [Double](repeating: 0, count: c * n), dy = [Double](repeating: 0, count: 2 * c * n)
        Gate.forward(y, &g, kept: &dy, channels: c, n: n)
        Gate.backward(kept: &dy, dg: rg, channels: c, n: n)
        GradientCheck.check(&y, analytic: dy, label: "gate") { dot(gate($0), rg) }
    }

    func testCouplingAndLikelihoodBackward() {
        var rng = TestRNG(6)
        let (batch, h, w) = (2, 4, 3)
        var x: [Double] = rng.array(batch * h * w)
        var ls: [Double] = rng.array(batch * (h - 1) * w, scale: 0.5), t: [Double] = rng.array(batch * (h - 1) * w)
        func loss(_ x: [Double], _ ls: [Double], _ t: [Double]) -> Double {
            var z = [Double](repeating: 0, count: x.count)
            let ld = AffineCoupling.forward(x: x, logS: ls, t: t, z: &z, batch: batch, h: h, w: w)
            let nll = GaussianNLL.perSample(z: z, logdet: ld, batch: batch, count: h * w)
            return nll.reduce(0, +) / Double(batch)
        }
        var z = [Double](repeating: 0, count: x.count)
        _ = AffineCoupling.forward(x: x, logS: ls, t: t, z: &z, batch: batch, h: h, w: w)
        var dz = [Double](repeating: 0, count: z.count)
        let dld = GaussianNLL.backward(z: z, dZ: &dz, batch: batch, count: h * w)
        var dx = [Double](repeating: 0, count: x.count), dls = [Double](repeating: 0, count: ls.count)
        var dt = [Double](repeating: 0, count: t.count)
        AffineCoupling.backward(x: x, logS: ls, dZ: dz, dLogdet: dld, dX: &dx, dLogS: &dls, dT: &dt, batch: batch, h: h, w: w)
        GradientCheck.check(&x, analytic: dx, label: "coupling dx") { loss($0, ls, t) }
        GradientCheck.check(&ls, analytic: dls, label: "coupling dlogs") { loss(x, $0, t) }
        GradientCheck.check(&t, analytic: dt, label: "coupling dt") { loss(x, ls, $0) }
        // The inverse row undoes the forward.
        var back = [Double](repeating: 0, count: w)
        AffineCoupling.inverseRow(z: Array(z[w ..< 2 * w]), logS: Array(ls[0..<w]), t: Array(t[0..<w]), x: &back, count: w)
        for j in 0..<w { XCTAssertEqual(back[j], x[w + j], accuracy: 1e-12) }
    }

    func testWeightNormBackwardAndFold() {
        var rng = TestRNG(8)
        let (out, rest) = (3, 4)
        var v: [Double] = rng.array(out * rest), g: [Double] = rng.array(out)
        let r: [Double] = rng.array(out * rest)
        func weight(_ v: [Double], _ g: [Double]) -> [Double] {
            var w = [Double](repeating: 0, count: out * rest)
            WeightNorm.forward(v: v, g: g, w: &w, out: out, rest: rest)
            return w
        }
        var dv = [Double](repeating: 0, count: v.count), dg = [Double](repeating: 0, count: g.count)
        WeightNorm.backward(v: v, g: g, dw: r, dv: &dv, dg: &dg, out: out, rest: rest)
        GradientCheck.check(&v, analytic: dv, label: "wn dv") { dot(weight($0, g), r) }
        GradientCheck.check(&g, analytic: dg, label: "wn dg") { dot(weight(v, $0), r) }
        // Initialising from a weight reproduces it.
        let w0: [Double] = rng.array(out * rest)
        let (v0, g0) = WeightNorm.initialise(from: w0, out: out)
        XCTAssertLessThanOrEqual(maxRelativeError(weight(v0, g0), w0), 1e-12)
    }

    /// Adam against a sequence computed by hand (scalar parameter).
    func testAdamMatchesHandComputedSteps() {
        var adam = Adam(count: 1)
        var p: [Float] = [1.0]
        let grads: [Float] = [0.5, -0.2, 0.1]
        var m = 0.0, v = 0.0, ref = 1.0
        for (t, gr) in grads.enumerated() {
            adam.update(&p, [gr], lr: 0.01)
            let g = Double(gr)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            let mh = m / (1 - pow(0.9, Double(t + 1))), vh = v / (1 - pow(0.999, Double(t + 1)))
            ref -= 0.01 * mh / (vh.squareRoot() + 1e-8)
            XCTAssertEqual(Double(p[0]), ref, accuracy: 1e-6)
        }
        XCTAssertEqual(adam.step, 3)
        // Many parameters (8 lanes at a time, a tail, chunks over the cores):
        // bit for bit the scalar update, element by element.
        var rng = TestRNG(17)
        let n = (1 << 16) + 37
        var many: [Float] = rng.array(n), (mRef, vRef) = ([Float](repeating: 0, count: n), [Float](repeating: 0, count: n))
        var pRef = many
        var big = Adam(count: n)
        for t in 1...2 {
            let g: [Float] = rng.array(n)
            big.update(&many, g, lr: 0.01)
            let (c1, c2) = (Float(1 - pow(0.9, Double(t))), Float(1 - pow(0.999, Double(t))))
            let (b1, b2, lr, eps): (Float, Float, Float, Float) = (0.9, 0.999, 0.01, 1e-8)
            for i in 0..<n {
                mRef[i] = b1 * mRef[i] + (1 - b1) * g[i]
                vRef[i] = b2 * vRef[i] + (1 - b2) * g[i] * g[i]
                pRef[i] -= lr * (mRef[i] / c1) / ((vRef[i] / c2).squareRoot() + eps)
            }
            XCTAssertEqual(many, pRef, "step \(t)")
            XCTAssertEqual(big.m, mRef); XCTAssertEqual(big.v, vRef)
        }
        // Each vector kernel, at lengths around the vector widths: bit for
        // bit the scalar update, nothing written past the end.
        let (b1, b2, c1, c2, lr, eps): (Float, Float, Float, Float, Float, Float) = (0.9, 0.999, 0.19, 0.002, 0.01, 1e-8)
        for level in VectorKernels.available {
            for count in [1, 7, 8, 9, 15, 16, 17, 31, 33, 100] {
                let g: [Float] = rng.array(count), m0: [Float] = rng.array(count), v0: [Float] = rng.array(count).map { $0 * $0 }
                let x0: [Float] = rng.array(count)
                var (x, m, v) = (x0 + [7], m0 + [7], v0 + [7]) // a sentinel past the end
                let ran = VectorKernels.adam(&x, g, &m, &v, count: count, b1: b1, b2: b2, c1: c1, c2: c2, lr: lr, eps: eps, level: level)
                guard ran else { continue }
                for i in 0..<count {
                    let mi = b1 * m0[i] + (1 - b1) * g[i], vi = b2 * v0[i] + (1 - b2) * g[i] * g[i]
                    let xi = x0[i] - lr * (mi / c1) / ((vi / c2).squareRoot() + eps)
                    XCTAssertEqual([x[i], m[i], v[i]], [xi, mi, vi], "\(level) count \(count) index \(i)")
                }
                XCTAssertEqual([x[count], m[count], v[count]], [7, 7, 7], "\(level) count \(count): past the end")
            }
        }
    }

    func testGradientClipping() {
        var g: [Float] = [3, 4]
        XCTAssertEqual(clipGradientNorm(&g, maxNorm: 1), 5)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-6)
        var small: [Float] = [0.3, 0.4]
        clipGradientNorm(&small, maxNorm: 1)
        XCTAssertEqual(small, [0.3, 0.4])
    }
}

final class FastMathTests: XCTestCase {
    /// The vectorised gate equals the libm one (Float32) within 1e-6.
    func testFastGateMatchesLibm() {
        var rng = TestRNG(12)
        let (c, n) = (3, 37) // not a multiple of 16: the scalar tail runs too
        var y: [Float] = rng.array(2 * c * n, scale: 6)
        y[0] = 40; y[1] = -40; y[2] = 0; y[3] = 1e-4 // saturation and near zero
        let dg: [Float] = rng.array(c * n)
        var fast = [Float](repeating: 0, count: c * n), naive = fast
        Gate.forward(y, &fast, channels: c, n: n)
        Gate.forwardNaive(y, &naive, channels: c, n: n)
        XCTAssertLessThanOrEqual(zip(fast, naive).map { abs($0 - $1) }.max()!, Tolerance.float32Kernel)
        // With per-channel biases (synthesis): the gate of y + bias.
        let bias: [Float] = rng.array(2 * c, scale: 2)
        var biased = y
        for i in 0 ..< 2 * c * n { biased[i] += bias[i / n] }
        Gate.forward(y, &fast, channels: c, n: n, bias: bias)
        Gate.forwardNaive(biased, &naive, channels: c, n: n)
        XCTAssertLessThanOrEqual(zip(fast, naive).map { abs($0 - $1) }.max()!, Tolerance.float32Kernel)
        var dNaive = [Float](repeating: 0, count: 2 * c * n)
        Gate.backwardNaive(y, dg, &dNaive, channels: c, n: n)
        // The kept pair: forward keeping tanh and sigmoid, then dy from the kept values.
        var kept = [Float](repeating: 0, count: 2 * c * n)
        Gate.forward(y, &fast, kept: &kept, channels: c, n: n)
        Gate.forwardNaive(y, &naive, channels: c, n: n)
        XCTAssertLessThanOrEqual(zip(fast, naive).map { abs($0 - $1) }.max()!, Tolerance.float32Kernel)
        Gate.backward(kept: &kept, dg: dg, channels: c, n: n)
        XCTAssertLessThanOrEqual(zip(kept, dNaive).map { abs($0 - $1) }.max()!, Tolerance.float32Kernel)
        // Training's one-pass form over all channels: the pair's g and dy, bit for bit.
        var gOne = [Float](repeating: .nan, count: c * n), dyOne = [Float](repeating: .nan, count: 2 * c * n)
        Gate.backward(y: y, dg: dg, g: &gOne, dy: &dyOne, channels: c, n: n)
        XCTAssertEqual(gOne.map(\.bitPattern), fast.map(\.bitPattern))
        XCTAssertEqual(dyOne.map(\.bitPattern), kept.map(\.bitPattern))
    }

    /// Every build of the gate kernels this CPU runs (C AVX-512, C AVX2,
    /// Swift SIMD) equals libm's gate within 1e-6, for lengths around the
    /// vector widths (masked tails), with biases, keeping tanh and sigmoid,
    /// and the backward from the kept values; the one-pass backward from y
    /// gives the same bits as keeping then the backward.
    func testGateKernelsAtEveryLevel() {
        var rng = TestRNG(21)
        for level in VectorKernels.available {
            for count in [1, 7, 8, 9, 15, 16, 17, 33, 100] {
                let total = count + 5 // the sigmoid half starts `total` after the tanh half
                var y: [Float] = rng.array(total + count, scale: 6)
                y[0] = 45; y[total] = -95 // saturation: tanh = 1, sigmoid underflows
                let dg: [Float] = rng.array(count)
                let (bt, bs): (Float, Float) = (rng.uniform(), rng.uniform())
                var g = [Float](repeating: .nan, count: count), kept = [Float](repeating: .nan, count: total + count)
                VectorKernels.gateForward(y, &g, count: count, total: total, biasTanh: bt, biasSigmoid: bs, level: level)
                var worst: Float = 0
                for i in 0..<count {
                    let want = tanhf(y[i] + bt) / (1 + expf(-(y[total + i] + bs)))
                    worst = max(worst, abs(g[i] - want))
                }
                VectorKernels.gateForwardKeeping(y, &g, &kept, count: count, total: total, level: level)
                for i in 0..<count {
                    let t = tanhf(y[i]), s = 1 / (1 + expf(-y[total + i]))
                    worst = max(worst, abs(g[i] - t * s), abs(kept[i] - t), abs(kept[total + i] - s))
                }
                VectorKernels.gateBackwardKept(&kept, dg, count: count, total: total, level: level)
                for i in 0..<count {
                    let t = tanhf(y[i]), s = 1 / (1 + expf(-y[total + i]))
                    worst = max(worst, abs(kept[i] - dg[i] * s * (1 - t * t)), abs(kept[total + i] - dg[i] * t * s * (1 - s)))
                }
                XCTAssertLessThanOrEqual(worst, Tolerance.float32Kernel, "\(level) count \(count)")
                let written = Array(g) + Array(kept[0..<count]) + Array(kept[total...])
                XCTAssertFalse(written.contains { $0.isNaN }, "\(level) count \(count) left an element unwritten")
                // The one-pass backward from y: the same g and dy as keeping then the backward, bit for bit.
                var gFused = [Float](repeating: .nan, count: count), dyFused = [Float](repeating: .nan, count: total + count)
                VectorKernels.gateBackwardFromY(y, dg, &gFused, &dyFused, count: count, total: total, level: level)
                XCTAssertEqual(gFused.map(\.bitPattern), g.map(\.bitPattern), "\(level) count \(count): g")
                XCTAssertEqual(Array(dyFused[0..<count]).map(\.bitPattern), Array(kept[0..<count]).map(\.bitPattern),
                               "\(level) count \(count): dy, tanh half")
                XCTAssertEqual(Array(dyFused[total...]).map(\.bitPattern), Array(kept[total...]).map(\.bitPattern),
                               "\(level) count \(count): dy, sigmoid half")
            }
        }
    }

    /// Every build of the bf16 rounding gives the bits of the integer
    /// formula (nearest even) on normal numbers, ties included, at lengths
    /// around the vector widths.
    func testBF16RoundingAtEveryLevel() {
        var rng = TestRNG(22)
        for level in VectorKernels.available {
            for count in [1, 15, 16, 17, 31, 32, 33, 200] {
                var xs: [Float] = (0..<count).map { _ in rng.uniform() * Float(pow(10, rng.uniform(30.0))) }
                xs[0] = Float(bitPattern: 0x3F80_8000) // 1 + 2^-8: a tie, goes to even (1)
                if count > 1 { xs[1] = Float(bitPattern: 0x3F81_8000) } // a tie that goes up
                var out = [UInt16](repeating: 0, count: count)
                VectorKernels.toBF16(xs, &out, count: count, level: level)
                let want = xs.map { x -> UInt16 in
                    let v = x.bitPattern
                    return UInt16(truncatingIfNeeded: (v &+ 0x7FFF &+ ((v >> 16) & 1)) >> 16)
                }
                XCTAssertEqual(out, want, "\(level) count \(count)")
                XCTAssertEqual(out[0], 0x3F80)
                if count > 1 { XCTAssertEqual(out[1], 0x3F82) }
            }
        }
    }

    /// The SIMD log agrees with libm's logf from the mel floor (1e-5) to 1e6.
    func testFastLogError() {
        var worst: Float = 0
        var x: Float = 1e-5
        while x < 1e6 {
            var v = FastMath.V(repeating: 0)
            for i in 0..<16 { v[i] = x * (1 + Float(i) * 0.0037) }
            let l = FastMath.log(v)
            for i in 0..<16 { worst = max(worst, abs(l[i] - logf(v[i])) / max(1, abs(logf(v[i])))) }
            x *= 1.07
        }
        XCTAssertLessThan(worst, 5e-7)
    }

    func testFastExpRelativeError() {
        var worst: Float = 0
        var x: Float = -80
        while x < 80 {
            var v = FastMath.V(repeating: 0)
            for i in 0..<16 { v[i] = x + Float(i) * 0.0061 }
            let e = FastMath.exp(v)
            for i in 0..<16 { worst = max(worst, abs(e[i] - expf(v[i])) / expf(v[i])) }
            x += 0.1
        }
        XCTAssertLessThan(worst, 1e-6)
    }
}
