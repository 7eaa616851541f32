import Foundation

/// The hyper-parameters of a model (MODEL-SPEC section 9), stored in every
/// checkpoint's metadata under these snake_case keys.
public struct ModelConfig: Codable, Equatable, Sendable {
    /// The model family (`ModelFamilies`): "waveflow" (absent in the JSON) is sections 3-10.
    public var family = WaveFlowFamily.name
    public var sampleRate = 22050
    public var nFFT = 1024
    public var hopLength = 256
    public var winLength = 1024
    public var nMels = 80
    public var fmin = 0.0
    public var fmax = 8000.0
    public var upsampleFactors = [16, 16]
    /// h, the number of rows audio is squeezed into.
    public var nGroup = 16
    /// K, the number of flows (even).
    public var nFlows = 8
    /// L, residual layers per flow (at most 8).
    public var nLayers = 8
    /// C, residual channels.
    public var channels = 64
    public var kernelSize = [3, 3]
    /// p of the LPC front (MODEL-SPEC section 11); 0 = no front. Recorded
    /// in the config JSON only when non-zero.
    public var lpcOrder = 0

    enum CodingKeys: String, CodingKey {
        case sampleRate = "sample_rate", nFFT = "n_fft", hopLength = "hop_length", winLength = "win_length"
        case nMels = "n_mels", fmin, fmax, upsampleFactors = "upsample_factors", nGroup = "n_group"
        case nFlows = "n_flows", nLayers = "n_layers", channels, kernelSize = "kernel_size"
        case lpcOrder = "lpc_order", family
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ModelConfig()
        family = try c.decodeIfPresent(String.self, forKey: .family) ?? d.family
        sampleRate = try c.decodeIfPresent(Int.self, forKey: .sampleRate) ?? d.sampleRate
        nFFT = try c.decodeIfPresent(Int.self, forKey: .nFFT) ?? d.nFFT
        hopLength = try c.decodeIfPresent(Int.self, forKey: .hopLength) ?? d.hopLength
        winLength = try c.decodeIfPresent(Int.self, forKey: .winLength) ?? d.winLength
        nMels = try c.decodeIfPresent(Int.self, forKey: .nMels) ?? d.nMels
        fmin = try c.decodeIfPresent(Double.self, forKey: .fmin) ?? d.fmin
        fmax = try c.decodeIfPresent(Double.self, forKey: .fmax) ?? d.fmax
        upsampleFactors = try c.decodeIfPresent([Int].self, forKey: .upsampleFactors) ?? d.upsampleFactors
        nGroup = try c.decodeIfPresent(Int.self, forKey: .nGroup) ?? d.nGroup
        nFlows = try c.decodeIfPresent(Int.self, forKey: .nFlows) ?? d.nFlows
        nLayers = try c.decodeIfPresent(Int.self, forKey: .nLayers) ?? d.nLayers
        channels = try c.decodeIfPresent(Int.self, forKey: .channels) ?? d.channels
        kernelSize = try c.decodeIfPresent([Int].self, forKey: .kernelSize) ?? d.kernelSize
        lpcOrder = try c.decodeIfPresent(Int.self, forKey: .lpcOrder) ?? 0
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if family != WaveFlowFamily.name { try c.encode(family, forKey: .family) }
        try c.encode(sampleRate, forKey: .sampleRate); try c.encode(nFFT, forKey: .nFFT)
        try c.encode(hopLength, forKey: .hopLength); try c.encode(winLength, forKey: .winLength)
        try c.encode(nMels, forKey: .nMels); try c.encode(fmin, forKey: .fmin); try c.encode(fmax, forKey: .fmax)
        try c.encode(upsampleFactors, forKey: .upsampleFactors); try c.encode(nGroup, forKey: .nGroup)
        try c.encode(nFlows, forKey: .nFlows); try c.encode(nLayers, forKey: .nLayers)
        try c.encode(channels, forKey: .channels); try c.encode(kernelSize, forKey: .kernelSize)
        if lpcOrder != 0 { try c.encode(lpcOrder, forKey: .lpcOrder) }
    }

