// 1x1 convolutions and elementwise layers. Layout as in Conv2D.swift:
// [C, N] with N = B * H * W positions.

public enum Conv1x1 {
    /// out [Cout, N] = weight [Cout, Cin] x input [Cin, N] + bias, with
    /// `beta` = 1 adding onto what `out` holds.
    public static func forward<T: Real>(_ context: ComputeContext, cin: Int, cout: Int, n: Int, input: UnsafePointer<T>,
                                        ldInput: Int? = nil, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                        output: UnsafeMutablePointer<T>, accumulate: Bool = false) {
        T.product(context, transA: false, transB: false, m: cout, n: n, k: cin, a: weight, a16: nil, lda: cin,
                  b: input, b16: nil, ldb: ldInput ?? n, accumulate: accumulate, c: output, ldc: n)
        if let bias { addBias(output, bias, rows: cout, cols: n) }
    }

    /// dWeight += dOut x input^T, dBias += row sums, dInput (+)= weight^T x dOut.
    /// With bf16 products dOut is rounded once for both products.
    public static func backward<T: Real>(_ context: ComputeContext, cin: Int, cout: Int, n: Int, input: UnsafePointer<T>,
                                         ldInput: Int? = nil, weight: UnsafePointer<T>, dOutput: UnsafePointer<T>,
                                         dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
                                         dInput: UnsafeMutablePointer<T>?, accumulateInput: Bool = true) {
        let d16 = dInput == nil ? nil : T.operandCopy(context, of: dOutput, count: cout * n, forProductsOf: [cout, cin, n])
        defer { d16?.deallocate() }
        weightGradient(context, cin: cin, cout: cout, n: n, input: input, ldInput: ldInput, dOutput: dOutput, dOutput16: d16,
                       dWeight: dWeight, dBias: dBias)
        if let dInput { inputGradient(context, cin: cin, cout: cout, n: n, weight: weight, dOutput: dOutput, dOutput16: d16,
                                      dInput: dInput, accumulate: accumulateInput) }
    }

    /// `backward`'s dInput (+)= weight^T x dOut alone, for a caller that
    /// needs it before the input exists (the gate's backward computes g and
    /// dy in one pass, from dg). `dOutput16`: dOut as bf16 operands, or nil.
    static func inputGradient<T: Real>(_ context: ComputeContext, cin: Int, cout: Int, n: Int, weight: UnsafePointer<T>,
                                              dOutput: UnsafePointer<T>, dOutput16: UnsafePointer<UInt16>?,
                                              dInput: UnsafeMutablePointer<T>, accumulate: Bool) {
        T.product(context, transA: true, transB: false, m: cin, n: n, k: cout, a: weight, a16: nil, lda: cin,
                  b: dOutput, b16: dOutput16, ldb: n, accumulate: accumulate, c: dInput, ldc: n)
    }

    /// `backward`'s dWeight += dOut x input^T and dBias += row sums of dOut.
    static func weightGradient<T: Real>(_ context: ComputeContext, cin: Int, cout: Int, n: Int, input: UnsafePointer<T>,
                                               ldInput: Int? = nil, dOutput: UnsafePointer<T>, dOutput16: UnsafePointer<UInt16>?,
                                               dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?) {
        T.product(context, transA: false, transB: true, m: cout, n: cin, k: n, a: dOutput, a16: dOutput16, lda: n,
                  b: input, b16: nil, ldb: ldInput ?? n, accumulate: true, c: dWeight, ldc: cin)
        if let dBias { accumulateRowSums(dOutput, into: dBias, rows: cout, cols: n) }
    }
}

/// Leaky ReLU: x for x > 0, slope * x otherwise.
public enum LeakyReLU {
    public static func forward<T: Real>(_ x: UnsafeMutablePointer<T>, count: Int, slope: T) {
        for i in 0..<count where x[i] < 0 { x[i] *= slope }
    }

    /// Multiplies `grad` by the derivative, read from the layer's output `y`
    /// (y > 0 exactly where x > 0, since slope > 0).
    public static func backward<T: Real>(output y: UnsafePointer<T>, grad: UnsafeMutablePointer<T>, count: Int, slope: T) {
        for i in 0..<count where y[i] <= 0 { grad[i] *= slope }
    }
}

/// The WaveNet gate: g = tanh(y[0:C]) * sigmoid(y[C:2C]) for y [2C, N].
/// Each entry point runs the type's kernel (`Real.gateForward` …: the
/// vectorised C for Float32); the `…Naive` functions are their twins
/// (libm), which Float64 runs and the tests compare with.
public enum Gate {
    @inlinable static func sigmoid<T: Real>(_ x: T) -> T { 1 / (1 + T.exp(-x)) }

