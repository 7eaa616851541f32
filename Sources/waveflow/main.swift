import Foundation
import WaveFlow

// OpenBLAS picks its kernel when it is loaded, before this line runs; if it
// would run a slow one, this re-executes the tool with the right one chosen.
BLAS.ensureFastKernel()
configureAllocator()
// Ctrl-C or kill removes the output being written (train replaces this with
// its own save-and-stop handler).
TemporaryFiles.removeOnSignals()
switch Arguments.prepared(Array(CommandLine.arguments.dropFirst())) {
case .success(let args):
    await Waveflow.start(args)
case .failure(let e):
    logLine("waveflow: error: \(e.description)")
    exit(64)
}
