import Foundation
import COpenBLAS

/// A floating-point scalar the layers compute in: Float32 for speed, Float64
/// for the finite-difference gradient tests.
///
/// Besides plain BLAS (`gemm`), the type supplies the kernels that have a
/// fast path: Float's requirements are the fast kernels (C intrinsics,
/// oneDNN), Double's are their naive twins, which the tests compare them
/// with. Kernels call these requirements and never test which type they
/// run in.
public protocol Real: BinaryFloatingPoint, Codable, Sendable where Self.RawSignificand: FixedWidthInteger {
    /// C = alpha * op(A) * op(B) + beta * C, row-major: plain cblas ?gemm,
    /// whatever the context (the mel filter bank, tests, oracles).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     alpha: Self, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self

    /// The model's matrix products: C [m, n] = op(A) op(B) (+ C when
    /// `accumulate`), on the backend `context` chooses (Float: bf16 on
    /// oneDNN, weight gradients on oneDNN's f32 matmul, else OpenBLAS).
    /// `a16` / `b16`: the operand already rounded to bf16 (`operandCopy`,
    /// dense), used instead of rounding it again when the product is bf16.
    static func product(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                        a: UnsafePointer<Self>, a16: UnsafePointer<UInt16>?, lda: Int,
                        b: UnsafePointer<Self>, b16: UnsafePointer<UInt16>?, ldb: Int,
                        accumulate: Bool, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// A bf16 copy of `count` values that several products of at least
    /// `sizes` will read, when those products run in bf16 in `context`;
    /// nil otherwise (always for Float64). The caller deallocates it.
    static func operandCopy(_ context: ComputeContext, of values: UnsafePointer<Self>, count: Int,
                            forProductsOf sizes: [Int]) -> UnsafeMutablePointer<UInt16>?
    /// Calls `visitor` with the operand storage that products of `sizes`
    /// use in `context`: `BF16Operands` or `NativeOperands<Self>`.
    static func withOperands<V: OperandsVisitor>(_ context: ComputeContext, forProductsOf sizes: [Int], _ visitor: V) -> V.Result
        where V.Scalar == Self

    /// g [C, N] = tanh(y[0:C]) * sigmoid(y[C:2C]) for y [2C, N], channels over the cores.
    static func gateForward(_ y: UnsafePointer<Self>, _ g: UnsafeMutablePointer<Self>, channels: Int, n: Int)
    /// The gate with per-channel biases, on the calling thread.
    static func gateForward(_ y: UnsafePointer<Self>, _ g: UnsafeMutablePointer<Self>, channels: Int, n: Int,
                            bias: UnsafePointer<Self>)
    /// The gate, keeping tanh and sigmoid in `kept` [2C, N].
    static func gateForward(_ y: UnsafePointer<Self>, _ g: UnsafeMutablePointer<Self>, kept: UnsafeMutablePointer<Self>,
                            channels: Int, n: Int)
    /// dy [2C, N] written over `kept` from dg [C, N].
    static func gateBackward(kept: UnsafeMutablePointer<Self>, dg: UnsafePointer<Self>, channels: Int, n: Int)
    /// g [C, N] and dy [2C, N] from y [2C, N] and dg [C, N] in one pass: the
    /// values of `gateForward(_:_:kept:...)` then `gateBackward(kept:...)`.
    static func gateBackward(y: UnsafePointer<Self>, dg: UnsafePointer<Self>, g: UnsafeMutablePointer<Self>,
                             dy: UnsafeMutablePointer<Self>, channels: Int, n: Int)
    /// out[r] += sum over columns of x [rows, cols].
    static func accumulateRowSums(_ x: UnsafePointer<Self>, into out: UnsafeMutablePointer<Self>, rows: Int, cols: Int)
    /// C [m, n] = A[:, kFirst ..< kFirst + count * segK] x [B_0; ...; B_count-1]
    /// (+ C when `accumulate`) on the calling thread, each B_s [segK, n] at `segments[s]` (row
    /// stride ldb); A from `PackedWeights` (see there).
    static func segmentProduct(_ a: PackedWeights<Self>, firstColumn kFirst: Int, segments: UnsafePointer<UnsafePointer<Self>>,
                               count: Int, segmentRows segK: Int, ldb: Int, n: Int, c: UnsafeMutablePointer<Self>, ldc: Int,
                               accumulate: Bool)
}

/// A computation generic over how product operands are stored, for
/// `Real.withOperands` (the convolutions and synthesis).
public protocol OperandsVisitor {
    associatedtype Scalar: Real
    associatedtype Result
    func visit<O: ProductOperands>(_ operands: O.Type) -> Result where O.Scalar == Scalar
}

extension Float: Real {
    @inlinable public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                       alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                       b: UnsafePointer<Float>, ldb: Int,
                                       beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inlinable public static func exp(_ x: Float) -> Float { Foundation.expf(x) }
    @inlinable public static func log(_ x: Float) -> Float { Foundation.logf(x) }
    @inlinable public static func tanh(_ x: Float) -> Float { Foundation.tanhf(x) }

