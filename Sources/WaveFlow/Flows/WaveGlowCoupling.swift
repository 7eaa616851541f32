import Foundation

// WaveGlow's coupling k (MODEL-SPEC 12.3-12.4): of the c_k channels still in
// the flow (grid rows e_k ..< h, the rows before them left as early
// outputs), one half goes through WN_k with the condition and predicts the
// shift t and log-scale of the other half: RealNVP's affine coupling, or
// NICE's additive one (log s = 0). Inverse in one parallel pass.
//
// Shape letters: B batch, h = G rows (channels), w columns, nh = c_k / 2,
// N = B*w positions, MG = M*G condition channels.

/// WaveGlow's affine or additive coupling of flow k.
public final class WaveGlowCoupling<T: Real>: FlowStep {
    public typealias Scalar = T
    public let name: String
    /// k.
    let flow: Int
    let params: ParameterSet<T>
    let network: WaveGlowNetwork<T>
    /// The rows WN_k reads and the rows it transforms (nh each).
    let inputRows: Range<Int>, transformedRows: Range<Int>
    /// NICE's volume-preserving coupling: WN_k predicts t only.
    let additive: Bool
    let bands: Int, group: Int

    /// Coupling k of `config` on rows `first ..< n_group`, its tensors (`WN.k.*`) already in `params`.
    init(config: ModelConfig, flow k: Int, firstRow e: Int, params: ParameterSet<T>) {
        name = "WN.\(k)."
        flow = k
        self.params = params
        let nh = (config.nGroup - e) / 2
        additive = config.coupling == "additive"
        // The authors' first layout: odd flows transform the first half.
        let swapped = config.alternateHalves && k % 2 == 1
        inputRows = swapped ? e + nh ..< e + 2 * nh : e ..< e + nh
        transformedRows = swapped ? e ..< e + nh : e + nh ..< e + 2 * nh
        network = WaveGlowNetwork(prefix: name, inputs: nh, outputs: additive ? nh : 2 * nh, config: config, params: params)
        (bands, group) = (config.nMels, config.nGroup)
    }

    var weights: UnsafeMutablePointer<T> { params.valueBuffer.baseAddress! }
    var gradients: UnsafeMutablePointer<T> { params.gradBuffer.baseAddress! }
    var halfRows: Int { inputRows.count }

    // MARK: - Gathering

    /// [rows.count, N] from X [B, h, w]: row r, column b*w + j = X[b, rows[r], j].
    func gatherRows(_ x: UnsafePointer<T>, _ rows: Range<Int>, grid: GridShape) -> OwnedBuffer<T> {
        let (h, w, bn) = (grid.rows, grid.width, grid.batch)
        let out = OwnedBuffer<T>(repeating: 0, count: rows.count * bn * w)
        for (r, row) in rows.enumerated() { for b in 0..<bn {
            (out.pointer + (r * bn + b) * w).update(from: x + (b * h + row) * w, count: w)
        } }
        return out
    }

    /// Cg [MG, N] from Cd [M, B, h, w]: Cg[m*G + i, b*w + j] = Cd[m, b, i, j].
    func groupedCondition(_ cd: UnsafePointer<T>, grid: GridShape) -> OwnedBuffer<T> {
        let out = OwnedBuffer<T>(unsetCount: bands * grid.rows * grid.batch * grid.width)
        groupedCondition(cd, grid: grid, into: out.pointer)
        return out
    }

    /// The same into `out` (M G N values, every one written).
    func groupedCondition(_ cd: UnsafePointer<T>, grid: GridShape, into out: UnsafeMutablePointer<T>) {
        let (h, w, bn) = (grid.rows, grid.width, grid.batch)
        for m in 0..<bands { for i in 0..<h { for b in 0..<bn {
            (out + ((m * h + i) * bn + b) * w).initialize(from: cd + ((m * bn + b) * h + i) * w, count: w)
        } } }
    }

