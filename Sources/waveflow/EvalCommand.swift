import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow eval CHECKPOINT AUDIO...`: NLL and copy-synthesis quality.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score files and measure copy-synthesis quality (audio -> mel -> audio -> mel).")

    @Argument(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Argument(help: "Audio files (or one folder).") var audio: [String]
    @Option(help: "Temperature of the synthesis.") var sigma = Synth.defaultSigma
    @Option(help: "Seed of the latent noise.") var seed: UInt64 = 0
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        compute.apply(defaultPrecision: .auto)
        try runReportingErrors {
            let ck = try Checkpoint.load(checkpoint)
            var files = audio
            var isDir: ObjCBool = false
            if audio.count == 1, FileManager.default.fileExists(atPath: audio[0], isDirectory: &isDir), isDir.boolValue {
                files = try AudioFile.list(in: audio[0])
            }
            print("file\tnll\tmel_l1\tmr_stft\trtf")
            var results: [EvaluationResult] = []
            var failed = 0
            for f in files {
                do {
                    let r = try Evaluator.evaluate(file: f, model: ck.model, sigma: sigma, seed: seed)
                    results.append(r)
                    print(String(format: "%@\t%.4f\t%.4f\t%.4f\t%.3f", f, r.nll, r.melDistance, r.stftDistance, r.realTimeFactor))
                } catch {
                    failed += 1
                    logLine("waveflow: error: \(error.describe(at: f))")
                }
            }
            if !results.isEmpty {
                let n = Double(results.count)
                print(String(format: "mean (%d files, sigma %.2f)\t%.4f\t%.4f\t%.4f\t%.3f", results.count, sigma,
                             results.map(\.nll).reduce(0, +) / n, results.map(\.melDistance).reduce(0, +) / n,
                             results.map(\.stftDistance).reduce(0, +) / n, results.map(\.realTimeFactor).reduce(0, +) / n))
            }
            if failed > 0 { throw ExitCode.failure }
        }
    }
}

/// `waveflow export CHECKPOINT OUT`: an inference-only copy (no `train.*`).
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write an inference-only copy of a checkpoint (training state removed).")

    @Argument(help: "Checkpoint to read.") var checkpoint: String
    @Argument(help: "File to write.") var output: String

    func run() throws {
        try runReportingErrors {
            let ck = try Checkpoint.load(checkpoint)
            var extra = ck.configJSON
            extra.removeValue(forKey: "training")
            try Checkpoint.save(model: ck.model, extra: extra, to: output)
            let size = ((try? FileManager.default.attributesOfItem(atPath: output))?[.size] as? Int) ?? 0
            print("\(output): \(ck.config.parameterCount) parameters, \(size) bytes")
        }
    }
}
