import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import WaveFlow

// The endpoints:
//   GET  /                 the page (drop a WAV or a .npy, hear and see the result)
//   GET  /healthz          "ok"
//   GET  /v1/model         the model: family, config, parameters, precision, sample rate
//   GET  /metrics          Prometheus text
//   POST /v1/vocode        a mel (.npy or JSON) -> audio
//   POST /v1/copy          an audio file -> its mel -> audio (copy synthesis)
//   POST /v1/spectrogram   an audio file or a .npy mel -> PNG of its log-mel

extension VocoderServer {
    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: Page.html)))
        }
        router.get("/healthz") { _, _ in Self.text("ok") }
        router.get("/v1/model") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(bytes: self.modelDescription())))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: self.metrics.text())))
        }
        router.post("/v1/vocode") { request, _ in
            await self.answering {
                let arrived = Date()
                let query = try SynthesisOptions(query: Self.query(request))
                let data = try await self.body(of: request)
                let (mel, options) = try VocodeBody.parse(data, contentType: request.headers[.contentType], options: query)
                let checked = try self.checked(mel, transpose: options.transpose)
                return try await self.synthesis(checked, options, arrived: arrived)
            }
        }
        router.post("/v1/copy") { request, _ in
            await self.answering {
                let arrived = Date()
                let options = try SynthesisOptions(query: Self.query(request), allowed: SynthesisOptions.names.subtracting(["transpose"]))
                let mel = try self.melOfAudio(try await self.body(of: request))
                return try await self.synthesis(mel, options, arrived: arrived)
            }
        }
        router.post("/v1/spectrogram") { request, _ in
            await self.answering {
                var top: Float?
                for (k, v) in Self.query(request) {
                    guard k == "top", let t = Float(v), t.isFinite else { throw RequestError.bad("spectrogram takes one option, top=<nats>") }
                    top = t
                }
                let data = try await self.body(of: request)
                let mel: NPYArray
                if data.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) {
                    do { mel = try self.checked(try NPY.decode(data), transpose: false) } catch let e as WaveFlowError {
                        throw RequestError.bad("bad .npy: \(e.description)")
                    }
                } else {
                    mel = try self.melOfAudio(data)
                }
                let picture = Self.spectrogram(mel, top: top)
                return Response(status: .ok, headers: [.contentType: "image/png", HTTPField.Name("X-Mel-Top")!: "\(picture.top)"],
                                body: .init(byteBuffer: ByteBuffer(bytes: picture.png)))
            }
        }
        return router
    }

    // MARK: - Pieces

    /// Runs a handler, turning refusals into their status and a one-line reason.
    func answering(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let e as RequestError {
            return Self.text(e.reason, status: e.status)
        } catch let e as PoolError {
            switch e {
            case .full:
                var r = Self.text("busy: \(options.workers) syntheses running and \(options.queue) waiting; retry later", status: 503)
                r.headers[.retryAfter] = "\(options.retryAfterSeconds)"
                return r
            case .timedOut:
                return Self.text("synthesis did not finish within this server's limit of \(options.timeoutSeconds) s (--timeout)", status: 504)
            case .stopped:
                return Self.text("shutting down", status: 503)
            }
        } catch let e as WaveFlowError {
            // The engine's checks (sigma, denoise, mel) that got past ours.
            return Self.text(e.description, status: 400)
        } catch {
            return Self.text("internal error: \(error.describe())", status: 500)
        }
    }

    /// The mel checks of `waveflow synth`, as a 400.
    func checked(_ mel: NPYArray, transpose: Bool) throws -> NPYArray {
        do { return try vocoder.validated(mel: mel, transpose: transpose) } catch let e as WaveFlowError {
            throw RequestError.bad("bad mel: \(e.description)")
        }
    }

    /// The log-mel of an uploaded audio file (any format libsndfile reads;
    /// resampled to the model's rate), as `waveflow mel` computes it.
    func melOfAudio(_ data: Data) throws -> NPYArray {
        // Refuse long audio before decoding more than the header promises is reasonable.
        let path = NSTemporaryDirectory() + "waveflow-serve-\(UUID().uuidString).audio"
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw RequestError(500, "cannot store the upload")
        }
        let mel: NPYArray
        do { mel = try vocoder.melSpectrogram(file: path) } catch let e as WaveFlowError {
            throw RequestError.bad("bad audio: \(e.message)")
        }
        let seconds = Double(mel.shape[1] * vocoder.hopLength) / Double(vocoder.sampleRate)
        guard seconds <= options.maxSeconds + 1 else {
            throw RequestError(413, "audio of \(String(format: "%.2f", seconds)) s is over this server's limit of \(options.maxSeconds) s (--max-seconds)")
        }
        return mel
    }

    /// PNG of a log-mel; `top` (nats) fixes the colour scale, else the mel's maximum.
    static func spectrogram(_ mel: NPYArray, top: Float?) -> (png: Data, top: Float) {
        var m = mel
        for i in m.values.indices where !m.values[i].isFinite { m.values[i] = -11.5 }
        let t = top ?? (m.values.max() ?? 0)
        return (PNG.spectrogram(m, top: t, range: 11), t)
    }

    /// `/v1/model`'s JSON.
    func modelDescription() -> Data {
        let c = vocoder.config
        var config: Any = [:]
        if let data = try? JSONEncoder().encode(c), let object = try? JSONSerialization.jsonObject(with: data) { config = object }
        let info: [String: Any] = [
            "family": c.family,
            "checkpoint": checkpointName,
            "config": config,
            "parameters": c.parameterCount,
            "precision": vocoder.context.effectivePrecision.rawValue,
            "threads_per_synthesis": vocoder.context.threads,
            "workers": options.workers,
            "queue": options.queue,
            "sample_rate": vocoder.sampleRate,
            "hop_length": vocoder.hopLength,
            "n_mels": vocoder.bands,
            "max_seconds": options.maxSeconds,
            "stream": ["chunk_frames": options.chunkFrames, "context_frames": options.contextFrames],
            "version": waveflowVersion,
        ]
        return (try? JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    static func query(_ request: Request) -> [(String, String)] {
        request.uri.queryParameters.map { (String($0.key), String($0.value)) }
    }

    static func text(_ s: String, status: Int = 200) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "text/plain; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: s + "\n")))
    }
}

/// Counts every answered request by route and status, and times the
/// synthesis ones.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = Date()
        let path = request.uri.path
        let known = ["/", "/healthz", "/v1/model", "/metrics", "/v1/vocode", "/v1/copy", "/v1/spectrogram"]
        let route = known.contains(path) ? path : "other"
        let synthesis = path == "/v1/vocode" || path == "/v1/copy"
        do {
            let response = try await next(request, context)
            metrics.record(route: route, status: response.status.code, seconds: Date().timeIntervalSince(start), synthesis: synthesis && response.status.code == 200)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.record(route: route, status: status, seconds: Date().timeIntervalSince(start), synthesis: false)
            throw error
        }
    }
}
