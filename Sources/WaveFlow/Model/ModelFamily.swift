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
    /// Whether training reaches the weight `name` through weight
    /// normalisation (w = g v / |v|) rather than directly.
    static func isWeightNormed(_ name: String) -> Bool
    /// Multiply-adds of a forward pass per audio sample, and as performed
    /// (less what the implementation skips, e.g. taps on zero padding).
    static func macsPerSample(_ config: ModelConfig) -> Double
    static func performedMacsPerSample(_ config: ModelConfig) -> Double
    /// Grid columns of context one side of a column needs for its z and
    /// log-determinant to be exact (chunked scoring), the conditioner aside.
    static func receptiveColumns(_ config: ModelConfig) -> Int
}

/// The families this build knows.
public enum ModelFamilies {
    public static let all: [any ModelFamily.Type] = [WaveFlowFamily.self, WaveGlowFamily.self]

    /// The family named `name`, or nil.
    public static func named(_ name: String) -> (any ModelFamily.Type)? {
        all.first { $0.name == name }
    }

    /// Config keys that change the mathematics of one family only (MODEL-SPEC
    /// section 12): in a config of another family they are refused, not
    /// ignored (the file was meant for another model).
    static let keysOfOneFamily: [String: String] = [
        "n_early_every": "waveglow", "n_early_size": "waveglow", "coupling": "waveglow", "alternate_halves": "waveglow",
    ]
}

/// WaveFlow (MODEL-SPEC sections 3-10): upsampler; per flow a coupling
/// then a row permutation.
public enum WaveFlowFamily: ModelFamily {
    public static let name = "waveflow"

    public static func validate(_ config: ModelConfig) throws {
        guard (1...8).contains(config.nLayers) else { throw WaveFlowError("n_layers must be 1 to 8, not \(config.nLayers)") }
        let factors = config.upsampleFactors, hop = config.hopLength
        guard (1...8).contains(factors.count), factors.allSatisfy({ $0 >= 2 && $0 <= hop && $0 % 2 == 0 }),
              factors.reduce(1, *) == hop else {
            throw WaveFlowError("upsample_factors \(factors) must be even and multiply to hop_length \(hop)")
        }
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

    /// Every flow weight but the zero-initialised output layers; not the upsampler.
    public static func isWeightNormed(_ name: String) -> Bool {
        name.hasPrefix("flows.") && name.hasSuffix(".weight") && !name.hasSuffix(".output.weight")
    }

    public static func macsPerSample(_ config: ModelConfig) -> Double { config.waveFlowMacsPerSample }
    public static func performedMacsPerSample(_ config: ModelConfig) -> Double { config.waveFlowPerformedMacsPerSample }

    /// Each layer's width-dilated taps reach 2^l columns; each flow's output feeds the next.
    public static func receptiveColumns(_ config: ModelConfig) -> Int { config.nFlows * ((1 << config.nLayers) - 1) }

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
