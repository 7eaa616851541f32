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

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
    }

    /// Applies the thread count to BLAS and our own loops; by default the
    /// machine's cores are shared among the job's ranks on it.
    func apply(ranksOnThisMachine: Int = 1) {
        Threads.count = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranksOnThisMachine))
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
