import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import WaveFlow

/// `waveflow serve`: one loaded model behind an HTTP API (Hummingbird 2 on
/// SwiftNIO). Requests are parsed and checked on the event loops; synthesis
/// runs on the ``SynthesisPool``'s worker threads, at most `workers` at once,
/// with a bounded queue in front.
///
/// ```swift
/// let server = VocoderServer(vocoder: try Vocoder(checkpoint: path, context: ctx), options: ServerOptions())
/// try await server.run()          // until SIGTERM/SIGINT: stops accepting, finishes what it has, returns
/// ```
///
/// Thread safety of the model: one `Vocoder` is shared by all workers (it
/// is read-only). The process-wide OpenBLAS thread count must stay at 1
/// while serving (``prepareProcessForServing(threadsPerSynthesis:)``): each
/// synthesis splits its own work over its context's threads.
public final class VocoderServer: Sendable {
    public let vocoder: Vocoder
    public let options: ServerOptions
    let pool: SynthesisPool
    let metrics: ServerMetrics
    let started = Date()
    /// Where the checkpoint came from (shown by `/v1/model`).
    let checkpointName: String

    public init(vocoder: Vocoder, options: ServerOptions, checkpointName: String = "") {
        self.vocoder = vocoder
        self.options = options
        self.checkpointName = checkpointName
        let metrics = ServerMetrics(workers: options.workers, queueLimit: options.queue)
        self.metrics = metrics
        pool = SynthesisPool(workers: options.workers, queueLimit: options.queue) { metrics.pool(waiting: $0, running: $1) }
    }

    /// Sets the process up for concurrent syntheses: `Threads.count` (the
    /// width our parallel loops may use) to `threadsPerSynthesis`, and
    /// OpenBLAS to one thread, where it then stays: every save/set/restore of
    /// the BLAS thread count in the engine sees 1 and restores 1, so
    /// concurrent requests cannot leave it changed under each other.
    public static func prepareProcessForServing(threadsPerSynthesis: Int) {
        Threads.count = max(1, threadsPerSynthesis)
        BLAS.threads = 1
    }

    // MARK: - Running

    /// The Hummingbird application (routes, address). `onRunning` gets the
    /// bound port (useful with port 0).
    public func application(logger: Logger? = nil, onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol {
        var log = logger ?? Logger(label: "waveflow.serve")
        if logger == nil { log.logLevel = .warning }
        return Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "waveflow"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: log)
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting connections,
    /// finishes every request already accepted (queued ones included), stops
    /// the workers and returns.
    public func run(logger: Logger? = nil, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let group = ServiceGroup(configuration: .init(
            services: [application(logger: logger, onRunning: onRunning)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger ?? Logger(label: "waveflow.serve")))
        try await group.run()
        pool.shutdown()
    }

    /// Stops the worker threads once the server has stopped (for callers
    /// that run `application()` in their own service group).
    public func stopWorkers() { pool.shutdown() }

    // MARK: - Synthesis

    /// A reply for a checked mel `[n_mels, frames]`: whole, or streamed in
    /// pieces when asked (`stream=1`, pcm16 or f32).
    func synthesis(_ mel: NPYArray, _ o: SynthesisOptions, arrived: Date) async throws -> Response {
        let frames = mel.shape[1], hop = vocoder.hopLength
        let seconds = Double(frames * hop) / Double(vocoder.sampleRate)
        guard seconds <= options.maxSeconds else {
            throw RequestError(413, "mel of \(frames) frames is \(String(format: "%.2f", seconds)) s of audio, over this server's limit of \(options.maxSeconds) s (--max-seconds)")
        }
        let remaining = max(0.001, options.timeoutSeconds - Date().timeIntervalSince(arrived))
        // Streamed when asked, unless a float WAV (its PEAK chunk needs every
        // sample first) or a mel too short for the denoiser's window, whose
        // refusal must come before the reply's first line.
        if o.stream && o.format != .float && frames * hop > 4 * 1024 {
            return try streamed(mel, o, arrived: arrived, remaining: remaining)
        }
        let (vocoder, metrics) = (self.vocoder, self.metrics)
        let data = try await pool.run(timeout: remaining) { _ in
            let t0 = Date()
            let audio = try vocoder.synthesise(mel: mel, sigma: o.sigma, seed: o.seed, denoise: o.denoise)
            metrics.recordSynthesis(audioSeconds: seconds, seconds: Date().timeIntervalSince(t0))
            return try AudioReply.encode(audio, format: o.format, vocoder: vocoder)
        }
        var headers = HTTPFields()
        headers[.contentType] = o.format.contentType
        headers[HTTPField.Name("X-Audio-Samples")!] = "\(frames * hop)"
        headers[HTTPField.Name("X-Sample-Rate")!] = "\(vocoder.sampleRate)"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A streamed reply: the header (its length known from frames × hop),
    /// then each piece of chunked synthesis as the worker produces it,
    /// chunked transfer encoding.
    func streamed(_ mel: NPYArray, _ o: SynthesisOptions, arrived: Date, remaining: Double) throws -> Response {
        let frames = mel.shape[1], hop = vocoder.hopLength, samples = frames * hop
        let (stream, sink) = AsyncThrowingStream<Data, any Error>.makeStream()
        let gone = Flag()
        sink.onTermination = { _ in gone.set() }
        let (vocoder, metrics, chunk, context) = (self.vocoder, self.metrics, options.chunkFrames, options.contextFrames)
        try pool.submit(timeout: remaining, { isExpired in
            let t0 = Date()
            try vocoder.synthesiseInChunks(mel: mel, sigma: o.sigma, seed: o.seed, denoise: o.denoise,
                                           chunkFrames: chunk, contextFrames: context) { piece in
                if isExpired() { throw PoolError.timedOut }
                if gone.isSet { throw CancellationError() }
                sink.yield(AudioReply.piece(piece, format: o.format))
            }
            metrics.recordSynthesis(audioSeconds: Double(samples) / Double(vocoder.sampleRate), seconds: Date().timeIntervalSince(t0))
        }, completion: { (result: Result<Void, any Error>) in
            switch result {
            case .success: sink.finish()
            case .failure(let e): sink.finish(throwing: e)
            }
        })
        var headers = HTTPFields()
        headers[.contentType] = o.format.contentType
        headers[HTTPField.Name("X-Audio-Samples")!] = "\(samples)"
        headers[HTTPField.Name("X-Sample-Rate")!] = "\(vocoder.sampleRate)"
        headers[HTTPField.Name("X-Streamed")!] = "first-chunk=\(chunk) context=\(context) frames"
        let header = o.format == .pcm16 ? AudioReply.pcm16Header(samples: samples, sampleRate: vocoder.sampleRate) : Data()
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            var first = true
            if !header.isEmpty { try await writer.write(ByteBuffer(bytes: header)) }
            for try await piece in stream {
                try await writer.write(ByteBuffer(bytes: piece))
                if first { metrics.recordFirstByte(seconds: Date().timeIntervalSince(arrived)); first = false }
            }
            try await writer.finish(nil)
        })
    }

    /// Reads a request body of at most `--max-body` bytes (413 beyond).
    func body(of request: Request) async throws -> Data {
        let limit = options.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw RequestError(413, "body of \(length) bytes is over this server's limit of \(limit) bytes (--max-body)")
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw RequestError(413, "body is over this server's limit of \(limit) bytes (--max-body)")
        }
    }
}

/// A flag set once, read from any thread.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
