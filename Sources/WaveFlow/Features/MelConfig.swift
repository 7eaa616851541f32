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

    /// Throws if the parameters cannot describe a spectrogram, naming the
    /// first value that is wrong.
    public func validate() throws {
        func bad(_ m: String) -> WaveFlowError { WaveFlowError("invalid mel configuration: \(m)") }
        guard (1...768_000).contains(sampleRate) else { throw bad("sample_rate \(sampleRate) must be 1 to 768000") }
        guard (2...65536).contains(nFFT), nFFT % 2 == 0 else { throw bad("n_fft \(nFFT) must be even, 2 to 65536") }
        guard (1...nFFT).contains(hopLength) else { throw bad("hop_length \(hopLength) must be 1 to n_fft (\(nFFT))") }
        guard (1...nFFT).contains(winLength) else { throw bad("win_length \(winLength) must be 1 to n_fft (\(nFFT))") }
        guard (1...1024).contains(nMels) else { throw bad("n_mels \(nMels) must be 1 to 1024") }
        guard fmin.isFinite, fmin >= 0 else { throw bad("fmin \(fmin) must be at least 0") }
        guard fmax.isFinite, fmax > fmin else { throw bad("fmax \(fmax) must be above fmin (\(fmin))") }
        guard fmax <= Double(sampleRate) / 2 + 1e-9 else { throw bad("fmax \(fmax) must be at most sample_rate / 2 (\(Double(sampleRate) / 2))") }
    }
}
