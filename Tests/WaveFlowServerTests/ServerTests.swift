import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import WaveFlow
@testable import WaveFlowServer
import XCTest

/// `waveflow serve` over real HTTP on loopback: replies against
/// `waveflow synth`, refusals, the queue limit, time limits, streaming,
/// graceful shutdown.
final class ServerTests: XCTestCase {
    /// Threads of one synthesis in these tests (and `synth --threads`).
    static let threads = 2
    nonisolated(unsafe) static var vocoder: Vocoder?
    nonisolated(unsafe) static var saved: (Int, Int) = (1, 1)

    override class func setUp() {
        saved = (Threads.count, BLAS.threads)
        VocoderServer.prepareProcessForServing(threadsPerSynthesis: threads)
        vocoder = try? Vocoder(checkpoint: shippedCheckpoint, context: ComputeContext(precision: .automatic, threads: threads))
    }

    override class func tearDown() {
        Threads.count = saved.0
        BLAS.threads = saved.1
    }

    var vocoder: Vocoder { Self.vocoder! }

    func start(_ configure: (inout ServerOptions) -> Void = { _ in }) async throws -> TestServer {
        var o = ServerOptions()
        o.workers = 2
        configure(&o)
        return try await TestServer(vocoder: vocoder, options: o)
    }

    /// `waveflow synth MEL OUT options --threads N` (default precision: auto, as the server's).
    func synth(_ mel: String, _ out: String, _ options: [String]) throws -> Data {
        let (status, _, err) = try runTool(["synth", mel, out, "--checkpoint", shippedCheckpoint, "--threads", "\(Self.threads)"] + options)
        XCTAssertEqual(status, 0, err)
        return try Data(contentsOf: URL(fileURLWithPath: out))
    }

    // MARK: - Replies equal synth's

    /// Four different requests at once on two workers: each reply has the
    /// bytes `waveflow synth` writes with the same options.
    func testConcurrentRepliesEqualSynth() async throws {
        let dir = temporaryFolder(self)
        let mel = try clipMel(vocoder, frames: 40)
        try NPY.write(mel, to: dir + "/m.npy")
        let npy = NPY.encode(mel)
        let rows = (0..<mel.shape[0]).map { Array(mel.values[$0 * mel.shape[1] ..< ($0 + 1) * mel.shape[1]]) }
        let json = try JSONSerialization.data(withJSONObject: ["mel": rows, "sigma": 0.8, "seed": 2, "format": "float"])
        let transposed = NPY.encode(mel.transposed())

        let server = try await start()
        async let a = server.post("/v1/vocode?sigma=0.7&seed=1", npy)
        async let b = server.post("/v1/vocode", json, type: "application/json")
        async let c = server.post("/v1/vocode?transpose=1&denoise=0.05&seed=3", transposed)
        async let d = server.post("/v1/vocode?format=f32&seed=4", npy)
        let (ra, rb, rc, rd) = try await (a, b, c, d)
        try await server.stop()

        for r in [ra, rb, rc, rd] { XCTAssertEqual(r.status, 200, r.text) }
        XCTAssertEqual(ra.header("Content-Type"), "audio/wav")
        XCTAssertEqual(rd.header("Content-Type"), "application/octet-stream")
        XCTAssertEqual(ra.body, try synth(dir + "/m.npy", dir + "/a.wav", ["--sigma", "0.7", "--seed", "1"]), "pcm16 from .npy")
        XCTAssertEqual(withoutPeakTimestamp(rb.body),
                       withoutPeakTimestamp(try synth(dir + "/m.npy", dir + "/b.wav", ["--sigma", "0.8", "--seed", "2", "--format", "float"])),
                       "float WAV from JSON")
        try NPY.write(mel.transposed(), to: dir + "/t.npy")
        XCTAssertEqual(rc.body, try synth(dir + "/t.npy", dir + "/c.wav", ["--transpose", "--denoise", "0.05", "--seed", "3"]), "transpose + denoise")
        _ = try synth(dir + "/m.npy", dir + "/d.wav", ["--seed", "4", "--format", "float"])
        let samples = try AudioFile.read(dir + "/d.wav").samples
        XCTAssertEqual(rd.body, AudioReply.rawFloat32(samples), "raw f32")
        XCTAssertEqual(rd.body.count, 40 * 256 * 4)
    }

