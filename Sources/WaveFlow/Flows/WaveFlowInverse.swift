import Foundation

// The inverse of WaveFlow's coupling (MODEL-SPEC section 8), row by row,
// with each layer's causal convolution fed from a ring buffer of its last
// 1 + 2*dh input rows (the streaming cache, explicit as in LPCNet).
//
// Synthesis layout (B = 1): a row of the grid is [C, w] or [M, w]; the
// condition is read one row at a time (`ConditionRows`). The row caches,
// per-flow weights and scratch are in SynthesisState.swift. The matrix
// products' operands are Float32 or bf16 (`ProductOperands`).

extension WaveFlowCoupling {
    /// Inverts the flow on Z [h, w] (its own row order); returns X [h, w].
    /// Each network row is computed once. The products take bf16 operands
    /// when `context` asks for bf16 (and oneDNN runs it, C >= 16);
    /// otherwise Float32 (or Float64) operands.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func inverse(_ z: [T], condition: any ConditionRows<T>, width w: Int, context: ComputeContext) -> [T] {
        T.withOperands(context, forProductsOf: [channels],
                       CouplingInversion(step: self, z: z, condition: condition, width: w, context: context))
    }

    /// `invertFlow` with the products' operands held as `O.Element`.
    ///
    /// Per row and layer: y = [W_tap2 | W_cond] x [E(row r); cond] + the two
    /// other vertical taps W_tap x E(row r - (2-tap)dh) [3C, block] (a cached
    /// row expanded for the horizontal taps, see ``LayerRowCache``); gate
    /// (with the conv and condition biases); then [W_res; W_skip] x g is
    /// accumulated straight into the running [a; skip] (biases: see
    /// ``SynthesisWeights``). Within a row, the columns split into blocks
    /// that are independent (a block reads complete earlier rows and writes
    /// only its own columns); blocks run in parallel with one BLAS thread
    /// each, so the elementwise work is shared by the cores too. Blocks are
    /// at most `context.synthesisBlockColumns` wide and scratch is per worker; each
    /// block keeps its operand matrix [3C + M, block] (expanded row over the
    /// condition row, which all layers of a row share).
    @_specialize(where T == Float, O == NativeOperands<Float>)
    @_specialize(where T == Float, O == BF16Operands)
    func invert<O: ProductOperands>(_ z: [T], condition: any ConditionRows<T>, width w: Int,
                                    context: ComputeContext, operands: O.Type) -> [T] where O.Scalar == T {
        let bounds = context.synthesisBlockBounds(width: w), nBlocks = bounds.count - 1
        let widest = (0..<nBlocks).map { bounds[$0 + 1] - bounds[$0] }.max()!
        let workers = min(nBlocks, context.threads)
        let inversion = RowInversion<O>(step: self, z: z, condition: condition, width: w, context: context,
                                         blockWidths: (0..<nBlocks).map { bounds[$0 + 1] - bounds[$0] })
        let scratch = (0..<workers).map { _ in
            SynthesisScratch<O>(channels: channels, bands: bands, block: widest, winograd: inversion.winogradScratchSizes)
        }
        /// Runs `body(block, columns, scratch, operands)` for every column block, in parallel.
        func forEachBlock(_ body: (Int, Range<Int>, SynthesisScratch<O>, UnsafeMutablePointer<O.Element>) -> Void) {
            Threads.parallelFor(workers) { wk in
                var b = wk
                while b < nBlocks {
                    body(b, bounds[b] ..< bounds[b + 1], scratch[wk], inversion.blockOperands + inversion.kOp * bounds[b])
                    b += workers
                }
            }
        }
        let savedBLAS = BLAS.threads
        BLAS.threads = 1 // all parallelism is over column blocks (no idle BLAS pool spinning)
        defer { BLAS.threads = savedBLAS }
        for r in 0 ..< rows - 1 {
            // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
            forEachBlock { _, js, s, e in inversion.startRow(r, columns: js, scratch: s, operands: e) }
            for l in 0..<layers {
                // Stored (or transformed) in a pass of its own: a block's taps
                // read the neighbouring blocks' columns of row r (up to dw away).
                forEachBlock { b, js, s, _ in inversion.storeInput(layer: l, row: r, block: b, columns: js, scratch: s) }
                forEachBlock { b, js, s, e in inversion.layer(l, row: r, block: b, columns: js, scratch: s, operands: e) }
            }
            forEachBlock { _, js, _, _ in inversion.finishRow(r, columns: js) }
        }
        return inversion.output
    }
}