    /// Adds dCg [MG, N] back onto dCd [M, B, h, w].
    func scatterConditionGrad(_ dcg: OwnedBuffer<T>, into dcd: UnsafeMutablePointer<T>, grid: GridShape) {
        let (h, w, bn) = (grid.rows, grid.width, grid.batch)
        for m in 0..<bands { for i in 0..<h { for b in 0..<bn {
            let src = dcg.pointer + ((m * h + i) * bn + b) * w, dst = dcd + ((m * bn + b) * h + i) * w
            for j in 0..<w { dst[j] += src[j] }
        } } }
    }

    // MARK: - Forward and backward

    /// What the backward pass needs: X, log s [nh, N] (affine), WN's cache
    /// and its condition Cg [MG, N]: with one batch item Cd itself (the
    /// same layout, not copied), else Cd grouped.
    struct Cache {
        var x: [T]; var logS: OwnedBuffer<T>?; var network: WaveGlowNetwork<T>.Cache
        var condition: [T]
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func forward(_ x: [T], condition cd: [T], grid: GridShape, keepCache: Bool, columnLogdet: Bool,
                        context: ComputeContext) -> StepForward<T> {
        let (h, w, bn, nh) = (grid.rows, grid.width, grid.batch, halfRows)
        let n = bn * w
        let a0 = x.withUnsafeBufferPointer { gatherRows($0.baseAddress!, inputRows, grid: grid) }
        // Cg [MG, N]: for B = 1, Cd [M, 1, h, w] is already laid out so.
        let cg = bn == 1 ? cd : [T](unsafeUninitializedCapacity: cd.count) { out, count in
            cd.withUnsafeBufferPointer { groupedCondition($0.baseAddress!, grid: grid, into: out.baseAddress!) }
            count = cd.count
        }
        let netCache = keepCache ? WaveGlowNetwork<T>.Cache(batch: bn, width: w, input: a0) : nil
        let out = cg.withUnsafeBufferPointer {
            network.forward(input: a0, condition: .borrowed($0.baseAddress!), batch: bn, width: w, weights: weights, cache: netCache,
                            context: context)
        }
        // out = [t; log s]: rows 0..<nh are t, nh..<2nh log s (affine only).
        var z = x
        var logdet = [T](repeating: 0, count: bn)
        var columns = [T](repeating: 0, count: columnLogdet ? n : 0)
        let t = out.pointer, logS = additive ? nil : out.pointer + nh * n
        for (r, row) in transformedRows.enumerated() { for b in 0..<bn {
            let src = (b * h + row) * w, p = (r * bn + b) * w
            for j in 0..<w {
                if let logS {
                    z[src + j] = x[src + j] * T.exp(logS[p + j]) + t[p + j]
                    logdet[b] += logS[p + j]
                    if columnLogdet { columns[b * w + j] += logS[p + j] }
                } else {
                    z[src + j] = x[src + j] + t[p + j]
                }
            }
        } }
        let kept = keepCache ? Cache(x: x, logS: logS.map { OwnedBuffer(copying: $0, count: nh * n) }, network: netCache!, condition: cg)
            : nil
        return StepForward(output: z, logdet: logdet, columnLogdet: columns, cache: kept)
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func backward(_ f: StepForward<T>, dOutput dZ: [T], dLogdet: [T], dCondition: inout [T],
                         grid: GridShape, context: ComputeContext) -> [T] {
        guard let cache = f.cache as? Cache else { preconditionFailure("backward needs a forward pass with keepCache") }
        let (h, w, bn, nh) = (grid.rows, grid.width, grid.batch, halfRows)
        let n = bn * w
        var dX = dZ
        // dOut = [dt; d log s].
        let dOut = OwnedBuffer<T>(repeating: 0, count: network.outputs * n)
        for (r, row) in transformedRows.enumerated() { for b in 0..<bn {
            let src = (b * h + row) * w, p = (r * bn + b) * w
            for j in 0..<w {
                let dz = dZ[src + j]
                dOut.pointer[p + j] = dz
                if let logS = cache.logS {
                    let s = T.exp(logS.pointer[p + j])
                    dX[src + j] = dz * s
                    dOut.pointer[nh * n + p + j] = dz * cache.x[src + j] * s + dLogdet[b]
                }
            }
        } }
        // dCg [MG, N]: for B = 1 straight into dCd (the same layout), else grouped then scattered.
        let dCg = bn == 1 ? nil : OwnedBuffer<T>(repeating: 0, count: bands * group * n)
        let dA0 = cache.condition.withUnsafeBufferPointer { cg in
            dCondition.withUnsafeMutableBufferPointer { dcd in
                network.backward(cache: cache.network, condition: cg.baseAddress!, dOut: dOut.pointer, weights: weights,
                                 grads: gradients, dCondition: dCg?.pointer ?? dcd.baseAddress!, context: context)
            }
        }
        for (r, row) in inputRows.enumerated() { for b in 0..<bn {
            let dst = (b * h + row) * w, src = dA0.pointer + (r * bn + b) * w
            for j in 0..<w { dX[dst + j] += src[j] }
        } }
        if let dCg { dCondition.withUnsafeMutableBufferPointer { scatterConditionGrad(dCg, into: $0.baseAddress!, grid: grid) } }
        return dX
    }

    // MARK: - Inverse

    /// X from Z [h, w] (B = 1): WN_k on the untouched half, then
    /// x = (z - t) exp(-log s) on the other, in column blocks (see
    /// `invertColumns`) over the cores. With a `FoldedCondition` every
    /// column's projection is made at once from the mel's windows, written
    /// straight into each block's buffer (its columns and halo); any other
    /// condition is grouped whole first and each block projects its columns.
    @_specialize(where T == Float)
    public func inverse(_ z: [T], condition: any ConditionRows<T>, width w: Int, context: ComputeContext) -> [T] {
        let grid = GridShape(batch: 1, rows: group, width: w)
        let count = inverseBlocks(width: w, context: context)
        if let folded = condition as? FoldedCondition<T>, w == folded.frames * folded.fold.phases {
            // The projection s [2CL, w] of every column at once, into each block's [2CL, columns with halo];
            // the blocks hold whole frames.
            let rows = folded.fold.outputs
            let blocks = Self.frameBlocks(frames: folded.frames, phases: folded.fold.phases, count: count)
            let spans = blocks.map { haloColumns($0, width: w) }
            let buffers = spans.map { OwnedBuffer<T>(unsetCount: rows * $0.count) }
            folded.fold.project(flow: flow, condition: folded, blocks: blocks,
                                into: zip(spans, buffers).map { .init(columns: $0, pointer: $1.pointer) }, context: context)
            return invertColumns(z, grid: grid, blocks: blocks, context: context) { i, _ in .projected(buffers[i]) }
        }
        let blocks = Self.columnBlocks(width: w, count: count)
        let cg = OwnedBuffer<T>(repeating: 0, count: bands * group * w)
        if let whole = condition as? UpsampledCondition<T> {
            whole.grouped(into: cg.pointer)
        } else {
            for i in 0..<group { condition.row(i, columns: 0..<w, into: cg.pointer + i * w, rowStride: group * w) }
        }
        return invertColumns(z, grid: grid, blocks: blocks, context: context) {
            .grouped(Self.columns($1, of: cg, rows: self.bands * self.group, width: w))
        }
    }

    /// The same from the whole condition Cd [M, 1, h, w], in one block: the
    /// oracle of the blocked `inverse`.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func inverseNaive(_ z: [T], condition cd: [T], width w: Int, context: ComputeContext) -> [T] {
        let grid = GridShape(batch: 1, rows: group, width: w)
        let cg = cd.withUnsafeBufferPointer { groupedCondition($0.baseAddress!, grid: grid) }
        return invertColumns(z, grid: grid, blocks: [0..<w], context: context) {
            .grouped(Self.columns($1, of: cg, rows: self.bands * self.group, width: w))
        }
    }

