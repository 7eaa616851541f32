// The dilated 1-D convolution of WaveGlow's WN stacks (MODEL-SPEC 12.4):
// kernel 3, dilation d, zero padding d on both sides (output length = input
// length), PyTorch weight layout [Cout, Cin, 3] = the matrix [Cout, 3 Cin]
// with column ci*3 + k.
//
// Layout: [C, N] with N = B * w (batch items side by side, w columns each);
// taps never reach across an item's edge.

/// Where the dilated convolution runs: C in, batch items of `width` columns, dilation.
struct DilatedConvShape: Equatable {
    var cin: Int, batch: Int, width: Int, dilation: Int
    /// N, the positions.
    var n: Int { batch * width }
}

enum DilatedConv1D {
    /// E [3 Cin, N]: E[ci*3 + k, b*w + j] = A[ci, b*w + j + (k-1)d], zero
    /// where that column is outside item b.
    static func expand<T: Real>(_ s: DilatedConvShape, input a: UnsafePointer<T>, into e: UnsafeMutablePointer<T>) {
        let (w, d, n) = (s.width, s.dilation, s.n)
        Threads.parallelFor(s.cin) { ci in
            for k in 0..<3 {
                let shift = (k - 1) * d, row = e + (ci * 3 + k) * n, src = a + ci * n
                for b in 0..<s.batch {
                    let lo = max(0, -shift), hi = min(w, w - shift) // j with 0 <= j + shift < w
                    let out = row + b * w, inp = src + b * w
                    if lo >= hi { out.update(repeating: 0, count: w); continue }
                    out.update(repeating: 0, count: lo)
                    out.advanced(by: lo).update(from: inp + lo + shift, count: hi - lo)
                    out.advanced(by: hi).update(repeating: 0, count: w - hi)
                }
            }
        }
    }

    /// The adjoint of `expand`: dA[ci, b*w + j + (k-1)d] += dE[ci*3 + k, b*w + j].
    static func expandAdjoint<T: Real>(_ s: DilatedConvShape, _ de: UnsafePointer<T>, addingInto da: UnsafeMutablePointer<T>) {
        let (w, d, n) = (s.width, s.dilation, s.n)
        Threads.parallelFor(s.cin) { ci in
            let dst = da + ci * n
            for k in 0..<3 {
                let shift = (k - 1) * d, row = de + (ci * 3 + k) * n
                let lo = max(0, -shift), hi = min(w, w - shift)
                guard lo < hi else { continue }
                for b in 0..<s.batch {
                    let g = row + b * w, out = dst + b * w + shift
                    for j in lo..<hi { out[j] += g[j] }
                }
            }
        }
    }

    /// This convolution as a causal one of height 1 (its vertical taps reach
    /// no row), which runs by Winograd in width (`CausalConv.forwardWinograd`).
    static func asCausal(_ s: DilatedConvShape, cout: Int) -> CausalConvShape {
        CausalConvShape(cin: s.cin, cout: cout, dh: 1, dw: s.dilation, batch: s.batch, height: 1, width: s.width)
    }

    /// Whether `forward` and `backward` run by Winograd's F(4, 3) in
    /// `context`: as for WaveFlow (the policy's rule for the dilation and
    /// the width), with products not in bf16. Here the products' inner size
    /// is C (no vertical taps to stack) and the convolution is a third of
    /// WaveGlow's multiply-adds, so the gain is smaller: measured (Zen 4,
    /// fp32, session 12) wg-c64 synthesis 88.6-90.9k -> 93.8-96.4k samples/s,
    /// training level (20.9-21.2k either way). With session 11's scalar
    /// transforms it had been slower, and `auto` had left WaveGlow direct.
    static func usesWinograd(_ s: DilatedConvShape, cout: Int, _ context: ComputeContext) -> Bool {
        !context.bf16Products(cout, 3 * s.cin) && CausalConv.usesWinograd(asCausal(s, cout: cout), context)
    }

    /// The values of the input's Winograd transform, which `forward` can keep
    /// for `backward`; nil where the convolution does not run by Winograd
    /// (`usesWinograd`: the causal form's rule, whose count this is).
    static func transformedInputCount(_ s: DilatedConvShape, cout: Int, context: ComputeContext) -> Int? {
        CausalConv.transformedInputCount(asCausal(s, cout: cout), context: context)
    }

    /// The values `forward` and `backward` need in each of `e` and `de`.
    static func scratchCount(_ s: DilatedConvShape, cout: Int, context: ComputeContext) -> Int {
        usesWinograd(s, cout: cout, context) ? CausalConv.scratchCount(asCausal(s, cout: cout), context: context) : 3 * s.cin * s.n
    }

