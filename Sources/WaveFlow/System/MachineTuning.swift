import Foundation

/// Work sizes measured once on this machine (`waveflow info --tune`) and kept
/// in the user's cache folder, for choices the cache sizes alone do not settle.
///
/// The file is keyed by the machine (CPU model, vector level, L2 size, core
/// count): a copy from another machine, or one left behind after the CPU
/// changed under a virtual machine, is ignored rather than trusted.
public struct MachineTuning: Codable, Sendable, Equatable {
    /// What the measurement is valid for: see `machineKey`.
    public var machine: String
    /// The synthesis block width chosen from the measurements (columns; see
    /// `measure`).
    public var synthesisBlockColumns: Int
    /// Synthesis samples/s measured for each block width tried.
    public var measured: [String: Double]
    /// Preset and precision the widths were measured with.
    public var preset: String
    public var precision: String
    /// When (ISO 8601).
    public var date: String
    /// What `--precision auto` runs here, "fp32" or "bf16", where bf16 was
    /// available to measure (nil in files from before it was measured).
    public var autoPrecision: String?
    /// Synthesis samples/s of each precision at the L2 rule's width.
    public var measuredPrecisions: [String: Double]?

    /// How much faster than the L2 rule's width a measured one must be to
    /// replace it (this machine's run-to-run drift is about 5%).
    public static let margin = 0.03

    /// Block widths `--tune` tries.
    public static let candidateBlockColumns = [256, 512, 1024, 2048, 4096]

    /// This machine as the cache file names it: CPU model, the vector
    /// features that choose kernels, L2 size and core count.
    public static var machineKey: String {
        let cpu = CPUInfo.current
        return "\(cpu.modelName) | \(cpu.vendor) \(cpu.family)/\(cpu.model) | \(cpu.notableFeatures.joined(separator: " ")) | "
            + "L2 \(CPUCaches.current.l2.map(String.init) ?? "?") | \(ProcessInfo.processInfo.activeProcessorCount) cores"
    }

    /// `$XDG_CACHE_HOME/waveflow/tuning.json`, else `~/.cache/waveflow/tuning.json`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? ((environment["HOME"] ?? NSHomeDirectory()) as NSString).appendingPathComponent(".cache")
        return (base as NSString).appendingPathComponent("waveflow/tuning.json")
    }

    /// The tuning stored at `path` for the machine `key`, or why there is
    /// none usable (missing, unreadable, for another machine, out of range).
    public static func load(from path: String = defaultPath(), key: String = machineKey) -> Result<MachineTuning, WaveFlowError> {
        guard FileManager.default.fileExists(atPath: path) else { return .failure(WaveFlowError("not measured", path: path)) }
        guard let data = FileManager.default.contents(atPath: path), data.count < 1 << 20,
              let tuning = try? JSONDecoder().decode(MachineTuning.self, from: data) else {
            return .failure(WaveFlowError("not a tuning file: ignored", path: path))
        }
        guard tuning.machine == key else { return .failure(WaveFlowError("measured on another machine: ignored", path: path)) }
        guard (64...65536).contains(tuning.synthesisBlockColumns) else {
            return .failure(WaveFlowError("block width \(tuning.synthesisBlockColumns) out of range: ignored", path: path))
        }
        return .success(tuning)
    }

    /// Writes the tuning atomically (creating the folder).
    public func save(to path: String = MachineTuning.defaultPath()) throws {
        try makeDirectory((path as NSString).deletingLastPathComponent)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(self), to: path)
    }

    /// Measures synthesis of `preset` (the best of `repeats` runs of
    /// `seconds` of audio each): where bf16 products are available, in fp32
    /// and in bf16 at the L2 rule's width, keeping the faster as what
    /// `--precision auto` means here (`AutoPrecisionChoice`); then, in that
    /// precision, at every candidate block width, picking the fastest unless
    /// it beats the L2 rule's width by less than `margin` (differences of a
    /// few percent are this machine's noise).
    public static func measure(preset: String = "h16-c64", seconds: Double = 8, repeats: Int = 2, context: ComputeContext,
                               margin: Double = MachineTuning.margin,
                               progressPrecision: (Precision, Double) -> Void = { _, _ in },
                               progress: (Int, Double) -> Void = { _, _ in }) throws -> MachineTuning {
        let config = try ModelConfig.named(preset)
        let rule = ComputeContext.blockColumns(forL2: CPUCaches.current.l2)
        // First the precision `auto` should mean here, at the rule's width (where bf16 products run at all).
        var context = context
        var autoPrecision: String?, measuredPrecisions: [String: Double]?
        if case .success = OneDNN.bf16 {
            var rates: [String: Double] = [:]
            for p in [Precision.fp32, .bf16] {
                var c = context.with(precision: p)
                c.synthesisBlockColumns = rule
                rates[p.rawValue] = Benchmark.synthesis(config, seconds: seconds, repeats: repeats, context: c).samplesPerSecond
                progressPrecision(p, rates[p.rawValue]!)
            }
            let chosen: Precision = rates["bf16"]! > rates["fp32"]! ? .bf16 : .fp32
            (autoPrecision, measuredPrecisions) = (chosen.rawValue, rates)
            context = context.with(precision: chosen)
        }
        var measured: [String: Double] = [:]
        for columns in candidateBlockColumns {
            var c = context
            c.synthesisBlockColumns = columns
            // The rule's width in the chosen precision was measured just above.
            let rate = (columns == rule ? measuredPrecisions?[context.precision.rawValue] : nil)
                ?? Benchmark.synthesis(config, seconds: seconds, repeats: repeats, context: c).samplesPerSecond
            measured[String(columns)] = rate
            progress(columns, rate)
        }
        let chosen = choose(measured: measured, rule: rule, margin: margin)
        return MachineTuning(machine: machineKey, synthesisBlockColumns: chosen, measured: measured, preset: preset,
                             precision: context.precision.rawValue, date: ISO8601DateFormatter().string(from: Date()),
                             autoPrecision: autoPrecision, measuredPrecisions: measuredPrecisions)
    }
}

