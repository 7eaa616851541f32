import Foundation

/// The Slaney mel scale and filter bank, as librosa computes them
/// (`htk=False`, `norm="slaney"`): linear below 1 kHz, logarithmic above,
/// each triangle scaled to unit area (2 / bandwidth in Hz).
public enum MelScale {
    static let fSp = 200.0 / 3
    static let minLogHz = 1000.0
    static let minLogMel = minLogHz / fSp // 15
    static let logStep = log(6.4) / 27

    /// Hertz to Slaney mels.
    public static func hzToMel(_ f: Double) -> Double {
        f >= minLogHz ? minLogMel + log(f / minLogHz) / logStep : f / fSp
    }

    /// Slaney mels to Hertz.
    public static func melToHz(_ m: Double) -> Double {
        m >= minLogMel ? minLogHz * exp(logStep * (m - minLogMel)) : fSp * m
    }

    /// `numpy.linspace(start, stop, n)`, rounding as NumPy does.
    static func linspace(_ start: Double, _ stop: Double, _ n: Int) -> [Double] {
        if n == 1 { return [start] }
        let step = (stop - start) / Double(n - 1)
        var out = (0..<n).map { Double($0) * step + start }
        out[n - 1] = stop
        return out
    }

    /// The filter bank `[nMels, nBins]`, row-major, Float32 — equal to
    /// `librosa.filters.mel(sr:, n_fft:, n_mels:, fmin:, fmax:)`.
    public static func filterBank(_ c: MelConfig) -> [Float] {
        let nBins = c.nBins
        // numpy.fft.rfftfreq: k * (1 / (n * (1/sr))).
        let binHz = 1.0 / (Double(c.nFFT) * (1.0 / Double(c.sampleRate)))
        let fftFreqs = (0..<nBins).map { Double($0) * binHz }
        let melF = linspace(hzToMel(c.fmin), hzToMel(c.fmax), c.nMels + 2).map(melToHz)
        var weights = [Float](repeating: 0, count: c.nMels * nBins)
        for i in 0..<c.nMels {
            let lowerWidth = melF[i + 1] - melF[i]
            let upperWidth = melF[i + 2] - melF[i + 1]
            let enorm = 2.0 / (melF[i + 2] - melF[i])
            for k in 0..<nBins {
                let lower = (fftFreqs[k] - melF[i]) / lowerWidth
                let upper = (melF[i + 2] - fftFreqs[k]) / upperWidth
                // librosa rounds the triangle to Float32, then scales it.
                let tri = Float(max(0, min(lower, upper)))
                weights[i * nBins + k] = Float(Double(tri) * enorm)
            }
        }
        return weights
    }
}
