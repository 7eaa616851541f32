import Foundation

/// Vocoders with no learning, computed from the log-mel alone: the floor a
/// trained model has to beat in `waveflow eval`.
public enum Baselines {
    /// Noise-excited LPC: unit white noise (seeded, as `Synthesizer.noise`)
    /// through the all-pole envelope of MODEL-SPEC 11 at order `order`
    /// (16 at 22050 Hz). F frames give F*hop samples.
    public static func noiseExcitedLPC(logMel: NPYArray, config: MelConfig, order: Int = 16, seed: UInt64 = 0) -> [Float] {
        let frames = logMel.shape[1]
        let front = LPCFront(order: order, mel: config)
        let env = front.envelope(logMel: logMel.values, frames: frames)
        return front.synthesise(Synthesizer.noise(count: frames * config.hopLength, sigma: 1, seed: seed), envelope: env)
    }

    /// Griffin–Lim phase reconstruction of the linear magnitude that the
    /// log-mel implies, librosa's `feature.inverse.mel_to_audio` convention:
    /// magnitude by the mel bank's pseudo-inverse (least squares, clipped at
    /// 0; librosa uses non-negative least squares), then `iterations` rounds
    /// of fast Griffin–Lim (momentum 0.99, random initial phase from
    /// `seed`), Hann window of n_fft, centred frames. F frames give
    /// (F-1)*hop samples as in librosa, padded with zeros to F*hop.
    public static func griffinLim(logMel: NPYArray, config: MelConfig, iterations: Int = 32, seed: UInt64 = 0) throws -> [Float] {
        let frames = logMel.shape[1], nb = config.nBins
        let magnitude = melToLinear(logMel: logMel, config: config) // [F, K]
        let window = (0..<config.nFFT).map { Float(0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(config.nFFT))) }
        let stft = STFT(nFFT: config.nFFT, hop: config.hopLength, window: window)
        let length = (frames - 1) * config.hopLength // F centred frames exactly
        guard length > config.nFFT / 2 else { throw WaveFlowError("mel too short for Griffin-Lim: \(frames) frames") }
        var rng = SplitMix64(seed: seed)
        var phaseRe = [Float](repeating: 0, count: frames * nb), phaseIm = phaseRe
        for i in phaseRe.indices {
            let a = 2 * Double.pi * rng.unit()
            phaseRe[i] = Float(cos(a)); phaseIm[i] = Float(sin(a))
        }
        let momentum: Float = 0.99, eps: Float = 1e-16
        var previous = STFT.Spectrum(frames: frames, bins: nb, re: [Float](repeating: 0, count: frames * nb),
                                     im: [Float](repeating: 0, count: frames * nb))
        var audio = [Float]()
        for _ in 0 ..< iterations {
            var target = previous
            for i in target.re.indices { target.re[i] = magnitude[i] * phaseRe[i]; target.im[i] = magnitude[i] * phaseIm[i] }
            audio = stft.inverse(target, length: length)
            let rebuilt = try stft.forward(audio)
            for i in phaseRe.indices {
                let re = rebuilt.re[i] - momentum / (1 + momentum) * previous.re[i]
                let im = rebuilt.im[i] - momentum / (1 + momentum) * previous.im[i]
                let norm = (re * re + im * im).squareRoot() + eps
                phaseRe[i] = re / norm; phaseIm[i] = im / norm
            }
            previous = rebuilt
        }
        var last = previous
        for i in last.re.indices { last.re[i] = magnitude[i] * phaseRe[i]; last.im[i] = magnitude[i] * phaseIm[i] }
        return stft.inverse(last, length: length) + [Float](repeating: 0, count: config.hopLength)
    }

    /// |STFT| `[F, K]` from log-mel `[M, F]`: exp, then the least-squares
    /// inverse of the Slaney bank B (`B^T (B B^T)^-1`, Float64 Cholesky),
    /// negative values set to 0.
    static func melToLinear(logMel: NPYArray, config: MelConfig) -> [Float] {
        let nm = config.nMels, nb = config.nBins, frames = logMel.shape[1]
        let bank = MelScale.filterBank(config).map(Double.init)
        // G = B B^T [M, M], lower Cholesky factor in place.
        var g = [Double](repeating: 0, count: nm * nm)
        for i in 0..<nm { for j in 0...i {
            var s = 0.0
            for k in 0..<nb { s += bank[i * nb + k] * bank[j * nb + k] }
            g[i * nm + j] = s; g[j * nm + i] = s
        } }
        let ridge = 1e-10 * (0..<nm).reduce(0.0) { max($0, g[$1 * nm + $1]) }
        for i in 0..<nm { g[i * nm + i] += ridge }
        for j in 0..<nm {
            var d = g[j * nm + j]
            for k in 0..<j { d -= g[j * nm + k] * g[j * nm + k] }
            let l = max(d, 1e-300).squareRoot()
            g[j * nm + j] = l
            for i in (j + 1)..<nm {
                var s = g[i * nm + j]
                for k in 0..<j { s -= g[i * nm + k] * g[j * nm + k] }
                g[i * nm + j] = s / l
            }
        }
        var out = [Float](repeating: 0, count: frames * nb)
        var y = [Double](repeating: 0, count: nm)
        for f in 0..<frames {
            // Solve G y = mel (forward, then backward substitution).
            for i in 0..<nm {
                var s = exp(Double(logMel.values[i * frames + f]))
                for k in 0..<i { s -= g[i * nm + k] * y[k] }
                y[i] = s / g[i * nm + i]
            }
            for i in stride(from: nm - 1, through: 0, by: -1) {
                var s = y[i]
                for k in (i + 1)..<nm { s -= g[k * nm + i] * y[k] }
                y[i] = s / g[i * nm + i]
            }
            for k in 0..<nb {
                var s = 0.0
                for m in 0..<nm { s += bank[m * nb + k] * y[m] }
                out[f * nb + k] = Float(max(0, s))
            }
        }
        return out
    }
}