    /// Columns `js` of a [rows, w] matrix (Cg, or the folded projection), as [rows, js.count].
    static func columns(_ js: Range<Int>, of m: OwnedBuffer<T>, rows: Int, width w: Int) -> OwnedBuffer<T> {
        let out = OwnedBuffer<T>(unsetCount: rows * js.count)
        for r in 0..<rows { (out.pointer + r * js.count).update(from: m.pointer + r * w + js.lowerBound, count: js.count) }
        return out
    }

    /// Columns one side of a column that WN_k's output there depends on: the
    /// dilated taps reach 2^i columns in layer i.
    var reach: Int { (1 << network.layers) - 1 }

    /// How many column blocks the inverse of `w` columns runs in: one per
    /// worker (each block's products then run on one thread, so BLAS's,
    /// oneDNN's and our thread pools never wait on each other), more when
    /// blocks would exceed the context's synthesis block, and one when w is
    /// too short for the halo (2 * reach recomputed columns per block) to
    /// stay under 1/8 of the work.
    func inverseBlocks(width w: Int, context: ComputeContext) -> Int {
        let longest = Self.longestBlock(layers: network.layers, preferred: context.synthesisBlockColumns)
        guard w >= 16 * reach else { return 1 }
        let byLength = (w + longest - 1) / longest
        let workers = max(1, context.threads)
        return (byLength + workers - 1) / workers * workers
    }

