import Crypto
import Foundation
import SwiftASN1
import X509

/// The cluster's own certificate authority: a P-256 key and a self-signed CA certificate that
/// signs one certificate per holder (`ClusterIdentity`). Made with swift-certificates and
/// swift-crypto; nothing shells out to openssl.
public struct CertificateAuthority: Sendable {
    public var certificate: Certificate
    var key: Certificate.PrivateKey

    public init(certificate: Certificate, key: Certificate.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    /// A new CA for cluster `clusterID`, valid from a few minutes before `now` (clocks differ)
    /// for `days`.
    public static func create(clusterID: String, days: Int, now: Date = Date()) throws -> (authority: CertificateAuthority, keyPEM: String) {
        let signing = P256.Signing.PrivateKey()
        let key = Certificate.PrivateKey(signing)
        let name = try DistinguishedName {
            OrganizationName("pgquorum")
            CommonName("pgquorum cluster \(clusterID) CA")
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-clockSkewSeconds), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: key)
        return (CertificateAuthority(certificate: certificate, key: key), signing.pemRepresentation)
    }

    /// How far before now a new certificate starts to be valid: another machine's clock may
    /// be behind this one's.
    public static let clockSkewSeconds: Double = 300

    /// A certificate for `identity`, for both ends of TLS connections, naming `hosts` (DNS
    /// names or IP addresses) so that clients checking host names (PostgreSQL's
    /// `sslmode=verify-full`) accept it; with a new P-256 key, returned as PEM.
    public func issue(
        _ identity: ClusterIdentity, hosts: [String], notValidBefore: Date, notValidAfter: Date
    ) throws -> (certificate: Certificate, keyPEM: String) {
        let signing = P256.Signing.PrivateKey()
        let key = Certificate.PrivateKey(signing)
        let names = try hosts.map { host -> GeneralName in
            if let address = IPAddressBytes(host) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))) }
            guard !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw IdentityError("\"\(host)\" is neither an IP address nor a host name")
            }
            return .dnsName(host)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectKeyIdentifier(hash: key.publicKey)
            if let authorityKey = try? certificate.extensions.subjectKeyIdentifier?.keyIdentifier {
                AuthorityKeyIdentifier(keyIdentifier: authorityKey)
            }
            if !names.isEmpty { SubjectAlternativeNames(names) }
        }
        let issued = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey, notValidBefore: notValidBefore,
            notValidAfter: notValidAfter, issuer: certificate.subject, subject: try identity.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: self.key)
        return (issued, signing.pemRepresentation)
    }
}

/// The bytes of an IPv4 or IPv6 address literal, nil for anything else.
func IPAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

/// A folder holding a cluster's PKI (mode 0700, every file 0600): the CA certificate and key,
/// the cluster's id and replication password (`cluster.conf`), and for each holder issued
/// here its certificate, key and credentials file (`node-n1.crt`, `node-n1.key`,
/// `node-n1.credentials`). Copy a holder's three files and `ca.crt` to its machine; the CA
/// key stays here.
public struct PKIDirectory: Sendable {
    public let path: String
    public var caCertificateFile: String { path + "/ca.crt" }
    public var caKeyFile: String { path + "/ca.key" }
    public var clusterFile: String { path + "/cluster.conf" }

    public init(path: String) {
        self.path = path
    }

    public struct Cluster: Sendable, Equatable {
        public var clusterID: String
        public var replicationPassword: String
    }

    /// Creates the folder, a new cluster id and replication password, and the CA; refuses a
    /// folder that already holds a CA.
    @discardableResult
    public static func create(at path: String, clusterID: String? = nil, caDays: Int = 3_650, now: Date = Date()) throws -> PKIDirectory {
        let directory = PKIDirectory(path: path)
        guard !FileManager.default.fileExists(atPath: directory.caKeyFile), !FileManager.default.fileExists(atPath: directory.clusterFile) else {
            throw WitnessCredentials.FileError(description: "\(path) already holds a cluster's PKI (delete it first to make a new cluster)")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw WitnessCredentials.FileError(description: "cannot create \(path): \(error.localizedDescription)")
        }
        let cluster = Cluster(clusterID: clusterID ?? WitnessCredentials.randomHex(bytes: 8), replicationPassword: WitnessCredentials.randomHex(bytes: 32))
        let (authority, keyPEM) = try CertificateAuthority.create(clusterID: cluster.clusterID, days: caDays, now: now)
        try replaceFile(directory.caKeyFile, contents: keyPEM, mode: 0o600)
        try replaceFile(directory.caCertificateFile, contents: try authority.certificate.serializeAsPEM().pemString + "\n", mode: 0o600)
        try replaceFile(
            directory.clusterFile,
            contents: "# pgquorum cluster: its id, and the password of the PostgreSQL replication role\n"
                + "cluster-id: \(cluster.clusterID)\nreplication-password: \(cluster.replicationPassword)\n", mode: 0o600)
        return directory
    }

