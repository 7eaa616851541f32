import ArgumentParser
import Foundation
import WaveFlow

/// Options shared by the commands that load a model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Checkpoint (.safetensors). Default: Checkpoints/shipped/model.safetensors, else the newest latest.safetensors under Checkpoints/.")
    var checkpoint: String?

    func load() throws -> Checkpoint {
        guard let path = checkpoint ?? Checkpoint.defaultPath() else {
            throw WaveFlowError("no checkpoint given and none found under Checkpoints/ (use --checkpoint)")
        }
        return try Checkpoint.load(path)
    }
}

/// `waveflow synth MEL.npy OUT.wav` or `waveflow synth MELDIR OUTDIR`.
struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn mel spectrograms (.npy, [n_mels, frames]) into audio.",
        discussion: """
        With a folder, converts every .npy below it into OUTDIR (tree mirrored, .wav), loading \
        the model once; failures are listed at the end while the rest complete.
        """)

    @Argument(help: "A mel .npy file, or a folder of them.") var input: String
    @Argument(help: "The .wav to write, or the output folder.") var output: String
    @OptionGroup var model: ModelOptions
    @Option(help: "Temperature: standard deviation of the latent noise.") var sigma = Synth.defaultSigma
    @Option(help: "Seed of the latent noise.") var seed: UInt64 = 0
    @Option(help: "A fixed latent (.npy, frames*hop values) instead of random noise (single file only; not scaled by --sigma).")
    var noise: String?
    @Option(help: "Output sample format: pcm16 or float.") var format: String = "pcm16"
    @Flag(help: "The input is [frames, n_mels].") var transpose = false
    @Option(help: "Subtract this multiple of the model's bias spectrum (e.g. 0.01 to 0.1; 0 = off).") var denoise: Float = 0
    @OptionGroup var compute: ComputeOptions

    /// Chosen with `waveflow eval` (see README).
    static let defaultSigma = 0.9

    func validate() throws {
        guard SampleFormat(rawValue: format) != nil else { throw ValidationError("--format must be pcm16 or float") }
        try validateSigma(sigma)
        guard denoise >= 0 else { throw ValidationError("--denoise must be non-negative") }
    }

    func run() throws {
        var isFolder: ObjCBool = false
        let folder = FileManager.default.fileExists(atPath: input, isDirectory: &isFolder) && isFolder.boolValue
        var context = compute.apply(defaultPrecision: .auto)
        try runReportingErrors {
            let ck = try model.load()
            let files = folder ? listFiles(in: input) { $0.hasSuffix(".npy") } : []
            // A folder whose mels (4 bytes a value) add up to more frames than
            // WaveGlow's fold costs: fold once for all of them.
            if folder, compute.fold == nil, let breakEven = ck.model.foldBreakEvenFrames {
                let bytes = files.reduce(0) {
                    $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0)
                }
                if bytes / (4 * ck.config.nMels) >= breakEven { context = context.with(conditionFolding: .always) }
            }
            let synth = Synthesizer(model: ck.model, context: context)
            let denoiser = denoise > 0 ? try Denoiser(model: ck.model, context: context) : nil
            /// Synthesis followed by the optional denoiser.
            func vocode(_ mel: NPYArray, _ z: [Float]) throws -> [Float] {
                let audio = try synth.synthesise(mel: mel, z: z)
                return try denoiser?.apply(audio, strength: denoise) ?? audio
            }
            let fmt = SampleFormat(rawValue: format)!
            let rate = ck.config.sampleRate
            if folder {
                if noise != nil { throw WaveFlowError("--noise applies to a single file") }
                guard !files.isEmpty else { throw WaveFlowError("no .npy files found", path: input) }
                try makeDirectory(output)
                let progress = ProgressLine("synth", total: files.count, unit: "files")
                var failures = [String?](repeating: nil, count: files.count)
                var seconds = [Double](repeating: 0, count: files.count)
                let started = Date()
                failures.withUnsafeMutableBufferPointer { fp in
                    seconds.withUnsafeMutableBufferPointer { sp in
                        let (f, s) = (fp.baseAddress!, sp.baseAddress!)
                        // Files in parallel, one core each.
                        Threads.parallelFor(files.count) { i in
                            let path = files[i]
                            let target = (output as NSString).appendingPathComponent(relativePath(of: path, under: input, newExtension: "wav"))
                            do {
                                let mel = try synth.validated(try NPY.read(path), transpose: transpose)
                                let z = Synthesizer.noise(count: mel.shape[1] * ck.config.hopLength, sigma: sigma, seed: seed)
                                let audio = try vocode(mel, z)
                                try makeDirectory((target as NSString).deletingLastPathComponent)
                                try AudioFile.write(Audio(samples: audio, sampleRate: rate), to: target, format: fmt)
                                s[i] = Double(audio.count) / Double(rate)
                            } catch {
                                f[i] = error.describe(at: path)
                            }
                            progress.advance()
                        }
                    }
                }
                let elapsed = Date().timeIntervalSince(started)
                let audioSeconds = seconds.reduce(0, +)
                let failed = failures.compactMap { $0 }
                print("wrote \(files.count - failed.count) files (\(String(format: "%.1f", audioSeconds)) s of audio) in "
                      + "\(String(format: "%.1f", elapsed)) s: \(String(format: "%.2f", audioSeconds / max(elapsed, 1e-9)))x real time")
                if !failed.isEmpty {
                    for f in failed { logLine("waveflow: error: \(f)") }
                    logLine("waveflow: \(failed.count) file(s) failed")
                    throw ExitCode.failure
                }
            } else {
                try AtomicFile.checkDistinct(output: output, from: [input] + (noise.map { [$0] } ?? []))
                try AtomicFile.checkReplaceable(output)
                let mel: NPYArray
                do { mel = try synth.validated(try NPY.read(input), transpose: transpose) } catch let e as WaveFlowError { throw e.at(input) }
                let t = mel.shape[1] * ck.config.hopLength
                var z: [Float]
                if let noise {
                    z = try NPY.read(noise).values
                    guard z.count == t else { throw WaveFlowError("noise has \(z.count) values, frames*hop is \(t)", path: noise) }
                    if let i = z.firstIndex(where: { !$0.isFinite }) {
                        throw WaveFlowError("noise value \(i) is not finite", path: noise)
                    }
                } else {
                    z = Synthesizer.noise(count: t, sigma: sigma, seed: seed)
                }
                let started = Date()
                let audio = try vocode(mel, z)
                let elapsed = Date().timeIntervalSince(started)
                let clipped = try AudioFile.write(Audio(samples: audio, sampleRate: rate), to: output, format: fmt)
                let dur = Double(audio.count) / Double(rate)
                print("\(output): \(String(format: "%.2f", dur)) s of audio in \(String(format: "%.2f", elapsed)) s "
                      + "(real-time factor \(String(format: "%.2f", elapsed / dur)), \(context.precision.rawValue))" + (clipped > 0 ? ", \(clipped) samples clipped" : ""))
            }
        }
    }
}