extension ComputeContext {
    /// The column blocks WaveFlow synthesis splits a row of `w` columns into,
    /// as bounds (block b is bounds[b] ..< bounds[b + 1]): at most
    /// `synthesisBlockColumns` wide, and a multiple of the workers so that
    /// each does the same work (2 s of h16, 2,756 columns, in 1,024-column
    /// blocks was 3 blocks on 2 cores, one core idle a third of the time:
    /// 12.5-13k samples/s against 16.5k for 4 s).
    func synthesisBlockBounds(width w: Int) -> [Int] {
        let cores = max(1, min(threads, w))
        let byWidth = (w + synthesisBlockColumns - 1) / synthesisBlockColumns
        let nBlocks = min(w, (byWidth + cores - 1) / cores * cores)
        return (0...nBlocks).map { w * $0 / nBlocks }
    }
}

/// The state of one flow's row-by-row inversion (`WaveFlowCoupling.invert`)
/// and its three steps on a column block of row r: `startRow` (input
/// projection, condition operand), per layer `storeInput` then `layer`, and
/// `finishRow` (output projection, inverse coupling of row r + 1).
final class RowInversion<O: ProductOperands> {
    typealias T = O.Scalar
    let context: ComputeContext
    let c: Int, m: Int, w: Int
    /// Rows of a block's operand matrix: the expanded row [3C] over the condition row [M].
    let kOp: Int
    let rowMap: [Int], heightDilations: [Int]
    let condition: any ConditionRows<T>
    /// Per layer, its past input rows; nil for a Winograd layer (`winograd`).
    let caches: [LayerRowCache<O>?]
    /// Per layer, its transformed past rows when its width convolution runs by
    /// Winograd's F(4, 3) (`WidthWinograd`); nil for the direct products.
    let winograd: [WinogradRowCache<T>?]
    let weights: SynthesisWeights<O>
    /// Input projection [C] and its bias [C] (in the arena).
    let inputWeight: UnsafePointer<T>, inputBias: UnsafePointer<T>
    /// Whether operands are the values themselves (gate and condition write them directly).
    let native: Bool
    /// Every block's operand matrix [3C + M, block], side by side.
    let blockOperands: UnsafeMutablePointer<O.Element>
    /// The running [a; skip] of the row [2C, w], (log s, t) [2, w], Z and X [h, w].
    let act: UnsafeMutablePointer<T>, p: UnsafeMutablePointer<T>, z: UnsafeMutablePointer<T>, x: UnsafeMutablePointer<T>
    let gridCount: Int

    /// - Parameter blockWidths: the column blocks' widths, left to right (fixed for the flow).
    init(step: WaveFlowCoupling<T>, z zValues: [T], condition: any ConditionRows<T>, width w: Int, context: ComputeContext,
         blockWidths: [Int]) {
        (c, m, self.w, self.context, self.condition) = (step.channels, step.bands, w, context, condition)
        kOp = 3 * c + m
        rowMap = step.rowMap
        heightDilations = step.heightDilations
        native = O.Element.self == T.self
        // Winograd layers: Float32/Float64 operands, and the policy's say for the narrowest block.
        let narrowest = blockWidths.min() ?? w
        winograd = (0..<step.layers).map { l in
            let (dh, dw) = (step.heightDilations[l], step.widthDilations[l])
            return context.widthWinograd.applies(dilation: dw, columns: narrowest) && O.Element.self == T.self
                ? WinogradRowCache<T>(dilation: dh, widthDilation: dw, channels: step.channels, blockWidths: blockWidths) : nil
        }
        let transformed = winograd.map { $0 != nil }
        caches = (0..<step.layers).map {
            transformed[$0] ? nil
                : LayerRowCache<O>(dilation: step.heightDilations[$0], widthDilation: step.widthDilations[$0], channels: step.channels,
                                   width: w)
        }
        weights = SynthesisWeights<O>(step: step)
        (inputWeight, inputBias) = (UnsafePointer(step.weights + step.input), UnsafePointer(step.weights + step.inputB))
        blockOperands = .allocate(capacity: kOp * w)
        act = .allocate(capacity: 2 * c * w)
        act.initialize(repeating: 0, count: 2 * c * w)
        p = .allocate(capacity: 2 * w)
        p.initialize(repeating: 0, count: 2 * w)
        gridCount = zValues.count
        z = .allocate(capacity: gridCount)
        z.initialize(from: zValues, count: gridCount)
        x = .allocate(capacity: gridCount)
        x.initialize(from: zValues, count: gridCount) // row 0 is copied
    }

