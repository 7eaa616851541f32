import Foundation

// Glow's invertible 1x1 convolution (MODEL-SPEC 12.3): the channels still
// in the flow (grid rows e ..< h) mixed by one matrix W [c, c] at every
// column; log-det = w * log|det W| per item. Its gradient adds W^{-T} per
// unit of log-det. Determinant and inverse in Float64 (c is at most n_group).

/// WaveGlow's `convinv.k`: Z[e..<h] = W X[e..<h], rows before e unchanged.
public final class InvertibleConv1x1<T: Real>: FlowStep {
    public typealias Scalar = T
    public let name: String
    let params: ParameterSet<T>
    /// The rows it mixes.
    let rows: Range<Int>
    /// W's offset in the arena.
    let weight: Int

    /// Flow k's matrix (`convinv.k.conv.weight` [c, c, 1]) on rows `first ..< n_group`.
    init(config: ModelConfig, flow k: Int, firstRow e: Int, params: ParameterSet<T>) {
        name = "convinv.\(k)."
        self.params = params
        rows = e ..< config.nGroup
        weight = params.offset(name + "conv.weight")
    }

    var c: Int { rows.count }
    /// W as Float64, row-major [c, c].
    var matrix: [Double] { (0 ..< c * c).map { Double(params.valueBuffer[weight + $0]) } }

    /// Y[rows] = M X[rows] for each item of X [B, h, w] (other rows copied),
    /// as c*c scaled row additions on the calling thread: a [c, c] x [c, w]
    /// product is too small for BLAS's threads, and waking them leaves them
    /// spinning on the cores synthesis's column blocks run on.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func apply(_ m: [T], to x: [T], grid: GridShape) -> [T] {
        let (h, w) = (grid.rows, grid.width)
        var y = x
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            for b in 0..<grid.batch {
                let off = (b * h + rows.lowerBound) * w
                for i in 0..<c {
                    let dst = yp.baseAddress! + off + i * w
                    dst.update(repeating: 0, count: w)
                    for k in 0..<c {
                        let mik = m[i * c + k], src = xp.baseAddress! + off + k * w
                        for j in 0..<w { dst[j] += mik * src[j] }
                    }
                }
            }
        } }
        return y
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func forward(_ x: [T], condition cd: [T], grid: GridShape, keepCache: Bool, columnLogdet: Bool,
                        context: ComputeContext) -> StepForward<T> {
        let w = Array(params.valueBuffer[weight ..< weight + c * c])
        let ld = SmallMatrix.logAbsDeterminant(matrix, n: c)
        return StepForward(output: apply(w, to: x, grid: grid), logdet: [T](repeating: T(Double(grid.width) * ld), count: grid.batch),
                           columnLogdet: columnLogdet ? [T](repeating: T(ld), count: grid.batch * grid.width) : [],
                           cache: keepCache ? x : nil)
    }

    /// dX = W^T dZ on the rows; dW += sum_b dZ_b X_b^T + (sum_b dLogdet_b) w W^{-T}.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func backward(_ f: StepForward<T>, dOutput dZ: [T], dLogdet: [T], dCondition: inout [T],
                         grid: GridShape, context: ComputeContext) -> [T] {
        guard let x = f.cache as? [T] else { preconditionFailure("backward needs a forward pass with keepCache") }
        let (h, w) = (grid.rows, grid.width)
        let wt = SmallMatrix.transpose(Array(params.valueBuffer[weight ..< weight + c * c]), n: c)
        let dx = apply(wt, to: dZ, grid: grid)
        let g = params.gradBuffer.baseAddress! + weight
        dZ.withUnsafeBufferPointer { dzp in x.withUnsafeBufferPointer { xp in
            for b in 0..<grid.batch {
                let off = (b * h + rows.lowerBound) * w
                T.gemm(transA: false, transB: true, m: c, n: c, k: w, alpha: 1, a: dzp.baseAddress! + off, lda: w,
                       b: xp.baseAddress! + off, ldb: w, beta: 1, c: g, ldc: c)
            }
        } }
        if let inv = SmallMatrix.inverse(matrix, n: c) {
            let scale = Double(dLogdet.reduce(0, +)) * Double(w)
            for i in 0..<c { for j in 0..<c { g[i * c + j] += T(scale * inv[j * c + i]) } }
        }
        return dx
    }

    /// X = W^{-1} Z on the rows.
    public func inverse(_ z: [T], condition: any ConditionRows<T>, width: Int, context: ComputeContext) -> [T] {
        guard let inv = SmallMatrix.inverse(matrix, n: c) else { preconditionFailure("\(name)conv.weight is singular") }
        return apply(inv.map { T($0) }, to: z, grid: GridShape(batch: 1, rows: rows.upperBound, width: width))
    }

    /// The oracle: W x = z solved column by column by Gaussian elimination.
    public func inverseNaive(_ z: [T], condition cd: [T], width w: Int, context: ComputeContext) -> [T] {
        var x = z
        let m = matrix, e = rows.lowerBound
        for j in 0..<w {
            let col = (0..<c).map { Double(z[(e + $0) * w + j]) }
            let solved = SmallMatrix.solve(m, col, n: c)!
            for i in 0..<c { x[(e + i) * w + j] = T(solved[i]) }
        }
        return x
    }
}

