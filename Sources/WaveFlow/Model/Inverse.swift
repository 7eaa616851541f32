import Foundation

// Synthesis: the inverse of the flows (MODEL-SPEC section 8), row by row,
// with each layer's causal convolution fed from a ring buffer of its last
// 1 + 2*dh input rows (the streaming cache, explicit as in LPCNet).
//
// Synthesis layout (B = 1): a row of the grid is [C, w] or [M, w]; the
// condition is stored row-major by grid row, cond[i] = [M, w].

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
    /// channel c of `a` itself (in place) when given.
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

/// The condition for synthesis, one grid row at a time. All upsampling
/// stages but the last are materialised (1/f_last of the full condition);
/// the last transposed convolution is evaluated only at the columns of the
/// requested row (t = j*h + i), so the full-rate condition [M, F*hop] — the
/// largest array of a long synthesis — never exists.
public struct SynthesisCondition<T: Real> {
    /// Input of the last stage, [M, W] with W = F*hop / f.
    let input: [T]
    let weight: [T], bias: T
    let bands: Int, inWidth: Int, factor: Int, rows: Int, columns: Int
    let slope: T

    /// Row i as [M, w]: c[m, j*h + i] for j in 0..<w.
    public func row(_ i: Int) -> [T] {
        var out = [T](repeating: 0, count: bands * columns)
        out.withUnsafeMutableBufferPointer { row(i, columns: 0..<columns, into: $0.baseAddress!, rowStride: columns) }
        return out
    }

    /// Columns `js` of row i into `out` [M, js.count] with row stride
    /// `rowStride`: out[y * rowStride + j - js.lowerBound] = c[y, j*h + i].
    ///
    /// When f divides h (the usual h = f = 16), output column j = (j*h + i)
    /// draws on input columns j*(h/f) + q and that minus 1 with the same two
    /// kernel taps for every j (q and the taps depend on i only), so the row
    /// is a few scaled, shifted input rows: vector loops. Otherwise
    /// `rowNaive`, which is also the tests' oracle.
    public func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride ld: Int) {
        let (m, f, h, win, j0) = (bands, factor, rows, inWidth, js.lowerBound)
        guard h % f == 0 else { rowNaive(i, columns: js, into: out, rowStride: ld); return }
        let s = h / f, q = (i + f / 2) / f, t0 = i + f / 2 - q * f
        input.withUnsafeBufferPointer { ip in
            let inp = ip.baseAddress!
            for y in 0..<m {
                let o = out + y * ld
                o.update(repeating: bias, count: js.count)
                for ky in 0..<3 {
                    let yin = y + 1 - ky // output y = yin - 1 + ky
                    guard yin >= 0 && yin < m else { continue }
                    for d in 0..<2 {
                        // Input column j*s + q - d, kernel tap t0 + d*f.
                        let wgt = weight[ky * 2 * f + t0 + d * f], off = q - d
                        let lo = max(j0, off >= 0 ? 0 : (-off + s - 1) / s)
                        let hi = min(js.upperBound, win - 1 - off < 0 ? 0 : (win - 1 - off) / s + 1)
                        guard lo < hi else { continue }
                        let src = inp + yin * win + off, dst = o - j0
                        if s == 1 {
                            for j in lo..<hi { dst[j] += wgt * src[j] }
                        } else {
                            for j in lo..<hi { dst[j] += wgt * src[j * s] }
                        }
                    }
                }
                for j in 0..<js.count { let v = o[j]; o[j] = v < 0 ? v * slope : v }
            }
        }
    }

    /// The scalar twin of `row(_:columns:into:rowStride:)`, for any f and h.
    public func rowNaive(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride ld: Int) {
        let (m, f, h, win, j0) = (bands, factor, rows, inWidth, js.lowerBound)
        for y in 0..<m { (out + y * ld).update(repeating: bias, count: js.count) }
        for j in js {
            let xo = j * h + i
            // Input columns whose kernel (width 2f, offset -f/2) covers xo.
            let hi = (xo + f / 2) / f
            for xin in max(0, hi - 1) ... min(win - 1, hi) {
                let tap = xo - xin * f + f / 2
                if tap < 0 || tap >= 2 * f { continue }
                for y in 0..<m {
                    var s: T = 0
                    for ky in 0..<3 {
                        let yin = y + 1 - ky // output y = yin - 1 + ky
                        if yin >= 0 && yin < m { s += input[yin * win + xin] * weight[ky * 2 * f + tap] }
                    }
                    out[y * ld + j - j0] += s
                }
            }
        }
        for y in 0..<m {
            let r = out + y * ld
            for j in 0..<js.count where r[j] < 0 { r[j] *= slope }
        }
    }
}

