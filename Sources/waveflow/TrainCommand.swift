import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow train CORPUS`: maximum-likelihood training with checkpoints.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on every audio file below a folder.",
        discussion: """
        Checkpoints go to CHECKPOINTS/RUN/ (step-*.safetensors, best.safetensors, \
        latest.safetensors), with metrics.jsonl and nll.svg. Ctrl-C saves a checkpoint \
        and stops; --resume continues the run exactly where it stopped.

        Started by Open MPI's mpirun (mpirun -np N waveflow train ...), the N processes \
        train one model data-parallel: each draws its part of every batch from its own \
        share of the corpus files, and gradients are summed with MPI allreduce. Rank 0 \
        validates, logs and writes checkpoints. Each rank uses cores/ranks-per-node \
        threads unless --threads is given. --resume works with any number of ranks.
        """)

    @Argument(help: "Folder of audio files (searched recursively).") var corpus: String
    @Option(help: "Preset (\(ModelConfig.presets.keys.sorted().joined(separator: ", "))) or a JSON config file (default: \(TrainingRun.defaultConfig); with --resume, the run's own).")
    var config: String?
    @Option(help: "Train until this step.") var steps: Int?
    @Option(help: "Segments per batch (default 8).") var batch: Int?
    @Option(help: "Segment length in samples (default 16384).") var segment: Int?
    @Option(help: "Peak learning rate (default 1e-3).") var lr: Double?
    @Option(help: "Warm-up steps (default 100).") var warmup: Int?
    @Option(help: "Random seed (default 1).") var seed: UInt64?
    @Option(help: "Steps between checkpoints (default 500).") var checkpointEvery: Int?
    @Option(help: "Steps between validations (default 250).") var validateEvery: Int?
    @Option(name: .customLong("run"), help: "Run name (folder under --checkpoints).") var runName = "run"
    @Option(help: "Where runs are stored.") var checkpoints = "Checkpoints"
    @Flag(help: "Continue the run from its latest checkpoint.") var resume = false
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        for (name, v) in [("--steps", steps), ("--batch", batch), ("--segment", segment), ("--checkpoint-every", checkpointEvery),
                          ("--validate-every", validateEvery)] {
            if let v, v < 1 { throw ValidationError("\(name) must be positive") }
        }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        guard !runName.isEmpty, !runName.contains("/"), runName != ".", runName != ".." else {
            throw ValidationError("--run must be a plain name (a folder directly under --checkpoints), not '\(runName)'")
        }
    }

    func run() throws {
        let job = try runReportingErrors { try joinJob() }
        let context = compute.apply(ranksOnThisMachine: job.size > 1 ? MPICommunicator.localRanks : 1, defaultPrecision: .auto)
        do {
            try train(job, context)
        } catch {
            // One rank failing must not leave the others waiting in an allreduce.
            if job.size > 1 {
                if let e = error as? WaveFlowError { logLine("waveflow: rank \(job.rank): error: \(e.description)") }
                job.abort(1)
            }
            throw error
        }
        (job as? MPICommunicator)?.finalize()
    }

    func train(_ job: Communicator, _ context: ComputeContext) throws {
        let root = job.isRoot
        ProgressLine.enabled = root
        func say(_ text: String) { if root { logLine(text) } }
        try runReportingErrors {
            let runFolder = (checkpoints as NSString).appendingPathComponent(runName)
            let overrides = TrainOverrides(steps: steps, batch: batch, segment: segment, lr: lr, warmup: warmup, seed: seed,
                                           checkpointEvery: checkpointEvery, validateEvery: validateEvery)
            let training = try TrainingRun(folder: runFolder, resume: resume, config: config, overrides: overrides)
            if let latest = training.resumedFrom { say("resuming \(latest)") }
            let options = training.options, model = training.model
            guard options.batch >= job.size else {
                throw WaveFlowError("--batch \(options.batch) is smaller than the job's \(job.size) ranks: each rank needs at least one segment")
            }
            let cfg = model.config
            if job.size > 1 {
                say("data-parallel job: \(job.size) ranks (Open MPI), \(Threads.count) thread(s) each; rank 0 logs and checkpoints")
            }
            say("model: \(cfg.channels) channels, \(cfg.nFlows) flows x \(cfg.nLayers) layers, h = \(cfg.nGroup)"
                    + (cfg.lpcOrder > 0 ? ", LPC front of order \(cfg.lpcOrder)" : "") + "; "
                    + "\(cfg.parameterCount) parameters, \(String(format: "%.2f", cfg.macsPerSample / 1e6)) M multiply-adds per sample; "
                    + "\(context.precision.description) products"
                    + (context.precision == .fp32 && WeightGradients.runOnOneDNN(context)
                        ? " (weight gradients: \(WeightGradients.description(context)))" : ""))
            let cache = try FeatureCache(folder: (checkpoints as NSString).appendingPathComponent("feature-cache"))
            let data = try Corpus.load(folder: corpus, config: cfg.mel, cache: cache, minSamples: options.segment,
                                       part: job.rank, of: job.size, loadValidation: root, front: model.front)
            for f in data.skipped { logLine(job.size > 1 ? "rank \(job.rank): skipped \(f.reason)" : "skipped \(f.reason)") }
            let minutes = Double(data.train.reduce(0) { $0 + $1.audio.count }) / Double(cfg.sampleRate) / 60
            say("corpus: \(data.train.count) training files\(job.size > 1 ? " in rank 0's part" : "") (\(String(format: "%.1f", minutes)) min), "
                    + "\(data.validation.count) validation files, \(data.skipped.count) skipped")
            if root { try training.recordValidationFiles(data.validation.map(\.path)) }
            let trainer = try training.makeTrainer(corpus: corpus, communicator: job, context: context)
            installStopHandlers()
            try trainer.run(corpus: data)
            let best = trainer.bestValidation.isFinite
                ? "best validation NLL \(String(format: "%.4f", trainer.bestValidation)) nats/sample" : "not validated yet"
            if trainingStopRequested != 0 {
                // Interrupted (the checkpoint is saved): the shell's convention, 128 + signal.
                throw ExitCode(128 + trainingStopRequested)
            }
            say("done at step \(trainer.step); \(best); checkpoints in \(runFolder)")
        }
    }
}

/// Ctrl-C and SIGTERM ask the training loop to save and stop; the signal's
/// number is kept for the exit status.
func installStopHandlers() {
    signal(SIGINT) { sig in trainingStopRequested = sig }
    signal(SIGTERM) { sig in trainingStopRequested = sig }
}

/// `waveflow score CHECKPOINT AUDIO...`: NLL per file and the mean.
struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Negative log-likelihood (nats/sample) of audio files under a model.")

    @Argument(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Argument(help: "Audio files.") var audio: [String]
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        let context = compute.apply()
        try runReportingErrors {
            let ck = try Checkpoint.load(checkpoint)
            let mel = try MelSpectrogram(config: ck.config.mel)
            var total = 0.0, failed = 0
            for path in audio {
                do {
                    let nll = try Scorer.score(file: path, model: ck.model, mel: mel, context: context)
                    total += nll
                    print("\(path)\t\(String(format: "%.5f", nll))")
                } catch {
                    failed += 1
                    logLine("waveflow: error: \(error.describe(at: path))")
                }
            }
            let ok = audio.count - failed
            if ok > 0 { print("mean\t\(String(format: "%.5f", total / Double(ok)))\t(\(ok) files, nats/sample)") }
            if failed > 0 { throw ExitCode.failure }
        }
    }
}
