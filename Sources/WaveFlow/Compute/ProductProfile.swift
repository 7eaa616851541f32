import Foundation

/// A developer's view of where the Float32 matrix products' time goes: with
/// WAVEFLOW_PRODUCT_PROFILE=1 in the environment, every `Float.product`
/// and panel product (`Real.segmentProduct`) call is timed (thread time, so shards running side by side add up) and
/// at exit the 40 costliest shapes are printed with their share, GFLOP/s
/// and call count, e.g.
///
///     WAVEFLOW_PRODUCT_PROFILE=1 waveflow bench --presets wg-c64 --phases train
///
/// Off (the default) it costs one branch per product.
enum ProductProfile {
    static let enabled = ProcessInfo.processInfo.environment["WAVEFLOW_PRODUCT_PROFILE"] == "1"

    private struct Entry { var nanoseconds: UInt64 = 0, flops = 0.0, calls = 0 }
    nonisolated(unsafe) private static var entries: [String: Entry] = [:]
    nonisolated(unsafe) private static var registered = false
    private static let lock = NSLock()

    /// Adds one product of shape op(A) [m, k] x op(B) [k, n], started at `since` (uptime ns).
    static func record(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, accumulate: Bool, since: UInt64) {
        add(key: "\(transA ? "T" : "N")\(transB ? "T" : "N") m \(m) n \(n) k \(k)\(accumulate ? " +=" : "")",
            flops: 2 * Double(m) * Double(n) * Double(k), since: since)
    }

    /// Adds one panel product (`Real.segmentProduct`) of `segments` row segments, A [m, k] x B [k, n].
    static func record(panel segments: Int, m: Int, n: Int, k: Int, accumulate: Bool, since: UInt64) {
        add(key: "panel \(segments) m \(m) n \(n) k \(k)\(accumulate ? " +=" : "")", flops: 2 * Double(m) * Double(n) * Double(k), since: since)
    }

    private static func add(key: String, flops: Double, since: UInt64) {
        let elapsed = DispatchTime.now().uptimeNanoseconds - since
        lock.lock(); defer { lock.unlock() }
        if !registered {
            registered = true
            atexit { ProductProfile.report() }
        }
        var e = entries[key, default: Entry()]
        e.nanoseconds += elapsed
        e.flops += flops
        e.calls += 1
        entries[key] = e
    }

    private static func report() {
        lock.lock(); defer { lock.unlock() }
        let total = entries.values.reduce(0) { $0 + $1.nanoseconds }
        guard total > 0 else { return }
        var out = "products by shape (thread time):\n"
        for (key, e) in entries.sorted(by: { $0.value.nanoseconds > $1.value.nanoseconds }).prefix(40) {
            out += String(format: "%6.2f%% %7.1f GFLOP/s %7d calls  ", 100 * Double(e.nanoseconds) / Double(total),
                          e.flops / Double(e.nanoseconds), e.calls) + key + "\n"
        }
        out += String(format: "all products: %.2f thread-seconds\n", Double(total) / 1e9)
        FileHandle.standardError.write(out.data(using: .utf8)!)
    }
}
