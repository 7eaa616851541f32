import ArgumentParser
import Foundation
import WaveFlow

/// The root command: lists the subcommands.
struct Waveflow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waveflow",
        abstract: "A WaveFlow neural vocoder: learn from recordings, turn mel spectrograms into speech.",
        version: waveflowVersion,
        subcommands: [Info.self, Mel.self, Train.self, Score.self, Synth.self, Eval.self, Export.self, Import.self, Bench.self,
                      Serve.self, ServeBench.self, StreamCheck.self]
    )
}

extension Waveflow {
    /// Parses `args` and runs the command: what `AsyncParsableCommand.main`
    /// does (`serve` is async; the other commands run synchronously as before).
    static func start(_ args: [String]) async {
        do {
            var command = try parseAsRoot(args)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// The `--sigma` check `synth` and `eval` share.
func validateSigma(_ sigma: Double) throws {
    guard Synthesizer.sigmaRange.contains(sigma) else {
        throw ValidationError("--sigma must be from \(Synthesizer.sigmaRange.lowerBound) to \(Synthesizer.sigmaRange.upperBound), not \(sigma)")
    }
}

/// `--precision`: a precision, or `auto` (`Precision.automatic`: bf16 where it is available and pays, else fp32).
enum PrecisionChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, fp32, bf16
}

/// Options every heavy command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads to use (default: all cores).")
    var threads: Int?

    @Option(help: ArgumentHelp("Matrix-product precision: auto, fp32 or bf16 (default: auto for train, synth and eval; fp32 for score, bench and mel).",
                               discussion: "fp32: Float32 on OpenBLAS, the reference (training's weight gradients on oneDNN's f32 matmul where oneDNN loads: same precision, faster here). bf16: bf16 operands with Float32 accumulation on oneDNN (needs Debian's libdnnl2 and a CPU with AVX-512 BF16 or AMX). auto: bf16 where available and faster than fp32 on this CPU (measured by waveflow info --tune, else judged from the CPU: AMX or AMD's AVX-512 BF16; `waveflow info` says which), else fp32."))
    var precision: PrecisionChoice?

    @Option(help: ArgumentHelp("WaveGlow synthesis: fold the upsampler into the condition projections: auto, always or never (default: always for bench, serve and a folder of mels long enough to pay for it; auto otherwise).",
                               discussion: "Folding halves the projections' multiply-adds and drops the upsampler, for a one-time cost of about 7 s of audio's synthesis and memory (252 MB for wg-c32; never over 1 GB). auto: only for an utterance long enough to pay for it. Same audio up to float rounding."))
    var fold: ConditionFolding?

    @Option(help: ArgumentHelp("With fp32 products (synthesis and training): the width taps of WaveFlow's 3x3 and WaveGlow's dilated convolutions by Winograd's F(4,3): auto, always or never (default: auto).",
                               discussion: "Half the convolutions' multiply-adds; the same numbers up to float rounding. auto: every layer whose dilation fits the synthesis column blocks (at most 60% of a block's outputs computed past its end) or the training rows. bf16 products never use it. never: the direct sums."))
    var winograd: WinogradPolicy?

    func validate() throws {
        if let t = threads, !(1...4096).contains(t) { throw ValidationError("--threads must be from 1 to 4096, not \(t)") }
        if precision == .bf16, case .failure(let e) = OneDNN.bf16 { throw ValidationError("--precision bf16: \(e.message)") }
    }

    /// The precision in force: the one asked for, else the command's default,
    /// with `auto` resolved on this machine.
    func resolvedPrecision(default choice: PrecisionChoice) -> Precision {
        switch precision ?? choice {
        case .fp32: return .fp32
        case .bf16: return .bf16
        case .auto: return .automatic
        }
    }

    /// Applies the thread count to BLAS and our own loops (by default the
    /// machine's cores are shared among the job's ranks on it) and the
    /// precision (`defaultPrecision` when none was asked for).
    /// - Returns: the compute context the command passes to the library.
    @discardableResult
    func apply(ranksOnThisMachine: Int = 1, defaultPrecision: PrecisionChoice = .fp32,
               defaultFolding: ConditionFolding = .auto) -> ComputeContext {
        Threads.count = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranksOnThisMachine))
        return ComputeContext(precision: resolvedPrecision(default: defaultPrecision), threads: Threads.count)
            .with(conditionFolding: fold ?? defaultFolding).with(widthWinograd: winograd ?? .auto)
    }
}

extension ConditionFolding: ExpressibleByArgument {
}

extension WinogradPolicy: ExpressibleByArgument {
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
