import Foundation
import WaveFlow

// libFuzzer targets for the readers of untrusted files. Built by
// scripts/fuzz.sh (WAVEFLOW_FUZZ=1, -sanitize=fuzzer); run as
//
//     waveflow-fuzz TARGET [libFuzzer options] [corpus folders]
//
// with TARGET one of npy, checkpoint (safetensors + checkpoint validation),
// audio (libsndfile through AudioFile.read), torch (PyTorch WaveGlow import:
// zip and legacy containers, the pickle reader, the layout and config checks). A target may throw any
// WaveFlowError; a crash, a trap or a hang is a finding.

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// The target chosen on the command line.
nonisolated(unsafe) var target = ""
/// Where the audio target writes each input (libsndfile reads paths).
nonisolated(unsafe) var scratch = ""

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = data.map { Data(bytes: $0, count: count) } ?? Data()
    switch target {
    case "npy":
        _ = try? NPY.decode(bytes)
    case "checkpoint":
        _ = try? Checkpoint.load(data: bytes, name: "input.safetensors")
    case "torch":
        _ = try? WaveGlowImport.load(data: bytes, name: "input.pt")
    case "audio":
        FileManager.default.createFile(atPath: scratch, contents: bytes)
        if let audio = try? AudioFile.read(scratch) { precondition(audio.samples.allSatisfy(\.isFinite)) }
    default:
        fatalError("unknown target \(target)")
    }
    return 0
}

@_cdecl("waveflow_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    guard argc >= 2, let argv, let name = argv[1].map({ String(cString: $0) }), ["npy", "checkpoint", "audio", "torch"].contains(name) else {
        FileHandle.standardError.write(Data("usage: waveflow-fuzz npy|checkpoint|audio|torch [libFuzzer options] [corpus]\n".utf8))
        return 2
    }
    target = name
    scratch = (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())
        + "/waveflow-fuzz-\(getpid()).bin"
    // libFuzzer sees the program name and the options after the target.
    argv[1] = argv[0]
    var c = argc - 1
    var v: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv + 1
    let status = LLVMFuzzerRunDriver(&c, &v) { fuzzOne($0, $1) }
    unlink(scratch)
    return status
}