/// Dense Float64 linear algebra for the small matrices of the 1x1 convolutions.
enum SmallMatrix {
    /// LU with partial pivoting of a [n, n] (row-major): (LU, pivots, sign), nil if singular.
    static func lu(_ a: [Double], n: Int) -> (lu: [Double], perm: [Int], sign: Double)? {
        var m = a, perm = Array(0..<n), sign = 1.0
        for k in 0..<n {
            let p = (k..<n).max { abs(m[$0 * n + k]) < abs(m[$1 * n + k]) }!
            guard m[p * n + k] != 0 else { return nil }
            if p != k {
                for j in 0..<n { m.swapAt(k * n + j, p * n + j) }
                perm.swapAt(k, p); sign = -sign
            }
            for i in k + 1 ..< n {
                let f = m[i * n + k] / m[k * n + k]
                m[i * n + k] = f
                for j in k + 1 ..< n { m[i * n + j] -= f * m[k * n + j] }
            }
        }
        return (m, perm, sign)
    }

    /// log |det a|; -infinity if singular.
    static func logAbsDeterminant(_ a: [Double], n: Int) -> Double {
        guard let (m, _, _) = lu(a, n: n) else { return -.infinity }
        return (0..<n).reduce(0) { $0 + Foundation.log(abs(m[$1 * n + $1])) }
    }

    /// det a (0 if singular).
    static func determinant(_ a: [Double], n: Int) -> Double {
        guard let (m, _, sign) = lu(a, n: n) else { return 0 }
        return (0..<n).reduce(sign) { $0 * m[$1 * n + $1] }
    }

    /// The solution of a x = b by Gaussian elimination with partial pivoting.
    static func solve(_ a: [Double], _ b: [Double], n: Int) -> [Double]? {
        guard let (m, perm, _) = lu(a, n: n) else { return nil }
        var y = perm.map { b[$0] }
        for i in 0..<n { for k in 0..<i { y[i] -= m[i * n + k] * y[k] } }
        for i in stride(from: n - 1, through: 0, by: -1) {
            for k in i + 1 ..< n { y[i] -= m[i * n + k] * y[k] }
            y[i] /= m[i * n + i]
        }
        return y
    }

    /// a^{-1}, nil if singular.
    static func inverse(_ a: [Double], n: Int) -> [Double]? {
        var inv = [Double](repeating: 0, count: n * n)
        for j in 0..<n {
            var e = [Double](repeating: 0, count: n); e[j] = 1
            guard let col = solve(a, e, n: n) else { return nil }
            for i in 0..<n { inv[i * n + j] = col[i] }
        }
        return inv
    }

    static func transpose<T>(_ a: [T], n: Int) -> [T] { (0 ..< n * n).map { a[($0 % n) * n + $0 / n] } }
}
