/// The parameters of the log-mel spectrogram (MODEL-SPEC section 2). The
/// defaults are the Tacotron 2 / WaveGlow convention at 22.05 kHz.
public struct MelConfig: Codable, Equatable, Hashable, Sendable {
    public var sampleRate: Int = 22050
    public var nFFT: Int = 1024
    public var hopLength: Int = 256
    public var winLength: Int = 1024
    public var nMels: Int = 80
    public var fmin: Double = 0
    public var fmax: Double = 8000

    public init() {}

    public init(sampleRate: Int, nFFT: Int, hopLength: Int, winLength: Int, nMels: Int, fmin: Double, fmax: Double) {
        self.sampleRate = sampleRate
        self.nFFT = nFFT
        self.hopLength = hopLength
        self.winLength = winLength
        self.nMels = nMels
        self.fmin = fmin
        self.fmax = fmax
    }

    /// Number of frequency bins of one STFT frame: n_fft/2 + 1.
    public var nBins: Int { nFFT / 2 + 1 }

    /// Frames for T samples: 1 + floor(T / hop).
    public func frames(forSamples t: Int) -> Int { 1 + t / hopLength }

    /// Throws if the parameters cannot describe a spectrogram.
    public func validate() throws {
        guard sampleRate > 0, nFFT >= 2, nFFT % 2 == 0, hopLength > 0, winLength > 0,
              winLength <= nFFT, nMels > 0, fmin >= 0, fmax > fmin,
              fmax <= Double(sampleRate) / 2 + 1e-9 else {
            throw WaveFlowError("invalid mel configuration: \(self)")
        }
    }
}
