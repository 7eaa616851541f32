import Foundation

// Chunked synthesis: the audio of a long mel produced piece by piece, so a
// service can send the first piece before the last is computed.
//
// The flows run on overlapping windows of the mel: chunk [a, b) (frames) is
// synthesised from frames [a - c, b + c) (clipped to the utterance) with the
// same latent noise the whole utterance would get there, and only its
// middle is kept. The LPC front's all-pole filter (infinite memory) runs
// once, in order, over the kept excitation, carrying its state from chunk to
// chunk, so it adds no error. The denoiser's STFT reaches 4 frames (1024
// samples) either way: each piece is denoised with that margin and emitted
// one chunk late, which gives exactly the samples of denoising the whole.
//
// What is not exact: a WaveFlow flow is autoregressive over its h rows and
// each row reads 2^L - 1 columns either side, so its inverse's reach in time
// grows with every row; the context c bounds it. BENCHMARKS.md has the error
// against c for the shipped model.

extension Vocoder {
    /// The denoiser's reach in samples either side (its STFT window).
    static let denoiserMargin = 1024

    /// Synthesises `mel` in chunks with `contextFrames` frames of context
    /// either side, calling `emit` with each piece of audio in order (frames
    /// × hop samples in all; every piece a whole number of frames). The
    /// first chunk has `chunkFrames` frames (it sets the time to the first
    /// piece); each next one is twice the last, up to `maxChunkFrames`
    /// (default 8 × `chunkFrames`), so the context's extra work stays a
    /// bounded fraction of a long mel.
    ///
    /// With context covering the whole mel this is the audio of
    /// ``synthesise(mel:transpose:sigma:seed:denoise:)``; with less it is an
    /// approximation (see *Chunked synthesis* in the README).
    /// - Parameters:
    ///   - emit: receives each piece; throwing from it stops the synthesis
    ///     (the error is rethrown), e.g. when a client went away.
    /// - Throws: the checks of `synthesise(mel:)`, or what `emit` throws.
    public func synthesiseInChunks(mel: NPYArray, transpose: Bool = false, sigma: Double = Vocoder.defaultSigma,
                                   seed: UInt64 = 0, denoise: Float = 0, chunkFrames: Int, contextFrames: Int,
                                   maxChunkFrames: Int? = nil, emit: ([Float]) throws -> Void) throws {
        try check(sigma: sigma, denoise: denoise)
        let m = try synthesizer.validated(mel, transpose: transpose)
        try synthesiseValidatedInChunks(m, sigma: sigma, seed: seed, denoise: denoise, chunkFrames: chunkFrames,
                                        contextFrames: contextFrames, maxChunkFrames: maxChunkFrames ?? 8 * chunkFrames, emit: emit)
    }

    /// `synthesiseInChunks` on a mel already checked (`[n_mels, frames]`).
    func synthesiseValidatedInChunks(_ m: NPYArray, sigma: Double, seed: UInt64, denoise: Float, chunkFrames: Int,
                                     contextFrames: Int, maxChunkFrames: Int, emit: ([Float]) throws -> Void) throws {
        let frames = m.shape[1], hop = config.hopLength, bands = m.shape[0]
        var chunk = max(1, chunkFrames)
        let reach = max(0, contextFrames), largest = max(chunk, maxChunkFrames)
        let model = synthesizer.model
        let z = Synthesizer.noise(count: frames * hop, sigma: sigma, seed: seed)
        let envelope = model.front?.envelope(logMel: m.values, frames: frames)
        var history = model.front.map { LPCHistory(order: $0.order) }
        let denoiser = denoise > 0 ? try self.denoiser() : nil

        /// Mel frames [lo, hi) as a [bands, hi - lo] array.
        func melFrames(_ lo: Int, _ hi: Int) -> [Float] {
            var v = [Float]()
            v.reserveCapacity(bands * (hi - lo))
            for b in 0..<bands { v += m.values[b * frames + lo ..< b * frames + hi] }
            return v
        }
        // Audio so far (only kept while the denoiser still needs it) and how
        // much of it has been emitted; `base` is the sample index of x[0].
        var x = [Float](), base = 0, emitted = 0
        /// Emits samples [emitted, upTo), denoised with the margin the
        /// denoiser needs (available: x covers [base, produced)).
        func flush(upTo end: Int, produced: Int) throws {
            guard end > emitted else { return }
            guard let denoiser else {
                try emit(Array(x[(emitted - base) ..< (end - base)]))
                emitted = end
                x.removeFirst(end - base)
                base = end
                return
            }
            let lo = max(0, emitted - Self.denoiserMargin), hi = min(produced, end + Self.denoiserMargin)
            let piece = try denoiser.apply(Array(x[(lo - base) ..< (hi - base)]), strength: denoise)
            try emit(Array(piece[(emitted - lo) ..< (end - lo)]))
            emitted = end
            let keep = max(0, emitted - Self.denoiserMargin)
            if keep > base { x.removeFirst(keep - base); base = keep }
        }
        var a = 0
        while a < frames {
            let b = min(frames, a + chunk)
            let lo = max(0, a - reach), hi = min(frames, b + reach)
            let e = model.synthesiseExcitation(mel: melFrames(lo, hi), frames: hi - lo,
                                               z: Array(z[lo * hop ..< hi * hop]), context: context)
            var kept = Array(e[(a - lo) * hop ..< (b - lo) * hop])
            if let front = model.front, let envelope {
                kept = front.synthesise(kept, envelope: envelope, from: a * hop, history: &history!)
            }
            x += kept
            let produced = b * hop
            // Without the denoiser a chunk goes out at once; with it, what
            // lies a margin before the end of what exists (all at the end).
            let ready = denoiser == nil || b == frames ? produced : (produced - Self.denoiserMargin) / hop * hop
            try flush(upTo: ready, produced: produced)
            a = b
            chunk = min(2 * chunk, largest)
        }
    }
}
