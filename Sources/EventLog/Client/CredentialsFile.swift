import Foundation

/// The cluster credentials file that every witness, node manager and CLI reads: the cluster
/// id and the shared secret, as `key: value` lines. `pgquorum witness init` writes it (mode
/// 0600); copy it to every machine of the cluster.
///
///     # pgquorum cluster credentials
///     cluster-id: 5f0c3a9e2b7d4e18
///     secret: 64 hexadecimal digits
extension WitnessCredentials {
    public struct FileError: Error, CustomStringConvertible {
        public var description: String
    }

    /// A new cluster id (16 hex digits) and a new 32-byte secret.
    public static func generate() -> WitnessCredentials {
        var generator = SystemRandomNumberGenerator()
        let id = (0..<8).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return WitnessCredentials(clusterID: hex(id), secret: secret)
    }

    public var fileContents: String {
        "# pgquorum cluster credentials: copy to every witness, node and operator machine; keep it private\n"
            + "cluster-id: \(clusterID)\nsecret: \(Self.hex(secret))\n"
    }

    /// Writes a new credentials file; refuses to replace an existing one.
    public func write(to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            let reason = errno == EEXIST ? "it already exists (delete it first to make a new cluster)" : String(cString: strerror(errno))
            throw FileError(description: "cannot create credentials file \(path): \(reason)")
        }
        defer { close(fd) }
        let bytes = Array(fileContents.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw FileError(description: "cannot write credentials file \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Reads a credentials file; every problem names the file and the line.
    public static func load(from path: String) throws -> WitnessCredentials {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw FileError(description: "cannot read credentials file \(path): \(error.localizedDescription)")
        }
        var values: [String: String] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingSpaces()
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let colon = trimmed.firstIndex(of: ":") else {
                throw FileError(description: "\(path):\(number + 1): expected KEY: VALUE")
            }
            values[String(trimmed[..<colon]).trimmingSpaces()] = String(trimmed[trimmed.index(after: colon)...]).trimmingSpaces()
        }
        guard let clusterID = values["cluster-id"], !clusterID.isEmpty else {
            throw FileError(description: "\(path): no cluster-id line")
        }
        guard let secretText = values["secret"], let secret = unhex(secretText), secret.count >= 16 else {
            throw FileError(description: "\(path): the secret line must hold at least 32 hexadecimal digits")
        }
        return WitnessCredentials(clusterID: clusterID, secret: secret)
    }

    /// Lower-case hexadecimal digits, two per byte.
    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
    }

    static func unhex(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

/// The cluster id a witness data directory belongs to, recorded at its first start so that a
/// witness never joins another cluster's quorum with its log.
public enum WitnessIdentity {
    public static let fileName = "cluster-id"

    /// Records `clusterID` in a new data directory, or checks it against the recorded one.
    public static func claim(dataDirectory: String, clusterID: String) throws {
        let path = dataDirectory + "/" + fileName
        if let recorded = try? String(contentsOfFile: path, encoding: .utf8) {
            let recorded = recorded.trimmingSpaces().trimmingCharacters(in: .newlines)
            guard recorded == clusterID else {
                throw WitnessCredentials.FileError(
                    description: "data directory \(dataDirectory) belongs to cluster \(recorded); the credentials are for cluster \(clusterID)")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            try replaceFile(path, contents: clusterID + "\n")
        } catch {
            throw WitnessCredentials.FileError(description: "cannot record the cluster id in \(dataDirectory): \(error)")
        }
    }
}

/// Writes `contents` to a temporary file beside `path`, flushes it and renames it over
/// `path`: readers see the old file or the new one, never a part. (Foundation's `.atomic`
/// writes leave an empty /tmp/TemporaryDirectory.* behind on Linux.)
public func replaceFile(_ path: String, contents: String, mode: mode_t = 0o644) throws {
    let temporary = path + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard fd >= 0 else { throw WitnessCredentials.FileError(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
    let bytes = Array(contents.utf8)
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd) == 0
    close(fd)
    guard written == bytes.count, synced, rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw WitnessCredentials.FileError(description: "cannot write \(path): \(reason)")
    }
}
