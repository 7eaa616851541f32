import Foundation

// Synthesis: the inverse of the flows (MODEL-SPEC section 8), row by row,
// with each layer's causal convolution fed from a ring buffer of its last
// 1 + 2*dh input rows (the streaming cache, explicit as in LPCNet).
//
// Synthesis layout (B = 1): a row of the grid is [C, w] or [M, w]; the
// condition is stored row-major by grid row, cond[i] = [M, w].

/// The ring buffer of one residual layer's input rows: slot r % (1 + 2dh)
/// holds row r, [C, w]. Rows before 0 are the causal zero padding and are
/// skipped. A block of a row is handed to the matrix products "expanded" for
/// the layer's 3 horizontal taps (`expand`): E [3C, nb] with
/// E[kx*C + c, j] = a[c, j0 + j + (kx-1)*dw], 0 beyond the row's ends — a
/// block-sized copy instead of a 9C-row im2col. (Caching rows already
/// expanded saved a little copying but tripled the caches, the largest
/// arrays of a long synthesis.)
public final class LayerRowCache<T: Real> {
    public let dilation: Int, widthDilation: Int
    public let channels: Int, width: Int
    let slots: [UnsafeMutablePointer<T>]

    public init(dilation: Int, widthDilation: Int, channels: Int, width: Int) {
        self.dilation = dilation
        self.widthDilation = widthDilation
        self.channels = channels
        self.width = width
        slots = (0 ..< 1 + 2 * dilation).map { _ in
            let p = UnsafeMutablePointer<T>.allocate(capacity: channels * width)
            p.initialize(repeating: 0, count: channels * width)
            return p
        }
    }

    deinit { for p in slots { p.deallocate() } }

    /// Stores columns `js` of row r (`a` [C, w]).
    public func store(_ a: UnsafePointer<T>, at r: Int, columns js: Range<Int>) {
        let s = slots[r % slots.count]
        for ch in 0..<channels { (s + ch * width + js.lowerBound).update(from: a + ch * width + js.lowerBound, count: js.count) }
    }

    /// Writes columns `js` of row r, expanded, into `e` [3C, js.count].
    /// Returns false (writing nothing) for rows before 0.
    public func expand(_ r: Int, columns js: Range<Int>, into e: UnsafeMutablePointer<T>) -> Bool {
        guard r >= 0 else { return false }
        let (c, w, dw, nb) = (channels, width, widthDilation, js.count)
        let row = slots[r % slots.count]
        for kx in 0..<3 {
            for ch in 0..<c {
                CausalConv.copyShifted(row + ch * w, width: w, shift: (kx - 1) * dw, columns: js, into: e + (kx * c + ch) * nb)
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
        out.withUnsafeMutableBufferPointer { row(i, columns: 0..<columns, into: $0.baseAddress!) }
        return out
    }

    /// Columns `js` of row i, written into `out` [M, w] (row stride w, the
    /// other columns untouched).
    public func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>) {
        let (m, f, h, w, win) = (bands, factor, rows, columns, inWidth)
        for y in 0..<m { (out + y * w + js.lowerBound).update(repeating: bias, count: js.count) }
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
                    out[y * w + j] += s
                }
            }
        }
        for y in 0..<m {
            let r = out + y * w
            for j in js where r[j] < 0 { r[j] *= slope }
        }
    }
}

/// Columns per block in synthesis: the per-row work (expansion, GEMMs, gate)
/// runs on blocks of this many columns, so its scratch stays small whatever
/// the duration; only the layers' row caches span the full width. (Settable
/// for tests.)
nonisolated(unsafe) public var synthesisBlockColumns = 4096

/// One worker's scratch for a column block of synthesis (`block` columns):
/// an expanded input row [3C, block], the pre-gate activations [2C, block]
/// and the gate [C, block].
final class SynthesisScratch<T: Real> {
    let e, y, g: UnsafeMutablePointer<T>

    init(channels c: Int, block: Int) {
        e = .allocate(capacity: 3 * c * block)
        e.initialize(repeating: 0, count: 3 * c * block)
        y = .allocate(capacity: 2 * c * block)
        y.initialize(repeating: 0, count: 2 * c * block)
        g = .allocate(capacity: c * block)
        g.initialize(repeating: 0, count: c * block)
    }

