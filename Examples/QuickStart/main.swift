// QuickStart: waveflow used as a Swift library, step by step.
//
//     swift build -c release --product waveflow-example
//     .build/release/waveflow-example [OUTPUT-FOLDER]     # default: quickstart-output
//
// It takes a clip of the repository's example speech (Audio/), computes its
// log-mel spectrogram, turns that back into speech with the shipped model
// (Checkpoints/shipped/model.safetensors), writes the WAV files, and then
// trains a tiny model for 3 steps in a temporary folder. It takes a few
// seconds. The same calls work in your own package: depend on the
// "WaveFlow" library product of this package and `import WaveFlow`.

import Foundation
import WaveFlow

// MARK: 0. Set-up, as the `waveflow` tool does first thing

// OpenBLAS chooses its compute kernel when it is loaded and does not know
// recent CPUs; this re-executes the program once with the right kernel (so
// the products are as fast as the tool's, and give the same bits).
BLAS.ensureFastKernel()
// Keeps large freed blocks in the heap (the model allocates and frees big
// scratch buffers; without this, glibc returns them to the kernel each time).
configureAllocator()
// How the numerics run is a value passed to what computes. Precision
// `.automatic` is what `waveflow synth` uses by default: bf16 where the CPU
// and oneDNN (libdnnl2) offer it, fp32 otherwise. Use `.fp32` for the
// reference numbers.
let context = ComputeContext(precision: .automatic)

let arguments = CommandLine.arguments.dropFirst()
if arguments.contains(where: { $0.hasPrefix("-") }) || arguments.count > 1 {
    print("usage: waveflow-example [OUTPUT-FOLDER]   (default: quickstart-output)")
    exit(arguments.contains("-h") || arguments.contains("--help") ? 0 : 64)
}
let output = arguments.first ?? "quickstart-output"

/// A file or folder of this repository (`relative` to its root): looked for
/// in the current folder, then above the built program (which sits in the
/// repository's `.build/`), then beside this source file.
func repositoryPath(_ relative: String) -> String? {
    var roots = [FileManager.default.currentDirectoryPath]
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<4 {
        roots.append(dir.path)
        dir = dir.deletingLastPathComponent()
    }
    // #filePath is Examples/QuickStart/main.swift: two folders below the root.
    roots.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path)
    return roots.map { ($0 as NSString).appendingPathComponent(relative) }
        .first { FileManager.default.fileExists(atPath: $0) }
}

