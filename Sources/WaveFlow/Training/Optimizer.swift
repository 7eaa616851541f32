import Foundation

/// What Adam trains and how: the trainable arena (weight-normalised (v, g)
/// pairs and plain tensors), the maps between it and the model's weights,
/// the learning-rate schedule, gradient clipping, and the optimizer's part
/// of a checkpoint (the `train.*` tensors).
///
/// It sees the model only through its parameter arena (`ParameterSet`).
struct Optimizer {
    /// The schedule's settings (`lr`, `warmup`, `steps`, `finalLRFraction`)
    /// and the clipping threshold (`clip`).
    var options: TrainOptions
    /// What Adam updates: `train.wn.NAME.v` and `train.wn.NAME.g` for each
    /// weight-normalised weight NAME, the model's own name for every other tensor.
    var trainables = ParameterSet<Float>()
    var adam: Adam
    /// Multiplies the schedule; halved after repeated non-finite steps.
    var lrScale = 1.0

    /// Which weights are trained through weight normalisation (the family's choice).
    let isWeightNormed: (String) -> Bool

    /// Trainables that reproduce the model's weights `parameters` (of a
    /// model of `family`), and a fresh Adam.
    init(parameters: ParameterSet<Float>, family: any ModelFamily.Type, options: TrainOptions) {
        self.options = options
        isWeightNormed = family.isWeightNormed
        for v in parameters.views {
            if isWeightNormed(v.name) {
                trainables.add("train.wn.\(v.name).v", v.shape)
                trainables.add("train.wn.\(v.name).g", [v.shape[0]])
                let (vv, g) = WeightNorm.initialise(from: parameters[v.name], out: v.shape[0])
                trainables["train.wn.\(v.name).v"] = vv
                trainables["train.wn.\(v.name).g"] = g
            } else {
                trainables.add(v.name, v.shape)
                trainables[v.name] = parameters[v.name]
            }
        }
        adam = Adam(count: trainables.count)
    }

    // MARK: - Between the two arenas

    /// Writes the model's weights (`parameters`' values) from the trainables.
    func fold(into parameters: ParameterSet<Float>) {
        let tv = trainables, views = parameters.views
        Threads.parallelFor(views.count) { i in // each weight on its own
            let v = views[i], w = parameters.pointer(v.name)
            if isWeightNormed(v.name) {
                WeightNorm.forward(v: tv.pointer("train.wn.\(v.name).v"), g: tv.pointer("train.wn.\(v.name).g"), w: w,
                                   out: v.shape[0], rest: v.count / v.shape[0])
            } else {
                w.update(from: tv.pointer(v.name), count: v.count)
            }
        }
    }

    /// Sets the trainables' gradients from the model's (`parameters.grads`).
    func unfoldGradients(from parameters: ParameterSet<Float>) {
        let tv = trainables, views = parameters.views, isWeightNormed = isWeightNormed
        Threads.parallelFor(views.count) { i in // each weight on its own; every trainable's gradient is written
            let v = views[i], dw = parameters.gradient(v.name)
            if isWeightNormed(v.name) {
                let (vn, gn) = ("train.wn.\(v.name).v", "train.wn.\(v.name).g")
                WeightNorm.backward(v: tv.pointer(vn), g: tv.pointer(gn), dw: dw, dv: tv.gradient(vn), dg: tv.gradient(gn),
                                    out: v.shape[0], rest: v.count / v.shape[0])
            } else {
                tv.gradient(v.name).update(from: dw, count: v.count)
            }
        }
    }

    // MARK: - Schedule, clipping, update

    /// Learning rate at `step` (1-based): linear warm-up, then cosine decay
    /// from `lr` to `lr * finalLRFraction` at `steps`; times `lrScale`.
    func learningRate(at step: Int) -> Double {
        let o = options
        if step <= o.warmup { return o.lr * lrScale * Double(step) / Double(max(1, o.warmup)) }
        let progress = min(1, Double(step - o.warmup) / Double(max(1, o.steps - o.warmup)))
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return o.lr * lrScale * (o.finalLRFraction + (1 - o.finalLRFraction) * cosine)
    }

