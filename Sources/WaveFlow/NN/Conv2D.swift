// 2-D convolution, lowered to one GEMM through im2col.
//
// Layout: activations are channel-major, [C, B, H, W] row-major, so that
// every convolution over the whole batch is a single matrix product with
// N = B * H * W columns. Weights are PyTorch's [Cout, Cin, kh, kw], which is
// row-major [Cout, Cin*kh*kw] — the GEMM's left operand as it is.

/// Shapes of one 2-D convolution: kernel, dilation, explicit zero padding,
/// and the input grid it is applied to.
public struct ConvGeometry: Equatable, Sendable {
    public var cin: Int, cout: Int
    public var kh: Int, kw: Int
    public var dh: Int = 1, dw: Int = 1
    public var padTop = 0, padBottom = 0, padLeft = 0, padRight = 0
    /// Input grid: batch, height, width.
    public var batch = 1, height = 1, width = 1

    public init(cin: Int, cout: Int, kh: Int, kw: Int, dh: Int = 1, dw: Int = 1,
                padTop: Int = 0, padBottom: Int = 0, padLeft: Int = 0, padRight: Int = 0,
                batch: Int = 1, height: Int = 1, width: Int = 1) {
        self.cin = cin; self.cout = cout; self.kh = kh; self.kw = kw; self.dh = dh; self.dw = dw
        self.padTop = padTop; self.padBottom = padBottom; self.padLeft = padLeft; self.padRight = padRight
        self.batch = batch; self.height = height; self.width = width
    }

    public var outHeight: Int { height + padTop + padBottom - dh * (kh - 1) }
    public var outWidth: Int { width + padLeft + padRight - dw * (kw - 1) }
    /// Rows of the lowered matrix: Cin * kh * kw.
    public var k: Int { cin * kh * kw }
    /// Input positions: B * H * W.
    public var nIn: Int { batch * height * width }
    /// Output positions: B * Hout * Wout.
    public var nOut: Int { batch * outHeight * outWidth }
    /// Multiply-adds of one forward pass.
    public var macs: Int { cout * k * nOut }
}

