import Foundation

/// What a run of ``Training/train(corpus:config:runFolder:steps:options:featureCache:)`` did.
public struct TrainingSummary: Sendable {
    /// The step the run ended at: `steps`, unless a stop was requested.
    public var step: Int
    /// True when the run ended early because ``trainingStopRequested`` was
    /// set (it saved a checkpoint first).
    public var stoppedEarly: Bool
    /// The best validation NLL in nats/sample (`.infinity` if the run never validated).
    public var bestValidationNLL: Double
    /// The run folder (checkpoints, `metrics.jsonl`, `nll.svg`, `validation.txt`).
    public var runFolder: String
    /// `latest.safetensors` in the run folder: loads with ``Vocoder/init(checkpoint:)``.
    public var latestCheckpoint: String
    /// Files trained on.
    public var trainingFiles: Int
    /// Files held out for validation (listed in the run's `validation.txt`).
    public var validationFiles: Int
    /// Files that could not be used, with the reason (unreadable, too short).
    public var skipped: [FileFailure]
}

/// Training from Swift: the library form of `waveflow train` on one
/// process (no MPI, no resumption).
///
/// A thin wrapper over ``TrainingRun`` (a new run),
/// ``Corpus/load(folder:config:cache:minSamples:maxValidation:part:of:loadValidation:front:)``
/// and ``Trainer``, doing what the command does: a new model of the preset
/// or JSON config, initialised from `options.seed`; the corpus split into
/// training and validation files; `validation.txt`; the options and corpus
/// recorded in every checkpoint (so `waveflow train CORPUS --run NAME
/// --checkpoints PARENT --resume` can continue a run whose `runFolder` is
/// `PARENT/NAME`).
///
/// The matrix products run as `context` says (fp32 by default; the tool's
/// `train` defaults to ``Precision/automatic``); kernels use `Threads.count` cores.
/// No signal handlers are installed: set ``trainingStopRequested`` to a
/// non-zero value (from a signal handler, say) to make the run save and stop.
/// Progress lines go to standard error (``ProgressLine/enabled``).
public enum Training {
    /// Trains a new model until `steps` and returns what happened.
    /// - Parameters:
    ///   - corpus: a folder of audio files (searched recursively; at least 2).
    ///   - config: a preset name (`ModelConfig.presets`: "tiny", "lpc-h64-c32", …) or a JSON config file.
    ///   - runFolder: where checkpoints and logs go; must not hold a run already.
    ///   - steps: the step to train until (replaces `options.steps`).
    ///   - options: batch, segment, learning rate, warm-up, seed, checkpoint
    ///     and validation intervals (defaults as `waveflow train`'s).
    ///   - featureCache: a folder caching the corpus's mels between runs
    ///     (the tool uses `Checkpoints/feature-cache`); nil computes them afresh.
    ///   - context: precision and threads of the training passes.
    /// - Throws: `WaveFlowError` for a bad option, an unknown config, an
    ///   existing run in `runFolder`, or a corpus without usable training files.
    public static func train(corpus: String, config: String = "lpc-h64-c32", runFolder: String, steps: Int,
                             options: TrainOptions = TrainOptions(), featureCache: String? = nil,
                             context: ComputeContext = .fp32) throws -> TrainingSummary {
        var options = options
        options.steps = steps
        for (name, v) in [("steps", options.steps), ("batch", options.batch), ("segment", options.segment),
                          ("checkpointEvery", options.checkpointEvery), ("validateEvery", options.validateEvery)] where v < 1 {
            throw WaveFlowError("\(name) must be positive (got \(v))")
        }
        guard options.lr > 0 else { throw WaveFlowError("lr must be positive (got \(options.lr))") }
        let folder = RunFolder(runFolder)
        if folder.hasLatest {
            throw WaveFlowError("run already exists; choose another run folder (or continue it with waveflow train --resume)", path: runFolder)
        }
        let run = try TrainingRun(folder: runFolder, resume: false, config: config, overrides: TrainOverrides(), defaults: options)
        let cache = try featureCache.map { try FeatureCache(folder: $0) }
        let data = try Corpus.load(folder: corpus, config: run.model.config.mel, cache: cache, minSamples: options.segment,
                                   front: run.model.front)
        try run.recordValidationFiles(data.validation.map(\.path))
        let trainer = try run.makeTrainer(corpus: corpus, communicator: SingleProcess(), context: context)
        try trainer.run(corpus: data)
        return TrainingSummary(step: trainer.step, stoppedEarly: trainer.step < options.steps,
                               bestValidationNLL: trainer.bestValidation, runFolder: runFolder, latestCheckpoint: folder.latest,
                               trainingFiles: data.train.count, validationFiles: data.validation.count, skipped: data.skipped)
    }
}
