import Foundation

/// How close one copy synthesis (audio -> mel -> vocoder -> audio) comes to
/// the original.
public struct CopySynthesisScores: Sendable {
    /// Mean |log-mel(original) - log-mel(synthesised)|.
    public var melDistance: Double
    /// Multi-resolution STFT log-magnitude distance up to `fmax` (8 kHz by
    /// default): mean over FFT sizes 512, 1024, 2048 (hop n/4, Hann) of the
    /// mean |log max(|X|, 1e-5) - log max(|Y|, 1e-5)| over bins <= fmax.
    public var logSpectralDistance: Double
    /// Multi-resolution STFT distance over all bins: spectral convergence +
    /// mean |log magnitude difference| (floor 1e-7), averaged over the same sizes.
    public var stftDistance: Double
    /// RMS of the synthesis / RMS of the original.
    public var rmsRatio: Double
}

/// Copy-synthesis quality of a model beside the no-learning baselines.
public struct EvaluationResult: Sendable {
    public var path: String
    /// NLL in nats per sample (as `waveflow score`).
    public var nll: Double
    public var model: CopySynthesisScores
    /// Noise-excited LPC from the mel (order 16 at 22050 Hz), no learning.
    public var lpc: CopySynthesisScores
    /// Griffin–Lim, 32 iterations, from the mel.
    public var griffinLim: CopySynthesisScores
    /// Synthesis seconds per second of audio.
    public var realTimeFactor: Double
    /// The waveforms compared (for `--report`): original, model, LPC, Griffin–Lim.
    public var audio: [String: [Float]] = [:]
}

public enum Evaluator {
    /// The FFT sizes of the multi-resolution distances.
    public static let resolutions = [512, 1024, 2048]
    /// Floor of magnitudes before the log in the ≤ fmax log-spectral distance.
    public static let logSpectralFloor = 1e-5

    /// Spectral convergence plus log-magnitude distance, averaged over FFT
    /// sizes 512, 1024 and 2048 (hop = size / 4, Hann window).
    public static func multiResolutionSTFTDistance(_ a: [Float], _ b: [Float], sampleRate: Int) throws -> Double {
        try multiResolution(a, b, sampleRate: sampleRate).stft
    }

    /// Both multi-resolution distances of `CopySynthesisScores`.
    static func multiResolution(_ a: [Float], _ b: [Float], sampleRate: Int, fmax: Double = 8000) throws
        -> (stft: Double, logSpectral: Double) {
        let n = min(a.count, b.count)
        let (x, y) = (Array(a[0..<n]), Array(b[0..<n]))
        var total = 0.0, logTotal = 0.0
        for size in resolutions {
            let spec = try MelSpectrogram(config: MelConfig(sampleRate: sampleRate, nFFT: size, hopLength: size / 4, winLength: size,
                                                            nMels: 1, fmin: 0, fmax: Double(sampleRate) / 2))
            let sx = try spec.magnitude(x).values, sy = try spec.magnitude(y).values
            let bins = size / 2 + 1
            let lastBin = min(bins - 1, Int(fmax * Double(size) / Double(sampleRate)))
            var diff2 = 0.0, ref2 = 0.0, logDiff = 0.0, logLimited = 0.0, limitedCount = 0
            for i in sx.indices {
                let p = Double(sx[i]), q = Double(sy[i])
                diff2 += (p - q) * (p - q); ref2 += p * p
                logDiff += abs(log(max(p, 1e-7)) - log(max(q, 1e-7)))
                if i % bins <= lastBin {
                    logLimited += abs(log(max(p, logSpectralFloor)) - log(max(q, logSpectralFloor)))
                    limitedCount += 1
                }
            }
            total += (diff2 / max(ref2, 1e-12)).squareRoot() + logDiff / Double(sx.count)
            logTotal += logLimited / Double(max(1, limitedCount))
        }
        return (total / Double(resolutions.count), logTotal / Double(resolutions.count))
    }

    /// The scores of `synthesised` against `original` (cut to the shorter).
    public static func scores(original: [Float], synthesised: [Float], mel: MelSpectrogram) throws -> CopySynthesisScores {
        let n = min(synthesised.count, original.count)
        let (x, y) = (Array(original[0..<n]), Array(synthesised[0..<n]))
        let m1 = try mel.compute(x), m2 = try mel.compute(y)
        let melDistance = zip(m1.values, m2.values).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(m1.values.count)
        let (stft, logSpectral) = try multiResolution(x, y, sampleRate: mel.config.sampleRate, fmax: min(8000, mel.config.fmax))
        func rms(_ v: [Float]) -> Double { (v.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, v.count))).squareRoot() }
        return CopySynthesisScores(melDistance: melDistance, logSpectralDistance: logSpectral, stftDistance: stft,
                                   rmsRatio: rms(y) / max(rms(x), 1e-12))
    }

    /// NLL and copy-synthesis figures for one file, for the model and both
    /// baselines (all from the same mel, the baselines' noise from `seed`).
    /// Without `baselines` their scores are NaN (faster: a training curve).
    public static func evaluate(file path: String, model: FlowModel<Float>, context: ComputeContext, sigma: Double, seed: UInt64,
                                baselines: Bool = true, keepAudio: Bool = false) throws -> EvaluationResult {
        let cfg = model.config
        let mel = try MelSpectrogram(config: cfg.mel)
        let audio = try AudioFile.read(path, sampleRate: cfg.sampleRate)
        do {
            let nll = try Scorer.score(samples: audio.samples, model: model, mel: mel, context: context)
            let m = try mel.compute(audio.samples)
            let z = Synthesizer.noise(count: m.shape[1] * cfg.hopLength, sigma: sigma, seed: seed)
            let t0 = Date()
            let synth = try Synthesizer(model: model, context: context).synthesise(mel: m, z: z)
            let elapsed = Date().timeIntervalSince(t0)
            let none = CopySynthesisScores(melDistance: .nan, logSpectralDistance: .nan, stftDistance: .nan, rmsRatio: .nan)
            var result = EvaluationResult(
                path: path, nll: nll, model: try scores(original: audio.samples, synthesised: synth, mel: mel),
                lpc: none, griffinLim: none, realTimeFactor: elapsed / (Double(synth.count) / Double(cfg.sampleRate)))
            if keepAudio { result.audio = ["original": audio.samples, "model": synth] }
            if baselines {
                let lpc = Baselines.noiseExcitedLPC(logMel: m, config: cfg.mel, order: 16, seed: seed)
                let gl = try Baselines.griffinLim(logMel: m, config: cfg.mel, iterations: 32, seed: seed)
                result.lpc = try scores(original: audio.samples, synthesised: lpc, mel: mel)
                result.griffinLim = try scores(original: audio.samples, synthesised: gl, mel: mel)
                if keepAudio { result.audio["lpc"] = lpc; result.audio["griffin-lim"] = gl }
            }
            return result
        } catch let e as WaveFlowError { throw e.at(path) }
    }
}
