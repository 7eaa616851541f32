import Foundation

/// Negative log-likelihood of whole files (MODEL-SPEC sections 3 and 7).
public enum Scorer {
    /// NLL in nats per sample of the audio file at `path` under `model`: the
    /// mel is computed from the audio itself (resampled to the model's rate),
    /// audio and condition are trimmed to T' = floor(T/h)*h.
    public static func score(file path: String, model: WaveFlowModel<Float>, mel: MelSpectrogram) throws -> Double {
        let audio = try AudioFile.read(path, sampleRate: model.config.sampleRate)
        do { return try score(samples: audio.samples, model: model, mel: mel) } catch let e as WaveFlowError { throw e.at(path) }
    }

    public static func score(samples: [Float], model: WaveFlowModel<Float>, mel: MelSpectrogram) throws -> Double {
        let m = try mel.compute(samples)
        let h = model.config.nGroup
        let t = samples.count / h * h
        guard t >= h else { throw WaveFlowError("audio too short to score") }
        return flowInput(samples: samples, logMel: m.values, frames: m.shape[1], model: model).nll(first: t, model: model)
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
        /// the flows' NLL of e plus the mean log-gain of the front.
        public func nll(first t: Int, model: WaveFlowModel<Float>) -> Double {
            let s = model.forward(audio: Array(values[0..<t]), mel: logMel, batch: 1, frames: frames, keepCache: false)
            let front = envelope.map { $0.logGainSum(samples: 0..<t) / Double(t) } ?? 0
            return Double(s.nll[0]) + front
        }
    }

    /// The flows' input for `samples` (see ``FlowInput``).
    public static func flowInput(samples: [Float], logMel: [Float], frames: Int, model: WaveFlowModel<Float>) -> FlowInput {
        guard let front = model.front else { return FlowInput(values: samples, logMel: logMel, frames: frames) }
        let env = front.envelope(logMel: logMel, frames: frames)
        return FlowInput(values: front.analyse(samples, envelope: env), logMel: logMel, frames: frames, envelope: env)
    }
}
