import COpenBLAS
import Foundation

/// OpenBLAS set-up: the compute kernel it runs and its thread count.
///
/// Debian's OpenBLAS 0.3.21 picks its kernel ("core") once, when the library
/// is loaded, from `OPENBLAS_CORETYPE` or its own CPU detection; that
/// detection does not know recent CPUs and then falls back to the generic
/// "Prescott" kernel, about 4x slower. Because the library is loaded before
/// `main` runs, the tool calls ``ensureFastKernel(arguments:)`` first thing:
/// if the user has not chosen a core, it chooses one from the CPU's features
/// and re-executes itself once with the variable set.
public enum BLAS {
    /// The environment variable OpenBLAS reads at load time.
    public static let coreVariable = "OPENBLAS_CORETYPE"
    /// Set by ``ensureFastKernel(arguments:)`` on the re-executed process, so
    /// it never loops and `info` can say where the choice came from.
    static let markerVariable = "WAVEFLOW_BLAS_CORE_CHOSEN"

    /// The OpenBLAS core suited to `cpu`, or nil to leave OpenBLAS's own
    /// choice. Never names a kernel whose instructions the CPU lacks.
    ///
    /// Measured on an AMD EPYC (Zen 4, AVX-512 executed as two 256-bit
    /// halves), single-thread sgemm 128x576x16384: Haswell 97, Zen 92,
    /// Cooperlake 76, SkylakeX 74 GFLOP/s — so AMD gets the AVX2 kernel.
    /// On Intel AVX-512 CPUs SkylakeX is the fast one (137 vs 32 GFLOP/s for
    /// the Prescott fallback).
    public static func recommendedCore(for cpu: CPUInfo) -> String? {
        #if arch(x86_64)
        let amd = cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine"
        if amd {
            return cpu.hasAVX2 ? "Haswell" : nil
        }
        if cpu.hasAVX512 { return cpu.hasAVX512BF16 ? "Cooperlake" : "SkylakeX" }
        if cpu.hasAVX2 { return "Haswell" }
        return nil
        #else
        return nil
        #endif
    }

    /// Where the running kernel came from, for `waveflow info`.
    public static var coreSource: String {
        if getenv(markerVariable) != nil { return "chosen by waveflow from the CPU's features" }
        if getenv(coreVariable) != nil { return "set by the user (\(coreVariable))" }
        return "OpenBLAS's own detection"
    }

    /// Makes sure OpenBLAS runs the fast kernel. If `OPENBLAS_CORETYPE` is
    /// unset and we know a better core than OpenBLAS would choose, sets it
    /// and replaces this process with a fresh copy of itself (same
    /// arguments). Returns normally when no re-execution is needed or it
    /// failed (then OpenBLAS's own choice stands, and `info` shows it).
    public static func ensureFastKernel(arguments: [String] = CommandLine.arguments) {
        guard getenv(coreVariable) == nil, getenv(markerVariable) == nil,
              let core = recommendedCore(for: .current) else { return }
        if String(cString: openblas_get_corename()).lowercased() == core.lowercased() { return }
        setenv(coreVariable, core, 1)
        setenv(markerVariable, core, 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", argv)
        // Only reached if exec failed: carry on with the kernel we have.
        unsetenv(coreVariable)
        unsetenv(markerVariable)
    }

    /// The kernel OpenBLAS actually runs ("SkylakeX", "Haswell", …).
    public static var coreName: String { String(cString: openblas_get_corename()) }
    /// OpenBLAS's build description (version, DYNAMIC_ARCH, …).
    public static var config: String { String(cString: openblas_get_config()) }

    /// Threads OpenBLAS uses for one call.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }
}

/// The program-wide thread budget: BLAS calls and our own parallel loops
/// share it, and never run at the same time with both at full width.
public enum Threads {
    nonisolated(unsafe) private static var _count = ProcessInfo.processInfo.activeProcessorCount

    /// The number of cores to use (default: all). Setting it also sets
    /// OpenBLAS's thread count.
    public static var count: Int {
        get { _count }
        set {
            _count = max(1, newValue)
            BLAS.threads = _count
        }
    }

