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
    /// WaveGlow (MODEL-SPEC section 12; recorded only in that family's
    /// configs): E, an early output every E flows; S, its channels; the
    /// coupling ("affine" or "additive"); and whether odd flows transform
    /// the first half (the authors' first layout).
    public var nEarlyEvery = 4
    public var nEarlySize = 2
    public var coupling = "affine"
    public var alternateHalves = false

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sampleRate = "sample_rate", nFFT = "n_fft", hopLength = "hop_length", winLength = "win_length"
        case nMels = "n_mels", fmin, fmax, upsampleFactors = "upsample_factors", nGroup = "n_group"
        case nFlows = "n_flows", nLayers = "n_layers", channels, kernelSize = "kernel_size"
        case lpcOrder = "lpc_order", family
        case nEarlyEvery = "n_early_every", nEarlySize = "n_early_size", coupling, alternateHalves = "alternate_halves"
    }

    /// Whether this is a WaveGlow config (MODEL-SPEC section 12).
    var isWaveGlow: Bool { family == WaveGlowFamily.name }

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
        // WaveFlow's kernel_size is [3, 3]; WaveGlow's is the number 3.
        if let k = try? c.decodeIfPresent(Int.self, forKey: .kernelSize) {
            kernelSize = [k]
        } else {
            kernelSize = try c.decodeIfPresent([Int].self, forKey: .kernelSize) ?? (family == WaveGlowFamily.name ? [3] : d.kernelSize)
        }
        lpcOrder = try c.decodeIfPresent(Int.self, forKey: .lpcOrder) ?? 0
        nEarlyEvery = try c.decodeIfPresent(Int.self, forKey: .nEarlyEvery) ?? d.nEarlyEvery
        nEarlySize = try c.decodeIfPresent(Int.self, forKey: .nEarlySize) ?? d.nEarlySize
        coupling = try c.decodeIfPresent(String.self, forKey: .coupling) ?? d.coupling
        alternateHalves = try c.decodeIfPresent(Bool.self, forKey: .alternateHalves) ?? d.alternateHalves
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if family != WaveFlowFamily.name { try c.encode(family, forKey: .family) }
        try c.encode(sampleRate, forKey: .sampleRate); try c.encode(nFFT, forKey: .nFFT)
        try c.encode(hopLength, forKey: .hopLength); try c.encode(winLength, forKey: .winLength)
        try c.encode(nMels, forKey: .nMels); try c.encode(fmin, forKey: .fmin); try c.encode(fmax, forKey: .fmax)
        try c.encode(nGroup, forKey: .nGroup)
        try c.encode(nFlows, forKey: .nFlows); try c.encode(nLayers, forKey: .nLayers)
        try c.encode(channels, forKey: .channels)
        if lpcOrder != 0 { try c.encode(lpcOrder, forKey: .lpcOrder) }
        if isWaveGlow {
            try c.encode(kernelSize.first ?? 3, forKey: .kernelSize)
            try c.encode(nEarlyEvery, forKey: .nEarlyEvery); try c.encode(nEarlySize, forKey: .nEarlySize)
            try c.encode(coupling, forKey: .coupling); try c.encode(alternateHalves, forKey: .alternateHalves)
        } else {
            try c.encode(upsampleFactors, forKey: .upsampleFactors); try c.encode(kernelSize, forKey: .kernelSize)
        }
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
        guard (1...1024).contains(channels) else { throw WaveFlowError("channels must be 1 to 1024, not \(channels)") }
        guard (0...64).contains(lpcOrder), lpcOrder < nFFT / 2 else {
            throw WaveFlowError("lpc_order must be 0 (no LPC front) to 64 and below n_fft/2, not \(lpcOrder)")
        }
    }

    /// Number of parameters (the inference tensors of the family).
    public var parameterCount: Int {
        FlowModel<Float>.tensorShapes(self).reduce(0) { $0 + $1.1.reduce(1, *) }
    }

    /// Multiply-adds of one flow's network per predicted row position
    /// (input, L x (conv + cond + out), output).
    public var macsPerPositionPerFlow: Int {
        let c = channels, m = nMels
        return c + nLayers * (2 * c * c * 9 + 2 * c * m + 2 * c * c) + 2 * c
    }

    /// Multiply-adds of all K flows per predicted row position.
    public var macsPerPosition: Int { nFlows * macsPerPositionPerFlow }

    /// Multiply-adds of a forward pass per audio sample (the family's count).
    public var macsPerSample: Double { ModelFamilies.named(family)?.macsPerSample(self) ?? 0 }

    /// Multiply-adds per audio sample of one forward pass as performed
    /// (the family's count): benchmarks count FLOPs with this.
    public var performedMacsPerSample: Double { ModelFamilies.named(family)?.performedMacsPerSample(self) ?? 0 }

    /// WaveFlow's multiply-adds per audio sample (row 0 is copied, so
    /// (h-1)/h of the positions are predicted; the upsampler is negligible).
    var waveFlowMacsPerSample: Double {
        Double(macsPerPosition) * Double(nGroup - 1) / Double(nGroup)
    }

    /// WaveFlow's multiply-adds per audio sample as performed: as
    /// `waveFlowMacsPerSample`, less the vertical taps that reach above row 0
    /// (the causal zero padding, which both the training convolution and the
    /// row-by-row inverse skip).
    var waveFlowPerformedMacsPerSample: Double {
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

    /// The multiply-adds per sample the Winograd convolutions save where
    /// they run (`WidthWinograd`, Float32 products): WaveFlow's 2-D
    /// convolutions (the taps of every row a layer reaches); a layer's convolution
    /// by Winograd performs (4 T / W) / 2 of the direct multiply-adds, T
    /// tiles for W columns (more than half when tiles reach past a block).
    /// - Parameters:
    ///   - blocks: the column widths the layer runs on (synthesis: its
    ///     blocks; training: one row of segment / h columns).
    ///   - uses: whether the layer with width dilation dw runs by Winograd.
    /// WaveGlow's dilated convolutions likewise (2C x 3C per column, G
    /// samples, in every flow).
    func winogradSavedMacsPerSample(blocks: [Int], uses: (Int) -> Bool) -> Double {
        let waveGlow = family == WaveGlowFamily.name
        guard waveGlow || family == WaveFlowFamily.name, !blocks.isEmpty else { return 0 }
        let c = channels, width = blocks.reduce(0, +)
        var saved = 0.0
        for l in 0..<nLayers where uses(widthDilation(l)) {
            // Each block's share, weighted by its columns.
            let share = blocks.map { WidthWinograd.Tiling(dilation: widthDilation(l), columns: $0).macShare * Double($0) }
                .reduce(0, +) / Double(width)
            let fraction = 1 - share
            // The direct convolution per column: WaveGlow one row of 2C x 3C; WaveFlow
            // the taps each of its h - 1 rows reaches.
            let conv = waveGlow ? 2 * c * 3 * c : waveFlowConvMacsPerColumn(layer: l)
            saved += fraction * Double(conv)
        }
        return saved * Double(nFlows) / Double(nGroup)
    }

    /// WaveFlow layer l's direct 3x3 convolution per column: 2C x C per tap,
    /// over the vertical taps each of the h - 1 rows reaches.
    private func waveFlowConvMacsPerColumn(layer l: Int) -> Int {
        let dh = heightDilation(l)
        var conv = 0
        for r in 0 ..< nGroup - 1 { conv += 2 * channels * channels * 3 * (0..<3).filter { r - (2 - $0) * dh >= 0 }.count }
        return conv
    }

    /// The multiply-adds per sample of one forward pass as performed with
    /// Float32 products (`--winograd auto`) on rows or blocks of `columns`
    /// columns (WaveFlow and WaveGlow); nil for other families.
    public func winogradMacsPerSample(columns: Int) -> Double? {
        guard family == WaveFlowFamily.name || family == WaveGlowFamily.name, columns > 0 else { return nil }
        return performedMacsPerSample - winogradSavedMacsPerSample(blocks: [columns]) {
            WinogradPolicy.auto.applies(dilation: $0, columns: columns)
        }
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
        // WaveGlow (MODEL-SPEC 12): K = 12, L = 8, G = 8, an early output of 2
        // every 4 flows; CPU sizes, and the authors' published C = 256 and 512.
        for c in [32, 64, 128, 256, 512] {
            var g = ModelConfig()
            g.family = WaveGlowFamily.name; g.nGroup = 8; g.nFlows = 12; g.nLayers = 8; g.channels = c; g.kernelSize = [3]
            p["wg-c\(c)"] = g
            if c <= 128 { g.lpcOrder = 16; p["lpc-wg-c\(c)"] = g }
        }
        var wgTiny = ModelConfig()
        wgTiny.family = WaveGlowFamily.name; wgTiny.nGroup = 8; wgTiny.nFlows = 4; wgTiny.nLayers = 3; wgTiny.channels = 8
        wgTiny.kernelSize = [3]; wgTiny.nEarlyEvery = 2
        p["wg-tiny"] = wgTiny
        return p
    }()

    /// Refuses a config JSON object holding a key that changes the
    /// mathematics of another family (e.g. WaveGlow's `n_early_size` in a
    /// WaveFlow config): silently ignoring it would build another model than
    /// the file describes. Keys no family reads (step, corpus, …) are fine.
    static func checkKeys(_ object: [String: Any]) throws {
        let family = object["family"] as? String ?? WaveFlowFamily.name
        for key in object.keys.sorted() {
            if let owner = ModelFamilies.keysOfOneFamily[key], owner != family {
                throw WaveFlowError("config key '\(key)' belongs to the \(owner) family (this config's family is \(family))")
            }
        }
    }

    /// Keys a checkpoint's config records besides the model's (not mathematics).
    static let recordedKeys: Set<String> = ["step", "corpus", "validation_nll", "training", "imported_from"]

    /// Refuses a key that is neither the model's nor a recorded one. Used
    /// for config files a user writes for `train --config`, where such a key
    /// is a typo that would silently train another model; checkpoints'
    /// configs ignore unknown keys, as MODEL-SPEC section 10 asks.
    static func checkKnown(_ object: [String: Any]) throws {
        let known = Set(CodingKeys.allCases.map(\.rawValue)).union(recordedKeys)
        for key in object.keys.sorted() where !known.contains(key) {
            throw WaveFlowError("unknown config key '\(key)' (known: \(CodingKeys.allCases.map(\.rawValue).sorted().joined(separator: ", ")))")
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
            if let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
                try checkKeys(object)
                try checkKnown(object)
            }
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
