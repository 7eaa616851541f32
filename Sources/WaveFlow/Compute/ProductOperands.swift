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
    /// `context` decides the backend of Float32 products (`Real.product`).
    static func gemm(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Element>, lda: Int, b: UnsafePointer<Element>, ldb: Int,
                     accumulate: Bool, c: UnsafeMutablePointer<Scalar>, ldc: Int)
}

extension ProductOperands {
    /// C [m, n] = A [m, k] x B [k, n] (+ C when `accumulate`).
    @inline(__always)
    static func gemm(_ context: ComputeContext, m: Int, n: Int, k: Int, a: UnsafePointer<Element>, lda: Int,
                     b: UnsafePointer<Element>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Scalar>, ldc: Int) {
        gemm(context, transA: false, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
             accumulate: accumulate, c: c, ldc: ldc)
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

/// Operands as the values themselves; products by `T.product`.
public enum NativeOperands<T: Real>: ProductOperands {
    public typealias Scalar = T
    public typealias Element = T
    public static var zero: T { 0 }
    @inline(__always)
    public static func convert(_ src: UnsafePointer<T>, count: Int, into dst: UnsafeMutablePointer<T>) {
        dst.update(from: src, count: count)
    }
    @inline(__always)
    public static func gemm(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                            accumulate: Bool, c: UnsafeMutablePointer<T>, ldc: Int) {
        T.product(context, transA: transA, transB: transB, m: m, n: n, k: k, a: a, a16: nil, lda: lda, b: b, b16: nil, ldb: ldb,
                  accumulate: accumulate, c: c, ldc: ldc)
    }
}

/// Operands as bf16 bit patterns (rounded to nearest even); products on
/// oneDNN with Float32 accumulation. Chosen by `Float.withOperands` when
/// the context asks for bf16 and `OneDNN.bf16` succeeded.
public enum BF16Operands: ProductOperands {
    public typealias Scalar = Float
    public typealias Element = UInt16
    public static var zero: UInt16 { 0 }
    @inline(__always)
    public static func convert(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) {
        OneDNN.toBF16(src, rows: 1, cols: count, ld: count, into: dst)
    }
    public static func gemm(_ context: ComputeContext, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                            accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) {
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

