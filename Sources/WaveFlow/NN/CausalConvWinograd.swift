import Foundation

// The causal 3x3 convolution (CausalConv.swift) with its width taps by
// Winograd's F(4, 3) (`WidthWinograd`), for training with Float32 or
// Float64 operands: half the multiply-adds of the direct products, forward
// and backward.
//
// Each row (b, y) of the input [Cin, B, H, W] is transformed into T tiles
// (`WidthWinograd.Tiling` of the row), V [6][Cin, B*H*T], rows side by side,
// so a vertical tap is again a shift by s*T columns within a batch item:
//
//     M_i[:, b, y >= s] += U_{ky,i} [Cout, Cin] x V_i[:, b, y - s]
//
// (U_{ky,i} = sum_kx G[i][kx] W[:, :, ky, kx]), then the output transform
// turns M [6][Cout, B*H*T] into the rows of out. The backward pass runs the
// transposes: dM from dOut (`outputGradient`), dU_{ky,i} += dM_i V_i^T
// (then dW = G^T dU), dV_i += U_{ky,i}^T dM_i and dInput += B dV
// (`inputGradient`). The products have Cin (not 3 Cin) as their inner
// size: 25% slower per multiply-add on OpenBLAS, for half as many. (The
// panel kernel with the three taps stacked as segments, as synthesis runs
// them, was measured 3% slower here than OpenBLAS on all the columns.)

extension CausalConv {
    /// Whether `forward` and `backward` run shape `s` by Winograd in `context`
    /// (given operands that are the values themselves, not bf16).
    static func usesWinograd(_ s: CausalConvShape, _ context: ComputeContext) -> Bool {
        context.widthWinograd.applies(dilation: s.dw, columns: s.width)
    }

    /// The values `forward` and `backward` need in each of their scratch
    /// buffers `e` and `de`: 3 Cin N for the direct products, more when the
    /// shape runs by Winograd (per tile and row, 6 (Cin + Cout) values: V
    /// and M forward; 12 Cin: V and dV, and 6 Cout: dM, backward).
    public static func scratchCount(_ s: CausalConvShape, context: ComputeContext) -> Int {
        let direct = 3 * s.cin * s.n
        guard usesWinograd(s, context) else { return direct }
        let tiles = WidthWinograd.Tiling(dilation: s.dw, columns: s.width).tiles
        return max(direct, 6 * max(s.cin + s.cout, 2 * s.cin) * s.batch * s.height * tiles)
    }

    /// U [6][Cout, 3 Cin] from the regrouped taps [3][Cout, 3 Cin]: per point
    /// i, the vertical taps' transformed kernels side by side, U_{ky,i} in
    /// columns ky*Cin ..< (ky + 1)*Cin (synthesis packs these whole).
    static func winogradTaps<T: Real>(cin: Int, cout: Int, _ taps: UnsafePointer<T>) -> [T] {
        var u = [T](repeating: 0, count: 6 * cout * 3 * cin)
        u.withUnsafeMutableBufferPointer { up in
            for ky in 0..<3 {
                WidthWinograd.transformKernel(taps + ky * cout * 3 * cin, tapStride: cin, ld: 3 * cin, rows: cout, cin: cin,
                                              into: up.baseAddress! + ky * cin, pointStride: cout * 3 * cin, ldu: 3 * cin)
            }
        }
        return u
    }

    /// The transformed taps U_{ky,i} [Cout, Cin] the Winograd products read:
    /// `winogradTaps`' layout (every vertical tap), or only taps
    /// `firstTap` ... 2 (a height-1 convolution, WaveGlow's dilated one, has
    /// only tap 2: the others reach no row).
    struct TransformedTaps<T: Real> {
        /// U_{firstTap,0}; U_{ky,i} starts `i * pointStride + (ky - firstTap) * cin` on, rows `ld` apart.
        let base: UnsafePointer<T>
        let cin: Int, ld: Int, pointStride: Int, firstTap: Int

        /// `winogradTaps(cin:cout:_:)`'s array.
        init(all u: UnsafePointer<T>, cin: Int, cout: Int) {
            (base, self.cin, ld, pointStride, firstTap) = (u, cin, 3 * cin, cout * 3 * cin, 0)
        }

        /// Tap 2 alone, U [6][Cout, Cin].
        init(lastOnly u: UnsafePointer<T>, cin: Int, cout: Int) {
            (base, self.cin, ld, pointStride, firstTap) = (u, cin, cin, cout * cin, 2)
        }

        /// U_{ky,i} [Cout, Cin], rows `ld` apart.
        func tap(_ ky: Int, point i: Int) -> UnsafePointer<T> {
            precondition(ky >= firstTap, "vertical tap \(ky) is not held")
            return base + i * pointStride + (ky - firstTap) * cin
        }
    }

