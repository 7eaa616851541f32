import ArgumentParser
import Foundation
import WaveFlow

/// Command-line words made friendlier before swift-argument-parser sees
/// them: a negative number after an option is its value (`--sigma -1`, not
/// an unknown flag), a mistyped subcommand gets a suggestion, and
/// `help NAME` of an unknown NAME is an error.
enum Arguments {
    static var subcommandNames: [String] { Waveflow.configuration.subcommands.map { $0._commandName } }

    /// The arguments to parse, or a one-line error and an exit status.
    static func prepared(_ args: [String]) -> Result<[String], WaveFlowError> {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--"), !a.contains("="), i + 1 < args.count, isNegativeNumber(args[i + 1]) {
                out.append(a + "=" + args[i + 1]); i += 2; continue
            }
            out.append(a); i += 1
        }
        guard let first = out.first, !first.hasPrefix("-") else { return .success(out) }
        let names = subcommandNames
        if first == "help" {
            if out.count > 1, !out[1].hasPrefix("-"), !names.contains(out[1]) {
                return .failure(WaveFlowError("no command '\(out[1])'\(suggestion(out[1], names)) (commands: \(names.joined(separator: ", ")))"))
            }
            return .success(out)
        }
        if !names.contains(first) {
            return .failure(WaveFlowError("no command '\(first)'\(suggestion(first, names)) (commands: \(names.joined(separator: ", ")))"))
        }
        return .success(out)
    }

    static func isNegativeNumber(_ s: String) -> Bool { s.hasPrefix("-") && s.count > 1 && Double(s) != nil }

    /// ", did you mean 'synth'?" for the nearest name within 2 edits.
    static func suggestion(_ word: String, _ names: [String]) -> String {
        let scored = names.map { ($0, editDistance(word.lowercased(), $0)) }.min { $0.1 < $1.1 }
        guard let (name, d) = scored, d <= 2 else { return "" }
        return "; did you mean '\(name)'?"
    }

    /// Damerau–Levenshtein distance (adjacent transpositions count once).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        guard !x.isEmpty, !y.isEmpty else { return max(x.count, y.count) }
        var d = [[Int]](repeating: [Int](repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { d[i][0] = i }
        for j in 0...y.count { d[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[x.count][y.count]
    }
}
