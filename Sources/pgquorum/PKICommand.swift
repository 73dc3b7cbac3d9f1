import ArgumentParser
import EventLog
import Foundation
import SwiftASN1
import X509

/// `pgquorum pki …`: the cluster's certificates. Every witness connection is TLS 1.3 with a
/// certificate on both sides, and the certificate says who the holder is.
struct PKICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki",
        abstract: "Create the cluster's certificate authority and issue certificates for witnesses, nodes, operators and monitors.",
        discussion: """
            Every connection to a witness is TLS 1.3, and both sides present a certificate signed \
            by the cluster's CA. The certificate says who holds it, and the witness grants \
            requests by that:
              witness ID   carries Raft messages between witnesses, as its own id only
              node NAME    registers, reports and appends the states of its own node only
              operator NAME  everything: switchover, maintenance, settings, drop, witness membership
              monitor NAME   reads only (status, log, show uri)
            The log records which operator made each request.

            A new cluster, on the machine that keeps the CA key:
              pgquorum pki init --dir /etc/pgquorum/pki
              pgquorum pki issue witness 1 --host 10.0.0.1 --dir /etc/pgquorum/pki   (2, 3 likewise)
              pgquorum pki issue node n1 --host 10.0.0.11 --dir /etc/pgquorum/pki     (each node)
              pgquorum pki issue operator admin --dir /etc/pgquorum/pki
            then copy to each machine its ROLE-NAME.credentials, .crt and .key and ca.crt, and pass \
            the credentials file with --credentials (or $PGQUORUM_CREDENTIALS).

            To renew a certificate, issue it again with --renew: a running witness or manager \
            uses the new files for its next connection, without a restart. To change the CA, \
            put the new and the old CA certificate in ca.crt everywhere first.

            With your own CA, give each holder a certificate whose subject has OU=witness, node, \
            operator or monitor and CN=its id or name, usable for TLS client and server \
            authentication, and write its credentials file with `pgquorum pki credentials`.
            """,
        subcommands: [PKIInitCommand.self, PKIIssueCommand.self, PKIShowCommand.self, PKICredentialsCommand.self]
    )
}

/// The PKI folder of `pki issue` and `pki init`.
struct PKIDirectoryOption: ParsableArguments {
    @Option(help: ArgumentHelp("The cluster's PKI folder (default: $PGQUORUM_PKI).", valueName: "dir"))
    var dir: String?

    func directory() throws -> PKIDirectory {
        guard let path = dir ?? ProcessInfo.processInfo.environment["PGQUORUM_PKI"], !path.isEmpty else {
            throw CommandFailure("no PKI folder: pass --dir DIR or set PGQUORUM_PKI")
        }
        return PKIDirectory(path: URL(fileURLWithPath: path).standardizedFileURL.path)
    }
}

struct PKIInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new cluster: its id, its CA and the PostgreSQL replication password.",
        discussion: """
            Creates the folder (mode 0700) with ca.crt and ca.key (the CA), and cluster.conf \
            (the cluster id and the replication password), every file mode 0600. A folder that \
            already holds a cluster is never changed. Keep ca.key on this machine only: it \
            signs every certificate of the cluster.
            """
    )

    @OptionGroup var location: PKIDirectoryOption

    @Option(help: "How many days the CA certificate is valid.")
    var days: Int = 3_650

    @Option(help: ArgumentHelp("The cluster id (default: 16 random hexadecimal digits).", valueName: "id"))
    var clusterID: String?

    func validate() throws {
        guard days > 0 else { throw ValidationError("--days must be a positive number of days") }
        if let clusterID, clusterID.isEmpty || clusterID.contains(where: \.isWhitespace) {
            throw ValidationError("--cluster-id must be a word without spaces")
        }
    }

    func run() throws {
        let directory = try PKIDirectory.create(at: try location.directory().path, clusterID: clusterID, caDays: days)
        let cluster = try directory.cluster()
        print("created the PKI of cluster \(cluster.clusterID) in \(directory.path)")
        print("  ca.crt        the CA certificate: copy it to every machine")
        print("  ca.key        the CA key: keep it here only")
        print("  cluster.conf  the cluster id and the replication password")
        print("next: pgquorum pki issue witness 1 --host HOST --dir \(directory.path)   (and nodes, an operator)")
    }
}

struct PKIIssueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a certificate, its key and a credentials file for one witness, node, operator or monitor.",
        discussion: """
            Writes ROLE-NAME.key, ROLE-NAME.crt and ROLE-NAME.credentials into the PKI folder \
            (mode 0600). A node's credentials also carry the replication password. Give every \
            address or host name the holder is reached at with --host: PostgreSQL clients that \
            check host names (sslmode=verify-full) need them in a node's certificate.
            Examples:
              pgquorum pki issue witness 1 --host 10.0.0.1
              pgquorum pki issue node n1 --host db1.example.com --host 10.0.0.11
              pgquorum pki issue operator alice
              pgquorum pki issue monitor prometheus --days 90
              pgquorum pki issue witness 1 --host 10.0.0.1 --renew
            """
    )

    @Argument(help: ArgumentHelp("witness, node, operator or monitor.", valueName: "role"))
    var role: String

    @Argument(help: ArgumentHelp("The witness's id, or the node's, operator's or monitor's name.", valueName: "name"))
    var name: String

    @Option(name: .customLong("host"), help: ArgumentHelp("An address or host name the holder is reached at (repeat for several).", valueName: "host"))
    var hosts: [String] = []

    @Option(help: "How many days the certificate is valid.")
    var days: Int = 365

    @Flag(help: "Replace an existing certificate (renewal); running processes use the new one for their next connection.")
    var renew = false

    @OptionGroup var location: PKIDirectoryOption

    func validate() throws {
        guard days > 0 else { throw ValidationError("--days must be a positive number of days") }
        guard ClusterIdentity.Role(rawValue: role) != nil else {
            throw ValidationError("the role must be one of \(ClusterIdentity.Role.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(role)\"")
        }
        do { _ = try ClusterIdentity(role: ClusterIdentity.Role(rawValue: role)!, name: name) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        let identity = try ClusterIdentity(role: ClusterIdentity.Role(rawValue: role)!, name: name)
        let directory = try location.directory()
        let path = try directory.issue(identity, hosts: hosts, days: days, replacing: renew)
        let base = PKIDirectory.baseName(identity)
        print("\(renew ? "renewed" : "issued") the certificate of \(identity), valid for \(days) days\(hosts.isEmpty ? "" : " for \(hosts.joined(separator: ", "))")")
        print("  \(path)")
        print("copy \(base).credentials, \(base).crt, \(base).key and ca.crt to its machine, into one folder (mode 0700)")
    }
}

