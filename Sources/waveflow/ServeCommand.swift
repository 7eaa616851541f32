import ArgumentParser
import Foundation
import WaveFlow
import WaveFlowServer

/// `waveflow serve`: the model behind an HTTP API (WaveFlowServer).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over HTTP: POST /v1/vocode (mel -> audio), /v1/copy, GET /, /healthz, /v1/model, /metrics.",
        discussion: """
        Replies equal `waveflow synth` with the same options and `--threads`. SIGTERM or SIGINT stops \
        accepting connections, finishes the requests already accepted and exits 0. See README, "waveflow serve".
        """)

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port).") var port = 8000
    @OptionGroup var model: ModelOptions
    @Option(help: "Syntheses that run at once (default: one per core; measured: more throughput than fewer, wider ones).")
    var workers: Int?
    @Option(help: "Requests that may wait for a worker; beyond that 503 with Retry-After.") var queue = 8
    @Option(name: .customLong("max-seconds"), help: "Longest audio one request may ask for, in seconds (413 beyond).") var maxSeconds = 60.0
    @Option(name: .customLong("max-body"), help: "Largest request body in bytes (413 beyond).") var maxBody = 16 << 20
    @Option(help: "Time limit of one synthesis request in seconds, queueing included (504 beyond).") var timeout = 120.0
    @Option(name: .customLong("chunk-frames"), help: "Mel frames of the first piece of a streamed reply (stream=1); later pieces double, up to 8x.") var chunkFrames = 64
    @Option(name: .customLong("context-frames"), help: "Mel frames of context either side of a streamed piece.") var contextFrames = 64
    @Option(help: "Threads of one synthesis (default: cores / workers). Replies equal `synth --threads` with this number.")
    var threads: Int?
    @Option(help: "Matrix-product precision: auto, fp32 or bf16 (default: auto, as synth).") var precision: PrecisionChoice?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if precision == .bf16, case .failure(let e) = OneDNN.bf16 { throw ValidationError("--precision bf16: \(e.message)") }
        if let p = options.problem() { throw ValidationError(p) }
    }

    var workerCount: Int { workers ?? ProcessInfo.processInfo.activeProcessorCount }

    var options: ServerOptions {
        var o = ServerOptions()
        (o.host, o.port, o.workers, o.queue) = (host, port, workerCount, queue)
        (o.maxSeconds, o.maxBodyBytes, o.timeoutSeconds) = (maxSeconds, maxBody, timeout)
        (o.chunkFrames, o.contextFrames) = (chunkFrames, contextFrames)
        return o
    }

    func run() async throws {
        let context = servingContext(workers: workerCount, threads: threads, precision: precision)
        let (vocoder, path) = try runReportingErrors { () -> (Vocoder, String) in
            guard let path = model.checkpoint ?? Checkpoint.defaultPath() else {
                throw WaveFlowError("no checkpoint given and none found under Checkpoints/ (use --checkpoint)")
            }
            let vocoder = try Vocoder(checkpoint: try Checkpoint.load(path), context: context)
            let t0 = Date()
            let kept = vocoder.prepare()
            if kept > 0 {
                print(String(format: "waveflow serve: folded the condition projections in %.1f s (%.0f MB)", Date().timeIntervalSince(t0), kept))
            }
            return (vocoder, path)
        }
        let server = VocoderServer(vocoder: vocoder, options: options, checkpointName: path)
        let (h, w, q) = (host, workerCount, queue)
        try await server.run { port in
            print("waveflow serve: http://\(h):\(port)/ (\(path), \(context.effectivePrecision.rawValue), "
                  + "\(w) worker(s) x \(context.threads) thread(s), queue \(q))")
            fflush(stdout)
        }
        print("waveflow serve: stopped")
    }
}

/// Prepares the process for serving with `workers` concurrent syntheses and
/// returns the context each runs in: `threads` per synthesis (default: the
/// cores shared among the workers), the precision asked for (default auto).
func servingContext(workers: Int, threads: Int?, precision: PrecisionChoice?) -> ComputeContext {
    let perSynthesis = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, workers))
    VocoderServer.prepareProcessForServing(threadsPerSynthesis: perSynthesis)
    var choice = ComputeOptions()
    choice.precision = precision
    // Many requests from one model: WaveGlow's folded projections pay for themselves.
    return ComputeContext(precision: choice.resolvedPrecision(default: .auto), threads: perSynthesis).with(conditionFolding: .always)
}
