import Foundation

// A pickle reader that runs no code (issue 19): it understands the opcodes
// torch.save writes (protocol 2, and the protocol 4 additions) and builds
// plain values from them. A class the pickle names becomes an inert record
// (`PickleObject`: its name and the state BUILD gave it); the only callables
// it "calls" are a fixed allow-list of constructors it re-implements itself
// (OrderedDict, set, the tensor rebuilders). Anything else is refused with an
// error naming the opcode or the global. Every length is checked against the
// bytes left; stack, mark, memo and object counts are bounded.

/// A value on the pickle machine's stack. Compound values are class
/// instances owned by a `PickleArena`, so that dropping a deeply nested or
/// cyclic structure never recurses (the arena empties them one by one).
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer beyond Int64: little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleList)
    case list(PickleList)
    case set(PickleList)
    case dict(PickleDict)
    /// A reference to `module.name`, never imported.
    case global(module: String, name: String)
    case object(PickleObject)
    case storage(TorchStorage)
    case tensor(TorchTensor)

    /// A few words for error messages ("a list", "a glow.WaveGlow record").
    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int, .bigInt: return "an integer"
        case .float: return "a float"
        case .string(let s): return "the string '\(printable(s, limit: 40))'"
        case .bytes: return "bytes"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .set: return "a set"
        case .dict: return "a dict"
        case .global(let m, let n): return "the global \(printable(m)).\(printable(n))"
        case .object(let o): return "a \(o.qualifiedName) record"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }

    var string: String? { if case .string(let s) = self { return s }; return nil }
    var int: Int? { if case .int(let i) = self { return i }; return nil }
    /// The items of a tuple or a list.
    var items: [PickleValue]? {
        switch self {
        case .tuple(let l), .list(let l): return l.items
        default: return nil
        }
    }
    /// A tuple or list of integers (sizes, strides, kernel sizes).
    var ints: [Int]? {
        guard let items else { return nil }
        var out: [Int] = []
        for v in items { guard let i = v.int else { return nil }; out.append(i) }
        return out
    }
}

/// A string read from a file, fit for a one-line message: control
/// characters shown as '?', at most `limit` characters (then '…').
func printable(_ s: String, limit: Int = 80) -> String {
    var out = ""
    for (i, ch) in s.unicodeScalars.enumerated() {
        if i == limit { out += "…"; break }
        out.unicodeScalars.append(ch.properties.generalCategory == .control || ch == "\u{2028}" || ch == "\u{2029}" ? "?" : ch)
    }
    return out
}

/// Something the arena empties when the pickle's values are dropped.
protocol PickleContainer: AnyObject { func clear() }

/// A Python list, tuple or set's items (reference semantics: APPEND mutates
/// a list that other values may already hold).
final class PickleList: PickleContainer {
    var items: [PickleValue]
    init(_ items: [PickleValue] = []) { self.items = items }
    func clear() { items = [] }
}

/// A Python dict or OrderedDict: entries in insertion order (a later entry
/// with an equal key wins on lookup), plus any state BUILD set on it (a
/// state dict's `_metadata`).
final class PickleDict: PickleContainer {
    var entries: [(key: PickleValue, value: PickleValue)] = []
    var state: PickleValue?
    func clear() { entries = []; state = nil }

    subscript(key: String) -> PickleValue? {
        for e in entries.reversed() { if case .string(let k) = e.key, k == key { return e.value } }
        return nil
    }
}

/// An instance of a class this reader does not construct (a module, an
/// optimizer): the class's name, its NEWOBJ arguments and its BUILD state.
final class PickleObject: PickleContainer {
    let module: String, name: String
    var args: [PickleValue]
    var state: PickleValue?
    init(module: String, name: String, args: [PickleValue]) { self.module = module; self.name = name; self.args = args }
    func clear() { args = []; state = nil }

    var qualifiedName: String { "\(printable(module)).\(printable(name))" }
    /// The instance's `__dict__` (BUILD state, or the first item of a (dict, slots) state).
    var attributes: PickleDict? {
        switch state {
        case .dict(let d)?: return d
        case .tuple(let t)?: if case .dict(let d)? = t.items.first { return d }; return nil
        default: return nil
        }
    }
}

