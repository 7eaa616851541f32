// The residual layers' 3x3 dilated convolution (causal in height: rows
// above only, padding 2dh on top; "same" in width: padding dw each side),
// computed without im2col.
//
// The input [Cin, B, H, W] is expanded once for the three horizontal taps,
// E [3Cin, B, H, W] with E[kx*Cin + c, b, y, x] = in[c, b, y, x + (kx-1)dw]
// (0 beyond the row ends). A vertical tap ky reads the rows s = (2-ky)dh
// above, which in this layout is the same matrix shifted by s*W columns
// within each batch item, so
//
//     out[:, b, y >= s, :] += W_ky [Cout, 3Cin] x E[:, b, y - s, :]
//
// is one GEMM per (tap, batch item) on E in place (ky = 2, s = 0, is one GEMM
// over all columns). Against im2col: a third of the lowered matrix to write
// and read (3Cin instead of 9Cin rows), and no work on the zero rows of the
// causal padding. The backward pass mirrors it: dW_ky from the same shifted
// views, dE = sum of W_ky^T x shifted dOut, and dE folded back onto the
// input's columns. `Conv2D` (im2col) with the same geometry is the twin the
// tests compare with.

/// Shapes of one causal 3x3 convolution.
public struct CausalConvShape: Equatable, Sendable {
    public var cin: Int, cout: Int, dh: Int, dw: Int
    public var batch: Int, height: Int, width: Int
    public init(cin: Int, cout: Int, dh: Int, dw: Int, batch: Int, height: Int, width: Int) {
        self.cin = cin; self.cout = cout; self.dh = dh; self.dw = dw
        self.batch = batch; self.height = height; self.width = width
    }
    /// Positions: B * H * W.
    public var n: Int { batch * height * width }
    /// The same convolution as an im2col geometry.
    public var geometry: ConvGeometry {
        ConvGeometry(cin: cin, cout: cout, kh: 3, kw: 3, dh: dh, dw: dw, padTop: 2 * dh, padBottom: 0,
                     padLeft: dw, padRight: dw, batch: batch, height: height, width: width)
    }
    /// Multiply-adds actually performed (taps reaching above row 0 skipped).
    public var macs: Int {
        (0..<3).reduce(0) { acc, ky in acc + cout * 3 * cin * batch * max(0, height - (2 - ky) * dh) * width }
    }
}

public enum CausalConv {
    /// E [3Cin, N] from input [Cin, N] (see the file comment).
    public static func expand<T: Real>(_ s: CausalConvShape, _ input: UnsafePointer<T>, _ e: UnsafeMutablePointer<T>) {
        expand(s, input, e, zero: 0)
    }

    /// `expand` for any element (bf16 operands are expanded as such, after
    /// rounding the input once: a third of the values to round).
    static func expand<E>(_ s: CausalConvShape, _ input: UnsafePointer<E>, _ e: UnsafeMutablePointer<E>, zero: E) {
        let (n, w, dw) = (s.n, s.width, s.dw)
        Threads.parallelFor(3 * s.cin) { r in
            let kx = r / s.cin, c = r % s.cin
            let dst = e + r * n, src = input + c * n
            for row in 0 ..< s.batch * s.height {
                copyShifted(src + row * w, width: w, shift: (kx - 1) * dw, columns: 0..<w, into: dst + row * w, zero: zero)
            }
        }
    }

    /// Runs `body` with E [3Cin, N] as operands, expanded from `input` into
    /// the scratch `e` (3Cin*N Scalars; bf16 operands use its first half):
    /// the input is converted once, then expanded in the operands' format.
    static func withExpandedOperands<O: ProductOperands, R>(_ s: CausalConvShape, _ input: UnsafePointer<O.Scalar>,
                                                           scratch e: UnsafeMutablePointer<O.Scalar>, _ o: O.Type,
                                                           _ body: (UnsafePointer<O.Element>) -> R) -> R {
        let (io, ownI) = O.operands(of: input, count: s.cin * s.n)
        defer { if ownI { io.deallocate() } }
        precondition(MemoryLayout<O.Element>.stride <= MemoryLayout<O.Scalar>.stride)
        return UnsafeMutableRawPointer(e).withMemoryRebound(to: O.Element.self, capacity: 3 * s.cin * s.n) { eo in
            expand(s, io, eo, zero: O.zero)
            return body(UnsafePointer(eo))
        }
    }

