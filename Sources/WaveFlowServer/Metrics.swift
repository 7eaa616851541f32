import Foundation

/// The service's counters, exposed at `GET /metrics` in Prometheus's text
/// format (version 0.0.4), written by hand.
final class ServerMetrics: @unchecked Sendable {
    // Sendable by hand: every field is touched under `lock`.
    private let lock = NSLock()
    /// Upper bounds (seconds) of the latency histogram's buckets.
    static let latencyBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]

    private var requests: [String: [Int: Int]] = [:] // route -> status -> count
    private var latencyCounts = [Int](repeating: 0, count: ServerMetrics.latencyBuckets.count)
    private var latencySum = 0.0, latencyCount = 0
    private var firstByteSum = 0.0, firstByteCount = 0
    private var audioSeconds = 0.0, synthesisSeconds = 0.0
    private var lastRealTimeFactor = 0.0
    private var queueDepth = 0, inFlight = 0
    let workers: Int, queueLimit: Int

    init(workers: Int, queueLimit: Int) {
        (self.workers, self.queueLimit) = (workers, queueLimit)
    }

    /// One answered request on `route` (a fixed label, not the raw path).
    func record(route: String, status: Int, seconds: Double, synthesis: Bool) {
        lock.lock(); defer { lock.unlock() }
        requests[route, default: [:]][status, default: 0] += 1
        guard synthesis else { return }
        latencySum += seconds
        latencyCount += 1
        for (i, b) in Self.latencyBuckets.enumerated() where seconds <= b { latencyCounts[i] += 1 }
    }

    /// One synthesis: its audio and the compute time it took.
    func recordSynthesis(audioSeconds a: Double, seconds s: Double) {
        lock.lock(); defer { lock.unlock() }
        audioSeconds += a
        synthesisSeconds += s
        if a > 0 { lastRealTimeFactor = s / a }
    }

    /// Time from a streamed request's arrival to its first audio bytes.
    func recordFirstByte(seconds: Double) {
        lock.lock(); defer { lock.unlock() }
        firstByteSum += seconds
        firstByteCount += 1
    }

    func pool(waiting: Int, running: Int) {
        lock.lock(); defer { lock.unlock() }
        (queueDepth, inFlight) = (waiting, running)
    }

    /// The exposition text.
    func text() -> String {
        lock.lock(); defer { lock.unlock() }
        func n(_ x: Double) -> String { x.isFinite ? String(format: "%.6g", x) : (x > 0 ? "+Inf" : "-Inf") }
        var t = ""
        t += "# HELP waveflow_requests_total HTTP requests answered, by route and status.\n"
        t += "# TYPE waveflow_requests_total counter\n"
        for route in requests.keys.sorted() {
            for status in requests[route]!.keys.sorted() {
                t += "waveflow_requests_total{route=\"\(route)\",status=\"\(status)\"} \(requests[route]![status]!)\n"
            }
        }
        t += "# HELP waveflow_request_duration_seconds Latency of synthesis requests (vocode, copy), arrival to reply.\n"
        t += "# TYPE waveflow_request_duration_seconds histogram\n"
        for (i, b) in Self.latencyBuckets.enumerated() {
            t += "waveflow_request_duration_seconds_bucket{le=\"\(n(b))\"} \(latencyCounts[i])\n"
        }
        t += "waveflow_request_duration_seconds_bucket{le=\"+Inf\"} \(latencyCount)\n"
        t += "waveflow_request_duration_seconds_sum \(n(latencySum))\n"
        t += "waveflow_request_duration_seconds_count \(latencyCount)\n"
        t += "# HELP waveflow_time_to_first_byte_seconds Streamed replies: arrival to the first audio bytes.\n"
        t += "# TYPE waveflow_time_to_first_byte_seconds summary\n"
        t += "waveflow_time_to_first_byte_seconds_sum \(n(firstByteSum))\n"
        t += "waveflow_time_to_first_byte_seconds_count \(firstByteCount)\n"
        t += "# HELP waveflow_audio_seconds_total Seconds of audio synthesised.\n"
        t += "# TYPE waveflow_audio_seconds_total counter\n"
        t += "waveflow_audio_seconds_total \(n(audioSeconds))\n"
        t += "# HELP waveflow_synthesis_seconds_total Worker seconds spent synthesising.\n"
        t += "# TYPE waveflow_synthesis_seconds_total counter\n"
        t += "waveflow_synthesis_seconds_total \(n(synthesisSeconds))\n"
        t += "# HELP waveflow_real_time_factor Synthesis time over audio time (below 1: faster than real time): all so far, and the last request.\n"
        t += "# TYPE waveflow_real_time_factor gauge\n"
        t += "waveflow_real_time_factor{window=\"all\"} \(n(audioSeconds > 0 ? synthesisSeconds / audioSeconds : 0))\n"
        t += "waveflow_real_time_factor{window=\"last\"} \(n(lastRealTimeFactor))\n"
        t += "# HELP waveflow_queue_depth Synthesis requests waiting for a worker.\n"
        t += "# TYPE waveflow_queue_depth gauge\n"
        t += "waveflow_queue_depth \(queueDepth)\n"
        t += "# HELP waveflow_queue_capacity Requests that may wait before 503.\n"
        t += "# TYPE waveflow_queue_capacity gauge\n"
        t += "waveflow_queue_capacity \(queueLimit)\n"
        t += "# HELP waveflow_in_flight Synthesis requests being computed.\n"
        t += "# TYPE waveflow_in_flight gauge\n"
        t += "waveflow_in_flight \(inFlight)\n"
        t += "# HELP waveflow_workers Synthesis workers.\n"
        t += "# TYPE waveflow_workers gauge\n"
        t += "waveflow_workers \(workers)\n"
        return t
    }
}
