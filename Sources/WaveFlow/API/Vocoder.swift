import Foundation

/// A trained model ready to turn log-mel spectrograms into speech: the
/// library form of `waveflow synth` (and of `waveflow mel`, for copy
/// synthesis).
///
/// ```swift
/// let vocoder = try Vocoder(checkpoint: "Checkpoints/shipped/model.safetensors")
/// let mel = try vocoder.melSpectrogram(file: "speech.ogg")      // [n_mels, frames]
/// let audio = try vocoder.synthesise(mel: mel, sigma: 0.9, seed: 0)
/// try vocoder.write(audio, to: "out.wav")
/// ```
///
/// Every `synthesise` validates the mel exactly as the command line does
/// (same checks, same one-line `WaveFlowError` messages), draws the same
/// latent noise (``Synthesizer/noise(count:sigma:seed:)``) and applies the
/// same ``Denoiser``, so its audio is bit-identical to `waveflow synth` with
/// the same sigma, seed, denoise strength and precision, given the same
/// OpenBLAS kernel and thread count (see *Matching the command line*).
///
/// ## Precision
/// The matrix products run as the `context` given at `init` says (fp32 by
/// default in the library). `waveflow synth` defaults to `--precision auto`;
/// to get its default output, pass
/// `ComputeContext(precision: .automatic)`. The denoiser's bias spectrum is
/// estimated once, in that context, when it is first needed.
///
/// ## Matching the command line
/// The tool re-executes itself with a fast OpenBLAS kernel before it does
/// anything (``BLAS/ensureFastKernel(arguments:)``). Call it, and
/// ``configureAllocator()``, first thing in your program's `main` for the
/// same speed and the same kernel (hence the same bits: another kernel, or
/// another `Threads.count`, changes the last bits of the output);
/// `Threads.count` defaults to every core, as the tool's `--threads` does.
///
/// ## Not offered
/// Each `synthesise` call vocodes one whole mel and returns frames × hop
/// samples; ``synthesiseInChunks(mel:transpose:sigma:seed:denoise:chunkFrames:contextFrames:emit:)``
/// gives it piece by piece (an approximation unless the context covers the
/// mel). No fixed latent (`waveflow synth --noise`)
/// either; ``Synthesizer/synthesise(mel:z:)`` takes one.
///
/// ## Threads
/// One `Vocoder` may be used from several threads at once: after `init`
/// nothing in it is written except the denoiser, made once under a lock
/// (hence `@unchecked Sendable`; the model's weights and its per-flow
/// offsets are only read, and nothing the products use is process-wide).
public final class Vocoder: @unchecked Sendable {
    // Sendable by hand: `synthesizer`, `mel` and `config` are never mutated
    // after init (`MelSpectrogram.compute` is documented thread-safe, the
    // model's weights are only read by synthesis); `denoisers` is only
    // touched under `lock`.

    /// The `waveflow synth` default temperature (chosen with `waveflow eval`).
    public static let defaultSigma = 0.9

    /// The model's hyper-parameters (as stored in the checkpoint).
    public let config: ModelConfig
    let synthesizer: Synthesizer
    let mel: MelSpectrogram
    private let lock = NSLock()
    private var madeDenoiser: Denoiser?
    /// Precision, threads and block width of every synthesis.
    public let context: ComputeContext

    /// Loads and validates a checkpoint (`.safetensors`) completely, as
    /// `waveflow synth --checkpoint` does.
    /// - Throws: `WaveFlowError` naming the file.
    /// - Parameter context: precision and threads of synthesis (fp32 by default).
    public convenience init(checkpoint path: String, context: ComputeContext = .fp32) throws {
        try self.init(checkpoint: try Checkpoint.load(path), context: context)
    }

    /// A vocoder for a checkpoint already loaded (``Checkpoint/load(_:)``).
    /// - Throws: if the checkpoint's mel configuration is invalid (a loaded
    ///   checkpoint's never is).
    public init(checkpoint: Checkpoint, context: ComputeContext = .fp32) throws {
        config = checkpoint.config
        self.context = context
        synthesizer = Synthesizer(model: checkpoint.model, context: context)
        mel = try MelSpectrogram(config: checkpoint.config.mel)
    }

    /// Builds what synthesis keeps with the model now rather than in the
    /// first call (WaveGlow's folded projections, when the context's
    /// `conditionFolding` is `.always`): a service calls it before taking
    /// requests. Returns the megabytes kept (0: nothing to build).
    @discardableResult
    public func prepare() -> Double {
        synthesizer.model.prepareForSynthesis(context: context)
    }

    /// The audio sample rate in Hz (of the mels' source and of the output).
    public var sampleRate: Int { config.sampleRate }
    /// The feature configuration the model expects its mels in.
    public var melConfig: MelConfig { config.mel }
    /// Mel bands per frame (`n_mels`).
    public var bands: Int { config.nMels }
    /// Samples per mel frame: F frames give F × `hopLength` samples.
    public var hopLength: Int { config.hopLength }

    // MARK: - Features

    /// The log-mel spectrogram `[n_mels, frames]` of `samples` (mono, at
    /// ``sampleRate``), as `waveflow mel` computes it: frames = 1 + T / hop.
    /// - Throws: if the audio is too short for the reflect padding.
    public func melSpectrogram(of samples: [Float]) throws -> NPYArray {
        try mel.compute(samples)
    }

    /// The log-mel spectrogram of an audio file (channels averaged,
    /// resampled to ``sampleRate``): `waveflow mel FILE OUT.npy`.
    /// - Throws: `WaveFlowError` naming the file.
    public func melSpectrogram(file path: String) throws -> NPYArray {
        try mel.compute(file: path)
    }