    /// V [6][Cin, B*H*T] of every input row, channels over the cores (see
    /// `forEachChannelRow` for the order).
    static func transformRows<T: Real>(_ s: CausalConvShape, _ tiling: WidthWinograd.Tiling, _ input: UnsafePointer<T>,
                                       into v: UnsafeMutablePointer<T>) {
        let cols = s.batch * s.height * tiling.tiles
        forEachChannelRow(s, channels: s.cin, scratch: tiling.splitCount) { ch, r, split in
            WidthWinograd.transformInput(input + ch * s.n + r * s.width, channels: 1, rowStride: s.n, width: s.width, start: 0,
                                         tiling: tiling, into: v + ch * cols + r * tiling.tiles, pointStride: s.cin * cols, ldv: cols,
                                         split: split)
        }
    }

    /// Runs `body(channel, row, scratch)` for every channel < `channels` and
    /// row (b, y) < B*H of a Winograd convolution's transforms: channels over
    /// the cores, each channel's rows in turn, with `scratch` values of
    /// scratch per channel. In this order each of the 6 point rows of a channel
    /// (in V, M, dM or dV) is written or read front to back, a few long runs
    /// at a time; row by row over all channels visited 6 x C short runs
    /// (one tile row each, a matrix row apart) at once, and the four
    /// transforms took 2-5x as long in training (lpc-h64-c32, session 18).
    static func forEachChannelRow<T>(_ s: CausalConvShape, channels: Int, scratch count: Int,
                                     _ body: (Int, Int, UnsafeMutablePointer<T>) -> Void) {
        Threads.parallelFor(channels) { ch in
            withUnsafeTemporaryAllocation(of: T.self, capacity: count) { scratch in
                for r in 0 ..< s.batch * s.height { body(ch, r, scratch.baseAddress!) }
            }
        }
    }

    /// The products between transformed matrices, per point i and vertical
    /// tap: M_i [Cout, cols] = sum over ky of U_{ky,i} x V_i (`from`) shifted
    /// down by the tap's (2 - ky) dh rows within each batch item; transposed,
    /// dV_i [Cin, cols] = sum of U_{ky,i}^T x dM_i (`from`) shifted up as
    /// many. `u`: `winogradTaps`; `tiles`: per row.
    static func tapProducts<T: Real>(_ context: ComputeContext, _ s: CausalConvShape, _ u: TransformedTaps<T>, tiles nt: Int,
                                     from x: UnsafePointer<T>, into y: UnsafeMutablePointer<T>, transposed: Bool) {
        let cols = s.batch * s.height * nt, rowTiles = s.height * nt
        let (rows, inner) = transposed ? (s.cin, s.cout) : (s.cout, s.cin)
        for i in 0..<6 {
            let xi = x + i * inner * cols, yi = y + i * rows * cols
            forEachTap(s) { ky, shift, b in
                let ui = u.tap(ky, point: i) // U_{ky,i} [Cout, Cin], row stride u.ld
                if b < 0 {
                    T.product(context, transA: transposed, transB: false, m: rows, n: cols, k: inner, a: ui, a16: nil, lda: u.ld,
                              b: xi, b16: nil, ldb: cols, accumulate: false, c: yi, ldc: cols)
                } else {
                    let (src, dst) = transposed ? (b * rowTiles + shift * nt, b * rowTiles) : (b * rowTiles, b * rowTiles + shift * nt)
                    T.product(context, transA: transposed, transB: false, m: rows, n: rowTiles - shift * nt, k: inner, a: ui, a16: nil,
                              lda: u.ld, b: xi + src, b16: nil, ldb: cols, accumulate: true, c: yi + dst, ldc: cols)
                }
            }
        }
    }

    /// The values of an input's transform V [6][Cin, B*H*T] for shape `s`
    /// (what `forward` keeps when given room for it, and `backward` reads).
    public static func transformedInputCount(_ s: CausalConvShape) -> Int {
        6 * s.cin * s.batch * s.height * WidthWinograd.Tiling(dilation: s.dw, columns: s.width).tiles
    }

    /// `transformedInputCount` where `forward` in `context` runs by Winograd
    /// on native operands (and so can keep the transform), else nil.
    public static func transformedInputCount(_ s: CausalConvShape, context: ComputeContext) -> Int? {
        usesWinograd(s, context) && !context.bf16Products(s.cout, 3 * s.cin) ? transformedInputCount(s) : nil
    }

