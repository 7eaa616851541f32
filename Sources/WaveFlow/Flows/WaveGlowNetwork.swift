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

    /// What the backward pass needs: the input, the condition, each layer's
    /// input a_i [C, N] and pre-gate y_i [2C, N], the summed skips [C, N].
    final class Cache {
        let batch: Int, width: Int
        let input: OwnedBuffer<T>, condition: OwnedBuffer<T>
        var a: [OwnedBuffer<T>] = [], y: [OwnedBuffer<T>] = []
        var skip: OwnedBuffer<T>?
        init(batch: Int, width: Int, input: OwnedBuffer<T>, condition: OwnedBuffer<T>) {
            (self.batch, self.width, self.input, self.condition) = (batch, width, input, condition)
        }
    }

    // MARK: - Forward

    /// out [nout, N] = WN(A0 [nh, N] | Cg [MG, N]).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func forward(input a0: OwnedBuffer<T>, condition cg: OwnedBuffer<T>, batch: Int, width: Int,
                 weights w: UnsafeMutablePointer<T>, context: ComputeContext) -> OwnedBuffer<T> {
        let (c, n) = (channels, batch * width)
        let a = OwnedBuffer<T>(repeating: 0, count: c * n), skip = OwnedBuffer<T>(repeating: 0, count: c * n)
        let y = OwnedBuffer<T>(repeating: 0, count: 2 * c * n), g = OwnedBuffer<T>(repeating: 0, count: c * n)
        let e = OwnedBuffer<T>(repeating: 0, count: 3 * c * n)
        Conv1x1.forward(context, cin: inputs, cout: c, n: n, input: a0.pointer, weight: w + start, bias: w + startB, output: a.pointer)
        for i in 0..<layers {
            layerForward(i, a: a, y: y, g: g, e: e, skip: skip, condition: cg, batch: batch, width: width, weights: w, context: context)
        }
        return output(skip: skip, n: n, weights: w, context: context)
    }

    /// out [nout, N] = end(skip).
    func output(skip: OwnedBuffer<T>, n: Int, weights w: UnsafeMutablePointer<T>, context: ComputeContext) -> OwnedBuffer<T> {
        let out = OwnedBuffer<T>(repeating: 0, count: outputs * n)
        Conv1x1.forward(context, cin: channels, cout: outputs, n: n, input: skip.pointer, weight: w + end, bias: w + endB,
                        output: out.pointer)
        return out
    }

    /// Layer i: y = in_i(a) + cond_i(Cg), g = gate(y), a += res, skip += skip part.
    private func layerForward(_ i: Int, a: OwnedBuffer<T>, y: OwnedBuffer<T>, g: OwnedBuffer<T>, e: OwnedBuffer<T>,
                              skip: OwnedBuffer<T>, condition cg: OwnedBuffer<T>, batch: Int, width: Int,
                              weights w: UnsafeMutablePointer<T>, context: ComputeContext) {
        let (c, n, lo) = (channels, batch * width, layerOffsets[i])
        // The condition's slice for this layer: rows 2C*i ..< 2C*(i+1) of cond_layer.
        Conv1x1.forward(context, cin: conditionChannels, cout: 2 * c, n: n, input: cg.pointer,
                        weight: w + cond + 2 * c * i * conditionChannels, bias: w + condB + 2 * c * i, output: y.pointer)
        DilatedConv1D.forward(context, shape(layer: i, batch: batch, width: width), cout: 2 * c, input: a.pointer,
                              weight: w + lo.conv, e: e.pointer, output: y.pointer, accumulate: true)
        addBias(y.pointer, w + lo.convB, rows: 2 * c, cols: n)
        Gate.forward(y.pointer, g.pointer, channels: c, n: n)
        if i < layers - 1 {
            // a_{i+1} = a_i + res (rows 0..<C), skip += rows C..<2C.
            Conv1x1.forward(context, cin: c, cout: c, n: n, input: g.pointer, weight: w + lo.resSkip, bias: w + lo.resSkipB,
                            output: a.pointer, accumulate: true)
            Conv1x1.forward(context, cin: c, cout: c, n: n, input: g.pointer, weight: w + lo.resSkip + c * c,
                            bias: w + lo.resSkipB + c, output: skip.pointer, accumulate: true)
        } else {
            Conv1x1.forward(context, cin: c, cout: c, n: n, input: g.pointer, weight: w + lo.resSkip, bias: w + lo.resSkipB,
                            output: skip.pointer, accumulate: true)
        }
    }
}