    /// The widest column block synthesis runs in: `preferred` (the
    /// context's synthesis block), but at least 16 halos of 2^L - 1 columns.
    public static func longestBlock(layers: Int, preferred: Int) -> Int { max(preferred, 16 * ((1 << layers) - 1)) }

    /// `count` column blocks of equal width (within one column) over `w`
    /// columns; fewer when w is narrower than count.
    static func columnBlocks(width w: Int, count: Int) -> [Range<Int>] {
        let n = max(1, min(count, w))
        return (0..<n).map { w * $0 / n ..< w * ($0 + 1) / n }
    }

    /// `columnBlocks` of whole frames (P columns each) over F*P columns.
    static func frameBlocks(frames: Int, phases p: Int, count: Int) -> [Range<Int>] {
        columnBlocks(width: frames, count: count).map { $0.lowerBound * p ..< $0.upperBound * p }
    }

    /// The columns block `js` of a w-column row runs WN_k on: its own plus
    /// `reach` on each side, within the row.
    func haloColumns(_ js: Range<Int>, width w: Int) -> Range<Int> {
        max(0, js.lowerBound - reach) ..< min(w, js.upperBound + reach)
    }

    /// Inverts the coupling on the column `blocks` (side by side over the
    /// row): block i runs WN_k on its `haloColumns` (exact: WN_k's input is
    /// the untouched half of Z), with `condition(i, those columns)` as its
    /// condition, blocks spread over the cores.
    func invertColumns(_ z: [T], grid: GridShape, blocks: [Range<Int>], context: ComputeContext,
                       condition: @escaping (Int, Range<Int>) -> WaveGlowNetwork<T>.Condition) -> [T] {
        let (w, nh) = (grid.width, halfRows)
        var x = z
        x.withUnsafeMutableBufferPointer { xp in
            let xs = UnsafeSendable(xp.baseAddress!)
            z.withUnsafeBufferPointer { zp in
                let zs = UnsafeSendable(UnsafeMutablePointer(mutating: zp.baseAddress!))
                let run = { (block: Int) in
                    let js = blocks[block], halo = self.haloColumns(js, width: w)
                    let (lo, wb) = (halo.lowerBound, halo.count)
                    let a0 = OwnedBuffer<T>(unsetCount: nh * wb)
                    for (r, row) in self.inputRows.enumerated() { (a0.pointer + r * wb).update(from: zs.p + row * w + lo, count: wb) }
                    let out = self.network.forward(input: a0, condition: condition(block, halo), batch: 1, width: wb,
                                                   weights: self.weights, context: context)
                    for (r, row) in self.transformedRows.enumerated() {
                        for j in js {
                            let p = r * wb + j - lo
                            let shifted = zs.p[row * w + j] - out.pointer[p]
                            xs.p[row * w + j] = self.additive ? shifted : shifted * T.exp(-out.pointer[nh * wb + p])
                        }
                    }
                }
                // One block: BLAS uses the cores; several: the blocks do (BLAS on one thread each).
                Threads.parallelFor(blocks.count) { run($0) }
            }
        }
        return x
    }
}

/// A pointer handed to worker threads that write disjoint parts of it.
struct UnsafeSendable<P>: @unchecked Sendable {
    let p: UnsafeMutablePointer<P>
    init(_ p: UnsafeMutablePointer<P>) { self.p = p }
}