    /// Copy synthesis: an uploaded recording gives what `waveflow mel` then
    /// `waveflow synth` give; the spectrogram endpoint answers a PNG.
    func testCopySynthesisAndSpectrogram() async throws {
        let dir = temporaryFolder(self)
        let clip = try AudioFile.read(repoRoot + "/Audio/columns__sl-v-pust.ogg", sampleRate: 22050)
        try AudioFile.write(Audio(samples: Array(clip.samples.prefix(8000)), sampleRate: 22050), to: dir + "/x.wav")
        XCTAssertEqual(try runTool(["mel", dir + "/x.wav", dir + "/x.npy"]).0, 0)
        let expected = try synth(dir + "/x.npy", dir + "/x-out.wav", ["--seed", "7"])
        let wav = try Data(contentsOf: URL(fileURLWithPath: dir + "/x.wav"))

        let server = try await start()
        let copy = try await server.post("/v1/copy?seed=7", wav, type: "audio/wav")
        let picture = try await server.post("/v1/spectrogram", wav, type: "audio/wav")
        let scaled = try await server.post("/v1/spectrogram?top=2.5", copy.body, type: "audio/wav")
        let notAudio = try await server.post("/v1/copy", Data("hello".utf8), type: "audio/wav")
        try await server.stop()

        XCTAssertEqual(copy.status, 200, copy.text)
        XCTAssertEqual(copy.body, expected)
        XCTAssertEqual(picture.status, 200, picture.text)
        XCTAssertEqual(picture.header("Content-Type"), "image/png")
        XCTAssertEqual([UInt8](picture.body.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        XCTAssertNotNil(Float(picture.header("X-Mel-Top") ?? ""))
        XCTAssertEqual(scaled.header("X-Mel-Top"), "2.5")
        XCTAssertEqual(notAudio.status, 400)
        XCTAssertTrue(notAudio.text.hasPrefix("bad audio"), notAudio.text)
    }

    /// A streamed reply (stream=1): the WAV header with the final length,
    /// then the pieces; with context covering the mel it is exactly the
    /// whole reply, with the default context within -40 dB of it.
    func testStreamedReply() async throws {
        let mel = try clipMel(vocoder, frames: 48)
        let npy = NPY.encode(mel)
        let exact = try await start { $0.chunkFrames = 16; $0.contextFrames = 1000 }
        let whole = try await exact.post("/v1/vocode?seed=5", npy)
        let streamed = try await exact.post("/v1/vocode?seed=5&stream=1", npy)
        let streamedF32 = try await exact.post("/v1/vocode?seed=5&stream=1&format=f32&denoise=0.05", npy)
        let wholeF32 = try await exact.post("/v1/vocode?seed=5&format=f32&denoise=0.05", npy)
        try await exact.stop()
        XCTAssertEqual(streamed.status, 200, streamed.text)
        XCTAssertNotNil(streamed.header("X-Streamed"))
        XCTAssertEqual(streamed.body.count, 44 + 48 * 256 * 2)
        XCTAssertEqual(streamed.body, whole.body, "streamed with full context = whole")
        XCTAssertEqual(streamedF32.body, wholeF32.body, "streamed f32 + denoise with full context = whole")
    }

    // MARK: - Refusals

    /// Every kind of bad request is answered 400 (or 413) with a one-line
    /// reason, and the server goes on answering good ones.
    func testBadRequestsAreRefusedWithOneLineReasons() async throws {
        func npy(_ shape: [Int], _ values: [Float]) -> Data { NPY.encode(NPYArray(shape: shape, values: values)) }
        var nan = [Float](repeating: -5, count: 80 * 4); nan[9] = .nan
        var badDtype = NPY.encode(NPYArray(shape: [80, 2], values: [Float](repeating: 0, count: 160)))
        badDtype.replaceSubrange(badDtype.range(of: Data("<f4".utf8))!, with: Data("<c8".utf8))
        let good = NPY.encode(try clipMel(vocoder, frames: 8))
        let cases: [(String, String, Data, String, Int, String)] = [
            ("wrong bands", "/v1/vocode", npy([40, 4], [Float](repeating: 0, count: 160)), "application/x-npy", 400, "40 bands"),
            ("frames first", "/v1/vocode", npy([4, 80], [Float](repeating: 0, count: 320)), "application/x-npy", 400, "transpose"),
            ("NaN", "/v1/vocode", npy([80, 4], nan), "application/x-npy", 400, "not finite"),
            ("no frames", "/v1/vocode", npy([80, 0], []), "application/x-npy", 400, "empty"),
            ("1-D", "/v1/vocode", npy([80], [Float](repeating: 0, count: 80)), "application/x-npy", 400, "2-D"),
            ("bad dtype", "/v1/vocode", badDtype, "application/x-npy", 400, "dtype"),
            ("not npy", "/v1/vocode", Data("hello".utf8), "application/x-npy", 400, "bad .npy"),
            ("truncated npy", "/v1/vocode", good.prefix(200), "application/x-npy", 400, "bad .npy"),
            ("empty body", "/v1/vocode", Data(), "application/x-npy", 400, "empty body"),
            ("bad JSON", "/v1/vocode", Data("{\"mel\": [[1, 2], ".utf8), "application/json", 400, "bad JSON"),
            ("JSON without mel", "/v1/vocode", Data("{\"sigma\": 1}".utf8), "application/json", 400, "missing field 'mel'"),
            ("JSON ragged", "/v1/vocode", Data("{\"mel\": [[1, 2], [3]]}".utf8), "application/json", 400, "row 1"),
            ("JSON strings", "/v1/vocode", Data("{\"mel\": [[\"a\"]]}".utf8), "application/json", 400, "mel[0][0] must be a number"),
            ("JSON unknown field", "/v1/vocode", Data("{\"mel\": [[1]], \"speed\": 2}".utf8), "application/json", 400, "unknown field 'speed'"),
            ("JSON bad sigma", "/v1/vocode", Data("{\"mel\": [[1]], \"sigma\": -1}".utf8), "application/json", 400, "sigma"),
            ("bad format", "/v1/vocode?format=mp3", good, "application/x-npy", 400, "format must be"),
            ("bad seed", "/v1/vocode?seed=-1", good, "application/x-npy", 400, "seed must be"),
            ("unknown option", "/v1/vocode?speed=2", good, "application/x-npy", 400, "unknown option 'speed'"),
            ("too long", "/v1/vocode", npy([80, 200], [Float](repeating: -5, count: 16000)), "application/x-npy", 413, "--max-seconds"),
            ("body too large", "/v1/vocode", Data(count: 80_000), "application/x-npy", 413, "--max-body"),
        ]
        let server = try await start { $0.maxSeconds = 1; $0.maxBodyBytes = 64 << 10 }
        for (name, path, body, type, status, words) in cases {
            let r = try await server.post(path, body, type: type)
            XCTAssertEqual(r.status, status, "\(name): \(r.text)")
            XCTAssertTrue(r.text.contains(words), "\(name): '\(r.text)' lacks '\(words)'")
            XCTAssertEqual(r.text.filter { $0 == "\n" }.count, 1, "\(name): not one line: \(r.text)")
        }
        let ok = try await server.post("/v1/vocode", good)
        XCTAssertEqual(ok.status, 200, ok.text)
        let health = try await server.request("GET", "/healthz")
        let metrics = try await server.request("GET", "/metrics")
        try await server.stop()
        XCTAssertEqual(health.text, "ok\n")
        XCTAssertTrue(metrics.text.contains("waveflow_requests_total{route=\"/v1/vocode\",status=\"400\"} 18"), metrics.text)
        XCTAssertTrue(metrics.text.contains("waveflow_requests_total{route=\"/v1/vocode\",status=\"413\"} 2"), metrics.text)
    }

    /// With one worker and a queue of one, a burst of four gets two replies
    /// and two 503s with Retry-After; a request over its time limit gets 504.
    func testQueueFullAnd503AndTimeout() async throws {
        let npy = NPY.encode(try clipMel(vocoder, frames: 100))
        let server = try await start { $0.workers = 1; $0.queue = 1 }
        let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
            for _ in 0..<4 { group.addTask { try await server.post("/v1/vocode", npy) } }
            return try await group.reduce(into: [Reply]()) { $0.append($1) }
        }
        try await server.stop()
        let statuses = replies.map(\.status).sorted()
        XCTAssertEqual(statuses, [200, 200, 503, 503], replies.map(\.text).joined())
        for r in replies where r.status == 503 {
            XCTAssertEqual(r.header("Retry-After"), "1")
            XCTAssertTrue(r.text.hasPrefix("busy"), r.text)
        }

        let slow = try await start { $0.workers = 1; $0.timeoutSeconds = 0.05 }
        let late = try await slow.post("/v1/vocode", npy)
        let metrics = try await slow.request("GET", "/metrics")
        try await slow.stop()
        XCTAssertEqual(late.status, 504, late.text)
        XCTAssertTrue(late.text.contains("--timeout"), late.text)
        XCTAssertTrue(metrics.text.contains("status=\"504\"} 1"), metrics.text)
    }

    // MARK: - The other endpoints

    func testModelMetricsHealthAndPage() async throws {
        let server = try await start()
        let model = try await server.request("GET", "/v1/model")
        _ = try await server.post("/v1/vocode", NPY.encode(try clipMel(vocoder, frames: 8)))
        let metrics = try await server.request("GET", "/metrics")
        let page = try await server.request("GET", "/")
        let missing = try await server.request("GET", "/nothing")
        try await server.stop()

        let info = try XCTUnwrap(try JSONSerialization.jsonObject(with: model.body) as? [String: Any])
        XCTAssertEqual(info["family"] as? String, "waveflow")
        XCTAssertEqual(info["sample_rate"] as? Int, 22050)
        XCTAssertEqual(info["parameters"] as? Int, vocoder.config.parameterCount)
        XCTAssertEqual(info["precision"] as? String, vocoder.context.effectivePrecision.rawValue)
        XCTAssertEqual((info["config"] as? [String: Any])?["n_group"] as? Int, 64)
        for name in ["waveflow_requests_total{route=\"/v1/vocode\",status=\"200\"} 1", "waveflow_request_duration_seconds_bucket{le=\"+Inf\"} 1",
                     "waveflow_audio_seconds_total 0.0928798", "waveflow_queue_depth 0", "waveflow_real_time_factor{window=\"all\"}",
                     "# TYPE waveflow_request_duration_seconds histogram"] {
            XCTAssertTrue(metrics.text.contains(name), "metrics lack \(name):\n\(metrics.text)")
        }
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.text.contains("<html") && page.text.contains("/v1/copy"))
        XCTAssertFalse(page.text.contains("src=\"http") || page.text.contains("href=\"http"), "the page loads nothing from elsewhere")
        XCTAssertEqual(missing.status, 404)
    }

