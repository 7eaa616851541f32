import Foundation

// WN_k, the network of WaveGlow's coupling k (MODEL-SPEC 12.4): a 1x1
// start, per layer a dilated kernel-3 convolution plus that layer's slice of
// the condition projection, the tanh-sigmoid gate, a residual/skip 1x1, and
// a 1x1 end. Forward and hand-written backward.
//
// Shape letters: N = B*w positions (items side by side), nh inputs, C
// channels, L layers, MG = M*G condition channels, nout = 2*nh (affine) or nh.

/// The tensors of WN_k in the arena, by offset (fixed at init).
struct WaveGlowNetwork<T: Real>: Sendable {
    struct Layer: Sendable { var conv, convB, resSkip, resSkipB: Int; var resSkipRows: Int }
    /// nh, C, L, MG, nout.
    let inputs: Int, channels: Int, layers: Int, conditionChannels: Int, outputs: Int
    let start: Int, startB: Int, cond: Int, condB: Int, end: Int, endB: Int
    let layerOffsets: [Layer]

    /// WN_k's tensors under `prefix` (`WN.k.`), already in `params`.
    init(prefix p: String, inputs: Int, outputs: Int, config: ModelConfig, params: ParameterSet<T>) {
        (self.inputs, self.outputs) = (inputs, outputs)
        (channels, layers, conditionChannels) = (config.channels, config.nLayers, config.nMels * config.nGroup)
        start = params.offset(p + "start.weight"); startB = params.offset(p + "start.bias")
        cond = params.offset(p + "cond_layer.weight"); condB = params.offset(p + "cond_layer.bias")
        end = params.offset(p + "end.weight"); endB = params.offset(p + "end.bias")
        let c = config.channels, l = config.nLayers
        layerOffsets = (0..<l).map { i in
            Layer(conv: params.offset(p + "in_layers.\(i).weight"), convB: params.offset(p + "in_layers.\(i).bias"),
                  resSkip: params.offset(p + "res_skip_layers.\(i).weight"),
                  resSkipB: params.offset(p + "res_skip_layers.\(i).bias"), resSkipRows: i < l - 1 ? 2 * c : c)
        }
    }

    /// Dilation of layer i: 2^i.
    func shape(layer i: Int, batch: Int, width: Int) -> DilatedConvShape {
        DilatedConvShape(cin: channels, batch: batch, width: width, dilation: 1 << i)
    }

    /// What the backward pass needs (besides the condition, which the
    /// caller keeps): the input, each layer's input a_i [C, N] (or its
    /// Winograd transform, which the convolution's backward reads), the pre-gate
    /// y of every layer (s [2CL, N], layer i's y in rows 2C*i ..< 2C*(i+1)),
    /// [a_L; skip] [2C, N] (the summed skips in rows C ..< 2C).
    final class Cache {
        let batch: Int, width: Int
        let input: OwnedBuffer<T>
        /// Per layer, what its convolution's backward reads of the input a
        /// [C, N]: its Winograd transform where the convolution runs by
        /// Winograd (`transformed[i]`), else a copy of a.
        var convInputs: [OwnedBuffer<T>] = [], transformed: [Bool] = []
        var y: OwnedBuffer<T>?, aSkip: OwnedBuffer<T>?
        init(batch: Int, width: Int, input: OwnedBuffer<T>) {
            (self.batch, self.width, self.input) = (batch, width, input)
        }
    }

    // MARK: - Forward

    /// What WN_k is conditioned on: the grouped condition Cg [MG, N] (owned,
    /// or `borrowed`: memory the caller keeps for the call), or its
    /// projection s = cond(Cg) [2CL, N] already made (bias included; the
    /// folded synthesis path, `WaveGlowConditionFold`), which `forward` then
    /// adds its layers onto.
    enum Condition {
        case grouped(OwnedBuffer<T>)
        case borrowed(UnsafePointer<T>)
        case projected(OwnedBuffer<T>)
    }