    /// dst[j - js.lowerBound] = row[j + shift] for j in `js`, 0 where j + shift
    /// falls outside the row [0, width): one horizontal tap of one row
    /// (also used by synthesis on column blocks).
    @inline(__always)
    static func copyShifted<E>(_ row: UnsafePointer<E>, width w: Int, shift: Int, columns js: Range<Int>,
                               into dst: UnsafeMutablePointer<E>, zero: E) {
        let nb = js.count
        let lo = max(0, -shift - js.lowerBound), hi = min(nb, w - shift - js.lowerBound)
        if lo >= hi { dst.update(repeating: zero, count: nb); return }
        if lo > 0 { dst.update(repeating: zero, count: lo) }
        (dst + lo).update(from: row + js.lowerBound + shift + lo, count: hi - lo)
        if hi < nb { (dst + hi).update(repeating: zero, count: nb - hi) }
    }

    /// The adjoint of `expand`: dInput [Cin, N] += fold(dE [3Cin, N]).
    public static func fold<T: Real>(_ s: CausalConvShape, _ de: UnsafePointer<T>, _ dInput: UnsafeMutablePointer<T>) {
        let (n, w, dw) = (s.n, s.width, s.dw)
        Threads.parallelFor(s.cin) { c in
            for kx in 0..<3 {
                let shift = (kx - 1) * dw
                let x0 = max(0, -shift), x1 = min(w, w - shift)
                if x1 <= x0 { continue }
                let src = de + (kx * s.cin + c) * n, dst = dInput + c * n
                for row in 0 ..< s.batch * s.height {
                    let q = src + row * w, d = dst + row * w + shift
                    for x in x0..<x1 { d[x] += q[x] }
                }
            }
        }
    }

    /// Weight [Cout, Cin, 3, 3] regrouped by vertical tap: [3][Cout, 3Cin],
    /// column kx*Cin + c.
    public static func regroup<T: Real>(_ weight: UnsafePointer<T>, cin: Int, cout: Int) -> [T] {
        var out = [T](repeating: 0, count: 3 * cout * 3 * cin)
        for ky in 0..<3 { for o in 0..<cout { for kx in 0..<3 { for c in 0..<cin {
            out[(ky * cout + o) * 3 * cin + kx * cin + c] = weight[((o * cin + c) * 3 + ky) * 3 + kx]
        } } } }
        return out
    }

    /// Visits the (tap, batch item) products: `body(ky, rowShift, b)` for the
    /// taps whose rows exist; ky = 2 (no shift) is one call with b = -1,
    /// meaning all columns at once.
    static func forEachTap(_ s: CausalConvShape, _ body: (Int, Int, Int) -> Void) {
        body(2, 0, -1)
        for ky in 0..<2 {
            let shift = (2 - ky) * s.dh
            if shift >= s.height { continue }
            for b in 0..<s.batch { body(ky, shift, b) }
        }
    }

