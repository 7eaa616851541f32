import Foundation
#if arch(x86_64)
import CKernels
#endif

/// Winograd's minimal filtering F(4, 3) (Lavin and Gray, "Fast Algorithms
/// for Convolutional Neural Networks", 2016) for the kernel-3 convolutions
/// along the width: 4 outputs of a 3-tap filter from 6 products instead of
/// 12. A convolution [Cout, Cin x 3] over N columns becomes 6 products
/// [Cout, Cin] x [Cin, N/4] between transformed weights `U` and transformed
/// inputs `V`, whose results an output transform turns into the 4 outputs
/// of each tile: half the multiply-adds of the direct products.
///
/// With dilation d, a tile holds 4 outputs d columns apart: tile t = q*d + rho
/// of a block of columns j0 ..< j0 + n gives the block's columns
/// rho + (4q + k) d, k = 0 ... 3, from inputs rho + (4q - 1 + i) d,
/// i = 0 ... 5 (zero outside the row). A block has Q = ceil(n / 4d) tiles
/// per residue rho, so its last tiles may reach past its end; those outputs
/// are computed and dropped (`Tiling.waste`).
///
/// The points are 0, 1, -1, 2, -2 and infinity; in Float32 the outputs
/// differ from the direct convolution's by a few units of rounding of the
/// largest term (measured in the tests against the direct products).
///
/// With Float32 values on x86-64 the four transforms run as C kernels
/// (Sources/CKernels/winograd_kernels.h, AVX2 or AVX-512 as
/// `VectorKernels.level` picks): Swift did not vectorise these loops. The
/// Swift loops here are the twins the tests compare them with, and the
/// Float64 path.
public enum WidthWinograd {
    /// Transform points: products per tile.
    public static let points = 6

    /// The tiles of one column block for one dilation.
    public struct Tiling: Equatable, Sendable {
        /// Width dilation d.
        public let dilation: Int
        /// Columns of the block.
        public let columns: Int
        /// Tiles per residue class, Q = ceil(columns / 4d).
        public let perResidue: Int

        public init(dilation: Int, columns: Int) {
            precondition(dilation >= 1 && columns >= 1)
            (self.dilation, self.columns) = (dilation, columns)
            perResidue = (columns + 4 * dilation - 1) / (4 * dilation)
        }

        /// Tiles of the block, Q * d: the products' width.
        public var tiles: Int { perResidue * dilation }
        /// The row stride for values per tile: `tiles` rounded up to 16 times
        /// an odd number. With a power-of-two stride (256 tiles for 1024
        /// columns) the rows of a product's column panel fell into a few
        /// cache sets and missed L1.
        public var rowStride: Int { let v = (tiles + 15) / 16; return 16 * (v % 2 == 0 ? v + 1 : v) }
        /// Outputs computed and dropped, as a fraction of the block: 4Qd / n - 1.
        public var waste: Double { Double(4 * tiles) / Double(columns) - 1 }
        /// The share of the direct convolution's multiply-adds the transformed
        /// products perform: 6 per tile against 3 per output, (1 + waste) / 2.
        public var macShare: Double { Double(4 * tiles) / Double(columns) / 2 }
        /// Values per channel of the phase-split input (`transformInput`'s scratch): 4 (Q + 2) d.
        public var splitCount: Int { 4 * (perResidue + 2) * dilation }
    }

    /// Whether a block of `columns` computes its dilation-`d` convolution
    /// with fewer multiply-adds this way: at most 60% more outputs than the
    /// block's (4/5 of the direct multiply-adds at worst, which pays for
    /// the transforms). 2 s of h16 in 689-column blocks computes 49% more
    /// for dilation 128; 1024-column blocks none.
    public static func pays(dilation d: Int, columns: Int) -> Bool {
        Tiling(dilation: d, columns: columns).waste <= 0.6
    }

