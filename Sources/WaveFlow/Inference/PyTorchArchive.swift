import Foundation

/// A file written by `torch.save`, opened without Python (issue 19): the
/// unpickled object (`root`, values of `Unpickler`) and the storages its
/// tensors refer to. Both containers:
///
/// - **zip** (PyTorch >= 1.6): `<archive>/data.pkl` (the pickle) and
///   `<archive>/data/<key>` (one stored, uncompressed entry per storage);
///   read through the central directory (zip64 where sizes demand), every
///   entry's local header checked and its CRC-32 verified.
/// - **legacy**: five pickles in a row (the magic number
///   0x1950a86a20f9469cfc6c, the protocol version 1001, a system-info dict,
///   the object, the list of storage keys), then per key an 8-byte
///   little-endian element count and the raw bytes.
///
/// Persistent ids `('storage', type, key, location, numel)` become
/// `TorchStorage`s; nothing is read from a storage until a tensor is
/// converted (`TorchTensor.floats()`), so optimizer state costs nothing.
struct PyTorchArchive {
    enum Container: String { case zip = "zip archive (PyTorch >= 1.6)", legacy = "legacy PyTorch format (before 1.6)" }

    let container: Container
    let root: PickleValue
    /// Owns every compound value of `root`; emptied by `close()`.
    let arena: PickleArena
    /// Storages by key.
    let storages: [String: TorchStorage]