    /// out [Cout, N] = conv(input) + bias, with the products' operands in
    /// the storage `context` chooses (bf16 or native).
    /// - Parameters:
    ///   - taps: `regroup(weight)`.
    ///   - e: scratch of `scratchCount(s, context:)` values.
    ///   - transformed: room for the input's Winograd transform, which
    ///     `backward` can read instead of transforming the input again; only
    ///     where `transformedInputCount(s, context:)` gives its size.
    public static func forward<T: Real>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<T>,
                                        taps: UnsafePointer<T>, bias: UnsafePointer<T>?, output: UnsafeMutablePointer<T>,
                                        e: UnsafeMutablePointer<T>, keepingTransformed transformed: UnsafeMutablePointer<T>? = nil) {
        T.withOperands(context, forProductsOf: [s.cout, 3 * s.cin],
                       CausalConvForward(context: context, s: s, input: input, taps: taps, bias: bias, output: output, e: e,
                                         transformed: transformed))
    }

    /// `forward` with the products' operands converted to `O.Element` once
    /// each (the input before its expansion, not once per tap product).
    static func forward<O: ProductOperands>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<O.Scalar>, taps: UnsafePointer<O.Scalar>,
                                            bias: UnsafePointer<O.Scalar>?, output: UnsafeMutablePointer<O.Scalar>,
                                            e: UnsafeMutablePointer<O.Scalar>, transformed: UnsafeMutablePointer<O.Scalar>? = nil,
                                            operands: O.Type) {
        if O.Element.self == O.Scalar.self && usesWinograd(s, context) {
            winogradTaps(cin: s.cin, cout: s.cout, taps).withUnsafeBufferPointer {
                forwardWinograd(context, s, input: input, u: TransformedTaps(all: $0.baseAddress!, cin: s.cin, cout: s.cout), bias: bias,
                                output: output, e: e, keeping: transformed)
            }
            return
        }
        precondition(transformed == nil, "CausalConv.forward: no transform to keep without Winograd on native operands")
        let (n, hw, k) = (s.n, s.height * s.width, 3 * s.cin)
        let (to, ownT) = O.operands(of: taps, count: 3 * s.cout * k)
        defer { if ownT { to.deallocate() } }
        withExpandedOperands(s, input, scratch: e, O.self) { eo in forEachTap(s) { ky, shift, b in
            let wk = to + ky * s.cout * k
            if b < 0 {
                O.gemm(context, m: s.cout, n: n, k: k, a: wk, lda: k, b: eo, ldb: n, accumulate: false, c: output, ldc: n)
            } else {
                let cols = (s.height - shift) * s.width
                O.gemm(context, m: s.cout, n: cols, k: k, a: wk, lda: k, b: eo + b * hw, ldb: n, accumulate: true,
                       c: output + b * hw + shift * s.width, ldc: n)
            }
        } }
        if let bias { addBias(output, bias, rows: s.cout, cols: n) }
    }

    /// Accumulates dWeight (PyTorch layout) += dL/dW, dBias += row sums of
    /// dOut, and dInput += conv^T(dOut).
    /// - Parameters:
    ///   - e: scratch of `scratchCount(s, context:)` values (the input is expanded again).
    ///   - de: scratch of as many values.
    ///   - dOutput16: dOutput already rounded to bf16 (`bf16Copy`), used
    ///     when the products run in bf16.
    ///   - transformed: the input's transform, when `forward` kept it; then
    ///     `input` may be nil.
    public static func backward<T: Real>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<T>?,
                                         transformed: UnsafePointer<T>? = nil,
                                         taps: UnsafePointer<T>, dOutput: UnsafePointer<T>, dOutput16: UnsafePointer<UInt16>? = nil,
                                         dWeight: UnsafeMutablePointer<T>,
                                         dBias: UnsafeMutablePointer<T>?, dInput: UnsafeMutablePointer<T>?,
                                         e: UnsafeMutablePointer<T>, de: UnsafeMutablePointer<T>) {
        T.withOperands(context, forProductsOf: [s.cout, 3 * s.cin],
                       CausalConvBackward(context: context, s: s, input: input, transformed: transformed, taps: taps, dOutput: dOutput,
                                          dOutput16: dOutput16, dWeight: dWeight, dBias: dBias, dInput: dInput, e: e, de: de))
    }

    /// `backward` with the products' operands (input before its expansion,
    /// dOut, taps) converted to `O.Element` once each.
    static func backward<O: ProductOperands>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<O.Scalar>?,
                                             transformed: UnsafePointer<O.Scalar>? = nil, taps: UnsafePointer<O.Scalar>,
                                             dOutput: UnsafePointer<O.Scalar>, dOutputOperands: UnsafePointer<O.Element>? = nil,
                                             dWeight: UnsafeMutablePointer<O.Scalar>,
                                             dBias: UnsafeMutablePointer<O.Scalar>?, dInput: UnsafeMutablePointer<O.Scalar>?,
                                             e: UnsafeMutablePointer<O.Scalar>, de: UnsafeMutablePointer<O.Scalar>,
                                             operands: O.Type) {
        typealias T = O.Scalar
        if O.Element.self == O.Scalar.self && usesWinograd(s, context) {
            winogradTaps(cin: s.cin, cout: s.cout, taps).withUnsafeBufferPointer {
                backwardWinograd(context, s, input: input, transformed: transformed,
                                 u: TransformedTaps(all: $0.baseAddress!, cin: s.cin, cout: s.cout),
                                 dOutput: dOutput, dWeight: dWeight, dBias: dBias, dInput: dInput, e: e, de: de)
            }
            return
        }
        guard let input, transformed == nil else {
            preconditionFailure("CausalConv.backward: the direct products need the input itself, not its transform")
        }
        let (n, hw, k) = (s.n, s.height * s.width, 3 * s.cin)
        let (dyo, ownY) = dOutputOperands.map { ($0, false) } ?? O.operands(of: dOutput, count: s.cout * n)
        defer { if ownY { dyo.deallocate() } }
        var dTaps = [T](repeating: 0, count: 3 * s.cout * k)
        dTaps.withUnsafeMutableBufferPointer { dt in
            withExpandedOperands(s, input, scratch: e, O.self) { eo in forEachTap(s) { ky, shift, b in
                let dw = dt.baseAddress! + ky * s.cout * k
                if b < 0 {
                    O.gemm(context, transA: false, transB: true, m: s.cout, n: k, k: n, a: dyo, lda: n, b: eo, ldb: n,
                           accumulate: true, c: dw, ldc: k)
                } else {
                    let cols = (s.height - shift) * s.width
                    O.gemm(context, transA: false, transB: true, m: s.cout, n: k, k: cols, a: dyo + b * hw + shift * s.width, lda: n,
                           b: eo + b * hw, ldb: n, accumulate: true, c: dw, ldc: k)
                }
            } }
        }
        for ky in 0..<3 { for o in 0..<s.cout { for kx in 0..<3 { for c in 0..<s.cin {
            dWeight[((o * s.cin + c) * 3 + ky) * 3 + kx] += dTaps[(ky * s.cout + o) * k + kx * s.cin + c]
        } } } }
        if let dBias { accumulateRowSums(dOutput, into: dBias, rows: s.cout, cols: n) }
        guard let dInput else { return }
        let (to, ownT) = O.operands(of: taps, count: 3 * s.cout * k)
        defer { if ownT { to.deallocate() } }
        forEachTap(s) { ky, shift, b in
            let wk = to + ky * s.cout * k
            if b < 0 {
                O.gemm(context, transA: true, transB: false, m: k, n: n, k: s.cout, a: wk, lda: k, b: dyo, ldb: n,
                       accumulate: false, c: de, ldc: n)
            } else {
                let cols = (s.height - shift) * s.width
                O.gemm(context, transA: true, transB: false, m: k, n: cols, k: s.cout, a: wk, lda: k,
                       b: dyo + b * hw + shift * s.width, ldb: n, accumulate: true, c: de + b * hw, ldc: n)
            }
        }
        fold(s, de, dInput)
    }
}


