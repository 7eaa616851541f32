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