    /// Frees the unpickled values (deeply nested or cyclic ones without recursion).
    func close() { arena.clear() }

    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    /// Whether `head` (a file's first bytes) starts a zip archive or a legacy
    /// torch.save file (a pickled LONG1 of the magic number).
    static func looksLikePyTorch(_ head: Data) -> Bool {
        let b = [UInt8](head.prefix(14))
        if b.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return true }
        return b.count == 14 && b[0] == 0x80 && (2...5).contains(b[1]) && b[2] == 0x8A && b[3] == 0x0A
            && Array(b[4..<14]) == legacyMagic
    }

    /// Whether the file at `path` looks like a PyTorch file (false if unreadable).
    static func looksLikePyTorch(path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return looksLikePyTorch((try? h.read(upToCount: 16)) ?? Data())
    }

    /// Opens the bytes of a torch.save file.
    static func open(_ data: Data) throws -> PyTorchArchive {
        if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return try openZip(data) }
        if looksLikePyTorch(data.prefix(16)) { return try openLegacy(data) }
        if data.starts(with: [0x80]) {
            throw WaveFlowError("not a PyTorch file: a plain pickle (neither a torch.save zip archive nor the legacy torch.save magic number)")
        }
        throw WaveFlowError("not a PyTorch file (neither a zip archive nor the legacy torch.save magic number)")
    }

    // MARK: - zip

    private static func openZip(_ data: Data) throws -> PyTorchArchive {
        let zip = try ZipReader(data)
        let pickles = zip.entries.keys.filter { $0.hasSuffix("/data.pkl") && $0.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
        guard let pkl = pickles.sorted().first else {
            if zip.entries.keys.contains(where: { $0.hasSuffix("constants.pkl") || $0.contains("/code/") }) {
                throw WaveFlowError("a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
            }
            throw WaveFlowError("a zip archive without <archive>/data.pkl: not a torch.save checkpoint")
        }
        let prefix = String(pkl.dropLast("data.pkl".count))
        if let order = zip.entries[prefix + "byteorder"] {
            let text = String(decoding: try zip.contents(order), as: UTF8.self)
            guard text == "little" else { throw WaveFlowError("storages are stored \(text)-endian; only little-endian is read") }
        }
        let pickle = try zip.contents(zip.entries[pkl]!)
        var storages: [String: TorchStorage] = [:]
        let arena = PickleArena()
        let load: (PickleValue) throws -> PickleValue = { pid in
            guard let t = pid.items, t.count == 5, t[0].string == "storage" else {
                throw WaveFlowError("pickle: persistent id \(pid.kind) is not ('storage', type, key, location, numel)")
            }
            let (type, key) = (try storageType(t[1]), t[2].string ?? "")
            guard let numel = t[4].int, numel >= 0 else { throw WaveFlowError("storage '\(printable(key))' has no valid element count") }
            if let s = storages[key] {
                guard s.dtype == type, s.count == numel else { throw WaveFlowError("storage '\(printable(key))' is referenced with two types or sizes") }
                return .storage(s)
            }
            guard let entry = zip.entries[prefix + "data/" + key] else {
                throw WaveFlowError("storage '\(printable(key))' is missing from the archive (no \(printable(prefix))data/\(printable(key)))")
            }
            let (bytes, overflow) = numel.multipliedReportingOverflow(by: type.size)
            guard !overflow, bytes == entry.size else {
                throw WaveFlowError("storage '\(printable(key))' holds \(entry.size) bytes, \(numel) \(type.name) elements need \(numel) x \(type.size)")
            }
            let s = TorchStorage(key: key, dtype: type, count: numel)
            s.loader = { try zip.contents(entry) } // read (and CRC-checked) only if a tensor of it is converted
            storages[key] = s
            return .storage(s)
        }
        let root: PickleValue
        do {
            let (value, end) = try Unpickler(arena: arena, persistentLoad: load).run(pickle)
            guard end == pickle.count else { throw WaveFlowError("pickle: \(pickle.count - end) bytes after STOP in data.pkl") }
            root = value
        } catch {
            arena.clear()
            throw error
        }
        return PyTorchArchive(container: .zip, root: root, arena: arena, storages: storages)
    }

    // MARK: - legacy

    private static func openLegacy(_ data: Data) throws -> PyTorchArchive {
        let arena = PickleArena()
        do {
            let plain = Unpickler(arena: arena)
            let (magic, p1) = try plain.run(data, from: 0)
            guard case .bigInt(let m) = magic, m == legacyMagic else { throw WaveFlowError("legacy PyTorch file with a wrong magic number") }
            let (version, p2) = try plain.run(data, from: p1)
            guard version.int == 1001 else { throw WaveFlowError("legacy PyTorch protocol version \(version.int.map(String.init) ?? version.kind) (this reader knows 1001)") }
            let (info, p3) = try plain.run(data, from: p2)
            if case .dict(let d) = info, case .bool(false)? = d["little_endian"] {
                throw WaveFlowError("saved on a big-endian machine; only little-endian files are read")
            }
            var storages: [String: TorchStorage] = [:]
            let load: (PickleValue) throws -> PickleValue = { pid in
                guard let t = pid.items, let tag = t.first?.string else { throw WaveFlowError("pickle: persistent id \(pid.kind) is not a tagged tuple") }
                if tag == "module", t.count >= 2 { return t[1] } // ('module', class, source file, source): the class only, source unused
                guard tag == "storage", t.count == 6 else { throw WaveFlowError("pickle: persistent id ('\(tag)', …) is not a storage") }
                let (type, key) = (try storageType(t[1]), t[2].string ?? "")
                guard let numel = t[4].int, numel >= 0 else { throw WaveFlowError("storage '\(printable(key))' has no valid element count") }
                let root: TorchStorage
                if let s = storages[key] {
                    guard s.dtype == type, s.count == numel else { throw WaveFlowError("storage '\(printable(key))' is referenced with two types or sizes") }
                    root = s
                } else {
                    root = TorchStorage(key: key, dtype: type, count: numel)
                    storages[key] = root
                }
                // view_metadata (files of PyTorch < 0.4): (view key, offset, size) within the root storage.
                if let view = t[5].items {
                    guard view.count == 3, let offset = view[1].int, let size = view[2].int, offset >= 0, size >= 0,
                          offset <= numel, size <= numel - offset else {
                        throw WaveFlowError("storage '\(printable(key))' has a view outside it")
                    }
                    return .storage(TorchStorage(viewOf: root, offset: offset, count: size))
                }
                return .storage(root)
            }
            let (root, p4) = try Unpickler(arena: arena, persistentLoad: load).run(data, from: p3)
            let (keys, p5) = try plain.run(data, from: p4)
            guard let keyList = keys.items else { throw WaveFlowError("legacy PyTorch file: the storage key list is \(keys.kind)") }
            var pos = p5
            var seen = Set<String>()
            for k in keyList {
                guard let key = k.string, let s = storages[key], !seen.contains(key) else {
                    throw WaveFlowError("legacy PyTorch file: storage key \(k.kind) is listed twice or never used")
                }
                seen.insert(key)
                guard data.count - pos >= 8 else { throw WaveFlowError("truncated: storage '\(printable(key))' has no element count (at byte \(pos))") }
                let count = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: pos, as: UInt64.self)) }
                guard count == UInt64(s.count) else { throw WaveFlowError("storage '\(printable(key))' holds \(count) elements, its tensors were saved with \(s.count)") }
                pos += 8
                guard s.count <= (data.count - pos) / s.dtype.size else {
                    throw WaveFlowError("truncated: storage '\(printable(key))' needs \(s.count) x \(s.dtype.size) bytes at byte \(pos), the file has \(data.count - pos) left")
                }
                let n = s.count * s.dtype.size
                let range = data.startIndex + pos ..< data.startIndex + pos + n
                s.loader = { data.subdata(in: range) }
                pos += n
            }
            for key in storages.keys.sorted() where !seen.contains(key) {
                throw WaveFlowError("legacy PyTorch file: storage '\(printable(key))' is used but not in the key list")
            }
            return PyTorchArchive(container: .legacy, root: root, arena: arena, storages: storages)
        } catch {
            arena.clear()
            throw error
        }
    }

    /// `torch.FloatStorage` (or `torch.cuda.…`, or the dtype itself) as a `TorchDType`.
    static func storageType(_ v: PickleValue) throws -> TorchDType {
        guard case .global(let module, let name) = v, module == "torch" || module == "torch.cuda",
              let t = TorchDType(storageName: name) else {
            throw WaveFlowError("storage type \(v.kind) is not a torch storage type")
        }
        return t
    }
}

