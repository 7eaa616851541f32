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
}
