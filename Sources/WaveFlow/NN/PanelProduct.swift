import Foundation
#if arch(x86_64)
import CKernels
#endif

/// A weight matrix packed once for many products with stacked row segments
/// (`Real.segmentProduct`): C [m, n] = A[:, first segments] x [B_0; B_1; ...],
/// where the B_s [segK, n] need not be adjacent (WaveFlow synthesis: a
/// layer's three cached rows, transformed for Winograd). The Float32 kernel
/// (Sources/CKernels/panel_gemm.h, AVX2 or AVX-512) reads A from panels
/// of 6 rows packed here and B in place (see panel_gemm.h for when it copies
/// B's column panels); OpenBLAS packs both operands on every call,
/// which cost 12% of synthesis on these 64-128 x few-hundred products.
/// `plain` keeps A as given: the Float64 twin and non-x86 machines use it
/// with one BLAS product per segment.
public final class PackedWeights<T: Real>: @unchecked Sendable {
    /// Rows m and columns k of A.
    public let rows: Int, columns: Int
    /// A [m, k], row-major.
    public let plain: UnsafeMutablePointer<T>
    /// ap[(p * k + kk) * 6 + i] = A[6p + i, kk], zero past row m (Float32 only).
    public let panels: UnsafeMutablePointer<Float>?

    /// Packs A [rows, columns] (row stride `lda`).
    public init(_ a: UnsafePointer<T>, rows m: Int, columns k: Int, lda: Int) {
        (rows, columns) = (m, k)
        plain = .allocate(capacity: m * k)
        for r in 0..<m { (plain + r * k).update(from: a + r * lda, count: k) }
        if T.self == Float.self {
            let nPanels = (m + 5) / 6
            let p = UnsafeMutablePointer<Float>.allocate(capacity: nPanels * k * 6)
            p.initialize(repeating: 0, count: nPanels * k * 6)
            for r in 0..<m { for kk in 0..<k { p[((r / 6) * k + kk) * 6 + r % 6] = Float(a[r * lda + kk]) } }
            panels = p
        } else {
            panels = nil
        }
    }

    deinit { plain.deallocate(); panels?.deallocate() }
}

extension VectorKernels {
    /// wf_panel_gemm for this CPU; false (nothing done) where no C kernel runs.
    @inline(__always)
    static func panelProduct(_ ap: UnsafePointer<Float>, m: Int, kTotal: Int, kFirst: Int, b: UnsafePointer<UnsafePointer<Float>?>,
                             segments: Int, segK: Int, ldb: Int, n: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                             accumulate: Bool, level: Level = level) -> Bool {
        let acc: Int32 = accumulate ? 1 : 0
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_panel_gemm_avx512(ap, m, kTotal, kFirst, b, segments, segK, ldb, n, c, ldc, acc); return true
        case .avx2: wf_panel_gemm_avx2(ap, m, kTotal, kFirst, b, segments, segK, ldb, n, c, ldc, acc); return true
        #endif
        default: return false
        }
    }
}

extension Real {
    /// The naive twin of `segmentProduct`: one BLAS product per segment.
    static func segmentProductBLAS(_ a: PackedWeights<Self>, firstColumn kFirst: Int, segments b: UnsafePointer<UnsafePointer<Self>>,
                                   count: Int, segmentRows segK: Int, ldb: Int, n: Int,
                                   c: UnsafeMutablePointer<Self>, ldc: Int, accumulate: Bool) {
        for s in 0..<count {
            gemm(transA: false, transB: false, m: a.rows, n: n, k: segK, alpha: 1, a: a.plain + kFirst + s * segK, lda: a.columns,
                 b: b[s], ldb: ldb, beta: s == 0 && !accumulate ? 0 : 1, c: c, ldc: ldc)
        }
    }

    /// C [m, n] = A B (+ C when `accumulate`) for one B [a.columns, n]: `segmentProduct` with one segment.
    static func packedProduct(_ a: PackedWeights<Self>, b: UnsafePointer<Self>, ldb: Int, n: Int,
                              c: UnsafeMutablePointer<Self>, ldc: Int, accumulate: Bool) {
        withUnsafeTemporaryAllocation(of: UnsafePointer<Self>.self, capacity: 1) { p in
            p[0] = b
            segmentProduct(a, firstColumn: 0, segments: UnsafePointer(p.baseAddress!), count: 1, segmentRows: a.columns, ldb: ldb,
                           n: n, c: c, ldc: ldc, accumulate: accumulate)
        }
    }
}
