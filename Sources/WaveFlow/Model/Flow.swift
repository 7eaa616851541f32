import Foundation

// One flow's network and coupling, forward and backward, and the whole
// model's likelihood (MODEL-SPEC sections 5-7).

extension WaveFlowModel {
    /// What one flow's network keeps for its backward pass.
    public struct NetworkCache {
        /// Network input rows: Xin [1, B, H, w] and Cin [M, B, H, w] (H = h-1 in training).
        var xin: [T], cin: [T]
        /// Per layer: its input a [C, N] and pre-gate y [2C, N].
        var a: [[T]], y: [[T]]
        var skip: [T]
        var batch: Int, height: Int, width: Int
    }

    /// Runs flow k's network on Xin [1, B, H, w] and Cin [M, B, H, w];
    /// returns p [2, B, H, w] (log_s then t) and, if asked, the cache.
    public func network(flow k: Int, xin: [T], cin: [T], batch: Int, height: Int, width: Int,
                        keepCache: Bool, context: ComputeContext) -> (p: [T], cache: NetworkCache?) {
        let c = config.channels, m = config.nMels
        let n = batch * height * width
        let fo = flowOffsets[k]
        // Buffers every position of which is written before it is read start
        // uninitialised. With a cache, each layer's a and y are fresh arrays
        // handed to the cache as they are (no copies).
        var a = uninitializedArray(T.self, c * n)
        var skip = [T](repeating: 0, count: c * n)
        var y = uninitializedArray(T.self, 2 * c * n)
        var g = uninitializedArray(T.self, c * n)
        var o = uninitializedArray(T.self, 2 * c * n)
        var e = uninitializedArray(T.self, 3 * c * n) // the conv's expanded input
        var p = uninitializedArray(T.self, 2 * n)
        var cacheA: [[T]] = [], cacheY: [[T]] = []
        // Cin as bf16 operands once for every layer's projection (bf16 products only).
        let cin16 = cin.withUnsafeBufferPointer { T.operandCopy(context, of: $0.baseAddress!, count: m * n, forProductsOf: [2 * c, n, m]) }
        defer { cin16?.deallocate() }
        params.values.withUnsafeBufferPointer { wp in
        cin.withUnsafeBufferPointer { cp in
            let w = wp.baseAddress!
            // a = input(Xin): 1 -> C.
            Conv1x1.forward(context, cin: 1, cout: c, n: n, input: xin, weight: w + fo.input, bias: w + fo.inputB, output: &a)
            for l in 0..<config.nLayers {
                let lo = fo.layers[l]
                let shape = convShape(layer: l, batch: batch, height: height, width: width)
                let taps = CausalConv.regroup(w + lo.conv, cin: c, cout: 2 * c)
                if keepCache && l > 0 { y = uninitializedArray(T.self, 2 * c * n) } // the last y is in the cache
                a.withUnsafeBufferPointer { ap in
                    y.withUnsafeMutableBufferPointer { yp in
                        e.withUnsafeMutableBufferPointer { ep in
                            CausalConv.forward(context, shape, input: ap.baseAddress!, taps: taps, bias: w + lo.convB,
                                               output: yp.baseAddress!, e: ep.baseAddress!)
                        }
                    }
                }
                // y += cond(Cin): M -> 2C.
                y.withUnsafeMutableBufferPointer { yp in
                    T.product(context, transA: false, transB: false, m: 2 * c, n: n, k: m, a: w + lo.cond, a16: nil, lda: m,
                              b: cp.baseAddress!, b16: cin16, ldb: n, accumulate: true, c: yp.baseAddress!, ldc: n)
                    addBias(yp.baseAddress!, w + lo.condB, rows: 2 * c, cols: n)
                }
                if keepCache { cacheY.append(y) }
                y.withUnsafeBufferPointer { yp in
                    g.withUnsafeMutableBufferPointer { gp in Gate.forward(yp.baseAddress!, gp.baseAddress!, channels: c, n: n) }
                }
                Conv1x1.forward(context, cin: c, cout: 2 * c, n: n, input: g, weight: w + lo.out, bias: w + lo.outB, output: &o)
                // a' = a + o[0:C] (a new array when a is cached), skip += o[C:2C].
                var next = keepCache ? uninitializedArray(T.self, c * n) : []
                o.withUnsafeBufferPointer { op in
                    skip.withUnsafeMutableBufferPointer { sp in
                        a.withUnsafeMutableBufferPointer { ap in
                            let (ov, sk, av) = (op.baseAddress!, sp.baseAddress!, ap.baseAddress!)
                            for i in 0 ..< c * n { sk[i] += ov[c * n + i] }
                            if keepCache {
                                next.withUnsafeMutableBufferPointer { np in
                                    let nx = np.baseAddress!
                                    for i in 0 ..< c * n { nx[i] = av[i] + ov[i] }
                                }
                            } else {
                                for i in 0 ..< c * n { av[i] += ov[i] }
                            }
                        }
                    }
                }
                if keepCache { cacheA.append(a); a = next }
            }
            Conv1x1.forward(context, cin: c, cout: 2, n: n, input: skip, weight: w + fo.output, bias: w + fo.outputB, output: &p)
        }}
        let cache = keepCache ? NetworkCache(xin: xin, cin: cin, a: cacheA, y: cacheY, skip: skip,
                                             batch: batch, height: height, width: width) : nil
        return (p, cache)
    }

