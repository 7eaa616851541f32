import Foundation

// A flow model: a conditioner, an ordered list of invertible steps on the
// squeezed grid and a standard normal prior (MODEL-SPEC sections 3-8), with
// the LPC front (section 11) at the data end when `lpc_order` > 0. The
// family (`ModelFamily`, from the config's `family` key) supplies the
// pieces; everything here is the same for every family.
//
// Shape letters: B batch, T' = h*w samples, M mel bands, F frames, h rows,
// w columns.

/// A model's parameters (spec tensor names) and its computations, in
/// Float32 (use) or Float64 (gradient tests): scoring (forward), the
/// gradient (backward) and synthesis (the inverse).
///
/// Nothing in a model changes after `init` except its parameter values
/// (which training writes): synthesising or scoring several files from one
/// model on several threads at once is safe.
public final class FlowModel<T: Real>: @unchecked Sendable {
    public let config: ModelConfig
    /// The inference tensors of the family (MODEL-SPEC section 10 for WaveFlow), by name.
    public let params: ParameterSet<T>
    /// The LPC front at the data end (MODEL-SPEC 11) when `lpc_order` > 0:
    /// the flows then model its excitation, not the waveform.
    public let front: LPCFront?
    /// Mel -> sample-rate condition.
    public let conditioner: any Conditioner<T>
    /// The steps from the data (X_0) to the latent, in forward order.
    public let steps: [any FlowStep<T>]
    public let prior = StandardNormalPrior()
    /// The family that built the pieces.
    public let family: any ModelFamily.Type

    /// A model of `config` with every parameter zero. `config` must be
    /// valid (`ModelConfig.validate`), its family one of `ModelFamilies`.
    public init(config: ModelConfig) {
        guard let family = ModelFamilies.named(config.family) else { preconditionFailure("unknown model family \(config.family)") }
        self.config = config
        self.family = family
        front = config.lpcOrder > 0 ? LPCFront(order: config.lpcOrder, mel: config.mel) : nil
        params = ParameterSet<T>()
        let shapes = family.tensorShapes(config)
        params.reserve(shapes.reduce(0) { $0 + $1.1.reduce(1, *) })
        for (name, shape) in shapes { params.add(name, shape) }
        (conditioner, steps) = family.build(config, params: params)
    }

    /// The inference tensors `config` implies, in arena order: what a
    /// checkpoint must hold (checked before anything is allocated).
    public static func tensorShapes(_ config: ModelConfig) -> [(String, [Int])] {
        ModelFamilies.named(config.family)?.tensorShapes(config) ?? []
    }

    /// The family's initialisation from `seed` (for WaveFlow: a new model is
    /// the identity up to the row permutations).
    public func initialise(seed: UInt64) {
        family.initialise(params, config: config, seed: seed)
    }

    /// The grid of `batch` items of `width` columns.
    func grid(batch: Int, width: Int) -> GridShape { GridShape(batch: batch, rows: config.nGroup, width: width) }

    // MARK: - Likelihood

    /// Everything the backward pass needs.
    public struct ForwardState {
        public var batch: Int, frames: Int, width: Int
        /// Negative log-likelihood, nats per sample, per batch item.
        public var nll: [T]
        /// The latent z [B, T'] (unsqueezed final Z).
        public var z: [T]
        /// Sum of the steps' log-determinants per batch item.
        public var logdet: [T]
        /// [B, w]: the same per column (only when asked for: chunked scoring).
        public var columnLogdet: [T] = []
        var mel: [T]
        var conditionCache: Any?
        var cd: [T]
        var steps: [StepForward<T>]
    }

