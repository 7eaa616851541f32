import Foundation

// WaveFlow's flow k as a step (MODEL-SPEC section 5): an affine coupling,
// autoregressive over the grid's rows, whose log-scale and shift come from
// a 2-D WaveNet (the network: WaveFlowNetwork.swift). Its inverse is row by
// row with cached layer rows (WaveFlowInverse.swift).
//
// Shape letters: B batch, h rows, w columns, C channels, M mel bands,
// N = B*(h-1)*w network positions.

/// Offsets of one residual layer's tensors in the arena.
struct LayerOffsets: Sendable { var conv, convB, cond, condB, out, outB: Int }

/// WaveFlow's flow k: Z row 0 = X row 0, Z rows 1..h-1 = X * exp(log s) + t
/// with (log s, t) of row i predicted from X rows < i and the condition
/// rows of flow k's row order (`rowMap`).
public final class WaveFlowCoupling<T: Real>: FlowStep {
    public typealias Scalar = T
    public let name: String
    let params: ParameterSet<T>
    /// h, C, M, L.
    let rows: Int, channels: Int, bands: Int, layers: Int
    /// Height and width dilation per layer.
    let heightDilations: [Int], widthDilations: [Int]
    /// rowMap[i]: the row of the unpermuted condition that this flow's row i is.
    let rowMap: [Int]
    /// Offsets of the tensors, fixed at init (the arena is complete by then).
    let input: Int, inputB: Int, layerOffsets: [LayerOffsets], output: Int, outputB: Int

    /// Flow `k` of `config`, its tensors (`flows.k.*`) already in `params`.
    init(config: ModelConfig, flow k: Int, params: ParameterSet<T>) {
        let p = "flows.\(k)."
        name = p
        self.params = params
        (rows, channels, bands, layers) = (config.nGroup, config.channels, config.nMels, config.nLayers)
        heightDilations = (0..<config.nLayers).map(config.heightDilation)
        widthDilations = (0..<config.nLayers).map(config.widthDilation)
        rowMap = config.rowMaps[k]
        input = params.offset(p + "input.weight")
        inputB = params.offset(p + "input.bias")
        layerOffsets = (0..<config.nLayers).map { l in
            let q = p + "layers.\(l)."
            return LayerOffsets(conv: params.offset(q + "conv.weight"), convB: params.offset(q + "conv.bias"),
                                cond: params.offset(q + "cond.weight"), condB: params.offset(q + "cond.bias"),
                                out: params.offset(q + "out.weight"), outB: params.offset(q + "out.bias"))
        }
        output = params.offset(p + "output.weight")
        outputB = params.offset(p + "output.bias")
    }

    /// The arena's values and gradients.
    var weights: UnsafeMutablePointer<T> { params.valueBuffer.baseAddress! }
    var gradients: UnsafeMutablePointer<T> { params.gradBuffer.baseAddress! }

    /// The causal-in-height, same-in-width convolution of layer l.
    func convShape(layer l: Int, batch: Int, height: Int, width: Int) -> CausalConvShape {
        CausalConvShape(cin: channels, cout: 2 * channels, dh: heightDilations[l], dw: widthDilations[l],
                        batch: batch, height: height, width: width)
    }

    // MARK: - Forward and backward

    /// What the backward pass needs: X, the network's cache and log s [B, h-1, w].
    struct Cache { var x: [T]; var network: NetworkCache; var logS: [T] }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func forward(_ x: [T], condition cd: [T], grid: GridShape, keepCache: Bool, columnLogdet: Bool,
                        context: ComputeContext) -> StepForward<T> {
        let (batch, h, w) = (grid.batch, grid.rows, grid.width)
        let xin = networkAudioInput(x, batch: batch, width: w)
        let cin = networkConditionInput(cd, batch: batch, width: w)
        let (p, cache) = network(xin: xin, cin: cin, batch: batch, height: h - 1, width: w, keepCache: keepCache, context: context)
        let n = batch * (h - 1) * w
        var z = [T](repeating: 0, count: x.count)
        let logdet = p.withUnsafeBufferPointer { pp in
            AffineCoupling.forward(x: x, logS: pp.baseAddress!, t: pp.baseAddress! + n, z: &z, batch: batch, h: h, w: w)
        }
        var columns = [T]()
        if columnLogdet {
            columns = [T](repeating: 0, count: batch * w)
            for b in 0..<batch { for r in 0 ..< h - 1 { for j in 0..<w { columns[b * w + j] += p[(b * (h - 1) + r) * w + j] } } }
        }
        let kept = keepCache ? Cache(x: x, network: cache!, logS: Array(p[0..<n])) : nil
        return StepForward(output: z, logdet: logdet, columnLogdet: columns, cache: kept)
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func backward(_ f: StepForward<T>, dOutput dZ: [T], dLogdet: [T], dCondition: inout [T],
                         grid: GridShape, context: ComputeContext) -> [T] {
        guard let cache = f.cache as? Cache else { preconditionFailure("backward needs a forward pass with keepCache") }
        let (batch, h, w) = (grid.batch, grid.rows, grid.width)
        let n = batch * (h - 1) * w
        var dX = [T](repeating: 0, count: dZ.count)
        var dp = [T](repeating: 0, count: 2 * n)
        dp.withUnsafeMutableBufferPointer { dpp in
            AffineCoupling.backward(x: cache.x, logS: cache.logS, dZ: dZ, dLogdet: dLogdet, dX: &dX,
                                    dLogS: dpp.baseAddress!, dT: dpp.baseAddress! + n, batch: batch, h: h, w: w)
        }
        let (dXin, dCin) = networkBackward(cache: cache.network, dp: dp, context: context)
        for b in 0..<batch {
            for i in 0 ..< (h - 1) * w { dX[b * h * w + i] += dXin[b * (h - 1) * w + i] }
        }
        scatterConditionGrad(dCin, into: &dCondition, batch: batch, width: w)
        return dX
    }

    // MARK: - Gathering network inputs

    /// Xin [1, B, h-1, w]: rows 0..h-2 of X [B, h, w].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func networkAudioInput(_ x: [T], batch: Int, width w: Int) -> [T] {
        let h = rows
        return [T](unsafeUninitializedCapacity: batch * (h - 1) * w) { out, count in
            x.withUnsafeBufferPointer { xp in
                for b in 0..<batch { (out.baseAddress! + b * (h - 1) * w).initialize(from: xp.baseAddress! + b * h * w, count: (h - 1) * w) }
            }
            count = batch * (h - 1) * w
        }
    }

