import Foundation

/// A 1-D or 2-D array read from or written to NumPy's `.npy` format: the
/// project's one tensor type (`Tensor`, also used for safetensors). Values
/// are held as Float32 in C (row-major) order whatever the file held.
public typealias NPYArray = Tensor

/// The NumPy `.npy` file format, versions 1.0, 2.0 and 3.0.
///
/// Reads dtypes `<f4`, `>f4`, `<f8`, `>f8`, `<i2`, `>i2` in C or Fortran order,
/// 1-D and 2-D; writes version 1.0, `<f4`, C order.
public enum NPY {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] // "\x93NUMPY"

    /// Reads and validates `path`.
    /// - Throws: `WaveFlowError` naming the file: missing, bad magic,
    ///   unparsable header, unsupported dtype or rank, or too little data.
    public static func read(_ path: String) throws -> NPYArray {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WaveFlowError(FileManager.default.fileExists(atPath: path) ? "cannot read file: \(readFailure(path))" : "no such file", path: path)
        }
        do { return try decode(data) } catch let e as WaveFlowError { throw e.at(path) }
    }

    /// Decodes the bytes of a `.npy` file.
    public static func decode(_ data: Data) throws -> NPYArray {
        let bytes = [UInt8](data)
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw WaveFlowError("not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw WaveFlowError(".npy header is truncated") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw WaveFlowError("unsupported .npy format version \(major).\(bytes[7])")
        }
        guard headerStart + headerLength <= bytes.count else { throw WaveFlowError(".npy header is truncated") }
        let encoding: String.Encoding = major == 3 ? .utf8 : .isoLatin1
        guard let header = String(bytes: bytes[headerStart ..< headerStart + headerLength], encoding: encoding) else {
            throw WaveFlowError(".npy header is not text")
        }
        let (descr, fortran, shape) = try parseHeader(header)
        guard shape.count == 1 || shape.count == 2 else {
            throw WaveFlowError("expected a 1-D or 2-D array, found shape \(shape)")
        }
        let body = headerStart + headerLength
        guard let count = elementCount(shape), count <= (bytes.count - body) else {
            throw WaveFlowError("shape \(shape) holds more values than the file's \(bytes.count - body) data bytes")
        }
        let width: Int
        switch descr.dropFirst() {
        case "f4": width = 4
        case "f8": width = 8
        case "i2": width = 2
        default: throw WaveFlowError("unsupported dtype '\(descr)' (expected <f4, <f8, >f4 or <i2)")
        }
        let order = descr.first!
        guard order == "<" || order == ">" || (order == "|" && width == 1) else {
            throw WaveFlowError("unsupported dtype '\(descr)'")
        }
        guard bytes.count - body >= count * width else {
            throw WaveFlowError("data is truncated: \(bytes.count - body) bytes for \(count) values of \(width) bytes")
        }
        let bigEndian = order == ">"
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            let p = raw.baseAddress! + body
            for i in 0..<count {
                switch width {
                case 4:
                    var bits = p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                    bits = bigEndian ? UInt32(bigEndian: bits) : UInt32(littleEndian: bits)
                    values[i] = Float(bitPattern: bits)
                case 8:
                    var bits = p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)
                    bits = bigEndian ? UInt64(bigEndian: bits) : UInt64(littleEndian: bits)
                    values[i] = Float(Double(bitPattern: bits))
                default:
                    var bits = p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                    bits = bigEndian ? UInt16(bigEndian: bits) : UInt16(littleEndian: bits)
                    values[i] = Float(Int16(bitPattern: bits))
                }
            }
        }
        var array = NPYArray(shape: shape, values: values)
        if fortran && shape.count == 2 {
            // Column-major storage of [r, c] is row-major storage of [c, r].
            array = NPYArray(shape: [shape[1], shape[0]], values: values).transposed()
        }
        return array
    }

    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (80, 100), }`.
    static func parseHeader(_ header: String) throws -> (String, Bool, [Int]) {
        func value(of key: String) throws -> Substring {
            guard let k = header.range(of: "'\(key)'") else {
                throw WaveFlowError("unparsable .npy header (no '\(key)'): \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            var rest = header[k.upperBound...].drop { $0 == " " }
            guard rest.first == ":" else { throw WaveFlowError("unparsable .npy header near '\(key)'") }
            rest = rest.dropFirst().drop { $0 == " " }
            return rest
        }
        let d = try value(of: "descr")
        guard let q = d.first, q == "'" || q == "\"", let end = d.dropFirst().firstIndex(of: q) else {
            throw WaveFlowError("unparsable .npy header: bad descr")
        }
        let descr = String(d[d.index(after: d.startIndex) ..< end])
        let f = try value(of: "fortran_order")
        let fortran: Bool
        if f.hasPrefix("True") { fortran = true } else if f.hasPrefix("False") { fortran = false } else {
            throw WaveFlowError("unparsable .npy header: bad fortran_order")
        }
        let s = try value(of: "shape")
        guard s.first == "(", let close = s.firstIndex(of: ")") else {
            throw WaveFlowError("unparsable .npy header: bad shape")
        }
        var shape: [Int] = []
        for part in s[s.index(after: s.startIndex) ..< close].split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let n = Int(t), n >= 0 else { throw WaveFlowError("unparsable .npy header: bad shape") }
            shape.append(n)
        }
        return (descr, fortran, shape)
    }

    /// The bytes of a version-1.0 `.npy` file holding `array` as `<f4`, C order.
    public static func encode(_ array: NPYArray) -> Data {
        let dims = array.shape.count == 1 ? "(\(array.shape[0]),)" : "(\(array.shape.map(String.init).joined(separator: ", ")))"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(dims), }"
        // Magic (6) + version (2) + length (2) + header + '\n', padded to 64.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data(magic)
        out.append(contentsOf: [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        out.append(contentsOf: Array(header.utf8))
        array.values.withUnsafeBufferPointer { buf in
            for v in buf {
                var le = v.bitPattern.littleEndian
                withUnsafeBytes(of: &le) { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// Writes `array` to `path` atomically.
    public static func write(_ array: NPYArray, to path: String) throws {
        try AtomicFile.write(encode(array), to: path)
    }
}

/// Why `path` cannot be opened for reading, in the OS's words.
func readFailure(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    if fd < 0 { return String(cString: strerror(errno)) }
    close(fd)
    var st = stat()
    if stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR { return "it is a folder" }
    return "read failed"
}