    /// Backpropagates dp [2, N] through flow k's network into params.grads;
    /// returns dXin [1, N] and dCin [M, N].
    public func networkBackward(flow k: Int, cache: NetworkCache, dp: [T], context: ComputeContext) -> (dXin: [T], dCin: [T]) {
        let c = config.channels, m = config.nMels
        let n = cache.batch * cache.height * cache.width
        let fo = flowOffsets[k]
        // [da; dSkip], the gradient of every layer's o = [res; skip]: dSkip is
        // the same for all layers, da is accumulated in place, layer by layer.
        var dOut = [T](repeating: 0, count: 2 * c * n)
        var g = uninitializedArray(T.self, c * n)
        var dg = uninitializedArray(T.self, c * n)
        var dy = uninitializedArray(T.self, 2 * c * n)
        var e = uninitializedArray(T.self, 3 * c * n), de = uninitializedArray(T.self, 3 * c * n)
        var dCin = [T](repeating: 0, count: m * n)
        var dXin = [T](repeating: 0, count: n)
        // A separate reference: reading params.values while params.grads is
        // being modified would be an overlapping access to `params`.
        let weights = params.values
        // Cin, and each layer's dy, as bf16 operands once for all the products reading them (bf16 only).
        let cin16 = cache.cin.withUnsafeBufferPointer { T.operandCopy(context, of: $0.baseAddress!, count: m * n, forProductsOf: [2 * c, n, m]) }
        defer { cin16?.deallocate() }
        weights.withUnsafeBufferPointer { wp in
        params.grads.withUnsafeMutableBufferPointer { gp in
        dOut.withUnsafeMutableBufferPointer { dop in
        cache.cin.withUnsafeBufferPointer { cp in
        dCin.withUnsafeMutableBufferPointer { dcp in
            let w = wp.baseAddress!, gr = gp.baseAddress!
            let da = dop.baseAddress!, dSkip = da + c * n
            Conv1x1.backward(context, cin: c, cout: 2, n: n, input: cache.skip, weight: w + fo.output, dOutput: dp,
                             dWeight: gr + fo.output, dBias: gr + fo.outputB, dInput: dSkip)
            for l in stride(from: config.nLayers - 1, through: 0, by: -1) {
                let lo = fo.layers[l]
                // The gate again (not stored by the forward pass), keeping
                // tanh and sigmoid in dy, which its backward turns into dy.
                cache.y[l].withUnsafeBufferPointer { yp in
                    g.withUnsafeMutableBufferPointer { gp in
                        dy.withUnsafeMutableBufferPointer { Gate.forward(yp.baseAddress!, gp.baseAddress!, kept: $0.baseAddress!, channels: c, n: n) }
                    }
                }
                Conv1x1.backward(context, cin: c, cout: 2 * c, n: n, input: g, weight: w + lo.out, dOutput: da,
                                 dWeight: gr + lo.out, dBias: gr + lo.outB, dInput: &dg, accumulateInput: false)
                dg.withUnsafeBufferPointer { dgp in
                    dy.withUnsafeMutableBufferPointer { Gate.backward(kept: $0.baseAddress!, dg: dgp.baseAddress!, channels: c, n: n) }
                }
                let dy16 = dy.withUnsafeBufferPointer { T.operandCopy(context, of: $0.baseAddress!, count: 2 * c * n, forProductsOf: [2 * c, n]) }
                defer { dy16?.deallocate() }
                // The condition projection: dW += dy Cin^T, dBias, dCin += W^T dy.
                dy.withUnsafeBufferPointer { dyp in
                    let dyv = dyp.baseAddress!
                    T.product(context, transA: false, transB: true, m: 2 * c, n: m, k: n, a: dyv, a16: dy16, lda: n,
                              b: cp.baseAddress!, b16: cin16, ldb: n, accumulate: true, c: gr + lo.cond, ldc: m)
                    // The condition's and the convolution's biases both add
                    // onto y: one row sum serves both gradients.
                    var rowSums = [T](repeating: 0, count: 2 * c)
                    accumulateRowSums(dyv, into: &rowSums, rows: 2 * c, cols: n)
                    for i in 0 ..< 2 * c { gr[lo.condB + i] += rowSums[i]; gr[lo.convB + i] += rowSums[i] }
                    T.product(context, transA: true, transB: false, m: m, n: n, k: 2 * c, a: w + lo.cond, a16: nil, lda: m,
                              b: dyv, b16: dy16, ldb: n, accumulate: true, c: dcp.baseAddress!, ldc: n)
                }
                // da (holding the residual path's gradient) += conv^T dy.
                let shape = convShape(layer: l, batch: cache.batch, height: cache.height, width: cache.width)
                let taps = CausalConv.regroup(w + lo.conv, cin: c, cout: 2 * c)
                cache.a[l].withUnsafeBufferPointer { ap in
                    e.withUnsafeMutableBufferPointer { ep in
                        de.withUnsafeMutableBufferPointer { dep in
                            CausalConv.backward(context, shape, input: ap.baseAddress!, taps: taps, dOutput: dy, dOutput16: dy16,
                                                dWeight: gr + lo.conv, dBias: nil, dInput: da,
                                                e: ep.baseAddress!, de: dep.baseAddress!)
                        }
                    }
                }
            }
            Conv1x1.backward(context, cin: 1, cout: c, n: n, input: cache.xin, weight: w + fo.input, dOutput: da,
                             dWeight: gr + fo.input, dBias: gr + fo.inputB, dInput: &dXin)
        }}}}}
        return (dXin, dCin)
    }

