import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The precision of the matrix products.
public enum Precision: String, CaseIterable, Sendable {
    /// Float32 on OpenBLAS: the reference, and the default (weight
    /// gradients on oneDNN's f32 matmul where it loads: `WeightGradients`).
    case fp32
    /// bf16 operands with Float32 accumulation and output on oneDNN; weights,
    /// optimizer state and everything outside the products stay Float32.
    case bf16
}

extension Precision: CustomStringConvertible {
    /// "fp32 (OpenBLAS)" or "bf16 (oneDNN)".
    public var description: String { self == .fp32 ? "fp32 (OpenBLAS)" : "bf16 (oneDNN)" }
}

/// bf16 matrix products on Intel's oneDNN (Debian: libdnnl2), loaded at run
/// time with `dlopen`, so that building and running waveflow never needs it.
///
/// `gemm` takes the same arguments as cblas_sgemm (row-major, alpha = 1,
/// beta 0 or 1): it rounds both operands to bf16 (round to nearest even)
/// into scratch, and runs a oneDNN matmul whose f32 destination is C itself
/// (its strides), with a sum post-op when beta = 1. Primitives are cached per
/// shape. oneDNN 2.x's C ABI is used (its memory and matmul descriptors are
/// opaque buffers here, sized generously); the version is checked on load.
public final class OneDNN: @unchecked Sendable {
    public static let library = "libdnnl.so.2"

    /// The library with a CPU engine (Float32 products run on any x86-64),
    /// or the reason it is unavailable.
    public static let shared: Result<OneDNN, WaveFlowError> = {
        do { return .success(try OneDNN()) } catch let e as WaveFlowError { return .failure(e) } catch {
            return .failure(WaveFlowError("\(error)"))
        }
    }()

    /// The backend for bf16 products: `shared`, where this CPU also runs
    /// oneDNN's bf16 matmul (AVX-512 BF16 or AMX), or the reason not.
    public static let bf16: Result<OneDNN, WaveFlowError> = shared.flatMap { d in
        d.bf16Problem.map { .failure($0) } ?? .success(d)
    }

    /// For `waveflow info`.
    public static var availability: String {
        switch (shared, bf16) {
        case (.success(let d), .success):
            let auto = AutoPrecisionChoice.current
            return "oneDNN \(d.version) (\(library)) found: bf16 available; auto picks \(auto.precision.rawValue) (\(auto.source))"
        case (.success(let d), .failure(let e)):
            return "oneDNN \(d.version) (\(library)) found; bf16 unavailable (auto picks fp32): \(e.message)"
        case (.failure(let e), _): return "bf16 unavailable (auto picks fp32): \(e.message)"
        }
    }

    /// Why this CPU cannot run bf16 products (nil when it can).
    private var bf16Problem: WaveFlowError?

    public let version: String

