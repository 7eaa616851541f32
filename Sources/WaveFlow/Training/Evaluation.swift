import Foundation

/// Copy-synthesis quality: audio -> mel -> synthesised audio -> mel.
public struct EvaluationResult {
    public var path: String
    /// NLL in nats per sample (as `waveflow score`).
    public var nll: Double
    /// Mean |log-mel(original) - log-mel(synthesised)|.
    public var melDistance: Double
    /// Multi-resolution STFT distance: mean over FFT sizes 512, 1024, 2048 of
    /// spectral convergence + mean |log magnitude difference|.
    public var stftDistance: Double
    /// Synthesis seconds per second of audio.
    public var realTimeFactor: Double
}

public enum Evaluator {
    /// Spectral convergence plus log-magnitude distance, averaged over FFT
    /// sizes 512, 1024 and 2048 (hop = size / 4, Hann window).
    public static func multiResolutionSTFTDistance(_ a: [Float], _ b: [Float], sampleRate: Int) throws -> Double {
        let n = min(a.count, b.count)
        let (x, y) = (Array(a[0..<n]), Array(b[0..<n]))
        var total = 0.0
        for size in [512, 1024, 2048] {
            let spec = try MelSpectrogram(config: MelConfig(sampleRate: sampleRate, nFFT: size, hopLength: size / 4, winLength: size,
                                                            nMels: 1, fmin: 0, fmax: Double(sampleRate) / 2))
            let sx = try spec.magnitude(x).values, sy = try spec.magnitude(y).values
            var diff2 = 0.0, ref2 = 0.0, logDiff = 0.0
            for i in sx.indices {
                let p = Double(sx[i]), q = Double(sy[i])
                diff2 += (p - q) * (p - q); ref2 += p * p
                logDiff += abs(log(max(p, 1e-7)) - log(max(q, 1e-7)))
            }
            total += (diff2 / max(ref2, 1e-12)).squareRoot() + logDiff / Double(sx.count)
        }
        return total / 3
    }

    /// NLL and copy-synthesis figures for one file.
    public static func evaluate(file path: String, model: WaveFlowModel<Float>, sigma: Double, seed: UInt64) throws -> EvaluationResult {
        let cfg = model.config
        let mel = try MelSpectrogram(config: cfg.mel)
        let audio = try AudioFile.read(path, sampleRate: cfg.sampleRate)
        do {
            let nll = try Scorer.score(samples: audio.samples, model: model, mel: mel)
            let m = try mel.compute(audio.samples)
            let z = Synthesizer.noise(count: m.shape[1] * cfg.hopLength, sigma: sigma, seed: seed)
            let t0 = Date()
            let synth = try Synthesizer(model: model).synthesise(mel: m, z: z)
            let elapsed = Date().timeIntervalSince(t0)
            let n = min(synth.count, audio.samples.count)
            let m2 = try mel.compute(Array(synth[0..<n]))
            let m1 = try mel.compute(Array(audio.samples[0..<n]))
            let melDistance = zip(m1.values, m2.values).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(m1.values.count)
            let stft = try multiResolutionSTFTDistance(audio.samples, synth, sampleRate: cfg.sampleRate)
            return EvaluationResult(path: path, nll: nll, melDistance: melDistance, stftDistance: stft,
                                    realTimeFactor: elapsed / (Double(synth.count) / Double(cfg.sampleRate)))
        } catch let e as WaveFlowError { throw e.at(path) }
    }
}
