import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow stream-check AUDIO...` (hidden): how far chunked synthesis with
/// bounded context is from whole-utterance synthesis, per context length,
/// for the `serve` streaming decision (BENCHMARKS.md).
struct StreamCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream-check",
        abstract: "Error of chunked synthesis (bounded context) against whole-utterance synthesis, in dB.",
        shouldDisplay: false)

    @Argument(help: "Audio files (their mels are vocoded) or mel .npy files.") var inputs: [String]
    @OptionGroup var model: ModelOptions
    @Option(help: "Mel frames per chunk.") var chunk = 64
    @Option(help: "Comma-separated context lengths (frames either side).") var contexts = "0,2,4,8,16,32,64"
    @Option(help: "Temperature.") var sigma = Synth.defaultSigma
    @Option(help: "Seconds of each input used (from its start; 0: all).") var seconds = 4.0
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        let context = compute.apply(defaultPrecision: .auto)
        try runReportingErrors {
            let vocoder = try Vocoder(checkpoint: try model.load(), context: context)
            let list = contexts.split(separator: ",").compactMap { Int($0) }
            print("chunk \(chunk) frames (\(String(format: "%.2f", Double(chunk * vocoder.hopLength) / Double(vocoder.sampleRate))) s), "
                  + "sigma \(sigma), \(context.effectivePrecision.rawValue), \(context.threads) thread(s); "
                  + "error = 20 log10(rms(chunked - whole) / rms(whole)), worst and mean over the inputs")
            var errors = [[Double]](repeating: [], count: list.count)
            for path in inputs {
                var mel = path.hasSuffix(".npy") ? try NPY.read(path) : try vocoder.melSpectrogram(file: path)
                let frames = seconds > 0 ? min(mel.shape[1], Int(seconds * Double(vocoder.sampleRate)) / vocoder.hopLength) : mel.shape[1]
                var v = [Float]()
                for b in 0..<mel.shape[0] { v += mel.values[b * mel.shape[1] ..< b * mel.shape[1] + frames] }
                mel = NPYArray(shape: [mel.shape[0], frames], values: v)
                let whole = try vocoder.synthesise(mel: mel, sigma: sigma)
                let power = whole.reduce(0.0) { $0 + Double($1) * Double($1) }
                for (i, c) in list.enumerated() {
                    var chunked = [Float]()
                    try vocoder.synthesiseInChunks(mel: mel, sigma: sigma, chunkFrames: chunk, contextFrames: c) { chunked += $0 }
                    let diff = zip(chunked, whole).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
                    let db = diff == 0 ? -Double.infinity : 10 * log10(diff / max(power, 1e-30))
                    errors[i].append(db)
                }
                print("\(path): \(frames) frames")
            }
            print("| context (frames) | context (s) | worst error (dB) | mean error (dB) |")
            print("| --- | --- | --- | --- |")
            for (i, c) in list.enumerated() {
                let worst = errors[i].max() ?? 0
                let finite = errors[i].filter(\.isFinite)
                let mean = finite.isEmpty ? -Double.infinity : finite.reduce(0, +) / Double(finite.count)
                print("| \(c) | \(String(format: "%.2f", Double(c * vocoder.hopLength) / Double(vocoder.sampleRate))) | "
                      + "\(worst.isFinite ? String(format: "%.1f", worst) : "exact") | \(mean.isFinite ? String(format: "%.1f", mean) : "exact") |")
            }
        }
    }
}
