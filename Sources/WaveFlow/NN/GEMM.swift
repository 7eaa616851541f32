import Foundation
import COpenBLAS

/// A floating-point scalar the layers compute in: Float32 for speed, Float64
/// for the finite-difference gradient tests. Both go through BLAS.
public protocol Real: BinaryFloatingPoint, Codable, Sendable where Self.RawSignificand: FixedWidthInteger {
    /// C = alpha * op(A) * op(B) + beta * C, row-major (cblas ?gemm).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     alpha: Self, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
}

extension Float: Real {
    @inlinable public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                       alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                       b: UnsafePointer<Float>, ldb: Int,
                                       beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        // bf16 products (oneDNN) when chosen, for all but the smallest shapes.
        if alpha == 1, beta == 0 || beta == 1, BF16Operands.chosen(m, n, k), case .success(let dnnl) = OneDNN.bf16,
           (try? dnnl.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                           beta: beta, c: c, ldc: ldc)) != nil {
            return
        }
        // Weight gradients in Float32 on oneDNN's f32 matmul where present.
        if alpha == 1, beta == 0 || beta == 1, WeightGradients.onOneDNN(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb),
           case .success(let dnnl) = OneDNN.shared,
           (try? dnnl.gemmF32(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                              accumulate: beta == 1, c: c, ldc: ldc)) != nil {
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inlinable public static func exp(_ x: Float) -> Float { Foundation.expf(x) }
    @inlinable public static func log(_ x: Float) -> Float { Foundation.logf(x) }
    @inlinable public static func tanh(_ x: Float) -> Float { Foundation.tanhf(x) }
}

/// Which Float32 products run on oneDNN's f32 matmul instead of OpenBLAS:
/// the weight gradients, dW [m, n] += dOut [m, K] x input [n, K]^T with a
/// long reduction over positions (K >= 4096). Measured here (Zen 4, one
/// thread, K = 30,720): oneDNN 85-94 GFLOP/s against OpenBLAS's 50-79 on
/// every such shape of h16-c32 and h16-c64 (64 x 96, 64 x 80, 64 x 32,
/// 128 x 192, 128 x 80, 128 x 64), while OpenBLAS stays faster on the
/// forward and input-gradient shapes (70-88 against 57-73). With oneDNN
/// held to AVX2 (`DNNL_MAX_CPU_ISA=AVX2`, as on a CPU without AVX-512) it
/// still ran these shapes at 79-95 against OpenBLAS's Haswell kernel's
/// 50-77, so this applies wherever libdnnl2 loads (`OneDNN.shared`, any
/// x86-64), bf16 CPU or not. `WAVEFLOW_WEIGHT_GRADIENTS=openblas` keeps
/// them on OpenBLAS.
public enum WeightGradients {
    /// Whether such products may use oneDNN (set from the environment once).
    nonisolated(unsafe) public static var useOneDNN: Bool = {
        ProcessInfo.processInfo.environment["WAVEFLOW_WEIGHT_GRADIENTS"] != "openblas"
    }()

    /// Whether this Float32 product is a weight gradient that oneDNN should
    /// run: both operands dense along the reduction (lda = ldb = K). On a
    /// window of longer rows (the convolution's shifted taps) oneDNN falls
    /// back from its brgemm kernels to `gemm:jit`, 2.4x slower per FLOP than
    /// on the dense product beside it (DNNL_VERBOSE), and slower than OpenBLAS.
    @inlinable
    public static func onOneDNN(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int) -> Bool {
        useOneDNN && !transA && transB && k >= 4096 && m >= 16 && n >= 16 && lda == k && ldb == k
    }

    /// Whether weight gradients run on oneDNN in this process (allowed and loaded).
    public static var runOnOneDNN: Bool {
        guard useOneDNN, case .success = OneDNN.shared else { return false }
        return true
    }

    /// For `waveflow info` and the training log.
    public static var description: String { runOnOneDNN ? "oneDNN f32 matmul" : "OpenBLAS" }
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
