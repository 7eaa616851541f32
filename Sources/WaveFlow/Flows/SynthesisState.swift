import Foundation

// What synthesis keeps while it inverts one flow: each layer's cache of past
// rows, the per-flow arrangement of the weights, and per-worker scratch.

/// The ring buffer of one residual layer's input rows: slot r % (1 + 2dh)
/// holds row r, [C, w], stored as product operands (`O.Element`: for bf16
/// products each row is rounded once, here, not once per product reading
/// it). Rows before 0 are the causal zero padding and are skipped. A block
/// of a row is handed to the matrix products "expanded" for the layer's 3
/// horizontal taps (`expand`): E [3C, nb] with
/// E[kx*C + c, j] = a[c, j0 + j + (kx-1)*dw], 0 beyond the row's ends — a
/// block-sized copy instead of a 9C-row im2col. (Caching rows already
/// expanded saved a little copying but tripled the caches, the largest
/// arrays of a long synthesis.)
public final class LayerRowCache<O: ProductOperands> {
    public let dilation: Int, widthDilation: Int
    public let channels: Int, width: Int
    let slots: [UnsafeMutablePointer<O.Element>]

    public init(dilation: Int, widthDilation: Int, channels: Int, width: Int) {
        self.dilation = dilation
        self.widthDilation = widthDilation
        self.channels = channels
        self.width = width
        slots = (0 ..< 1 + 2 * dilation).map { _ in
            let p = UnsafeMutablePointer<O.Element>.allocate(capacity: channels * width)
            p.initialize(repeating: O.zero, count: channels * width)
            return p
        }
    }

    deinit { for p in slots { p.deallocate() } }

    /// Stores columns `js` of row r (`a` [C, w]), first adding `bias[c]` to
    /// channel c of `a` itself (in place) when given (bf16 operands: Float
    /// ones get the residual bias in the residual product).
    public func store(_ a: UnsafeMutablePointer<O.Scalar>, at r: Int, columns js: Range<Int>, bias: UnsafePointer<O.Scalar>? = nil) {
        let s = slots[r % slots.count], j0 = js.lowerBound
        for ch in 0..<channels {
            let src = a + ch * width + j0
            if let bias { let b = bias[ch]; for j in 0..<js.count { src[j] += b } }
            O.convert(src, count: js.count, into: s + ch * width + j0)
        }
    }

    /// Writes columns `js` of row r, expanded, into `e` [3C, js.count].
    /// Returns false (writing nothing) for rows before 0.
    public func expand(_ r: Int, columns js: Range<Int>, into e: UnsafeMutablePointer<O.Element>) -> Bool {
        guard r >= 0 else { return false }
        let (c, w, dw, nb) = (channels, width, widthDilation, js.count)
        let row = slots[r % slots.count]
        for kx in 0..<3 {
            for ch in 0..<c {
                CausalConv.copyShifted(row + ch * w, width: w, shift: (kx - 1) * dw, columns: js, into: e + (kx * c + ch) * nb,
                                       zero: O.zero)
            }
        }
        return true
    }
}

/// The ring buffer of one residual layer's input rows for Winograd synthesis
/// (`WidthWinograd`): slot r % (1 + 2dh) holds row r already transformed for
/// the layer's width convolution, V [6][C, tiles] per column block, so each
/// row is transformed once, not once per vertical tap that reads it. The
/// tiles are the block's own (`WidthWinograd.Tiling`): blocks must be the
/// same for the whole flow.
final class WinogradRowCache<T: Real> {
    let dilation: Int, channels: Int
    /// Per block: its tiling, and where its V starts in a slot.
    let tilings: [WidthWinograd.Tiling], offsets: [Int]
    let slots: [UnsafeMutablePointer<T>]

    init(dilation: Int, widthDilation: Int, channels: Int, blockWidths: [Int]) {
        (self.dilation, self.channels) = (dilation, channels)
        tilings = blockWidths.map { WidthWinograd.Tiling(dilation: widthDilation, columns: $0) }
        var offsets: [Int] = [], total = 0
        for t in tilings { offsets.append(total); total += WidthWinograd.points * channels * t.rowStride }
        self.offsets = offsets
        // Every value is written (transformInput) before any is read.
        slots = (0 ..< 1 + 2 * dilation).map { _ in .allocate(capacity: total) }
    }

