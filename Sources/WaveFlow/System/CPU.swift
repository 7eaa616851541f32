import Foundation

/// What the processor is and which of its instruction-set features matter to
/// the numerical kernels, read from /proc/cpuinfo.
public struct CPUInfo: Sendable {
    public var vendor: String
    public var modelName: String
    public var family: Int
    public var model: Int
    public var flags: Set<String>

    /// The machine this process runs on.
    public static let current: CPUInfo = read()

    public var hasAVX2: Bool { flags.contains("avx2") && flags.contains("fma") }
    /// AVX-512 F, BW, DQ, VL: what OpenBLAS's SkylakeX kernels use.
    public var hasAVX512: Bool {
        ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }
    public var hasAVX512BF16: Bool { flags.contains("avx512_bf16") }
    public var hasAMX: Bool { flags.contains("amx_tile") && flags.contains("amx_bf16") }

    /// The features worth printing, present ones only.
    public var notableFeatures: [String] {
        ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
         "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve"].filter(flags.contains)
    }

    static func read() -> CPUInfo {
        var info = CPUInfo(vendor: "unknown", modelName: "unknown", family: 0, model: 0, flags: [])
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return info }
        // The first processor block describes them all on the machines we target.
        for line in text.split(separator: "\n") {
            if line.isEmpty { break }
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "vendor_id": info.vendor = parts[1]
            case "model name": info.modelName = parts[1]
            case "cpu family": info.family = Int(parts[1]) ?? 0
            case "model": info.model = Int(parts[1]) ?? 0
            case "flags", "Features": info.flags = Set(parts[1].split(separator: " ").map(String.init))
            default: break
            }
        }
        return info
    }
}

/// The data cache sizes of this machine's first core, in bytes, from Linux's
/// sysfs (`/sys/devices/system/cpu/cpu0/cache/index*/`); nil where unknown.
public struct CPUCaches: Sendable {
    public var l1d: Int?, l2: Int?, l3: Int?

    public static let current: CPUCaches = read()

    static func read(root: String = "/sys/devices/system/cpu/cpu0/cache") -> CPUCaches {
        var caches = CPUCaches()
        for i in 0..<8 {
            let dir = root + "/index\(i)/"
            func field(_ name: String) -> String? {
                (try? String(contentsOfFile: dir + name, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard let level = field("level").flatMap(Int.init), let type = field("type"), type != "Instruction",
                  let size = field("size").flatMap(parseSize) else { continue }
            switch level {
            case 1: caches.l1d = size
            case 2: caches.l2 = size
            case 3: caches.l3 = size
            default: break
            }
        }
        return caches
    }

    /// "32K", "1024K", "32M" or a plain number of bytes.
    static func parseSize(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
        return Int(text)
    }

    /// "L1d 32 KB, L2 1024 KB, L3 32768 KB" (unknown levels left out).
    public var description: String {
        let parts = [("L1d", l1d), ("L2", l2), ("L3", l3)].compactMap { name, size in size.map { "\(name) \($0 >> 10) KB" } }
        return parts.isEmpty ? "unknown" : parts.joined(separator: ", ")
    }
}