    // MARK: - Synthesis

    /// Audio (frames × hop samples) from a log-mel spectrogram.
    /// - Parameters:
    ///   - mel: `[n_mels, frames]` (or `[frames, n_mels]` with `transpose`).
    ///   - transpose: the input is `[frames, n_mels]` (`--transpose`).
    ///   - sigma: temperature, the latent noise's standard deviation (`--sigma`).
    ///   - seed: seed of the latent noise (`--seed`).
    ///   - denoise: multiple of the model's bias spectrum to subtract (`--denoise`; 0 = off).
    /// - Throws: `WaveFlowError` with the command line's message for a mel
    ///   that is not 2-D, empty, of the wrong band count or not finite, and
    ///   for a negative or non-finite `sigma` or `denoise`.
    public func synthesise(mel: NPYArray, transpose: Bool = false, sigma: Double = Vocoder.defaultSigma,
                           seed: UInt64 = 0, denoise: Float = 0) throws -> [Float] {
        try check(sigma: sigma, denoise: denoise)
        return try vocode(try synthesizer.validated(mel, transpose: transpose), sigma: sigma, seed: seed, denoise: denoise)
    }

    /// Audio from a log-mel spectrogram given as rows: `mel[band][frame]`
    /// (or `mel[frame][band]` with `transpose`). Rows of unequal length are
    /// refused; otherwise as the `NPYArray` form of `synthesise(mel:)`.
    public func synthesise(mel rows: [[Float]], transpose: Bool = false, sigma: Double = Vocoder.defaultSigma,
                           seed: UInt64 = 0, denoise: Float = 0) throws -> [Float] {
        let columns = rows.first?.count ?? 0
        if let i = rows.firstIndex(where: { $0.count != columns }) {
            throw WaveFlowError("mel row \(i) has \(rows[i].count) values, row 0 has \(columns)")
        }
        return try synthesise(mel: NPYArray(shape: [rows.count, columns], values: rows.flatMap { $0 }),
                              transpose: transpose, sigma: sigma, seed: seed, denoise: denoise)
    }

    /// Audio from a mel `.npy` file: `waveflow synth MEL.npy OUT.wav` without
    /// the writing. Errors name the file, as the tool's do.
    public func synthesise(melFile path: String, transpose: Bool = false, sigma: Double = Vocoder.defaultSigma,
                           seed: UInt64 = 0, denoise: Float = 0) throws -> [Float] {
        try check(sigma: sigma, denoise: denoise)
        let m: NPYArray
        do { m = try synthesizer.validated(try NPY.read(path), transpose: transpose) } catch let e as WaveFlowError { throw e.at(path) }
        return try vocode(m, sigma: sigma, seed: seed, denoise: denoise)
    }

    /// The checks `synthesise` makes on a mel, on their own: 2-D, non-empty,
    /// the model's band count, finite (for a service that refuses a bad
    /// request before it queues it).
    /// - Returns: the mel as `[n_mels, frames]`.
    /// - Throws: `WaveFlowError` with the command line's one-line message.
    public func validated(mel: NPYArray, transpose: Bool = false) throws -> NPYArray {
        try synthesizer.validated(mel, transpose: transpose)
    }

    /// The option checks of `waveflow synth` (there done by the argument parser).
    func check(sigma: Double, denoise: Float) throws {
        guard Synthesizer.sigmaRange.contains(sigma) else {
            throw WaveFlowError("sigma must be non-negative, at most \(Synthesizer.sigmaRange.upperBound) (got \(sigma))")
        }
        guard denoise >= 0, denoise.isFinite else { throw WaveFlowError("denoise must be non-negative and finite (got \(denoise))") }
    }

    /// Synthesis of a validated mel followed by the optional denoiser: the
    /// steps of `waveflow synth`, in its order.
    func vocode(_ mel: NPYArray, sigma: Double, seed: UInt64, denoise: Float) throws -> [Float] {
        let z = Synthesizer.noise(count: mel.shape[1] * config.hopLength, sigma: sigma, seed: seed)
        let audio = try synthesizer.synthesise(mel: mel, z: z)
        guard denoise > 0 else { return audio }
        return try denoiser().apply(audio, strength: denoise)
    }

    /// The denoiser, made on first use (its bias estimate is one synthesis
    /// of a silent mel, in this vocoder's context).
    func denoiser() throws -> Denoiser {
        lock.lock()
        defer { lock.unlock() }
        if let d = madeDenoiser { return d }
        let d = try Denoiser(model: synthesizer.model, context: context)
        madeDenoiser = d
        return d
    }

    // MARK: - Output

    /// Writes `audio` at ``sampleRate`` as a mono WAV file, atomically
    /// (temporary file, then rename), as `waveflow synth` does: 16-bit PCM
    /// (`--format pcm16`, samples outside [-1, 1] clipped) or 32-bit float.
    /// - Returns: how many samples were clipped (always 0 for `.float`).
    /// - Throws: if `path` is a folder, a link or another non-regular file,
    ///   or cannot be written.
    @discardableResult
    public func write(_ audio: [Float], to path: String, format: SampleFormat = .pcm16) throws -> Int {
        try AtomicFile.checkReplaceable(path)
        return try AudioFile.write(Audio(samples: audio, sampleRate: sampleRate), to: path, format: format)
    }
}

extension Precision {
    /// What `--precision auto` picks on this machine (`AutoPrecisionChoice`):
    /// bf16 where oneDNN (libdnnl2) loads, the CPU runs bf16 products and
    /// they are faster here than fp32 (measured by `waveflow info --tune`,
    /// else judged from the CPU), else fp32.
    public static var automatic: Precision { AutoPrecisionChoice.current.precision }
}