/// The element types of torch storages.
enum TorchDType: Equatable {
    case float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool, complex64, complex128

    init?(storageName: String) {
        switch storageName {
        case "FloatStorage", "float32": self = .float32
        case "DoubleStorage", "float64": self = .float64
        case "HalfStorage", "float16": self = .float16
        case "BFloat16Storage", "bfloat16": self = .bfloat16
        case "LongStorage", "int64": self = .int64
        case "IntStorage", "int32": self = .int32
        case "ShortStorage", "int16": self = .int16
        case "CharStorage", "int8": self = .int8
        case "ByteStorage", "UntypedStorage", "uint8": self = .uint8
        case "BoolStorage", "bool": self = .bool
        case "ComplexFloatStorage", "complex64": self = .complex64
        case "ComplexDoubleStorage", "complex128": self = .complex128
        default: return nil
        }
    }

    /// Bytes per element.
    var size: Int {
        switch self {
        case .float64, .int64, .complex64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        case .complex128: return 16
        }
    }

    var name: String { "\(self)" }
}

/// One storage: `count` elements of `dtype`, read from the container on
/// first use (`loader`), or a view of another storage (legacy files of
/// PyTorch < 0.4).
final class TorchStorage {
    let key: String
    let dtype: TorchDType
    let count: Int
    /// Reads the storage's bytes from the container (set once located).
    var loader: (() throws -> Data)?
    private var bytes: Data?
    let base: TorchStorage?
    let baseOffset: Int

    init(key: String, dtype: TorchDType, count: Int) {
        self.key = key; self.dtype = dtype; self.count = count; base = nil; baseOffset = 0
    }

