import Foundation

/// The safetensors format: 8-byte little-endian header length N, N bytes of
/// JSON header (`name -> {dtype, shape, data_offsets}` plus `__metadata__`),
/// then the raw little-endian tensor bytes. Only F32 is read or written.
public enum SafeTensors {
    /// Writes `tensors` (in the given order) and string `metadata` to `path`
    /// atomically.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String], to path: String) throws {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for (name, t) in tensors {
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]] as [String: Any]
            offset += 4 * t.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned.
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        for (_, t) in tensors {
            t.values.withUnsafeBufferPointer { buf in
                // Little-endian hosts (x86-64, arm64) store Float32 as the format does.
                out.append(UnsafeBufferPointer(start: UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: UInt8.self),
                                               count: buf.count * 4))
            }
        }
        try AtomicFile.write(out, to: path)
    }

    /// Reads and validates a safetensors file.
    /// - Throws: `WaveFlowError` naming the file and the problem: truncated,
    ///   header not JSON, a dtype other than F32, offsets that overlap or run
    ///   past the end, a size that does not match the shape.
    public static func read(_ path: String) throws -> (metadata: [String: String], tensors: [String: Tensor]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WaveFlowError(FileManager.default.fileExists(atPath: path) ? "cannot read file" : "no such file", path: path)
        }
        do { return try decode(data) } catch let e as WaveFlowError { throw e.at(path) }
    }

    public static func decode(_ data: Data) throws -> (metadata: [String: String], tensors: [String: Tensor]) {
        guard data.count >= 8 else { throw WaveFlowError("truncated: \(data.count) bytes, no header length") }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        // A header length whose low byte is 0x80 is no pickle: only call it
        // PyTorch when the bytes do not read as a safetensors header.
        let headerFits = n <= UInt64(data.count - 8) && data.count > 8 && data[data.startIndex + 8] == UInt8(ascii: "{")
        if !headerFits && (data.starts(with: [0x50, 0x4B, 0x03, 0x04]) || data.first == 0x80) {
            throw WaveFlowError("a PyTorch file (\(data.first == 0x80 ? "legacy pickle" : "zip archive")), not a safetensors checkpoint")
        }
        guard n <= UInt64(data.count - 8) else {
            throw WaveFlowError("not a safetensors file, or truncated: its first 8 bytes announce a header of \(n) bytes, "
                                + "the file has \(data.count)")
        }
        let headerData = data.subdata(in: 8 ..< 8 + Int(n))
        guard let object = try? JSONSerialization.jsonObject(with: headerData), let header = object as? [String: Any] else {
            throw WaveFlowError("header is not valid JSON")
        }
        let base = 8 + Int(n)
        let dataLength = data.count - base
        var metadata: [String: String] = [:]
        var spans: [(Int, Int, String)] = []
        var tensors: [String: Tensor] = [:]
        for name in header.keys.sorted() { // sorted: the same file always gives the same first error
            let value = header[name]!
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw WaveFlowError("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw WaveFlowError("metadata '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw WaveFlowError("tensor '\(name)' has a malformed header entry")
            }
            guard dtype == "F32" else { throw WaveFlowError("tensor '\(name)' has dtype \(dtype), expected F32") }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw WaveFlowError("tensor '\(name)' has a negative dimension") }
            let (start, end) = (offsets[0], offsets[1])
            guard start >= 0, end >= start, end <= dataLength else {
                throw WaveFlowError("tensor '\(name)' has offsets [\(start), \(end)] outside the \(dataLength) data bytes")
            }
            guard let count = elementCount(shape), count <= dataLength / 4 else {
                throw WaveFlowError("tensor '\(name)' has shape \(shape), more values than the file holds")
            }
            guard end - start == 4 * count else {
                throw WaveFlowError("tensor '\(name)' holds \(end - start) bytes, shape \(shape) needs \(4 * count)")
            }
            if end > start { spans.append((start, end, name)) } // empty tensors occupy no bytes
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in
                data.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(base + start) ..< (base + end)]))
                }
            }
            tensors[name] = Tensor(shape: shape, values: values)
        }
        spans.sort { $0.0 < $1.0 }
        for i in spans.indices.dropFirst() where spans[i].0 < spans[i - 1].1 {
            throw WaveFlowError("tensors '\(spans[i - 1].2)' and '\(spans[i].2)' overlap")
        }
        return (metadata, tensors)
    }
}

/// The number of elements of `shape`, or nil if the product overflows or a
/// dimension is negative (sizes read from files are checked with this).
func elementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        n = p
    }
    return n
}
