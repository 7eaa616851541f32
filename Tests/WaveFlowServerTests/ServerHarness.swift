import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import ServiceLifecycle
import WaveFlow
import WaveFlowServer
import XCTest

/// The repository's root (for the shipped model and Audio/).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
let shippedCheckpoint = repoRoot + "/Checkpoints/shipped/model.safetensors"

/// The built `waveflow` tool (beside the test bundle).
var toolPath: String {
    var dir = URL(fileURLWithPath: Bundle.main.bundlePath)
    for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        dir = URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent()
    }
    return dir.appendingPathComponent("waveflow").path
}

/// Runs the tool with this process's OpenBLAS kernel; returns (status, stdout, stderr).
@discardableResult
func runTool(_ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: toolPath)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env[BLAS.coreVariable] = BLAS.coreName
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A fresh temporary folder, removed when the test ends.
func temporaryFolder(_ test: XCTestCase) -> String {
    let dir = NSTemporaryDirectory() + "waveflow-server-test-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// An HTTP reply as a client sees it.
struct Reply {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? {
        headers.first { $0.key.lowercased() == name.lowercased() }?.value
    }
}

/// A server of the shipped model on 127.0.0.1 at a free port, in this
/// process, and a URLSession client for it.
final class TestServer: @unchecked Sendable {
    let server: VocoderServer
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    let session: URLSession

    /// Starts the server and waits until it listens.
    init(vocoder: Vocoder, options base: ServerOptions) async throws {
        var options = base
        options.host = "127.0.0.1"
        options.port = 0
        server = VocoderServer(vocoder: vocoder, options: options)
        let (ports, sink) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "waveflow.test")
        logger.logLevel = .critical
        group = ServiceGroup(configuration: .init(
            services: [server.application(logger: logger) { sink.yield($0) }], logger: logger))
        let g = group
        task = Task { try await g.run() }
        var it = ports.makeAsyncIterator()
        guard let p = await it.next(), p > 0 else { throw WaveFlowError("server did not start") }
        port = p
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 120
        config.httpMaximumConnectionsPerHost = 16
        session = URLSession(configuration: config)
    }

    /// Graceful shutdown: stops accepting, finishes what it has, stops the workers.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
        server.stopWorkers()
    }

    func request(_ method: String, _ path: String, body: Data? = nil, type: String? = nil) async throws -> Reply {
        var r = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        r.httpMethod = method
        r.httpBody = body
        if let type { r.setValue(type, forHTTPHeaderField: "Content-Type") }
        return try await withCheckedThrowingContinuation { c in
            session.dataTask(with: r) { data, response, error in
                if let error { c.resume(throwing: error); return }
                let h = response as! HTTPURLResponse
                var headers: [String: String] = [:]
                for (k, v) in h.allHeaderFields { headers["\(k)"] = "\(v)" }
                c.resume(returning: Reply(status: h.statusCode, headers: headers, body: data ?? Data()))
            }.resume()
        }
    }

    func post(_ path: String, _ body: Data, type: String = "application/x-npy") async throws -> Reply {
        try await request("POST", path, body: body, type: type)
    }
}

/// The first `frames` frames of a clip's log-mel.
func clipMel(_ vocoder: Vocoder, clip: String = "columns__sl-v-pust.ogg", frames: Int) throws -> NPYArray {
    let full = try vocoder.melSpectrogram(file: repoRoot + "/Audio/" + clip)
    let f = min(frames, full.shape[1])
    var values: [Float] = []
    for b in 0..<full.shape[0] { values += full.values[b * full.shape[1] ..< b * full.shape[1] + f] }
    return NPYArray(shape: [full.shape[0], f], values: values)
}

/// Bytes of a WAV as `waveflow synth` wrote it, with a float WAV's PEAK
/// timestamp (4 bytes libsndfile sets to the time of writing) zeroed.
func withoutPeakTimestamp(_ d: Data) -> Data {
    var b = [UInt8](d)
    if let r = d.range(of: Data("PEAK".utf8)), r.lowerBound + 16 <= b.count {
        for i in r.lowerBound + 12 ..< r.lowerBound + 16 { b[i] = 0 }
    }
    return Data(b)
}
