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

/// Maximum-likelihood training: weight-normalised parameters, Adam, clipping,
/// checkpoints, validation, resumption.
public final class Trainer {
    public let model: WaveFlowModel<Float>
    public var options: TrainOptions
    public let runFolder: String
    /// What Adam updates: weight-normalised (v, g) pairs and plain tensors.
    public private(set) var trainables = ParameterSet<Float>()
    public private(set) var adam: Adam
    public private(set) var step = 0
    public private(set) var rng: SplitMix64
    /// Multiplies the schedule; halved after repeated non-finite steps.
    public private(set) var lrScale = 1.0
    public private(set) var bestValidation = Double.infinity
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

    /// Weights trained through weight normalisation: every weight except the
    /// zero-initialised output layers and the upsampler.
    static func isWeightNormed(_ name: String) -> Bool {
        name.hasPrefix("flows.") && name.hasSuffix(".weight") && !name.hasSuffix(".output.weight")
    }

    public init(model: WaveFlowModel<Float>, options: TrainOptions, runFolder: String,
                communicator: Communicator = SingleProcess()) {
        self.model = model
        self.options = options
        self.runFolder = runFolder
        self.communicator = communicator
        dataParts = communicator.size
        rng = SplitMix64(seed: options.seed ^ 0x5EED)
        for v in model.params.views {
            if Self.isWeightNormed(v.name) {
                trainables.add("train.wn.\(v.name).v", v.shape)
                trainables.add("train.wn.\(v.name).g", [v.shape[0]])
                let (vv, g) = WeightNorm.initialise(from: model.params[v.name], out: v.shape[0])
                trainables["train.wn.\(v.name).v"] = vv
                trainables["train.wn.\(v.name).g"] = g
            } else {
                trainables.add(v.name, v.shape)
                trainables[v.name] = model.params[v.name]
            }
        }
        adam = Adam(count: trainables.count)
    }

    // MARK: - Weight normalisation between the two arenas

    /// Model weights from the trainables.
    public func fold() {
        let tv = trainables
        let views = model.params.views
        model.params.values.withUnsafeMutableBufferPointer { mp in
            tv.values.withUnsafeBufferPointer { tp in
                for v in views {
                    if Self.isWeightNormed(v.name) {
                        let vo = tv.offset("train.wn.\(v.name).v"), go = tv.offset("train.wn.\(v.name).g")
                        WeightNorm.forward(v: tp.baseAddress! + vo, g: tp.baseAddress! + go, w: mp.baseAddress! + v.offset,
                                           out: v.shape[0], rest: v.count / v.shape[0])
                    } else {
                        (mp.baseAddress! + v.offset).update(from: tp.baseAddress! + tv.offset(v.name), count: v.count)
                    }
                }
            }
        }
    }

    /// Trainable gradients from the model's gradients.
    func unfoldGradients() {
        let mg = model.params.grads
        let tv = trainables
        var grads = [Float](repeating: 0, count: tv.count)
        grads.withUnsafeMutableBufferPointer { gp in
            mg.withUnsafeBufferPointer { m in
                tv.values.withUnsafeBufferPointer { t in
                    for v in model.params.views {
                        if Self.isWeightNormed(v.name) {
                            let vo = tv.offset("train.wn.\(v.name).v"), go = tv.offset("train.wn.\(v.name).g")
                            WeightNorm.backward(v: t.baseAddress! + vo, g: t.baseAddress! + go, dw: m.baseAddress! + v.offset,
                                                dv: gp.baseAddress! + vo, dg: gp.baseAddress! + go,
                                                out: v.shape[0], rest: v.count / v.shape[0])
                        } else {
                            (gp.baseAddress! + tv.offset(v.name)).update(from: m.baseAddress! + v.offset, count: v.count)
                        }
                    }
                }
            }
        }
        trainables.grads = grads
    }

    // MARK: - Schedule

