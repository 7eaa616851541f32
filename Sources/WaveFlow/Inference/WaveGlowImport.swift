import Foundation

/// Converts a PyTorch WaveGlow checkpoint (the authors' `torch.save` files,
/// either container) into a waveflow model (MODEL-SPEC 12) without Python
/// (issue 19):
///
/// 1. `PyTorchArchive` opens the file and unpickles it (no code runs).
/// 2. The model is found: the authors' whole-module pickle
///    `{'model': <glow.WaveGlow>, 'iteration', 'optimizer', 'learning_rate'}`
///    (walking `_modules` recursively for dotted names), a module at the
///    top, or a state dict under 'state_dict' or 'model' or at the top
///    (a `module.` prefix removed).
/// 3. Weight norm is folded (`weight_g`, `weight_v`: w = g v / ||v||, the norm
///    over every dimension but g's), and the authors' older layouts are
///    rewritten into the current one (`normalise`).
/// 4. The config is inferred from the shapes (cross-checked against the
///    module's attributes when the file holds modules), every tensor's shape
///    is compared with `WaveGlowFamily.tensorShapes`, and the values are
///    converted to Float32.
public enum WaveGlowImport {
    /// What the file cannot say: the mel features (Tacotron 2's by default),
    /// and optionally the halves convention.
    public struct Options: Sendable {
        public var sampleRate = 22050
        public var nFFT = 1024
        public var winLength = 1024
        public var fmin = 0.0
        public var fmax = 8000.0
        /// Overrides the layout's `alternate_halves` (nil: true for the first layout only).
        public var alternateHalves: Bool?
        public init() {}
    }

    /// The authors' module layouts, told apart by tensor names.
    public enum Layout: String, Sendable {
        /// `WN.k.res_skip_layers.i` and one `WN.k.cond_layer` (glow.py since Aug 2019).
        case current
        /// `WN.k.res_layers.i` (all but the last layer), `WN.k.skip_layers.i`,
        /// per-layer `WN.k.cond_layers.i` (the first release, glow_old.py).
        case first
        /// `WN.k.res_skip_layers.i` with per-layer `WN.k.cond_layers.i` (Nov 2018 to Aug 2019).
        case middle

        var description: String {
            switch self {
            case .current: return "current layout (res_skip_layers, one cond_layer)"
            case .first: return "first layout (res_layers + skip_layers stacked, per-layer cond_layers concatenated)"
            case .middle: return "2018-19 layout (res_skip_layers, per-layer cond_layers concatenated)"
            }
        }
    }

    /// An imported model and what was found on the way.
    public struct Result {
        public let config: ModelConfig
        public let model: FlowModel<Float>
        public let layout: Layout
        /// Lines for the user: container, layout, inferred config, checks.
        public let summary: [String]
        /// The file's name, recorded in the checkpoint's config as `imported_from`.
        public let source: String

        /// The model as a checkpoint (inference tensors only).
        public var checkpoint: Checkpoint {
            var json = (try? JSONSerialization.jsonObject(with: Data(config.json.utf8))) as? [String: Any] ?? [:]
            json["imported_from"] = source
            return Checkpoint(config: config, model: model, trainTensors: [:], configJSON: json)
        }
    }