public enum Conv2D {
    /// Lowers `input` [Cin, B, H, W] to `col` [Cin*kh*kw, B*Hout*Wout]:
    /// col[(c*kh + i)*kw + j, (b*Hout + y)*Wout + x] =
    ///     input[c, b, y - padTop + i*dh, x - padLeft + j*dw]   (0 outside).
    public static func im2col<T: Real>(_ g: ConvGeometry, _ input: UnsafePointer<T>, _ col: UnsafeMutablePointer<T>) {
        let (ho, wo, h, w) = (g.outHeight, g.outWidth, g.height, g.width)
        Threads.parallelFor(g.k) { r in
            let c = r / (g.kh * g.kw), i = (r / g.kw) % g.kh, j = r % g.kw
            let dst = col + r * g.nOut
            // Valid output x range for this tap: 0 <= x - padLeft + j*dw < w.
            let xOff = j * g.dw - g.padLeft
            let x0 = max(0, -xOff), x1 = min(wo, w - xOff)
            for b in 0..<g.batch {
                for y in 0..<ho {
                    let row = dst + (b * ho + y) * wo
                    let yi = y - g.padTop + i * g.dh
                    if yi < 0 || yi >= h || x1 <= x0 {
                        row.update(repeating: 0, count: wo)
                        continue
                    }
                    let src = input + ((c * g.batch + b) * h + yi) * w + xOff
                    if x0 > 0 { row.update(repeating: 0, count: x0) }
                    (row + x0).update(from: src + x0, count: x1 - x0)
                    if x1 < wo { (row + x1).update(repeating: 0, count: wo - x1) }
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds each column entry back onto the input
    /// position it came from (`grad` [Cin, B, H, W] is accumulated into).
    public static func col2im<T: Real>(_ g: ConvGeometry, _ col: UnsafePointer<T>, _ grad: UnsafeMutablePointer<T>) {
        let (ho, wo, h, w) = (g.outHeight, g.outWidth, g.height, g.width)
        // Rows of one input channel touch only that channel: parallel over c.
        Threads.parallelFor(g.cin) { c in
            for i in 0..<g.kh {
                for j in 0..<g.kw {
                    let r = (c * g.kh + i) * g.kw + j
                    let src = col + r * g.nOut
                    let xOff = j * g.dw - g.padLeft
                    let x0 = max(0, -xOff), x1 = min(wo, w - xOff)
                    if x1 <= x0 { continue }
                    for b in 0..<g.batch {
                        for y in 0..<ho {
                            let yi = y - g.padTop + i * g.dh
                            if yi < 0 || yi >= h { continue }
                            let s = src + (b * ho + y) * wo
                            let d = grad + ((c * g.batch + b) * h + yi) * w + xOff
                            for x in x0..<x1 { d[x] += s[x] }
                        }
                    }
                }
            }
        }
    }

    /// out [Cout, B, Hout, Wout] = weight [Cout, K] x im2col(input) + bias.
    /// - Parameter col: scratch of K * nOut values.
    public static func forward<T: Real>(_ context: ComputeContext, _ g: ConvGeometry, input: UnsafePointer<T>,
                                        weight: UnsafePointer<T>, bias: UnsafePointer<T>?, output: UnsafeMutablePointer<T>,
                                        col: UnsafeMutablePointer<T>) {
        im2col(g, input, col)
        T.product(context, transA: false, transB: false, m: g.cout, n: g.nOut, k: g.k, a: weight, a16: nil, lda: g.k,
                  b: col, b16: nil, ldb: g.nOut, accumulate: false, c: output, ldc: g.nOut)
        if let bias { addBias(output, bias, rows: g.cout, cols: g.nOut) }
    }

    /// Accumulates dWeight += dOut x col^T, dBias += row sums of dOut and, if
    /// `dInput` is given, dInput += col2im(weight^T x dOut).
    /// - Parameter col: scratch of K * nOut values (overwritten).
    public static func backward<T: Real>(_ context: ComputeContext, _ g: ConvGeometry, input: UnsafePointer<T>,
                                         weight: UnsafePointer<T>, dOutput: UnsafePointer<T>, dWeight: UnsafeMutablePointer<T>,
                                         dBias: UnsafeMutablePointer<T>?, dInput: UnsafeMutablePointer<T>?,
                                         col: UnsafeMutablePointer<T>) {
        im2col(g, input, col)
        T.product(context, transA: false, transB: true, m: g.cout, n: g.k, k: g.nOut, a: dOutput, a16: nil, lda: g.nOut,
                  b: col, b16: nil, ldb: g.nOut, accumulate: true, c: dWeight, ldc: g.k)
        if let dBias { accumulateRowSums(dOutput, into: dBias, rows: g.cout, cols: g.nOut) }
        if let dInput {
            T.product(context, transA: true, transB: false, m: g.k, n: g.nOut, k: g.cout, a: weight, a16: nil, lda: g.k,
                      b: dOutput, b16: nil, ldb: g.nOut, accumulate: false, c: col, ldc: g.nOut)
            col2im(g, col, dInput)
        }
    }

    /// The naive twin of `forward`: seven loops, no BLAS. Test oracle.
    public static func forwardNaive<T: Real>(_ g: ConvGeometry, input: [T], weight: [T], bias: [T]?) -> [T] {
        let (ho, wo) = (g.outHeight, g.outWidth)
        var out = [T](repeating: 0, count: g.cout * g.nOut)
        for o in 0..<g.cout {
            for b in 0..<g.batch {
                for y in 0..<ho {
                    for x in 0..<wo {
                        var s: T = bias?[o] ?? 0
                        for c in 0..<g.cin {
                            for i in 0..<g.kh {
                                let yi = y - g.padTop + i * g.dh
                                if yi < 0 || yi >= g.height { continue }
                                for j in 0..<g.kw {
                                    let xi = x - g.padLeft + j * g.dw
                                    if xi < 0 || xi >= g.width { continue }
                                    s += weight[((o * g.cin + c) * g.kh + i) * g.kw + j]
                                        * input[((c * g.batch + b) * g.height + yi) * g.width + xi]
                                }
                            }
                        }
                        out[((o * g.batch + b) * ho + y) * wo + x] = s
                    }
                }
            }
        }
        return out
    }
}

/// x[r, :] += bias[r] for a [rows, cols] matrix.
@inlinable public func addBias<T: Real>(_ x: UnsafeMutablePointer<T>, _ bias: UnsafePointer<T>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let b = bias[r], p = x + r * cols
        for i in 0..<cols { p[i] += b }
    }
}

/// out[r] += sum over columns of x[r, :] (`Real.accumulateRowSums`: a
/// vector kernel per row for Float32, the naive loop for Float64).
@inlinable public func accumulateRowSums<T: Real>(_ x: UnsafePointer<T>, into out: UnsafeMutablePointer<T>, rows: Int, cols: Int) {
    T.accumulateRowSums(x, into: out, rows: rows, cols: cols)
}

/// The naive twin of `accumulateRowSums` (test oracle).
public func accumulateRowSumsNaive<T: Real>(_ x: UnsafePointer<T>, into out: UnsafeMutablePointer<T>, rows: Int, cols: Int) {
    for r in 0..<rows {
        var s: T = 0
        let p = x + r * cols
        for i in 0..<cols { s += p[i] }
        out[r] += s
    }
}
