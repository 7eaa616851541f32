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
        let h = rows, c = channels, m = bands, L = layers
        let map = rowMap
        let blockColumns = context.synthesisBlockColumns
        let nBlocks = max(min(context.threads, w), (w + blockColumns - 1) / blockColumns)
        let bounds = (0...nBlocks).map { w * $0 / nBlocks }
        let widest = (0..<nBlocks).map { bounds[$0 + 1] - bounds[$0] }.max()!
        let workers = min(nBlocks, context.threads)
        let scratch = (0..<workers).map { _ in SynthesisScratch<O>(channels: c, bands: m, block: widest) }
        let kOp = 3 * c + m // rows of a block's operand matrix
        let operandsOfBlocks = UnsafeMutablePointer<O.Element>.allocate(capacity: kOp * w)
        defer { operandsOfBlocks.deallocate() }
        let caches = (0..<L).map {
            LayerRowCache<O>(dilation: heightDilations[$0], widthDilation: widthDilations[$0], channels: c, width: w)
        }
        let weights = SynthesisWeights<O>(step: self)
        let native = O.Element.self == T.self // gate and condition can write operands directly
        var x = z // row 0 is copied
        var act = [T](repeating: 0, count: 2 * c * w) // [a; skip], [2C, w]
        var p = [T](repeating: 0, count: 2 * w)
        /// Runs `body(j0, j1, scratch, operands)` for every column block, in parallel.
        func forEachBlock(_ body: (Int, Int, SynthesisScratch<O>, UnsafeMutablePointer<O.Element>) -> Void) {
            Threads.parallelFor(workers) { wk in
                var b = wk
                while b < nBlocks { body(bounds[b], bounds[b + 1], scratch[wk], operandsOfBlocks + kOp * bounds[b]); b += workers }
            }
        }
        let savedBLAS = BLAS.threads
        BLAS.threads = 1 // all parallelism is over column blocks (no idle BLAS pool spinning)
        defer { BLAS.threads = savedBLAS }
        let wt = self.weights
        act.withUnsafeMutableBufferPointer { ap in
        p.withUnsafeMutableBufferPointer { pp in
        x.withUnsafeMutableBufferPointer { xp in
        z.withUnsafeBufferPointer { zp in
            let aa = ap.baseAddress!, sk = aa + c * w
            let pr = pp.baseAddress!, xx = xp.baseAddress!, zz = zp.baseAddress!
            for r in 0 ..< h - 1 {
                // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
                let (win, bin) = (wt + input, wt + inputB)
                forEachBlock { j0, j1, s, e in
                    let nb = j1 - j0
                    for ch in 0..<c {
                        let row = aa + ch * w, skip = sk + ch * w
                        for j in j0..<j1 { row[j] = win[ch] * xx[r * w + j] + bin[ch]; skip[j] = 0 }
                    }
                    // The condition row, under the expanded row in the block's operands.
                    let condOperand = e + 3 * c * nb
                    if native {
                        condition.row(map[r + 1], columns: j0..<j1, into: UnsafeMutableRawPointer(condOperand).assumingMemoryBound(to: T.self),
                                      rowStride: nb)
                    } else {
                        condition.row(map[r + 1], columns: j0..<j1, into: s.cond, rowStride: nb)
                        O.convert(s.cond, count: m * nb, into: condOperand)
                    }
                }
                for l in 0..<L {
                    let dh = heightDilations[l], cache = caches[l]
                    // Stored in a pass of its own: a block's taps read the
                    // neighbouring blocks' columns of row r (up to dw away).
                    forEachBlock { j0, j1, _, _ in
                        cache.store(aa, at: r, columns: j0..<j1, bias: l > 0 ? weights.residualBias + (l - 1) * c : nil)
                    }
                    forEachBlock { j0, j1, s, e in
                        let nb = j1 - j0
                        // y = [W_tap2 | W_cond] x [E(r); cond].
                        _ = cache.expand(r, columns: j0..<j1, into: e)
                        O.gemm(context, m: 2 * c, n: nb, k: kOp, a: weights.tapAndCond + l * 2 * c * kOp, lda: kOp, b: e, ldb: nb,
                               accumulate: false, c: s.y, ldc: nb)
                        // + W_tap x E(row r - (2 - tap) dh) for the taps whose row exists.
                        for tap in 0..<2 where cache.expand(r - (2 - tap) * dh, columns: j0..<j1, into: e) {
                            O.gemm(context, m: 2 * c, n: nb, k: 3 * c, a: weights.taps + (l * 2 + tap) * 2 * c * 3 * c, lda: 3 * c,
                                   b: e, ldb: nb, accumulate: true, c: s.y, ldc: nb)
                        }
                        if native {
                            Gate.forward(s.y, UnsafeMutableRawPointer(s.gOperand).assumingMemoryBound(to: T.self), channels: c, n: nb,
                                         bias: weights.gateBias + l * 2 * c)
                        } else {
                            Gate.forward(s.y, s.g, channels: c, n: nb, bias: weights.gateBias + l * 2 * c)
                            O.convert(s.g, count: c * nb, into: s.gOperand)
                        }
                        // [a; skip] += [W_res; W_skip] x g (in place, row stride w).
                        O.gemm(context, m: 2 * c, n: nb, k: c, a: weights.out + l * 2 * c * c, lda: c, b: s.gOperand, ldb: nb,
                               accumulate: true, c: aa + j0, ldc: w)
                    }
                }
                forEachBlock { j0, j1, _, _ in
                    // log s and t of row r + 1, then its inverse coupling.
                    let nb = j1 - j0
                    T.gemm(transA: false, transB: false, m: 2, n: nb, k: c, alpha: 1, a: weights.output, lda: c,
                           b: sk + j0, ldb: w, beta: 0, c: pr + j0, ldc: w)
                    let (b0, b1) = (weights.outputBias[0], weights.outputBias[1])
                    for j in j0..<j1 { pr[j] += b0; pr[w + j] += b1 }
                    AffineCoupling.inverseRow(z: zz + (r + 1) * w + j0, logS: pr + j0, t: pr + w + j0,
                                              x: xx + (r + 1) * w + j0, count: nb)
                }
            }
        }}}}
        return x
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
