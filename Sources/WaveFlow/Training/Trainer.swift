import Foundation

/// Settings of one training run.
public struct TrainOptions: Codable, Sendable {
    public var steps = 10000
    public var batch = 8
    /// Segment length in samples (rounded down to a multiple of hop).
    public var segment = 16384
    /// Peak learning rate (after warm-up).
    public var lr = 1e-3
    /// Linear warm-up steps.
    public var warmup = 100
    /// Learning rate at the last step, as a fraction of `lr` (cosine decay).
    public var finalLRFraction = 0.1
    public var seed: UInt64 = 1
    public var checkpointEvery = 500
    public var validateEvery = 250
    /// Step checkpoints kept besides `best` (the newest ones).
    public var keep = 3
    /// Global gradient-norm clipping threshold.
    public var clip: Float = 10
    /// Seconds of each validation file scored (from its start).
    public var validationSeconds = 2.0
    public init() {}
}

/// Set by SIGINT / SIGTERM; the training loop saves and stops when it sees it.
nonisolated(unsafe) public var trainingStopRequested: Int32 = 0

/// The maximum-likelihood training loop: draws batches, computes gradients
/// (on replicas of the model, summed across the ranks of a job), lets the
/// ``Optimizer`` update the weights, validates, and writes checkpoints and
/// metrics to its ``RunFolder``.
public final class Trainer {
    public let model: FlowModel<Float>
    public var options: TrainOptions {
        didSet { optimizer.options = options }
    }
    /// The run folder's path.
    public var runFolder: String { folder.path }
    let folder: RunFolder
    /// Trainables, Adam and the learning-rate schedule.
    var optimizer: Optimizer
    /// Step, batch generator and best validation NLL (saved in checkpoints).
    var counters: TrainingCounters
    /// Extra keys recorded in checkpoints' config (corpus, …).
    public var recordedInfo: [String: Any] = [:]
    /// The job this trainer is one rank of. Every rank computes the gradient
    /// of its own part of each batch; the parts are summed with an allreduce
    /// so that every rank applies the same update. Rank 0 alone validates,
    /// logs and writes checkpoints.
    public let communicator: Communicator
    /// Parts each batch is drawn in (``Corpus/samplePart(_:of:batch:segment:hop:seed:)``):
    /// the number of ranks. A single process may draw as many parts as a
    /// job of that many ranks, and then trains on exactly its batches.
    public var dataParts: Int

    /// Steps taken so far.
    public var step: Int { counters.step }
    /// The lowest validation NLL so far (infinity before any validation).
    public var bestValidation: Double { counters.bestValidation }

    /// Precision and threads of the forward and backward passes.
    public let context: ComputeContext

    public init(model: FlowModel<Float>, options: TrainOptions, runFolder: String,
                communicator: Communicator = SingleProcess(), context: ComputeContext) {
        self.model = model
        self.context = context
        self.options = options
        folder = RunFolder(runFolder)
        self.communicator = communicator
        dataParts = communicator.size
        counters = TrainingCounters(rng: SplitMix64(seed: options.seed ^ 0x5EED))
        optimizer = Optimizer(parameters: model.params, family: model.family, options: options)
    }

    /// Model weights from the trainables.
    func fold() { optimizer.fold(into: model.params) }

    // MARK: - One step

    public struct StepResult {
        public var loss: Double
        public var gradNorm: Float
        public var skipped: Bool
        /// Some rank was asked to stop (Ctrl-C, SIGTERM): every rank stops after this step.
        public var stop = false
        /// Seconds spent in the gradient allreduce (0 for a single process).
        public var allreduceSeconds = 0.0
    }