    init(viewOf root: TorchStorage, offset: Int, count: Int) {
        key = root.key; dtype = root.dtype; self.count = count; base = root; baseOffset = offset
    }

    /// The bytes of this storage's elements (`count * dtype.size`).
    func data() throws -> Data {
        if let base {
            let all = try base.data()
            let start = all.startIndex + baseOffset * dtype.size
            return all.subdata(in: start ..< start + count * dtype.size)
        }
        if bytes == nil, let loader { bytes = try loader() }
        guard let bytes, bytes.count == count * dtype.size else { throw WaveFlowError("storage '\(printable(key))' has no data in the file") }
        return bytes
    }
}

/// A tensor of a torch.save file: a strided view of a storage, checked when
/// rebuilt to lie inside it.
final class TorchTensor {
    let storage: TorchStorage
    let offset: Int
    let shape: [Int]
    let strides: [Int]
    /// The element count (checked not to overflow, nor to exceed the storage's).
    let count: Int

    static let maxRank = 16

    init(storage: TorchStorage, offset: Int, shape: [Int], strides: [Int]) throws {
        func bad(_ m: String) -> WaveFlowError { WaveFlowError("a tensor of shape \(shape), strides \(strides), offset \(offset) \(m)") }
        guard shape.count == strides.count, shape.count <= Self.maxRank else { throw bad("has a malformed size or stride") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else { throw bad("has a negative size, stride or offset") }
        guard let n = elementCount(shape) else { throw bad("has too many elements") }
        if n > 0 {
            var last = offset
            for (d, s) in zip(shape, strides) {
                let (step, o1) = (d - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else { throw bad("runs past its storage") }
                last = sum
            }
            guard last < storage.count else { throw bad("runs past its storage of \(storage.count) elements") }
            guard n <= storage.count else { throw bad("has more elements than its storage (\(storage.count))") }
        }
        self.storage = storage; self.offset = offset; self.shape = shape; self.strides = strides; count = n
    }

    var isFloatingPoint: Bool { [.float32, .float64, .float16, .bfloat16].contains(storage.dtype) }

    /// The values in row-major order as Float32 (FP16, BF16 and F64 converted).
    func floats() throws -> [Float] {
        guard isFloatingPoint else { throw WaveFlowError("has dtype \(storage.dtype.name), not a floating-point type") }
        let data = try storage.data()
        let dtype = storage.dtype
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        data.withUnsafeBytes { raw in
            func element(_ i: Int) -> Float {
                let o = i * dtype.size
                switch dtype {
                case .float32: return raw.loadUnaligned(fromByteOffset: o, as: Float.self)
                case .float64: return Float(raw.loadUnaligned(fromByteOffset: o, as: Double.self))
                case .float16: return halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
                default: // bfloat16: the high half of a Float32
                    return Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self))) << 16)
                }
            }
            // Odometer over the shape; `index` is the storage element of `out[i]`.
            let rank = shape.count
            var idx = [Int](repeating: 0, count: rank)
            var index = offset
            for i in 0 ..< count {
                out[i] = element(index)
                var d = rank - 1
                while d >= 0 {
                    // Wrapping: a size-1 dimension may carry any stride (never applied).
                    idx[d] += 1
                    index &+= strides[d]
                    if idx[d] < shape[d] { break }
                    index &-= strides[d] &* shape[d]
                    idx[d] = 0
                    d -= 1
                }
            }
        }
        return out
    }
}

/// IEEE half precision to Float32 (subnormals, infinities and NaN kept).
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int(h >> 10) & 0x1F
    let mant = UInt32(h & 0x3FF)
    if exp == 0 { // zero or subnormal: mant * 2^-24
        let v = Float(mant) * Float(bitPattern: 0x3380_0000)
        return sign == 0 ? v : -v
    }
    if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
    return Float(bitPattern: sign | (UInt32(exp + 112) << 23) | (mant << 13))
}

