import Foundation

/// `waveflow eval --report DIR`: one self-contained HTML page (no external
/// assets) with, per file, the log-mel spectrograms (PNG) of the original,
/// the model's copy synthesis and both baselines, audio players, and the
/// scores.
public enum EvaluationReport {
    static let systems = ["original", "model", "lpc", "griffin-lim"]
    static let titles = ["original": "original", "model": "model", "lpc": "noise-excited LPC", "griffin-lim": "Griffin-Lim 32"]

    /// Writes file `index`'s WAVs and spectrogram PNGs into `folder`.
    public static func writeFiles(for r: EvaluationResult, index: Int, config: ModelConfig, to folder: String) throws {
        let mel = try MelSpectrogram(config: config.mel)
        // One colour scale for all four pictures of a file: the original's range.
        let reference = try mel.compute(r.audio["original"] ?? [])
        let top = reference.values.max() ?? 0
        for name in systems {
            guard let samples = r.audio[name] else { continue }
            let base = (folder as NSString).appendingPathComponent(String(format: "%03d-%@", index, name))
            try AudioFile.write(Audio(samples: samples, sampleRate: config.sampleRate), to: base + ".wav")
            let m = try mel.compute(samples)
            try AtomicFile.write(PNG.spectrogram(m, top: top, range: 11), to: base + ".png")
        }
    }

    /// Writes `report.html` into `folder`; returns its path.
    @discardableResult
    public static func writePage(_ results: [EvaluationResult], checkpoint: String, sigma: Double, to folder: String) throws -> String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        func f(_ x: Double, _ d: Int = 3) -> String { String(format: "%.\(d)f", x) }
        let n = Double(max(1, results.count))
        func mean(_ k: (EvaluationResult) -> Double) -> Double { results.map(k).reduce(0, +) / n }
        var html = """
            <!doctype html><html><head><meta charset="utf-8"><title>waveflow eval</title>
            <style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse}
            td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}
            .file{margin:1.5em 0;border-top:2px solid #888}.grid{display:grid;grid-template-columns:repeat(2,1fr);gap:10px}
            .grid img{width:100%;image-rendering:pixelated;border:1px solid #ccc}audio{width:100%}.best{font-weight:bold}</style></head><body>
            <h1>waveflow eval</h1>
            <p>Checkpoint <code>\(esc(checkpoint))</code>, sigma \(f(sigma, 2)), \(results.count) files.
            Copy synthesis: audio &rarr; log-mel &rarr; vocoder &rarr; audio. Lower is better for the distances; 1 is right for the RMS ratio.
            Pictures: log-mel, 11 nats below each file's loudest original bin to it.</p>
            <table><tr><th>system</th><th>log-mel L1</th><th>MR-STFT log-mag &le; 8 kHz</th><th>MR-STFT (SC + log-mag)</th><th>RMS ratio</th></tr>
            """
        for (name, k) in [("model", \EvaluationResult.model), ("noise-excited LPC", \EvaluationResult.lpc),
                          ("Griffin-Lim 32", \EvaluationResult.griffinLim)] {
            html += "<tr><th>\(name)</th><td>\(f(mean { $0[keyPath: k].melDistance }))</td>"
                + "<td>\(f(mean { $0[keyPath: k].logSpectralDistance }))</td><td>\(f(mean { $0[keyPath: k].stftDistance }))</td>"
                + "<td>\(f(mean { $0[keyPath: k].rmsRatio }))</td></tr>\n"
        }
        html += "</table><p>Mean NLL \(f(mean(\.nll), 4)) nats/sample; model real-time factor \(f(mean(\.realTimeFactor)))</p>\n"
        for (i, r) in results.enumerated() {
            html += "<div class=\"file\"><h3>\(esc((r.path as NSString).lastPathComponent))</h3>"
            html += "<p>NLL \(f(r.nll, 4)); log-spectral distance &le; 8 kHz: model \(f(r.model.logSpectralDistance)), "
                + "LPC \(f(r.lpc.logSpectralDistance)), Griffin-Lim \(f(r.griffinLim.logSpectralDistance)); RMS ratio model \(f(r.model.rmsRatio))</p>"
            html += "<div class=\"grid\">"
            for name in systems {
                let base = String(format: "%03d-%@", i, name)
                html += "<div><b>\(titles[name]!)</b><br><img src=\"\(base).png\" alt=\"\(name) spectrogram\">"
                    + "<audio controls preload=\"none\" src=\"\(base).wav\"></audio></div>"
            }
            html += "</div></div>\n"
        }
        html += "</body></html>\n"
        let path = (folder as NSString).appendingPathComponent("report.html")
        try AtomicFile.write(Data(html.utf8), to: path)
        return path
    }
}

/// A minimal PNG writer (8-bit RGB, deflate "stored" blocks: no zlib needed).
public enum PNG {
    /// A log-mel `[M, F]` as a picture: low bands at the bottom, `top - range
    /// ... top` nats mapped through a dark-to-bright colour ramp, two pixels
    /// per band.
    public static func spectrogram(_ mel: NPYArray, top: Float, range: Float) -> Data {
        let bands = mel.shape[0], frames = mel.shape[1]
        let scale = 2, height = bands * scale
        var rgb = [UInt8](repeating: 0, count: frames * height * 3)
        for y in 0..<height {
            let m = bands - 1 - y / scale
            for x in 0..<frames {
                let v = max(0, min(1, (mel.values[m * frames + x] - (top - range)) / range))
                let (r, g, b) = ramp(v)
                let o = (y * frames + x) * 3
                rgb[o] = r; rgb[o + 1] = g; rgb[o + 2] = b
            }
        }
        return encode(width: frames, height: height, rgb: rgb)
    }

    /// Black -> purple -> orange -> pale yellow.
    static func ramp(_ v: Float) -> (UInt8, UInt8, UInt8) {
        let stops: [(Float, Float, Float)] = [(0, 0, 4), (80, 18, 123), (200, 60, 90), (250, 150, 30), (252, 250, 190)]
        let p = v * Float(stops.count - 1)
        let i = min(stops.count - 2, Int(p)), t = p - Float(i)
        let (a, b) = (stops[i], stops[i + 1])
        return (UInt8(a.0 + (b.0 - a.0) * t), UInt8(a.1 + (b.1 - a.1) * t), UInt8(a.2 + (b.2 - a.2) * t))
    }

    static func encode(width: Int, height: Int, rgb: [UInt8]) -> Data {
        var raw = [UInt8]()
        raw.reserveCapacity(height * (1 + width * 3))
        for y in 0..<height {
            raw.append(0) // filter: none
            raw += rgb[(y * width * 3) ..< ((y + 1) * width * 3)]
        }
        // zlib stream of stored deflate blocks (at most 65535 bytes each).
        var z: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, raw.count - offset)
            z.append(offset + n == raw.count ? 1 : 0)
            z += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            z += raw[offset ..< offset + n]
            offset += n
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        z += bigEndian((b << 16) | a)
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        png += chunk("IHDR", bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, 2, 0, 0, 0])
        png += chunk("IDAT", z)
        png += chunk("IEND", [])
        return Data(png)
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + body + bigEndian(crc32(body))
    }

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
