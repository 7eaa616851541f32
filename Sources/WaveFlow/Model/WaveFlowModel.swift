import Foundation

// The WaveFlow model: conditioner, squeeze, flows, permutations, likelihood
// (MODEL-SPEC sections 3-7), with an explicit backward pass for training.
//
// Shape letters: B batch, T' = h*w samples, M mel bands, F frames, h rows,
// w columns, C channels, N = B*(h-1)*w network positions. Internal layout
// is channel-major: a tensor "[C, B, H, W]" is C blocks of B*H*W values.

/// A WaveFlow model's parameters (spec tensor names) and its computations,
/// in Float32 (use) or Float64 (gradient tests).
public final class WaveFlowModel<T: Real>: @unchecked Sendable {
    public let config: ModelConfig
    /// The inference tensors of MODEL-SPEC section 10, by name.
    public var params: ParameterSet<T>
    /// The LPC front at the data end (MODEL-SPEC 11) when `lpc_order` > 0:
    /// the flows then model its excitation, not the waveform.
    public let front: LPCFront?
    /// Slope of the conditioner's leaky ReLU.
    public static var leakySlope: T { T(0.4) }

    public init(config: ModelConfig) {
        self.config = config
        front = config.lpcOrder > 0 ? LPCFront(order: config.lpcOrder, mel: config.mel) : nil
        params = ParameterSet<T>()
        for (name, shape) in Self.tensorShapes(config) { params.add(name, shape) }
    }

    /// The inference tensors of MODEL-SPEC section 10 for `config`, in arena
    /// order: what a checkpoint must hold (checked before anything is allocated).
    public static func tensorShapes(_ config: ModelConfig) -> [(String, [Int])] {
        let c = config.channels, m = config.nMels
        var out: [(String, [Int])] = []
        for (u, f) in config.upsampleFactors.enumerated() {
            out.append(("upsample.\(u).weight", [1, 1, 3, 2 * f]))
            out.append(("upsample.\(u).bias", [1]))
        }
        for k in 0..<config.nFlows {
            out.append(("flows.\(k).input.weight", [c, 1, 1, 1]))
            out.append(("flows.\(k).input.bias", [c]))
            for l in 0..<config.nLayers {
                out.append(("flows.\(k).layers.\(l).conv.weight", [2 * c, c, 3, 3]))
                out.append(("flows.\(k).layers.\(l).conv.bias", [2 * c]))
                out.append(("flows.\(k).layers.\(l).cond.weight", [2 * c, m, 1, 1]))
                out.append(("flows.\(k).layers.\(l).cond.bias", [2 * c]))
                out.append(("flows.\(k).layers.\(l).out.weight", [2 * c, c, 1, 1]))
                out.append(("flows.\(k).layers.\(l).out.bias", [2 * c]))
            }
            out.append(("flows.\(k).output.weight", [2, c, 1, 1]))
            out.append(("flows.\(k).output.bias", [2]))
        }
        return out
    }

    /// PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for
    /// weights and biases), the output layers at zero so that a new model is
    /// the identity, the upsampler at a smooth interpolation plus noise.
    public func initialise(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for v in params.views {
            let isOutput = v.name.hasSuffix(".output.weight") || v.name.hasSuffix(".output.bias")
            if isOutput { continue }
            let fanIn: Int
            if v.name.hasPrefix("upsample.") {
                fanIn = v.name.hasSuffix(".bias") ? 1 : v.shape[2] * v.shape[3]
            } else {
                let w = params.view(v.name.replacingOccurrences(of: ".bias", with: ".weight"))
                fanIn = w.shape[1] * w.shape[2] * w.shape[3]
            }
            let bound = 1 / Double(fanIn).squareRoot()
            for i in v.range { params.values[i] = T(rng.uniform(-bound, bound)) }
        }
    }

    // MARK: - Offsets of one flow's tensors

    struct LayerOffsets { var conv, convB, cond, condB, out, outB: Int }
    struct FlowOffsets { var input, inputB: Int; var layers: [LayerOffsets]; var output, outputB: Int }

    lazy var flowOffsets: [FlowOffsets] = (0..<config.nFlows).map { k in
        let p = "flows.\(k)."
        return FlowOffsets(
            input: params.offset(p + "input.weight"), inputB: params.offset(p + "input.bias"),
            layers: (0..<config.nLayers).map { l in
                let q = p + "layers.\(l)."
                return LayerOffsets(conv: params.offset(q + "conv.weight"), convB: params.offset(q + "conv.bias"),
                                    cond: params.offset(q + "cond.weight"), condB: params.offset(q + "cond.bias"),
                                    out: params.offset(q + "out.weight"), outB: params.offset(q + "out.bias"))
            },
            output: params.offset(p + "output.weight"), outputB: params.offset(p + "output.bias"))
    }

    /// The causal-in-height, same-in-width convolution of layer l on a grid
    /// of `batch` x `height` x `width`.
    func convShape(layer l: Int, batch: Int, height: Int, width: Int) -> CausalConvShape {
        CausalConvShape(cin: config.channels, cout: 2 * config.channels, dh: config.heightDilation(l), dw: config.widthDilation(l),
                        batch: batch, height: height, width: width)
    }

    // MARK: - Conditioner