/// Columns per block in synthesis: the per-row work (expansion, GEMMs, gate)
/// runs on blocks of this many columns, so its scratch stays small whatever
/// the duration; only the layers' row caches and the blocks' operand
/// matrices span the full width. 1024 keeps a block's products and gate in
/// the core's cache: 30 s of h16-c64 went from 19.0-21.1k (4096) to 25.6k
/// samples/s in bf16 (512: 23.8k), with 4 s unchanged. (Settable for tests.)
nonisolated(unsafe) public var synthesisBlockColumns = 1024

/// One worker's scratch for a column block of synthesis (`block` columns):
/// the pre-gate activations [2C, block], the gate [C, block] and as
/// operands, and the condition row [M, block] before conversion.
final class SynthesisScratch<O: ProductOperands> {
    let y, g, cond: UnsafeMutablePointer<O.Scalar>
    let gOperand: UnsafeMutablePointer<O.Element>

    init(channels c: Int, bands m: Int, block: Int) {
        y = .allocate(capacity: 2 * c * block)
        g = .allocate(capacity: c * block)
        cond = .allocate(capacity: m * block)
        gOperand = .allocate(capacity: c * block)
    }

    deinit { y.deallocate(); g.deallocate(); cond.deallocate(); gOperand.deallocate() }
}

/// One flow's weights for synthesis, arranged once per flow: per layer the
/// vertical taps 0 and 1 as [2C, 3C] operands, tap 2 joined with the
/// condition projection as [2C, 3C + M] (one product reads the expanded row
/// r and the condition row, stacked), the residual and skip projections as
/// one [2C, C]; the biases stay scalars: conv + condition biases go into the
/// gate, residual biases into the next layer's row store, and the skip
/// biases, summed over the layers, through the output layer into its bias.
final class SynthesisWeights<O: ProductOperands> {
    let c: Int, m: Int, layers: Int
    let taps: UnsafeMutablePointer<O.Element>     // [L][2][2C, 3C]
    let tapAndCond: UnsafeMutablePointer<O.Element> // [L][2C, 3C + M]
    let out: UnsafeMutablePointer<O.Element>      // [L][2C, C]
    let gateBias: UnsafeMutablePointer<O.Scalar>  // [L][2C]
    let residualBias: UnsafeMutablePointer<O.Scalar> // [L][C]
    let output: UnsafeMutablePointer<O.Scalar>    // [2, C]
    let outputBias: UnsafeMutablePointer<O.Scalar> // [2]

    init(model: WaveFlowModel<O.Scalar>, flow k: Int) {
        let cfg = model.config
        let (c, m, L) = (cfg.channels, cfg.nMels, cfg.nLayers)
        (self.c, self.m, layers) = (c, m, L)
        taps = .allocate(capacity: L * 2 * 2 * c * 3 * c)
        tapAndCond = .allocate(capacity: L * 2 * c * (3 * c + m))
        out = .allocate(capacity: L * 2 * c * c)
        gateBias = .allocate(capacity: L * 2 * c)
        residualBias = .allocate(capacity: L * c)
        output = .allocate(capacity: 2 * c)
        outputBias = .allocate(capacity: 2)
        let fo = model.flowOffsets[k]
        model.params.values.withUnsafeBufferPointer { wp in
            let wt = wp.baseAddress!
            for (l, lo) in fo.layers.enumerated() {
                let regrouped = CausalConv.regroup(wt + lo.conv, cin: c, cout: 2 * c) // [3][2C, 3C]
                regrouped.withUnsafeBufferPointer { O.convert($0.baseAddress!, count: 2 * 2 * c * 3 * c, into: taps + l * 2 * 2 * c * 3 * c) }
                for o in 0 ..< 2 * c {
                    let row = tapAndCond + (l * 2 * c + o) * (3 * c + m)
                    regrouped.withUnsafeBufferPointer { O.convert($0.baseAddress! + (2 * 2 * c + o) * 3 * c, count: 3 * c, into: row) }
                    O.convert(wt + lo.cond + o * m, count: m, into: row + 3 * c)
                    gateBias[l * 2 * c + o] = wt[lo.convB + o] + wt[lo.condB + o]
                }
                O.convert(wt + lo.out, count: 2 * c * c, into: out + l * 2 * c * c)
                (residualBias + l * c).update(from: wt + lo.outB, count: c)
            }
            output.update(from: wt + fo.output, count: 2 * c)
            for o in 0..<2 {
                var b = wt[fo.outputB + o]
                for ch in 0..<c {
                    var skipBias: O.Scalar = 0
                    for lo in fo.layers { skipBias += wt[lo.outB + c + ch] }
                    b += wt[fo.output + o * c + ch] * skipBias
                }
                outputBias[o] = b
            }
        }
    }

