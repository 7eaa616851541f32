import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow info`: versions, BLAS kernel, threads, CPU; optionally sgemm speed.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show versions, the BLAS kernel in use, threads and CPU features.")

    @OptionGroup var compute: ComputeOptions

    @Flag(help: "Also measure sgemm GFLOP/s at 128x576x16384 on 1 thread and on all threads.")
    var measure = false

    @Flag(help: ArgumentHelp("Measure synthesis in fp32 and bf16 (what --precision auto runs) and at each block width; keep the fastest for this machine.",
                             discussion: "Takes about two minutes (8 s of audio, best of 2, per precision and width). The result goes to $XDG_CACHE_HOME/waveflow/tuning.json (~/.cache/...), keyed by CPU model, features, L2 and cores; later runs on this machine use it (WAVEFLOW_BLOCK_COLUMNS still overrides). Run it on a quiet machine."))
    var tune = false

    @Option(help: "Print the size of presets (comma-separated) or a JSON config file instead.")
    var config: String?

    func run() throws {
        compute.apply()
        if let config {
            try runReportingErrors {
                let names = FileManager.default.fileExists(atPath: config) ? [config] : config.split(separator: ",").map(String.init)
                for (i, name) in names.enumerated() {
                    let c = try ModelConfig.named(name)
                    if i > 0 { print("") }
                    if names.count > 1 { print("preset        \(name)") }
                    print("config        \(c.json)")
                    print("parameters    \(c.parameterCount) (\(String(format: "%.2f", Double(c.parameterCount) * 4 / 1e6)) MB as F32)")
                    let perRow = c.family == "waveflow"
                        ? "\(String(format: "%.3f", Double(c.macsPerPosition) / 1e6)) M per predicted row position, " : ""
                    print("multiply-adds \(perRow)\(String(format: "%.3f", c.macsPerSample / 1e6)) M per audio sample")
                    let blockColumns = c.family == "waveglow"
                        ? WaveGlowCoupling<Float>.longestBlock(layers: c.nLayers, preferred: ComputeContext.defaultSynthesisBlockColumns)
                        : ComputeContext.defaultSynthesisBlockColumns
                    if let synth = c.winogradMacsPerSample(columns: blockColumns),
                       let train = c.winogradMacsPerSample(columns: TrainOptions().segment / c.nGroup) {
                        if c.family == "waveglow" { // what it saves, folded or not
                            let performed = c.performedMacsPerSample
                            print(String(format: "winograd      %.3f M per sample fewer with fp32 products in synthesis (%d-column blocks), "
                                         + "%.3f M in training (%d-sample segments): the dilated taps by F(4,3)", (performed - synth) / 1e6,
                                         blockColumns, (performed - train) / 1e6, TrainOptions().segment))
                        } else {
                            print(String(format: "winograd      %.3f M per sample performed in fp32 synthesis (%d-column blocks), %.3f M in "
                                         + "training (%d-sample segments): the width taps by F(4,3)", synth / 1e6, blockColumns, train / 1e6,
                                         TrainOptions().segment))
                        }
                    }
                    if c.family == "waveglow" {
                        let fold = ConditionFoldSize(waveGlow: c)
                        if fold.applies {
                            print(String(format: "folded        %.3f M per sample in synthesis (--fold); the fold: %.0f MB, %.1f G multiply-adds, "
                                         + "paid back after %.1f s of audio", (c.macsPerSample - fold.savedMacsPerSample) / 1e6,
                                         Double(fold.bytes) / 1e6, fold.buildMacs / 1e9,
                                         Double(fold.breakEvenFrames * c.hopLength) / Double(c.sampleRate)))
                        } else {
                            print("folded        not folded (\(fold.bytes > ConditionFoldSize.memoryLimit ? "\(fold.bytes / 1_000_000) MB, over the \(ConditionFoldSize.memoryLimit >> 20) MB limit" : "nothing to save"))")
                        }
                    }
                }
            }
            return
        }
        if tune {
            try runReportingErrors {
                let context = compute.apply(defaultPrecision: .fp32)
                var announced = false
                let tuning = try MachineTuning.measure(context: context, progressPrecision: { p, rate in
                    if !announced {
                        print("measuring synthesis of h16-c64 (\(context.threads) threads) in each precision, for --precision auto:")
                        announced = true
                    }
                    print("  \(p.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0))  " + String(format: "%9.0f samples/s", rate))
                }, progress: { columns, rate in
                    if columns == MachineTuning.candidateBlockColumns[0] {
                        print("measuring synthesis of h16-c64 at each block width:")
                    }
                    print(String(format: "  %5d columns  %9.0f samples/s", columns, rate))
                })
                if let p = tuning.autoPrecision { print("auto precision: \(p)") }
                let path = MachineTuning.defaultPath()
                try tuning.save(to: path)
                print("chosen: \(tuning.synthesisBlockColumns) columns (the L2 rule's \(ComputeContext.blockColumns(forL2: CPUCaches.current.l2)) "
                      + "unless another is at least \(Int(MachineTuning.margin * 100))% faster); saved \(path)")
            }
            return
        }
        for (k, v) in machineReport() {
            print("\(k.padding(toLength: 13, withPad: " ", startingAt: 0)) \(v)")
        }
        if measure {
            let one = measureSgemm(m: 128, k: 576, n: 16384, threads: 1)
            print("sgemm 128x576x16384, 1 thread: \(String(format: "%.1f", one)) GFLOP/s")
            let all = measureSgemm(m: 128, k: 576, n: 16384, threads: Threads.count)
            print("sgemm 128x576x16384, \(Threads.count) threads: \(String(format: "%.1f", all)) GFLOP/s")
        }
    }
}