    /// Scores audio [B, T'] (T' = w*h <= frames*hop) against mel [B, M, F]:
    /// the negative log-likelihood per sample of each item, and what the
    /// backward pass needs when `keepCache`.
    public func forward(audio: [T], mel: [T], batch: Int, frames: Int, keepCache: Bool = true,
                        columnLogdet: Bool = false, context: ComputeContext) -> ForwardState {
        let h = config.nGroup
        let tPrime = audio.count / batch
        precondition(tPrime % h == 0 && tPrime <= frames * config.hopLength, "audio length must be w*h <= frames*hop")
        let w = tPrime / h, grid = grid(batch: batch, width: w)
        let (c, conditionCache) = conditioner.forward(mel: mel, batch: batch, frames: frames)
        let cd = squeezeCondition(c, batch: batch, condWidth: frames * config.hopLength, width: w)
        var x = squeezeAudio(audio, batch: batch, width: w)
        var logdet = [T](repeating: 0, count: batch)
        var columns = [T](repeating: 0, count: columnLogdet ? batch * w : 0)
        var kept: [StepForward<T>] = []
        for step in steps {
            var f = step.forward(x, condition: cd, grid: grid, keepCache: keepCache, columnLogdet: columnLogdet, context: context)
            for b in 0..<batch { logdet[b] += f.logdet[b] }
            for i in columns.indices { columns[i] += f.columnLogdet[i] }
            x = f.output
            if keepCache { f.output = []; kept.append(f) } // the next step's input is kept by that step if it needs it
        }
        let z = unsqueezeAudio(x, batch: batch, width: w)
        let nll = prior.nll(z: z, logdet: logdet, batch: batch, count: tPrime)
        return ForwardState(batch: batch, frames: frames, width: w, nll: nll, z: z, logdet: logdet, columnLogdet: columns,
                            mel: mel, conditionCache: keepCache ? conditionCache : nil, cd: keepCache ? cd : [], steps: kept)
    }

    /// Accumulates the gradient of the batch-mean NLL into the arena's
    /// gradients. `context` must be the forward pass's (its convolutions
    /// kept what their backward passes read: by Winograd, the transformed
    /// inputs, not the inputs).
    public func backward(_ s: ForwardState, context: ComputeContext) {
        let h = config.nGroup, w = s.width, batch = s.batch
        precondition(s.steps.count == steps.count, "backward needs a forward pass with keepCache")
        let grid = grid(batch: batch, width: w)
        var dzFlat = [T](repeating: 0, count: s.z.count)
        let dLogdet = prior.backward(z: s.z, dZ: &dzFlat, batch: batch, count: h * w)
        var dx = squeezeAudio(dzFlat, batch: batch, width: w)
        var dCd = [T](repeating: 0, count: config.nMels * batch * h * w)
        for (step, f) in zip(steps, s.steps).reversed() {
            dx = step.backward(f, dOutput: dx, dLogdet: dLogdet, dCondition: &dCd, grid: grid, context: context)
        }
        let dc = unsqueezeConditionGrad(dCd, batch: batch, condWidth: s.frames * config.hopLength, width: w)
        conditioner.backward(mel: s.mel, cache: s.conditionCache!, dCondition: dc)
    }

    // MARK: - Synthesis

    /// The condition of mel [M, F] (B = 1) as grid rows, computed on demand
    /// (for WaveGlow, folded into the projections when `context` allows).
    public func synthesisCondition(mel: [T], frames: Int, context: ComputeContext = .fp32) -> any ConditionRows<T> {
        conditioner.synthesisCondition(mel: mel, frames: frames, rows: config.nGroup, context: context)
    }

    /// Mel frames of synthesis whose savings pay for WaveGlow's folded
    /// projections (`ConditionFolding`), over however many utterances; nil
    /// when the model has nothing to fold (another family, or over the
    /// memory limit).
    public var foldBreakEvenFrames: Int? {
        guard let up = conditioner as? WaveGlowUpsampler<T>, up.foldSources.size.applies else { return nil }
        return up.foldSources.size.breakEvenFrames
    }

    /// Builds now what synthesis in `context` keeps with the model, so that
    /// the first utterance does not wait for it: WaveGlow's folded condition
    /// projections when `context.conditionFolding` is `.always` (and the
    /// memory limit allows). Returns the megabytes kept (0: nothing).
    @discardableResult
    public func prepareForSynthesis(context: ComputeContext) -> Double {
        guard let up = conditioner as? WaveGlowUpsampler<T>, up.foldForSynthesis(columns: 0, context: context) != nil else { return 0 }
        return Double(up.foldSources.size.bytes) / 1e6 * Double(MemoryLayout<T>.size) / 4
    }

    /// Audio [F*hop] from mel [M, F] and latent z [F*hop] (MODEL-SPEC 8:
    /// every step's inverse, last to first; then the LPC front's synthesis
    /// filter of section 11 if there is one).
    public func synthesise(mel: [T], frames: Int, z: [T], context: ComputeContext) -> [T] {
        frontSynthesis(synthesiseExcitation(mel: mel, frames: frames, z: z, context: context), mel: mel, frames: frames)
    }