    public func cluster() throws -> Cluster {
        let values = try readKeyValues(clusterFile)
        guard let id = values["cluster-id"], !id.isEmpty, let password = values["replication-password"], password.count >= 32 else {
            throw WitnessCredentials.FileError(description: "\(clusterFile) lacks a cluster-id or a replication-password line")
        }
        return Cluster(clusterID: id, replicationPassword: password)
    }

    public func authority() throws -> CertificateAuthority {
        do {
            let certificate = try Certificate(pemEncoded: try String(contentsOfFile: caCertificateFile, encoding: .utf8))
            let key = try Certificate.PrivateKey(pemEncoded: try String(contentsOfFile: caKeyFile, encoding: .utf8))
            return CertificateAuthority(certificate: certificate, key: key)
        } catch {
            throw WitnessCredentials.FileError(
                description: "cannot read the CA of \(path) (ca.crt and ca.key; it signs only where its key is): \(error)")
        }
    }

    /// The base name of a holder's files.
    public static func baseName(_ identity: ClusterIdentity) -> String { "\(identity.role.rawValue)-\(identity.name)" }

    public func credentialsFile(of identity: ClusterIdentity) -> String { path + "/" + Self.baseName(identity) + ".credentials" }

    /// Issues `identity` a certificate valid for `days` from now and writes its key,
    /// certificate and credentials file. Replacing an existing one (`replacing`) is how a
    /// certificate is renewed: the running process reads the new files at its next
    /// connection. The key is written before the certificate, each file by rename.
    @discardableResult
    public func issue(
        _ identity: ClusterIdentity, hosts: [String] = [], days: Int = 365, replacing: Bool = false, now: Date = Date(),
        notValidBefore: Date? = nil
    ) throws -> String {
        let credentialsPath = credentialsFile(of: identity)
        guard replacing || !FileManager.default.fileExists(atPath: credentialsPath) else {
            throw WitnessCredentials.FileError(
                description: "\(identity) already has a certificate in \(path) (pass --renew to issue it a new one)")
        }
        let cluster = try cluster()
        let start = notValidBefore ?? now.addingTimeInterval(-CertificateAuthority.clockSkewSeconds)
        let (certificate, keyPEM) = try authority().issue(identity, hosts: hosts, notValidBefore: start, notValidAfter: now.addingTimeInterval(Double(days) * 86_400))
        let base = path + "/" + Self.baseName(identity)
        try replaceFile(base + ".key", contents: keyPEM, mode: 0o600)
        try replaceFile(base + ".crt", contents: try certificate.serializeAsPEM().pemString + "\n", mode: 0o600)
        let credentials = WitnessCredentials(
            clusterID: cluster.clusterID, caFile: "ca.crt", certificateFile: Self.baseName(identity) + ".crt", keyFile: Self.baseName(identity) + ".key",
            replicationPassword: identity.role == .node ? cluster.replicationPassword : nil, holder: identity.description)
        try credentials.write(to: credentialsPath, replacing: true)
        return credentialsPath
    }
}

/// `key: value` lines of a small file; blank lines and `#` comments skipped.
func readKeyValues(_ path: String) throws -> [String: String] {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw WitnessCredentials.FileError(description: "cannot read \(path): \(error.localizedDescription)")
    }
    var values: [String: String] = [:]
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let trimmed = line.trimmingSpaces()
        if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
        guard let colon = trimmed.firstIndex(of: ":") else { throw WitnessCredentials.FileError(description: "\(path):\(number + 1): expected KEY: VALUE") }
        values[String(trimmed[..<colon]).trimmingSpaces()] = String(trimmed[trimmed.index(after: colon)...]).trimmingSpaces()
    }
    return values
}
