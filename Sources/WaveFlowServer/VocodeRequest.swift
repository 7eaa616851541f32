import Foundation
import WaveFlow

/// A request the service refuses: an HTTP status and a one-line reason
/// (sent as the body, `text/plain`).
struct RequestError: Error, CustomStringConvertible {
    var status: Int
    var reason: String
    init(_ status: Int, _ reason: String) {
        self.status = status
        // One line, whatever the engine said.
        self.reason = reason.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
    static func bad(_ reason: String) -> RequestError { RequestError(400, reason) }
    var description: String { "\(status): \(reason)" }
}

/// What the reply holds.
enum OutputFormat: String, CaseIterable, Sendable {
    /// 16-bit PCM WAV (`synth --format pcm16`).
    case pcm16
    /// 32-bit float WAV (`synth --format float`).
    case float
    /// Raw little-endian Float32 samples, no header.
    case f32

    var contentType: String { self == .f32 ? "application/octet-stream" : "audio/wav" }
}

/// The options of one synthesis: `waveflow synth`'s, plus streaming.
struct SynthesisOptions: Equatable, Sendable {
    var sigma = Vocoder.defaultSigma
    var seed: UInt64 = 0
    var format = OutputFormat.pcm16
    var denoise: Float = 0
    var transpose = false
    var stream = false

    /// Option names a request may give (query or JSON).
    static let names: Set<String> = ["sigma", "seed", "format", "denoise", "transpose", "stream"]

    /// Sets option `name` from its text (a query parameter or a JSON scalar).
    mutating func set(_ name: String, _ text: String) throws {
        func flag() throws -> Bool {
            switch text.lowercased() {
            case "1", "true", "yes", "": return true
            case "0", "false", "no": return false
            default: throw RequestError.bad("\(name) must be 0 or 1 (got '\(text)')")
            }
        }
        switch name {
        case "sigma":
            guard let v = Double(text), Synthesizer.sigmaRange.contains(v) else {
                throw RequestError.bad("sigma must be a number from \(Synthesizer.sigmaRange.lowerBound) to \(Synthesizer.sigmaRange.upperBound) (got '\(text)')")
            }
            sigma = v
        case "seed":
            guard let v = UInt64(text) else { throw RequestError.bad("seed must be an integer from 0 to 2^64-1 (got '\(text)')") }
            seed = v
        case "format":
            guard let v = OutputFormat(rawValue: text) else { throw RequestError.bad("format must be pcm16, float or f32 (got '\(text)')") }
            format = v
        case "denoise":
            guard let v = Float(text), v.isFinite, v >= 0 else { throw RequestError.bad("denoise must be a non-negative number (got '\(text)')") }
            denoise = v
        case "transpose": transpose = try flag()
        case "stream": stream = try flag()
        default: throw RequestError.bad("unknown option '\(name)' (options: \(Self.names.sorted().joined(separator: ", ")))")
        }
    }

