import Foundation

// The network of WaveFlow's coupling (MODEL-SPEC section 5): input 1x1
// conv, L residual layers (dilated causal 3x3 conv + condition projection,
// gate, residual/skip 1x1), output 1x1 conv to (log s, t); forward with an
// optional cache and the hand-written backward. Internal layout is
// channel-major: "[C, B, H, W]" is C blocks of B*H*W values.

extension WaveFlowCoupling {
    /// What one flow's network keeps for its backward pass.
    public struct NetworkCache {
        /// Network input rows: Xin [1, B, H, w] and Cin [M, B, H, w] (H = h-1 in training).
        var xin: [T], cin: [T]
        /// Per layer, what its convolution's backward pass reads of the
        /// input a [C, N]: its Winograd transform where the convolution runs
        /// by Winograd on native operands (`transformed[l]`,
        /// `CausalConv.transformedInputCount` values), else a itself.
        var convInputs: [[T]], transformed: [Bool]
        /// Per layer, the pre-gate y [2C, N].
        var y: [[T]]
        var skip: [T]
        var batch: Int, height: Int, width: Int
    }

    /// Runs flow k's network on Xin [1, B, H, w] and Cin [M, B, H, w];
    /// returns p [2, B, H, w] (log_s then t) and, if asked, the cache.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func network(xin: [T], cin: [T], batch: Int, height: Int, width: Int,
                        keepCache: Bool, context: ComputeContext) -> (p: [T], cache: NetworkCache?) {
        let c = channels, m = bands
        let n = batch * height * width
        // Buffers every position of which is written before it is read start
        // uninitialised. With a cache, each layer's y is a fresh array handed
        // to the cache as it is (no copy), and so is its input a where the
        // backward pass needs a itself; where it reads the convolution's
        // transform V instead (a fresh array too), a is updated in place.
        var a = uninitializedArray(T.self, c * n)
        // skip [C, N] starts at the sum of every layer's skip bias; the
        // layers' skip projections then add onto it in their products.
        var skip = uninitializedArray(T.self, c * n)
        var y = uninitializedArray(T.self, 2 * c * n)
        var g = uninitializedArray(T.self, c * n)
        var e = uninitializedArray(T.self, convScratchCount(batch: batch, height: height, width: width, context: context)) // the conv's scratch
        var p = uninitializedArray(T.self, 2 * n)
        var convInputs: [[T]] = [], transformed: [Bool] = [], cacheY: [[T]] = []
        // Cin as bf16 operands once for every layer's projection (bf16 products only).
        let cin16 = cin.withUnsafeBufferPointer { T.operandCopy(context, of: $0.baseAddress!, count: m * n, forProductsOf: [2 * c, n, m]) }
        defer { cin16?.deallocate() }
        cin.withUnsafeBufferPointer { cp in
            let w = weights
            skip.withUnsafeMutableBufferPointer { sp in
                for ch in 0 ..< c { (sp.baseAddress! + ch * n).update(repeating: summedSkipBias(ch), count: n) }
            }
            // a = input(Xin): 1 -> C.
            Conv1x1.forward(context, cin: 1, cout: c, n: n, input: xin, weight: w + input, bias: w + inputB, output: &a)
            for l in 0..<layers {
                let lo = layerOffsets[l]
                let shape = convShape(layer: l, batch: batch, height: height, width: width)
                let taps = CausalConv.regroup(w + lo.conv, cin: c, cout: 2 * c)
                if keepCache && l > 0 { y = uninitializedArray(T.self, 2 * c * n) } // the last y is in the cache
                // The convolution's and the condition's biases, added together by the convolution.
                let biases = (0 ..< 2 * c).map { w[lo.convB + $0] + w[lo.condB + $0] }
                // With a cache, room for the input's transform (where the
                // convolution runs by Winograd), which the backward pass then
                // reads instead of transforming a again.
                let vCount = keepCache ? CausalConv.transformedInputCount(shape, context: context) ?? 0 : 0
                let keptV = vCount > 0
                var v = keptV ? uninitializedArray(T.self, vCount) : []
                a.withUnsafeBufferPointer { ap in
                    y.withUnsafeMutableBufferPointer { yp in
                        e.withUnsafeMutableBufferPointer { ep in
                            v.withUnsafeMutableBufferPointer { vp in
                                CausalConv.forward(context, shape, input: ap.baseAddress!, taps: taps, bias: biases,
                                                   output: yp.baseAddress!, e: ep.baseAddress!,
                                                   keepingTransformed: keptV ? vp.baseAddress! : nil)
                            }
                        }
                    }
                }
                if keptV { convInputs.append(v); transformed.append(true) }
                // y += cond(Cin): M -> 2C.
                y.withUnsafeMutableBufferPointer { yp in
                    T.product(context, transA: false, transB: false, m: 2 * c, n: n, k: m, a: w + lo.cond, a16: nil, lda: m,
                              b: cp.baseAddress!, b16: cin16, ldb: n, accumulate: true, c: yp.baseAddress!, ldc: n)
                }
                if keepCache { cacheY.append(y) }
                y.withUnsafeBufferPointer { yp in
                    g.withUnsafeMutableBufferPointer { gp in Gate.forward(yp.baseAddress!, gp.baseAddress!, channels: c, n: n) }
                }
                // The out projection [res; skip] = W_out g + b_out, added
                // straight onto its destinations by two accumulating
                // products: a' = a + b_res + W_res g (a new array when a is
                // cached, else a itself) and skip += W_skip g (its bias is
                // in skip's start). No [2C, N] output and no pass to add it.
                let keepA = keepCache && !keptV // the backward pass reads a itself
                var next = keepA ? uninitializedArray(T.self, c * n) : []
                a.withUnsafeMutableBufferPointer { ap in
                    let av = ap.baseAddress!
                    func addResidual(_ dst: UnsafeMutablePointer<T>) {
                        for ch in 0 ..< c {
                            let b = w[lo.outB + ch], src = av + ch * n, out = dst + ch * n
                            for i in 0 ..< n { out[i] = src[i] + b }
                        }
                        g.withUnsafeBufferPointer { gp in
                            Conv1x1.forward(context, cin: c, cout: c, n: n, input: gp.baseAddress!, weight: w + lo.out, bias: nil,
                                            output: dst, accumulate: true)
                            skip.withUnsafeMutableBufferPointer { sp in
                                Conv1x1.forward(context, cin: c, cout: c, n: n, input: gp.baseAddress!, weight: w + lo.out + c * c,
                                                bias: nil, output: sp.baseAddress!, accumulate: true)
                            }
                        }
                    }
                    if keepA {
                        next.withUnsafeMutableBufferPointer { addResidual($0.baseAddress!) }
                    } else {
                        addResidual(av)
                    }
                }
                if keepA { convInputs.append(a); transformed.append(false); a = next }
            }
            Conv1x1.forward(context, cin: c, cout: 2, n: n, input: skip, weight: w + output, bias: w + outputB, output: &p)
        }
        let cache = keepCache ? NetworkCache(xin: xin, cin: cin, convInputs: convInputs, transformed: transformed, y: cacheY, skip: skip,
                                             batch: batch, height: height, width: width) : nil
        return (p, cache)
    }

    /// Backpropagates dp [2, N] through the network into the arena's
    /// gradients; returns dXin [1, N] and dCin [M, N].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func networkBackward(cache: NetworkCache, dp: [T], context: ComputeContext) -> (dXin: [T], dCin: [T]) {
        let c = channels, m = bands
        let n = cache.batch * cache.height * cache.width
        let scratch = BackwardScratch<T>(channels: c, bands: m, positions: n,
                                         convScratch: convScratchCount(batch: cache.batch, height: cache.height, width: cache.width,
                                                                       context: context))
        // Cin as bf16 operands once for every layer's products (bf16 only).
        let cin16 = cache.cin.withUnsafeBufferPointer { T.operandCopy(context, of: $0.baseAddress!, count: m * n, forProductsOf: [2 * c, n, m]) }
        defer { cin16?.deallocate() }
        var dXin = [T](repeating: 0, count: n)
        Conv1x1.backward(context, cin: c, cout: 2, n: n, input: cache.skip, weight: weights + output, dOutput: dp,
                         dWeight: gradients + output, dBias: gradients + outputB, dInput: scratch.dSkip)
        cache.cin.withUnsafeBufferPointer { cp in
            for l in stride(from: layers - 1, through: 0, by: -1) {
                layerBackward(l, cache: cache, cin: cp.baseAddress!, cin16: cin16, scratch: scratch, context: context)
            }
        }
        Conv1x1.backward(context, cin: 1, cout: c, n: n, input: cache.xin, weight: weights + input, dOutput: scratch.da,
                         dWeight: gradients + input, dBias: gradients + inputB, dInput: &dXin)
        return (dXin, Array(UnsafeBufferPointer(start: scratch.dCin, count: m * n)))
    }

    /// Channel ch's skip bias summed over the layers (every layer's skip
    /// output adds onto one running sum; synthesis folds this into the
    /// output layer's bias, training starts the sum with it).
    func summedSkipBias(_ ch: Int) -> T {
        layerOffsets.reduce(0) { $0 + weights[$1.outB + channels + ch] }
    }

    /// The scratch each of the convolutions' buffers needs: the largest over the layers.
    func convScratchCount(batch: Int, height: Int, width: Int, context: ComputeContext) -> Int {
        (0..<layers).map { CausalConv.scratchCount(convShape(layer: $0, batch: batch, height: height, width: width), context: context) }
            .max() ?? 0
    }

    /// Residual layer l's backward: from [da; dSkip] (`scratch`) through the
    /// out projection, the gate, the condition projection (into dCin) and
    /// the causal convolution, whose input gradient is added to da in place.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func layerBackward(_ l: Int, cache: NetworkCache, cin: UnsafePointer<T>, cin16: UnsafePointer<UInt16>?,
                       scratch s: BackwardScratch<T>, context: ComputeContext) {
        let c = channels, m = bands, n = s.n
        let lo = layerOffsets[l], w = weights, gr = gradients
        // Back through the out projection and the gate (recomputed from y,
        // not stored by the forward pass): g, dy and the projection's gradients.
        cache.y[l].withUnsafeBufferPointer {
            Gate.backwardThroughProjection(context, y: $0.baseAddress!, channels: c, n: n, rows: 2 * c, weight: w + lo.out, dOutput: s.da,
                                           dWeight: gr + lo.out, dBias: gr + lo.outB, g: s.g, dg: s.dg, dy: s.dy)
        }
        // dy as bf16 operands once for the three products reading it (bf16 only).
        let dy16 = T.operandCopy(context, of: s.dy, count: 2 * c * n, forProductsOf: [2 * c, n])
        defer { dy16?.deallocate() }
        // The condition projection: dW += dy Cin^T, dBias, dCin += W^T dy.
        T.product(context, transA: false, transB: true, m: 2 * c, n: m, k: n, a: s.dy, a16: dy16, lda: n,
                  b: cin, b16: cin16, ldb: n, accumulate: true, c: gr + lo.cond, ldc: m)
        // The condition's and the convolution's biases both add onto y: one
        // row sum serves both gradients.
        var rowSums = [T](repeating: 0, count: 2 * c)
        accumulateRowSums(s.dy, into: &rowSums, rows: 2 * c, cols: n)
        for i in 0 ..< 2 * c { gr[lo.condB + i] += rowSums[i]; gr[lo.convB + i] += rowSums[i] }
        T.product(context, transA: true, transB: false, m: m, n: n, k: 2 * c, a: w + lo.cond, a16: nil, lda: m,
                  b: s.dy, b16: dy16, ldb: n, accumulate: true, c: s.dCin, ldc: n)
        // da (holding the residual path's gradient) += conv^T dy.
        let shape = convShape(layer: l, batch: cache.batch, height: cache.height, width: cache.width)
        let taps = CausalConv.regroup(w + lo.conv, cin: c, cout: 2 * c)
        cache.convInputs[l].withUnsafeBufferPointer { kp in
            let (input, transformed) = cache.transformed[l] ? (nil, kp.baseAddress) : (kp.baseAddress, nil)
            CausalConv.backward(context, shape, input: input, transformed: transformed, taps: taps, dOutput: s.dy, dOutput16: dy16,
                                dWeight: gr + lo.conv, dBias: nil, dInput: s.da, e: s.e, de: s.de)
        }
    }
}

