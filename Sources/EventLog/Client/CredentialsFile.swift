import Foundation

/// A credentials file: what one holder (a witness, a node manager, an operator or a monitor)
/// needs to connect, as `key: value` lines. Paths are relative to the file's folder unless
/// absolute. `pgquorum pki issue` writes it beside the certificate and key it names.
///
///     # pgquorum credentials of node n1
///     cluster-id: 5f0c3a9e2b7d4e18
///     ca-file: ca.crt
///     cert-file: node-n1.crt
///     key-file: node-n1.key
///     replication-password: 64 hexadecimal digits      (node credentials only)
extension WitnessCredentials {
    public struct FileError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// The file's text; paths are written as given.
    public var fileContents: String {
        var text = "# pgquorum credentials of \(holder ?? "a cluster member"): keep them private\n"
            + "cluster-id: \(clusterID)\nca-file: \(caFile)\ncert-file: \(certificateFile)\nkey-file: \(keyFile)\n"
        if let replicationPassword { text += "replication-password: \(replicationPassword)\n" }
        return text
    }

    /// Writes a new credentials file (mode 0600); refuses to replace an existing one unless
    /// `replacing`.
    public func write(to path: String, replacing: Bool = false) throws {
        if !replacing, FileManager.default.fileExists(atPath: path) {
            throw FileError(description: "cannot create credentials file \(path): it already exists")
        }
        try replaceFile(path, contents: fileContents, mode: 0o600)
    }

    /// Reads a credentials file; every problem names the file and the line. The certificate
    /// and key are read when a connection needs them (`TLSCredentials`), so that a renewed
    /// certificate is used without a restart.
    public static func load(from path: String) throws -> WitnessCredentials {
        let values = try readKeyValues(path)
        if values["secret"] != nil {
            throw FileError(
                description: "\(path) holds a shared secret, which pgquorum no longer accepts: every connection now uses TLS with certificates. "
                    + "Create the cluster's certificates with `pgquorum pki init` and `pgquorum pki issue` (see `pgquorum pki --help`)")
        }
        guard let clusterID = values["cluster-id"], !clusterID.isEmpty else {
            throw FileError(description: "\(path): no cluster-id line")
        }
        let folder = (path as NSString).deletingLastPathComponent
        func file(_ key: String) throws -> String {
            guard let value = values[key], !value.isEmpty else { throw FileError(description: "\(path): no \(key) line") }
            return value.hasPrefix("/") || folder.isEmpty ? value : folder + "/" + value
        }
        let credentials = WitnessCredentials(
            clusterID: clusterID, caFile: try file("ca-file"), certificateFile: try file("cert-file"), keyFile: try file("key-file"),
            replicationPassword: values["replication-password"])
        if let password = credentials.replicationPassword, password.count < 32 {
            throw FileError(description: "\(path): the replication password must be at least 32 characters")
        }
        return credentials
    }

    /// Lower-case hexadecimal digits, two per byte.
    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
    }

    /// `count` random bytes from the system's generator, in hexadecimal.
    public static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return hex((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
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