    // MARK: - Gathering network inputs

    /// Xin [1, B, h-1, w]: rows 0..h-2 of X [B, h, w].
    func networkAudioInput(_ x: [T], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = [T](repeating: 0, count: batch * (h - 1) * w)
        for b in 0..<batch {
            out.replaceSubrange(b * (h - 1) * w ..< (b + 1) * (h - 1) * w, with: x[b * h * w ..< b * h * w + (h - 1) * w])
        }
        return out
    }

    /// Cin [M, B, h-1, w]: rows 1..h-1 of flow k's permuted condition, read
    /// from the unpermuted Cd [M, B, h, w] through the row map.
    func networkConditionInput(_ cd: [T], flow k: Int, batch: Int, width w: Int) -> [T] {
        let h = config.nGroup, m = config.nMels, map = config.rowMaps[k]
        var out = [T](repeating: 0, count: m * batch * (h - 1) * w)
        for mi in 0..<m { for b in 0..<batch { for i in 0 ..< h - 1 {
            let src = ((mi * batch + b) * h + map[i + 1]) * w
            let dst = ((mi * batch + b) * (h - 1) + i) * w
            out.replaceSubrange(dst ..< dst + w, with: cd[src ..< src + w])
        } } }
        return out
    }

    /// Adds dCin [M, B, h-1, w] back onto dCd [M, B, h, w] through the row map.
    func scatterConditionGrad(_ dCin: [T], into dCd: inout [T], flow k: Int, batch: Int, width w: Int) {
        let h = config.nGroup, m = config.nMels, map = config.rowMaps[k]
        for mi in 0..<m { for b in 0..<batch { for i in 0 ..< h - 1 {
            let dst = ((mi * batch + b) * h + map[i + 1]) * w
            let src = ((mi * batch + b) * (h - 1) + i) * w
            for j in 0..<w { dCd[dst + j] += dCin[src + j] }
        } } }
    }

    /// Rows of X [B, h, w] reordered: out row i = in row perm[i].
    func permuteRows(_ x: [T], _ perm: [Int], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = x
        for b in 0..<batch { for i in 0..<h {
            let src = (b * h + perm[i]) * w, dst = (b * h + i) * w
            out.replaceSubrange(dst ..< dst + w, with: x[src ..< src + w])
        } }
        return out
    }

    // MARK: - The whole model

    /// Everything the backward pass needs.
    public struct ForwardState {
        public var batch: Int, frames: Int, width: Int
        /// Negative log-likelihood, nats per sample, per batch item.
        public var nll: [T]
        /// The latent z [B, T'] (unsqueezed final Z).
        public var z: [T]
        /// Sum of the flows' log-determinants per batch item.
        public var logdet: [T]
        /// [B, w]: the same per column (only when asked for: chunked scoring).
        public var columnLogdet: [T] = []
        var mel: [T]
        var upsampled: Upsampled
        var xs: [[T]]          // X_k [B, h, w] per flow
        var caches: [NetworkCache]
        var logS: [[T]]        // per flow [B, h-1, w]
    }

