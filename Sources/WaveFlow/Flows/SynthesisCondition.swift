import Foundation

// The condition rows synthesis reads, computed on demand from the mel.

/// The condition for synthesis, one grid row at a time. All upsampling
/// stages but the last are materialised (1/f_last of the full condition);
/// the last transposed convolution is evaluated only at the columns of the
/// requested row (t = j*h + i), so the full-rate condition [M, F*hop] — the
/// largest array of a long synthesis — never exists.
public struct SynthesisCondition<T: Real>: ConditionRows {
    /// Input of the last stage, [M, W] with W = F*hop / f.
    let input: [T]
    let weight: [T], bias: T
    public let bands: Int
    let inWidth: Int, factor: Int, rows: Int, columns: Int
    let slope: T
    /// With s = h / f > 1, the input de-interleaved by column residue:
    /// [s][M][ceil(W / s)], entry (b, y, k) = input[y, k*s + b], so that a
    /// row's stride-s reads become contiguous (vector) loops. Empty for s = 1.
    let phased: [T]

    /// The last stage's input [M, W] and weights; `rows` h, `columns` w = F*hop / h.
    init(input: [T], weight: [T], bias: T, bands: Int, inWidth: Int, factor: Int, rows: Int, columns: Int, slope: T) {
        (self.input, self.weight, self.bias, self.bands) = (input, weight, bias, bands)
        (self.inWidth, self.factor, self.rows, self.columns, self.slope) = (inWidth, factor, rows, columns, slope)
        let s = rows % factor == 0 ? rows / factor : 1
        guard s > 1 else { phased = []; return }
        let pw = (inWidth + s - 1) / s
        var out = [T](repeating: 0, count: s * bands * pw)
        for b in 0..<s { for y in 0..<bands { for k in 0..<pw where k * s + b < inWidth {
            out[(b * bands + y) * pw + k] = input[y * inWidth + k * s + b]
        } } }
        phased = out
    }

    /// Row i as [M, w]: c[m, j*h + i] for j in 0..<w.
    public func row(_ i: Int) -> [T] {
        var out = [T](repeating: 0, count: bands * columns)
        out.withUnsafeMutableBufferPointer { row(i, columns: 0..<columns, into: $0.baseAddress!, rowStride: columns) }
        return out
    }

    /// Columns `js` of row i into `out` [M, js.count] with row stride
    /// `rowStride`: out[y * rowStride + j - js.lowerBound] = c[y, j*h + i].
    ///
    /// When f divides h (the usual h = f = 16), output column j = (j*h + i)
    /// draws on input columns j*(h/f) + q and that minus 1 with the same two
    /// kernel taps for every j (q and the taps depend on i only), so the row
    /// is a few scaled, shifted input rows: vector loops. Otherwise
    /// `rowNaive`, which is also the tests' oracle.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride ld: Int) {
        let (m, f, h, win, j0) = (bands, factor, rows, inWidth, js.lowerBound)
        guard h % f == 0 else { rowNaive(i, columns: js, into: out, rowStride: ld); return }
        let s = h / f, q = (i + f / 2) / f, t0 = i + f / 2 - q * f
        let pw = (win + s - 1) / s
        (s == 1 ? input : phased).withUnsafeBufferPointer { ip in
            let inp = ip.baseAddress!
            for y in 0..<m {
                let o = out + y * ld
                o.update(repeating: bias, count: js.count)
                for ky in 0..<3 {
                    let yin = y + 1 - ky // output y = yin - 1 + ky
                    guard yin >= 0 && yin < m else { continue }
                    for d in 0..<2 {
                        // Input column j*s + q - d, kernel tap t0 + d*f.
                        let wgt = weight[ky * 2 * f + t0 + d * f], off = q - d
                        let lo = max(j0, off >= 0 ? 0 : (-off + s - 1) / s)
                        let hi = min(js.upperBound, win - 1 - off < 0 ? 0 : (win - 1 - off) / s + 1)
                        guard lo < hi else { continue }
                        let dst = o - j0
                        if s == 1 {
                            let src = inp + yin * win + off
                            for j in lo..<hi { dst[j] += wgt * src[j] }
                        } else {
                            // Input column j*s + off = (j + a)*s + b: phase b, index j + a.
                            let a = off >= 0 ? off / s : -((-off + s - 1) / s), b = off - a * s
                            let src = inp + (b * m + yin) * pw + a
                            for j in lo..<hi { dst[j] += wgt * src[j] }
                        }
                    }
                }
                for j in 0..<js.count { let v = o[j]; o[j] = v < 0 ? v * slope : v }
            }
        }
    }

    /// The scalar twin of `row(_:columns:into:rowStride:)`, for any f and h.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func rowNaive(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride ld: Int) {
        let (m, f, h, win, j0) = (bands, factor, rows, inWidth, js.lowerBound)
        for y in 0..<m { (out + y * ld).update(repeating: bias, count: js.count) }
        for j in js {
            let xo = j * h + i
            // Input columns whose kernel (width 2f, offset -f/2) covers xo.
            let hi = (xo + f / 2) / f
            for xin in max(0, hi - 1) ... min(win - 1, hi) {
                let tap = xo - xin * f + f / 2
                if tap < 0 || tap >= 2 * f { continue }
                for y in 0..<m {
                    var s: T = 0
                    for ky in 0..<3 {
                        let yin = y + 1 - ky // output y = yin - 1 + ky
                        if yin >= 0 && yin < m { s += input[yin * win + xin] * weight[ky * 2 * f + tap] }
                    }
                    out[y * ld + j - j0] += s
                }
            }
        }
        for y in 0..<m {
            let r = out + y * ld
            for j in 0..<js.count where r[j] < 0 { r[j] *= slope }
        }
    }
}