    public static func product(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                               a: UnsafePointer<Float>, a16: UnsafePointer<UInt16>?, lda: Int,
                               b: UnsafePointer<Float>, b16: UnsafePointer<UInt16>?, ldb: Int,
                               accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let started = ProductProfile.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer {
            if ProductProfile.enabled {
                ProductProfile.record(transA: transA, transB: transB, m: m, n: n, k: k, accumulate: accumulate, since: started)
            }
        }
        // bf16 products (oneDNN) when chosen, for all but the smallest shapes.
        if context.bf16Products(m, n, k), case .success(let dnnl) = OneDNN.bf16,
           (try? dnnl.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, a16: a16, lda: lda, b: b, b16: b16, ldb: ldb,
                           beta: accumulate ? 1 : 0, c: c, ldc: ldc)) != nil {
            return
        }
        // Weight gradients, and fresh short-reduction outputs on AVX-512, in
        // Float32 on oneDNN's f32 matmul where present.
        if context.weightGradientsOnOneDNN,
           WeightGradients.shape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb)
            || FreshOutputs.shape(transB: transB, m: m, n: n, k: k, accumulate: accumulate),
           case .success(let dnnl) = OneDNN.shared,
           (try? dnnl.gemmF32(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                              accumulate: accumulate, c: c, ldc: ldc)) != nil {
            return
        }
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb,
             beta: accumulate ? 1 : 0, c: c, ldc: ldc)
    }

    public static func operandCopy(_ context: ComputeContext, of values: UnsafePointer<Float>, count: Int,
                                   forProductsOf sizes: [Int]) -> UnsafeMutablePointer<UInt16>? {
        guard context.bf16Products(sizes) else { return nil }
        let copy = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        BF16Operands.convert(values, count: count, into: copy)
        return copy
    }

    public static func withOperands<V: OperandsVisitor>(_ context: ComputeContext, forProductsOf sizes: [Int], _ visitor: V)
        -> V.Result where V.Scalar == Float {
        context.bf16Products(sizes) ? visitor.visit(BF16Operands.self) : visitor.visit(NativeOperands<Float>.self)
    }

    public static func gateForward(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, channels c: Int, n: Int) {
        Threads.parallelFor(c) { ch in
            VectorKernels.gateForward(y + ch * n, g + ch * n, count: n, total: c * n, biasTanh: 0, biasSigmoid: 0)
        }
    }

    public static func gateForward(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, channels c: Int, n: Int,
                                   bias: UnsafePointer<Float>) {
        for ch in 0..<c {
            VectorKernels.gateForward(y + ch * n, g + ch * n, count: n, total: c * n, biasTanh: bias[ch], biasSigmoid: bias[c + ch])
        }
    }

    public static func gateForward(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, kept: UnsafeMutablePointer<Float>,
                                   channels c: Int, n: Int) {
        Threads.parallelFor(c) { ch in VectorKernels.gateForwardKeeping(y + ch * n, g + ch * n, kept + ch * n, count: n, total: c * n) }
    }

    public static func gateBackward(kept: UnsafeMutablePointer<Float>, dg: UnsafePointer<Float>, channels c: Int, n: Int) {
        Threads.parallelFor(c) { ch in VectorKernels.gateBackwardKept(kept + ch * n, dg + ch * n, count: n, total: c * n) }
    }

    public static func gateBackward(y: UnsafePointer<Float>, dg: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>,
                                    dy: UnsafeMutablePointer<Float>, channels c: Int, n: Int) {
        Threads.parallelFor(c) { ch in
            VectorKernels.gateBackwardFromY(y + ch * n, dg + ch * n, g + ch * n, dy + ch * n, count: n, total: c * n)
        }
    }

    /// A vector kernel per row (VectorKernels.sum), rows spread over the
    /// cores (a plain loop cannot be vectorised: reordering a floating-point
    /// sum is not allowed; the earlier product x [rows, cols] x ones on
    /// OpenBLAS copied all of x into its packing buffers first: 4.6% of a
    /// bf16 training step).
    public static func accumulateRowSums(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        Threads.parallelFor(rows) { r in out[r] += VectorKernels.sum(x + r * cols, count: cols) }
    }

    /// The panel kernel (`VectorKernels.panelProduct`) where one runs, else BLAS per segment.
    public static func segmentProduct(_ a: PackedWeights<Float>, firstColumn kFirst: Int, segments: UnsafePointer<UnsafePointer<Float>>,
                                      count: Int, segmentRows segK: Int, ldb: Int, n: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                                      accumulate: Bool) {
        let started = ProductProfile.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer {
            if ProductProfile.enabled {
                ProductProfile.record(panel: count, m: a.rows, n: n, k: count * segK, accumulate: accumulate, since: started)
            }
        }
        if let ap = a.panels, UnsafeRawPointer(segments).withMemoryRebound(to: UnsafePointer<Float>?.self, capacity: count, {
            VectorKernels.panelProduct(ap, m: a.rows, kTotal: a.columns, kFirst: kFirst, b: $0, segments: count, segK: segK,
                                       ldb: ldb, n: n, c: c, ldc: ldc, accumulate: accumulate)
        }) { return }
        segmentProductBLAS(a, firstColumn: kFirst, segments: segments, count: count, segmentRows: segK, ldb: ldb, n: n, c: c, ldc: ldc,
                           accumulate: accumulate)
    }
}