/// `CausalConv.forward` for the operand storage `Real.withOperands` picks.
private struct CausalConvForward<T: Real>: OperandsVisitor {
    typealias Scalar = T
    typealias Result = Void
    let context: ComputeContext, s: CausalConvShape
    let input, taps: UnsafePointer<T>, bias: UnsafePointer<T>?
    let output, e: UnsafeMutablePointer<T>, transformed: UnsafeMutablePointer<T>?
    func visit<O: ProductOperands>(_ o: O.Type) where O.Scalar == T {
        CausalConv.forward(context, s, input: input, taps: taps, bias: bias, output: output, e: e, transformed: transformed, operands: o)
    }
}

/// `CausalConv.backward` for the operand storage `Real.withOperands` picks.
private struct CausalConvBackward<T: Real>: OperandsVisitor {
    typealias Scalar = T
    typealias Result = Void
    let context: ComputeContext, s: CausalConvShape
    let input, transformed: UnsafePointer<T>?, taps, dOutput: UnsafePointer<T>, dOutput16: UnsafePointer<UInt16>?
    let dWeight: UnsafeMutablePointer<T>, dBias, dInput: UnsafeMutablePointer<T>?
    let e, de: UnsafeMutablePointer<T>
    func visit<O: ProductOperands>(_ o: O.Type) where O.Scalar == T {
        // The bf16 copy of dOut (made by the caller for its own products) is
        // the operand only when the operands are bf16; native operands are dOut itself.
        let given = O.Element.self == UInt16.self ? dOutput16.map { UnsafeRawPointer($0).assumingMemoryBound(to: O.Element.self) } : nil
        CausalConv.backward(context, s, input: input, transformed: transformed, taps: taps, dOutput: dOutput, dOutputOperands: given,
                            dWeight: dWeight, dBias: dBias, dInput: dInput, e: e, de: de, operands: o)
    }
}
