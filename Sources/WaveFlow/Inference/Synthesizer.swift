import Foundation

/// Mel spectrogram -> waveform with a trained model: input checks, the
/// latent noise, the inverse flow.
public struct Synthesizer {
    public let model: FlowModel<Float>
    /// Precision, threads and block width of the inverse flow.
    public let context: ComputeContext

    public init(model: FlowModel<Float>, context: ComputeContext) {
        self.model = model
        self.context = context
    }

    /// Checks a mel read from a file: 2-D, `[n_mels, frames]` (or
    /// `[frames, n_mels]` with `transpose`), the model's band count, finite.
    /// - Returns: the mel as `[n_mels, frames]`.
    public func validated(_ mel: NPYArray, transpose: Bool) throws -> NPYArray {
        guard mel.shape.count == 2 else { throw WaveFlowError("expected a 2-D mel array, found shape \(mel.shape)") }
        let m = transpose ? mel.transposed() : mel
        let bands = model.config.nMels
        guard m.shape[1] > 0, m.shape[0] > 0 else { throw WaveFlowError("mel array is empty (shape \(mel.shape))") }
        guard m.shape[0] == bands else {
            var hint = ""
            if m.shape[1] == bands { hint = transpose ? " (it looks like [n_mels, frames]: drop --transpose)" : " (it looks like [frames, n_mels]: use --transpose)" }
            throw WaveFlowError("mel has \(m.shape[0]) bands, the model expects \(bands)\(hint)")
        }
        if let i = m.values.firstIndex(where: { !$0.isFinite }) {
            throw WaveFlowError("mel value \(i) (band \(i / m.shape[1]), frame \(i % m.shape[1])) is not finite")
        }
        return m
    }

    /// Temperatures accepted (1 is the trained distribution; far above it
    /// every sample clips, so a larger value is taken for a typo).
    public static let sigmaRange: ClosedRange<Double> = 0...10

    /// Latent z ~ N(0, sigma^2) of `count` samples from `seed` (SplitMix64 +
    /// Box-Muller: the same numbers on every machine).
    public static func noise(count: Int, sigma: Double, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float(sigma * rng.normal()) }
    }

    /// Audio of frames*hop samples from mel `[n_mels, frames]` and latent z
    /// (frames*hop values; already scaled by the temperature).
    public func synthesise(mel: NPYArray, z: [Float]) throws -> [Float] {
        let frames = mel.shape[1], t = frames * model.config.hopLength
        guard z.count == t else { throw WaveFlowError("noise has \(z.count) samples, frames*hop is \(t)") }
        return model.synthesise(mel: mel.values, frames: frames, z: z, context: context)
    }
}
