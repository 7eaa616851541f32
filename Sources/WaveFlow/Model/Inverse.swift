import Foundation

// Synthesis: the inverse of the flows (MODEL-SPEC section 8), row by row,
// with each layer's causal convolution fed from a ring buffer of its last
// 1 + 2*dh input rows (the streaming cache, explicit as in LPCNet).
//
// Synthesis layout (B = 1): a row of the grid is [C, w] or [M, w]; the
// condition is stored row-major by grid row, cond[i] = [M, w].

/// The ring buffer of one residual layer's input rows: slot r % (1 + 2dh)
/// holds row r, [C, w]. Rows before 0 read as zeros (the causal padding).
public struct LayerRowCache<T: Real> {
    public let dilation: Int
    public let channels: Int, width: Int
    var slots: [[T]]

    public init(dilation: Int, channels: Int, width: Int) {
        self.dilation = dilation
        self.channels = channels
        self.width = width
        slots = Array(repeating: [T](repeating: 0, count: channels * width), count: 1 + 2 * dilation)
    }

    /// Stores row r.
    public mutating func store(_ row: [T], at r: Int) { slots[r % slots.count] = row }

    /// Writes rows r-2dh, r-dh, r as [C, 3, w] into `stacked`.
    public func stack(at r: Int, into stacked: inout [T]) {
        let (c, w) = (channels, width)
        for tap in 0..<3 {
            let row = r - (2 - tap) * dilation
            for ch in 0..<c {
                let dst = (ch * 3 + tap) * w
                if row < 0 {
                    stacked.replaceSubrange(dst ..< dst + w, with: repeatElement(0, count: w))
                } else {
                    let src = slots[row % slots.count]
                    stacked.replaceSubrange(dst ..< dst + w, with: src[ch * w ..< (ch + 1) * w])
                }
            }
        }
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
        let (m, f, h, w, win) = (bands, factor, rows, columns, inWidth)
        var out = [T](repeating: bias, count: m * w)
        for j in 0..<w {
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
        for k in out.indices where out[k] < 0 { out[k] *= slope }
        return out
    }
}

/// Columns per block in synthesis: the per-row work (im2col, GEMMs, gate)
/// runs on blocks of this many columns, so its scratch stays small whatever
/// the duration; only the layers' row caches span the full width. (Settable
/// for tests.)
nonisolated(unsafe) public var synthesisBlockColumns = 4096

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
    public func invertFlow(_ k: Int, z: [T], condition: SynthesisCondition<T>, width w: Int) -> [T] {
        let h = config.nGroup, c = config.channels, m = config.nMels, L = config.nLayers
        let fo = flowOffsets[k], map = config.rowMaps[k]
        let block = min(w, synthesisBlockColumns)
        var x = z // row 0 is copied
        var caches = (0..<L).map { LayerRowCache<T>(dilation: config.heightDilation($0), channels: c, width: w) }
        var a = [T](repeating: 0, count: c * w), skip = [T](repeating: 0, count: c * w)
        var p = [T](repeating: 0, count: 2 * w)
        var stacked = [T](repeating: 0, count: 3 * c * w)
        // Block scratch: [.., block] each.
        var sub = [T](repeating: 0, count: 3 * c * (block + 2 * (1 << (L - 1))))
        var col = [T](repeating: 0, count: 9 * c * block)
        var y = [T](repeating: 0, count: 2 * c * block), g = [T](repeating: 0, count: c * block)
        var o = [T](repeating: 0, count: 2 * c * block), condBlock = [T](repeating: 0, count: m * block)
        var skipBlock = [T](repeating: 0, count: c * block), pBlock = [T](repeating: 0, count: 2 * block)
        var xrow = [T](repeating: 0, count: w)
        let weights = params.values
        weights.withUnsafeBufferPointer { wp in
            let wt = wp.baseAddress!
            for r in 0 ..< h - 1 {
                // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
                xrow.replaceSubrange(0..<w, with: x[r * w ..< (r + 1) * w])
                Conv1x1.forward(cin: 1, cout: c, n: w, input: xrow, weight: wt + fo.input, bias: wt + fo.inputB, output: &a)
                for i in 0 ..< c * w { skip[i] = 0 }
                let cond = condition.row(map[r + 1])
                for l in 0..<L {
                    let lo = fo.layers[l], dw = config.widthDilation(l)
                    caches[l].store(a, at: r)
                    caches[l].stack(at: r, into: &stacked)
                    var j0 = 0
                    while j0 < w {
                        let j1 = min(w, j0 + block), nb = j1 - j0
                        // Input columns the block's 3x3 taps reach, and the zero padding beyond the row.
                        let lo0 = max(0, j0 - dw), hi0 = min(w, j1 + dw)
                        let sw = hi0 - lo0
                        for ch in 0 ..< 3 * c {
                            sub.replaceSubrange(ch * sw ..< (ch + 1) * sw, with: stacked[ch * w + lo0 ..< ch * w + hi0])
                        }
                        let geo = ConvGeometry(cin: c, cout: 2 * c, kh: 3, kw: 3, dh: 1, dw: dw, padTop: 0, padBottom: 0,
                                               padLeft: dw - (j0 - lo0), padRight: dw - (hi0 - j1), batch: 1, height: 3, width: sw)
                        sub.withUnsafeBufferPointer { sp in
                            y.withUnsafeMutableBufferPointer { yp in
                                col.withUnsafeMutableBufferPointer { cp in
                                    Conv2D.forward(geo, input: sp.baseAddress!, weight: wt + lo.conv, bias: wt + lo.convB,
                                                   output: yp.baseAddress!, col: cp.baseAddress!)
                                }
                            }
                        }
                        for mi in 0..<m { condBlock.replaceSubrange(mi * nb ..< (mi + 1) * nb, with: cond[mi * w + j0 ..< mi * w + j1]) }
                        Conv1x1.forward(cin: m, cout: 2 * c, n: nb, input: condBlock, weight: wt + lo.cond, bias: wt + lo.condB,
                                        output: &y, accumulate: true)
                        y.withUnsafeBufferPointer { yp in
                            g.withUnsafeMutableBufferPointer { Gate.forward(yp.baseAddress!, $0.baseAddress!, channels: c, n: nb) }
                        }
                        Conv1x1.forward(cin: c, cout: 2 * c, n: nb, input: g, weight: wt + lo.out, bias: wt + lo.outB, output: &o)
                        for ch in 0..<c {
                            for j in 0..<nb {
                                a[ch * w + j0 + j] += o[ch * nb + j]
                                skip[ch * w + j0 + j] += o[(c + ch) * nb + j]
                            }
                        }
                        j0 = j1
                    }
                }
                var j0 = 0
                while j0 < w {
                    let j1 = min(w, j0 + block), nb = j1 - j0
                    for ch in 0..<c { skipBlock.replaceSubrange(ch * nb ..< (ch + 1) * nb, with: skip[ch * w + j0 ..< ch * w + j1]) }
                    Conv1x1.forward(cin: c, cout: 2, n: nb, input: skipBlock, weight: wt + fo.output, bias: wt + fo.outputB, output: &pBlock)
                    p.replaceSubrange(j0 ..< j1, with: pBlock[0..<nb])
                    p.replaceSubrange(w + j0 ..< w + j1, with: pBlock[nb ..< 2 * nb])
                    j0 = j1
                }
                p.withUnsafeBufferPointer { pp in
                    x.withUnsafeMutableBufferPointer { xp in
                        z.withUnsafeBufferPointer { zp in
                            AffineCoupling.inverseRow(z: zp.baseAddress! + (r + 1) * w, logS: pp.baseAddress!, t: pp.baseAddress! + w,
                                                      x: xp.baseAddress! + (r + 1) * w, count: w)
                        }
                    }
                }
            }
        }
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