    /// The kernel transform, per output and input channel: u_i = sum_k G[i][k] g_k.
    /// G for the points 0, 1, -1, 2, -2, infinity.
    static let kernelTransform: [[Double]] = [
        [1.0 / 4, 0, 0],
        [-1.0 / 6, -1.0 / 6, -1.0 / 6],
        [-1.0 / 6, 1.0 / 6, -1.0 / 6],
        [1.0 / 24, 1.0 / 12, 1.0 / 6],
        [1.0 / 24, -1.0 / 12, 1.0 / 6],
        [0, 0, 1],
    ]

    /// U [6][rows, cin] from the 3 taps of a kernel: tap k of output row o and
    /// input channel c at `taps[k * tapStride + o * ld + c * channelStride]`.
    /// The transform runs in Float64, then rounds once.
    public static func transformKernel<T: Real>(_ taps: UnsafePointer<T>, tapStride: Int, ld: Int, channelStride: Int = 1,
                                               rows: Int, cin: Int, into u: UnsafeMutablePointer<T>, pointStride: Int, ldu: Int) {
        // G flat [6 * 3] (row i, column k), outside the loops.
        let g = kernelTransform.flatMap { $0 }
        g.withUnsafeBufferPointer { g in
            for o in 0..<rows {
                for i in 0..<points {
                    let (gi0, gi1, gi2) = (g[3 * i], g[3 * i + 1], g[3 * i + 2]), out = u + i * pointStride + o * ldu
                    for c in 0..<cin {
                        let t = taps + o * ld + c * channelStride
                        out[c] = T(gi0 * Double(t[0]) + gi1 * Double(t[tapStride]) + gi2 * Double(t[2 * tapStride]))
                    }
                }
            }
        }
    }