    /// Halves every later learning rate (after repeated non-finite steps).
    mutating func halveLearningRate() { lrScale *= 0.5 }

    /// Clips the trainables' gradients to the global norm `clip`; returns
    /// the norm before clipping.
    mutating func clipGradients() -> Float {
        clipGradientNorm(trainables.gradBuffer, maxNorm: options.clip)
    }

    /// One Adam update of the trainables by their gradients, at the rate of `step`.
    mutating func update(step: Int) {
        adam.update(trainables.valueBuffer, UnsafeBufferPointer(trainables.gradBuffer), lr: learningRate(at: step))
    }

    // MARK: - Checkpoint state

    /// The `train.*` tensors of a checkpoint: the weight-normalised
    /// trainables, Adam's moments, then the counters. Integers are stored
    /// exactly as four 16-bit pieces in F32.
    func stateTensors(_ counters: TrainingCounters) -> [(String, Tensor)] {
        var out: [(String, Tensor)] = trainables.views.filter { $0.name.hasPrefix("train.") }.map {
            ($0.name, Tensor(shape: $0.shape, values: Array(trainables.valueBuffer[$0.range])))
        }
        out.append(("train.adam.m", Tensor(shape: [adam.m.count], values: adam.m)))
        out.append(("train.adam.v", Tensor(shape: [adam.v.count], values: adam.v)))
        func pieces(_ x: UInt64) -> [Float] { (0..<4).map { Float((x >> (16 * UInt64($0))) & 0xFFFF) } }
        out.append(("train.step", Tensor(shape: [4], values: pieces(UInt64(counters.step)))))
        out.append(("train.adam_step", Tensor(shape: [4], values: pieces(UInt64(adam.step)))))
        out.append(("train.rng", Tensor(shape: [4], values: pieces(counters.rng.state))))
        out.append(("train.lr_scale", Tensor(shape: [1], values: [Float(lrScale)])))
        out.append(("train.best_validation", Tensor(shape: [1], values: [Float(counters.bestValidation)])))
        return out
    }

    /// Restores the state `stateTensors` saved; the plain trainables are
    /// taken from the model's weights `parameters` (loaded with the
    /// checkpoint). Returns false, changing nothing, for an inference-only
    /// checkpoint (no `train.adam.m`).
    mutating func restore(_ t: [String: Tensor], parameters: ParameterSet<Float>,
                          counters: inout TrainingCounters) throws -> Bool {
        func whole(_ name: String) throws -> UInt64 {
            guard let v = t[name]?.values, v.count == 4 else { throw WaveFlowError("checkpoint lacks \(name)") }
            return (0..<4).reduce(0) { $0 | UInt64(v[$1]) << (16 * UInt64($1)) }
        }
        guard t["train.adam.m"] != nil else { return false }
        for v in trainables.views where v.name.hasPrefix("train.") {
            guard let tensor = t[v.name], tensor.shape == v.shape else { throw WaveFlowError("checkpoint lacks \(v.name)") }
            trainables[v.name] = tensor.values
        }
        for v in trainables.views where !v.name.hasPrefix("train.") { trainables[v.name] = parameters[v.name] }
        guard let m = t["train.adam.m"], let vv = t["train.adam.v"], m.values.count == adam.m.count, vv.values.count == adam.v.count else {
            throw WaveFlowError("checkpoint's optimizer state does not match the model")
        }
        adam.m = m.values; adam.v = vv.values
        adam.step = Int(try whole("train.adam_step"))
        counters.step = Int(try whole("train.step"))
        counters.rng.state = try whole("train.rng")
        lrScale = Double(t["train.lr_scale"]?.values.first ?? 1)
        counters.bestValidation = Double(t["train.best_validation"]?.values.first ?? .infinity)
        return true
    }
}

/// The training loop's counters, saved in checkpoints beside the optimizer's state.
struct TrainingCounters {
    /// Steps taken, skipped ones included.
    var step = 0
    /// Draws each step's batch seed.
    var rng: SplitMix64
    /// The lowest validation NLL so far.
    var bestValidation = Double.infinity
}
