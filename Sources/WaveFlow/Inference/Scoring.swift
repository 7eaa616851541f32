import Foundation

/// Negative log-likelihood of whole files (MODEL-SPEC sections 3 and 7).
public enum Scorer {
    /// NLL in nats per sample of the audio file at `path` under `model`: the
    /// mel is computed from the audio itself (resampled to the model's rate),
    /// audio and condition are trimmed to T' = floor(T/h)*h.
    public static func score(file path: String, model: FlowModel<Float>, mel: MelSpectrogram,
                             context: ComputeContext) throws -> Double {
        let audio = try AudioFile.read(path, sampleRate: model.config.sampleRate)
        do { return try score(samples: audio.samples, model: model, mel: mel, context: context) } catch let e as WaveFlowError { throw e.at(path) }
    }

    public static func score(samples: [Float], model: FlowModel<Float>, mel: MelSpectrogram,
                             context: ComputeContext) throws -> Double {
        let m = try mel.compute(samples)
        let h = model.config.nGroup
        let t = samples.count / h * h
        guard t >= h else { throw WaveFlowError("audio too short to score") }
        return flowInput(samples: samples, logMel: m.values, frames: m.shape[1], model: model).nll(first: t, model: model, context: context)
    }

    /// What the flows score for audio with log-mel `[M, F]`: the audio itself,
    /// or with an LPC front its excitation e and the front's constant.
    public struct FlowInput {
        public var values: [Float]
        public var logMel: [Float]
        public var frames: Int
        /// The envelope of the LPC front (nil without one).
        public var envelope: LPCEnvelope?

        /// NLL (nats/sample of x) of the first `t` samples (t a multiple of h):
        /// the flows' NLL of e plus the mean log-gain of the front. Long
        /// audio is scored in chunks of about `chunkSamples` (see
        /// ``Scorer/chunkedLogLikelihood``), so memory stays bounded; the
        /// result is the whole-utterance NLL.
        public func nll(first t: Int, model: FlowModel<Float>, context: ComputeContext, chunkSamples: Int? = nil) -> Double {
            let chunkSamples = chunkSamples ?? Scorer.chunkSamples(for: model.config)
            let front = envelope.map { $0.logGainSum(samples: 0..<t) / Double(t) } ?? 0
            if t <= chunkSamples {
                let s = model.forward(audio: Array(values[0..<t]), mel: logMel, batch: 1, frames: frames, keepCache: false,
                                        context: context)
                return Double(s.nll[0]) + front
            }
            return -Scorer.chunkedLogLikelihood(self, samples: t, model: model, context: context,
                                                     chunkSamples: chunkSamples) / Double(t) + front
        }
    }

    /// Audio longer than this is scored in chunks: 2^23 / C samples (2^18
    /// for C = 32), about 400 MB of activations with the halo.
    public static func chunkSamples(for c: ModelConfig) -> Int { max(1 << 14, (1 << 23) / c.channels) }

    /// Columns of context one side of a column needs for its output to be
    /// exact (the family's receptive field).
    static func receptiveColumns(_ c: ModelConfig) -> Int { ModelFamilies.named(c.family)?.receptiveColumns(c) ?? 0 }

    /// log p_flow(values[0..<t] | mel), computed over chunks of about
    /// `chunkSamples` samples (whole hops), each with enough context on
    /// both sides that its interior columns' z and log-determinants equal
    /// those of the whole utterance: the flows' receptive field in columns
    /// plus 4 mel frames for the upsampler's transposed convolutions.
    /// Summed in Float64.
    static func chunkedLogLikelihood(_ input: FlowInput, samples t: Int, model: FlowModel<Float>, context: ComputeContext,
                                     chunkSamples: Int) -> Double {
        let c = model.config, h = c.nGroup, hop = c.hopLength, m = c.nMels
        let halo = (receptiveColumns(c) * h + hop - 1) / hop * hop + 4 * hop
        let step = max(hop, chunkSamples / hop * hop)
        var total = 0.0
        var s0 = 0
        while s0 < t {
            let s1 = min(t, s0 + step)
            // The chunk's audio [a, b): whole frames on the left, a multiple of h on the right.
            let a = max(0, s0 - halo)
            let b = min(t, s1 + halo) / h * h
            let f0 = a / hop, f1 = min(input.frames, (b + hop - 1) / hop + 4)
            var mel = [Float](repeating: 0, count: m * (f1 - f0))
            for mi in 0..<m {
                for f in f0..<f1 { mel[mi * (f1 - f0) + f - f0] = input.logMel[mi * input.frames + f] }
            }
            let s = model.forward(audio: Array(input.values[a..<b]), mel: mel, batch: 1, frames: f1 - f0,
                                  keepCache: false, columnLogdet: true, context: context)
            for i in (s0 - a)..<(s1 - a) { total -= 0.5 * Double(s.z[i]) * Double(s.z[i]) + GaussianNLL.halfLog2Pi }
            for j in (s0 - a) / h ..< (s1 - a) / h { total += Double(s.columnLogdet[j]) }
            s0 = s1
        }
        return total
    }

    /// The flows' input for `samples` (see ``FlowInput``).
    public static func flowInput(samples: [Float], logMel: [Float], frames: Int, model: FlowModel<Float>) -> FlowInput {
        guard let front = model.front else { return FlowInput(values: samples, logMel: logMel, frames: frames) }
        let env = front.envelope(logMel: logMel, frames: frames)
        return FlowInput(values: front.analyse(samples, envelope: env), logMel: logMel, frames: frames, envelope: env)
    }
}