do {
    // MARK: 1. Load a model

    // A checkpoint is one .safetensors file holding the weights and the
    // model's config; it is validated completely before anything is built.
    // `Checkpoint.defaultPath()` is what `waveflow synth` uses without
    // --checkpoint: the shipped model, else the newest trained one.
    guard let checkpoint = Checkpoint.defaultPath() ?? repositoryPath("Checkpoints/shipped/model.safetensors") else {
        throw WaveFlowError("no checkpoint found (run from the repository, or pass one to Vocoder(checkpoint:))")
    }
    let vocoder = try Vocoder(checkpoint: checkpoint, context: context)
    print("model: \(checkpoint) (\(vocoder.bands) mel bands, \(vocoder.sampleRate) Hz, hop \(vocoder.hopLength))")

    // MARK: 2. A mel spectrogram

    // In a text-to-speech system the mel comes from the acoustic model
    // (Tacotron 2, FastSpeech 2, ...): an [n_mels, frames] array of natural
    // log magnitudes (see README, "Features"). Here we make one from real
    // speech ("copy synthesis"), exactly as `waveflow mel` does. The file is
    // resampled to the model's rate and its channels averaged.
    guard let clip = repositoryPath("Audio/columns__sl-v-pust.ogg") else {
        throw WaveFlowError("example audio not found (Audio/ of the repository)")
    }
    let mel = try vocoder.melSpectrogram(file: clip)
    print("mel: \(mel.shape[0]) bands x \(mel.shape[1]) frames from \(clip)")
    // `vocoder.melSpectrogram(of: samples)` does the same for samples you
    // hold (mono, at vocoder.sampleRate); `NPY.write(mel, to: "m.npy")`
    // saves a mel for `waveflow synth`, `NPY.read` loads one.

    // MARK: 3. Vocode

    // sigma is the temperature of the latent noise (0.9 is the tool's
    // default), seed picks the noise: the same mel, sigma and seed give the
    // same audio, bit for bit, as `waveflow synth m.npy out.wav --sigma 0.9
    // --seed 0`. A mel with the wrong band count, a NaN or no frames throws
    // a WaveFlowError with the tool's one-line message.
    let started = Date()
    let audio = try vocoder.synthesise(mel: mel, sigma: 0.9, seed: 0)
    let seconds = Double(audio.count) / Double(vocoder.sampleRate)
    print(String(format: "synthesised %d samples (%.2f s of audio) in %.2f s", audio.count, seconds,
                 Date().timeIntervalSince(started)))
    // F frames always give F x hop samples.
    precondition(audio.count == mel.shape[1] * vocoder.hopLength)

    // The denoiser subtracts a multiple of the model's bias spectrum (the
    // faint tone a flow vocoder leaves); 0.01 to 0.1 is the useful range.
    let denoised = try vocoder.synthesise(mel: mel, sigma: 0.9, seed: 0, denoise: 0.05)

    // MARK: 4. Write WAV files

    // Written atomically (a temporary file, then a rename), 16-bit PCM by
    // default; `.float` keeps the samples exactly. The return value counts
    // samples clipped to [-1, 1].
    try makeDirectory(output)
    let wav = (output as NSString).appendingPathComponent("copy-synthesis.wav")
    let clipped = try vocoder.write(audio, to: wav)
    try vocoder.write(denoised, to: (output as NSString).appendingPathComponent("copy-synthesis-denoised.wav"))
    print("wrote \(wav)" + (clipped > 0 ? " (\(clipped) samples clipped)" : ""))

    // MARK: 5. Train a model of your own

    // `Training.train` is `waveflow train` in one call: every audio file
    // below the corpus folder (here the 20 example clips) is read and its
    // mel computed, one in twenty is held out for validation, and the model
    // is trained on random segments. The "tiny" preset (16 k parameters)
    // makes this quick; a real voice wants "lpc-h64-c32" (the default) and
    // thousands of steps. The run folder gets step-*.safetensors,
    // latest.safetensors, best.safetensors, metrics.jsonl and nll.svg.
    guard let corpus = repositoryPath("Audio") else { throw WaveFlowError("Audio/ not found") }
    let runFolder = NSTemporaryDirectory() + "waveflow-quickstart-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: runFolder) }
    var options = TrainOptions()
    options.batch = 2           // segments per step
    options.segment = 4096      // samples per segment (16 mel frames)
    options.lr = 3e-3
    options.warmup = 1
    options.validationSeconds = 1
    let summary = try Training.train(corpus: corpus, config: "tiny", runFolder: runFolder, steps: 3, options: options,
                                       context: context)
    print("trained to step \(summary.step) on \(summary.trainingFiles) files; validation NLL "
          + String(format: "%.3f", summary.bestValidationNLL) + " nats/sample on \(summary.validationFiles) file(s)")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: runFolder))?.sorted() ?? []
    print("run folder (temporary, removed on exit): \(files.joined(separator: ", "))")

    // A checkpoint of your own run loads like the shipped one. After 3 steps
    // this model is still nearly the identity flow: it gives noise-like audio.
    let mine = try Vocoder(checkpoint: summary.latestCheckpoint, context: context)
    let tinyWav = (output as NSString).appendingPathComponent("tiny-model.wav")
    try mine.write(try mine.synthesise(mel: mel), to: tinyWav)
    print("wrote \(tinyWav) (the 3-step model)")
} catch {
    // Every engine error is a WaveFlowError with a one-line description
    // (naming the file it concerns, if any).
    FileHandle.standardError.write(Data("waveflow-example: error: \(error.describe())\n".utf8))
    exit(1)
}
