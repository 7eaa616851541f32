import Foundation

/// A model checkpoint (MODEL-SPEC section 10): the inference tensors, the
/// config, and optionally the training state (tensors named `train.*`).
public struct Checkpoint {
    public var config: ModelConfig
    /// Inference tensors by spec name (effective weights).
    public var model: FlowModel<Float>
    /// `train.*` tensors (empty for an inference-only file).
    public var trainTensors: [String: Tensor]
    /// The config JSON object as stored, with any extra keys (step, corpus, …).
    public var configJSON: [String: Any]

    public static let format = "waveflow"
    public static let formatVersion = "1"

    /// Loads and validates `path` completely before returning anything. A
    /// PyTorch WaveGlow file (`.pt`, recognised by its content: a zip archive
    /// or the legacy torch.save magic) is converted in memory with
    /// `WaveGlowImport` and its default (Tacotron 2) mel parameters.
    public static func load(_ path: String) throws -> Checkpoint {
        if PyTorchArchive.looksLikePyTorch(path: path) { return try WaveGlowImport.load(path: path).checkpoint }
        return try load(contents: try SafeTensors.read(path), path: path)
    }

    /// Loads a checkpoint from the bytes of a safetensors file (`name`
    /// names it in errors), with every check of `load(_:)`; PyTorch bytes
    /// are converted as in `load(_:)`.
    public static func load(data: Data, name: String) throws -> Checkpoint {
        if PyTorchArchive.looksLikePyTorch(data.prefix(16)) { return try WaveGlowImport.load(data: data, name: name).checkpoint }
        let contents: (metadata: [String: String], tensors: [String: Tensor])
        do { contents = try SafeTensors.decode(data) } catch let e as WaveFlowError { throw e.at(name) }
        return try load(contents: contents, path: name)
    }

    /// Validates and builds a checkpoint from a decoded safetensors file
    /// (`path` names it in errors).
    static func load(contents: (metadata: [String: String], tensors: [String: Tensor]), path: String) throws -> Checkpoint {
        let (metadata, tensors) = contents
        func fail(_ m: String) -> WaveFlowError { WaveFlowError(m, path: path) }
        guard metadata["format"] == format else {
            throw fail("not a waveflow checkpoint (metadata format is \(metadata["format"].map { "'\($0)'" } ?? "missing"))")
        }
        guard metadata["format_version"] == formatVersion else {
            throw fail("unsupported format_version \(metadata["format_version"] ?? "missing") (this program reads \(formatVersion))")
        }
        guard let configText = metadata["config"], let configData = configText.data(using: .utf8),
              let configObject = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
            throw fail("metadata 'config' is missing or not a JSON object")
        }
        let config: ModelConfig
        do { config = try JSONDecoder().decode(ModelConfig.self, from: configData) } catch {
            throw fail("metadata 'config' has a value of the wrong type")
        }
        // The family first (an unknown one, or a key of a family this build
        // lacks, is named as such), then every value, before any allocation.
        do {
            try config.validate()
            try ModelConfig.checkKeys(configObject)
        } catch let e as WaveFlowError { throw e.at(path) }
        // The tensor table is checked against the config before the model is
        // allocated (a config of a million flows is no reason to allocate
        // gigabytes).
        var train: [String: Tensor] = [:]
        let expected = Dictionary(FlowModel<Float>.tensorShapes(config), uniquingKeysWith: { a, _ in a })
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            if name.hasPrefix("train.") { train[name] = t; continue }
            guard let shape = expected[name] else { throw fail("unexpected tensor '\(name)'") }
            guard shape == t.shape else { throw fail("tensor '\(name)' has shape \(t.shape), expected \(shape)") }
        }
        for (name, _) in FlowModel<Float>.tensorShapes(config) where tensors[name] == nil {
            throw fail("missing tensor '\(name)'")
        }
        let model = FlowModel<Float>(config: config)
        for v in model.params.views {
            let values = tensors[v.name]!.values
            if let i = values.firstIndex(where: { !$0.isFinite }) {
                throw fail("tensor '\(v.name)' holds a value that is not finite (\(values[i]) at \(i))")
            }
            model.params[v.name] = values
        }
        return Checkpoint(config: config, model: model, trainTensors: train, configJSON: configObject)
    }

    /// Writes the model's inference tensors plus `train` tensors atomically.
    /// - Parameter extra: keys recorded in the config JSON beside the spec's.
    public static func save(model: FlowModel<Float>, train: [(String, Tensor)] = [], extra: [String: Any] = [:],
                            to path: String) throws {
        var configObject = (try JSONSerialization.jsonObject(with: Data(model.config.json.utf8))) as! [String: Any]
        for (k, v) in extra { configObject[k] = v }
        let configText = String(decoding: try JSONSerialization.data(withJSONObject: configObject, options: [.sortedKeys]), as: UTF8.self)
        var tensors: [(String, Tensor)] = model.params.views.map {
            ($0.name, Tensor(shape: $0.shape, values: Array(model.params.valueBuffer[$0.range])))
        }
        precondition(train.allSatisfy { $0.0.hasPrefix("train.") })
        tensors += train
        try SafeTensors.write(tensors, metadata: ["format": format, "format_version": formatVersion, "config": configText], to: path)
    }

    /// The `--checkpoint` default: `Checkpoints/shipped/model.safetensors`,
    /// else the newest `latest.safetensors` under `Checkpoints/` — looked
    /// for in the current folder, then beside the tool (a build inside the
    /// repository, `.build/release/waveflow`, finds the repository's).
    public static func defaultPath() -> String? {
        var roots = ["Checkpoints"]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            roots.append(dir.appendingPathComponent("Checkpoints").path)
            dir = dir.deletingLastPathComponent()
        }
        for root in roots {
            let shipped = root + "/shipped/model.safetensors"
            if FileManager.default.fileExists(atPath: shipped) { return shipped }
            let candidates = listFiles(in: root) { $0.hasSuffix("/latest.safetensors") }
            if let newest = candidates.max(by: { modificationDate($0) < modificationDate($1) }) { return newest }
        }
        return nil
    }
}

func modificationDate(_ path: String) -> Date {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date) ?? .distantPast
}
