import Foundation
import NIOSSL
import Synchronization
import X509

/// What one holder of the cluster's certificates needs on every witness connection (DESIGN §5
/// rule 5): the cluster id both sides check, the cluster's CA certificate (or several, while a
/// CA is being rotated), its own certificate and key; for a node, also the password of the
/// PostgreSQL replication role, the same on every node.
public struct WitnessCredentials: Sendable {
    public var clusterID: String
    public var caFile: String
    public var certificateFile: String
    public var keyFile: String
    public var replicationPassword: String?
    /// Who the credentials belong to ("node n1"), for the file's header line.
    public var holder: String?

    public init(
        clusterID: String, caFile: String, certificateFile: String, keyFile: String, replicationPassword: String? = nil, holder: String? = nil
    ) {
        self.clusterID = clusterID
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.replicationPassword = replicationPassword
        self.holder = holder
    }
}

/// The TLS side of a holder's credentials: its certificate, its key and the cluster's CA, read
/// from their files into TLS 1.3 contexts for both ends of a connection, each requiring and
/// checking the other's certificate against the CA. The files are read again when one of them
/// changes, so the next connection uses a renewed certificate without a restart; connections
/// already open keep theirs.
public final class TLSCredentials: Sendable {
    public struct Loaded: Sendable {
        /// Who this holder is, from its own certificate.
        public var identity: ClusterIdentity
        public var notValidAfter: Date
        public var serverContext: NIOSSLContext
        public var clientContext: NIOSSLContext
        /// Counts the loads: it changes when changed files were read again.
        public var generation = 0
        /// The DNS names and IP addresses (as bytes) the certificate names.
        var dnsNames: [String] = []
        var ipAddresses: [[UInt8]] = []

        /// Whether a client checking host names (`sslmode=verify-full`) accepts this
        /// certificate for `host`.
        public func names(host: String) -> Bool {
            if let address = IPAddressBytes(host) { return ipAddresses.contains(address) }
            let host = host.lowercased()
            return dnsNames.contains { name in
                let name = name.lowercased()
                if name.hasPrefix("*."), let dot = host.firstIndex(of: ".") { return host[dot...] == name.dropFirst() }
                return name == host
            }
        }

        /// What the certificate names, for messages.
        public var hostsDescription: String {
            let addresses = ipAddresses.map { bytes in
                bytes.count == 4 ? bytes.map(String.init).joined(separator: ".") : bytes.map { String($0, radix: 16) }.joined(separator: ":")
            }
            let all = dnsNames + addresses
            return all.isEmpty ? "no host" : all.joined(separator: ", ")
        }
    }

    public let credentials: WitnessCredentials
    private let cache: Mutex<(stamps: [FileStamp], loaded: Loaded, reloadError: String?)>

    /// Reads the files now: a holder with unusable credentials fails at start, not at its
    /// first connection.
    public init(_ credentials: WitnessCredentials) throws {
        self.credentials = credentials
        let stamps = Self.stamps(credentials)
        cache = Mutex((stamps, try Self.load(credentials), nil))
    }

    public var identity: ClusterIdentity { cache.withLock { $0.loaded.identity } }

    /// The contexts for the next connection, read again first if a file changed. A change
    /// that does not load (a certificate renewed but its key not yet) keeps the contexts in
    /// use and is tried again at the next connection; `reloadError` says why meanwhile.
    public func current() -> Loaded {
        let stamps = Self.stamps(credentials)
        if let unchanged = cache.withLock({ $0.stamps == stamps ? $0.loaded : nil }) { return unchanged }
        do {
            var loaded = try Self.load(credentials)
            return cache.withLock { cache in
                loaded.generation = cache.loaded.generation + 1
                cache = (stamps, loaded, nil)
                return loaded
            }
        } catch {
            return cache.withLock { cache in
                cache.reloadError = "\(error)"
                return cache.loaded
            }
        }
    }

    /// A warning when this holder's certificate has expired or expires within two weeks.
    public func expiryWarning(now: Date = Date()) -> String? {
        let loaded = current()
        if loaded.notValidAfter <= now {
            return "the certificate of \(loaded.identity) has expired (\(loaded.notValidAfter)): the others refuse it until it is renewed (pgquorum pki issue --renew)"
        }
        let days = loaded.notValidAfter.timeIntervalSince(now) / 86_400
        if days < 14 { return "the certificate of \(loaded.identity) expires in \(Int(days)) days (\(loaded.notValidAfter)): renew it (pgquorum pki issue --renew)" }
        return nil
    }

    /// Why the changed files could not be used, while they cannot.
    public var reloadError: String? { cache.withLock { $0.reloadError } }