    /// The feature configuration the model is conditioned on.
    public var mel: MelConfig {
        MelConfig(sampleRate: sampleRate, nFFT: nFFT, hopLength: hopLength, winLength: winLength,
                  nMels: nMels, fmin: fmin, fmax: fmax)
    }

    /// Height dilation of layer l (MODEL-SPEC section 5 table).
    public func heightDilation(_ l: Int) -> Int {
        let table: [Int]
        switch nGroup {
        case 32: table = [1, 2, 4, 1, 2, 4, 1, 2]
        case 64: table = [1, 2, 4, 8, 16, 1, 2, 4]
        case 128: table = [1, 2, 4, 8, 16, 32, 64, 1]
        default: table = [1, 1, 1, 1, 1, 1, 1, 1]
        }
        return table[l]
    }

    /// Width dilation of layer l: 2^l.
    public func widthDilation(_ l: Int) -> Int { 1 << l }

    /// The row permutation applied after flow k (an involution).
    public func permutation(_ k: Int) -> [Int] {
        let h = nGroup
        if k < nFlows / 2 { return (0..<h).map { h - 1 - $0 } }
        return (0..<h).map { $0 < h / 2 ? h / 2 - 1 - $0 : h - 1 - ($0 - h / 2) }
    }

    /// rowMaps[k][i]: which row of the unpermuted condition flow k's row i is.
    public var rowMaps: [[Int]] {
        var maps = [Array(0..<nGroup)]
        for k in 0 ..< nFlows - 1 {
            let p = permutation(k)
            maps.append((0..<nGroup).map { maps[k][p[$0]] })
        }
        return maps
    }

    /// Throws unless the configuration is one the spec allows.
    public func validate() throws {
        guard let familyType = ModelFamilies.named(family) else {
            throw WaveFlowError("model family '\(family)' is not supported by this build (it reads "
                                + ModelFamilies.all.map { "'\($0.name)'" }.joined(separator: ", ") + ")")
        }
        try mel.validate()
        try familyType.validate(self)
        guard nGroup >= 2, hopLength % nGroup == 0 else { throw WaveFlowError("n_group \(nGroup) must divide hop_length \(hopLength)") }
        guard (1...8).contains(nLayers) else { throw WaveFlowError("n_layers must be 1 to 8, not \(nLayers)") }
        guard (1...1024).contains(channels) else { throw WaveFlowError("channels must be 1 to 1024, not \(channels)") }
        guard kernelSize == [3, 3] else { throw WaveFlowError("kernel_size must be [3, 3]") }
        guard (0...64).contains(lpcOrder), lpcOrder < nFFT / 2 else {
            throw WaveFlowError("lpc_order must be 0 (no LPC front) to 64 and below n_fft/2, not \(lpcOrder)")
        }
        guard (1...8).contains(upsampleFactors.count), upsampleFactors.allSatisfy({ $0 >= 2 && $0 <= hopLength && $0 % 2 == 0 }),
              upsampleFactors.reduce(1, *) == hopLength else {
            throw WaveFlowError("upsample_factors \(upsampleFactors) must be even and multiply to hop_length \(hopLength)")
        }
    }

    /// Number of parameters (the inference tensors).
    public var parameterCount: Int {
        let c = channels, m = nMels
        let ups = upsampleFactors.reduce(0) { $0 + 3 * 2 * $1 + 1 }
        let layer = (2 * c * c * 9 + 2 * c) + (2 * c * m + 2 * c) + (2 * c * c + 2 * c)
        let flow = (c + c) + nLayers * layer + (2 * c + 2)
        return ups + nFlows * flow
    }

    /// Multiply-adds of one flow's network per predicted row position
    /// (input, L x (conv + cond + out), output).
    public var macsPerPositionPerFlow: Int {
        let c = channels, m = nMels
        return c + nLayers * (2 * c * c * 9 + 2 * c * m + 2 * c * c) + 2 * c
    }

    /// Multiply-adds of all K flows per predicted row position.
    public var macsPerPosition: Int { nFlows * macsPerPositionPerFlow }