    /// Scratch sizes for `WinogradScratch` (tiles, phase-split values), nil when no layer uses Winograd.
    var winogradScratchSizes: (tiles: Int, split: Int)? {
        let tilings = winograd.compactMap { $0 }.flatMap(\.tilings)
        guard !tilings.isEmpty else { return nil }
        return (tilings.map(\.rowStride).max()!, tilings.map(\.splitCount).max()!)
    }

    deinit { blockOperands.deallocate(); act.deallocate(); p.deallocate(); z.deallocate(); x.deallocate() }

    /// X [h, w].
    var output: [T] { Array(UnsafeBufferPointer(start: x, count: gridCount)) }

    /// a = input(X row r) and skip = 0 on the block; the condition row
    /// r + 1 (this flow's order) into the block's operands, under the expanded row.
    func startRow(_ r: Int, columns js: Range<Int>, scratch s: SynthesisScratch<O>, operands e: UnsafeMutablePointer<O.Element>) {
        let nb = js.count, skip = act + c * w, j0 = js.lowerBound
        let xr = UnsafePointer(x + r * w + j0) // row r's block (the index inside the loop kept it scalar)
        for ch in 0..<c {
            let row = act + ch * w + j0, (wi, bi) = (inputWeight[ch], inputBias[ch])
            for j in 0..<nb { row[j] = wi * xr[j] + bi }
            (skip + ch * w + j0).update(repeating: 0, count: nb)
        }
        let condOperand = e + 3 * c * nb
        if native {
            condition.row(rowMap[r + 1], columns: js, into: UnsafeMutableRawPointer(condOperand).assumingMemoryBound(to: T.self),
                          rowStride: nb)
        } else {
            condition.row(rowMap[r + 1], columns: js, into: s.cond, rowStride: nb)
            O.convert(s.cond, count: m * nb, into: condOperand)
        }
    }

    /// Layer l's input row r into its row cache: a, plus the previous
    /// layer's residual bias for bf16 operands (Float operands got it in the
    /// residual product, `SynthesisWeights.packedOut`); a Winograd layer's
    /// cache takes the block transformed (`WidthWinograd.transformInput`),
    /// read from a in place.
    func storeInput(layer l: Int, row r: Int, block b: Int, columns js: Range<Int>, scratch s: SynthesisScratch<O>) {
        if let wc = winograd[l], let ws = s.winograd {
            let tiling = wc.tilings[b]
            WidthWinograd.transformInput(act, channels: c, rowStride: w, width: w, start: js.lowerBound, tiling: tiling,
                                         into: wc.block(r, b), pointStride: c * tiling.rowStride, ldv: tiling.rowStride, split: ws.split)
        } else {
            caches[l]!.store(act, at: r, columns: js, bias: l > 0 && !native ? weights.residualBias + (l - 1) * c : nil)
        }
    }

    /// Layer l on the block: y = [W_tap2 | W_cond] x [E(r); cond] + the other
    /// taps' products, the gate (with the conv and condition biases), then
    /// [a; skip] += [W_res; W_skip] x g in place.
    func layer(_ l: Int, row r: Int, block b: Int, columns js: Range<Int>, scratch s: SynthesisScratch<O>,
               operands e: UnsafeMutablePointer<O.Element>) {
        let nb = js.count, dh = heightDilations[l]
        if let wc = winograd[l], let ws = s.winograd {
            winogradConvolution(l, row: r, block: b, columns: js, cache: wc, scratch: ws, y: s.y, operands: e)
        } else {
            let cache = caches[l]!
            _ = cache.expand(r, columns: js, into: e)
            O.gemm(context, m: 2 * c, n: nb, k: kOp, a: weights.tapAndCond + l * 2 * c * kOp, lda: kOp, b: e, ldb: nb,
                   accumulate: false, c: s.y, ldc: nb)
            // + W_tap x E(row r - (2 - tap) dh) for the taps whose row exists.
            for tap in 0..<2 where cache.expand(r - (2 - tap) * dh, columns: js, into: e) {
                O.gemm(context, m: 2 * c, n: nb, k: 3 * c, a: weights.taps + (l * 2 + tap) * 2 * c * 3 * c, lda: 3 * c,
                       b: e, ldb: nb, accumulate: true, c: s.y, ldc: nb)
            }
        }
        if native {
            let g = UnsafeMutableRawPointer(s.gOperand).assumingMemoryBound(to: T.self)
            Gate.forward(s.y, g, channels: c, n: nb, bias: weights.gateBias + l * 2 * c)
            (g + c * nb).update(repeating: 1, count: nb) // [g; 1]: the residual bias's row
            T.packedProduct(weights.packedOut[l], b: g, ldb: nb, n: nb, c: act + js.lowerBound, ldc: w, accumulate: true)
        } else {
            Gate.forward(s.y, s.g, channels: c, n: nb, bias: weights.gateBias + l * 2 * c)
            O.convert(s.g, count: c * nb, into: s.gOperand)
            O.gemm(context, m: 2 * c, n: nb, k: c, a: weights.out + l * 2 * c * c, lda: c, b: s.gOperand, ldb: nb,
                   accumulate: true, c: act + js.lowerBound, ldc: w)
        }
    }

