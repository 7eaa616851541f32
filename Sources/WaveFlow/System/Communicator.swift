import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The processes of one training job and the collective operations between
/// them. A single process is a job of one rank whose operations do nothing;
/// under `mpirun` the ranks talk through Open MPI (see ``MPICommunicator``).
public protocol Communicator: AnyObject {
    /// This process's rank, 0 ..< size. Rank 0 logs and writes checkpoints.
    var rank: Int { get }
    var size: Int { get }
    /// Element-wise sum over all ranks, in place, the result on every rank.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Copies rank 0's `buffer` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int) throws
    /// Stops every rank of the job with `code` (after an error on one rank,
    /// so the others do not wait for it forever).
    func abort(_ code: Int32) -> Never
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// Broadcasts an array of plain values from rank 0 (same count on every rank).
    public func broadcast<E: BitwiseCopyable>(_ values: inout [E]) throws {
        try values.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: $0.count) }
    }
}

/// The job of one process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int) throws {}
    public func abort(_ code: Int32) -> Never { exit(code) }
}

/// Open MPI, loaded at run time with `dlopen`, so that building and running
/// waveflow on one machine needs no MPI at all; only a job started by
/// `mpirun` loads `libmpi.so.40` (Debian: `openmpi-bin`, which brings
/// `libopenmpi3`).
///
/// The calls used are MPI_Init_thread, MPI_Comm_rank/size, MPI_Allreduce
/// (in place, MPI_SUM), MPI_Bcast, MPI_Abort and MPI_Finalize on
/// MPI_COMM_WORLD. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM)
/// are the addresses of exported objects (`ompi_mpi_comm_world`, ...) and
/// MPI_IN_PLACE is `(void *)1`, which is what lets this work without
/// `mpi.h`. MPICH has a different ABI and is not supported.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int

    private typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>) -> Int32
    private typealias CommQuery = @convention(c) (UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    private typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Int32
    private typealias Bcast = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafeMutableRawPointer, Int32, UnsafeMutableRawPointer) -> Int32
    private typealias Abort = @convention(c) (UnsafeMutableRawPointer, Int32) -> Int32
    private typealias Finalize = @convention(c) () -> Int32

    private let allreduceFn: Allreduce
    private let bcastFn: Bcast
    private let abortFn: Abort
    private let finalizeFn: Finalize
    private let world: UnsafeMutableRawPointer
    private let float: UnsafeMutableRawPointer
    private let byte: UnsafeMutableRawPointer
    private let sum: UnsafeMutableRawPointer
    private static let inPlace = UnsafeRawPointer(bitPattern: 1)

    /// The shared library loaded for Open MPI.
    public static let library = "libmpi.so.40"

    /// True when this process was started by Open MPI's `mpirun`/`mpiexec`.
    public static var launchedByMPI: Bool {
        getenv("OMPI_COMM_WORLD_SIZE") != nil
    }

    /// For `waveflow info`: whether `mpirun -np N waveflow train` can work here.
    public static var availability: String {
        guard let lib = dlopen(library, RTLD_LAZY | RTLD_LOCAL) else {
            return "not installed (\(library); only needed for multi-process training: Debian openmpi-bin)"
        }
        dlclose(lib)
        return "Open MPI (\(library)) found: mpirun -np N waveflow train ... trains data-parallel"
    }

    /// Ranks of this job on this machine (for the default thread count).
    public static var localRanks: Int {
        getenv("OMPI_COMM_WORLD_LOCAL_SIZE").flatMap { Int(String(cString: $0)) } ?? 1
    }

    /// Loads Open MPI and joins the job.
    public init() throws {
        guard let lib = dlopen(Self.library, RTLD_NOW | RTLD_GLOBAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "not found"
            throw WaveFlowError("started by mpirun, but Open MPI's \(Self.library) cannot be loaded (\(why)); install Open MPI (Debian: openmpi-bin)")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(lib, name) else { throw WaveFlowError("\(Self.library) lacks \(name): not Open MPI?") }
            return p
        }
        let initThread = unsafeBitCast(try symbol("MPI_Init_thread"), to: InitThread.self)
        let commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: CommQuery.self)
        let commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: CommQuery.self)
        allreduceFn = unsafeBitCast(try symbol("MPI_Allreduce"), to: Allreduce.self)
        bcastFn = unsafeBitCast(try symbol("MPI_Bcast"), to: Bcast.self)
        abortFn = unsafeBitCast(try symbol("MPI_Abort"), to: Abort.self)
        finalizeFn = unsafeBitCast(try symbol("MPI_Finalize"), to: Finalize.self)
        world = try symbol("ompi_mpi_comm_world")
        float = try symbol("ompi_mpi_float")
        byte = try symbol("ompi_mpi_byte")
        sum = try symbol("ompi_mpi_op_sum")
        // MPI_THREAD_FUNNELED (1): only the main thread calls MPI.
        var provided: Int32 = 0
        guard initThread(nil, nil, 1, &provided) == 0 else { throw WaveFlowError("MPI_Init_thread failed") }
        var r: Int32 = 0, s: Int32 = 0
        _ = commRank(world, &r)
        _ = commSize(world, &s)
        rank = Int(r)
        size = Int(s)
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try chunked(count) { off, n in
            guard allreduceFn(Self.inPlace, buffer + off, n, float, sum, world) == 0 else { throw WaveFlowError("MPI_Allreduce failed") }
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int) throws {
        try chunked(bytes) { off, n in
            guard bcastFn(buffer + off, n, byte, 0, world) == 0 else { throw WaveFlowError("MPI_Bcast failed") }
        }
    }

    /// MPI counts are 32-bit: large buffers go in pieces.
    private func chunked(_ count: Int, _ body: (Int, Int32) throws -> Void) rethrows {
        var off = 0
        while off < count {
            let n = min(count - off, 1 << 30)
            try body(off, Int32(n))
            off += n
        }
    }

    public func abort(_ code: Int32) -> Never {
        _ = abortFn(world, code)
        exit(code)
    }

    /// Leaves the job (every rank must call it before exiting normally).
    public func finalize() { _ = finalizeFn() }
}

/// The job this process belongs to: Open MPI's when started by `mpirun`,
/// otherwise a single process.
public func joinJob() throws -> Communicator {
    MPICommunicator.launchedByMPI ? try MPICommunicator() : SingleProcess()
}
