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
    @Option(help: "Timed runs per row after one warm-up; the fastest is reported (more runs: steadier figures on a busy machine).")
    var repeats = 2
    @Option(help: "Comma-separated phases to time: train, synth (none: only --mel-audio/--layer).") var phases = "train,synth"
    @Flag(help: .hidden) var rowOnly = false
    @Flag(help: "Also time one residual layer at C=64, h=16, w=1024, B=2.") var layer = false
    @Option(help: "Also time the mel front end on this audio file (1 thread and all threads).") var melAudio: String?
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        for phase in phases.split(separator: ",") where !["train", "synth", "none"].contains(phase) {
            throw ValidationError("unknown phase \(phase) (train, synth, none)")
        }
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
    }

    func run() throws {
        let context = compute.apply(defaultFolding: .always)
        try runReportingErrors {
            var melRow: String?
            let cpu = CPUInfo.current
            print("CPU \(cpu.modelName) (family \(cpu.family), model \(cpu.model)); \(cpu.notableFeatures.joined(separator: " "))")
            print("caches \(CPUCaches.current.description); elementwise \(VectorKernels.level.rawValue); "
                  + "synthesis blocks of \(context.synthesisBlockColumns) columns (\(BlockColumnsChoice.current.source))")
            print("BLAS core \(BLAS.coreName), \(Threads.count) threads; Winograd \(context.widthWinograd.rawValue) "
                  + "(fp32 WaveFlow and WaveGlow convolutions; GFLOP/s counts the multiply-adds performed)")
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
                    melRow = Self.presetCell("(front end)") + String(format: "fp32      mel    %9.0f  %6.4f        -       -  %7.0f",
                                    Double(audio.samples.count) / s, s / audio.duration, Benchmark.peakMemoryMB)
                }
                Threads.count = all
            }
            if layer {
                let sg = Benchmark.sgemmRate(channels: 64, n: 2 * 15 * 1024, precision: context.precision)
                let r = Benchmark.residualLayer(channels: 64, h: 16, width: 1024, batch: 2, context: context)
                let f = 2 * r.macs / r.forward / 1e9, b = 2 * 2 * r.macs / r.backward / 1e9
                print(String(format: "residual layer C=64 h=16 w=1024 B=2: forward %.2f ms (%.1f GFLOP/s, %.0f%% of sgemm %.1f), backward %.2f ms (%.1f GFLOP/s, %.0f%%)",
                             r.forward * 1e3, f, 100 * f / sg, sg, r.backward * 1e3, b, 100 * b / sg))
            }
            let wanted = phases.split(separator: ",").map(String.init).filter { $0 != "none" }
            if !rowOnly { print(Self.presetCell("preset") + "precision phase  samples/s  RTF     GFLOP/s  %sgemm  peak MB  (KB/sample)") }
            if let melRow { print(melRow) }
            if wanted.isEmpty { return }
            let names = presets.split(separator: ",").map(String.init)
            for name in names { _ = try ModelConfig.named(name) }
            if rowOnly || (names.count == 1 && wanted.count == 1) {
                for name in names { for phase in wanted { try measureRow(name, phase, context) } }
                return
            }
            // Each row in a fresh process, so that its peak memory is its own.
            for name in names {
                for phase in wanted {
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
                    var args = ["bench", "--row-only", "--presets", name, "--phases", phase, "--batch", String(batch),
                                "--segment", String(segment), "--seconds", String(seconds), "--repeats", String(repeats)]
                    if let t = compute.threads { args += ["--threads", String(t)] }
                    args += ["--precision", context.precision.rawValue, "--fold", context.conditionFolding.rawValue,
                             "--winograd", context.widthWinograd.rawValue]
                    p.arguments = args
                    let out = Pipe()
                    p.standardOutput = out
                    try p.run()
                    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    p.waitUntilExit()
                    guard p.terminationStatus == 0 else { throw WaveFlowError("bench of \(name) \(phase) failed") }
                    let rows = text.split(separator: "\n").filter { $0.hasPrefix(Self.presetCell(name)) }
                    guard !rows.isEmpty else { throw WaveFlowError("bench of \(name) \(phase) printed no row") }
                    for line in rows { print(line) }
                }
            }
        }
    }

    /// Measures one row of the table in this process.
    func measureRow(_ name: String, _ phase: String, _ context: ComputeContext) throws {
        let cfg = try ModelConfig.named(name)
        // This machine's speed drifts: the sgemm rate is measured before and
        // after the phase and the higher taken (a conservative percentage).
        let sgemmColumns = batch * (segment / cfg.nGroup) * (cfg.family == "waveflow" ? cfg.nGroup - 1 : 1)
        let before = Benchmark.sgemmRate(cfg, columns: sgemmColumns, precision: context.precision)
        var sg: Double { max(before, Benchmark.sgemmRate(cfg, columns: sgemmColumns, precision: context.precision)) }
        switch phase {
        case "train":
            let tr = Benchmark.training(cfg, batch: batch, segment: segment, repeats: repeats, context: context)
            print(row(name, context, "train", tr.samplesPerSecond, Double(cfg.sampleRate) / tr.samplesPerSecond, tr.gflops, sg,
                      perSample: Benchmark.peakMemoryMB * 1024 / Double(batch * segment)))
        case "synth":
            let sy = Benchmark.synthesis(cfg, seconds: seconds, repeats: repeats, context: context)
            print(row(name, context, "synth", sy.samplesPerSecond, Double(cfg.sampleRate) / sy.samplesPerSecond, sy.gflops, sg, perSample: nil)
                  + (sy.foldSeconds.map { String(format: "  folded (built in %.2f s)", $0) } ?? ""))
        default:
            throw ValidationError("unknown phase \(phase) (train, synth)")
        }
    }

    /// The table's first cell: the preset's whole name (the longest, such as
    /// lpc-h128-c32, fit), then at least one space.
    static func presetCell(_ name: String) -> String {
        name.count >= 13 ? name + " " : name.padding(toLength: 13, withPad: " ", startingAt: 0)
    }

    func row(_ preset: String, _ context: ComputeContext, _ phase: String, _ sps: Double, _ rtf: Double, _ gf: Double, _ sg: Double, perSample: Double?) -> String {
        Self.presetCell(preset) + String(format: "%@      %@  %9.0f  %6.3f  %7.1f  %5.0f%%  %7.0f", context.precision.rawValue, phase, sps, rtf, gf, 100 * gf / sg, Benchmark.peakMemoryMB)
            + (perSample.map { String(format: "  (%.0f)", $0) } ?? "")
    }
}