    /// Forward, backward, (allreduce across ranks,) clip, Adam. A non-finite
    /// loss or gradient skips the update. `batch` is this rank's part of the
    /// step's batch (the whole batch for a single process).
    public func trainStep(_ batch: Batch) throws -> StepResult {
        var loss = forwardBackward(batch)
        var stop = trainingStopRequested != 0
        var reduceTime = 0.0
        if communicator.size > 1 {
            let t0 = Date()
            (loss, stop) = try reduceAcrossRanks(loss: loss, items: batch.batch, stop: stop)
            reduceTime = Date().timeIntervalSince(t0)
        }
        optimizer.unfoldGradients(from: model.params)
        let norm = optimizer.clipGradients()
        counters.step += 1
        guard loss.isFinite, norm.isFinite else {
            return StepResult(loss: loss, gradNorm: norm, skipped: true, stop: stop, allreduceSeconds: reduceTime)
        }
        optimizer.update(step: step)
        fold()
        return StepResult(loss: loss, gradNorm: norm, skipped: false, stop: stop, allreduceSeconds: reduceTime)
    }

    /// Turns this rank's gradient and loss (means over its `items` segments)
    /// into those of the whole batch: each is weighted by items / batch and
    /// summed over ranks in one allreduce of the flat gradient arena, which
    /// also carries the loss and every rank's stop request.
    func reduceAcrossRanks(loss: Double, items: Int, stop: Bool) throws -> (loss: Double, stop: Bool) {
        let n = model.params.count
        let weight = Float(items) / Float(options.batch)
        var buffer = model.params.grads
        for j in 0..<n { buffer[j] *= weight }
        buffer.append(Float(loss) * weight)
        buffer.append(stop ? 1 : 0)
        try buffer.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: $0.count) }
        let total = Double(buffer[n]), anyStop = buffer[n + 1] > 0
        buffer.removeLast(2)
        model.params.grads = buffer
        return (total, anyStop)
    }

    /// Makes every rank hold rank 0's weights and optimizer state (at the
    /// start and after a reload), so the ranks cannot drift apart.
    public func synchroniseRanks() throws {
        guard communicator.size > 1 else { return }
        try communicator.broadcast(&optimizer.trainables.values)
        try communicator.broadcast(&optimizer.adam.m)
        try communicator.broadcast(&optimizer.adam.v)
        var scalars: [UInt64] = [UInt64(step), UInt64(optimizer.adam.step), counters.rng.state,
                                 optimizer.lrScale.bitPattern, bestValidation.bitPattern]
        try communicator.broadcast(&scalars)
        counters.step = Int(scalars[0]); optimizer.adam.step = Int(scalars[1]); counters.rng.state = scalars[2]
        optimizer.lrScale = Double(bitPattern: scalars[3]); counters.bestValidation = Double(bitPattern: scalars[4])
        fold()
    }

    // MARK: - The model's passes

    /// Model copies that compute shards of a batch concurrently (data
    /// parallelism across cores, one BLAS thread each: measured 2x faster on
    /// two cores than one process-wide BLAS pool, whose threads mostly wait
    /// on the serial elementwise work between matrix products). They read the
    /// model's weights in place (`ParameterSet.shareValues(of:)`) and keep
    /// their own gradients and caches.
    private var replicas: [FlowModel<Float>] = []

    /// The model itself, then n - 1 replicas (made on first use): n models
    /// that hold the current weights.
    private func shardModels(_ n: Int) -> [FlowModel<Float>] {
        while replicas.count < n - 1 {
            let r = FlowModel<Float>(config: model.config)
            r.params.shareValues(of: model.params)
            replicas.append(r)
        }
        return [model] + replicas.prefix(n - 1)
    }

    /// Loss (batch mean of nats/sample) and its gradient in `model.params.grads`.
    func forwardBackward(_ batch: Batch) -> Double {
        let shards = max(1, min(context.threads, batch.batch))
        if shards == 1 {
            model.params.zeroGrad()
            let state = model.forward(audio: batch.audio, mel: batch.mel, batch: batch.batch, frames: batch.frames, context: context)
            model.backward(state, context: context)
            return (state.nll.reduce(0) { $0 + Double($1) } + batch.nllOffset.reduce(0, +)) / Double(batch.batch)
        }
        let reps = shardModels(shards)
        var losses = [Double](repeating: 0, count: shards)
        let parts = (0..<shards).map { batch.shard($0, of: shards) }
        losses.withUnsafeMutableBufferPointer { lp in
            let out = lp.baseAddress!
            Threads.parallelFor(shards) { i in
                let part = parts[i], m = reps[i]
                m.params.zeroGrad()
                let state = m.forward(audio: part.audio, mel: part.mel, batch: part.batch, frames: part.frames, context: context)
                m.backward(state, context: context)
                out[i] = state.nll.reduce(0) { $0 + Double($1) } + part.nllOffset.reduce(0, +)
            }
        }
        // Each shard's model holds the gradient of its shard's mean; the batch
        // mean weights them by shard size: per value w_0 g_0 + w_1 g_1 + ...
        // into the model's own (shard 0's) gradient, in chunks over the cores.
        let grads = UnsafeSendable(model.params.gradBuffer.baseAddress!)
        let weights = parts.map { Float($0.batch) / Float(batch.batch) }
        let others = reps.dropFirst().map { UnsafeSendable($0.params.gradBuffer.baseAddress!) }
        Threads.parallelChunks(model.params.count) { range in
            for j in range { grads.p[j] *= weights[0] }
            for (weight, g) in zip(weights.dropFirst(), others) { for j in range { grads.p[j] += weight * g.p[j] } }
        }
        return losses.reduce(0, +) / Double(batch.batch)
    }

    /// Mean NLL (nats/sample) over the first `validationSeconds` of each utterance.
    public func validate(_ utterances: [Utterance]) -> Double {
        let h = model.config.nGroup, hop = model.config.hopLength, m = model.config.nMels
        let maxSamples = Int(options.validationSeconds * Double(model.config.sampleRate))
        let workers = max(1, min(context.threads, utterances.count))
        let reps = shardModels(workers)
        var nll = [Double](repeating: 0, count: utterances.count)
        nll.withUnsafeMutableBufferPointer { out in
            let o = out.baseAddress!
            // Files in parallel, one model copy per worker (worker w takes w, w+workers, ...).
            Threads.parallelFor(workers) { wk in
                var i = wk
                while i < utterances.count {
                    let u = utterances[i]
                    let t = min(u.audio.count, maxSamples) / h * h
                    let frames = min(u.frames, (t + hop - 1) / hop)
                    var mel = [Float](repeating: 0, count: m * frames)
                    for mi in 0..<m { for f in 0..<frames { mel[mi * frames + f] = u.mel.values[mi * u.frames + f] } }
                    let input = Scorer.FlowInput(values: u.flowSamples, logMel: mel, frames: frames, envelope: u.envelope)
                    o[i] = input.nll(first: t, model: reps[wk], context: context)
                    i += workers
                }
            }
        }
        return nll.reduce(0, +) / Double(max(1, utterances.count))
    }

    // MARK: - Checkpoints

    /// Restores the training state saved by `saveCheckpoint` (the model's
    /// weights were loaded with the checkpoint). An inference-only
    /// checkpoint starts a fresh optimizer from its weights.
    public func restore(_ t: [String: Tensor]) throws {
        if try optimizer.restore(t, parameters: model.params, counters: &counters) { fold() }
    }

    /// Writes `step-NNNNNNN.safetensors`, points `latest.safetensors` at it,
    /// and removes step files beyond the newest `keep`.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        try folder.saveStep(step, keep: options.keep) { try writeCheckpoint(to: $0) }
    }

    /// Writes `best.safetensors` (inference tensors plus state).
    public func saveBest() throws {
        try folder.saveBest { try writeCheckpoint(to: $0, extra: ["validation_nll": bestValidation]) }
    }

    /// The model's tensors and the training state, with `recordedInfo`, the
    /// step and `extra` in the config JSON.
    private func writeCheckpoint(to path: String, extra: [String: Any] = [:]) throws {
        var info = recordedInfo
        info["step"] = step
        info.merge(extra) { _, new in new }
        try Checkpoint.save(model: model, train: optimizer.stateTensors(counters), extra: info, to: path)
    }

    /// Reloads the newest checkpoint of this run (after repeated non-finite
    /// steps), keeping the current learning-rate scale.
    func reloadLatest() throws {
        let ck = try Checkpoint.load(folder.latest)
        model.params.copyValues(from: ck.model.params)
        let scale = optimizer.lrScale
        try restore(ck.trainTensors)
        optimizer.lrScale = scale
    }

    // MARK: - The loop

    /// Trains until `options.steps` (or a stop request, or step `pauseAt`),
    /// validating and checkpointing as configured; logs every step to
    /// `metrics.jsonl`. Stopping early saves a checkpoint to resume from.
    ///
    /// In a job of several ranks every rank calls this with its own part of
    /// the corpus (``Corpus/load(folder:config:cache:minSamples:maxValidation:part:of:loadValidation:)``);
    /// only rank 0 needs the validation files and writes anything.
    public func run(corpus: Corpus, pauseAt: Int? = nil) throws {
        let root = communicator.isRoot
        let metrics = try root ? folder.openMetrics(resumingAt: step) : nil
        defer { metrics?.close() }
        let hop = model.config.hopLength
        let segment = max(hop, options.segment / hop * hop)
        try synchroniseRanks()
        let startStep = step
        let progress = root ? ProgressLine("train", total: options.steps - startStep, unit: "steps", logInterval: 30) : nil
        var badInARow = 0
        let started = Date()
        fold()
        if step == 0 && root && !corpus.validation.isEmpty {
            let v = validate(corpus.validation)
            metrics?.append(["step": 0, "val_nll": v, "time": 0.0])
            say("validation NLL at step 0: \(String(format: "%.4f", v)) nats/sample")
        }
        var stopAll = false
        while step < min(options.steps, pauseAt ?? .max) && !stopAll {
            let t0 = Date()
            let seed = counters.rng.next()
            let batch = communicator.size > 1
                ? corpus.samplePart(communicator.rank, of: communicator.size, batch: options.batch, segment: segment, hop: hop, seed: seed)
                : corpus.sampleBatch(parts: dataParts, batch: options.batch, segment: segment, hop: hop, seed: seed)
            let r = try trainStep(batch)
            stopAll = r.stop
            let dt = Date().timeIntervalSince(t0)
            let rate = Double(options.batch * segment) / dt
            var entry: [String: Any] = ["step": step, "loss": r.loss.isFinite ? r.loss : "nan", "grad_norm": r.gradNorm.isFinite ? Double(r.gradNorm) : "nan",
                                        "lr": optimizer.learningRate(at: step), "samples_per_s": rate,
                                        "time": Date().timeIntervalSince(started)]
            if communicator.size > 1 { entry["allreduce_s"] = r.allreduceSeconds; entry["ranks"] = communicator.size }
            if r.skipped {
                entry["skipped"] = true
                badInARow += 1
                try recoverFromBadStep(&badInARow)
            } else {
                badInARow = 0
            }
            metrics?.append(entry)
            progress?.advance(note: String(format: "step %d, loss %.4f nats/sample, %.0f samples/s", step, r.loss, rate))
            if root && (step % options.validateEvery == 0 || step == options.steps) {
                let v = validate(corpus.validation)
                metrics?.append(["step": step, "val_nll": v, "time": Date().timeIntervalSince(started)])
                say("step \(step): validation NLL \(String(format: "%.4f", v)) nats/sample")
                if v < bestValidation {
                    counters.bestValidation = v
                    try saveBest()
                }
            }
            if root && (step % options.checkpointEvery == 0 || step == options.steps) {
                try saveCheckpoint()
                folder.writePlot()
            }
        }
        if root && (stopAll || step < options.steps) {
            let path = try saveCheckpoint()
            folder.writePlot()
            say("waveflow: stopped at step \(step); saved \(path) (continue with --resume)")
        }
    }

    /// After a skipped step (`badInARow` of them in a row): at the third,
    /// halves the learning rate and goes back to the last checkpoint.
    private func recoverFromBadStep(_ badInARow: inout Int) throws {
        say("waveflow: step \(step): non-finite loss or gradient, update skipped")
        guard badInARow >= 3 else { return }
        optimizer.halveLearningRate()
        say("waveflow: \(badInARow) bad steps in a row: restoring the last checkpoint, learning rate x\(optimizer.lrScale)")
        if folder.hasLatest {
            if communicator.isRoot { try reloadLatest() }
            try synchroniseRanks()
        }
        badInARow = 0
    }

    /// Logs `text` on rank 0.
    private func say(_ text: String) { if communicator.isRoot { logLine(text) } }
}