/// Which Float32 products run on oneDNN's f32 matmul instead of OpenBLAS:
/// the weight gradients, dW [m, n] += dOut [m, K] x input [n, K]^T with a
/// long reduction over positions (K >= 2048). Measured here (Zen 4, one
/// thread, K = 30,720): oneDNN 85-94 GFLOP/s against OpenBLAS's 50-79 on
/// every such shape of h16-c32 and h16-c64 (64 x 96, 64 x 80, 64 x 32,
/// 128 x 192, 128 x 80, 128 x 64), while OpenBLAS stays faster on the
/// forward and input-gradient shapes (70-88 against 57-73). With oneDNN
/// held to AVX2 (`DNNL_MAX_CPU_ISA=AVX2`, as on a CPU without AVX-512) it
/// still ran these shapes at 79-95 against OpenBLAS's Haswell kernel's
/// 50-77, so this applies wherever libdnnl2 loads (`OneDNN.shared`, any
/// x86-64), bf16 CPU or not. WaveGlow's shards reduce over K = 2048
/// (16384-sample segments in groups of 8): there oneDNN ran the condition
/// projection's [1024, 640] at 107 GFLOP/s and the layers' [128, 64] at
/// 103 per core, and whole wg-c64 training steps gained 1.5-2.5% (session
/// 13; the bound was 4096 before). `WAVEFLOW_WEIGHT_GRADIENTS=openblas` keeps
/// them on OpenBLAS (`ComputeContext.weightGradientsOnOneDNN`).
public enum WeightGradients {
    /// Whether the environment allows weight gradients on oneDNN (the
    /// default of `ComputeContext.weightGradientsOnOneDNN`).
    public static let allowedByEnvironment: Bool =
        ProcessInfo.processInfo.environment["WAVEFLOW_WEIGHT_GRADIENTS"] != "openblas"