    /// Options from query parameters (names outside `allowed` refused).
    init(query: [(String, String)], allowed: Set<String> = SynthesisOptions.names) throws {
        for (k, v) in query {
            guard allowed.contains(k) else {
                throw RequestError.bad("unknown option '\(k)' (options: \(allowed.sorted().joined(separator: ", ")))")
            }
            try set(k, v)
        }
    }
}

/// Request bodies: a `.npy` mel or JSON `{"mel": [[...]], options...}`.
enum VocodeBody {
    /// The mel and options of a `POST /v1/vocode` body of `contentType`;
    /// JSON fields override query options of the same name.
    static func parse(_ body: Data, contentType: String?, options base: SynthesisOptions) throws -> (NPYArray, SynthesisOptions) {
        let type = (contentType ?? "").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        guard !body.isEmpty else { throw RequestError.bad("empty body: send a .npy mel (application/x-npy) or JSON {\"mel\": [[...]]}") }
        let looksLikeNPY = body.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59])
        if type == "application/json" || (!looksLikeNPY && type != "application/x-npy" && body.first == UInt8(ascii: "{")) {
            return try json(body, options: base)
        }
        do {
            return (try NPY.decode(body), base)
        } catch let e as WaveFlowError {
            throw RequestError.bad("bad .npy: \(e.description)")
        }
    }

    /// `{"mel": [[Float]], "sigma": ..., "seed": ..., "format": ..., "denoise": ..., "transpose": ..., "stream": ...}`.
    static func json(_ body: Data, options base: SynthesisOptions) throws -> (NPYArray, SynthesisOptions) {
        let request: JSONRequest
        do { request = try JSONDecoder().decode(JSONRequest.self, from: body) } catch let e as DecodingError {
            throw RequestError.bad("bad JSON: \(describe(e))")
        } catch let e as RequestError { throw e } catch {
            throw RequestError.bad("bad JSON: not a valid JSON document")
        }
        var options = base
        if let v = request.sigma { try options.set("sigma", "\(v)") }
        if let v = request.seed { options.seed = v }
        if let v = request.format { try options.set("format", v) }
        if let v = request.denoise { try options.set("denoise", "\(v)") }
        if let v = request.transpose { options.transpose = v }
        if let v = request.stream { options.stream = v }
        let rows = request.mel
        let columns = rows.first?.count ?? 0
        if let i = rows.firstIndex(where: { $0.count != columns }) {
            throw RequestError.bad("bad JSON: mel row \(i) has \(rows[i].count) values, row 0 has \(columns)")
        }
        return (NPYArray(shape: [rows.count, columns], values: rows.flatMap { $0 }), options)
    }

    /// A decoding error in one line: where and what.
    static func describe(_ e: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var s = ""
            for k in keys {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return s.isEmpty ? "the document" : s
        }
        switch e {
        case .typeMismatch(let type, let c):
            let what: String
            switch "\(type)" {
            case "String": what = "a string"
            case "Bool": what = "true or false"
            case "UInt64": what = "an integer from 0 to 2^64-1"
            case "Array<Float>": what = "a list of numbers"
            case "Array<Array<Float>>": what = "a list of rows of numbers"
            default: what = "a number"
            }
            return "\(path(c.codingPath)) must be \(what)"
        case .valueNotFound(_, let c): return "\(path(c.codingPath)) is null"
        case .keyNotFound(let k, _): return "missing field '\(k.stringValue)' (a list of rows of numbers)"
        case .dataCorrupted(let c):
            if c.codingPath.isEmpty { return "not a valid JSON document" }
            return "\(path(c.codingPath)): \(c.debugDescription.split(whereSeparator: \.isNewline).first ?? "")"
        @unknown default: return "cannot decode"
        }
    }
}

/// The JSON form of a vocode request.
struct JSONRequest: Decodable {
    var mel: [[Float]]
    var sigma: Double?
    var seed: UInt64?
    var format: String?
    var denoise: Double?
    var transpose: Bool?
    var stream: Bool?

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        for k in c.allKeys where k.stringValue != "mel" && !SynthesisOptions.names.contains(k.stringValue) {
            throw RequestError.bad("bad JSON: unknown field '\(k.stringValue)' (fields: mel, \(SynthesisOptions.names.sorted().joined(separator: ", ")))")
        }
        mel = try c.decode([[Float]].self, forKey: Key(stringValue: "mel"))
        sigma = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "sigma"))
        seed = try c.decodeIfPresent(UInt64.self, forKey: Key(stringValue: "seed"))
        format = try c.decodeIfPresent(String.self, forKey: Key(stringValue: "format"))
        denoise = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "denoise"))
        transpose = try c.decodeIfPresent(Bool.self, forKey: Key(stringValue: "transpose"))
        stream = try c.decodeIfPresent(Bool.self, forKey: Key(stringValue: "stream"))
    }
}