extension WaveGlowNetwork {
    /// `forward`, keeping what the backward pass needs: each layer's input
    /// a_i (before the residual update) and pre-gate y_i, and the skips.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func forwardKeeping(input a0: OwnedBuffer<T>, condition cg: OwnedBuffer<T>, batch: Int, width: Int,
                        weights w: UnsafeMutablePointer<T>, context: ComputeContext) -> (out: OwnedBuffer<T>, cache: Cache) {
        let (c, n) = (channels, batch * width)
        let cache = Cache(batch: batch, width: width, input: a0, condition: cg)
        let a = OwnedBuffer<T>(repeating: 0, count: c * n), skip = OwnedBuffer<T>(repeating: 0, count: c * n)
        let g = OwnedBuffer<T>(repeating: 0, count: c * n), e = OwnedBuffer<T>(repeating: 0, count: 3 * c * n)
        Conv1x1.forward(context, cin: inputs, cout: c, n: n, input: a0.pointer, weight: w + start, bias: w + startB, output: a.pointer)
        for i in 0..<layers {
            cache.a.append(OwnedBuffer(copying: a.pointer, count: c * n))
            let y = OwnedBuffer<T>(repeating: 0, count: 2 * c * n)
            layerForward(i, a: a, y: y, g: g, e: e, skip: skip, condition: cg, batch: batch, width: width, weights: w, context: context)
            cache.y.append(y)
        }
        cache.skip = skip
        return (output(skip: skip, n: n, weights: w, context: context), cache)
    }

    // MARK: - Backward

    /// From dOut [nout, N]: accumulates the parameters' gradients into
    /// `grads` and returns dA0 [nh, N] and dCg [MG, N].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func backward(cache: Cache, dOut: UnsafePointer<T>, weights w: UnsafeMutablePointer<T>, grads gr: UnsafeMutablePointer<T>,
                  context: ComputeContext) -> (dInput: OwnedBuffer<T>, dCondition: OwnedBuffer<T>) {
        let (c, n) = (channels, cache.batch * cache.width)
        // [da; dSkip]: dSkip is the same for every layer; da is accumulated layer by layer.
        let dRS = OwnedBuffer<T>(repeating: 0, count: 2 * c * n)
        let da = dRS.pointer, dSkip = dRS.pointer + c * n
        Conv1x1.backward(context, cin: c, cout: outputs, n: n, input: cache.skip!.pointer, weight: w + end, dOutput: dOut,
                         dWeight: gr + end, dBias: gr + endB, dInput: dSkip, accumulateInput: false)
        let dCg = OwnedBuffer<T>(repeating: 0, count: conditionChannels * n)
        let g = OwnedBuffer<T>(repeating: 0, count: c * n), dg = OwnedBuffer<T>(repeating: 0, count: c * n)
        let kept = OwnedBuffer<T>(repeating: 0, count: 2 * c * n)
        let e = OwnedBuffer<T>(repeating: 0, count: 3 * c * n), de = OwnedBuffer<T>(repeating: 0, count: 3 * c * n)
        for i in stride(from: layers - 1, through: 0, by: -1) {
            let lo = layerOffsets[i]
            // The residual/skip 1x1: its output gradient is [da; dSkip] (dSkip alone for the last layer).
            let dr = i < layers - 1 ? da : dSkip
            Gate.forward(cache.y[i].pointer, g.pointer, kept: kept.pointer, channels: c, n: n)
            Conv1x1.backward(context, cin: c, cout: lo.resSkipRows, n: n, input: g.pointer, weight: w + lo.resSkip, dOutput: dr,
                             dWeight: gr + lo.resSkip, dBias: gr + lo.resSkipB, dInput: dg.pointer, accumulateInput: false)
            Gate.backward(kept: kept.pointer, dg: dg.pointer, channels: c, n: n) // kept now holds dy [2C, N]
            let dy = kept.pointer
            // The condition's slice and the convolution share y: one row sum serves both biases.
            Conv1x1.backward(context, cin: conditionChannels, cout: 2 * c, n: n, input: cache.condition.pointer,
                             weight: w + cond + 2 * c * i * conditionChannels, dOutput: dy,
                             dWeight: gr + cond + 2 * c * i * conditionChannels, dBias: gr + condB + 2 * c * i,
                             dInput: dCg.pointer, accumulateInput: true)
            accumulateRowSums(dy, into: gr + lo.convB, rows: 2 * c, cols: n)
            DilatedConv1D.backward(context, shape(layer: i, batch: cache.batch, width: cache.width), cout: 2 * c,
                                   input: cache.a[i].pointer, weight: w + lo.conv, dOutput: dy, dy16: nil,
                                   dWeight: gr + lo.conv, dInput: da, e: e.pointer, de: de.pointer)
        }
        let dA0 = OwnedBuffer<T>(repeating: 0, count: inputs * n)
        Conv1x1.backward(context, cin: inputs, cout: c, n: n, input: cache.input.pointer, weight: w + start, dOutput: da,
                         dWeight: gr + start, dBias: gr + startB, dInput: dA0.pointer, accumulateInput: false)
        return (dA0, dCg)
    }
}