    deinit { for p in slots { p.deallocate() } }

    /// Row r's V [6][C, tiles] for block b (row stride `tilings[b].rowStride`, point stride C times that).
    func block(_ r: Int, _ b: Int) -> UnsafeMutablePointer<T> { slots[r % slots.count] + offsets[b] }
}

/// One worker's scratch for Winograd layers: the products [6][2C, tiles], a
/// channel's phase-split input and the output transform's [4][tiles].
final class WinogradScratch<T: Real> {
    let products, split, outputs: UnsafeMutablePointer<T>

    init(channels c: Int, tiles: Int, splitCount: Int) {
        products = .allocate(capacity: 6 * 2 * c * tiles)
        split = .allocate(capacity: splitCount)
        outputs = .allocate(capacity: 4 * tiles)
    }

    deinit { products.deallocate(); split.deallocate(); outputs.deallocate() }
}

/// One worker's scratch for a column block of synthesis (`block` columns):
/// the pre-gate activations [2C, block], the gate [C, block] and as
/// operands (room for [C + 1, block]: native operands put a row of ones
/// under the gate, for the residual bias), and the condition row [M, block]
/// before conversion.
final class SynthesisScratch<O: ProductOperands> {
    let y, g, cond: UnsafeMutablePointer<O.Scalar>
    let gOperand: UnsafeMutablePointer<O.Element>
    /// For Winograd layers (sizes from `RowInversion.winogradScratchSizes`).
    let winograd: WinogradScratch<O.Scalar>?

    init(channels c: Int, bands m: Int, block: Int, winograd sizes: (tiles: Int, split: Int)? = nil) {
        winograd = sizes.map { WinogradScratch(channels: c, tiles: $0.tiles, splitCount: $0.split) }
        y = .allocate(capacity: 2 * c * block)
        g = .allocate(capacity: c * block)
        cond = .allocate(capacity: m * block)
        gOperand = .allocate(capacity: (c + 1) * block)
    }

    deinit { y.deallocate(); g.deallocate(); cond.deallocate(); gOperand.deallocate() }
}

/// One flow's weights for synthesis, arranged once per flow: per layer the
/// vertical taps 0 and 1 as [2C, 3C] operands, tap 2 joined with the
/// condition projection as [2C, 3C + M] (one product reads the expanded row
/// r and the condition row, stacked), the residual and skip projections as
/// one [2C, C]; the biases stay scalars: conv + condition biases go into the
/// gate, residual biases into the next layer's row store (bf16 operands) or
/// into the residual product as a column of its packed weights (Float32 and
/// Float64: [W_res b_res; W_skip 0] [2C, C + 1] times [g; 1]), and the skip
/// biases, summed over the layers, through the output layer into its bias.
final class SynthesisWeights<O: ProductOperands> {
    let c: Int, m: Int, layers: Int
    let taps: UnsafeMutablePointer<O.Element>     // [L][2][2C, 3C]
    /// Per layer, the Winograd transform of all 3 vertical taps' kernels
    /// (`WidthWinograd.transformKernel`), U [6][2C, 3C] with the taps in the
    /// order of the rows r - 2dh, r - dh, r; for Float32 and Float64 operands only.
    let winogradTaps: [PackedWeights<O.Scalar>] // [L][6] of [2C, 3C]; empty for bf16
    /// Per layer, W_cond [2C, M] and [W_res b_res; W_skip 0] [2C, C + 1]
    /// packed for the panel kernel (`Real.packedProduct`); empty for bf16.
    let packedCondition, packedOut: [PackedWeights<O.Scalar>]
    /// The output layer [2, C] packed likewise (OpenBLAS spent 2% of
    /// synthesis on these two-row products); nil for bf16.
    let packedOutput: PackedWeights<O.Scalar>?
    let tapAndCond: UnsafeMutablePointer<O.Element> // [L][2C, 3C + M]
    let out: UnsafeMutablePointer<O.Element>      // [L][2C, C]
    let gateBias: UnsafeMutablePointer<O.Scalar>  // [L][2C]
    let residualBias: UnsafeMutablePointer<O.Scalar> // [L][C]
    let output: UnsafeMutablePointer<O.Scalar>    // [2, C]
    let outputBias: UnsafeMutablePointer<O.Scalar> // [2]