    /// Learning rate at `step` (1-based): linear warm-up, then cosine decay
    /// from `lr` to `lr * finalLRFraction` at `steps`.
    public func learningRate(at step: Int) -> Double {
        let o = options
        if step <= o.warmup { return o.lr * lrScale * Double(step) / Double(max(1, o.warmup)) }
        let progress = min(1, Double(step - o.warmup) / Double(max(1, o.steps - o.warmup)))
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return o.lr * lrScale * (o.finalLRFraction + (1 - o.finalLRFraction) * cosine)
    }

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
        unfoldGradients()
        let norm = clipGradientNorm(&trainables.grads, maxNorm: options.clip)
        step += 1
        guard loss.isFinite, norm.isFinite else {
            return StepResult(loss: loss, gradNorm: norm, skipped: true, stop: stop, allreduceSeconds: reduceTime)
        }
        let grads = trainables.grads
        adam.update(&trainables.values, grads, lr: learningRate(at: step))
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
        try communicator.broadcast(&trainables.values)
        try communicator.broadcast(&adam.m)
        try communicator.broadcast(&adam.v)
        var scalars: [UInt64] = [UInt64(step), UInt64(adam.step), rng.state, lrScale.bitPattern, bestValidation.bitPattern]
        try communicator.broadcast(&scalars)
        step = Int(scalars[0]); adam.step = Int(scalars[1]); rng.state = scalars[2]
        lrScale = Double(bitPattern: scalars[3]); bestValidation = Double(bitPattern: scalars[4])
        fold()
    }

    /// Model copies that compute shards of a batch concurrently (data
    /// parallelism across cores, one BLAS thread each: measured 2x faster on
    /// two cores than one process-wide BLAS pool, whose threads mostly wait
    /// on the serial elementwise work between matrix products).
    private var replicas: [WaveFlowModel<Float>] = []

    /// The first `n` replicas (made on first use), holding the model's current weights.
    private func syncedReplicas(_ n: Int) -> [WaveFlowModel<Float>] {
        while replicas.count < n { replicas.append(WaveFlowModel<Float>(config: model.config)) }
        let reps = Array(replicas.prefix(n))
        for r in reps { r.params.values = model.params.values }
        return reps
    }

    /// Loss (batch mean of nats/sample) and its gradient in `model.params.grads`.
    func forwardBackward(_ batch: Batch) -> Double {
        let shards = max(1, min(Threads.count, batch.batch))
        if shards == 1 {
            model.params.zeroGrad()
            let state = model.forward(audio: batch.audio, mel: batch.mel, batch: batch.batch, frames: batch.frames)
            model.backward(state)
            return (state.nll.reduce(0) { $0 + Double($1) } + batch.nllOffset.reduce(0, +)) / Double(batch.batch)
        }
        let reps = syncedReplicas(shards)
        for r in reps { r.params.zeroGrad() }
        var losses = [Double](repeating: 0, count: shards)
        let parts = (0..<shards).map { batch.shard($0, of: shards) }
        losses.withUnsafeMutableBufferPointer { lp in
            let out = lp.baseAddress!
            Threads.parallelFor(shards) { i in
                let part = parts[i], m = reps[i]
                let state = m.forward(audio: part.audio, mel: part.mel, batch: part.batch, frames: part.frames)
                m.backward(state)
                out[i] = state.nll.reduce(0) { $0 + Double($1) } + part.nllOffset.reduce(0, +)
            }
        }
        // Each replica holds the gradient of its shard's mean; the batch mean
        // weights them by shard size.
        var grads = [Float](repeating: 0, count: model.params.count)
        for (i, r) in reps.enumerated() {
            let weight = Float(parts[i].batch) / Float(batch.batch)
            r.params.grads.withUnsafeBufferPointer { g in
                for j in grads.indices { grads[j] += weight * g[j] }
            }
        }
        model.params.grads = grads
        return losses.reduce(0, +) / Double(batch.batch)
    }

    /// Mean NLL (nats/sample) over the first `validationSeconds` of each utterance.
    public func validate(_ utterances: [Utterance]) -> Double {
        let h = model.config.nGroup, hop = model.config.hopLength, m = model.config.nMels
        let maxSamples = Int(options.validationSeconds * Double(model.config.sampleRate))
        let workers = max(1, min(Threads.count, utterances.count))
        let reps = syncedReplicas(workers)
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
                    o[i] = input.nll(first: t, model: reps[wk])
                    i += workers
                }
            }
        }
        return nll.reduce(0, +) / Double(max(1, utterances.count))
    }

    // MARK: - Checkpoints

    func trainTensors() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = trainables.views.filter { $0.name.hasPrefix("train.") }.map {
            ($0.name, Tensor(shape: $0.shape, values: Array(trainables.values[$0.range])))
        }
        out.append(("train.adam.m", Tensor(shape: [adam.m.count], values: adam.m)))
        out.append(("train.adam.v", Tensor(shape: [adam.v.count], values: adam.v)))
        // Integers are stored exactly as 16-bit pieces in F32.
        func pieces(_ x: UInt64) -> [Float] { (0..<4).map { Float((x >> (16 * UInt64($0))) & 0xFFFF) } }
        out.append(("train.step", Tensor(shape: [4], values: pieces(UInt64(step)))))
        out.append(("train.adam_step", Tensor(shape: [4], values: pieces(UInt64(adam.step)))))
        out.append(("train.rng", Tensor(shape: [4], values: pieces(rng.state))))
        out.append(("train.lr_scale", Tensor(shape: [1], values: [Float(lrScale)])))
        out.append(("train.best_validation", Tensor(shape: [1], values: [Float(bestValidation)])))
        return out
    }

    /// Restores the training state saved by `save` (the model's weights were
    /// loaded with the checkpoint). An inference-only checkpoint starts a
    /// fresh optimizer from its weights.
    public func restore(_ t: [String: Tensor]) throws {
        func whole(_ name: String) throws -> UInt64 {
            guard let v = t[name]?.values, v.count == 4 else { throw WaveFlowError("checkpoint lacks \(name)") }
            return (0..<4).reduce(0) { $0 | UInt64(v[$1]) << (16 * UInt64($1)) }
        }
        guard t["train.adam.m"] != nil else { return }
        for v in trainables.views where v.name.hasPrefix("train.") {
            guard let tensor = t[v.name], tensor.shape == v.shape else { throw WaveFlowError("checkpoint lacks \(v.name)") }
            trainables[v.name] = tensor.values
        }
        for v in trainables.views where !v.name.hasPrefix("train.") { trainables[v.name] = model.params[v.name] }
        guard let m = t["train.adam.m"], let vv = t["train.adam.v"], m.values.count == adam.m.count, vv.values.count == adam.v.count else {
            throw WaveFlowError("checkpoint's optimizer state does not match the model")
        }
        adam.m = m.values; adam.v = vv.values
        adam.step = Int(try whole("train.adam_step"))
        step = Int(try whole("train.step"))
        rng.state = try whole("train.rng")
        lrScale = Double(t["train.lr_scale"]?.values.first ?? 1)
        bestValidation = Double(t["train.best_validation"]?.values.first ?? .infinity)
        fold()
    }

    /// Writes `step-NNNNNNN.safetensors`, points `latest.safetensors` at it,
    /// and removes step files beyond the newest `keep`.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        try makeDirectory(runFolder)
        let name = String(format: "step-%07d.safetensors", step)
        let path = (runFolder as NSString).appendingPathComponent(name)
        var info = recordedInfo
        info["step"] = step
        try Checkpoint.save(model: model, train: trainTensors(), extra: info, to: path)
        let latest = (runFolder as NSString).appendingPathComponent("latest.safetensors")
        let tmp = AtomicFile.temporaryPath(for: latest)
        try? FileManager.default.createSymbolicLink(atPath: tmp, withDestinationPath: name)
        rename(tmp, latest)
        let steps = listFiles(in: runFolder) { ($0 as NSString).lastPathComponent.hasPrefix("step-") }.sorted()
        for old in steps.dropLast(options.keep) { try? FileManager.default.removeItem(atPath: old) }
        return path
    }

    /// Writes `best.safetensors` (inference tensors plus state).
    public func saveBest() throws {
        var info = recordedInfo
        info["step"] = step
        info["validation_nll"] = bestValidation
        try Checkpoint.save(model: model, train: trainTensors(), extra: info,
                            to: (runFolder as NSString).appendingPathComponent("best.safetensors"))
    }

    /// Reloads the newest checkpoint of this run (after repeated non-finite steps).
    func reloadLatest() throws {
        let latest = (runFolder as NSString).appendingPathComponent("latest.safetensors")
        let ck = try Checkpoint.load(latest)
        model.params.values = ck.model.params.values
        let scale = lrScale
        try restore(ck.trainTensors)
        lrScale = scale
    }

    // MARK: - The run folder

    /// Removes what an interrupted writer left in the run folder: atomic
    /// writes' temporary files (`.NAME.PID.N.tmp`, Foundation's `.dat.nosync*`).
    func removeLeftovers() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runFolder)) ?? []
        for name in names where (name.hasPrefix(".") && name.hasSuffix(".tmp")) || name.hasPrefix(".dat.nosync") {
            try? FileManager.default.removeItem(atPath: (runFolder as NSString).appendingPathComponent(name))
        }
    }

    /// After a hard stop (kill -9) the steps since the last checkpoint are
    /// trained again on resume: their old rows in metrics.jsonl (step >
    /// this trainer's step) are dropped so that every step appears once.
    func dropReplayedMetrics(_ path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let kept = lines.filter { line in
            guard let d = line.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
                  let s = o["step"] as? Int else { return true }
            return s <= step
        }
        if kept.count < lines.count {
            try AtomicFile.write(Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8), to: path)
        }
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
        let metricsPath = (runFolder as NSString).appendingPathComponent("metrics.jsonl")
        var metrics: FileHandle?
        if root {
            try makeDirectory(runFolder)
            removeLeftovers()
            try dropReplayedMetrics(metricsPath)
            if !FileManager.default.fileExists(atPath: metricsPath) { _ = FileManager.default.createFile(atPath: metricsPath, contents: nil) }
            guard let m = FileHandle(forWritingAtPath: metricsPath) else { throw WaveFlowError("cannot write", path: metricsPath) }
            m.seekToEndOfFile()
            metrics = m
        }
        defer { metrics?.closeFile() }
        func log(_ object: [String: Any]) {
            if let metrics, let d = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
                metrics.write(d); metrics.write(Data("\n".utf8))
            }
        }
        func say(_ text: String) { if root { logLine(text) } }
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
            log(["step": 0, "val_nll": v, "time": 0.0])
            say("validation NLL at step 0: \(String(format: "%.4f", v)) nats/sample")
        }
        var stopAll = false
        while step < min(options.steps, pauseAt ?? .max) && !stopAll {
            let t0 = Date()
            let seed = rng.next()
            let batch = communicator.size > 1
                ? corpus.samplePart(communicator.rank, of: communicator.size, batch: options.batch, segment: segment, hop: hop, seed: seed)
                : corpus.sampleBatch(parts: dataParts, batch: options.batch, segment: segment, hop: hop, seed: seed)
            let r = try trainStep(batch)
            stopAll = r.stop
            let dt = Date().timeIntervalSince(t0)
            let rate = Double(options.batch * segment) / dt
            var entry: [String: Any] = ["step": step, "loss": r.loss.isFinite ? r.loss : "nan", "grad_norm": r.gradNorm.isFinite ? Double(r.gradNorm) : "nan",
                                        "lr": learningRate(at: step), "samples_per_s": rate,
                                        "time": Date().timeIntervalSince(started)]
            if communicator.size > 1 { entry["allreduce_s"] = r.allreduceSeconds; entry["ranks"] = communicator.size }
            if r.skipped {
                badInARow += 1
                entry["skipped"] = true
                say("waveflow: step \(step): non-finite loss or gradient, update skipped")
                if badInARow >= 3 {
                    lrScale *= 0.5
                    say("waveflow: \(badInARow) bad steps in a row: restoring the last checkpoint, learning rate x\(lrScale)")
                    if FileManager.default.fileExists(atPath: (runFolder as NSString).appendingPathComponent("latest.safetensors")) {
                        if root { try reloadLatest() }
                        try synchroniseRanks()
                    }
                    badInARow = 0
                }
            } else {
                badInARow = 0
            }
            log(entry)
            progress?.advance(note: String(format: "step %d, loss %.4f nats/sample, %.0f samples/s", step, r.loss, rate))
            if root && (step % options.validateEvery == 0 || step == options.steps) {
                let v = validate(corpus.validation)
                log(["step": step, "val_nll": v, "time": Date().timeIntervalSince(started)])
                say("step \(step): validation NLL \(String(format: "%.4f", v)) nats/sample")
                if v < bestValidation {
                    bestValidation = v
                    try saveBest()
                }
            }
            if root && (step % options.checkpointEvery == 0 || step == options.steps) {
                try saveCheckpoint()
                try? TrainingPlot.write(metrics: metricsPath, to: (runFolder as NSString).appendingPathComponent("nll.svg"))
            }
        }
        if root && (stopAll || step < options.steps) {
            let path = try saveCheckpoint()
            try? TrainingPlot.write(metrics: metricsPath, to: (runFolder as NSString).appendingPathComponent("nll.svg"))
            say("waveflow: stopped at step \(step); saved \(path) (continue with --resume)")
        }
    }
}