/// Owns every compound value one unpickling made; `clear()` empties them all
/// (no recursive release, cycles broken).
final class PickleArena {
    private(set) var containers: [PickleContainer] = []
    /// At most this many lists, dicts, tuples and records per file.
    static let maxContainers = 4_000_000

    func add<T: PickleContainer>(_ c: T) throws -> T {
        guard containers.count < Self.maxContainers else {
            throw WaveFlowError("pickle: more than \(Self.maxContainers) containers")
        }
        containers.append(c)
        return c
    }

    func clear() {
        for c in containers { c.clear() }
        containers = []
    }

    deinit { clear() }
}

/// The pickle machine. `run` executes from an offset to STOP and returns
/// the value and the offset after STOP.
struct Unpickler {
    static let maxStack = 1 << 22
    static let maxMarks = 1 << 16
    static let maxMemo = 1 << 22
    static let maxNameLength = 512

    let arena: PickleArena
    /// Maps a persistent id (BINPERSID) to a value; nil refuses persistent ids.
    var persistentLoad: ((PickleValue) throws -> PickleValue)?

    init(arena: PickleArena, persistentLoad: ((PickleValue) throws -> PickleValue)? = nil) {
        self.arena = arena
        self.persistentLoad = persistentLoad
    }

    /// Runs the pickle that starts at `offset` of `data` up to its STOP.
    func run(_ data: Data, from offset: Int = 0) throws -> (value: PickleValue, end: Int) {
        try data.withUnsafeBytes { raw in
            var m = Machine(bytes: raw, pos: offset, arena: arena, persistentLoad: persistentLoad)
            return try m.run()
        }
    }
}

/// The opcodes' names, for messages (all of pickle's, supported or not).
let pickleOpcodeNames: [UInt8: String] = [
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
    0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
    0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
    0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
    0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
    0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT",
    0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2",
    0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8",
    0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
]

private struct Machine {
    let bytes: UnsafeRawBufferPointer
    var pos: Int
    let arena: PickleArena
    let persistentLoad: ((PickleValue) throws -> PickleValue)?
    var stack: [PickleValue] = []
    var metastack: [[PickleValue]] = []
    var heldBelowMarks = 0
    var memo: [Int: PickleValue] = [:]
    var opStart = 0
    var op: UInt8 = 0

    init(bytes: UnsafeRawBufferPointer, pos: Int, arena: PickleArena,
         persistentLoad: ((PickleValue) throws -> PickleValue)?) {
        self.bytes = bytes; self.pos = pos; self.arena = arena; self.persistentLoad = persistentLoad
    }

    var opName: String { pickleOpcodeNames[op] ?? String(format: "0x%02x", op) }

    func fail(_ what: String) -> WaveFlowError {
        WaveFlowError("pickle: \(what) (opcode \(opName) at byte \(opStart))")
    }

    /// `fail` as a closure for `PickleCalls` (the opcode's name and place copied).
    var failer: PickleCalls.Fail {
        let (name, start) = (opName, opStart)
        return { WaveFlowError("pickle: \($0) (opcode \(name) at byte \(start))") }
    }

    // MARK: reading

    mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - pos else {
            throw WaveFlowError("truncated: pickle opcode \(opName) at byte \(opStart) needs \(n) bytes, \(bytes.count - pos) left")
        }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: bytes[pos ..< pos + n])
    }

    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u16() throws -> Int { Int(UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self))) }
    mutating func u32() throws -> Int { Int(UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))) }
    mutating func i32() throws -> Int { Int(Int32(littleEndian: try take(4).loadUnaligned(as: Int32.self))) }
    mutating func u64() throws -> Int {
        let v = UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
        guard v <= UInt64(Int.max) else { throw fail("length \(v) is absurd") }
        return Int(v)
    }

    /// A newline-terminated ASCII name (GLOBAL's module and name).
    mutating func line() throws -> String {
        var end = pos
        while end < bytes.count, bytes[end] != 0x0A {
            end += 1
            guard end - pos <= Unpickler.maxNameLength else { throw fail("name longer than \(Unpickler.maxNameLength) bytes") }
        }
        guard end < bytes.count else { throw WaveFlowError("truncated: pickle GLOBAL at byte \(opStart) has no end of line") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[pos ..< end]), as: UTF8.self)
        pos = end + 1
        return s
    }

    mutating func utf8(_ n: Int) throws -> String { String(decoding: try take(n), as: UTF8.self) }

    // MARK: stack

    mutating func push(_ v: PickleValue) throws {
        guard stack.count + heldBelowMarks < Unpickler.maxStack else { throw fail("stack deeper than \(Unpickler.maxStack)") }
        stack.append(v)
    }

    mutating func pop() throws -> PickleValue {
        guard let v = stack.popLast() else { throw fail("stack underflow") }
        return v
    }

    mutating func top() throws -> PickleValue {
        guard let v = stack.last else { throw fail("stack underflow") }
        return v
    }

    /// The items pushed since the last MARK, which is removed.
    mutating func popMark() throws -> [PickleValue] {
        guard let below = metastack.popLast() else { throw fail("no MARK to pop to") }
        let items = stack
        stack = below
        heldBelowMarks -= below.count
        return items
    }

    mutating func list(_ items: [PickleValue]) throws -> PickleList { try arena.add(PickleList(items)) }

    // MARK: the loop

    mutating func run() throws -> (value: PickleValue, end: Int) {
        while true {
            opStart = pos
            guard pos < bytes.count else { throw WaveFlowError("truncated: pickle ends at byte \(pos) before its STOP") }
            op = bytes[pos]
            pos += 1
            switch op {
            case 0x80: // PROTO
                let v = try u8()
                guard v <= 5 else { throw fail("pickle protocol \(v) is unknown") }
            case 0x95: // FRAME: a length hint
                let n = try u64()
                guard n <= bytes.count - pos else { throw WaveFlowError("truncated: pickle frame at byte \(opStart) announces \(n) bytes") }
            case 0x2E: // STOP
                let v = try pop()
                return (v, pos)
            case 0x28: // MARK
                guard metastack.count < Unpickler.maxMarks else { throw fail("more than \(Unpickler.maxMarks) nested MARKs") }
                heldBelowMarks += stack.count
                metastack.append(stack)
                stack = []
            case 0x30: // POP
                if stack.isEmpty { _ = try popMark() } else { _ = try pop() }
            case 0x31: // POP_MARK
                _ = try popMark()
            case 0x32: // DUP
                try push(try top())
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4A: try push(.int(try i32()))
            case 0x4B: try push(.int(Int(try u8())))
            case 0x4D: try push(.int(try u16()))
            case 0x8A: // LONG1
                let n = Int(try u8())
                try push(Self.integer(Array(try take(n))))
            case 0x8B: // LONG4
                let n = try i32()
                guard n >= 0 else { throw fail("negative length") }
                try push(Self.integer(Array(try take(n))))
            case 0x47: // BINFLOAT, big-endian
                let bits = UInt64(bigEndian: try take(8).loadUnaligned(as: UInt64.self))
                try push(.float(Double(bitPattern: bits)))
            case 0x58: try push(.string(try utf8(try u32())))
            case 0x8C: try push(.string(try utf8(Int(try u8()))))
            case 0x8D: try push(.string(try utf8(try u64())))
            case 0x55: // SHORT_BINSTRING (Python 2 str: read as Latin-1)
                try push(.string(String(try take(Int(try u8())).map { Character(Unicode.Scalar($0)) })))
            case 0x54: // BINSTRING
                let n = try i32()
                guard n >= 0 else { throw fail("negative length") }
                try push(.string(String(try take(n).map { Character(Unicode.Scalar($0)) })))
            case 0x43: try push(.bytes(Array(try take(Int(try u8())))))
            case 0x42: try push(.bytes(Array(try take(try u32()))))
            case 0x8E, 0x96: try push(.bytes(Array(try take(try u64()))))
            case 0x29: try push(.tuple(try list([])))
            case 0x5D: try push(.list(try list([])))
            case 0x7D: try push(.dict(try arena.add(PickleDict())))
            case 0x8F: try push(.set(try list([])))
            case 0x85, 0x86, 0x87: // TUPLE1/2/3
                let n = Int(op - 0x84)
                guard stack.count >= n else { throw fail("stack underflow") }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                try push(.tuple(try list(items)))
            case 0x74: // TUPLE
                let items = try popMark()
                try push(.tuple(try list(items)))
            case 0x91: // FROZENSET
                let items = try popMark()
                try push(.set(try list(items)))
            case 0x90: // ADDITEMS
                let items = try popMark()
                let target = try top()
                guard case .set(let s) = target else { throw fail("ADDITEMS to \(target.kind)") }
                s.items += items
            case 0x71: try memoize(Int(try u8()))
            case 0x72: try memoize(try u32())
            case 0x94: try memoize(memo.count)
            case 0x68: try recall(Int(try u8()))
            case 0x6A: try recall(try u32())
            case 0x61: // APPEND
                let v = try pop()
                try append([v])
            case 0x65: // APPENDS
                let items = try popMark()
                try append(items)
            case 0x73: // SETITEM
                let v = try pop(), k = try pop()
                try setItems([k, v])
            case 0x75: // SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("an odd number of items") }
                try setItems(items)
            case 0x63: // GLOBAL
                let module = try line(), name = try line()
                try push(.global(module: module, name: name))
            case 0x93: // STACK_GLOBAL
                let n = try pop(), m = try pop()
                guard let module = m.string, let name = n.string,
                      module.utf8.count <= Unpickler.maxNameLength, name.utf8.count <= Unpickler.maxNameLength else {
                    throw fail("module and name are not strings")
                }
                try push(.global(module: module, name: name))
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                guard let a = args.items, case .tuple = args else { throw fail("arguments are \(args.kind), not a tuple") }
                try push(try PickleCalls.call(callable, a, arena: arena, fail: failer))
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                guard let a = args.items else { throw fail("arguments are \(args.kind), not a tuple") }
                try push(try PickleCalls.new(cls, a, arena: arena, fail: failer))
            case 0x92: // NEWOBJ_EX
                _ = try pop()
                let args = try pop(), cls = try pop()
                guard let a = args.items else { throw fail("arguments are \(args.kind), not a tuple") }
                try push(try PickleCalls.new(cls, a, arena: arena, fail: failer))
            case 0x62: // BUILD
                let state = try pop()
                switch try top() {
                case .object(let o): o.state = state
                case .dict(let d): d.state = state
                case .tensor: break // a Parameter's Python attributes: not needed
                case let other: throw fail("BUILD on \(other.kind)")
                }
            case 0x51: // BINPERSID
                let pid = try pop()
                guard let persistentLoad else { throw fail("a persistent id where none may be") }
                try push(try persistentLoad(pid))
            default:
                throw fail("not supported: this reader runs no code and builds only plain values, tensors and inert records")
            }
        }
    }

    mutating func memoize(_ i: Int) throws {
        guard memo.count < Unpickler.maxMemo || memo[i] != nil else { throw fail("memo larger than \(Unpickler.maxMemo)") }
        memo[i] = try top()
    }

    mutating func recall(_ i: Int) throws {
        guard let v = memo[i] else { throw fail("memo entry \(i) was never stored") }
        try push(v)
    }

    mutating func append(_ items: [PickleValue]) throws {
        switch try top() {
        case .list(let l): l.items += items
        case .set(let s): s.items += items
        case .object(let o): o.args += items // a list subclass's items: kept, unused
        case let other: throw fail("APPEND to \(other.kind)")
        }
    }

    mutating func setItems(_ kv: [PickleValue]) throws {
        let target = try top()
        var i = 0
        while i + 1 < kv.count {
            switch target {
            case .dict(let d): d.entries.append((kv[i], kv[i + 1]))
            case .object: break // a dict subclass's items: not needed
            case let other: throw fail("SETITEM on \(other.kind)")
            }
            i += 2
        }
    }

    /// A little-endian two's-complement integer (LONG1, LONG4).
    static func integer(_ b: [UInt8]) -> PickleValue {
        if b.isEmpty { return .int(0) }
        if b.count <= 8 {
            var v: UInt64 = 0
            for (i, x) in b.enumerated() { v |= UInt64(x) << (8 * UInt64(i)) }
            if b.count < 8, b.last! & 0x80 != 0 { v |= ~0 << (8 * UInt64(b.count)) } // sign-extend
            return .int(Int(Int64(bitPattern: v)))
        }
        return .bigInt(b)
    }
}