// MARK: - zip reading

/// The entries of a zip archive, from its central directory.
struct ZipReader {
    struct Entry {
        let name: String
        let method: Int
        let flags: Int
        let crc: UInt32
        /// Where the entry's (stored) bytes are, relative to the archive's start.
        let start: Int
        let size: Int
    }

    let data: Data
    private(set) var entries: [String: Entry] = [:]

    init(_ data: Data) throws {
        self.data = data
        let n = data.count
        func u16(_ o: Int) throws -> Int { try read(o, 2) }
        func u32(_ o: Int) throws -> Int { try read(o, 4) }
        func u64(_ o: Int) throws -> Int { try read(o, 8) }
        func read(_ o: Int, _ w: Int) throws -> Int {
            guard o >= 0, o <= n - w else { throw WaveFlowError("truncated: zip structure at byte \(o) runs past the end (\(n) bytes)") }
            var v: UInt64 = 0
            data.withUnsafeBytes { raw in for i in 0..<w { v |= UInt64(raw[o + i]) << (8 * UInt64(i)) } }
            guard v <= UInt64(Int.max) else { throw WaveFlowError("zip: a size or offset of \(v) bytes") }
            return Int(v)
        }
        // End of central directory: the last signature within the final 64 KiB + 22 bytes.
        var eocd = -1
        var p = n - 22
        while p >= max(0, n - 22 - 65535) {
            if try u32(p) == 0x0605_4B50 { eocd = p; break }
            p -= 1
        }
        guard eocd >= 0 else { throw WaveFlowError("truncated, or not a zip archive: no end of central directory (a PyTorch zip checkpoint ends with one)") }
        var count = try u16(eocd + 10), cdSize = try u32(eocd + 12), cdOffset = try u32(eocd + 16)
        let disk = try u16(eocd + 4)
        guard disk == 0 || disk == 0xFFFF else { throw WaveFlowError("a multi-disk zip archive") }
        var cdLimit = eocd
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // zip64: the locator just before the end record points to the zip64 end record.
            let loc = eocd - 20
            guard loc >= 0, try u32(loc) == 0x0706_4B50 else { throw WaveFlowError("zip64 archive without its end-of-directory locator") }
            let z = try u64(loc + 8)
            guard z <= loc - 56, try u32(z) == 0x0606_4B50 else { throw WaveFlowError("zip64 end of central directory not found at byte \(z)") }
            count = try u64(z + 32); cdSize = try u64(z + 40); cdOffset = try u64(z + 48)
            cdLimit = z
        }
        guard cdOffset <= cdLimit, cdSize <= cdLimit - cdOffset else {
            throw WaveFlowError("truncated: the zip central directory (\(cdSize) bytes at \(cdOffset)) runs past the end")
        }
        guard count <= cdSize / 46 else { throw WaveFlowError("zip: \(count) entries cannot fit in a central directory of \(cdSize) bytes") }
        p = cdOffset
        let cdEnd = cdOffset + cdSize
        for _ in 0..<count {
            guard p <= cdEnd - 46, try u32(p) == 0x0201_4B50 else { throw WaveFlowError("zip: damaged central directory at byte \(p)") }
            let flags = try u16(p + 8), method = try u16(p + 10)
            let crc = UInt32(try u32(p + 16))
            var compSize = try u32(p + 20), size = try u32(p + 24)
            let nameLen = try u16(p + 28), extraLen = try u16(p + 30), commentLen = try u16(p + 32)
            var local = try u32(p + 42)
            let next = p + 46 + nameLen + extraLen + commentLen
            guard next <= cdEnd else { throw WaveFlowError("zip: damaged central directory at byte \(p)") }
            let name = String(decoding: data.subdata(in: data.startIndex + p + 46 ..< data.startIndex + p + 46 + nameLen), as: UTF8.self)
            // zip64 extra field (id 1): the 0xFFFFFFFF fields, in this order.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = try u16(e), len = try u16(e + 2)
                guard e + 4 + len <= extraEnd else { throw WaveFlowError("zip: damaged extra field of entry '\(printable(name))'") }
                if id == 1 {
                    var f = e + 4
                    func field() throws -> Int {
                        guard f + 8 <= e + 4 + len else { throw WaveFlowError("zip: short zip64 field of entry '\(printable(name))'") }
                        defer { f += 8 }
                        return try u64(f)
                    }
                    if size == 0xFFFF_FFFF { size = try field() }
                    if compSize == 0xFFFF_FFFF { compSize = try field() }
                    if local == 0xFFFF_FFFF { local = try field() }
                }
                e += 4 + len
            }
            guard entries[name] == nil else { throw WaveFlowError("zip: entry '\(printable(name))' appears twice") }
            // The local header: signature, then name and extra lengths of its own.
            guard local <= cdOffset - 30, try u32(local) == 0x0403_4B50 else {
                throw WaveFlowError("zip: entry '\(printable(name))' has no local header at byte \(local)")
            }
            let start = local + 30 + (try u16(local + 26)) + (try u16(local + 28))
            guard start <= cdOffset, compSize <= cdOffset - start else {
                throw WaveFlowError("truncated: zip entry '\(printable(name))' (\(compSize) bytes at \(start)) runs past its archive's data")
            }
            guard method != 0 || compSize == size else { throw WaveFlowError("zip: stored entry '\(printable(name))' has two different sizes") }
            entries[name] = Entry(name: name, method: method, flags: flags, crc: crc, start: start,
                                  size: method == 0 ? size : compSize)
            p = next
        }
    }

    /// An entry's bytes, CRC-checked; compressed or encrypted entries are refused.
    func contents(_ e: Entry) throws -> Data {
        guard e.flags & 1 == 0 else { throw WaveFlowError("zip entry '\(printable(e.name))' is encrypted") }
        guard e.method == 0 else {
            throw WaveFlowError("zip entry '\(printable(e.name))' is compressed (method \(e.method)\(e.method == 8 ? ", deflate" : "")); "
                                + "torch.save stores entries uncompressed and this reader does not inflate them (re-save the file with torch.save)")
        }
        let bytes = data.subdata(in: data.startIndex + e.start ..< data.startIndex + e.start + e.size)
        let crc = CRC32.checksum(bytes)
        guard crc == e.crc else {
            throw WaveFlowError("zip entry '\(printable(e.name))' is damaged (CRC-32 " + String(format: "%08x, the directory says %08x)", crc, e.crc))
        }
        return bytes
    }
}