    /// The adjoint of `transformKernel` for `taps` kernels side by side:
    /// dW[o, c, t, k] += sum_i G[i][k] dU_t[i][o, c], with dU [taps][6][rows,
    /// cin] and dW in PyTorch's layout [rows, cin, taps, 3]. Sums in Float64
    /// (per output, over i in order), vectorised over c.
    static func accumulateKernelGradient<T: Real>(_ du: UnsafePointer<T>, taps: Int, rows: Int, cin: Int,
                                                  into dw: UnsafeMutablePointer<T>) {
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 3 * cin) { sums in
            let acc = sums.baseAddress!
            for t in 0..<taps { for o in 0..<rows {
                acc.update(repeating: 0, count: 3 * cin)
                for i in 0..<points {
                    let src = du + ((t * points + i) * rows + o) * cin
                    for k in 0..<3 where kernelTransform[i][k] != 0 {
                        let g = kernelTransform[i][k], dst = acc + k * cin
                        for c in 0..<cin { dst[c] += g * Double(src[c]) }
                    }
                }
                for c in 0..<cin { for k in 0..<3 { dw[((o * cin + c) * taps + t) * 3 + k] += T(acc[k * cin + c]) } }
            } }
        }
    }

    /// V [6][C, tiles] (point i, channel c at `v[i * pointStride + c * ldv + t]`)
    /// from columns j0 ..< j0 + tiling.columns of `row` [C, width] (channel
    /// stride `rowStride`), zero outside 0 ..< width. `split`: scratch of
    /// `tiling.splitCount` values.
    ///
    /// Per channel the row is first split into 4 phases, phase p holding the
    /// inputs 4q + p (in units of d) for q = -1 ... Q: then each of a tile's
    /// 6 inputs is a contiguous run over the tiles, and the transform
    /// vectorises over them.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public static func transformInput<T: Real>(_ row: UnsafePointer<T>, channels: Int, rowStride: Int, width: Int, start j0: Int,
                                              tiling: Tiling, into v: UnsafeMutablePointer<T>, pointStride: Int, ldv: Int,
                                              split: UnsafeMutablePointer<T>, level: VectorKernels.Level = VectorKernels.level) {
        let d = tiling.dilation, q = tiling.perResidue, nt = tiling.tiles, phase = (q + 2) * d
        #if arch(x86_64)
        if T.self == Float.self, level != .swift {
            let kernel = level == .avx2 ? wf_wino_input_avx2 : wf_wino_input_avx512
            kernel(floats(row), channels, rowStride, width, j0, d, q, floats(v), pointStride, ldv, floats(split))
            return
        }
        #endif
        for c in 0..<channels {
            let src = row + c * rowStride
            // split[p * phase + (qq) d + rho] = x[j0 + rho + (4 (qq - 1) + p) d]
            for qq in 0 ..< q + 2 {
                for p in 0..<4 {
                    let start = j0 + (4 * (qq - 1) + p) * d
                    let dst = split + p * phase + qq * d
                    if start >= 0 && start + d <= width {
                        // Inside the row (all but the edges): short runs by hand, long ones by memcpy.
                        if d < 16 { for rho in 0..<d { dst[rho] = src[start + rho] } } else { dst.update(from: src + start, count: d) }
                        continue
                    }
                    let lo = max(0, -start), hi = min(d, width - start)
                    if lo >= hi { dst.update(repeating: 0, count: d); continue }
                    if lo > 0 { dst.update(repeating: 0, count: lo) }
                    dst.advanced(by: lo).update(from: src + start + lo, count: hi - lo)
                    if hi < d { dst.advanced(by: hi).update(repeating: 0, count: d - hi) }
                }
            }
            // d0 = phase 3 at t, d1 ... d4 = phases 0 ... 3 at t + d, d5 = phase 0 at t + 2d.
            let p0 = split, p1 = split + phase, p2 = split + 2 * phase, p3 = split + 3 * phase
            let out = v + c * ldv
            let v0 = out, v1 = out + pointStride, v2 = out + 2 * pointStride
            let v3 = out + 3 * pointStride, v4 = out + 4 * pointStride, v5 = out + 5 * pointStride
            for t in 0..<nt {
                let x0 = p3[t], x1 = p0[t + d], x2 = p1[t + d], x3 = p2[t + d], x4 = p3[t + d], x5 = p0[t + 2 * d]
                v0[t] = 4 * x0 - 5 * x2 + x4
                v1[t] = x3 + x4 - 4 * (x1 + x2)
                v2[t] = x4 - x3 + 4 * (x1 - x2)
                v3[t] = x4 - x2 + 2 * (x3 - x1)
                v4[t] = x4 - x2 + 2 * (x1 - x3)
                v5[t] = 4 * x1 - 5 * x3 + x5
            }
        }
    }

    /// y[o, j] += the outputs of the tiles, from the products M [6][rows, tiles]
    /// (point i, row o at `m[i * pointStride + o * ldm + t]`) into `y`
    /// [rows, tiling.columns] (row stride `ldy`); outputs past the block
    /// are dropped. `scratch`: 4 * tiling.tiles values.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public static func accumulateOutput<T: Real>(_ m: UnsafePointer<T>, pointStride: Int, ldm: Int, rows: Int, tiling: Tiling,
                                                into y: UnsafeMutablePointer<T>, ldy: Int, scratch: UnsafeMutablePointer<T>,
                                                level: VectorKernels.Level = VectorKernels.level) {
        let d = tiling.dilation, nt = tiling.tiles, n = tiling.columns
        #if arch(x86_64)
        if T.self == Float.self, level != .swift {
            let kernel = level == .avx2 ? wf_wino_output_avx2 : wf_wino_output_avx512
            kernel(floats(m), pointStride, ldm, rows, d, tiling.perResidue, n, floats(y), ldy, floats(scratch))
            return
        }
        #endif
        let y0 = scratch, y1 = scratch + nt, y2 = scratch + 2 * nt, y3 = scratch + 3 * nt
        for o in 0..<rows {
            let m0 = m + o * ldm, m1 = m0 + pointStride, m2 = m0 + 2 * pointStride
            let m3 = m0 + 3 * pointStride, m4 = m0 + 4 * pointStride, m5 = m0 + 5 * pointStride
            let dst = y + o * ldy
            if d == 1 {
                // Tile t is columns 4t ... 4t + 3: straight into y.
                let full = n / 4
                for t in 0..<full {
                    let a = m1[t] + m2[t], b = m1[t] - m2[t], e = m3[t] + m4[t], f = m3[t] - m4[t]
                    dst[4 * t] += m0[t] + a + e
                    dst[4 * t + 1] += b + 2 * f
                    dst[4 * t + 2] += a + 4 * e
                    dst[4 * t + 3] += b + 8 * f + m5[t]
                }
                if full < nt {
                    let t = full
                    let a = m1[t] + m2[t], b = m1[t] - m2[t], e = m3[t] + m4[t], f = m3[t] - m4[t]
                    let r: [T] = [m0[t] + a + e, b + 2 * f, a + 4 * e, b + 8 * f + m5[t]]
                    for k in 0 ..< n - 4 * t { dst[4 * t + k] += r[k] }
                }
                continue
            }
            for t in 0..<nt {
                let a = m1[t] + m2[t], b = m1[t] - m2[t], e = m3[t] + m4[t], f = m3[t] - m4[t]
                y0[t] = m0[t] + a + e
                y1[t] = b + 2 * f
                y2[t] = a + 4 * e
                y3[t] = b + 8 * f + m5[t]
            }
            // Tile q*d + rho, output k is column (4q + k) d + rho: runs of d.
            for q in 0 ..< tiling.perResidue {
                for k in 0..<4 {
                    let base = (4 * q + k) * d, count = min(d, n - base)
                    if count <= 0 { break }
                    let src = scratch + k * nt + q * d, out = dst + base
                    for rho in 0..<count { out[rho] += src[rho] }
                }
            }
        }
    }

    // MARK: - Gradients (training)

    /// The output transform's transpose: dM [6][rows, tiles] (point i, row o
    /// at `dm[i * pointStride + o * ldm + t]`) from the gradient of the
    /// outputs `dy` [rows, tiling.columns] (row stride `ldy`); outputs past
    /// the block have no gradient. `scratch`: 4 * tiling.tiles values.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public static func outputGradient<T: Real>(_ dy: UnsafePointer<T>, ldy: Int, rows: Int, tiling: Tiling,
                                              into dm: UnsafeMutablePointer<T>, pointStride: Int, ldm: Int,
                                              scratch: UnsafeMutablePointer<T>, level: VectorKernels.Level = VectorKernels.level) {
        let d = tiling.dilation, nt = tiling.tiles, n = tiling.columns
        #if arch(x86_64)
        if T.self == Float.self, level != .swift {
            let kernel = level == .avx2 ? wf_wino_output_grad_avx2 : wf_wino_output_grad_avx512
            kernel(floats(dy), ldy, rows, d, tiling.perResidue, n, floats(dm), pointStride, ldm, floats(scratch))
            return
        }
        #endif
        let y0 = scratch, y1 = scratch + nt, y2 = scratch + 2 * nt, y3 = scratch + 3 * nt
        for o in 0..<rows {
            let src = dy + o * ldy
            // y_k[q d + rho] = dy[(4q + k) d + rho], 0 past the block.
            for q in 0 ..< tiling.perResidue {
                for k in 0..<4 {
                    let base = (4 * q + k) * d, count = max(0, min(d, n - base)), dst = scratch + k * nt + q * d
                    if d == 1 { dst[0] = count > 0 ? src[base] : 0; continue }
                    if count > 0 { dst.update(from: src + base, count: count) }
                    if count < d { (dst + count).update(repeating: 0, count: d - count) }
                }
            }
            let m0 = dm + o * ldm, m1 = m0 + pointStride, m2 = m0 + 2 * pointStride
            let m3 = m0 + 3 * pointStride, m4 = m0 + 4 * pointStride, m5 = m0 + 5 * pointStride
            for t in 0..<nt {
                let a = y0[t] + y2[t], b = y1[t] + y3[t], e = y0[t] + 4 * y2[t], f = 2 * y1[t] + 8 * y3[t]
                m0[t] = y0[t]
                m1[t] = a + b
                m2[t] = a - b
                m3[t] = e + f
                m4[t] = e - f
                m5[t] = y3[t]
            }
        }
    }

    /// The input transform's transpose: dx [C, width] (row stride
    /// `rowStride`) += the gradient reaching columns j0 ..< j0 + tiling.columns
    /// and their halo from dV [6][C, tiles] (as `transformInput` writes V);
    /// columns outside 0 ..< width get none. `split`: `tiling.splitCount`
    /// values; `scratch`: 6 * tiling.tiles values.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public static func inputGradient<T: Real>(_ dv: UnsafePointer<T>, pointStride: Int, ldv: Int, channels: Int, tiling: Tiling,
                                             into dx: UnsafeMutablePointer<T>, rowStride: Int, width: Int, start j0: Int,
                                             split: UnsafeMutablePointer<T>, scratch: UnsafeMutablePointer<T>,
                                             level: VectorKernels.Level = VectorKernels.level) {
        let d = tiling.dilation, q = tiling.perResidue, nt = tiling.tiles, phase = (q + 2) * d
        #if arch(x86_64)
        if T.self == Float.self, level != .swift {
            let kernel = level == .avx2 ? wf_wino_input_grad_avx2 : wf_wino_input_grad_avx512
            kernel(floats(dv), pointStride, ldv, channels, d, q, floats(dx), rowStride, width, j0, floats(split), floats(scratch))
            return
        }
        #endif
        let g0 = scratch, g1 = scratch + nt, g2 = scratch + 2 * nt, g3 = scratch + 3 * nt, g4 = scratch + 4 * nt, g5 = scratch + 5 * nt
        for c in 0..<channels {
            let v0 = dv + c * ldv, v1 = v0 + pointStride, v2 = v0 + 2 * pointStride
            let v3 = v0 + 3 * pointStride, v4 = v0 + 4 * pointStride, v5 = v0 + 5 * pointStride
            // The gradient of each tile's 6 inputs (B times dV).
            for t in 0..<nt {
                let s12 = v1[t] + v2[t], s34 = v3[t] + v4[t]
                g0[t] = 4 * v0[t]
                g1[t] = 4 * (v2[t] - v1[t] + v5[t]) + 2 * (v4[t] - v3[t])
                g2[t] = -5 * v0[t] - 4 * s12 - s34
                g3[t] = v1[t] - v2[t] + 2 * (v3[t] - v4[t]) - 5 * v5[t]
                g4[t] = v0[t] + s12 + s34
                g5[t] = v5[t]
            }
            // Onto the phases (input 0: phase 3 at t; 1 ... 4: phases 0 ... 3 at t + d; 5: phase 0 at t + 2d).
            split.update(repeating: 0, count: 4 * phase)
            let p0 = split, p1 = split + phase, p2 = split + 2 * phase, p3 = split + 3 * phase
            for t in 0..<nt { p3[t] += g0[t] }
            for t in 0..<nt { p0[t + d] += g1[t] }
            for t in 0..<nt { p1[t + d] += g2[t] }
            for t in 0..<nt { p2[t + d] += g3[t] }
            for t in 0..<nt { p3[t + d] += g4[t] }
            for t in 0..<nt { p0[t + 2 * d] += g5[t] }
            // Phases back onto the row, inside 0 ..< width.
            let dst = dx + c * rowStride
            for qq in 0 ..< q + 2 {
                for p in 0..<4 {
                    let start = j0 + (4 * (qq - 1) + p) * d, src = split + p * phase + qq * d
                    let lo = max(0, -start), hi = min(d, width - start)
                    if lo < hi { for rho in lo..<hi { dst[start + rho] += src[rho] } }
                }
            }
        }
    }

    // The Float views of a generic pointer the C kernels take (only where T is Float).
    @inline(__always) private static func floats<T>(_ p: UnsafePointer<T>) -> UnsafePointer<Float> {
        UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
    }
    @inline(__always) private static func floats<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
    }
}
