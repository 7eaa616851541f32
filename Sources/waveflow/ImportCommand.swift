import ArgumentParser
import Foundation
import WaveFlow

/// `waveflow import IN.pt OUT.safetensors`: a PyTorch WaveGlow checkpoint as a waveflow one.
struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a PyTorch WaveGlow checkpoint (.pt/.pth, torch.save) into a waveflow checkpoint, without Python.",
        discussion: """
        Reads both torch.save containers (zip, and the legacy format before PyTorch 1.6) with a pickle reader that \
        runs no code; finds the WaveGlow (the authors' whole-module checkpoints or a state dict), folds weight norm, \
        rewrites the authors' first layout into the current one, infers the config from the tensor shapes and prints it. \
        The mel parameters cannot be read from the file: Tacotron 2's unless given (the hop is the upsampler's kernel / 4). \
        `synth --checkpoint IN.pt` converts in memory the same way, with the default mel parameters.
        """)

    @Argument(help: "The PyTorch checkpoint to read.") var input: String
    @Argument(help: "The .safetensors checkpoint to write.") var output: String
    @Option(help: "Sample rate the model was trained at, Hz.") var sampleRate = 22050
    @Option(help: "FFT size of its mel spectrograms.") var nFFT = 1024
    @Option(help: "Window length of its mel spectrograms.") var win = 1024
    @Option(help: "Lowest mel frequency, Hz.") var fmin = 0.0
    @Option(help: "Highest mel frequency, Hz.") var fmax = 8000.0
    @Option(help: ArgumentHelp("Whether odd flows transform the first half (true/false).",
                               discussion: "Default: true for the authors' first layout (res_layers/skip_layers), false otherwise."))
    var alternateHalves: Bool?

    func run() throws {
        try runReportingErrors {
            try AtomicFile.checkDistinct(output: output, from: [input])
            try AtomicFile.checkReplaceable(output)
            var options = WaveGlowImport.Options()
            options.sampleRate = sampleRate; options.nFFT = nFFT; options.winLength = win
            options.fmin = fmin; options.fmax = fmax; options.alternateHalves = alternateHalves
            let imported = try WaveGlowImport.load(path: input, options: options)
            for line in imported.summary { print(line) }
            try Checkpoint.save(model: imported.model, extra: ["imported_from": imported.source], to: output)
            let size = ((try? FileManager.default.attributesOfItem(atPath: output))?[.size] as? Int) ?? 0
            print("\(output): \(imported.config.parameterCount) parameters, \(size) bytes")
        }
    }
}