    /// g [C, N] from y [2C, N].
    public static func forward<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, channels c: Int, n: Int) {
        T.gateForward(y, g, channels: c, n: n)
    }

    /// g [C, N] = tanh(y[0:C] + bias[0:C]) * sigmoid(y[C:2C] + bias[C:2C])
    /// (per-channel biases) on the calling thread: synthesis runs it on
    /// column blocks already spread over the cores.
    public static func forward<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, channels c: Int, n: Int,
                                        bias: UnsafePointer<T>) {
        T.gateForward(y, g, channels: c, n: n, bias: bias)
    }

    /// g [C, N] from y [2C, N], keeping tanh(y[0:C]) and sigmoid(y[C:2C]) in
    /// `kept` [2C, N] for `backward(kept:dg:channels:n:)`: the two-pass form
    /// of `backward(y:dg:g:dy:channels:n:)`, which training runs; kept as
    /// its reference (the tests, Float64's twin, the Swift SIMD level).
    public static func forward<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, kept: UnsafeMutablePointer<T>,
                                        channels c: Int, n: Int) {
        T.gateForward(y, g, kept: kept, channels: c, n: n)
    }

    /// dy [2C, N], written over `kept` (the values `forward(_:_:kept:)` left
    /// there), from dg [C, N].
    public static func backward<T: Real>(kept: UnsafeMutablePointer<T>, dg: UnsafePointer<T>, channels c: Int, n: Int) {
        T.gateBackward(kept: kept, dg: dg, channels: c, n: n)
    }

    /// g [C, N] and dy [2C, N] from the gate's input y [2C, N] and dg [C, N]
    /// in one pass: the values of `forward(_:_:kept:channels:n:)` then
    /// `backward(kept:dg:channels:n:)`, without writing tanh and sigmoid out
    /// and reading them back (training's backward pass, where dg does not
    /// depend on g: g is for the weight gradient of the projection after it).
    public static func backward<T: Real>(y: UnsafePointer<T>, dg: UnsafePointer<T>, g: UnsafeMutablePointer<T>,
                                         dy: UnsafeMutablePointer<T>, channels c: Int, n: Int) {
        T.gateBackward(y: y, dg: dg, g: g, dy: dy, channels: c, n: n)
    }

    /// Back through the gate and the 1x1 projection that reads its output g
    /// (a residual layer's out projection, weight [rows, C]), from that
    /// projection's output gradient dOut [rows, N]: dg = weight^T dOut first
    /// (it does not need g), then g and dy in one pass from the gate's input
    /// y (`backward(y:dg:g:dy:channels:n:)`), then dWeight += dOut g^T and
    /// dBias += row sums of dOut. With bf16 products dOut is rounded once
    /// for both products. The gradients of `Conv1x1.backward` after
    /// `forward(_:_:kept:...)`, and `backward(kept:...)`'s dy.
    static func backwardThroughProjection<T: Real>(_ context: ComputeContext, y: UnsafePointer<T>, channels c: Int, n: Int,
                                                   rows: Int, weight: UnsafePointer<T>, dOutput: UnsafePointer<T>,
                                                   dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
                                                   g: UnsafeMutablePointer<T>, dg: UnsafeMutablePointer<T>, dy: UnsafeMutablePointer<T>) {
        let d16 = T.operandCopy(context, of: dOutput, count: rows * n, forProductsOf: [rows, c, n])
        defer { d16?.deallocate() }
        Conv1x1.inputGradient(context, cin: c, cout: rows, n: n, weight: weight, dOutput: dOutput, dOutput16: d16, dInput: dg,
                              accumulate: false)
        backward(y: y, dg: dg, g: g, dy: dy, channels: c, n: n)
        Conv1x1.weightGradient(context, cin: c, cout: rows, n: n, input: g, dOutput: dOutput, dOutput16: d16, dWeight: dWeight,
                               dBias: dBias)
    }

    /// The libm twin of `forward`.
    public static func forwardNaive<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, channels c: Int, n: Int) {
        let count = c * n
        Threads.parallelFor(c) { ch in
            let base = ch * n
            for i in base ..< base + n {
                g[i] = T.tanh(y[i]) * sigmoid(y[count + i])
            }
        }
    }

    /// The libm twin of `forward(_:_:channels:n:bias:)`.
    public static func forwardNaive<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, channels c: Int, n: Int,
                                             bias: UnsafePointer<T>) {
        for ch in 0..<c {
            for i in ch * n ..< (ch + 1) * n {
                g[i] = T.tanh(y[i] + bias[ch]) * sigmoid(y[c * n + i] + bias[c + ch])
            }
        }
    }

    /// The libm twin of `forward(_:_:kept:channels:n:)`.
    public static func forwardNaive<T: Real>(_ y: UnsafePointer<T>, _ g: UnsafeMutablePointer<T>, kept: UnsafeMutablePointer<T>,
                                             channels c: Int, n: Int) {
        let count = c * n
        Threads.parallelFor(c) { ch in
            for i in ch * n ..< (ch + 1) * n {
                let t = T.tanh(y[i]), s = sigmoid(y[count + i])
                kept[i] = t; kept[count + i] = s; g[i] = t * s
            }
        }
    }

    /// The loop of `backward(kept:dg:channels:n:)` on one span: kept[i] = dg s (1 - t^2),
    /// kept[total + i] = dg t s (1 - s), i < count. No exp.
    static func backwardFromKept<T: Real>(_ kept: UnsafeMutablePointer<T>, _ dg: UnsafePointer<T>, count: Int, total: Int) {
        for i in 0..<count {
            let t = kept[i], s = kept[total + i], d = dg[i]
            kept[i] = d * s * (1 - t * t)
            kept[total + i] = d * t * s * (1 - s)
        }
    }

    /// dy [2C, N] from dg [C, N] and the gate's input y, recomputing tanh and
    /// sigmoid with libm: the twin of `backward(y:dg:g:dy:channels:n:)` and
    /// of the kept-values pair (`forward(_:_:kept:channels:n:)`,
    /// `backward(kept:dg:channels:n:)`).
    public static func backwardNaive<T: Real>(_ y: UnsafePointer<T>, _ dg: UnsafePointer<T>, _ dy: UnsafeMutablePointer<T>,
                                              channels c: Int, n: Int) {
        let count = c * n
        Threads.parallelFor(c) { ch in
            let base = ch * n
            for i in base ..< base + n {
                let th = T.tanh(y[i]), sg = sigmoid(y[count + i])
                dy[i] = dg[i] * sg * (1 - th * th)
                dy[count + i] = dg[i] * th * sg * (1 - sg)
            }
        }
    }
}
