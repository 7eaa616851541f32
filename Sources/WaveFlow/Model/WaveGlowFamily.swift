import Foundation

/// WaveGlow (MODEL-SPEC section 12): the ConvTranspose1d upsampler; per flow
/// k an invertible 1x1 convolution then an affine (or additive) coupling
/// over a WN stack of dilated 1-D convolutions, on the channels not yet
/// left as early outputs (grid rows `firstRow(k) ..< n_group`).
public enum WaveGlowFamily: ModelFamily {
    public static let name = "waveglow"

    /// The first grid row still in the flow at flow k: S channels leave
    /// before every flow k > 0 with k % E == 0.
    static func firstRow(_ config: ModelConfig, flow k: Int) -> Int { config.nEarlySize * (k / config.nEarlyEvery) }

    public static func validate(_ config: ModelConfig) throws {
        let g = config.nGroup, k = config.nFlows
        guard (2...64).contains(g), g % 2 == 0 else { throw WaveFlowError("n_group must be even, 2 to 64, not \(g)") }
        guard (1...64).contains(k) else { throw WaveFlowError("n_flows must be 1 to 64, not \(k)") }
        guard (1...16).contains(config.nLayers) else { throw WaveFlowError("n_layers must be 1 to 16, not \(config.nLayers)") }
        guard config.nEarlyEvery >= 1 else { throw WaveFlowError("n_early_every must be at least 1, not \(config.nEarlyEvery)") }
        guard config.nEarlySize >= 0, config.nEarlySize % 2 == 0 else {
            throw WaveFlowError("n_early_size must be even and not negative, not \(config.nEarlySize)")
        }
        let left = g - firstRow(config, flow: k - 1)
        guard left >= 2 else {
            throw WaveFlowError("n_group \(g) leaves \(left) channels for the last flow after early outputs of \(config.nEarlySize) "
                                + "every \(config.nEarlyEvery) flows; at least 2 are needed")
        }
        guard ["affine", "additive"].contains(config.coupling) else {
            throw WaveFlowError("coupling must be \"affine\" or \"additive\", not \"\(config.coupling)\"")
        }
        guard config.kernelSize == [3] else { throw WaveFlowError("kernel_size must be 3 for the waveglow family") }
    }

    public static func tensorShapes(_ config: ModelConfig) -> [(String, [Int])] {
        let (c, m, g, l) = (config.channels, config.nMels, config.nGroup, config.nLayers)
        var out: [(String, [Int])] = [("upsample.weight", [m, m, 4 * config.hopLength]), ("upsample.bias", [m])]
        for k in 0..<config.nFlows {
            let ck = g - firstRow(config, flow: k), nh = ck / 2
            let p = "WN.\(k)."
            out.append(("convinv.\(k).conv.weight", [ck, ck, 1]))
            out.append((p + "start.weight", [c, nh, 1])); out.append((p + "start.bias", [c]))
            out.append((p + "cond_layer.weight", [2 * c * l, m * g, 1])); out.append((p + "cond_layer.bias", [2 * c * l]))
            for i in 0..<l {
                let rs = i < l - 1 ? 2 * c : c
                out.append((p + "in_layers.\(i).weight", [2 * c, c, 3])); out.append((p + "in_layers.\(i).bias", [2 * c]))
                out.append((p + "res_skip_layers.\(i).weight", [rs, c, 1])); out.append((p + "res_skip_layers.\(i).bias", [rs]))
            }
            let nout = config.coupling == "additive" ? nh : 2 * nh
            out.append((p + "end.weight", [nout, c, 1])); out.append((p + "end.bias", [nout]))
        }
        return out
    }

    public static func build<T: Real>(_ config: ModelConfig, params: ParameterSet<T>)
        -> (conditioner: any Conditioner<T>, steps: [any FlowStep<T>]) {
        var steps: [any FlowStep<T>] = []
        for k in 0..<config.nFlows {
            let e = firstRow(config, flow: k)
            steps.append(InvertibleConv1x1(config: config, flow: k, firstRow: e, params: params))
            steps.append(WaveGlowCoupling(config: config, flow: k, firstRow: e, params: params))
        }
        return (WaveGlowUpsampler(config: config, params: params), steps)
    }

