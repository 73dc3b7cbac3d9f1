/// Where one PostgreSQL instance lives and how it is reached.
public struct PostgresNodeConfiguration: Sendable {
    /// PGDATA. Its parents must be traversable by the server user.
    public var dataDirectory: String
    /// A private folder for the Unix socket, the log and the replication password file.
    /// Mode 0700, owned by the server user: only it (and root) can use the socket.
    public var runDirectory: String
    /// The address postgres listens on and peers connect to.
    public var listenAddress: String = "127.0.0.1"
    public var port: Int
    public var installation = PostgresInstallation()
    /// The role standbys replicate (and pg_rewind reads) as.
    public var replicationUser: String = "pgquorum_replicator"
    /// This node's name in its upstream's `pg_stat_replication.application_name` and in
    /// `synchronous_standby_names`.
    public var applicationName: String
    /// Networks (CIDR) from which clients may connect to every database as any role, and
    /// how they authenticate (`scram-sha-256`, or `trust` for a local demo).
    public var clientNetworks: [String] = []
    public var clientAuthMethod: String = "scram-sha-256"
    /// Extra server settings written to `pgquorum.conf` (tests turn fsync off).
    public var extraSettings: [String: String] = [:]
    /// How long `start` waits for postgres to accept connections.
    public var startTimeout: Duration = .seconds(60)
    /// How long `stop` waits before escalating to the next shutdown mode.
    public var stopTimeout: Duration = .seconds(60)
    /// TLS for every TCP connection of this server and of its replication: nil runs without
    /// (the NodeControl tests); the node manager always sets it.
    public var tls: PostgresTLS?
    /// The longest a pg_basebackup or pg_rewind may run.
    public var copyTimeout: Duration = .seconds(3600)
    /// libpq's connect timeout towards peers, in seconds.
    public var peerConnectTimeoutSeconds: Int = 5
    /// `wal_sender_timeout` and `wal_receiver_timeout`: a replication link cut silently ends
    /// after this, not after PostgreSQL's 60 s (the node manager derives it from the lease).
    public var replicationTimeout: Duration = .seconds(60)

    public init(dataDirectory: String, runDirectory: String, port: Int, applicationName: String) {
        self.dataDirectory = dataDirectory
        self.runDirectory = runDirectory
        self.port = port
        self.applicationName = applicationName
    }

    public func validate() throws(NodeControlError) {
        guard dataDirectory.hasPrefix("/"), runDirectory.hasPrefix("/") else {
            throw .invalidConfiguration("dataDirectory and runDirectory must be absolute paths")
        }
        guard (1...65535).contains(port) else { throw .invalidConfiguration("port \(port) is outside 1…65535") }
        guard isSQLIdentifier(applicationName), isSQLIdentifier(replicationUser) else {
            throw .invalidConfiguration("applicationName and replicationUser must be lower-case letters, digits and _")
        }
        // Unix socket paths are limited to 107 bytes: ".s.PGSQL.<port>" is added to the folder.
        guard ["scram-sha-256", "md5", "trust", "password", "cert"].contains(clientAuthMethod) else {
            throw .invalidConfiguration("client authentication method \(clientAuthMethod) is not one of scram-sha-256, md5, trust, password, cert")
        }
        for network in clientNetworks where HostAddresses.cidr(network) == nil && !["samehost", "samenet", "all"].contains(network) {
            throw .invalidConfiguration("client network \"\(network)\" is not an address, a CIDR, samehost, samenet or all")
        }
        guard runDirectory.utf8.count + 16 < 107 else {
            throw .invalidConfiguration("runDirectory \(runDirectory) is too long for a Unix socket path")
        }
    }
}

/// Names we put into SQL and configuration files unquoted: no quoting mistakes possible.
func isSQLIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, first >= UInt8(ascii: "a"), first <= UInt8(ascii: "z") else { return false }
    return name.utf8.count <= 63 && name.utf8.allSatisfy {
        ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_")
    }
}

/// PostgreSQL over TLS (PostgreSQL documentation, "Secure TCP/IP Connections with SSL"): the
/// node's certificate and key serve its TCP connections, and its replication, pg_basebackup
/// and pg_rewind connections check the other node's certificate against the CA and its host
/// name (`sslmode=verify-full`). The files are copied into the run folder, owned by the server
/// user, because postgres reads its key only from a file of its own with mode 0600.
public struct PostgresTLS: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String
    public var caFile: String
    /// Clients from the client networks must use TLS (`hostssl` in pg_hba.conf); false lets
    /// them connect without it too (`host`). Replication always uses TLS.
    public var requiredForClients = true

    public init(certificateFile: String, keyFile: String, caFile: String, requiredForClients: Bool = true) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.caFile = caFile
        self.requiredForClients = requiredForClients
    }
}

/// Where a standby streams from, or pg_rewind reads from.
public struct ReplicationSource: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// How to stop postgres (PostgreSQL documentation, "Shutting Down the Server").
public enum ShutdownMode: Sendable, CaseIterable {
    /// SIGTERM: wait for sessions to end.
    case smart
    /// SIGINT: roll back sessions, shut down cleanly.
    case fast
    /// SIGQUIT: exit at once; crash recovery at next start.
    case immediate
}
