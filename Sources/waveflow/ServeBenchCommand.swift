import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import ServiceLifecycle
import WaveFlow
import WaveFlowServer

/// `waveflow serve-bench` (hidden): a bounded load test of `waveflow serve`.
/// Starts the server in this process on 127.0.0.1 (a free port; nothing
/// leaves the machine), runs `--clients` clients that each send one request
/// after another for `--seconds`, waits for the last replies, shuts the
/// server down gracefully and reports.
struct ServeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve-bench",
        abstract: "Load-test `serve` on loopback: throughput (audio s/s), latency p50/p99, errors, peak memory.",
        shouldDisplay: false)

    @Option(help: "Concurrent clients.") var clients = 8
    @Option(help: "Seconds during which clients send new requests (then the last replies are awaited).") var seconds = 30.0
    @Option(help: "The audio whose mel each request sends (default: Audio/columns__sl-v-pust.ogg).") var audio: String?
    @Option(help: "Seconds of that audio per request (0: all).") var requestSeconds = 0.0
    @Flag(help: "Ask for streamed replies (stream=1) and report time to first audio byte.") var stream = false
    @OptionGroup var model: ModelOptions
    @Option(help: "Server workers.") var workers = 1
    @Option(help: "Server queue (at least clients - workers, or some requests get 503).") var queue = 8
    @Option(help: "Threads of one synthesis (default: cores / workers).") var threads: Int?
    @Option(help: "Precision: auto, fp32 or bf16.") var precision: PrecisionChoice?

    func validate() throws {
        if clients < 1 || clients > 64 { throw ValidationError("--clients must be 1 to 64") }
        if !(seconds > 0 && seconds <= 600) { throw ValidationError("--seconds must be in (0, 600]") }
    }

    /// What one client saw.
    struct Sample { var latency: Double; var status: Int; var audioSeconds: Double }

    func run() async throws {
        let context = servingContext(workers: workers, threads: threads, precision: precision)
        let (vocoder, mel) = try runReportingErrors { () -> (Vocoder, NPYArray) in
            let v = try Vocoder(checkpoint: try model.load(), context: context)
            var m = try v.melSpectrogram(file: audio ?? "Audio/columns__sl-v-pust.ogg")
            if requestSeconds > 0 {
                let f = min(m.shape[1], max(1, Int(requestSeconds * Double(v.sampleRate)) / v.hopLength))
                var values = [Float]()
                for b in 0..<m.shape[0] { values += m.values[b * m.shape[1] ..< b * m.shape[1] + f] }
                m = NPYArray(shape: [m.shape[0], f], values: values)
            }
            return (v, m)
        }
        var options = ServerOptions()
        (options.host, options.port, options.workers, options.queue) = ("127.0.0.1", 0, workers, queue)
        options.timeoutSeconds = 600
        let server = VocoderServer(vocoder: vocoder, options: options)
        var logger = Logger(label: "waveflow.serve-bench")
        logger.logLevel = .critical
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let group = ServiceGroup(configuration: .init(services: [server.application(logger: logger) { portSink.yield($0) }], logger: logger))
        let serving = Task { try await group.run() }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next(), port > 0 else { throw WaveFlowError("server did not start") }

        let body = NPY.encode(mel)
        let perRequest = Double(mel.shape[1] * vocoder.hopLength) / Double(vocoder.sampleRate)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 600
        config.httpMaximumConnectionsPerHost = clients
        let session = URLSession(configuration: config)
        let url = URL(string: "http://127.0.0.1:\(port)/v1/vocode" + (stream ? "?stream=1" : ""))!
        print("serve-bench: \(clients) clients x \(seconds) s on 127.0.0.1:\(port), \(String(format: "%.2f", perRequest)) s of audio per request, "
              + "\(workers) worker(s) x \(context.threads) thread(s), \(context.effectivePrecision.rawValue)" + (stream ? ", streamed" : ""))
        let started = Date(), stopAt = started.addingTimeInterval(seconds)
        let samples = await withTaskGroup(of: [Sample].self) { tasks in
            for _ in 0..<clients {
                tasks.addTask {
                    var mine = [Sample]()
                    while Date() < stopAt {
                        var request = URLRequest(url: url)
                        request.httpMethod = "POST"
                        request.httpBody = body
                        request.setValue("application/x-npy", forHTTPHeaderField: "Content-Type")
                        let t0 = Date()
                        let status: Int = await withCheckedContinuation { c in
                            session.dataTask(with: request) { data, response, error in
                                let ok = error == nil && (data?.count ?? 0) > 0
                                c.resume(returning: ok ? (response as? HTTPURLResponse)?.statusCode ?? -1 : -1)
                            }.resume()
                        }
                        mine.append(Sample(latency: Date().timeIntervalSince(t0), status: status, audioSeconds: status == 200 ? perRequest : 0))
                    }
                    return mine
                }
            }
            return await tasks.reduce(into: [Sample]()) { $0 += $1 }
        }
        let elapsed = Date().timeIntervalSince(started)
        let metrics = (try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)) ?? ""
        await group.triggerGracefulShutdown()
        try await serving.value
        server.stopWorkers()

        let ok = samples.filter { $0.status == 200 }
        let latencies = ok.map(\.latency).sorted()
        func quantile(_ q: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int((q * Double(latencies.count)).rounded(.up)) - 1)] }
        let audioTotal = ok.reduce(0) { $0 + $1.audioSeconds }
        print(String(format: "requests %d (%d ok, %d errors) in %.1f s", samples.count, ok.count, samples.count - ok.count, elapsed))
        print(String(format: "throughput %.3f s of audio per second (%.2f requests/s)", audioTotal / elapsed, Double(ok.count) / elapsed))
        print(String(format: "latency p50 %.2f s, p99 %.2f s, max %.2f s", quantile(0.5), quantile(0.99), latencies.last ?? 0))
        if stream, let sum = metricValue(metrics, "waveflow_time_to_first_byte_seconds_sum"),
           let count = metricValue(metrics, "waveflow_time_to_first_byte_seconds_count"), count > 0 {
            print(String(format: "time to first audio byte (server side, mean of %.0f) %.2f s", count, sum / count))
        }
        if let rtf = metrics.split(separator: "\n").first(where: { $0.hasPrefix("waveflow_real_time_factor{window=\"all\"}") }) {
            print("server \(rtf)")
        }
        print(String(format: "peak memory %.0f MB (server and clients, one process)", Benchmark.peakMemoryMB))
        if ok.count != samples.count { throw ExitCode.failure }
    }

    func metricValue(_ text: String, _ name: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }
}