    // MARK: - Shutdown

    /// Graceful shutdown while four requests are accepted (two running, two
    /// queued): every one is answered in full, then the port is closed.
    func testGracefulShutdownLosesNoAcceptedRequest() async throws {
        let mel = try clipMel(vocoder, frames: 40)
        let npy = NPY.encode(mel)
        let server = try await start { $0.workers = 2; $0.queue = 4 }
        let replies = Task {
            try await withThrowingTaskGroup(of: Reply.self) { group in
                for seed in 0..<4 { group.addTask { try await server.post("/v1/vocode?seed=\(seed)", npy) } }
                return try await group.reduce(into: [Reply]()) { $0.append($1) }
            }
        }
        // Wait until all four are in the pool, then shut down.
        let deadline = Date().addingTimeInterval(20)
        while server.server.pool.queueDepth + server.server.pool.inFlight < 4, Date() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
        XCTAssertEqual(server.server.pool.queueDepth + server.server.pool.inFlight, 4)
        try await server.stop()
        let answered = try await replies.value
        XCTAssertEqual(answered.map(\.status), [200, 200, 200, 200], answered.map(\.text).joined())
        for r in answered { XCTAssertEqual(r.body.count, 44 + 40 * 256 * 2) }
        do {
            _ = try await server.request("GET", "/healthz")
            XCTFail("the server still answers after shutdown")
        } catch {}
    }

