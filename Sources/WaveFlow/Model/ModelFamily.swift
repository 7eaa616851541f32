import Foundation

/// A model family: which tensors a config implies and how they make a
/// conditioner and a list of flow steps. `Checkpoint.load` and
/// `FlowModel.init` dispatch on the config's `family` key through
/// `ModelFamilies`; adding a family is one type conforming to this
/// protocol plus a line in `ModelFamilies.all`.
public protocol ModelFamily {
    /// The config's `family` value ("waveflow").
    static var name: String { get }
    /// Throws unless `config` is one this family can build (called before
    /// anything is allocated; `ModelConfig.validate` has checked the
    /// shared keys).
    static func validate(_ config: ModelConfig) throws
    /// The inference tensors of `config`, in arena order.
    static func tensorShapes(_ config: ModelConfig) -> [(String, [Int])]
    /// The conditioner and the steps, reading their tensors from `params`
    /// (which holds `tensorShapes(config)`).
    static func build<T: Real>(_ config: ModelConfig, params: ParameterSet<T>)
        -> (conditioner: any Conditioner<T>, steps: [any FlowStep<T>])
    /// Training's starting point, from `seed`.
    static func initialise<T: Real>(_ params: ParameterSet<T>, config: ModelConfig, seed: UInt64)
}

/// The families this build knows.
public enum ModelFamilies {
    public static let all: [any ModelFamily.Type] = [WaveFlowFamily.self]

    /// The family named `name`, or nil.
    public static func named(_ name: String) -> (any ModelFamily.Type)? {
        all.first { $0.name == name }
    }

    /// Config keys that change the mathematics in a family this build does
    /// not have (MODEL-SPEC section 12): in a config of another family
    /// they are refused, not ignored.
    static let keysOfOtherFamilies: [String: String] = [
        "n_early_every": "waveglow", "n_early_size": "waveglow", "coupling": "waveglow", "alternate_halves": "waveglow",
    ]
}

/// WaveFlow (MODEL-SPEC sections 3-10): upsampler; per flow a coupling
/// then a row permutation.
public enum WaveFlowFamily: ModelFamily {
    public static let name = "waveflow"

    public static func validate(_ config: ModelConfig) throws {
        guard [8, 16, 32, 64, 128].contains(config.nGroup) else {
            throw WaveFlowError("n_group must be 8, 16, 32, 64 or 128, not \(config.nGroup)")
        }
        guard (2...64).contains(config.nFlows), config.nFlows % 2 == 0 else {
            throw WaveFlowError("n_flows must be even, 2 to 64, not \(config.nFlows)")
        }
        guard config.kernelSize == [3, 3] else { throw WaveFlowError("kernel_size must be [3, 3]") }
    }

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

    public static func build<T: Real>(_ config: ModelConfig, params: ParameterSet<T>)
        -> (conditioner: any Conditioner<T>, steps: [any FlowStep<T>]) {
        var steps: [any FlowStep<T>] = []
        for k in 0..<config.nFlows {
            steps.append(WaveFlowCoupling(config: config, flow: k, params: params))
            steps.append(RowPermutation<T>(config.permutation(k)))
        }
        return (WaveFlowUpsampler(config: config, params: params), steps)
    }

    /// PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for
    /// weights and biases), the output layers at zero so that a new model is
    /// the identity, the upsampler at a smooth interpolation plus noise.
    public static func initialise<T: Real>(_ params: ParameterSet<T>, config: ModelConfig, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let values = params.valueBuffer
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
            for i in v.range { values[i] = T(rng.uniform(-bound, bound)) }
        }
    }
}