    /// Outputs of every upsampling stage (after the leaky ReLU), [B, M, F*prod(f)].
    public struct Upsampled { public var stages: [[T]]; public var batch: Int; public var frames: Int }

    /// Upsamples mel [B, M, F] to the condition c [B, M, F*hop] (or runs
    /// only the first `stageCount` stages).
    public func upsample(mel: [T], batch: Int, frames: Int, stageCount: Int? = nil) -> Upsampled {
        var stages: [[T]] = []
        var current = mel, width = frames
        for (u, f) in config.upsampleFactors.enumerated().prefix(stageCount ?? config.upsampleFactors.count) {
            let g = UpsampleGeometry(factor: f, batch: batch, height: config.nMels, width: width)
            var out = [T](repeating: 0, count: g.outCount)
            let w = params.offset("upsample.\(u).weight"), b = params.values[params.offset("upsample.\(u).bias")]
            params.values.withUnsafeBufferPointer { p in
                current.withUnsafeBufferPointer { x in
                    out.withUnsafeMutableBufferPointer { o in
                        ConvTranspose.forward(g, input: x.baseAddress!, weight: p.baseAddress! + w, bias: b, output: o.baseAddress!)
                        LeakyReLU.forward(o.baseAddress!, count: g.outCount, slope: Self.leakySlope)
                    }
                }
            }
            stages.append(out)
            current = out
            width *= f
        }
        return Upsampled(stages: stages, batch: batch, frames: frames)
    }

    /// Backpropagates dc [B, M, F*hop] through the upsampler into params.grads.
    public func upsampleBackward(mel: [T], _ up: Upsampled, dCondition: [T]) {
        var grad = dCondition
        var widths = [up.frames]
        for f in config.upsampleFactors { widths.append(widths.last! * f) }
        for u in stride(from: config.upsampleFactors.count - 1, through: 0, by: -1) {
            let f = config.upsampleFactors[u]
            let g = UpsampleGeometry(factor: f, batch: up.batch, height: config.nMels, width: widths[u])
            let input = u == 0 ? mel : up.stages[u - 1]
            var dInput = [T](repeating: 0, count: g.inCount)
            let w = params.offset("upsample.\(u).weight"), b = params.offset("upsample.\(u).bias")
            up.stages[u].withUnsafeBufferPointer { y in
                grad.withUnsafeMutableBufferPointer { d in
                    LeakyReLU.backward(output: y.baseAddress!, grad: d.baseAddress!, count: g.outCount, slope: Self.leakySlope)
                }
            }
            let weights = params.values // not params.values inside the grads' modify access
            weights.withUnsafeBufferPointer { p in
                params.grads.withUnsafeMutableBufferPointer { gr in
                    dInput.withUnsafeMutableBufferPointer { di in
                        ConvTranspose.backward(g, input: input, weight: p.baseAddress! + w, dOutput: grad,
                                               dWeight: gr.baseAddress! + w, dBias: gr.baseAddress! + b,
                                               dInput: u == 0 ? nil : di.baseAddress!)
                    }
                }
            }
            grad = dInput
        }
    }

    // MARK: - Squeeze

    /// X [B, h, w] from audio [B, T'] (X[b, i, j] = x[b, j*h + i]).
    public func squeezeAudio(_ x: [T], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = [T](repeating: 0, count: batch * h * w)
        for b in 0..<batch { for j in 0..<w { for i in 0..<h { out[(b * h + i) * w + j] = x[b * h * w + j * h + i] } } }
        return out
    }

    /// The inverse of `squeezeAudio`.
    public func unsqueezeAudio(_ xs: [T], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = [T](repeating: 0, count: batch * h * w)
        for b in 0..<batch { for j in 0..<w { for i in 0..<h { out[b * h * w + j * h + i] = xs[(b * h + i) * w + j] } } }
        return out
    }

    /// Cd [M, B, h, w] from c [B, M, cw] (first h*w columns).
    public func squeezeCondition(_ c: [T], batch: Int, condWidth cw: Int, width w: Int) -> [T] {
        let h = config.nGroup, m = config.nMels
        var out = [T](repeating: 0, count: m * batch * h * w)
        for mi in 0..<m { for b in 0..<batch {
            let src = (b * m + mi) * cw, dst = (mi * batch + b) * h * w
            for j in 0..<w { for i in 0..<h { out[dst + i * w + j] = c[src + j * h + i] } }
        } }
        return out
    }

    /// dc [B, M, cw] from dCd [M, B, h, w] (zero beyond h*w columns).
    func unsqueezeConditionGrad(_ d: [T], batch: Int, condWidth cw: Int, width w: Int) -> [T] {
        let h = config.nGroup, m = config.nMels
        var out = [T](repeating: 0, count: batch * m * cw)
        for mi in 0..<m { for b in 0..<batch {
            let dst = (b * m + mi) * cw, src = (mi * batch + b) * h * w
            for j in 0..<w { for i in 0..<h { out[dst + j * h + i] = d[src + i * w + j] } }
        } }
        return out
    }
}

/// A small, fast, reproducible random number generator (SplitMix64).
public struct SplitMix64: Codable, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9007199254740992.0) }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }
    public mutating func int(below n: Int) -> Int { Int(next() % UInt64(n)) }
    /// Standard normal (Box-Muller).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
