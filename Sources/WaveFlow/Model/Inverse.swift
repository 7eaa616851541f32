import Foundation

// Synthesis: the inverse of the flows (MODEL-SPEC section 8), row by row,
// with each layer's causal convolution fed from a ring buffer of its last
// 1 + 2*dh input rows (the streaming cache, explicit as in LPCNet).
//
// Synthesis layout (B = 1): a row of the grid is [C, w] or [M, w]; the
// condition is stored row-major by grid row, cond[i] = [M, w]. The row
// caches, per-flow weights and scratch are in SynthesisState.swift, the
// on-demand condition rows in SynthesisCondition.swift. The matrix products'
// operands are Float32 or bf16 (`ProductOperands`).

extension WaveFlowModel {
    /// Grid rows of the condition of mel [M, F] (B = 1), computed on demand.
    public func synthesisCondition(mel: [T], frames: Int) -> SynthesisCondition<T> {
        let u = config.upsampleFactors.count - 1
        var input = mel, width = frames
        if u > 0 {
            input = upsample(mel: mel, batch: 1, frames: frames, stageCount: u).stages.last!
            width = frames * config.upsampleFactors[0..<u].reduce(1, *)
        }
        let t = frames * config.hopLength
        return SynthesisCondition(input: input, weight: params["upsample.\(u).weight"], bias: params["upsample.\(u).bias"][0],
                                  bands: config.nMels, inWidth: width, factor: config.upsampleFactors[u],
                                  rows: config.nGroup, columns: t / config.nGroup, slope: Self.leakySlope)
    }

    /// Inverts flow k on Z [h, w] (its own row order) with the condition as
    /// flow k saw it; returns X [h, w]. Each network row is computed once.
    /// The products take bf16 operands when `context` asks for bf16 (and
    /// oneDNN runs it, C >= 16); otherwise Float32 (or Float64) operands.
    public func invertFlow(_ k: Int, z: [T], condition: SynthesisCondition<T>, width w: Int, context: ComputeContext) -> [T] {
        T.withOperands(context, forProductsOf: [config.channels],
                       FlowInversion(model: self, flow: k, z: z, condition: condition, width: w, context: context))
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
    /// at most `synthesisBlockColumns` wide and scratch is per worker; each
    /// block keeps its operand matrix [3C + M, block] (expanded row over the
    /// condition row, which all layers of a row share).
    func invertFlow<O: ProductOperands>(_ k: Int, z: [T], condition: SynthesisCondition<T>, width w: Int,
                                        context: ComputeContext, operands: O.Type) -> [T] where O.Scalar == T {
        let h = config.nGroup, c = config.channels, m = config.nMels, L = config.nLayers
        let fo = flowOffsets[k], map = config.rowMaps[k]
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
            LayerRowCache<O>(dilation: config.heightDilation($0), widthDilation: config.widthDilation($0), channels: c, width: w)
        }
        let weights = SynthesisWeights<O>(model: self, flow: k)
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
        params.values.withUnsafeBufferPointer { wp in
        act.withUnsafeMutableBufferPointer { ap in
        p.withUnsafeMutableBufferPointer { pp in
        x.withUnsafeMutableBufferPointer { xp in
        z.withUnsafeBufferPointer { zp in
            let wt = wp.baseAddress!, aa = ap.baseAddress!, sk = aa + c * w
            let pr = pp.baseAddress!, xx = xp.baseAddress!, zz = zp.baseAddress!
            for r in 0 ..< h - 1 {
                // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
                let (win, bin) = (wt + fo.input, wt + fo.inputB)
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
                    let dh = config.heightDilation(l), cache = caches[l]
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
        }}}}}
        return x
    }

    /// Audio [F*hop] from mel [M, F] and latent z [F*hop] (MODEL-SPEC 8,
    /// then the LPC front's synthesis filter of section 11 if there is one).
    public func synthesise(mel: [T], frames: Int, z: [T], context: ComputeContext) -> [T] {
        let h = config.nGroup, t = frames * config.hopLength, w = t / h
        precondition(z.count == t)
        let condition = synthesisCondition(mel: mel, frames: frames)
        var x = squeezeAudio(z, batch: 1, width: w) // X_K, the last flow's permuted output
        for k in stride(from: config.nFlows - 1, through: 0, by: -1) {
            let zk = permuteRows(x, config.permutation(k), batch: 1, width: w)
            x = invertFlow(k, z: zk, condition: condition, width: w, context: context)
        }
        return frontSynthesis(unsqueezeAudio(x, batch: 1, width: w), mel: mel, frames: frames)
    }

    /// x from the flows' output e through the LPC front's all-pole filter
    /// (e itself when the model has no front).
    func frontSynthesis(_ e: [T], mel: [T], frames: Int) -> [T] {
        guard let front else { return e }
        let env = front.envelope(logMel: mel.map { Float($0) }, frames: frames)
        return front.synthesise(e.map { Float($0) }, envelope: env).map { T($0) }
    }

    /// The naive twin of `synthesise`: for every row, the whole network is
    /// run again on the rows produced so far (O(h^2)). Test oracle only.
    public func synthesiseNaive(mel: [T], frames: Int, z: [T], context: ComputeContext) -> [T] {
        let h = config.nGroup, t = frames * config.hopLength, w = t / h
        let up = upsample(mel: mel, batch: 1, frames: frames)
        let cd = squeezeCondition(up.stages.last!, batch: 1, condWidth: t, width: w)
        var x = squeezeAudio(z, batch: 1, width: w)
        for k in stride(from: config.nFlows - 1, through: 0, by: -1) {
            let zk = permuteRows(x, config.permutation(k), batch: 1, width: w)
            var xk = zk
            let cin = networkConditionInput(cd, flow: k, batch: 1, width: w)
            for i in 1..<h {
                let (p, _) = network(flow: k, xin: networkAudioInput(xk, batch: 1, width: w), cin: cin,
                                     batch: 1, height: h - 1, width: w, keepCache: false, context: context)
                let n = (h - 1) * w
                for j in 0..<w {
                    let ls = p[(i - 1) * w + j], tt = p[n + (i - 1) * w + j]
                    xk[i * w + j] = (zk[i * w + j] - tt) * T.exp(-ls)
                }
            }
            x = xk
        }
        return frontSynthesis(unsqueezeAudio(x, batch: 1, width: w), mel: mel, frames: frames)
    }
}

/// `invertFlow` for the operand storage `Real.withOperands` picks.
private struct FlowInversion<T: Real>: OperandsVisitor {
    typealias Scalar = T
    typealias Result = [T]
    let model: WaveFlowModel<T>, flow: Int, z: [T], condition: SynthesisCondition<T>, width: Int, context: ComputeContext
    func visit<O: ProductOperands>(_ o: O.Type) -> [T] where O.Scalar == T {
        model.invertFlow(flow, z: z, condition: condition, width: width, context: context, operands: o)
    }
}