    /// Multiply-adds of a forward pass per audio sample (row 0 is copied, so
    /// (h-1)/h of the positions are predicted; the upsampler is negligible).
    public var macsPerSample: Double {
        Double(macsPerPosition) * Double(nGroup - 1) / Double(nGroup)
    }

    /// Multiply-adds per audio sample of one forward pass as performed: as
    /// `macsPerSample`, less the vertical taps that reach above row 0 (the
    /// causal zero padding, which both the training convolution and the
    /// row-by-row inverse skip). Benchmarks count FLOPs with this.
    public var performedMacsPerSample: Double {
        let c = channels, m = nMels
        var total = 0
        for r in 0 ..< nGroup - 1 { // network row r predicts grid row r + 1
            total += c + 2 * c
            for l in 0..<nLayers {
                let dh = heightDilation(l)
                let taps = (0..<3).filter { r - (2 - $0) * dh >= 0 }.count
                total += 2 * c * c * 3 * taps + 2 * c * m + 2 * c * c
            }
        }
        return Double(nFlows * total) / Double(nGroup)
    }

    // MARK: - Presets

    /// Named configurations: the spec's default and smaller ones for CPUs.
    public static let presets: [String: ModelConfig] = {
        var p: [String: ModelConfig] = [:]
        p["h16-c64"] = ModelConfig()
        var c48 = ModelConfig(); c48.channels = 48; c48.nFlows = 6; p["h16-c48"] = c48
        var c32 = ModelConfig(); c32.channels = 32; c32.nFlows = 6; p["h16-c32"] = c32
        var c32k4 = ModelConfig(); c32k4.channels = 32; c32k4.nFlows = 4; p["h16-c32-k4"] = c32k4
        var tiny = ModelConfig(); tiny.channels = 8; tiny.nFlows = 2; tiny.nLayers = 3; p["tiny"] = tiny
        // With the LPC front (MODEL-SPEC 11): the flows model the excitation.
        for name in ["h16-c64", "h16-c48", "h16-c32", "tiny"] {
            var c = p[name]!; c.lpcOrder = 16; p["lpc-" + name] = c
        }
        var h64 = c32; h64.nGroup = 64; h64.lpcOrder = 16; p["lpc-h64-c32"] = h64
        var h32 = c32; h32.nGroup = 32; h32.lpcOrder = 16; p["lpc-h32-c32"] = h32
        var h128 = c32; h128.nGroup = 128; h128.lpcOrder = 16; p["lpc-h128-c32"] = h128
        return p
    }()

    /// Refuses a config JSON object holding a key that changes the
    /// mathematics in a family this build lacks (e.g. WaveGlow's
    /// `n_early_size`): silently ignoring it would build another model than
    /// the file describes. Keys no family reads (step, corpus, …) are fine.
    static func checkKeys(_ object: [String: Any]) throws {
        let family = object["family"] as? String ?? WaveFlowFamily.name
        for key in object.keys.sorted() {
            if let owner = ModelFamilies.keysOfOtherFamilies[key], owner != family || ModelFamilies.named(owner) == nil {
                throw WaveFlowError("config key '\(key)' belongs to the \(owner) family, which this build does not read"
                                    + (family == owner ? "" : " (this config's family is \(family))"))
            }
        }
    }

    /// A preset by name, or a JSON file with any of the spec's keys.
    public static func named(_ nameOrPath: String) throws -> ModelConfig {
        if let p = presets[nameOrPath] { return p }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw WaveFlowError("no preset or file named '\(nameOrPath)' (presets: \(presets.keys.sorted().joined(separator: ", ")))")
        }
        guard let data = FileManager.default.contents(atPath: nameOrPath) else {
            throw WaveFlowError("cannot read", path: nameOrPath)
        }
        do {
            let c = try JSONDecoder().decode(ModelConfig.self, from: data)
            if let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] { try checkKeys(object) }
            try c.validate()
            return c
        } catch let e as WaveFlowError {
            throw e.at(nameOrPath)
        } catch {
            throw WaveFlowError("not a valid config JSON", path: nameOrPath)
        }
    }

    /// The config as compact JSON with sorted keys.
    public var json: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try! enc.encode(self), as: UTF8.self)
    }
}