/// CRC-32 (IEEE 802.3, zip's), slicing by 8 bytes.
enum CRC32 {
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()

    static func checksum(_ data: Data) -> UInt32 {
        let t = tables.flatMap { $0 }
        return t.withUnsafeBufferPointer { tb in
            data.withUnsafeBytes { raw -> UInt32 in
                var c: UInt32 = 0xFFFF_FFFF
                var i = 0
                let n = raw.count
                while i + 8 <= n {
                    let lo = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ c
                    let hi = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                    c = tb[7 * 256 + Int(lo & 0xFF)] ^ tb[6 * 256 + Int((lo >> 8) & 0xFF)]
                        ^ tb[5 * 256 + Int((lo >> 16) & 0xFF)] ^ tb[4 * 256 + Int(lo >> 24)]
                        ^ tb[3 * 256 + Int(hi & 0xFF)] ^ tb[2 * 256 + Int((hi >> 8) & 0xFF)]
                        ^ tb[1 * 256 + Int((hi >> 16) & 0xFF)] ^ tb[Int(hi >> 24)]
                    i += 8
                }
                while i < n {
                    c = tb[Int((c ^ UInt32(raw[i])) & 0xFF)] ^ (c >> 8)
                    i += 1
                }
                return c ^ 0xFFFF_FFFF
            }
        }
    }
}