    /// Cin [M, B, h-1, w]: rows 1..h-1 of this flow's permuted condition,
    /// read from the unpermuted Cd [M, B, h, w] through the row map.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func networkConditionInput(_ cd: [T], batch: Int, width w: Int) -> [T] {
        let (h, m) = (rows, bands)
        // Row copies (slice replacement went element by element: 1% of training).
        return [T](unsafeUninitializedCapacity: m * batch * (h - 1) * w) { out, count in
            cd.withUnsafeBufferPointer { cp in
                for mi in 0..<m { for b in 0..<batch { for i in 0 ..< h - 1 {
                    let src = ((mi * batch + b) * h + rowMap[i + 1]) * w
                    let dst = ((mi * batch + b) * (h - 1) + i) * w
                    (out.baseAddress! + dst).initialize(from: cp.baseAddress! + src, count: w)
                } } }
            }
            count = m * batch * (h - 1) * w
        }
    }

    /// Adds dCin [M, B, h-1, w] back onto dCd [M, B, h, w] through the row map.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func scatterConditionGrad(_ dCin: [T], into dCd: inout [T], batch: Int, width w: Int) {
        let (h, m) = (rows, bands)
        dCd.withUnsafeMutableBufferPointer { dp in
            dCin.withUnsafeBufferPointer { sp in
                for mi in 0..<m { for b in 0..<batch { for i in 0 ..< h - 1 {
                    let dst = dp.baseAddress! + ((mi * batch + b) * h + rowMap[i + 1]) * w
                    let src = sp.baseAddress! + ((mi * batch + b) * (h - 1) + i) * w
                    for j in 0..<w { dst[j] += src[j] }
                } } }
            }
        }
    }

    // MARK: - The naive inverse

    /// For every row, the whole network is run again on the rows produced
    /// so far (O(h^2)): the oracle of the row-cached `inverse`.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func inverseNaive(_ z: [T], condition cd: [T], width w: Int, context: ComputeContext) -> [T] {
        let h = rows, n = (h - 1) * w
        var x = z
        let cin = networkConditionInput(cd, batch: 1, width: w)
        for i in 1..<h {
            let (p, _) = network(xin: networkAudioInput(x, batch: 1, width: w), cin: cin,
                                 batch: 1, height: h - 1, width: w, keepCache: false, context: context)
            for j in 0..<w {
                let ls = p[(i - 1) * w + j], tt = p[n + (i - 1) * w + j]
                x[i * w + j] = (z[i * w + j] - tt) * T.exp(-ls)
            }
        }
        return x
    }
}

/// The fixed row permutation between WaveFlow's flows (MODEL-SPEC section
/// 6): out row i = in row perm[i]; log-det 0; no parameters.
public final class RowPermutation<T: Real>: FlowStep {
    public typealias Scalar = T
    public var name: String { "" }
    /// out row i = in row perm[i]; `inversePermutation` undoes it.
    let permutation: [Int], inversePermutation: [Int]

    init(_ permutation: [Int]) {
        self.permutation = permutation
        var inv = permutation
        for (i, p) in permutation.enumerated() { inv[p] = i }
        inversePermutation = inv
    }

    /// Rows of X [B, h, w] reordered: out row i = in row perm[i].
    static func permuteRows(_ x: [T], _ perm: [Int], grid: GridShape) -> [T] {
        let (h, w) = (grid.rows, grid.width)
        var out = x
        for b in 0..<grid.batch { for i in 0..<h {
            let src = (b * h + perm[i]) * w, dst = (b * h + i) * w
            out.replaceSubrange(dst ..< dst + w, with: x[src ..< src + w])
        } }
        return out
    }

    public func forward(_ x: [T], condition cd: [T], grid: GridShape, keepCache: Bool, columnLogdet: Bool,
                        context: ComputeContext) -> StepForward<T> {
        StepForward(output: Self.permuteRows(x, permutation, grid: grid), logdet: [T](repeating: 0, count: grid.batch),
                    columnLogdet: columnLogdet ? [T](repeating: 0, count: grid.batch * grid.width) : [], cache: nil)
    }

    public func backward(_ f: StepForward<T>, dOutput dZ: [T], dLogdet: [T], dCondition: inout [T],
                         grid: GridShape, context: ComputeContext) -> [T] {
        Self.permuteRows(dZ, inversePermutation, grid: grid)
    }

    public func inverse(_ z: [T], condition: any ConditionRows<T>, width: Int, context: ComputeContext) -> [T] {
        Self.permuteRows(z, inversePermutation, grid: GridShape(batch: 1, rows: permutation.count, width: width))
    }

    public func inverseNaive(_ z: [T], condition cd: [T], width: Int, context: ComputeContext) -> [T] {
        inverse(z, condition: NoCondition<T>(), width: width, context: context)
    }
}

/// The condition of a step that reads none.
struct NoCondition<T: Real>: ConditionRows {
    var bands: Int { 0 }
    func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride: Int) {}
}