    /// Scores audio [B, T'] (T' = w*h <= frames*hop) against mel [B, M, F]:
    /// the negative log-likelihood per sample of each item, and what the
    /// backward pass needs when `keepCache`.
    public func forward(audio: [T], mel: [T], batch: Int, frames: Int, keepCache: Bool = true,
                        columnLogdet: Bool = false, context: ComputeContext) -> ForwardState {
        let h = config.nGroup
        let tPrime = audio.count / batch
        precondition(tPrime % h == 0 && tPrime <= frames * config.hopLength, "audio length must be w*h <= frames*hop")
        let w = tPrime / h
        let up = upsample(mel: mel, batch: batch, frames: frames)
        let cd = squeezeCondition(up.stages.last!, batch: batch, condWidth: frames * config.hopLength, width: w)
        var x = squeezeAudio(audio, batch: batch, width: w)
        var logdet = [T](repeating: 0, count: batch)
        var columns = [T](repeating: 0, count: columnLogdet ? batch * w : 0)
        var xs: [[T]] = [], caches: [NetworkCache] = [], logSs: [[T]] = []
        for k in 0..<config.nFlows {
            let xin = networkAudioInput(x, batch: batch, width: w)
            let cin = networkConditionInput(cd, flow: k, batch: batch, width: w)
            let (p, cache) = network(flow: k, xin: xin, cin: cin, batch: batch, height: h - 1, width: w, keepCache: keepCache,
                                      context: context)
            let n = batch * (h - 1) * w
            var z = [T](repeating: 0, count: x.count)
            let ld = p.withUnsafeBufferPointer { pp in
                AffineCoupling.forward(x: x, logS: pp.baseAddress!, t: pp.baseAddress! + n, z: &z, batch: batch, h: h, w: w)
            }
            for b in 0..<batch { logdet[b] += ld[b] }
            if columnLogdet {
                for b in 0..<batch { for r in 0 ..< h - 1 { for j in 0..<w { columns[b * w + j] += p[(b * (h - 1) + r) * w + j] } } }
            }
            if keepCache {
                xs.append(x); caches.append(cache!); logSs.append(Array(p[0..<n]))
            }
            x = permuteRows(z, config.permutation(k), batch: batch, width: w)
        }
        let z = unsqueezeAudio(x, batch: batch, width: w)
        let nll = GaussianNLL.perSample(z: z, logdet: logdet, batch: batch, count: tPrime)
        return ForwardState(batch: batch, frames: frames, width: w, nll: nll, z: z, logdet: logdet, columnLogdet: columns,
                            mel: mel, upsampled: up, xs: xs, caches: caches, logS: logSs)
    }

    /// Accumulates the gradient of the batch-mean NLL into `params.grads`.
    public func backward(_ s: ForwardState, context: ComputeContext) {
        let h = config.nGroup, w = s.width, batch = s.batch
        let n = batch * (h - 1) * w
        var dzFlat = [T](repeating: 0, count: s.z.count)
        let dLogdet = GaussianNLL.backward(z: s.z, dZ: &dzFlat, batch: batch, count: h * w)
        var dx = squeezeAudio(dzFlat, batch: batch, width: w)   // d(final X) = d(X_K)
        var dCd = [T](repeating: 0, count: config.nMels * batch * h * w)
        for k in stride(from: config.nFlows - 1, through: 0, by: -1) {
            // X_{k+1} = perm_k(Z_k); the permutation is an involution.
            let dZ = permuteRows(dx, config.permutation(k), batch: batch, width: w)
            var dX = [T](repeating: 0, count: dZ.count)
            var dp = [T](repeating: 0, count: 2 * n)
            dp.withUnsafeMutableBufferPointer { dpp in
                AffineCoupling.backward(x: s.xs[k], logS: s.logS[k], dZ: dZ, dLogdet: dLogdet, dX: &dX,
                                        dLogS: dpp.baseAddress!, dT: dpp.baseAddress! + n, batch: batch, h: h, w: w)
            }
            let (dXin, dCin) = networkBackward(flow: k, cache: s.caches[k], dp: dp, context: context)
            for b in 0..<batch {
                for i in 0 ..< (h - 1) * w { dX[b * h * w + i] += dXin[b * (h - 1) * w + i] }
            }
            scatterConditionGrad(dCin, into: &dCd, flow: k, batch: batch, width: w)
            dx = dX
        }
        let cw = s.frames * config.hopLength
        let dc = unsqueezeConditionGrad(dCd, batch: batch, condWidth: cw, width: w)
        upsampleBackward(mel: s.mel, s.upsampled, dCondition: dc)
    }
}
