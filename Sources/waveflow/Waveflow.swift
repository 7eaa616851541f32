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

extension Precision: ExpressibleByArgument {}

/// Options every heavy command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads to use (default: all cores).")
    var threads: Int?

    @Option(help: "Matrix-product precision: fp32 (OpenBLAS, default) or bf16 (oneDNN, Float32 accumulation; needs libdnnl2 and a CPU with bf16).")
    var precision: Precision = .fp32

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if precision == .bf16, case .failure(let e) = OneDNN.shared { throw ValidationError("--precision bf16: \(e.message)") }
    }

    /// Applies the thread count to BLAS and our own loops; by default the
    /// machine's cores are shared among the job's ranks on it.
    func apply(ranksOnThisMachine: Int = 1) {
        Threads.count = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranksOnThisMachine))
        matrixPrecision = precision
    }
}

/// Runs `body`, turning an engine error into a one-line message and exit 1.
@discardableResult
func runReportingErrors<R>(_ body: () throws -> R) throws -> R {
    do {
        return try body()
    } catch let e as WaveFlowError {
        logLine("waveflow: error: \(e.description)")
        throw ExitCode.failure
    }
}
