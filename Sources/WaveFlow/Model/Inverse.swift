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

extension WaveFlowModel {
    /// The condition for synthesis, [h][M, w] (grid row i, band m, column j
    /// = c[m, j*h + i]), from mel [M, F]. w = F*hop/h.
    public func synthesisCondition(mel: [T], frames: Int) -> [[T]] {
        let up = upsample(mel: mel, batch: 1, frames: frames)
        let c = up.stages.last!
        let h = config.nGroup, m = config.nMels, t = frames * config.hopLength, w = t / h
        return (0..<h).map { i in
            var row = [T](repeating: 0, count: m * w)
            for mi in 0..<m { for j in 0..<w { row[mi * w + j] = c[mi * t + j * h + i] } }
            return row
        }
    }

    /// Inverts flow k on Z [h, w] (its own row order) with the condition as
    /// flow k saw it; returns X [h, w]. Each network row is computed once.
    public func invertFlow(_ k: Int, z: [T], condition: [[T]], width w: Int) -> [T] {
        let h = config.nGroup, c = config.channels, m = config.nMels, L = config.nLayers
        let fo = flowOffsets[k], map = config.rowMaps[k]
        var x = z // row 0 is copied
        var caches = (0..<L).map { LayerRowCache<T>(dilation: config.heightDilation($0), channels: c, width: w) }
        var a = [T](repeating: 0, count: c * w), y = [T](repeating: 0, count: 2 * c * w)
        var g = [T](repeating: 0, count: c * w), o = [T](repeating: 0, count: 2 * c * w)
        var skip = [T](repeating: 0, count: c * w), p = [T](repeating: 0, count: 2 * w)
        var stacked = [T](repeating: 0, count: 3 * c * w), col = [T](repeating: 0, count: 9 * c * w)
        var xrow = [T](repeating: 0, count: w)
        let weights = params.values
        weights.withUnsafeBufferPointer { wp in
            let wt = wp.baseAddress!
            for r in 0 ..< h - 1 {
                // Network row r predicts grid row r + 1 from X rows <= r and condition row r + 1.
                xrow.replaceSubrange(0..<w, with: x[r * w ..< (r + 1) * w])
                Conv1x1.forward(cin: 1, cout: c, n: w, input: xrow, weight: wt + fo.input, bias: wt + fo.inputB, output: &a)
                for i in 0 ..< c * w { skip[i] = 0 }
                let cond = condition[map[r + 1]]
                for l in 0..<L {
                    let lo = fo.layers[l]
                    caches[l].store(a, at: r)
                    caches[l].stack(at: r, into: &stacked)
                    let geo = ConvGeometry(cin: c, cout: 2 * c, kh: 3, kw: 3, dh: 1, dw: config.widthDilation(l),
                                           padTop: 0, padBottom: 0, padLeft: config.widthDilation(l),
                                           padRight: config.widthDilation(l), batch: 1, height: 3, width: w)
                    stacked.withUnsafeBufferPointer { sp in
                        y.withUnsafeMutableBufferPointer { yp in
                            col.withUnsafeMutableBufferPointer { cp in
                                Conv2D.forward(geo, input: sp.baseAddress!, weight: wt + lo.conv, bias: wt + lo.convB,
                                               output: yp.baseAddress!, col: cp.baseAddress!)
                            }
                        }
                    }
                    Conv1x1.forward(cin: m, cout: 2 * c, n: w, input: cond, weight: wt + lo.cond, bias: wt + lo.condB,
                                    output: &y, accumulate: true)
                    y.withUnsafeBufferPointer { yp in
                        g.withUnsafeMutableBufferPointer { Gate.forward(yp.baseAddress!, $0.baseAddress!, channels: c, n: w) }
                    }
                    Conv1x1.forward(cin: c, cout: 2 * c, n: w, input: g, weight: wt + lo.out, bias: wt + lo.outB, output: &o)
                    for i in 0 ..< c * w { a[i] += o[i]; skip[i] += o[c * w + i] }
                }
                Conv1x1.forward(cin: c, cout: 2, n: w, input: skip, weight: wt + fo.output, bias: wt + fo.outputB, output: &p)
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