    /// Imports the file at `path`; every error names it.
    public static func load(path: String, options: Options = Options()) throws -> Result {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw WaveFlowError("no such file", path: path) }
        guard !isDir.boolValue else { throw WaveFlowError("is a folder, not a checkpoint file", path: path) }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw WaveFlowError("cannot read file: \((error as NSError).localizedDescription)", path: path)
        }
        return try load(data: data, name: path, options: options)
    }

    /// Imports the bytes of a torch.save file (`name` names it in errors).
    public static func load(data: Data, name: String, options: Options = Options()) throws -> Result {
        do {
            let archive = try PyTorchArchive.open(data)
            defer { archive.close() }
            return try convert(archive, name: name, options: options)
        } catch let e as WaveFlowError {
            // Names from the file may hold anything: the message stays one printable line.
            throw WaveFlowError(printable(e.message, limit: 600), path: e.path).at(name)
        }
    }

    // MARK: - finding the model

    /// The named tensors of the file and where they were found.
    struct Found {
        var tensors: [(String, TorchTensor)] = []
        var description = ""
        /// Module records by dotted path ("" = the WaveGlow itself), for cross-checks.
        var modules: [String: PickleObject] = [:]
    }

    static let maxModuleDepth = 32
    static let maxTensors = 1_000_000

    static func find(_ root: PickleValue) throws -> Found {
        var found = Found()
        switch root {
        case .object(let o):
            try walk(o, prefix: "", depth: 0, into: &found)
            found.description = "a pickled module (\(o.qualifiedName))"
        case .dict(let d):
            if case .object(let o)? = d["model"] {
                try walk(o, prefix: "", depth: 0, into: &found)
                found.description = "whole-module pickle (\(o.qualifiedName) under 'model')"
            } else if case .dict(let sd)? = d["state_dict"] {
                found.tensors = stateDict(sd)
                found.description = "state dict under 'state_dict'"
            } else if case .dict(let sd)? = d["model"] {
                found.tensors = stateDict(sd)
                found.description = "state dict under 'model'"
            } else {
                found.tensors = stateDict(d)
                found.description = "state dict"
            }
        default:
            throw WaveFlowError("the pickle holds \(root.kind), not a checkpoint (a dict or a module)")
        }
        // A state dict saved from DataParallel / DistributedDataParallel.
        if !found.tensors.isEmpty, found.tensors.allSatisfy({ $0.0.hasPrefix("module.") }) {
            found.tensors = found.tensors.map { (String($0.0.dropFirst("module.".count)), $0.1) }
            found.description += " (module. prefix removed)"
        }
        return found
    }

    /// The tensor entries of a state dict (other entries ignored).
    static func stateDict(_ d: PickleDict) -> [(String, TorchTensor)] {
        d.entries.compactMap { e in
            guard case .string(let k) = e.key, case .tensor(let t) = e.value else { return nil }
            return (k, t)
        }
    }

    /// A module record's `_parameters` and `_buffers`, then its `_modules` recursively.
    static func walk(_ o: PickleObject, prefix: String, depth: Int, into found: inout Found) throws {
        guard depth <= maxModuleDepth else { throw WaveFlowError("modules nested deeper than \(maxModuleDepth)") }
        guard let attrs = o.attributes, case .dict? = attrs["_modules"] else {
            throw WaveFlowError("the \(o.qualifiedName) record\(prefix.isEmpty ? "" : " at '\(prefix.dropLast())'") is not a torch module (no _modules)")
        }
        found.modules[String(prefix.dropLast())] = o
        for key in ["_parameters", "_buffers"] {
            guard case .dict(let d)? = attrs[key] else { continue }
            for e in d.entries {
                guard case .string(let k) = e.key else { continue }
                if case .tensor(let t) = e.value {
                    guard found.tensors.count < maxTensors else { throw WaveFlowError("more than \(maxTensors) tensors") }
                    found.tensors.append((prefix + k, t))
                }
            }
        }
        guard case .dict(let children)? = attrs["_modules"] else { return }
        for e in children.entries {
            guard case .string(let k) = e.key, case .object(let child) = e.value else { continue }
            try walk(child, prefix: prefix + k + ".", depth: depth + 1, into: &found)
        }
    }

    // MARK: - tensors in spec names

    /// Where one tensor of the model comes from.
    indirect enum Source {
        case stored(String, TorchTensor)
        /// weight_g and weight_v (or parametrizations' original0/original1); `dim`: g's axis, nil = the norm over everything.
        case weightNorm(String, g: TorchTensor, v: TorchTensor, dim: Int?)
        /// Parts stacked along the first axis.
        case concat(String, [Source], shape: [Int])

        var origin: String {
            switch self {
            case .stored(let n, _), .weightNorm(let n, _, _, _), .concat(let n, _, _): return n
            }
        }

        var shape: [Int] {
            switch self {
            case .stored(_, let t): return t.shape
            case .weightNorm(_, _, let v, _): return v.shape
            case .concat(_, _, let s): return s
            }
        }

        func values() throws -> [Float] {
            do {
                switch self {
                case .stored(_, let t): return try t.floats()
                case .weightNorm(_, let g, let v, let dim): return try fold(g: g.floats(), v: v.floats(), shape: v.shape, dim: dim)
                case .concat(_, let parts, _): return try parts.flatMap { try $0.values() }
                }
            } catch let e as WaveFlowError where e.path == nil && !e.message.hasPrefix("storage") && !e.message.hasPrefix("zip") {
                throw WaveFlowError("tensor '\(origin)' \(e.message)")
            }
        }

        static func stack(_ name: String, _ parts: [Source]) throws -> Source {
            guard let first = parts.first else { throw WaveFlowError("nothing to stack for '\(name)'") }
            if parts.count == 1 { return first }
            var rows = 0
            for p in parts {
                guard p.shape.count == first.shape.count, p.shape.count >= 1, p.shape.dropFirst() == first.shape.dropFirst() else {
                    throw WaveFlowError("cannot stack \(parts.map { "'\($0.origin)' \($0.shape)" }.joined(separator: " over ")) into '\(name)'")
                }
                rows += p.shape[0]
            }
            return .concat(parts.map(\.origin).joined(separator: " + "), parts, shape: [rows] + first.shape.dropFirst())
        }
    }

    /// w = g * v / ||v|| in Float64, the norm over every axis but `dim` (PyTorch's weight_norm).
    static func fold(g: [Float], v: [Float], shape: [Int], dim: Int?) -> [Float] {
        let (outer, n, inner): (Int, Int, Int)
        if let dim {
            (outer, n, inner) = (shape[..<dim].reduce(1, *), shape[dim], shape[(dim + 1)...].reduce(1, *))
        } else {
            (outer, n, inner) = (1, 1, v.count)
        }
        var norm2 = [Double](repeating: 0, count: n)
        for a in 0..<outer { for j in 0..<n { for b in 0..<inner {
            let x = Double(v[(a * n + j) * inner + b]); norm2[j] += x * x
        } } }
        var w = [Float](repeating: 0, count: v.count)
        for a in 0..<outer { for j in 0..<n {
            let norm = norm2[j].squareRoot(), gj = Double(g[dim == nil ? 0 : j])
            for b in 0..<inner { let i = (a * n + j) * inner + b; w[i] = Float(gj * Double(v[i]) / norm) }
        } }
        return w
    }

    /// Weight-norm pairs folded, older layouts rewritten: tensors under the
    /// current layout's names.
    static func normalise(_ named: [(String, TorchTensor)]) throws -> (sources: [String: Source], layout: Layout, folded: Int) {
        var raw: [String: TorchTensor] = [:]
        for (name, t) in named {
            guard raw[name] == nil else { throw WaveFlowError("tensor '\(name)' appears twice") }
            raw[name] = t
        }
        // Weight norm: X.weight_g + X.weight_v, or X.parametrizations.weight.original0/1.
        var src: [String: Source] = [:]
        var folded = 0
        for name in raw.keys.sorted() {
            let t = raw[name]!
            var pair: (base: String, g: String, v: String)?
            if name.hasSuffix(".weight_g") || name.hasSuffix(".weight_v") {
                let base = String(name.dropLast(2))
                pair = (base, base + "_g", base + "_v")
            } else if name.hasSuffix(".parametrizations.weight.original0") || name.hasSuffix(".parametrizations.weight.original1") {
                let stem = String(name.dropLast(".parametrizations.weight.original0".count))
                pair = (stem + ".weight", stem + ".parametrizations.weight.original0", stem + ".parametrizations.weight.original1")
            }
            guard let (base, gName, vName) = pair else {
                guard src[name] == nil else { throw WaveFlowError("tensor '\(name)' is stored both plain and weight-normalised") }
                src[name] = .stored(name, t)
                continue
            }
            guard name == gName else { guard raw[gName] != nil else { throw WaveFlowError("'\(name)' has no '\(gName)' beside it") }; continue }
            guard let v = raw[vName] else { throw WaveFlowError("'\(gName)' has no '\(vName)' beside it") }
            guard src[base] == nil, raw[base] == nil else { throw WaveFlowError("tensor '\(base)' is stored both plain and weight-normalised") }
            // g's axis: the one where it matches v, every other axis 1; a single g: the norm over all of v.
            var dim: Int?
            if t.shape.count == v.shape.count {
                dim = (0 ..< v.shape.count).first { d in
                    t.shape[d] == v.shape[d] && t.shape.indices.allSatisfy { $0 == d || t.shape[$0] == 1 }
                }
            }
            guard dim != nil || t.count == 1, !v.shape.isEmpty else {
                throw WaveFlowError("'\(gName)' of shape \(t.shape) does not fit '\(vName)' of shape \(v.shape)")
            }
            src[base] = .weightNorm("\(gName) / \(vName)", g: t, v: v, dim: dim)
            folded += 1
        }

        // The layout of every WN stack, by its tensor names.
        let flows = Set(src.keys.compactMap { flowIndex($0, "WN.") })
        var layouts = Set<Layout>()
        for k in flows.sorted() {
            let p = "WN.\(k)."
            func has(_ s: String) -> Bool { src.keys.contains { $0.hasPrefix(p + s) } }
            let resSkip = has("res_skip_layers."), res = has("res_layers."), skip = has("skip_layers.")
            let cond = src[p + "cond_layer.weight"] != nil, conds = has("cond_layers.")
            let layout: Layout
            switch (resSkip, res || skip, cond, conds) {
            case (true, false, true, false): layout = .current
            case (true, false, false, true): layout = .middle
            case (false, true, false, true): layout = .first
            default:
                let parts = [resSkip ? "res_skip_layers" : nil, res ? "res_layers" : nil, skip ? "skip_layers" : nil,
                             cond ? "cond_layer" : nil, conds ? "cond_layers" : nil].compactMap { $0 }
                throw WaveFlowError("unknown WaveGlow layout: WN.\(k) has "
                                    + (resSkip || res || skip ? parts.joined(separator: " + ")
                                       : "neither res_skip_layers nor res_layers/skip_layers" + (parts.isEmpty ? "" : " (only \(parts.joined(separator: " + ")))"))
                                    + " (known: res_skip_layers + cond_layer, res_layers + skip_layers + cond_layers, res_skip_layers + cond_layers)")
            }
            layouts.insert(layout)
            let layers = Set(src.keys.compactMap { layerIndex($0, p + "in_layers.") })
            let l = layers.count
            guard l > 0, layers == Set(0..<l) else { throw WaveFlowError("WN.\(k).in_layers are not numbered 0...L-1") }
            func take(_ name: String) throws -> Source {
                guard let s = src.removeValue(forKey: name) else { throw WaveFlowError("missing tensor '\(name)' (\(layout.rawValue) layout)") }
                return s
            }
            if layout == .first {
                for i in 0..<l {
                    for part in ["weight", "bias"] {
                        let skipPart = try take(p + "skip_layers.\(i).\(part)")
                        let parts = i < l - 1 ? [try take(p + "res_layers.\(i).\(part)"), skipPart] : [skipPart]
                        let name = p + "res_skip_layers.\(i).\(part)"
                        src[name] = try .stack(name, parts)
                    }
                }
            }
            if layout == .first || layout == .middle {
                for part in ["weight", "bias"] {
                    let name = p + "cond_layer.\(part)"
                    src[name] = try .stack(name, try (0..<l).map { try take(p + "cond_layers.\($0).\(part)") })
                }
            }
        }
        guard layouts.count <= 1 else {
            throw WaveFlowError("unknown WaveGlow layout: its WN stacks mix layouts (\(layouts.map(\.rawValue).sorted().joined(separator: ", ")))")
        }
        return (src, layouts.first ?? .current, folded)
    }

    /// k of "WN.k.…" / "convinv.k.…" (names with `prefix`), bounded.
    static func flowIndex(_ name: String, _ prefix: String) -> Int? { layerIndex(name, prefix) }

    static func layerIndex(_ name: String, _ prefix: String) -> Int? {
        guard name.hasPrefix(prefix) else { return nil }
        let digits = name.dropFirst(prefix.count).prefix { $0 != "." }
        guard (1...4).contains(digits.count), digits.allSatisfy(\.isASCII) else { return nil }
        return Int(digits)
    }

    // MARK: - config and conversion

    static func convert(_ archive: PyTorchArchive, name: String, options: Options) throws -> Result {
        let found = try find(archive.root)
        let names = found.tensors.map(\.0)
        guard names.contains(where: { $0.hasPrefix("WN.") || $0.hasPrefix("convinv.") || $0.hasPrefix("upsample.") }) else {
            let tops = Set(names.compactMap { $0.split(separator: ".").first.map(String.init) })
            if tops.contains("embedding"), tops.contains("encoder"), tops.contains("decoder") {
                throw WaveFlowError("not a WaveGlow: looks like a Tacotron 2 checkpoint (embedding/encoder/decoder tensors)")
            }
            let sample = names.prefix(3).map { "'\($0)'" }.joined(separator: ", ")
            throw WaveFlowError("not a WaveGlow: no upsample/WN/convinv tensors in its \(found.description)"
                                + (names.isEmpty ? " (no tensors at all)" : " (\(names.count) tensors such as \(sample))"))
        }
        let (src, layout, folded) = try normalise(found.tensors)
        func shape(_ n: String, rank: Int) throws -> [Int] {
            guard let s = src[n]?.shape else { throw WaveFlowError("missing tensor '\(n)'") }
            guard s.count == rank else { throw WaveFlowError("tensor '\(n)' has shape \(s), not \(rank) dimensions") }
            return s
        }

        // Sizes from the shapes.
        let up = try shape("upsample.weight", rank: 3)
        let (m, kernel) = (up[0], up[2])
        guard up[1] == m, kernel % 4 == 0, kernel > 0 else {
            throw WaveFlowError("upsample.weight has shape \(up), expected [n_mels, n_mels, 4 * hop]")
        }
        let hop = kernel / 4
        let flowSet = Set(src.keys.compactMap { flowIndex($0, "WN.") } + src.keys.compactMap { flowIndex($0, "convinv.") })
        let k = flowSet.count
        guard k > 0, flowSet == Set(0..<k) else {
            throw WaveFlowError("flows are not numbered 0...K-1 (found \(flowSet.sorted().prefix(8).map(String.init).joined(separator: ", ")))")
        }
        let rows = try (0..<k).map { try shape("convinv.\($0).conv.weight", rank: 3)[0] }
        let g = rows[0]
        let c = try shape("WN.0.start.weight", rank: 3)[0]
        let l = Set(src.keys.compactMap { layerIndex($0, "WN.0.in_layers.") }).count
        // Early outputs: the first flow with fewer channels than the one before.
        let root = found.modules[""]
        func attr(_ o: PickleObject?, _ key: String) -> PickleValue? { o?.attributes?[key] }
        var (e, s) = (k, 2)
        if let drop = (1 ..< max(k, 1)).first(where: { rows[$0] != rows[$0 - 1] }) {
            (e, s) = (drop, rows[drop - 1] - rows[drop])
        } else if let ae = attr(root, "n_early_every")?.int, let asz = attr(root, "n_early_size")?.int {
            (e, s) = (ae, asz) // no early output within K flows: the module's own values
        }
        let nh = rows[0] / 2
        let endRows = try shape("WN.0.end.weight", rank: 3)[0]
        let coupling: String
        if endRows == 2 * nh { coupling = "affine" } else if endRows == nh { coupling = "additive" } else {
            throw WaveFlowError("WN.0.end.weight has \(endRows) output channels: neither 2 * n_half (\(2 * nh), affine) nor n_half (\(nh), additive)")
        }

        var config = ModelConfig()
        config.family = WaveGlowFamily.name
        config.kernelSize = [3]
        config.sampleRate = options.sampleRate; config.nFFT = options.nFFT; config.winLength = options.winLength
        config.fmin = options.fmin; config.fmax = options.fmax
        config.nMels = m; config.hopLength = hop
        config.nGroup = g; config.nFlows = k; config.nLayers = l; config.channels = c
        config.nEarlyEvery = e; config.nEarlySize = s; config.coupling = coupling
        config.alternateHalves = options.alternateHalves ?? (layout == .first)
        try config.validate()

        // The module's own attributes, where the file has modules, must agree.
        var checked: [String] = []
        func check(_ o: PickleObject?, _ key: String, _ expected: PickleValue, _ label: String) throws {
            guard let v = attr(o, key) else { return }
            let same: Bool
            switch (v, expected) {
            case (.int(let a), .int(let b)): same = a == b
            default: same = v.ints != nil && v.ints == expected.ints
            }
            guard same else {
                throw WaveFlowError("the module says \(label) is \(v.ints.map { "\($0)" } ?? v.int.map(String.init) ?? v.kind), "
                                    + "its tensors give \(expected.ints.map { "\($0)" } ?? expected.int.map(String.init) ?? "?")")
            }
            if !checked.contains(key) { checked.append(key) }
        }
        if !found.modules.isEmpty {
            let arena = PickleArena()
            defer { arena.clear() }
            func tuple(_ x: Int) throws -> PickleValue { .tuple(try arena.add(PickleList([.int(x)]))) }
            try check(root, "n_flows", .int(k), "n_flows")
            try check(root, "n_group", .int(g), "n_group")
            if e < k { try check(root, "n_early_every", .int(e), "n_early_every"); try check(root, "n_early_size", .int(s), "n_early_size") }
            try check(root, "n_remaining_channels", .int(rows[k - 1]), "n_remaining_channels")
            let upsample = found.modules["upsample"]
            try check(upsample, "stride", try tuple(hop), "the upsampler's stride")
            try check(upsample, "kernel_size", try tuple(kernel), "the upsampler's kernel size")
            for f in 0..<k {
                try check(found.modules["WN.\(f)"], "n_layers", .int(l), "WN.\(f).n_layers")
                try check(found.modules["WN.\(f)"], "n_channels", .int(c), "WN.\(f).n_channels")
                for i in 0..<l {
                    let layer = found.modules["WN.\(f).in_layers.\(i)"]
                    try check(layer, "dilation", try tuple(1 << i), "WN.\(f).in_layers.\(i).dilation")
                    try check(layer, "padding", try tuple(1 << i), "WN.\(f).in_layers.\(i).padding")
                    try check(layer, "kernel_size", try tuple(3), "WN.\(f).in_layers.\(i).kernel_size")
                }
            }
        }

        // Every tensor of the family's table, in shape; nothing else.
        let table = WaveGlowFamily.tensorShapes(config)
        for (n, expected) in table {
            guard let source = src[n] else { throw WaveFlowError("missing tensor '\(n)'") }
            guard source.shape == expected else {
                throw WaveFlowError("tensor '\(source.origin)' has shape \(source.shape), expected \(expected) "
                                    + "for n_flows \(k), n_group \(g), n_layers \(l), channels \(c), n_mels \(m), hop \(hop)")
            }
        }
        let known = Set(table.map(\.0))
        if let extra = src.keys.sorted().first(where: { !known.contains($0) }) {
            throw WaveFlowError("unexpected tensor '\(printable(src[extra]!.origin))' (not part of a WaveGlow with this config)")
        }
        // Never allocate more than the file's storages could hold.
        let needed = table.reduce(0) { $0 + $1.1.reduce(1, *) }
        let held = archive.storages.values.reduce(0) { $0 &+ $1.count }
        guard needed <= held else { throw WaveFlowError("the model needs \(needed) values, the file's storages hold \(held)") }

        let model = FlowModel<Float>(config: config)
        for (n, _) in table {
            let values = try src[n]!.values()
            if let i = values.firstIndex(where: { !$0.isFinite }) {
                throw WaveFlowError("tensor '\(src[n]!.origin)' holds a value that is not finite (\(values[i]) at \(i))")
            }
            model.params[n] = values
        }

        let source = URL(fileURLWithPath: name).lastPathComponent
        var summary = ["\(name): \(archive.container.rawValue), \(found.description), \(layout.description)"
                       + (folded > 0 ? ", weight norm folded into \(folded) weights" : ", no weight norm")]
        summary.append("inferred: n_flows \(k), n_group \(g), n_early_every \(e), n_early_size \(s), n_layers \(l), channels \(c), "
                       + "n_mels \(m), hop \(hop) (upsample kernel \(kernel)), coupling \(coupling), alternate_halves \(config.alternateHalves)"
                       + (options.alternateHalves != nil ? " (as given)" : ""))
        summary.append("checked: \(table.count) tensor shapes against the waveglow table"
                       + (checked.isEmpty ? "" : "; the module's attributes agree (\(checked.joined(separator: ", ")))"))
        summary.append("mel: sample_rate \(config.sampleRate), n_fft \(config.nFFT), win_length \(config.winLength), "
                       + "fmin \(config.fmin), fmax \(config.fmax)")
        return Result(config: config, model: model, layout: layout, summary: summary, source: source)
    }
}
