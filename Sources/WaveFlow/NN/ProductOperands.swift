import COpenBLAS

// The element type in which synthesis keeps the operands of its matrix
// products. With Float32 (or Float64) products the operands are the values
// themselves; with bf16 products they are stored already rounded, so that a
// cached row is rounded once when it is written, not once per product that
// reads it, and the weights once per flow.

/// How the operands of matrix products are stored and multiplied: products
/// read `Element`s and accumulate and write `Scalar`s.
public protocol ProductOperands {
    associatedtype Scalar: Real
    associatedtype Element
    /// The element whose value is 0.
    static var zero: Element { get }
    /// dst[i] = src[i] as an operand, for i in 0..<count.
    static func convert(_ src: UnsafePointer<Scalar>, count: Int, into dst: UnsafeMutablePointer<Element>)
    /// C [m, n] = op(A) op(B) (+ C when `accumulate`), row-major with row
    /// strides lda, ldb, ldc as stored (cblas_sgemm's conventions).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Element>, lda: Int,
                     b: UnsafePointer<Element>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Scalar>, ldc: Int)
}

extension ProductOperands {
    /// C [m, n] = A [m, k] x B [k, n] (+ C when `accumulate`).
    @inline(__always)
    static func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Element>, lda: Int, b: UnsafePointer<Element>, ldb: Int,
                     accumulate: Bool, c: UnsafeMutablePointer<Scalar>, ldc: Int) {
        gemm(transA: false, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, accumulate: accumulate, c: c, ldc: ldc)
    }

    /// `count` Scalars as operands in new memory (the caller deallocates), or
    /// `src` itself when Element is Scalar.
    static func operands(of src: UnsafePointer<Scalar>, count: Int) -> (UnsafePointer<Element>, owned: Bool) {
        if Element.self == Scalar.self { return (UnsafeRawPointer(src).assumingMemoryBound(to: Element.self), false) }
        let dst = UnsafeMutablePointer<Element>.allocate(capacity: count)
        convert(src, count: count, into: dst)
        return (UnsafePointer(dst), true)
    }
}

/// Operands as the values themselves; products by `T.gemm` (OpenBLAS).
public enum NativeOperands<T: Real>: ProductOperands {
    public typealias Scalar = T
    public typealias Element = T
    public static var zero: T { 0 }
    @inline(__always)
    public static func convert(_ src: UnsafePointer<T>, count: Int, into dst: UnsafeMutablePointer<T>) {
        dst.update(from: src, count: count)
    }
    @inline(__always)
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int,
                            b: UnsafePointer<T>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<T>, ldc: Int) {
        T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb,
               beta: accumulate ? 1 : 0, c: c, ldc: ldc)
    }
}

/// Operands as bf16 bit patterns (rounded to nearest even); products on
/// oneDNN with Float32 accumulation. Use only when `OneDNN.bf16` succeeded.
public enum BF16Operands: ProductOperands {
    /// Whether products of these sizes take bf16 operands now: bf16 chosen,
    /// oneDNN loaded, and every size at least 16 (smaller products gain
    /// nothing and stay on OpenBLAS).
    @inlinable
    public static func chosen(_ sizes: Int...) -> Bool { chosen(sizes) }

    @inlinable
    public static func chosen(_ sizes: [Int]) -> Bool {
        guard matrixPrecision == .bf16, sizes.allSatisfy({ $0 >= 16 }), case .success = OneDNN.bf16 else { return false }
        return true
    }

    public typealias Scalar = Float
    public typealias Element = UInt16
    public static var zero: UInt16 { 0 }
    @inline(__always)
    public static func convert(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) {
        OneDNN.toBF16(src, rows: 1, cols: count, ld: count, into: dst)
    }
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<UInt16>, lda: Int,
                            b: UnsafePointer<UInt16>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if case .success(let dnnl) = OneDNN.bf16,
           (try? dnnl.gemmBF16(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                               accumulate: accumulate, c: c, ldc: ldc)) != nil {
            return
        }
        // oneDNN refused the shape (not seen): the same rounded operands,
        // widened exactly to Float32, on OpenBLAS.
        let (aRows, aCols) = transA ? (k, m) : (m, k), (bRows, bCols) = transB ? (n, k) : (k, n)
        let a32 = OneDNN.fromBF16(a, rows: aRows, cols: aCols, ld: lda), b32 = OneDNN.fromBF16(b, rows: bRows, cols: bCols, ld: ldb)
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a32, Int32(aCols), b32, Int32(bCols), accumulate ? 1 : 0, c, Int32(ldc))
    }
}

extension OneDNN {
    /// bf16 bit patterns [rows, cols] (row stride ld) widened to Float32, dense.
    static func fromBF16(_ src: UnsafePointer<UInt16>, rows: Int, cols: Int, ld: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows { for j in 0..<cols { out[r * cols + j] = Float(bitPattern: UInt32(src[r * ld + j]) << 16) } }
        return out
    }
}

/// A bf16 copy of `count` values that several products will read, when
/// products of at least `sizes` run in bf16 (T is Float, bf16 chosen);
/// nil otherwise. The caller deallocates it.
func bf16Copy<T: Real>(of values: UnsafePointer<T>, count: Int, forProductsOf sizes: Int...) -> UnsafeMutablePointer<UInt16>? {
    guard T.self == Float.self, BF16Operands.chosen(sizes) else { return nil }
    let copy = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
    BF16Operands.convert(asFloat(values), count: count, into: copy)
    return copy
}

/// `T.gemm` (alpha 1, beta 0 or 1) where either operand may come with a bf16
/// copy made by `bf16Copy` (dense, same layout): when the product runs in
/// bf16 the copy is used instead of rounding that operand again.
func gemm<T: Real>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                   a: UnsafePointer<T>, a16: UnsafePointer<UInt16>? = nil, lda: Int,
                   b: UnsafePointer<T>, b16: UnsafePointer<UInt16>? = nil, ldb: Int,
                   accumulate: Bool, c: UnsafeMutablePointer<T>, ldc: Int) {
    if T.self == Float.self, a16 != nil || b16 != nil, BF16Operands.chosen(m, n, k), case .success(let dnnl) = OneDNN.bf16,
       (try? dnnl.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: asFloat(a), a16: a16, lda: lda,
                       b: asFloat(b), b16: b16, ldb: ldb, beta: accumulate ? 1 : 0, c: asFloat(c), ldc: ldc)) != nil {
        return
    }
    T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb,
           beta: accumulate ? 1 : 0, c: c, ldc: ldc)
}