    /// out [Cout, N] = conv(input) + bias (out += conv(input) + bias when
    /// `accumulate`) by Winograd, from the transformed taps `u`; `e`:
    /// `scratchCount` values. The input's transform V is written to
    /// `keeping` when given (`transformedInputCount` values), for the
    /// backward pass; else into `e`.
    static func forwardWinograd<T: Real>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<T>,
                                         u: TransformedTaps<T>, bias: UnsafePointer<T>?, output: UnsafeMutablePointer<T>,
                                         e: UnsafeMutablePointer<T>, accumulate: Bool = false,
                                         keeping kept: UnsafeMutablePointer<T>? = nil) {
        let tiling = WidthWinograd.Tiling(dilation: s.dw, columns: s.width), nt = tiling.tiles
        let cols = s.batch * s.height * nt
        let v = kept ?? e, mm = e + 6 * s.cin * cols
        transformRows(s, tiling, input, into: v)
        tapProducts(context, s, u, tiles: nt, from: v, into: mm, transposed: false)
        forEachChannelRow(s, channels: s.cout, scratch: 4 * nt) { (o, r, scratch: UnsafeMutablePointer<T>) in
            let row = output + o * s.n + r * s.width
            if !accumulate {
                row.update(repeating: bias?[o] ?? 0, count: s.width)
            } else if let b = bias?[o] {
                for j in 0..<s.width { row[j] += b }
            }
            WidthWinograd.accumulateOutput(mm + o * cols + r * nt, pointStride: s.cout * cols, ldm: cols, rows: 1, tiling: tiling,
                                           into: row, ldy: s.n, scratch: scratch)
        }
    }

    /// `backward` by Winograd from the transformed taps `u`: dWeight, dBias
    /// and dInput accumulate, dWeight in PyTorch's layout of the taps `u`
    /// holds ([Cout, Cin, 3, 3], or [Cout, Cin, 3] for tap 2 alone); `e`
    /// and `de`: `scratchCount` values each. The input is read as its
    /// transform V when the forward pass kept it (`transformed`), else
    /// transformed again.
    static func backwardWinograd<T: Real>(_ context: ComputeContext, _ s: CausalConvShape, input: UnsafePointer<T>?,
                                          transformed: UnsafePointer<T>? = nil,
                                          u: TransformedTaps<T>, dOutput: UnsafePointer<T>, dWeight: UnsafeMutablePointer<T>,
                                          dBias: UnsafeMutablePointer<T>?, dInput: UnsafeMutablePointer<T>?,
                                          e: UnsafeMutablePointer<T>, de: UnsafeMutablePointer<T>) {
        let tiling = WidthWinograd.Tiling(dilation: s.dw, columns: s.width), nt = tiling.tiles
        let cols = s.batch * s.height * nt, rowTiles = s.height * nt
        let dv = e + 6 * s.cin * cols, dm = de
        let v: UnsafePointer<T>
        if let transformed {
            v = transformed
        } else {
            guard let input else { preconditionFailure("CausalConv.backward: neither the input nor its transform") }
            transformRows(s, tiling, input, into: e)
            v = UnsafePointer(e)
        }
        forEachChannelRow(s, channels: s.cout, scratch: 4 * nt) { (o, r, scratch: UnsafeMutablePointer<T>) in
            WidthWinograd.outputGradient(dOutput + o * s.n + r * s.width, ldy: s.n, rows: 1, tiling: tiling, into: dm + o * cols + r * nt,
                                         pointStride: s.cout * cols, ldm: cols, scratch: scratch)
        }
        // dU_{ky,i} = dM_i V_i^T over the rows each tap reaches (taps u holds), then dW = G^T dU.
        let kh = 3 - u.firstTap
        let dU = OwnedBuffer<T>(repeating: 0, count: kh * 6 * s.cout * s.cin)
        for i in 0..<6 {
            let vi = v + i * s.cin * cols, dmi = dm + i * s.cout * cols
            forEachTap(s) { ky, shift, b in
                let dui = dU.pointer + ((ky - u.firstTap) * 6 + i) * s.cout * s.cin
                if b < 0 {
                    T.product(context, transA: false, transB: true, m: s.cout, n: s.cin, k: cols, a: dmi, a16: nil, lda: cols,
                              b: vi, b16: nil, ldb: cols, accumulate: true, c: dui, ldc: s.cin)
                } else {
                    T.product(context, transA: false, transB: true, m: s.cout, n: s.cin, k: rowTiles - shift * nt,
                              a: dmi + b * rowTiles + shift * nt, a16: nil, lda: cols, b: vi + b * rowTiles, b16: nil, ldb: cols,
                              accumulate: true, c: dui, ldc: s.cin)
                }
            }
        }
        WidthWinograd.accumulateKernelGradient(dU.pointer, taps: kh, rows: s.cout, cin: s.cin, into: dWeight)
        if let dBias { accumulateRowSums(dOutput, into: dBias, rows: s.cout, cols: s.n) }
        guard let dInput else { return }
        tapProducts(context, s, u, tiles: nt, from: dm, into: dv, transposed: true)
        forEachChannelRow(s, channels: s.cin, scratch: tiling.splitCount + 6 * nt) { (c, r, scratch: UnsafeMutablePointer<T>) in
            WidthWinograd.inputGradient(dv + c * cols + r * nt, pointStride: s.cin * cols, ldv: cols, channels: 1, tiling: tiling,
                                        into: dInput + c * s.n + r * s.width, rowStride: s.n, width: s.width, start: 0,
                                        split: scratch, scratch: scratch + tiling.splitCount)
        }
    }
}
