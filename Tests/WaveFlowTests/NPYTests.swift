import Foundation
import XCTest
@testable import WaveFlow

final class NPYTests: XCTestCase {
    func testReadsNumPyFixtures() throws {
        let expected = try NPY.read(fixture("npy_expected.npy"))
        XCTAssertEqual(expected.shape, [3, 5])
        for name in ["npy_v1_f4.npy", "npy_v2_f8_fortran.npy", "npy_v3_f4.npy", "npy_be_f4.npy"] {
            let a = try NPY.read(fixture(name))
            XCTAssertEqual(a.shape, [3, 5], name)
            XCTAssertEqual(a.values, expected.values, name)
        }
        let i2 = try NPY.read(fixture("npy_i2_1d.npy"))
        XCTAssertEqual(i2.shape, [6])
        XCTAssertEqual(i2.values, [0, 1, -1, 32767, -32768, 1234])
    }

    /// What we write is byte-for-byte what `numpy.save` writes for `<f4`.
    func testWritesWhatNumPyWrites() throws {
        let a = try NPY.read(fixture("npy_v1_f4.npy"))
        let numpyBytes = FileManager.default.contents(atPath: fixture("npy_v1_f4.npy"))!
        XCTAssertEqual(NPY.encode(a), numpyBytes)
        let dir = temporaryFolder(self)
        let one = NPYArray(shape: [4], values: [1, 2, 3, 4])
        try NPY.write(one, to: dir + "/a.npy")
        XCTAssertEqual(try NPY.read(dir + "/a.npy"), one)
    }

    func testMalformedFilesGiveClearErrors() {
        assertFails(["bad_magic.npy", "bad magic"]) { try NPY.read(fixture("bad_magic.npy")) }
        assertFails(["bad_header.npy", "fortran_order"]) { try NPY.read(fixture("bad_header.npy")) }
        assertFails(["bad_dtype.npy", "unsupported dtype"]) { try NPY.read(fixture("bad_dtype.npy")) }
        assertFails(["bad_truncated.npy", "truncated"]) { try NPY.read(fixture("bad_truncated.npy")) }
        assertFails(["nope.npy", "no such file"]) { try NPY.read("/nonexistent/nope.npy") }
    }
}