    init(step: WaveFlowCoupling<O.Scalar>) {
        let (c, m, L) = (step.channels, step.bands, step.layers)
        (self.c, self.m, layers) = (c, m, L)
        taps = .allocate(capacity: L * 2 * 2 * c * 3 * c)
        tapAndCond = .allocate(capacity: L * 2 * c * (3 * c + m))
        out = .allocate(capacity: L * 2 * c * c)
        gateBias = .allocate(capacity: L * 2 * c)
        residualBias = .allocate(capacity: L * c)
        output = .allocate(capacity: 2 * c)
        outputBias = .allocate(capacity: 2)
        let wt = step.weights
        let native = O.Element.self == O.Scalar.self
        let regrouped = step.layerOffsets.map { CausalConv.regroup(wt + $0.conv, cin: c, cout: 2 * c) } // per layer [3][2C, 3C]
        // Per layer and point, U [2C, 3C] (`CausalConv.winogradTaps`), packed.
        winogradTaps = native ? regrouped.flatMap { g in
            let u = g.withUnsafeBufferPointer { CausalConv.winogradTaps(cin: c, cout: 2 * c, $0.baseAddress!) }
            return u.withUnsafeBufferPointer { up in
                (0..<6).map { PackedWeights(up.baseAddress! + $0 * 2 * c * 3 * c, rows: 2 * c, columns: 3 * c, lda: 3 * c) }
            }
        } : []
        packedCondition = native ? step.layerOffsets.map { PackedWeights(step.weights + $0.cond, rows: 2 * c, columns: m, lda: m) } : []
        packedOut = native ? step.layerOffsets.map { lo in
            var wb = [O.Scalar](repeating: 0, count: 2 * c * (c + 1))
            for o in 0 ..< 2 * c {
                for i in 0..<c { wb[o * (c + 1) + i] = wt[lo.out + o * c + i] }
                if o < c { wb[o * (c + 1) + c] = wt[lo.outB + o] }
            }
            return wb.withUnsafeBufferPointer { PackedWeights($0.baseAddress!, rows: 2 * c, columns: c + 1, lda: c + 1) }
        } : []
        packedOutput = native ? PackedWeights(step.weights + step.output, rows: 2, columns: c, lda: c) : nil
        do {
            for (l, lo) in step.layerOffsets.enumerated() {
                regrouped[l].withUnsafeBufferPointer { O.convert($0.baseAddress!, count: 2 * 2 * c * 3 * c, into: taps + l * 2 * 2 * c * 3 * c) }
                for o in 0 ..< 2 * c {
                    let row = tapAndCond + (l * 2 * c + o) * (3 * c + m)
                    regrouped[l].withUnsafeBufferPointer { O.convert($0.baseAddress! + (2 * 2 * c + o) * 3 * c, count: 3 * c, into: row) }
                    O.convert(wt + lo.cond + o * m, count: m, into: row + 3 * c)
                    gateBias[l * 2 * c + o] = wt[lo.convB + o] + wt[lo.condB + o]
                }
                O.convert(wt + lo.out, count: 2 * c * c, into: out + l * 2 * c * c)
                (residualBias + l * c).update(from: wt + lo.outB, count: c)
            }
            output.update(from: wt + step.output, count: 2 * c)
            for o in 0..<2 {
                var b = wt[step.outputB + o]
                for ch in 0..<c { b += wt[step.output + o * c + ch] * step.summedSkipBias(ch) }
                outputBias[o] = b
            }
        }
    }

    deinit {
        taps.deallocate(); tapAndCond.deallocate(); out.deallocate(); gateBias.deallocate()
        residualBias.deallocate(); output.deallocate(); outputBias.deallocate()
    }
}