    static func load(_ credentials: WitnessCredentials) throws -> Loaded {
        func read<T>(_ what: String, _ path: String, _ body: () throws -> T) throws -> T {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw WitnessCredentials.FileError(description: "cannot read the \(what) \(path): no such file, or not readable")
            }
            do { return try body() } catch {
                throw WitnessCredentials.FileError(description: "cannot read the \(what) \(path): not a PEM file of that kind (\(error))")
            }
        }
        let roots = try read("CA certificate file", credentials.caFile) { try NIOSSLCertificate.fromPEMFile(credentials.caFile) }
        let chain = try read("certificate file", credentials.certificateFile) { try NIOSSLCertificate.fromPEMFile(credentials.certificateFile) }
        // Read once: the key checked against the certificate is the key used, even while a
        // renewal replaces the file.
        let keyText = try read("key file", credentials.keyFile) { try String(contentsOfFile: credentials.keyFile, encoding: .utf8) }
        let key = try read("key file", credentials.keyFile) { try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem) }
        guard !roots.isEmpty else { throw WitnessCredentials.FileError(description: "the CA certificate file \(credentials.caFile) holds no certificate") }
        guard let leaf = chain.first else {
            throw WitnessCredentials.FileError(description: "the certificate file \(credentials.certificateFile) holds no certificate")
        }
        let certificate = try Certificate(derEncoded: try leaf.toDERBytes())
        let identity: ClusterIdentity
        do { identity = try ClusterIdentity(certificate: certificate) } catch {
            throw WitnessCredentials.FileError(description: "\(credentials.certificateFile): \(error)")
        }
        if let parsedKey = try? Certificate.PrivateKey(pemEncoded: keyText), parsedKey.publicKey != certificate.publicKey {
            throw WitnessCredentials.FileError(
                description: "the key in \(credentials.keyFile) does not belong to the certificate in \(credentials.certificateFile)")
        }
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(key)
        server.minimumTLSVersion = .tlsv13
        client.minimumTLSVersion = .tlsv13
        server.trustRoots = .certificates(roots)
        client.trustRoots = .certificates(roots)
        // The chain is checked against the cluster's CA on both sides; who the other side is
        // comes from its certificate's role and name (`ClusterIdentity`), checked by the
        // handshake, not from a host name: a witness is reached at whatever address the
        // operator wrote, and its certificate names its witness id.
        server.certificateVerification = .noHostnameVerification
        client.certificateVerification = .noHostnameVerification
        var loaded = Loaded(
            identity: identity, notValidAfter: certificate.notValidAfter,
            serverContext: try NIOSSLContext(configuration: server), clientContext: try NIOSSLContext(configuration: client))
        let alternativeNames: [GeneralName] = ((try? certificate.extensions.subjectAlternativeNames) ?? nil).map(Array.init) ?? []
        for name in alternativeNames {
            switch name {
            case .dnsName(let host): loaded.dnsNames.append(host)
            case .ipAddress(let bytes): loaded.ipAddresses.append(Array(bytes.bytes))
            default: break
            }
        }
        return loaded
    }

    struct FileStamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedNanos: Int64
    }

    static func stamps(_ credentials: WitnessCredentials) -> [FileStamp] {
        [credentials.caFile, credentials.certificateFile, credentials.keyFile].map { path in
            var info = stat()
            guard stat(path, &info) == 0 else { return FileStamp(device: 0, inode: 0, size: -1, modifiedNanos: 0) }
            return FileStamp(
                device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                modifiedNanos: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
        }
    }
}

/// A TLS failure as one line, saying which side's certificate was refused and why, from the
/// alert or error BoringSSL reports.
public struct TLSFailure: Sendable, CustomStringConvertible {
    public var description: String
    /// The other side refused this side's certificate (an alert it sent): the same holds at
    /// every witness, so trying another does not help.
    public var refusedThisSide: Bool

    /// Nil for errors that are not TLS's.
    public init?(_ error: any Error) {
        let text: String
        switch error {
        case NIOSSLError.handshakeFailed(let inner): text = "\(inner)"
        case NIOSSLError.uncleanShutdown:
            self.init(description: "the other side closed the connection without ending TLS (it stopped, or refused this side)", refusedThisSide: false)
            return
        case let error as NIOSSLError: text = "\(error)"
        // In TLS 1.3 the client's handshake ends before the server checked the client's
        // certificate: the server's refusal arrives as an alert on the first read after it.
        case let error as BoringSSLError: text = "\(error)"
        case let error as NIOSSLExtraError: text = "\(error)"
        default: return nil
        }
        // BoringSSL's text holds error numbers and a source path; its reason code says it all.
        let code = text.range(of: "OPENSSL_internal:").map { String(text[$0.upperBound...].prefix { $0 == "_" || $0.isLetter || $0.isNumber }) }
        let upper = text.uppercased()
        for reason in Self.reasons where upper.contains(reason.marker) {
            self.init(description: "TLS handshake failed: \(reason.text) (\(code ?? reason.marker))", refusedThisSide: reason.refusedThisSide)
            return
        }
        self.init(description: "TLS failed: \(code ?? text)", refusedThisSide: false)
    }

    init(description: String, refusedThisSide: Bool) {
        self.description = description
        self.refusedThisSide = refusedThisSide
    }

    private static let reasons: [(marker: String, text: String, refusedThisSide: Bool)] = [
        ("WRONG_VERSION_NUMBER", "the other side does not speak TLS (a plain TCP client, or an older pgquorum)", false),
        ("HTTP_REQUEST", "the other side does not speak TLS (an HTTP request)", false),
        ("CERTIFICATE_EXPIRED", "the other side refused this side's certificate: it has expired, or is not valid yet", true),
        ("CERTIFICATE_VERIFY_FAILED", "the other side's certificate is not valid here: not signed by the cluster's CA, expired or not yet valid", false),
        ("UNKNOWN_CA", "the other side refused this side's certificate: it is not signed by the CA it trusts (another cluster's CA?)", true),
        ("BAD_CERTIFICATE", "the other side refused this side's certificate: not valid there (not yet valid, or not for TLS)", true),
        ("CERTIFICATE_REQUIRED", "the other side requires a certificate and this side sent none", true),
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "the other side sent no certificate", false),
        ("PROTOCOL_VERSION", "the other side does not offer TLS 1.3", false),
        ("UNSUPPORTED_PROTOCOL", "the other side does not offer TLS 1.3", false),
    ]
}