extension MachineTuning {
    /// The fastest measured width, or `rule` if that is within `margin` of it.
    static func choose(measured: [String: Double], rule: Int, margin: Double) -> Int {
        guard let best = measured.max(by: { $0.value < $1.value }), let width = Int(best.key) else { return rule }
        if let ruleRate = measured[String(rule)], best.value < ruleRate * (1 + margin) { return rule }
        return width
    }
}

/// Where the synthesis block width comes from, in order: the
/// `WAVEFLOW_BLOCK_COLUMNS` variable, a tuning measured on this machine,
/// the L2 size.
public struct BlockColumnsChoice: Sendable, Equatable {
    public var columns: Int
    public var source: String

    public static func resolve(environment: [String: String], tuning: Result<MachineTuning, WaveFlowError>, l2: Int?) -> BlockColumnsChoice {
        if let text = environment["WAVEFLOW_BLOCK_COLUMNS"], let n = Int(text), n >= 1 {
            return BlockColumnsChoice(columns: n, source: "WAVEFLOW_BLOCK_COLUMNS")
        }
        if case .success(let t) = tuning {
            return BlockColumnsChoice(columns: t.synthesisBlockColumns, source: "measured \(t.date.prefix(10)) by waveflow info --tune")
        }
        return BlockColumnsChoice(columns: ComputeContext.blockColumns(forL2: l2),
                                  source: l2 == nil ? "L2 size unknown" : "from the L2 size; waveflow info --tune measures")
    }

    /// This process's choice.
    public static let current = resolve(environment: ProcessInfo.processInfo.environment,
                                        tuning: MachineTuning.load(), l2: CPUCaches.current.l2)
}

/// What `--precision auto` runs on this machine, in order: fp32 where bf16
/// products are unavailable (no libdnnl2, or a CPU without AVX-512 BF16 or
/// AMX); the precision `waveflow info --tune` measured faster here; else a
/// rule from the CPU. bf16 pays where the CPU's bf16 products outrun its
/// Float32 multiply-adds: with AMX tiles, and on AMD's AVX-512 cores (Zen 4
/// runs a 512-bit FMA as two halves, so `vdpbf16ps` doubles the rate;
/// measured there: h16-c64 synthesis 1.29-1.32x fp32, training 1.11-1.14x).
/// On Intel cores with two 512-bit FMA ports and no AMX, `vdpbf16ps` only
/// matches the FMAs, and bf16 also gives up the Winograd products: on a Xeon
/// (family 6 model 207, AVX-512 BF16, no AMX) bf16 ran h16-c64 synthesis at
/// 0.43x and training at 0.54x of fp32, so fp32 it is.
public struct AutoPrecisionChoice: Sendable, Equatable {
    public var precision: Precision
    public var source: String

    public static func resolve(bf16Available: Bool, tuning: Result<MachineTuning, WaveFlowError>, cpu: CPUInfo) -> AutoPrecisionChoice {
        guard bf16Available else { return AutoPrecisionChoice(precision: .fp32, source: "bf16 unavailable") }
        if case .success(let t) = tuning, let name = t.autoPrecision, let p = Precision(rawValue: name) {
            return AutoPrecisionChoice(precision: p, source: "measured \(t.date.prefix(10)) by waveflow info --tune")
        }
        if cpu.hasAMX { return AutoPrecisionChoice(precision: .bf16, source: "AMX") }
        if cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine" {
            return AutoPrecisionChoice(precision: .bf16, source: "AMD AVX-512 BF16 (512-bit FMAs in two halves)")
        }
        return AutoPrecisionChoice(precision: .fp32, source: "bf16 products no faster than fp32 on this CPU without AMX; waveflow info --tune measures")
    }

    /// This process's choice.
    public static let current: AutoPrecisionChoice = {
        var available = false
        if case .success = OneDNN.bf16 { available = true }
        return resolve(bf16Available: available, tuning: MachineTuning.load(), cpu: .current)
    }()
}