    /// y [2C, nb] = W_cond x cond + layer l's width convolution of rows r - 2dh,
    /// r - dh and r by Winograd's F(4, 3): with row r's block transformed
    /// into the cache (`storeInput`; the earlier rows were, in their turn), per point one
    /// product U [2C, 3C] x [V(r - 2dh); V(r - dh); V(r)] read in place
    /// (`Real.segmentProduct`; fewer taps while rows before 0 are missing),
    /// and the output transform adds the tiles' outputs to y. Float32 /
    /// Float64 operands only.
    private func winogradConvolution(_ l: Int, row r: Int, block b: Int, columns js: Range<Int>, cache wc: WinogradRowCache<T>,
                                     scratch ws: WinogradScratch<T>, y: UnsafeMutablePointer<T>, operands e: UnsafeMutablePointer<O.Element>) {
        let nb = js.count, dh = heightDilations[l], tiling = wc.tilings[b], nt = tiling.tiles, ld = tiling.rowStride
        let values = { (p: UnsafeMutablePointer<O.Element>) in UnsafeMutableRawPointer(p).assumingMemoryBound(to: T.self) }
        // y = W_cond x cond (the condition row under the block's operands).
        T.packedProduct(weights.packedCondition[l], b: values(e + 3 * c * nb), ldb: nb, n: nb, c: y, ldc: nb, accumulate: false)
        let point = c * ld // a point's stride in a cached row's V
        let first = (0..<2).first { r - (2 - $0) * dh >= 0 } ?? 2 // the earliest vertical tap whose row exists
        withUnsafeTemporaryAllocation(of: UnsafePointer<T>.self, capacity: 3) { rowsV in
            for i in 0..<WidthWinograd.points {
                for ky in first..<3 { rowsV[ky - first] = UnsafePointer(wc.block(r - (2 - ky) * dh, b) + i * point) }
                T.segmentProduct(weights.winogradTaps[l * 6 + i], firstColumn: first * c, segments: UnsafePointer(rowsV.baseAddress!),
                                 count: 3 - first, segmentRows: c, ldb: ld, n: nt, c: ws.products + i * 2 * c * ld, ldc: ld,
                                 accumulate: false)
            }
        }
        WidthWinograd.accumulateOutput(ws.products, pointStride: 2 * c * ld, ldm: ld, rows: 2 * c, tiling: tiling,
                                       into: y, ldy: nb, scratch: ws.outputs)
    }

    /// log s and t of row r + 1 from the skip sum, then its inverse coupling.
    func finishRow(_ r: Int, columns js: Range<Int>) {
        let (j0, nb) = (js.lowerBound, js.count)
        if let packed = weights.packedOutput {
            T.packedProduct(packed, b: act + c * w + j0, ldb: w, n: nb, c: p + j0, ldc: w, accumulate: false)
        } else {
            T.gemm(transA: false, transB: false, m: 2, n: nb, k: c, alpha: 1, a: weights.output, lda: c,
                   b: act + c * w + j0, ldb: w, beta: 0, c: p + j0, ldc: w)
        }
        let (b0, b1) = (weights.outputBias[0], weights.outputBias[1])
        for j in js { p[j] += b0; p[w + j] += b1 }
        AffineCoupling.inverseRow(z: z + (r + 1) * w + j0, logS: p + j0, t: p + w + j0, x: x + (r + 1) * w + j0, count: nb)
    }
}

/// `WaveFlowCoupling.invert` for the operand storage `Real.withOperands` picks.
private struct CouplingInversion<T: Real>: OperandsVisitor {
    typealias Scalar = T
    typealias Result = [T]
    let step: WaveFlowCoupling<T>, z: [T], condition: any ConditionRows<T>, width: Int, context: ComputeContext
    func visit<O: ProductOperands>(_ o: O.Type) -> [T] where O.Scalar == T {
        step.invert(z, condition: condition, width: width, context: context, operands: o)
    }
}