    /// PyTorch's default initialisation (uniform in ±1/sqrt(fan_in)) for the
    /// convolutions and the upsampler, `end` zero (a new model is a fixed
    /// rotation of the data), each W a random rotation: the QR of a
    /// Gaussian matrix, first column negated if its determinant is negative.
    public static func initialise<T: Real>(_ params: ParameterSet<T>, config: ModelConfig, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let values = params.valueBuffer
        for v in params.views {
            if v.name.hasPrefix("convinv.") {
                let rotation = randomRotation(v.shape[0], rng: &rng)
                for i in 0..<v.count { values[v.offset + i] = T(rotation[i]) }
                continue
            }
            if v.name.contains(".end.") { continue }
            // PyTorch's fan-in is weight.size(1) * kernel (for ConvTranspose1d too), biases as their weight.
            let w = params.view(v.name.replacingOccurrences(of: ".bias", with: ".weight"))
            let fanIn = w.shape[1] * w.shape[2]
            let bound = 1 / Double(fanIn).squareRoot()
            for i in v.range { values[i] = T(rng.uniform(-bound, bound)) }
        }
    }

    /// A random orthogonal [n, n] matrix with determinant +1 (row-major):
    /// Q of the Gram-Schmidt QR of a Gaussian matrix (R's diagonal
    /// positive), the first column negated if the determinant is -1.
    static func randomRotation(_ n: Int, rng: inout SplitMix64) -> [Double] {
        var q = (0 ..< n * n).map { _ in rng.normal() }
        for j in 0..<n { // column j orthogonalised against columns < j, twice for accuracy
            for _ in 0..<2 {
                for p in 0..<j {
                    let d = (0..<n).reduce(0.0) { $0 + q[$1 * n + j] * q[$1 * n + p] }
                    for i in 0..<n { q[i * n + j] -= d * q[i * n + p] }
                }
            }
            let norm = (0..<n).reduce(0.0) { $0 + q[$1 * n + j] * q[$1 * n + j] }.squareRoot()
            for i in 0..<n { q[i * n + j] /= norm }
        }
        if SmallMatrix.determinant(q, n: n) < 0 {
            for i in 0..<n { q[i * n] = -q[i * n] }
        }
        return q
    }

    /// The WN stacks' start, condition, dilated and residual/skip weights
    /// (as the authors' code); not `end`, the 1x1 matrices or the upsampler.
    public static func isWeightNormed(_ name: String) -> Bool {
        name.hasPrefix("WN.") && name.hasSuffix(".weight") && !name.hasSuffix(".end.weight")
    }

    /// Per column of G samples and flow k: start C*nh, condition 2CL*MG,
    /// L dilated convolutions 2C*3C, residual/skip (L-1)*2C*C + C*C, end
    /// nout*C, the 1x1 matrix c_k^2; plus the upsampler's 4*M*M per sample.
    public static func macsPerSample(_ config: ModelConfig) -> Double {
        let (c, m, g, l) = (config.channels, config.nMels, config.nGroup, config.nLayers)
        var perColumn = 0
        for k in 0..<config.nFlows {
            let ck = g - firstRow(config, flow: k), nh = ck / 2
            let nout = config.coupling == "additive" ? nh : 2 * nh
            perColumn += c * nh + 2 * c * l * m * g + l * 2 * c * 3 * c + (l - 1) * 2 * c * c + c * c + nout * c + ck * ck
        }
        return Double(perColumn) / Double(g) + Double(4 * m * m)
    }

    /// Everything is performed (the zero padding of the dilated taps is
    /// multiplied too).
    public static func performedMacsPerSample(_ config: ModelConfig) -> Double { macsPerSample(config) }

    /// Each flow's dilated taps reach 2^L - 1 columns each side.
    public static func receptiveColumns(_ config: ModelConfig) -> Int { config.nFlows * ((1 << config.nLayers) - 1) }
}