    deinit { e.deallocate(); y.deallocate(); g.deallocate() }
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
    ///
    /// Per row and layer: y = sum over the 3 vertical taps of W_tap [2C, 3C]
    /// x E(row - (2-tap)dh) [3C, block] (a cached row expanded for the
    /// horizontal taps, see ``LayerRowCache``) + W_cond x cond + biases; gate; then the residual
    /// and skip halves of the output 1x1 product are accumulated straight
    /// into the running activations. Within a row, the columns split into
    /// blocks that are independent (a block reads complete earlier rows and
    /// writes only its own columns); blocks run in parallel with one BLAS
    /// thread each, so the elementwise work is shared by the cores too.
    /// Blocks are at most `synthesisBlockColumns` wide and scratch is per
    /// worker, so it does not grow with the duration.
    public func invertFlow(_ k: Int, z: [T], condition: SynthesisCondition<T>, width w: Int) -> [T] {
        let h = config.nGroup, c = config.channels, m = config.nMels, L = config.nLayers
        let fo = flowOffsets[k], map = config.rowMaps[k]
        let nBlocks = max(min(Threads.count, w), (w + synthesisBlockColumns - 1) / synthesisBlockColumns)
        let bounds = (0...nBlocks).map { w * $0 / nBlocks }
        let widest = (0..<nBlocks).map { bounds[$0 + 1] - bounds[$0] }.max()!
        let workers = min(nBlocks, Threads.count)
        let scratch = (0..<workers).map { _ in SynthesisScratch<T>(channels: c, block: widest) }
        let caches = (0..<L).map {
            LayerRowCache<T>(dilation: config.heightDilation($0), widthDilation: config.widthDilation($0), channels: c, width: w)
        }
        let weights = params.values
        let tapWeights: [[T]] = weights.withUnsafeBufferPointer { wp in
            fo.layers.map { CausalConv.regroup(wp.baseAddress! + $0.conv, cin: c, cout: 2 * c) }
        }
        var x = z // row 0 is copied
        var a = [T](repeating: 0, count: c * w), skip = [T](repeating: 0, count: c * w)
        var p = [T](repeating: 0, count: 2 * w)
        var cond = [T](repeating: 0, count: m * w)
        /// Runs `body(j0, j1, scratch)` for every column block, in parallel.
        func forEachBlock(_ body: (Int, Int, SynthesisScratch<T>) -> Void) {
            Threads.parallelFor(workers) { wk in
                var b = wk
                while b < nBlocks { body(bounds[b], bounds[b + 1], scratch[wk]); b += workers }
            }
        }
        let savedBLAS = BLAS.threads
        BLAS.threads = 1 // all parallelism is over column blocks (no idle BLAS pool spinning)
        defer { BLAS.threads = savedBLAS }
        weights.withUnsafeBufferPointer { wp in
        a.withUnsafeMutableBufferPointer { ap in
        skip.withUnsafeMutableBufferPointer { skp in
        cond.withUnsafeMutableBufferPointer { cdp in
        p.withUnsafeMutableBufferPointer { pp in
        x.withUnsafeMutableBufferPointer { xp in
        z.withUnsafeBufferPointer { zp in
            let wt = wp.baseAddress!, aa = ap.baseAddress!, sk = skp.baseAddress!, cd = cdp.baseAddress!
            let pr = pp.baseAddress!, xx = xp.baseAddress!, zz = zp.baseAddress!
            for r in 0 ..< h - 1 {
                // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
                let (win, bin) = (wt + fo.input, wt + fo.inputB)
                forEachBlock { j0, j1, _ in
                    for ch in 0..<c {
                        let row = aa + ch * w, s = sk + ch * w
                        for j in j0..<j1 { row[j] = win[ch] * xx[r * w + j] + bin[ch]; s[j] = 0 }
                    }
                    condition.row(map[r + 1], columns: j0..<j1, into: cd)
                }
                for l in 0..<L {
                    let lo = fo.layers[l], dh = config.heightDilation(l), cache = caches[l]
                    // Stored in a pass of its own: a block's taps read the
                    // neighbouring blocks' columns of row r (up to dw away).
                    forEachBlock { j0, j1, _ in cache.store(aa, at: r, columns: j0..<j1) }
                    tapWeights[l].withUnsafeBufferPointer { twp in
                        let tw = twp.baseAddress!
                        forEachBlock { j0, j1, s in
                            let nb = j1 - j0
                            // y = W_cond x cond + conv and cond biases.
                            T.gemm(transA: false, transB: false, m: 2 * c, n: nb, k: m, alpha: 1, a: wt + lo.cond, lda: m,
                                   b: cd + j0, ldb: w, beta: 0, c: s.y, ldc: nb)
                            for o in 0 ..< 2 * c {
                                let b = wt[lo.convB + o] + wt[lo.condB + o], row = s.y + o * nb
                                for j in 0..<nb { row[j] += b }
                            }
                            // + sum over vertical taps of W_tap x E(row r - (2 - tap) dh).
                            for tap in 0..<3 {
                                guard cache.expand(r - (2 - tap) * dh, columns: j0..<j1, into: s.e) else { continue }
                                T.gemm(transA: false, transB: false, m: 2 * c, n: nb, k: 3 * c, alpha: 1,
                                       a: tw + tap * 2 * c * 3 * c, lda: 3 * c, b: s.e, ldb: nb, beta: 1, c: s.y, ldc: nb)
                            }
                            Gate.forward(s.y, s.g, channels: c, n: nb)
                            // a += W_res x g + b_res; skip += W_skip x g + b_skip (in place, row stride w).
                            T.gemm(transA: false, transB: false, m: c, n: nb, k: c, alpha: 1, a: wt + lo.out, lda: c,
                                   b: s.g, ldb: nb, beta: 1, c: aa + j0, ldc: w)
                            T.gemm(transA: false, transB: false, m: c, n: nb, k: c, alpha: 1, a: wt + lo.out + c * c, lda: c,
                                   b: s.g, ldb: nb, beta: 1, c: sk + j0, ldc: w)
                            for ch in 0..<c {
                                let ba = wt[lo.outB + ch], bs = wt[lo.outB + c + ch]
                                let ar = aa + ch * w + j0, sr = sk + ch * w + j0
                                for j in 0..<nb { ar[j] += ba; sr[j] += bs }
                            }
                        }
                    }
                }
                forEachBlock { j0, j1, _ in
                    // log s and t of row r + 1, then its inverse coupling.
                    let nb = j1 - j0
                    T.gemm(transA: false, transB: false, m: 2, n: nb, k: c, alpha: 1, a: wt + fo.output, lda: c,
                           b: sk + j0, ldb: w, beta: 0, c: pr + j0, ldc: w)
                    for j in j0..<j1 { pr[j] += wt[fo.outputB]; pr[w + j] += wt[fo.outputB + 1] }
                    AffineCoupling.inverseRow(z: zz + (r + 1) * w + j0, logS: pr + j0, t: pr + w + j0,
                                              x: xx + (r + 1) * w + j0, count: nb)
                }
            }
        }}}}}}}
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