    /// Values per chunk of `parallelChunks`.
    public static let chunkSize = 1 << 16

    /// Runs `body(range)` for the fixed chunks of `chunkSize` values that
    /// cover 0..<count, on up to `count` threads (`parallelFor`). The chunks
    /// do not depend on the thread count, so a result built chunk by chunk
    /// is the same on any number of cores.
    public static func parallelChunks(_ count: Int, _ body: (Range<Int>) -> Void) {
        let size = chunkSize
        parallelFor((count + size - 1) / size) { c in body(c * size ..< min(count, (c + 1) * size)) }
    }

    /// Runs `body(i)` for i in 0..<n on up to `count` threads. BLAS runs on
    /// one thread inside, so the two pools never oversubscribe the cores.
    /// Nested calls (from inside a running `parallelFor`) run serially.
    /// The threads are a `WorkerTeam` (spinning between loops), or
    /// Dispatch's pool while another thread has the team.
    public static func parallelFor(_ n: Int, _ body: (Int) -> Void) {
        if n <= 1 || _count <= 1 || insideParallelLoop {
            for i in 0..<n { body(i) }
            return
        }
        let saved = BLAS.threads
        BLAS.threads = 1
        defer { BLAS.threads = saved }
        let workers = min(n, _count)
        /// Thread w's share: i = w, w + workers, ...
        func share(_ w: Int) {
            var i = w
            while i < n { body(i); i += workers }
        }
        if useTeam, let team = team(size: workers) {
            markInsideParallelLoop(true)
            defer { markInsideParallelLoop(false) }
            // Workers wait for the next loop spinning only where no BLAS pool will want the cores.
            if team.run(workers, linger: saved == 1, share) { return }
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let nested = insideParallelLoop
            markInsideParallelLoop(true)
            defer { markInsideParallelLoop(nested) }
            share(w)
        }
    }

    /// Whether `parallelFor` uses a `WorkerTeam` (`WAVEFLOW_WORKER_TEAM=0`: Dispatch's pool only).
    static let useTeam = ProcessInfo.processInfo.environment["WAVEFLOW_WORKER_TEAM"] != "0"
    nonisolated(unsafe) private static var teams: [Int: WorkerTeam] = [:]
    private static let teamsLock = NSLock()

    /// The team of `size` threads, started on first use (one per size: `count` may change).
    private static func team(size: Int) -> WorkerTeam? {
        teamsLock.lock(); defer { teamsLock.unlock() }
        if let t = teams[size] { return t }
        guard teams.count < 4 else { return nil } // a program that keeps changing `count` gets Dispatch's pool
        let t = WorkerTeam(size: size)
        teams[size] = t
        return t
    }

    /// Whether this thread is running a `parallelFor` body (a thread-local flag).
    static var insideParallelLoop: Bool { pthread_getspecific(insideKey) != nil }

    static func markInsideParallelLoop(_ inside: Bool) {
        pthread_setspecific(insideKey, inside ? UnsafeRawPointer(bitPattern: 1) : nil)
    }

    private static let insideKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}

#if canImport(Glibc)
import CGlibcExtras

/// Keeps large freed blocks in the heap instead of returning them to the
/// kernel: the layers allocate and free tens of megabytes per step, and with
/// glibc's defaults every such block is a fresh mmap whose pages fault in
/// again (measured: two thirds of training time in the kernel).
///
/// One arena for all threads: the worker threads' own arenas are made of
/// 64 MB heaps that glibc unmaps as soon as they are empty, so the training
/// shards' per-step activations (hundreds of MB) faulted in afresh every
/// step (measured: 9% of an h16-c64 step in the kernel clearing pages).
public func configureAllocator() {
    mallopt(M_MMAP_THRESHOLD, 1 << 30)
    mallopt(M_TRIM_THRESHOLD, -1) // never trim (a step frees more than any finite threshold we could pick)
    mallopt(M_ARENA_MAX, 1)
}
#else
public func configureAllocator() {}
#endif
