import Foundation

/// Settings given on the command line that replace those of `TrainOptions`;
/// `nil` keeps the default (a new run) or the run's saved value (a resumed one).
public struct TrainOverrides: Sendable {
    public var steps: Int?
    public var batch: Int?
    public var segment: Int?
    public var lr: Double?
    public var warmup: Int?
    /// The seed of a new run (its initial weights and its batches); a
    /// resumed run keeps its own.
    public var seed: UInt64?
    public var checkpointEvery: Int?
    public var validateEvery: Int?

    public init(steps: Int? = nil, batch: Int? = nil, segment: Int? = nil, lr: Double? = nil, warmup: Int? = nil,
                seed: UInt64? = nil, checkpointEvery: Int? = nil, validateEvery: Int? = nil) {
        self.steps = steps; self.batch = batch; self.segment = segment; self.lr = lr; self.warmup = warmup
        self.seed = seed; self.checkpointEvery = checkpointEvery; self.validateEvery = validateEvery
    }

    /// `options` with each given setting in place of its own (the seed only
    /// when not `resuming`).
    func applied(to options: TrainOptions, resuming: Bool) -> TrainOptions {
        var o = options
        if let steps { o.steps = steps }
        if let batch { o.batch = batch }
        if let segment { o.segment = segment }
        if let lr { o.lr = lr }
        if let warmup { o.warmup = warmup }
        if let seed, !resuming { o.seed = seed }
        if let checkpointEvery { o.checkpointEvery = checkpointEvery }
        if let validateEvery { o.validateEvery = validateEvery }
        return o
    }
}

/// A training run about to start or continue in its folder: the model, the
/// options in force and the training state to restore.
public struct TrainingRun {
    /// The preset of a new run started without a config.
    public static let defaultConfig = "lpc-h64-c32"

    /// The run folder.
    public let folder: String
    public let model: FlowModel<Float>
    /// The options in force: the defaults or the resumed run's saved ones,
    /// with the overrides applied.
    public let options: TrainOptions
    /// The resumed checkpoint's `train.*` tensors (empty for a new run).
    public let trainState: [String: Tensor]
    /// The checkpoint resumed from; nil for a new run.
    public let resumedFrom: String?

    /// Opens the run in `folder`. With `resume`: the model, training state
    /// and options of its `latest.safetensors` (`config`, when given, must
    /// name the same model). Without: a new model of `config` (default
    /// ``defaultConfig``) initialised with the seed, in a folder that holds
    /// no run yet, with the options `defaults`. `overrides` are applied to
    /// the options either way.
    /// - Throws: `WaveFlowError` for a run that is missing or unreadable
    ///   (naming the older step checkpoints), an inference-only checkpoint,
    ///   a `config` other than the run's, or a new run over an existing one.
    public init(folder: String, resume: Bool, config: String?, overrides: TrainOverrides,
                defaults: TrainOptions = TrainOptions()) throws {
        let run = RunFolder(folder)
        var options = defaults
        self.folder = folder
        if resume {
            let ck = try Self.loadLatest(run, config: config)
            model = ck.model
            trainState = ck.trainTensors
            if let saved = ck.configJSON["training"] as? [String: Any],
               let data = try? JSONSerialization.data(withJSONObject: saved),
               let o = try? JSONDecoder().decode(TrainOptions.self, from: data) {
                options = o
            }
            resumedFrom = run.latest
        } else {
            if run.hasLatest {
                throw WaveFlowError("run already exists; use --resume to continue it or --run to name a new one", path: folder)
            }
            let cfg = try ModelConfig.named(config ?? Self.defaultConfig)
            model = FlowModel<Float>(config: cfg)
            model.initialise(seed: overrides.seed ?? options.seed)
            trainState = [:]
            resumedFrom = nil
        }
        self.options = overrides.applied(to: options, resuming: resume)
    }

    /// The run's latest checkpoint, which must hold training state and, when
    /// `config` is given, the model it names.
    private static func loadLatest(_ run: RunFolder, config: String?) throws -> Checkpoint {
        let latest = run.latest
        guard run.hasLatest else {
            throw WaveFlowError("no run to resume here (no latest.safetensors); start it without --resume", path: run.path)
        }
        let ck: Checkpoint
        do { ck = try Checkpoint.load(latest) } catch {
            let older = run.stepFiles()
            let hint = older.isEmpty ? "" : " (older checkpoints: \(older.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")); "
                + "point latest.safetensors at one of them to resume from it)"
            throw WaveFlowError(error.describe(at: latest) + hint)
        }
        guard ck.trainTensors["train.adam.m"] != nil else {
            throw WaveFlowError("has no training state (an inference-only file): cannot resume from it", path: latest)
        }
        if let config {
            let asked = try ModelConfig.named(config)
            guard asked == ck.config else {
                throw WaveFlowError("--config \(config) differs from the run's model (\(ck.config.json)); "
                                    + "resume without --config, or start a new --run")
            }
        }
        return ck
    }

    /// Writes the run's `validation.txt`: the validation files' paths, one a line.
    public func recordValidationFiles(_ paths: [String]) throws {
        try RunFolder(folder).writeValidationList(paths)
    }

    /// The trainer of this rank of the job: the training state restored, and
    /// the options and `corpus` recorded in every checkpoint it writes.
    public func makeTrainer(corpus: String, communicator: Communicator, context: ComputeContext) throws -> Trainer {
        let trainer = Trainer(model: model, options: options, runFolder: folder, communicator: communicator, context: context)
        try trainer.restore(trainState)
        let optionsJSON = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(options))) ?? [:]
        trainer.recordedInfo = ["training": optionsJSON, "corpus": corpus]
        return trainer
    }
}
