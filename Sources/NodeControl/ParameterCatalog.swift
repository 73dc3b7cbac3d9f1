import Foundation

/// One server parameter as the server programs describe it (`postgres --describe-config`):
/// what `pg_settings` says of it, without a running server.
public struct ParameterDescription: Sendable, Equatable {
    public var name: String
    /// When a change takes effect: `postmaster` (a restart), `sighup` (a reload), `user`,
    /// `superuser`, … (`pg_settings.context`).
    public var context: String
    public var type: String
    public var defaultValue: String
    public var minimum: String
    public var maximum: String
    public var summary: String

    /// A change takes effect only when postgres restarts.
    public var needsRestart: Bool { context == "postmaster" }
}

/// Server parameters checked by the server programs themselves, so that `pgquorum pg set`
/// refuses what postgres would refuse (an unknown name, a wrong type, a value out of range, an
/// unknown enum value or unit) before anything reaches the log, with postgres's own words.
public struct ParameterCatalog: Sendable {
    public let installation: PostgresInstallation
    public let parameters: [String: ParameterDescription]

    /// Reads the parameters of `installation`'s server (`postgres --describe-config`).
    public init(installation: PostgresInstallation) throws(InstallationError) {
        self.installation = installation
        let path = try installation.program("postgres")
        let output: String
        do {
            output = try runCommand(path, ["--describe-config"], timeout: .seconds(30)).output
        } catch {
            throw .unknownVersion(path: path, output: "postgres --describe-config failed: \(error)")
        }
        parameters = Self.parse(output)
    }

    /// `--describe-config` prints one tab-separated line per parameter: name, context,
    /// group, type, default, minimum, maximum, summary, description.
    static func parse(_ output: String) -> [String: ParameterDescription] {
        var parameters: [String: ParameterDescription] = [:]
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 8, !fields[0].isEmpty else { continue }
            parameters[fields[0]] = ParameterDescription(
                name: fields[0], context: fields[1], type: fields[3], defaultValue: fields[4], minimum: fields[5], maximum: fields[6],
                summary: fields[7])
        }
        return parameters
    }

    /// What is wrong with `name = value`, in postgres's own words, or nil when postgres takes
    /// it. Names with a dot (an extension's parameters) are not known before the extension
    /// loads: postgres takes any value for them.
    public func problem(name: String, value: String) -> String? {
        let name = name.lowercased()
        if !name.contains("."), parameters[name] == nil {
            let close = parameters.keys.filter { Self.distance($0, name) <= 2 || ($0.contains(name) && name.count >= 4) }.sorted().prefix(5)
            return "unknown parameter \(name)" + (close.isEmpty ? "" : "; did you mean \(close.joined(separator: ", "))?")
        }
        // postgres reads a configuration file holding only this line, as it reads its own:
        // `postgres -C` checks every value against the server's rules and prints why not.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pgquorum-check-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let line = "\(name) = '\(escapeConfValue(value))'\n"
            try line.write(toFile: folder + "/postgresql.conf", atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: folder + "/postgresql.conf")
            let path = try installation.program("postgres")
            let result = try runCommand(path, ["-C", name, "-D", folder], timeout: .seconds(30), check: false)
            if result.termination == .exited(code: 0) { return nil }
            return Self.explanation(result.output)
        } catch {
            return "could not check the value with the server programs: \(error)"
        }
    }

    /// The edit distance between two names (insertions, deletions, substitutions).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        guard !a.isEmpty else { return b.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// postgres's reasons from its `-C` output: the LOG, DETAIL and HINT lines, without the
    /// missing auto.conf and the closing FATAL.
    static func explanation(_ output: String) -> String {
        var parts: [String] = []
        for line in output.split(separator: "\n") {
            for tag in ["LOG:", "DETAIL:", "HINT:"] {
                guard let range = line.range(of: tag) else { continue }
                let text = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
                if !text.hasPrefix("skipping missing configuration file") { parts.append(text) }
            }
        }
        return parts.isEmpty ? output.trimmingCharacters(in: .whitespacesAndNewlines) : parts.joined(separator: " ")
    }
}