    /// U [6][Cout, Cin], the Winograd transform of the weight [Cout, 3 Cin]
    /// (column ci*3 + k): the taps of a height-1 causal convolution
    /// (`CausalConv.TransformedTaps(lastOnly:)`).
    static func winogradTaps<T: Real>(_ weight: UnsafePointer<T>, cin: Int, cout: Int) -> OwnedBuffer<T> {
        let u = OwnedBuffer<T>(unsetCount: 6 * cout * cin)
        WidthWinograd.transformKernel(weight, tapStride: 1, ld: 3 * cin, channelStride: 3, rows: cout, cin: cin, into: u.pointer,
                                      pointStride: cout * cin, ldu: cin)
        return u
    }

    /// y [Cout, N] (+)= W [Cout, 3 Cin] E, with E = expand(a) written to `e`
    /// (`scratchCount` values); by Winograd where `usesWinograd`, then
    /// writing the input's transform to `transformed` when given (room for
    /// `transformedInputCount` values).
    static func forward<T: Real>(_ context: ComputeContext, _ s: DilatedConvShape, cout: Int, input a: UnsafePointer<T>,
                                 weight: UnsafePointer<T>, e: UnsafeMutablePointer<T>, output y: UnsafeMutablePointer<T>,
                                 accumulate: Bool, keepingTransformed transformed: UnsafeMutablePointer<T>? = nil) {
        if usesWinograd(s, cout: cout, context) {
            let u = winogradTaps(weight, cin: s.cin, cout: cout)
            CausalConv.forwardWinograd(context, asCausal(s, cout: cout), input: a,
                                       u: .init(lastOnly: u.pointer, cin: s.cin, cout: cout), bias: nil, output: y, e: e,
                                       accumulate: accumulate, keeping: transformed)
            return
        }
        precondition(transformed == nil, "DilatedConv1D.forward: no transform to keep without Winograd")
        expand(s, input: a, into: e)
        T.product(context, transA: false, transB: false, m: cout, n: s.n, k: 3 * s.cin, a: weight, a16: nil, lda: 3 * s.cin,
                  b: e, b16: nil, ldb: s.n, accumulate: accumulate, c: y, ldc: s.n)
    }

    /// dW [Cout, 3 Cin] += dY E^T and dA += adjoint(W^T dY), with E =
    /// expand(a) rebuilt in `e` and W^T dY in `de` (`scratchCount` values
    /// each); by Winograd where `usesWinograd`, reading the input's
    /// transform when `forward` kept it (`transformed`; then `a` may be nil).
    static func backward<T: Real>(_ context: ComputeContext, _ s: DilatedConvShape, cout: Int, input a: UnsafePointer<T>?,
                                  transformed: UnsafePointer<T>? = nil, weight: UnsafePointer<T>, dOutput dy: UnsafePointer<T>, dy16: UnsafePointer<UInt16>?,
                                  dWeight: UnsafeMutablePointer<T>, dInput da: UnsafeMutablePointer<T>,
                                  e: UnsafeMutablePointer<T>, de: UnsafeMutablePointer<T>) {
        let k = 3 * s.cin
        if usesWinograd(s, cout: cout, context) {
            // With tap 2 alone, backwardWinograd's gradient layout [Cout, Cin, 1, 3] is ours.
            let u = winogradTaps(weight, cin: s.cin, cout: cout)
            CausalConv.backwardWinograd(context, asCausal(s, cout: cout), input: a, transformed: transformed,
                                        u: .init(lastOnly: u.pointer, cin: s.cin, cout: cout),
                                        dOutput: dy, dWeight: dWeight, dBias: nil, dInput: da, e: e, de: de)
            return
        }
        guard let a, transformed == nil else { preconditionFailure("DilatedConv1D.backward: the direct products need the input itself") }
        expand(s, input: a, into: e)
        T.product(context, transA: false, transB: true, m: cout, n: k, k: s.n, a: dy, a16: dy16, lda: s.n,
                  b: e, b16: nil, ldb: s.n, accumulate: true, c: dWeight, ldc: k)
        T.product(context, transA: true, transB: false, m: k, n: s.n, k: cout, a: weight, a16: nil, lda: k,
                  b: dy, b16: dy16, ldb: s.n, accumulate: false, c: de, ldc: s.n)
        expandAdjoint(s, de, addingInto: da)
    }

    /// The naive twin of `forward` (direct sums, no expansion): y = W * a.
    static func forwardNaive<T: Real>(_ s: DilatedConvShape, cout: Int, input a: UnsafePointer<T>, weight: UnsafePointer<T>,
                                      output y: UnsafeMutablePointer<T>) {
        let (w, d, n, cin) = (s.width, s.dilation, s.n, s.cin)
        for o in 0..<cout { for b in 0..<s.batch { for j in 0..<w {
            var acc: T = 0
            for ci in 0..<cin { for k in 0..<3 {
                let jj = j + (k - 1) * d
                if jj >= 0 && jj < w { acc += weight[(o * cin + ci) * 3 + k] * a[ci * n + b * w + jj] }
            } }
            y[o * n + b * w + j] = acc
        } } }
    }
}
