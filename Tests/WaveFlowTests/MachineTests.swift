import XCTest
@testable import WaveFlow

/// Work sizes derived from the machine: cache sizes from sysfs and the
/// synthesis block they give.
final class MachineTests: XCTestCase {
    func testCacheSizesFromSysfs() throws {
        let root = temporaryFolder(self)
        let entries: [(Int, String, String)] = [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "512K"), (3, "Unified", "32M")]
        for (i, (level, type, size)) in entries.enumerated() {
            let dir = root + "/index\(i)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (name, value) in [("level", "\(level)"), ("type", type), ("size", size)] {
                try (value + "\n").write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
            }
        }
        let c = CPUCaches.read(root: root)
        XCTAssertEqual(c.l1d, 48 << 10) // the instruction cache is not the L1d
        XCTAssertEqual(c.l2, 512 << 10)
        XCTAssertEqual(c.l3, 32 << 20)
        XCTAssertEqual(c.description, "L1d 48 KB, L2 512 KB, L3 32768 KB")
        let none = CPUCaches.read(root: root + "/absent")
        XCTAssertNil(none.l2)
        XCTAssertEqual(none.description, "unknown")
    }

    /// 1024 columns per MB of L2 (the size measured best on a 1 MB L2), within bounds.
    func testSynthesisBlockFollowsL2() {
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 1 << 20), 1024)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 512 << 10), 512)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 2 << 20), 2048)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 64 << 10), 256)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 64 << 20), 4096)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: 1280 << 10), 1280)
        XCTAssertEqual(ComputeContext.blockColumns(forL2: nil), 1024)
    }

    /// A tuning file is used only on the machine that measured it; a corrupt
    /// or out-of-range one is ignored with a reason; the variable overrides.
    func testTuningCacheIsKeyedAndOverridable() throws {
        let dir = temporaryFolder(self)
        let path = dir + "/cache/waveflow/tuning.json"
        XCTAssertEqual(MachineTuning.defaultPath(environment: ["XDG_CACHE_HOME": dir + "/cache"]), path)
        XCTAssertEqual(MachineTuning.defaultPath(environment: ["HOME": "/home/u", "XDG_CACHE_HOME": "relative"]),
                       "/home/u/.cache/waveflow/tuning.json")
        func reason(_ r: Result<MachineTuning, WaveFlowError>) -> String {
            if case .failure(let e) = r { return e.description } else { return "used" }
        }
        XCTAssertTrue(reason(MachineTuning.load(from: path, key: "A")).contains("not measured"))
        let tuning = MachineTuning(machine: "A", synthesisBlockColumns: 2048, measured: ["1024": 10, "2048": 12],
                                   preset: "h16-c64", precision: "fp32", date: "2026-12-05T03:00:00Z")
        try tuning.save(to: path)
        XCTAssertEqual(try MachineTuning.load(from: path, key: "A").get(), tuning)
        XCTAssertTrue(reason(MachineTuning.load(from: path, key: "B")).contains("another machine"))
        let l2 = 512 << 10
        let fromFile = BlockColumnsChoice.resolve(environment: [:], tuning: MachineTuning.load(from: path, key: "A"), l2: l2)
        XCTAssertEqual(fromFile.columns, 2048)
        XCTAssertTrue(fromFile.source.contains("measured 2026-12-05"))
        XCTAssertEqual(BlockColumnsChoice.resolve(environment: [:], tuning: MachineTuning.load(from: path, key: "B"), l2: l2).columns, 512)
        XCTAssertEqual(BlockColumnsChoice.resolve(environment: ["WAVEFLOW_BLOCK_COLUMNS": "300"],
                                                  tuning: MachineTuning.load(from: path, key: "A"), l2: l2),
                       BlockColumnsChoice(columns: 300, source: "WAVEFLOW_BLOCK_COLUMNS"))
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertTrue(reason(MachineTuning.load(from: path, key: "A")).contains("not a tuning file"))
        var huge = tuning; huge.synthesisBlockColumns = 1 << 30
        try huge.save(to: path)
        XCTAssertTrue(reason(MachineTuning.load(from: path, key: "A")).contains("out of range"))
        XCTAssertFalse(MachineTuning.machineKey.isEmpty)
        // The measured best replaces the L2 rule only when clearly faster.
        let rates = ["256": 28490.0, "512": 29296, "1024": 27919, "2048": 29478, "4096": 22457]
        XCTAssertEqual(MachineTuning.choose(measured: rates, rule: 1024, margin: 0.06), 1024) // 2048 only 5.6% faster
        XCTAssertEqual(MachineTuning.choose(measured: rates, rule: 1024, margin: 0.03), 2048)
        XCTAssertEqual(MachineTuning.choose(measured: rates, rule: 512, margin: 0.03), 512)   // 2048 only 0.6% faster
        XCTAssertEqual(MachineTuning.choose(measured: rates, rule: 4096, margin: 0.03), 2048)
    }

    /// `--precision auto`: fp32 without bf16 products; else the precision the
    /// tuning measured faster; else bf16 only with AMX or on AMD.
    func testAutoPrecisionFollowsMeasurementThenCPU() throws {
        func cpu(_ vendor: String, _ flags: [String]) -> CPUInfo {
            CPUInfo(vendor: vendor, modelName: "test", family: 6, model: 207, flags: Set(["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"] + flags))
        }
        let none: Result<MachineTuning, WaveFlowError> = .failure(WaveFlowError("not measured"))
        let intel = cpu("GenuineIntel", ["avx512_bf16"]), amx = cpu("GenuineIntel", ["avx512_bf16", "amx_tile", "amx_bf16"])
        let amd = cpu("AuthenticAMD", ["avx512_bf16"])
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: true, tuning: none, cpu: intel).precision, .fp32)
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: true, tuning: none, cpu: amx).precision, .bf16)
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: true, tuning: none, cpu: amd).precision, .bf16)
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: false, tuning: none, cpu: amx).precision, .fp32)

        // A measurement wins over the rule, both ways, and survives the file; a file without one leaves the rule.
        let path = temporaryFolder(self) + "/tuning.json"
        var tuning = MachineTuning(machine: "A", synthesisBlockColumns: 1024, measured: ["1024": 10], preset: "h16-c64",
                                   precision: "fp32", date: "2026-12-05T03:00:00Z", autoPrecision: "bf16",
                                   measuredPrecisions: ["fp32": 10, "bf16": 12])
        try tuning.save(to: path)
        let measured = AutoPrecisionChoice.resolve(bf16Available: true, tuning: MachineTuning.load(from: path, key: "A"), cpu: intel)
        XCTAssertEqual(measured.precision, .bf16)
        XCTAssertTrue(measured.source.contains("measured 2026-12-05"))
        tuning.autoPrecision = "fp32"
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: true, tuning: .success(tuning), cpu: amd).precision, .fp32)
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: false, tuning: .success(tuning), cpu: amd).precision, .fp32)
        tuning.autoPrecision = nil // a file written before precisions were measured
        XCTAssertEqual(AutoPrecisionChoice.resolve(bf16Available: true, tuning: .success(tuning), cpu: amd).precision, .bf16)
        let old = #"{"machine":"A","synthesisBlockColumns":1024,"measured":{"1024":10},"preset":"h16-c64","precision":"bf16","date":"2026-01-01"}"#
        try Data(old.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertNil(try MachineTuning.load(from: path, key: "A").get().autoPrecision)
    }
}