    /// The flows' part of `synthesise`: every step's inverse, last to first,
    /// without the LPC front's filter (the excitation e of a model with a
    /// front, the audio itself otherwise). Chunked synthesis runs this on
    /// overlapping pieces and the front's filter once, in order.
    public func synthesiseExcitation(mel: [T], frames: Int, z: [T], context: ComputeContext) -> [T] {
        let t = frames * config.hopLength, w = t / config.nGroup
        precondition(z.count == t)
        let condition = synthesisCondition(mel: mel, frames: frames, context: context)
        var x = squeezeAudio(z, batch: 1, width: w)
        for step in steps.reversed() { x = step.inverse(x, condition: condition, width: w, context: context) }
        return unsqueezeAudio(x, batch: 1, width: w)
    }

    /// The naive twin of `synthesise`: the whole condition materialised,
    /// every step inverted by its `inverseNaive`. Test oracle only.
    public func synthesiseNaive(mel: [T], frames: Int, z: [T], context: ComputeContext) -> [T] {
        let t = frames * config.hopLength, w = t / config.nGroup
        let (c, _) = conditioner.forward(mel: mel, batch: 1, frames: frames)
        let cd = squeezeCondition(c, batch: 1, condWidth: t, width: w)
        var x = squeezeAudio(z, batch: 1, width: w)
        for step in steps.reversed() { x = step.inverseNaive(x, condition: cd, width: w, context: context) }
        return frontSynthesis(unsqueezeAudio(x, batch: 1, width: w), mel: mel, frames: frames)
    }

    /// x from the flows' output e through the LPC front's all-pole filter
    /// (e itself when the model has no front).
    func frontSynthesis(_ e: [T], mel: [T], frames: Int) -> [T] {
        guard let front else { return e }
        let env = front.envelope(logMel: mel.map { Float($0) }, frames: frames)
        return front.synthesise(e.map { Float($0) }, envelope: env).map { T($0) }
    }

    // MARK: - Squeeze

    /// X [B, h, w] from audio [B, T'] (X[b, i, j] = x[b, j*h + i]).
    public func squeezeAudio(_ x: [T], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = [T](repeating: 0, count: batch * h * w)
        for b in 0..<batch { for j in 0..<w { for i in 0..<h { out[(b * h + i) * w + j] = x[b * h * w + j * h + i] } } }
        return out
    }

    /// The inverse of `squeezeAudio`.
    public func unsqueezeAudio(_ xs: [T], batch: Int, width w: Int) -> [T] {
        let h = config.nGroup
        var out = [T](repeating: 0, count: batch * h * w)
        for b in 0..<batch { for j in 0..<w { for i in 0..<h { out[b * h * w + j * h + i] = xs[(b * h + i) * w + j] } } }
        return out
    }

    /// Cd [M, B, h, w] from c [B, M, cw] (first h*w columns).
    public func squeezeCondition(_ c: [T], batch: Int, condWidth cw: Int, width w: Int) -> [T] {
        let h = config.nGroup, m = config.nMels
        var out = [T](repeating: 0, count: m * batch * h * w)
        for mi in 0..<m { for b in 0..<batch {
            let src = (b * m + mi) * cw, dst = (mi * batch + b) * h * w
            for j in 0..<w { for i in 0..<h { out[dst + i * w + j] = c[src + j * h + i] } }
        } }
        return out
    }

    /// dc [B, M, cw] from dCd [M, B, h, w] (zero beyond h*w columns).
    func unsqueezeConditionGrad(_ d: [T], batch: Int, condWidth cw: Int, width w: Int) -> [T] {
        let h = config.nGroup, m = config.nMels
        var out = [T](repeating: 0, count: batch * m * cw)
        for mi in 0..<m { for b in 0..<batch {
            let dst = (b * m + mi) * cw, src = (mi * batch + b) * h * w
            for j in 0..<w { for i in 0..<h { out[dst + j * h + i] = d[src + i * w + j] } }
        } }
        return out
    }

    // MARK: - Family-specific views (tests, benchmarks)

    /// WaveFlow's flow k (nil in another family).
    func coupling(_ k: Int) -> WaveFlowCoupling<T>? {
        steps.compactMap { $0 as? WaveFlowCoupling<T> }.dropFirst(k).first
    }

    /// WaveFlow's upsampler (nil in another family).
    var upsampler: WaveFlowUpsampler<T>? { conditioner as? WaveFlowUpsampler<T> }
}

/// A small, fast, reproducible random number generator (SplitMix64).
public struct SplitMix64: Codable, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9007199254740992.0) }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }
    public mutating func int(below n: Int) -> Int { Int(next() % UInt64(n)) }
    /// Standard normal (Box-Muller).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