/// The network backward's buffers for N positions: [da; dSkip] [2C, N] (the
/// gradient of every layer's o = [res; skip]: dSkip is the same for all
/// layers, da is accumulated in place, layer by layer; zeroed), the gate
/// g [C, N] and dg, dy [2C, N], the convolution's two scratch buffers
/// (`CausalConv.scratchCount`, the largest over the layers), and dCin
/// [M, N] (zeroed).
final class BackwardScratch<T: Real> {
    let n: Int, c: Int
    let dOut: UnsafeMutablePointer<T>, g: UnsafeMutablePointer<T>, dg: UnsafeMutablePointer<T>, dy: UnsafeMutablePointer<T>
    let e: UnsafeMutablePointer<T>, de: UnsafeMutablePointer<T>, dCin: UnsafeMutablePointer<T>
    var da: UnsafeMutablePointer<T> { dOut }
    var dSkip: UnsafeMutablePointer<T> { dOut + c * n }

    init(channels c: Int, bands m: Int, positions n: Int, convScratch: Int) {
        (self.n, self.c) = (n, c)
        dOut = .allocate(capacity: 2 * c * n)
        dOut.initialize(repeating: 0, count: 2 * c * n)
        g = .allocate(capacity: c * n)
        dg = .allocate(capacity: c * n)
        dy = .allocate(capacity: 2 * c * n)
        e = .allocate(capacity: convScratch)
        de = .allocate(capacity: convScratch)
        dCin = .allocate(capacity: m * n)
        dCin.initialize(repeating: 0, count: m * n)
    }

    deinit { for p in [dOut, g, dg, dy, e, de, dCin] { p.deallocate() } }
}