    /// Whether this Float32 product is a weight gradient that oneDNN should
    /// run: both operands dense along the reduction (lda = ldb = K). On a
    /// window of longer rows (the convolution's shifted taps) oneDNN falls
    /// back from its brgemm kernels to `gemm:jit`, 2.4x slower per FLOP than
    /// on the dense product beside it (DNNL_VERBOSE), and slower than OpenBLAS.
    @inlinable
    public static func shape(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int) -> Bool {
        !transA && transB && k >= 2048 && m >= 16 && n >= 16 && lda == k && ldb == k
    }

    /// Whether weight gradients (and `FreshOutputs`) run on oneDNN in `context` (allowed and loaded).
    public static func runOnOneDNN(_ context: ComputeContext) -> Bool {
        guard context.weightGradientsOnOneDNN, case .success = OneDNN.shared else { return false }
        return true
    }

    /// For `waveflow info` and the training log.
    public static func description(_ context: ComputeContext) -> String {
        runOnOneDNN(context) ? "oneDNN f32 matmul" : "OpenBLAS"
    }
}

/// Float32 products that write a fresh output (no accumulation) from a short
/// reduction over a few thousand columns: WaveFlow training's Winograd point
/// products, [128, 64] x [64, 3840] and [64, 128]^T x [128, 3840] per shard
/// of h16-c64. OpenBLAS (beta = 0) first zeroes C in a pass of its own and
/// then accumulates into it; oneDNN writes C once. Measured in session 14
/// (`WAVEFLOW_PRODUCT_PROFILE=1`, Zen 4): 82-83 GFLOP/s per core on OpenBLAS
/// against 91-104 on oneDNN, h16-c64 training +2-4%; but the res/skip
/// projections over all 15,360 columns ran slower on oneDNN (70-74 against
/// 82-88), hence the bound on N, and with oneDNN held to AVX2
/// (`DNNL_MAX_CPU_ISA=AVX2`) the whole step lost 0.7%, hence AVX-512 only.
/// Follows `WAVEFLOW_WEIGHT_GRADIENTS` like the weight gradients.
public enum FreshOutputs {
    /// Whether oneDNN runs AVX-512 here: the CPU has it and DNNL_MAX_CPU_ISA does not hold oneDNN below it.
    public static let avx512: Bool = {
        #if arch(x86_64)
        let level = VectorKernels.level
        guard level == .avx512 || level == .avx512bf16 else { return false }
        let cap = ProcessInfo.processInfo.environment["DNNL_MAX_CPU_ISA"]?.uppercased()
        return cap == nil || cap!.contains("AVX512") || cap!.contains("AMX") || cap == "ALL"
        #else
        return false
        #endif
    }()

    /// Whether op(A) [m, k] x B [k, n] into a fresh C is such a product (on this CPU).
    @inlinable
    public static func shape(transB: Bool, m: Int, n: Int, k: Int, accumulate: Bool) -> Bool {
        !accumulate && !transB && m >= 16 && k <= 128 && (2048 ..< 8192).contains(n) && avx512
    }
}

extension Double: Real {
    @inlinable public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                       alpha: Double, a: UnsafePointer<Double>, lda: Int,
                                       b: UnsafePointer<Double>, ldb: Int,
                                       beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inlinable public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    @inlinable public static func log(_ x: Double) -> Double { Foundation.log(x) }
    @inlinable public static func tanh(_ x: Double) -> Double { Foundation.tanh(x) }

