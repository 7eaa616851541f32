import ArgumentParser
import Foundation
import WaveFlow

/// The root command: lists the subcommands.
struct Waveflow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waveflow",
        abstract: "A WaveFlow neural vocoder: learn from recordings, turn mel spectrograms into speech.",
        version: waveflowVersion,
        subcommands: [Info.self, Mel.self, Train.self, Score.self, Synth.self, Eval.self, Export.self, Bench.self]
    )
}

/// Options every heavy command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads to use (default: all cores).")
    var threads: Int?

    @Option(help: "Matrix-product precision: fp32 (OpenBLAS, default) or bf16 (oneDNN, Float32 accumulation; needs libdnnl2 and a CPU with bf16).")
    var precision: String = "fp32"

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        guard let p = Precision(rawValue: precision) else { throw ValidationError("--precision must be fp32 or bf16") }
        if p == .bf16, case .failure(let e) = OneDNN.shared { throw ValidationError("--precision bf16: \(e.message)") }
    }

    /// Applies the thread count to BLAS and our own loops; by default the
    /// machine's cores are shared among the job's ranks on it.
    func apply(ranksOnThisMachine: Int = 1) {
        Threads.count = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranksOnThisMachine))
        matrixPrecision = Precision(rawValue: precision) ?? .fp32
    }
}

/// Runs `body`, turning an engine error into a one-line message and exit 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as WaveFlowError {
        logLine("waveflow: error: \(e.description)")
        throw ExitCode.failure
    }
}