    /// The command: `waveflow serve --port 0` prints its address; SIGTERM
    /// during a request lets it finish (200) and the process exits 0.
    func testServeCommandFinishesInFlightRequestOnSIGTERM() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: toolPath)
        p.arguments = ["serve", "--port", "0", "--checkpoint", shippedCheckpoint, "--threads", "1"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            line += d
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let r = text.range(of: "http://127.0.0.1:"), let port = Int(text[r.upperBound...].prefix { $0.isNumber }) else {
            p.terminate()
            return XCTFail("no address in: \(text)")
        }
        let session = URLSession(configuration: .ephemeral)
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/vocode")!)
        request.httpMethod = "POST"
        // Long enough (about 4 s of audio, a second or more on one core) that
        // the polls below see it in flight; a clip's mel repeated.
        let clip = try clipMel(vocoder, frames: 400), frames = 400
        let mel = NPYArray(shape: [clip.shape[0], frames], values: (0..<clip.shape[0]).flatMap { b in
            (0..<frames).map { clip.values[b * clip.shape[1] + $0 % clip.shape[1]] }
        })
        request.httpBody = NPY.encode(mel)
        let replied = ReplyFlag()
        let reply = Task { () -> Int in
            try await withCheckedThrowingContinuation { c in
                session.dataTask(with: request) { data, response, error in
                    replied.set()
                    if let error { c.resume(throwing: error) } else { c.resume(returning: (response as! HTTPURLResponse).statusCode) }
                }.resume()
            }
        }
        // SIGTERM once the request is being synthesised (and not after its reply: then this test would test nothing).
        var inFlight = false
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && !replied.isSet {
            let m = try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)
            if m?.contains("waveflow_in_flight 1") == true { inFlight = true; break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        kill(p.processIdentifier, SIGTERM)
        let status = try await reply.value
        p.waitUntilExit()
        XCTAssertTrue(inFlight, "the request was never seen in flight, so SIGTERM did not arrive during it")
        XCTAssertEqual(status, 200)
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertTrue(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("stopped"))
    }
}

/// Set once, from any thread (a URLSession callback), read from the test.
private final class ReplyFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