    /// out [nout, N] = WN(A0 [nh, N] | condition); with `cache` (a grouped
    /// condition only, which the caller keeps for `backward`), what the
    /// backward pass needs is kept there.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func forward(input a0: OwnedBuffer<T>, condition: Condition, batch: Int, width: Int,
                 weights w: UnsafeMutablePointer<T>, cache: Cache? = nil, context: ComputeContext) -> OwnedBuffer<T> {
        let (c, n) = (channels, batch * width)
        // [a; skip] [2C, N] in one buffer: a layer's residual and skip 1x1s are one product into it.
        let aSkip = OwnedBuffer<T>(repeating: 0, count: 2 * c * n), a = aSkip.pointer, skip = aSkip.pointer + c * n
        let g = OwnedBuffer<T>(unsetCount: c * n), e = OwnedBuffer<T>(unsetCount: convScratchCount(batch: batch, width: width, context: context))
        Conv1x1.forward(context, cin: inputs, cout: c, n: n, input: a0.pointer, weight: w + start, bias: w + startB, output: a)
        // Every layer's share of the condition in one product: y [2CL, N] = cond(Cg);
        // layer i then adds its convolution onto rows 2C*i ..< 2C*(i+1) in place.
        let y: OwnedBuffer<T>
        // Projected here, with every layer's convolution bias added to its rows
        // at once (one pass over y, not one per layer).
        func project(_ cg: UnsafePointer<T>) -> OwnedBuffer<T> {
            let y = OwnedBuffer<T>(unsetCount: 2 * c * layers * n)
            var bias = [T](repeating: 0, count: 2 * c * layers)
            for i in 0..<layers { for r in 0..<2 * c { bias[2 * c * i + r] = w[condB + 2 * c * i + r] + w[layerOffsets[i].convB + r] } }
            Conv1x1.forward(context, cin: conditionChannels, cout: 2 * c * layers, n: n, input: cg, weight: w + cond,
                            bias: bias, output: y.pointer)
            return y
        }
        let convBiasAdded: Bool
        switch condition {
        case .grouped(let cg): (y, convBiasAdded) = (project(cg.pointer), true)
        case .borrowed(let cg): (y, convBiasAdded) = (project(cg), true)
        case .projected(let s):
            precondition(cache == nil && s.count == 2 * c * layers * n, "a projected condition is for synthesis only")
            (y, convBiasAdded) = (s, false)
        }
        for i in 0..<layers {
            var kept: OwnedBuffer<T>? = nil // the input's transform, written by the convolution
            if let cache {
                if let count = DilatedConv1D.transformedInputCount(shape(layer: i, batch: batch, width: width), cout: 2 * c,
                                                                   context: context) {
                    kept = OwnedBuffer<T>(unsetCount: count)
                    cache.convInputs.append(kept!)
                } else {
                    cache.convInputs.append(OwnedBuffer(copying: a, count: c * n))
                }
                cache.transformed.append(kept != nil)
            }
            layerForward(i, aSkip: a, y: y.pointer + 2 * c * i * n, g: g, e: e, batch: batch, width: width, weights: w,
                         addConvBias: !convBiasAdded, keepingTransformed: kept?.pointer, context: context)
        }
        if let cache { (cache.y, cache.aSkip) = (y, aSkip) }
        let out = OwnedBuffer<T>(unsetCount: outputs * n)
        Conv1x1.forward(context, cin: channels, cout: outputs, n: n, input: skip, weight: w + end, bias: w + endB,
                        output: out.pointer)
        return out
    }

    /// The values each of the convolutions' scratch buffers needs: the largest over the layers.
    func convScratchCount(batch: Int, width: Int, context: ComputeContext) -> Int {
        (0..<layers).map { DilatedConv1D.scratchCount(shape(layer: $0, batch: batch, width: width), cout: 2 * channels, context: context) }
            .max() ?? 0
    }

    /// Layer i on y [2C, N] holding its condition share: y += in_i(a) (and
    /// its bias when `addConvBias`), g = gate(y), then [a; skip] [2C, N] +=
    /// res_skip_i(g) (a += res, skip += the skip part; the last layer's C
    /// rows go to skip alone).
    private func layerForward(_ i: Int, aSkip: UnsafeMutablePointer<T>, y: UnsafeMutablePointer<T>, g: OwnedBuffer<T>,
                              e: OwnedBuffer<T>, batch: Int, width: Int, weights w: UnsafeMutablePointer<T>,
                              addConvBias: Bool, keepingTransformed kept: UnsafeMutablePointer<T>? = nil, context: ComputeContext) {
        let (c, n, lo) = (channels, batch * width, layerOffsets[i])
        DilatedConv1D.forward(context, shape(layer: i, batch: batch, width: width), cout: 2 * c, input: aSkip,
                              weight: w + lo.conv, e: e.pointer, output: y, accumulate: true, keepingTransformed: kept)
        if addConvBias { addBias(y, w + lo.convB, rows: 2 * c, cols: n) }
        Gate.forward(y, g.pointer, channels: c, n: n)
        let last = i == layers - 1
        Conv1x1.forward(context, cin: c, cout: lo.resSkipRows, n: n, input: g.pointer, weight: w + lo.resSkip, bias: w + lo.resSkipB,
                        output: last ? aSkip + c * n : aSkip, accumulate: true)
    }

    // MARK: - Backward

    /// From dOut [nout, N] and the forward pass's grouped condition Cg [MG,
    /// N]: accumulates the parameters' gradients into `grads` and dCg into
    /// `dCondition` [MG, N], and returns dA0 [nh, N].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func backward(cache: Cache, condition cg: UnsafePointer<T>, dOut: UnsafePointer<T>, weights w: UnsafeMutablePointer<T>,
                  grads gr: UnsafeMutablePointer<T>, dCondition dCg: UnsafeMutablePointer<T>, context: ComputeContext) -> OwnedBuffer<T> {
        let (c, n) = (channels, cache.batch * cache.width)
        // [da; dSkip]: dSkip is the same for every layer; da is accumulated layer by layer.
        let dRS = OwnedBuffer<T>(repeating: 0, count: 2 * c * n)
        let da = dRS.pointer, dSkip = dRS.pointer + c * n
        Conv1x1.backward(context, cin: c, cout: outputs, n: n, input: cache.aSkip!.pointer + c * n, weight: w + end, dOutput: dOut,
                         dWeight: gr + end, dBias: gr + endB, dInput: dSkip, accumulateInput: false)
        // dy of every layer, [2CL, N], for one condition product at the end
        // (each layer's rows written whole, by the gate's one-pass backward).
        let dY = OwnedBuffer<T>(unsetCount: 2 * c * layers * n)
        let g = OwnedBuffer<T>(unsetCount: c * n), dg = OwnedBuffer<T>(unsetCount: c * n)
        let scratch = convScratchCount(batch: cache.batch, width: cache.width, context: context)
        let e = OwnedBuffer<T>(unsetCount: scratch), de = OwnedBuffer<T>(unsetCount: scratch)
        for i in stride(from: layers - 1, through: 0, by: -1) {
            let lo = layerOffsets[i]
            // The residual/skip 1x1: its output gradient is [da; dSkip] (dSkip alone for the last layer).
            let dr = i < layers - 1 ? da : dSkip
            let dy = dY.pointer + 2 * c * i * n
            Gate.backwardThroughProjection(context, y: cache.y!.pointer + 2 * c * i * n, channels: c, n: n, rows: lo.resSkipRows,
                                           weight: w + lo.resSkip, dOutput: dr, dWeight: gr + lo.resSkip, dBias: gr + lo.resSkipB,
                                           g: g.pointer, dg: dg.pointer, dy: dy)
            accumulateRowSums(dy, into: gr + lo.convB, rows: 2 * c, cols: n)
            DilatedConv1D.backward(context, shape(layer: i, batch: cache.batch, width: cache.width), cout: 2 * c,
                                   input: cache.transformed[i] ? nil : cache.convInputs[i].pointer,
                                   transformed: cache.transformed[i] ? cache.convInputs[i].pointer : nil, weight: w + lo.conv, dOutput: dy, dy16: nil,
                                   dWeight: gr + lo.conv, dInput: da, e: e.pointer, de: de.pointer)
        }
        Conv1x1.backward(context, cin: conditionChannels, cout: 2 * c * layers, n: n, input: cg,
                         weight: w + cond, dOutput: dY.pointer, dWeight: gr + cond, dBias: gr + condB,
                         dInput: dCg, accumulateInput: true)
        let dA0 = OwnedBuffer<T>(unsetCount: inputs * n)
        Conv1x1.backward(context, cin: inputs, cout: c, n: n, input: cache.input.pointer, weight: w + start, dOutput: da,
                         dWeight: gr + start, dBias: gr + startB, dInput: dA0.pointer, accumulateInput: false)
        return dA0
    }
}
