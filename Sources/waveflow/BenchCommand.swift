import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow bench`: the speed table of BENCHMARKS.md.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training and synthesis speed against this machine's sgemm rate (use a release build).")

    @Option(help: "Comma-separated presets.") var presets = "h16-c64,h16-c32"
    @Option(help: "Training batch.") var batch = 2
    @Option(help: "Training segment, samples.") var segment = 16384
    @Option(help: "Seconds of audio to synthesise.") var seconds = 2.0
    @Option(help: "Comma-separated phases to time: train, synth.") var phases = "train,synth"
    @Flag(help: "Also time one residual layer at C=64, h=16, w=1024, B=2.") var layer = false
    @Option(help: "Also time the mel front end on this audio file (1 thread and all threads).") var melAudio: String?
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        compute.apply()
        try runReportingErrors {
            print("BLAS core \(BLAS.coreName), \(Threads.count) threads")
            if let melAudio {
                let audio = try AudioFile.read(melAudio, sampleRate: 22050)
                let spec = try MelSpectrogram()
                let all = Threads.count
                for t in Set([1, all]).sorted() {
                    Threads.count = t
                    // Best of about one second of repeats (a 30 s clip takes a few ms).
                    let once = Benchmark.time(repeats: 1) { _ = try? spec.compute(audio.samples) }
                    let s = Benchmark.time(repeats: max(5, Int(1 / max(once, 1e-4)))) { _ = try? spec.compute(audio.samples) }
                    print(String(format: "mel, %d thread(s): %.1f s of audio in %.2f ms: %.0f s of audio per second",
                                 t, audio.duration, s * 1e3, audio.duration / s))
                }
                Threads.count = all
            }
            if layer {
                let sg = Benchmark.sgemmRate(channels: 64, n: 2 * 15 * 1024)
                let r = Benchmark.residualLayer(channels: 64, h: 16, width: 1024, batch: 2)
                let f = 2 * r.macs / r.forward / 1e9, b = 2 * 2 * r.macs / r.backward / 1e9
                print(String(format: "residual layer C=64 h=16 w=1024 B=2: forward %.2f ms (%.1f GFLOP/s, %.0f%% of sgemm %.1f), backward %.2f ms (%.1f GFLOP/s, %.0f%%)",
                             r.forward * 1e3, f, 100 * f / sg, sg, r.backward * 1e3, b, 100 * b / sg))
            }
            print("preset      precision phase  samples/s  RTF     GFLOP/s  %sgemm  peak MB")
            for name in presets.split(separator: ",").map(String.init) {
                let cfg = try ModelConfig.named(name)
                let sg = Benchmark.sgemmRate(channels: cfg.channels, n: batch * (segment / cfg.nGroup) * (cfg.nGroup - 1))
                let wanted = Set(phases.split(separator: ",").map(String.init))
                if wanted.contains("train") {
                    let tr = Benchmark.training(cfg, batch: batch, segment: segment)
                    print(row(name, "train", tr.samplesPerSecond, Double(cfg.sampleRate) / tr.samplesPerSecond, tr.gflops, sg))
                }
                if wanted.contains("synth") {
                    let sy = Benchmark.synthesis(cfg, seconds: seconds)
                    print(row(name, "synth", sy.samplesPerSecond, Double(cfg.sampleRate) / sy.samplesPerSecond, sy.gflops, sg))
                }
            }
        }
    }

    func row(_ preset: String, _ phase: String, _ sps: Double, _ rtf: Double, _ gf: Double, _ sg: Double) -> String {
        String(format: "%@ fp32      %@  %9.0f  %6.3f  %7.1f  %5.0f%%  %7.0f",
               preset.padding(toLength: 11, withPad: " ", startingAt: 0), phase, sps, rtf, gf, 100 * gf / sg, Benchmark.peakMemoryMB)
    }
}
