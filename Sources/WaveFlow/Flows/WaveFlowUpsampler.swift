import Foundation

// WaveFlow's conditioner (MODEL-SPEC section 3): ConvTranspose2d stages,
// each followed by a leaky ReLU, upsample the mel [B, M, F] to the sample
// rate [B, M, F*hop].

/// The upsampler: stage u has `upsample.u.weight` [1, 1, 3, 2 f_u] and `upsample.u.bias` [1].
public final class WaveFlowUpsampler<T: Real>: Conditioner {
    public typealias Scalar = T
    /// Slope of the leaky ReLU.
    public static var leakySlope: T { T(0.4) }
    let params: ParameterSet<T>
    let factors: [Int], bands: Int, hop: Int
    /// Offsets of each stage's weight and bias, fixed at init.
    let weightOffsets: [Int], biasOffsets: [Int]

    init(config: ModelConfig, params: ParameterSet<T>) {
        self.params = params
        (factors, bands, hop) = (config.upsampleFactors, config.nMels, config.hopLength)
        weightOffsets = factors.indices.map { params.offset("upsample.\($0).weight") }
        biasOffsets = factors.indices.map { params.offset("upsample.\($0).bias") }
    }

    /// Outputs of every upsampling stage (after the leaky ReLU), [B, M, F*prod(f)].
    public struct Upsampled { public var stages: [[T]]; public var batch: Int; public var frames: Int }

    /// Upsamples mel [B, M, F] to the condition c [B, M, F*hop] (or runs
    /// only the first `stageCount` stages).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func upsample(mel: [T], batch: Int, frames: Int, stageCount: Int? = nil) -> Upsampled {
        let w = params.valueBuffer.baseAddress!
        var stages: [[T]] = []
        var current = mel, width = frames
        for (u, f) in factors.enumerated().prefix(stageCount ?? factors.count) {
            let g = UpsampleGeometry(factor: f, batch: batch, height: bands, width: width)
            var out = [T](repeating: 0, count: g.outCount)
            out.withUnsafeMutableBufferPointer { o in
                ConvTranspose.forward(g, input: current, weight: w + weightOffsets[u], bias: w[biasOffsets[u]], output: o.baseAddress!)
                LeakyReLU.forward(o.baseAddress!, count: g.outCount, slope: Self.leakySlope)
            }
            stages.append(out)
            current = out
            width *= f
        }
        return Upsampled(stages: stages, batch: batch, frames: frames)
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func forward(mel: [T], batch: Int, frames: Int) -> (condition: [T], cache: Any) {
        let up = upsample(mel: mel, batch: batch, frames: frames)
        return (up.stages.last!, up)
    }

    /// Backpropagates dc [B, M, F*hop] through the stages into the arena's gradients.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func backward(mel: [T], cache: Any, dCondition: [T]) {
        guard let up = cache as? Upsampled else { preconditionFailure("not an upsampler cache") }
        let w = params.valueBuffer.baseAddress!, gr = params.gradBuffer.baseAddress!
        var grad = dCondition
        var widths = [up.frames]
        for f in factors { widths.append(widths.last! * f) }
        for u in stride(from: factors.count - 1, through: 0, by: -1) {
            let g = UpsampleGeometry(factor: factors[u], batch: up.batch, height: bands, width: widths[u])
            let input = u == 0 ? mel : up.stages[u - 1]
            var dInput = [T](repeating: 0, count: u == 0 ? 0 : g.inCount)
            up.stages[u].withUnsafeBufferPointer { y in
                grad.withUnsafeMutableBufferPointer { d in
                    LeakyReLU.backward(output: y.baseAddress!, grad: d.baseAddress!, count: g.outCount, slope: Self.leakySlope)
                }
            }
            dInput.withUnsafeMutableBufferPointer { di in
                ConvTranspose.backward(g, input: input, weight: w + weightOffsets[u], dOutput: grad,
                                       dWeight: gr + weightOffsets[u], dBias: gr + biasOffsets[u],
                                       dInput: u == 0 ? nil : di.baseAddress!)
            }
            grad = dInput
        }
    }

    /// Grid rows of the condition of mel [M, F] (B = 1), computed on demand:
    /// every stage but the last is run, the last only at the requested columns.
    public func synthesisCondition(mel: [T], frames: Int, rows: Int, context: ComputeContext) -> any ConditionRows<T> {
        condition(mel: mel, frames: frames, rows: rows)
    }

    /// `synthesisCondition` as its concrete type.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func condition(mel: [T], frames: Int, rows: Int) -> SynthesisCondition<T> {
        let u = factors.count - 1
        var input = mel, width = frames
        if u > 0 {
            input = upsample(mel: mel, batch: 1, frames: frames, stageCount: u).stages.last!
            width = frames * factors[0..<u].reduce(1, *)
        }
        let t = frames * hop
        return SynthesisCondition(input: input, weight: params["upsample.\(u).weight"], bias: params.valueBuffer[biasOffsets[u]],
                                  bands: bands, inWidth: width, factor: factors[u],
                                  rows: rows, columns: t / rows, slope: Self.leakySlope)
    }
}
