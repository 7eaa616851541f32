import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow eval CHECKPOINT AUDIO...`: NLL and copy-synthesis quality
/// beside the no-learning baselines.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score files and measure copy-synthesis quality (audio -> mel -> audio) beside two baselines.",
        discussion: """
            For each file: the NLL (nats/sample); then, for the model's copy synthesis and for two \
            vocoders with no learning computed from the same mel (noise-excited LPC of order 16, \
            Griffin-Lim with 32 iterations): mel_l1 (mean |log-mel difference|), lsd8k (multi-resolution \
            STFT log-magnitude distance up to 8 kHz, FFT 512/1024/2048, hop n/4), mr_stft (spectral \
            convergence + log-magnitude over all bins), rms (RMS ratio to the original); rtf is the \
            model's real-time factor. --report DIR writes an HTML page with spectrograms and players.
            """)

    @Argument(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Argument(help: "Audio files (or one folder).") var audio: [String]
    @Option(help: "Temperature of the synthesis.") var sigma = Synth.defaultSigma
    @Option(help: "Seed of the latent noise (and of the baselines' noise and phase).") var seed: UInt64 = 0
    @Option(help: "Write report.html, spectrogram PNGs and WAVs to this folder.") var report: String?
    @Flag(inversion: .prefixedNo, help: "Also score the two baselines (--no-baselines: the model only, faster).")
    var baselines = true
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try validateSigma(sigma)
    }

    func run() throws {
        let context = compute.apply(defaultPrecision: .auto)
        try runReportingErrors {
            let ck = try Checkpoint.load(checkpoint)
            var files = audio
            var isDir: ObjCBool = false
            if audio.count == 1, FileManager.default.fileExists(atPath: audio[0], isDirectory: &isDir), isDir.boolValue {
                files = try AudioFile.list(in: audio[0])
            }
            if let report { try makeDirectory(report) }
            print("file\tnll\tmel_l1\tlsd8k\tmr_stft\trms\trtf\tlpc_mel_l1\tlpc_lsd8k\tlpc_rms\tgl_mel_l1\tgl_lsd8k\tgl_rms")
            var results: [EvaluationResult] = []
            var failed = 0
            for f in files {
                do {
                    var r = try Evaluator.evaluate(file: f, model: ck.model, context: context, sigma: sigma, seed: seed, baselines: baselines,
                                                   keepAudio: report != nil)
                    print(String(format: "%@\t%.4f\t%.4f\t%.4f\t%.4f\t%.3f\t%.3f\t%.4f\t%.4f\t%.3f\t%.4f\t%.4f\t%.3f", f, r.nll,
                                 r.model.melDistance, r.model.logSpectralDistance, r.model.stftDistance, r.model.rmsRatio,
                                 r.realTimeFactor, r.lpc.melDistance, r.lpc.logSpectralDistance, r.lpc.rmsRatio,
                                 r.griffinLim.melDistance, r.griffinLim.logSpectralDistance, r.griffinLim.rmsRatio))
                    if let report {
                        try EvaluationReport.writeFiles(for: r, index: results.count, config: ck.config, to: report)
                        r.audio = [:]
                    }
                    results.append(r)
                } catch {
                    failed += 1
                    logLine("waveflow: error: \(error.describe(at: f))")
                }
            }
            if !results.isEmpty {
                let n = Double(results.count)
                func mean(_ k: (EvaluationResult) -> Double) -> Double { results.map(k).reduce(0, +) / n }
                print(String(format: "mean (%d files, sigma %.2f)\t%.4f\t%.4f\t%.4f\t%.4f\t%.3f\t%.3f\t%.4f\t%.4f\t%.3f\t%.4f\t%.4f\t%.3f",
                             results.count, sigma, mean(\.nll), mean(\.model.melDistance), mean(\.model.logSpectralDistance),
                             mean(\.model.stftDistance), mean(\.model.rmsRatio), mean(\.realTimeFactor),
                             mean(\.lpc.melDistance), mean(\.lpc.logSpectralDistance), mean(\.lpc.rmsRatio),
                             mean(\.griffinLim.melDistance), mean(\.griffinLim.logSpectralDistance), mean(\.griffinLim.rmsRatio)))
                print("")
                print("system\tmel_l1\tlsd8k\tmr_stft\trms")
                // With --no-baselines their columns above are nan; the summary leaves them out.
                let systems = [("model", \EvaluationResult.model), ("noise-excited LPC", \EvaluationResult.lpc),
                               ("Griffin-Lim 32", \EvaluationResult.griffinLim)]
                for (name, k) in systems.prefix(baselines ? 3 : 1) {
                    print(String(format: "%@\t%.4f\t%.4f\t%.4f\t%.3f", name, mean { $0[keyPath: k].melDistance },
                                 mean { $0[keyPath: k].logSpectralDistance }, mean { $0[keyPath: k].stftDistance },
                                 mean { $0[keyPath: k].rmsRatio }))
                }
                if let report {
                    let page = try EvaluationReport.writePage(results, checkpoint: checkpoint, sigma: sigma, to: report)
                    logLine("wrote \(page)")
                }
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
