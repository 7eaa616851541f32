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
        let s = model.forward(audio: Array(samples[0..<t]), mel: m.values, batch: 1, frames: m.shape[1], keepCache: false)
        return Double(s.nll[0])
    }
}