    private typealias EngineCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32, Int) -> Int32
    private typealias StreamCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UInt32) -> Int32
    private typealias StreamDestroy = @convention(c) (OpaquePointer?) -> Int32
    private typealias MDByStrides = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafePointer<Int64>, Int32, UnsafePointer<Int64>) -> Int32
    private typealias MatmulInit = @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer?, UnsafeRawPointer) -> Int32
    private typealias AttrCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias PostOpsCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias PostOpsSum = @convention(c) (OpaquePointer?, Float) -> Int32
    private typealias AttrSetPostOps = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
    private typealias PDCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer, OpaquePointer?, OpaquePointer?, OpaquePointer?) -> Int32
    private typealias PrimCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?) -> Int32
    private typealias MemCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer, OpaquePointer?, UnsafeMutableRawPointer?) -> Int32
    private typealias MemDestroy = @convention(c) (OpaquePointer?) -> Int32
    private typealias Execute = @convention(c) (OpaquePointer?, OpaquePointer?, Int32, UnsafeRawPointer) -> Int32
    private typealias StreamWait = @convention(c) (OpaquePointer?) -> Int32
    private typealias SetThreads = @convention(c) (Int32) -> Void
    private typealias SetScratchpadMode = @convention(c) (OpaquePointer?, Int32) -> Int32
    private typealias QueryMD = @convention(c) (OpaquePointer?, Int32, Int32) -> UnsafeRawPointer?
    private typealias MDSize = @convention(c) (UnsafeRawPointer) -> Int

    private let streamCreate: StreamCreate, streamDestroy: StreamDestroy, mdByStrides: MDByStrides
    private let matmulInit: MatmulInit, attrCreate: AttrCreate, postOpsCreate: PostOpsCreate, postOpsSum: PostOpsSum
    private let attrSetPostOps: AttrSetPostOps, pdCreate: PDCreate, primCreate: PrimCreate
    private let memCreate: MemCreate, memDestroy: MemDestroy, execute: Execute, streamWait: StreamWait
    private let setThreads: SetThreads?
    private let setScratchpadMode: SetScratchpadMode, queryMD: QueryMD, mdSize: MDSize
    private var engine: OpaquePointer?

    /// oneDNN 2.6's descriptor sizes are 696 (memory) and 2800 (matmul) bytes.
    private static let mdBytes = 4096, opBytes = 16384
    private static let typeF32: Int32 = 3, typeBF16: Int32 = 2
    private static let argSrc: Int32 = 1, argWeights: Int32 = 33, argDst: Int32 = 17, argScratchpad: Int32 = 80
    private static let scratchpadModeUser: Int32 = 1, queryScratchpadMD: Int32 = 136

    private struct Key: Hashable {
        var m, n, k: Int; var ta, tb: Bool; var lda, ldb, ldc: Int; var accumulate: Bool
        /// Float32 operands (else bf16); the destination is Float32 either way.
        var f32Operands = false
    }
    /// A primitive with its operand descriptors and its scratchpad's.
    private final class Entry { let prim: OpaquePointer?; let a, b, c: UnsafeMutableRawPointer
        let scratch: UnsafeRawPointer?, scratchBytes: Int
        init(prim: OpaquePointer?, a: UnsafeMutableRawPointer, b: UnsafeMutableRawPointer, c: UnsafeMutableRawPointer,
             scratch: UnsafeRawPointer?, scratchBytes: Int) {
            self.prim = prim; self.a = a; self.b = b; self.c = c; self.scratch = scratch; self.scratchBytes = scratchBytes
        }
    }
    private var cache: [Key: Entry] = [:]
    private let lock = NSLock()

    private init() throws {
        guard let lib = dlopen(Self.library, RTLD_NOW | RTLD_LOCAL) else {
            throw WaveFlowError("\(Self.library) not found (Debian: libdnnl2)")
        }
        func sym<F>(_ name: String, _: F.Type) throws -> F {
            guard let p = dlsym(lib, name) else { throw WaveFlowError("\(Self.library) lacks \(name)") }
            return unsafeBitCast(p, to: F.self)
        }
        typealias VersionFn = @convention(c) () -> UnsafePointer<Int32>
        let v = try sym("dnnl_version", VersionFn.self)()
        version = "\(v[0]).\(v[1]).\(v[2])"
        guard v[0] == 2 else { throw WaveFlowError("oneDNN \(version) found; waveflow uses the 2.x C API") }
        let engineCreate = try sym("dnnl_engine_create", EngineCreate.self)
        streamCreate = try sym("dnnl_stream_create", StreamCreate.self)
        streamDestroy = try sym("dnnl_stream_destroy", StreamDestroy.self)
        mdByStrides = try sym("dnnl_memory_desc_init_by_strides", MDByStrides.self)
        matmulInit = try sym("dnnl_matmul_desc_init", MatmulInit.self)
        attrCreate = try sym("dnnl_primitive_attr_create", AttrCreate.self)
        postOpsCreate = try sym("dnnl_post_ops_create", PostOpsCreate.self)
        postOpsSum = try sym("dnnl_post_ops_append_sum", PostOpsSum.self)
        attrSetPostOps = try sym("dnnl_primitive_attr_set_post_ops", AttrSetPostOps.self)
        pdCreate = try sym("dnnl_primitive_desc_create", PDCreate.self)
        primCreate = try sym("dnnl_primitive_create", PrimCreate.self)
        memCreate = try sym("dnnl_memory_create", MemCreate.self)
        memDestroy = try sym("dnnl_memory_destroy", MemDestroy.self)
        execute = try sym("dnnl_primitive_execute", Execute.self)
        streamWait = try sym("dnnl_stream_wait", StreamWait.self)
        setScratchpadMode = try sym("dnnl_primitive_attr_set_scratchpad_mode", SetScratchpadMode.self)
        queryMD = try sym("dnnl_primitive_desc_query_md", QueryMD.self)
        mdSize = try sym("dnnl_memory_desc_get_size", MDSize.self)
        // oneDNN runs on OpenMP here; its team size follows the caller's
        // setting, which we tie to BLAS's (1 inside our parallel loops).
        setThreads = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD).flatMap { dlsym($0, "omp_set_num_threads") }
            .map { unsafeBitCast($0, to: SetThreads.self) }
        var e: OpaquePointer?
        guard engineCreate(&e, 1, 0) == 0 else { throw WaveFlowError("oneDNN has no CPU engine") }
        engine = e
        // Trial products: f32 must work; bf16 needs avx512_core_bf16 or AMX.
        var a = [Float](repeating: 1, count: 4), b = [Float](repeating: 1, count: 4), c = [Float](repeating: 0, count: 4)
        try gemmF32(transA: false, transB: false, m: 2, n: 2, k: 2, a: &a, lda: 2, b: &b, ldb: 2, accumulate: false, c: &c, ldc: 2)
        guard c == [2, 2, 2, 2] else { throw WaveFlowError("oneDNN f32 trial product failed") }
        c = [0, 0, 0, 0]
        do {
            try gemm(transA: false, transB: false, m: 2, n: 2, k: 2, a: &a, lda: 2, b: &b, ldb: 2, beta: 0, c: &c, ldc: 2)
            if c != [2, 2, 2, 2] { bf16Problem = WaveFlowError("oneDNN bf16 trial product failed") }
        } catch let e as WaveFlowError {
            bf16Problem = e
        }
    }

    private func memoryDesc(rows: Int, cols: Int, rowStride: Int, colStride: Int, type: Int32) throws -> UnsafeMutableRawPointer {
        let md = UnsafeMutableRawPointer.allocate(byteCount: Self.mdBytes, alignment: 64)
        md.initializeMemory(as: UInt8.self, repeating: 0, count: Self.mdBytes)
        let dims: [Int64] = [Int64(rows), Int64(cols)], strides: [Int64] = [Int64(rowStride), Int64(colStride)]
        guard mdByStrides(md, 2, dims, type, strides) == 0 else { throw WaveFlowError("oneDNN memory descriptor failed") }
        return md
    }

    private func entry(_ key: Key) throws -> Entry {
        lock.lock(); defer { lock.unlock() }
        if let e = cache[key] { return e }
        // op(A) [m, k] and op(B) [k, n] in their stored orientation and row
        // strides; C [m, n] with row stride ldc.
        let a = try memoryDesc(rows: key.m, cols: key.k, rowStride: key.ta ? 1 : key.lda, colStride: key.ta ? key.lda : 1, type: key.f32Operands ? Self.typeF32 : Self.typeBF16)
        let b = try memoryDesc(rows: key.k, cols: key.n, rowStride: key.tb ? 1 : key.ldb, colStride: key.tb ? key.ldb : 1, type: key.f32Operands ? Self.typeF32 : Self.typeBF16)
        let c = try memoryDesc(rows: key.m, cols: key.n, rowStride: key.ldc, colStride: 1, type: Self.typeF32)
        let op = UnsafeMutableRawPointer.allocate(byteCount: Self.opBytes, alignment: 64)
        defer { op.deallocate() }
        op.initializeMemory(as: UInt8.self, repeating: 0, count: Self.opBytes)
        guard matmulInit(op, a, b, nil, c) == 0 else { throw WaveFlowError("oneDNN matmul descriptor failed") }
        var attr: OpaquePointer?
        _ = attrCreate(&attr)
        // Scratchpad passed per execution: a library-held one would be shared
        // by our threads running the same primitive at once (seen: NaNs).
        _ = setScratchpadMode(attr, Self.scratchpadModeUser)
        if key.accumulate {
            var po: OpaquePointer?
            _ = postOpsCreate(&po)
            _ = postOpsSum(po, 1)
            _ = attrSetPostOps(attr, po)
        }
        var pd: OpaquePointer?, prim: OpaquePointer?
        guard pdCreate(&pd, op, attr, engine, nil) == 0, primCreate(&prim, pd) == 0 else {
            throw WaveFlowError("oneDNN has no \(key.f32Operands ? "f32" : "bf16") matmul for this CPU")
        }
        let smd = queryMD(pd, Self.queryScratchpadMD, 0)
        let e = Entry(prim: prim, a: a, b: b, c: c, scratch: smd, scratchBytes: smd.map { mdSize($0) } ?? 0)
        cache[key] = e
        return e
    }

    /// Rounds `count` Floats to bf16 (nearest even), `src` read with
    /// `rows` x `cols` at row stride `ld`, written densely.
    static func toBF16(_ src: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int, into dst: UnsafeMutablePointer<UInt16>) {
        for r in 0..<rows { VectorKernels.toBF16(src + r * ld, dst + r * cols, count: cols) }
    }

    /// C = op(A) op(B) + beta C with bf16 operands, row-major (cblas_sgemm's
    /// arguments, alpha = 1, beta 0 or 1): the operands are rounded to bf16
    /// here, unless a dense bf16 copy (`a16`, `b16`) is given, then `gemmBF16`.
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, a16: UnsafePointer<UInt16>? = nil, lda: Int,
                     b: UnsafePointer<Float>, b16: UnsafePointer<UInt16>? = nil, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
        precondition(beta == 0 || beta == 1)
        let aRows = transA ? k : m, aCols = transA ? m : k
        let bRows = transB ? n : k, bCols = transB ? k : n
        precondition((a16 == nil || lda == aCols) && (b16 == nil || ldb == bCols), "bf16 copies are dense")
        /// The operand's bf16 copy, or one made here (deallocated by the caller).
        func rounded(_ x: UnsafePointer<Float>, _ copy: UnsafePointer<UInt16>?, rows: Int, cols: Int, ld: Int)
            -> (UnsafePointer<UInt16>, UnsafeMutablePointer<UInt16>?) {
            if let copy { return (copy, nil) }
            let made = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * cols)
            Self.toBF16(x, rows: rows, cols: cols, ld: ld, into: made)
            return (UnsafePointer(made), made)
        }
        let (ra, madeA) = rounded(a, a16, rows: aRows, cols: aCols, ld: lda)
        let (rb, madeB) = rounded(b, b16, rows: bRows, cols: bCols, ld: ldb)
        defer { madeA?.deallocate(); madeB?.deallocate() }
        try gemmBF16(transA: transA, transB: transB, m: m, n: n, k: k, a: ra, lda: aCols, b: rb, ldb: bCols,
                     accumulate: beta == 1, c: c, ldc: ldc)
    }

    /// C = op(A) op(B) (+ C when `accumulate`) with operands already in bf16
    /// (bit patterns, row-major with row strides lda and ldb), accumulated and
    /// written in Float32.
    public func gemmBF16(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                         a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                         accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
        try run(Key(m: m, n: n, k: k, ta: transA, tb: transB, lda: lda, ldb: ldb, ldc: ldc, accumulate: accumulate),
                    a: UnsafeRawPointer(a), b: UnsafeRawPointer(b), c: c)
    }

    /// C = op(A) op(B) (+ C when `accumulate`) in Float32 throughout, on
    /// oneDNN's f32 matmul (see `Float.gemm` for the shapes that use it).
    public func gemmF32(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                        accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
        try run(Key(m: m, n: n, k: k, ta: transA, tb: transB, lda: lda, ldb: ldb, ldc: ldc, accumulate: accumulate,
                        f32Operands: true),
                    a: UnsafeRawPointer(a), b: UnsafeRawPointer(b), c: c)
    }

    /// Runs the primitive for `key` on operands at a and b into c.
    private func run(_ key: Key, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>) throws {
        let e = try entry(key)
        setThreads?(Int32(BLAS.threads))
        var stream: OpaquePointer?
        guard streamCreate(&stream, engine, 1) == 0 else { throw WaveFlowError("oneDNN stream failed") }
        defer { _ = streamDestroy(stream) }
        var ma: OpaquePointer?, mb: OpaquePointer?, mc: OpaquePointer?, ms: OpaquePointer?
        _ = memCreate(&ma, e.a, engine, UnsafeMutableRawPointer(mutating: a))
        _ = memCreate(&mb, e.b, engine, UnsafeMutableRawPointer(mutating: b))
        _ = memCreate(&mc, e.c, engine, UnsafeMutableRawPointer(c))
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(64, e.scratchBytes), alignment: 64)
        defer { scratch.deallocate() }
        var nargs: Int32 = 3
        if let smd = e.scratch, e.scratchBytes > 0 {
            _ = memCreate(&ms, smd, engine, scratch)
            nargs = 4
        }
        defer { _ = memDestroy(ma); _ = memDestroy(mb); _ = memDestroy(mc); if ms != nil { _ = memDestroy(ms) } }
        // dnnl_exec_arg_t: { int arg; dnnl_memory_t memory; } (16 bytes).
        var args = [Int](repeating: 0, count: 8)
        args.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.argSrc, toByteOffset: 0, as: Int32.self)
            raw.storeBytes(of: ma, toByteOffset: 8, as: OpaquePointer?.self)
            raw.storeBytes(of: Self.argWeights, toByteOffset: 16, as: Int32.self)
            raw.storeBytes(of: mb, toByteOffset: 24, as: OpaquePointer?.self)
            raw.storeBytes(of: Self.argDst, toByteOffset: 32, as: Int32.self)
            raw.storeBytes(of: mc, toByteOffset: 40, as: OpaquePointer?.self)
            raw.storeBytes(of: Self.argScratchpad, toByteOffset: 48, as: Int32.self)
            raw.storeBytes(of: ms, toByteOffset: 56, as: OpaquePointer?.self)
        }
        let status = args.withUnsafeBytes { execute(e.prim, stream, nargs, $0.baseAddress!) }
        guard status == 0 else { throw WaveFlowError("oneDNN matmul failed (status \(status))") }
        _ = streamWait(stream)
    }
}