struct PKIShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show who a credentials file's certificate names, its hosts and validity, and check it against the CA.",
        discussion: "Exits 1 when the certificate cannot be used: unreadable, expired, not yet valid, or not signed by the CA."
    )

    @Argument(help: ArgumentHelp("A credentials file (default: $PGQUORUM_CREDENTIALS).", valueName: "file"))
    var credentials: String?

    func run() throws {
        guard let path = credentials ?? ProcessInfo.processInfo.environment["PGQUORUM_CREDENTIALS"] else {
            throw CommandFailure("no credentials file: name one, or set PGQUORUM_CREDENTIALS")
        }
        let loaded = try WitnessCredentials.load(from: path)
        let tls = try TLSCredentials(loaded)
        let certificate = try Certificate(pemEncoded: try String(contentsOfFile: loaded.certificateFile, encoding: .utf8))
        let authorities = try PEMDocument.parseMultiple(pemString: try String(contentsOfFile: loaded.caFile, encoding: .utf8))
            .map { try Certificate(pemDocument: $0) }
        let now = Date()
        print("holder:      \(tls.identity)")
        print("cluster id:  \(loaded.clusterID)")
        print("certificate: \(loaded.certificateFile)")
        print("valid:       \(certificate.notValidBefore) to \(certificate.notValidAfter)")
        if let names = try? certificate.extensions.subjectAlternativeNames, !names.isEmpty {
            print("hosts:       \(names.map(describe).joined(separator: ", "))")
        }
        print("issuer:      \(certificate.issuer)")
        var problems: [String] = []
        if certificate.notValidAfter < now { problems.append("it expired on \(certificate.notValidAfter)") }
        if certificate.notValidBefore > now { problems.append("it is valid only from \(certificate.notValidBefore)") }
        let signer = authorities.first { $0.subject == certificate.issuer && $0.publicKey.isValidSignature(certificate.signature, for: certificate) }
        if signer == nil { problems.append("it is not signed by a CA in \(loaded.caFile)") }
        guard problems.isEmpty else { throw CommandFailure("the certificate cannot be used: \(problems.joined(separator: "; "))") }
        let days = Int(certificate.notValidAfter.timeIntervalSince(now) / 86_400)
        print("status:      usable, expires in \(days) days")
    }

    private func describe(_ name: GeneralName) -> String {
        switch name {
        case .dnsName(let host): return host
        case .ipAddress(let bytes):
            let octets = Array(bytes.bytes)
            if octets.count == 4 { return octets.map(String.init).joined(separator: ".") }
            return stride(from: 0, to: octets.count, by: 2).map { String(UInt16(octets[$0]) << 8 | UInt16(octets[$0 + 1]), radix: 16) }.joined(separator: ":")
        default: return "\(name)"
        }
    }
}

struct PKICredentialsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credentials",
        abstract: "Write a credentials file for a certificate from your own CA.",
        discussion: """
            For teams with their own CA: the certificate's subject must have OU=witness, node, \
            operator or monitor and CN=the holder's id or name, and be valid for TLS client and \
            server authentication. The files are checked before the credentials file is written \
            (mode 0600). A node also needs the cluster's replication password, the same on every \
            node (--replication-password-file: a file holding it; at least 32 characters).
            """
    )

    @Option(help: ArgumentHelp("The cluster id, the same in every credentials file of the cluster.", valueName: "id"))
    var clusterID: String

    @Option(help: ArgumentHelp("The CA certificate(s) to trust, PEM.", valueName: "file"))
    var caFile: String

    @Option(help: ArgumentHelp("The holder's certificate (and any intermediates after it), PEM.", valueName: "file"))
    var certFile: String

    @Option(help: ArgumentHelp("The holder's private key, PEM.", valueName: "file"))
    var keyFile: String

    @Option(help: ArgumentHelp("A file holding the PostgreSQL replication password (nodes only).", valueName: "file"))
    var replicationPasswordFile: String?

    @Option(help: ArgumentHelp("Where to write the credentials file.", valueName: "file"))
    var output: String

    func run() throws {
        func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
        var password: String?
        if let replicationPasswordFile {
            password = try String(contentsOfFile: replicationPasswordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            guard password!.count >= 32 else { throw CommandFailure("the replication password in \(replicationPasswordFile) has fewer than 32 characters") }
        }
        var credentials = WitnessCredentials(
            clusterID: clusterID, caFile: absolute(caFile), certificateFile: absolute(certFile), keyFile: absolute(keyFile), replicationPassword: password)
        let identity = try TLSCredentials(credentials).identity
        if identity.role == .node && password == nil {
            throw CommandFailure("\(identity) needs the replication password: pass --replication-password-file")
        }
        credentials.holder = identity.description
        try credentials.write(to: output)
        print("wrote \(output) for \(identity)")
    }
}