    deinit {
        taps.deallocate(); tapAndCond.deallocate(); out.deallocate(); gateBias.deallocate()
        residualBias.deallocate(); output.deallocate(); outputBias.deallocate()
    }
}

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
    /// With `matrixPrecision` bf16 (and oneDNN present, C >= 16) the products
    /// take bf16 operands; otherwise `T.gemm`'s.
    public func invertFlow(_ k: Int, z: [T], condition: SynthesisCondition<T>, width w: Int) -> [T] {
        if T.self == Float.self, matrixPrecision == .bf16, config.channels >= 16, case .success = OneDNN.shared {
            let model = self as! WaveFlowModel<Float>
            return model.invertFlow(k, z: z as! [Float], condition: condition as! SynthesisCondition<Float>, width: w,
                                    operands: BF16Operands.self) as! [T]
        }
        return invertFlow(k, z: z, condition: condition, width: w, operands: NativeOperands<T>.self)
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
                                        operands: O.Type) -> [T] where O.Scalar == T {
        let h = config.nGroup, c = config.channels, m = config.nMels, L = config.nLayers
        let fo = flowOffsets[k], map = config.rowMaps[k]
        let nBlocks = max(min(Threads.count, w), (w + synthesisBlockColumns - 1) / synthesisBlockColumns)
        let bounds = (0...nBlocks).map { w * $0 / nBlocks }
        let widest = (0..<nBlocks).map { bounds[$0 + 1] - bounds[$0] }.max()!
        let workers = min(nBlocks, Threads.count)
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
                        O.gemm(m: 2 * c, n: nb, k: kOp, a: weights.tapAndCond + l * 2 * c * kOp, lda: kOp, b: e, ldb: nb,
                               accumulate: false, c: s.y, ldc: nb)
                        // + W_tap x E(row r - (2 - tap) dh) for the taps whose row exists.
                        for tap in 0..<2 where cache.expand(r - (2 - tap) * dh, columns: j0..<j1, into: e) {
                            O.gemm(m: 2 * c, n: nb, k: 3 * c, a: weights.taps + (l * 2 + tap) * 2 * c * 3 * c, lda: 3 * c,
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
                        O.gemm(m: 2 * c, n: nb, k: c, a: weights.out + l * 2 * c * c, lda: c, b: s.gOperand, ldb: nb,
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

    /// Audio [F*hop] from mel [M, F] and latent z [F*hop] (MODEL-SPEC 8).
    public func synthesise(mel: [T], frames: Int, z: [T]) -> [T] {
        let h = config.nGroup, t = frames * config.hopLength, w = t / h
        precondition(z.count == t)
        let condition = synthesisCondition(mel: mel, frames: frames)
        var x = squeezeAudio(z, batch: 1, width: w) // X_K, the last flow's permuted output
        for k in stride(from: config.nFlows - 1, through: 0, by: -1) {
            let zk = permuteRows(x, config.permutation(k), batch: 1, width: w)
            x = invertFlow(k, z: zk, condition: condition, width: w)
        }
        return unsqueezeAudio(x, batch: 1, width: w)
    }

    /// The naive twin of `synthesise`: for every row, the whole network is
    /// run again on the rows produced so far (O(h^2)). Test oracle only.
    public func synthesiseNaive(mel: [T], frames: Int, z: [T]) -> [T] {
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
                                     batch: 1, height: h - 1, width: w, keepCache: false)
                let n = (h - 1) * w
                for j in 0..<w {
                    let ls = p[(i - 1) * w + j], tt = p[n + (i - 1) * w + j]
                    xk[i * w + j] = (zk[i * w + j] - tt) * T.exp(-ls)
                }
            }
            x = xk
        }
        return unsqueezeAudio(x, batch: 1, width: w)
    }
}