/// The callables a pickle may "call" (REDUCE) or instantiate (NEWOBJ), each
/// re-implemented here; nothing is imported or executed.
enum PickleCalls {
    typealias Fail = (String) -> WaveFlowError

    /// REDUCE: the allow-list. Anything else is refused by name.
    static func call(_ callable: PickleValue, _ args: [PickleValue], arena: PickleArena, fail: Fail,
                     nested: Bool = false) throws -> PickleValue {
        guard case .global(let module, let name) = callable else { throw fail("REDUCE of \(callable.kind)") }
        let (module1, name1) = (printable(module), printable(name))
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"),
             ("collections", "defaultdict"):
            let d = try arena.add(PickleDict())
            if module != "collections" || name != "defaultdict", let pairs = args.first?.items {
                for p in pairs {
                    guard let kv = p.items, kv.count == 2 else { throw fail("\(module1).\(name1) of something other than pairs") }
                    d.entries.append((kv[0], kv[1]))
                }
            }
            return .dict(d)
        case ("builtins", "set"), ("__builtin__", "set"), ("builtins", "frozenset"), ("__builtin__", "frozenset"):
            return .set(try arena.add(PickleList(args.first?.items ?? [])))
        case ("torch", "Size"):
            return .tuple(try arena.add(PickleList(args.first?.items ?? [])))
        case ("_codecs", "encode"):
            // Python 2-compatible bytes: (text, "latin1").
            guard args.count == 2, let text = args[0].string, let enc = args[1].string,
                  ["latin1", "latin-1", "iso-8859-1"].contains(enc.lowercased()) else {
                throw fail("_codecs.encode with arguments other than (text, 'latin1')")
            }
            var out: [UInt8] = []
            for s in text.unicodeScalars {
                guard s.value < 256 else { throw fail("_codecs.encode of a character beyond Latin-1") }
                out.append(UInt8(s.value))
            }
            return .bytes(out)
        case ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"):
            guard args.count == 3, case .global(let m, let n) = args[0] else { throw fail("copyreg._reconstructor of \(args.first?.kind ?? "nothing")") }
            let o = try arena.add(PickleObject(module: m, name: n, args: []))
            o.state = args[2]
            return .object(o)
        case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"):
            guard args.count >= 4, case .storage(let s) = args[0], let offset = args[1].int,
                  let shape = args[2].ints, let strides = args[3].ints else {
                throw fail("\(module1).\(name1) with arguments other than (storage, offset, size, stride, ...)")
            }
            return .tensor(try TorchTensor(storage: s, offset: offset, shape: shape, strides: strides))
        case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
            guard args.count >= 3, case .tensor(let t) = args[0] else { throw fail("\(module1).\(name1) of \(args.first?.kind ?? "nothing")") }
            return .tensor(t)
        case ("torch._tensor", "_rebuild_from_type_v2"):
            // (rebuild function, tensor type, its arguments, Python state)
            guard !nested, args.count >= 3, let inner = args[2].items else { throw fail("\(module1).\(name1) with unexpected arguments") }
            let v = try call(args[0], inner, arena: arena, fail: fail, nested: true)
            guard case .tensor = v else { throw fail("\(module1).\(name1) that does not rebuild a tensor") }
            return v
        case ("torch.storage", "_load_from_bytes"):
            throw fail("refused global torch.storage._load_from_bytes (it runs torch.load on embedded bytes)")
        default:
            throw fail("refused global \(module1).\(name1): this reader calls nothing outside its allow-list "
                       + "(OrderedDict, set, the tensor and parameter rebuilders)")
        }
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`: an inert record (dicts and sets as such).
    static func new(_ cls: PickleValue, _ args: [PickleValue], arena: PickleArena, fail: Fail) throws -> PickleValue {
        guard case .global(let module, let name) = cls else { throw fail("NEWOBJ of \(cls.kind)") }
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"), ("collections", "defaultdict"):
            return .dict(try arena.add(PickleDict()))
        case ("builtins", "set"), ("__builtin__", "set"):
            return .set(try arena.add(PickleList()))
        case ("torch.storage", "_load_from_bytes"):
            throw fail("refused global torch.storage._load_from_bytes")
        default:
            return .object(try arena.add(PickleObject(module: module, name: name, args: args)))
        }
    }
}