    // The naive twins: plain dgemm, libm gates, loop sums, native operands.
    public static func product(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                               a: UnsafePointer<Double>, a16: UnsafePointer<UInt16>?, lda: Int,
                               b: UnsafePointer<Double>, b16: UnsafePointer<UInt16>?, ldb: Int,
                               accumulate: Bool, c: UnsafeMutablePointer<Double>, ldc: Int) {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb,
             beta: accumulate ? 1 : 0, c: c, ldc: ldc)
    }
    public static func operandCopy(_ context: ComputeContext, of values: UnsafePointer<Double>, count: Int,
                                   forProductsOf sizes: [Int]) -> UnsafeMutablePointer<UInt16>? { nil }
    public static func withOperands<V: OperandsVisitor>(_ context: ComputeContext, forProductsOf sizes: [Int], _ visitor: V)
        -> V.Result where V.Scalar == Double { visitor.visit(NativeOperands<Double>.self) }
    public static func gateForward(_ y: UnsafePointer<Double>, _ g: UnsafeMutablePointer<Double>, channels: Int, n: Int) {
        Gate.forwardNaive(y, g, channels: channels, n: n)
    }
    public static func gateForward(_ y: UnsafePointer<Double>, _ g: UnsafeMutablePointer<Double>, channels: Int, n: Int,
                                   bias: UnsafePointer<Double>) {
        Gate.forwardNaive(y, g, channels: channels, n: n, bias: bias)
    }
    public static func gateForward(_ y: UnsafePointer<Double>, _ g: UnsafeMutablePointer<Double>, kept: UnsafeMutablePointer<Double>,
                                   channels: Int, n: Int) {
        Gate.forwardNaive(y, g, kept: kept, channels: channels, n: n)
    }
    public static func gateBackward(kept: UnsafeMutablePointer<Double>, dg: UnsafePointer<Double>, channels c: Int, n: Int) {
        Threads.parallelFor(c) { ch in Gate.backwardFromKept(kept + ch * n, dg + ch * n, count: n, total: c * n) }
    }
    public static func gateBackward(y: UnsafePointer<Double>, dg: UnsafePointer<Double>, g: UnsafeMutablePointer<Double>,
                                    dy: UnsafeMutablePointer<Double>, channels c: Int, n: Int) {
        gateForward(y, g, kept: dy, channels: c, n: n)
        gateBackward(kept: dy, dg: dg, channels: c, n: n)
    }
    public static func accumulateRowSums(_ x: UnsafePointer<Double>, into out: UnsafeMutablePointer<Double>, rows: Int, cols: Int) {
        accumulateRowSumsNaive(x, into: out, rows: rows, cols: cols)
    }
    public static func segmentProduct(_ a: PackedWeights<Double>, firstColumn kFirst: Int, segments: UnsafePointer<UnsafePointer<Double>>,
                                      count: Int, segmentRows segK: Int, ldb: Int, n: Int, c: UnsafeMutablePointer<Double>, ldc: Int,
                                      accumulate: Bool) {
        segmentProductBLAS(a, firstColumn: kFirst, segments: segments, count: count, segmentRows: segK, ldb: ldb, n: n, c: c, ldc: ldc,
                           accumulate: accumulate)
    }
}

extension Real {
    /// `gemm` on arrays (convenience for non-hot paths).
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Self, a: [Self], lda: Int, b: [Self], ldb: Int,
                            beta: Self, c: inout [Self], ldc: Int) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                         a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                         beta: beta, c: pc.baseAddress!, ldc: ldc)
                }
            }
        }
    }

    /// The naive twin of `gemm`: three loops, the oracle for tests.
    public static func gemmNaive(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                 alpha: Self, a: [Self], lda: Int, b: [Self], ldb: Int,
                                 beta: Self, c: inout [Self], ldc: Int) {
        for i in 0..<m {
            for j in 0..<n {
                var s: Self = 0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += av * bv
                }
                c[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * ldc + j])
            }
        }
    }
}

/// An array of `count` values with unspecified contents, for buffers that
/// are written in full before they are read (saves the zero fill).
@inlinable func uninitializedArray<T: Real>(_: T.Type, _ count: Int) -> [T] {
    [T](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
}
