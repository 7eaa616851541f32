import Foundation
import XCTest
@testable import WaveFlow

final class CheckpointTests: XCTestCase {
    func tinyModel() -> FlowModel<Float> {
        let m: FlowModel<Float> = ModelTests.randomModel(ModelTests.tinyConfig(), seed: 3)
        return m
    }

    func testRoundTripKeepsEveryTensorAndConfig() throws {
        let dir = temporaryFolder(self)
        let m = tinyModel()
        try Checkpoint.save(model: m, train: [("train.extra", Tensor(shape: [2], values: [1, 2]))],
                            extra: ["step": 7, "corpus": "x"], to: dir + "/a.safetensors")
        let ck = try Checkpoint.load(dir + "/a.safetensors")
        XCTAssertEqual(ck.config, m.config)
        XCTAssertEqual(ck.model.params.values, m.params.values)
        XCTAssertEqual(ck.trainTensors["train.extra"]?.values, [1, 2])
        XCTAssertEqual(ck.configJSON["step"] as? Int, 7)
    }

    /// A file in the spec's format written by "another program": hand-built
    /// header with a different key order, extra config keys and padding.
    func testForeignFileLoads() throws {
        let dir = temporaryFolder(self)
        let m = tinyModel()
        var header = "{\"__metadata__\":{\"format\":\"waveflow\",\"format_version\":\"1\",\"config\":"
        var cfg = m.config.json
        cfg.removeLast()
        cfg += ",\"trained_by\":\"someone else\"}"
        header += String(data: try JSONEncoder().encode(cfg), encoding: .utf8)! + "}"
        var body = Data()
        for v in m.params.views.reversed() { // data in another order than ours
            header += ",\"\(v.name)\":{\"shape\":\(v.shape),\"dtype\":\"F32\",\"data_offsets\":[\(body.count),\(body.count + 4 * v.count)]}"
            for x in m.params.valueBuffer[v.range] { withUnsafeBytes(of: x.bitPattern.littleEndian) { body.append(contentsOf: $0) } }
        }
        header += "}   "
        var file = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(Data(header.utf8)); file.append(body)
        try file.write(to: URL(fileURLWithPath: dir + "/foreign.safetensors"))
        let ck = try Checkpoint.load(dir + "/foreign.safetensors")
        XCTAssertEqual(ck.model.params.values, m.params.values)
    }

    /// Every failure the spec lists is refused with a message that names it.
    func testMalformedFilesAreRefused() throws {
        let dir = temporaryFolder(self)
        let m = tinyModel()
        let good = dir + "/good.safetensors"
        try Checkpoint.save(model: m, to: good)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let n = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let headerText = String(decoding: bytes[8 ..< 8 + n], as: UTF8.self)
        func write(_ name: String, _ data: Data) -> String {
            let p = dir + "/" + name
            try! data.write(to: URL(fileURLWithPath: p))
            return p
        }
        func withHeader(_ name: String, _ edit: (String) -> String) -> String {
            var h = edit(headerText)
            while h.utf8.count % 8 != 0 { h += " " }
            var d = Data()
            withUnsafeBytes(of: UInt64(h.utf8.count).littleEndian) { d.append(contentsOf: $0) }
            d.append(Data(h.utf8)); d.append(bytes[(8 + n)...])
            return write(name, d)
        }
        let firstWeight = "flows.0.input.weight"
        let cases: [(String, [String])] = [
            (write("truncated.safetensors", bytes.prefix(bytes.count - 10)), ["outside"]),
            (write("tiny.safetensors", bytes.prefix(5)), ["truncated"]),
            (write("headerpast.safetensors", bytes.prefix(8 + n / 2)), ["truncated"]),
            (withHeader("badjson.safetensors") { $0.replacingOccurrences(of: "{", with: "[", options: [], range: $0.range(of: "{")) }, ["not valid JSON"]),
            (withHeader("missing.safetensors") { h in
                let o = try! JSONSerialization.jsonObject(with: Data(h.utf8)) as! [String: Any]
                var d = o; d.removeValue(forKey: firstWeight)
                return String(decoding: try! JSONSerialization.data(withJSONObject: d), as: UTF8.self)
            }, ["missing tensor", firstWeight]),
            (withHeader("shape.safetensors") { h in
                var o = try! JSONSerialization.jsonObject(with: Data(h.utf8)) as! [String: Any]
                var e = o[firstWeight] as! [String: Any]
                let c = (e["shape"] as! [Int])[0]
                e["shape"] = [1, c, 1, 1]; o[firstWeight] = e
                return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
            }, ["shape", firstWeight]),
            (withHeader("dtype.safetensors") { h in
                var o = try! JSONSerialization.jsonObject(with: Data(h.utf8)) as! [String: Any]
                var e = o[firstWeight] as! [String: Any]
                e["dtype"] = "F16"; o[firstWeight] = e
                return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
            }, ["dtype F16"]),
            (withHeader("overlap.safetensors") { h in
                var o = try! JSONSerialization.jsonObject(with: Data(h.utf8)) as! [String: Any]
                let other = "flows.0.input.bias"
                var e = o[firstWeight] as! [String: Any], f = o[other] as! [String: Any]
                let fo = f["data_offsets"] as! [Int]
                e["data_offsets"] = [fo[0], fo[0] + (fo[1] - fo[0])]; e["shape"] = f["shape"]
                f["shape"] = e["shape"]; o[firstWeight] = e; o[other] = f
                return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
            }, ["overlap"]),
            (withHeader("version.safetensors") { $0.replacingOccurrences(of: "\"format_version\":\"1\"", with: "\"format_version\":\"9\"") }, ["format_version 9"]),
            (withHeader("unknown.safetensors") { h in
                var o = try! JSONSerialization.jsonObject(with: Data(h.utf8)) as! [String: Any]
                o["flows.0.mystery"] = ["dtype": "F32", "shape": [0], "data_offsets": [0, 0]]
                return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
            }, ["unexpected tensor"]),
        ]
        for (path, words) in cases {
            do {
                _ = try Checkpoint.load(path)
                XCTFail("\(path) loaded")
            } catch {
                let text = error.describe()
                XCTAssertTrue(text.contains(path), text)
                for w in words { XCTAssertTrue(text.contains(w), "\(path): '\(text)' lacks '\(w)'") }
            }
        }
    }
}
