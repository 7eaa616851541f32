import ArgumentParser
import Foundation
import WaveFlow

/// Feature options shared by `mel` (and the defaults of a new model).
struct MelOptions: ParsableArguments {
    @Option(help: "Sample rate in Hz; audio at other rates is resampled.") var sampleRate = 22050
    @Option(help: "FFT size.") var nFFT = 1024
    @Option(help: "Hop between frames, in samples.") var hop = 256
    @Option(help: "Window length (<= n-fft).") var win = 1024
    @Option(help: "Number of mel bands.") var nMels = 80
    @Option(help: "Lowest mel frequency, Hz.") var fmin = 0.0
    @Option(help: "Highest mel frequency, Hz.") var fmax = 8000.0

    var config: MelConfig {
        MelConfig(sampleRate: sampleRate, nFFT: nFFT, hopLength: hop, winLength: win,
                  nMels: nMels, fmin: fmin, fmax: fmax)
    }
}

/// `waveflow mel IN OUT.npy` or `waveflow mel DIR OUTDIR`.
struct Mel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compute log-mel spectrograms ([n_mels, frames] Float32 .npy).",
        discussion: """
        With a file, writes one .npy. With a folder, converts every audio file below it \
        into OUTDIR, mirroring the tree; failures are listed at the end.
        """)

    @Argument(help: "An audio file, or a folder of audio files.") var input: String
    @Argument(help: "The .npy to write, or the output folder.") var output: String
    @OptionGroup var mel: MelOptions
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        compute.apply()
        try runReportingErrors {
            let spec = try MelSpectrogram(config: mel.config)
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: input, isDirectory: &isDir), isDir.boolValue {
                let (done, failures, renamed) = try BatchMel.run(input: input, output: output, mel: spec)
                for (path, target) in renamed { logLine("waveflow: \(path) shares its name with another audio file: wrote \(target)") }
                print("wrote \(done) mel files to \(output)")
                if !failures.isEmpty {
                    for f in failures { logLine("waveflow: error: \(f.reason)") }
                    logLine("waveflow: \(failures.count) file(s) failed")
                    throw ExitCode.failure
                }
            } else {
                try AtomicFile.checkDistinct(output: output, from: [input])
                let m = try spec.compute(file: input)
                try NPY.write(m, to: output)
                print("\(output): \(m.shape[0]) mels x \(m.shape[1]) frames")
            }
        }
    }
}
