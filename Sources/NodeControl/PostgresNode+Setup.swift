import Foundation

extension PostgresNode {
    /// The file our settings live in, included at the end of postgresql.conf.
    var settingsFile: String { dataDirectory + "/pgquorum.conf" }
    /// The file of standby settings (upstream, slot), included after `settingsFile`.
    var standbySettingsFile: String { dataDirectory + "/pgquorum-standby.conf" }
    /// The parameters managed through the log, included at the end of `settingsFile`.
    var parametersFile: String { dataDirectory + "/pgquorum-parameters.conf" }

    /// Creates the run folder (0700) and, when the data directory is missing or empty, a new
    /// cluster with initdb; then writes our settings and `pg_hba.conf`. Idempotent: an
    /// existing cluster keeps its data and gets its configuration rewritten.
    ///
    /// `peers` are the addresses (host or CIDR) allowed to replicate from this node.
    public func initialize(peers: [String]) throws(NodeControlError) {
        try prepareRunDirectory()
        if !fileExists(dataDirectory + "/PG_VERSION") {
            if isNonEmptyDirectory(dataDirectory) {
                throw .dataDirectoryNotEmpty(path: dataDirectory)
            }
            try makeDirectory(dataDirectory, mode: 0o700)
            try runServerProgram(
                "initdb",
                ["-D", dataDirectory, "-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
                operation: "initdb of \(dataDirectory)")
        }
        try writeSettings()
        try writeHBA(peers: peers)
    }

    /// The run folder holds the socket, log and password file: private to the server user.
    func prepareRunDirectory() throws(NodeControlError) {
        try makeDirectory(configuration.runDirectory, mode: 0o700)
    }

    /// Writes `pgquorum.conf` and makes sure postgresql.conf includes it.
    public func writeSettings() throws(NodeControlError) {
        var settings: [(String, String)] = [
            ("listen_addresses", configuration.listenAddress),
            ("port", String(configuration.port)),
            ("unix_socket_directories", configuration.runDirectory),
            ("unix_socket_permissions", "0700"),
            ("wal_level", "replica"),
            // pg_rewind needs hint bits WAL-logged (or data checksums).
            ("wal_log_hints", "on"),
            ("max_wal_senders", "16"),
            ("max_replication_slots", "16"),
            ("hot_standby", "on"),
            ("hot_standby_feedback", "on"),
            // Standbys reply at least every second: the primary's lease check counts only
            // standbys whose last reply is younger than the lease.
            ("wal_receiver_status_interval", "1s"),
            ("wal_sender_timeout", "\(configuration.replicationTimeout.components.seconds * 1000 + configuration.replicationTimeout.components.attoseconds / 1_000_000_000_000_000)ms"),
            ("wal_receiver_timeout", "\(configuration.replicationTimeout.components.seconds * 1000 + configuration.replicationTimeout.components.attoseconds / 1_000_000_000_000_000)ms"),
            // Keep WAL around so that pg_rewind finds the old primary's history after a failover.
            ("wal_keep_size", "512MB"),
            // A standby whose primary restarted retries after this (default 5 s): with
            // synchronous replication, writes wait for that reconnection.
            ("wal_retrieve_retry_interval", "500ms"),
            ("password_encryption", "scram-sha-256"),
            ("cluster_name", configuration.applicationName),
            // The server's log goes to log/ in the data directory, one file a weekday, each
            // emptied when its day comes round again: a week of logs, never more.
            ("logging_collector", "on"),
            ("log_directory", PostgresNode.logDirectoryName),
            ("log_filename", "postgresql-%a.log"),
            ("log_rotation_age", "1d"),
            ("log_rotation_size", "0"),
            ("log_truncate_on_rotation", "on"),
            ("log_line_prefix", "%m [%p] "),
        ]
        if configuration.tls != nil {
            try writeTLSFiles()
            settings += [
                ("ssl", "on"), ("ssl_cert_file", tlsCertificatePath), ("ssl_key_file", tlsKeyPath), ("ssl_ca_file", tlsCAPath),
            ]
        }
        settings += configuration.extraSettings.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let body = settings.map { "\($0.0) = '\(escapeConfValue($0.1))'" }.joined(separator: "\n")
        try writeFile(
            settingsFile, "# Written by pgquorum; changes here are overwritten.\n\(body)\ninclude_if_exists = 'pgquorum-parameters.conf'\n",
            mode: 0o600)
        try writeParametersFile()
        if !fileExists(standbySettingsFile) {
            try writeFile(standbySettingsFile, Self.standbySettingsHeader + "\n", mode: 0o600)
        }
        let mainFile = dataDirectory + "/postgresql.conf"
        let main = try readFile(mainFile)
        let includes = "include_if_exists = 'pgquorum.conf'\ninclude_if_exists = 'pgquorum-standby.conf'\n"
        if !main.contains("include_if_exists = 'pgquorum.conf'") {
            try writeFile(mainFile, main + "\n# pgquorum\n" + includes, mode: 0o600)
        }
    }

    /// The text of `parametersFile` for `parameters`, sorted by name.
    static func parametersContent(_ parameters: [String: String]) -> String {
        let lines = parameters.sorted { $0.key < $1.key }.map { "\($0.key) = '\(escapeConfValue($0.value))'" }
        return "# Written by pgquorum from the log (`pgquorum pg set`); changes here are overwritten.\n"
            + lines.map { $0 + "\n" }.joined()
    }

    /// Writes `parametersFile` from the parameters last given, unless it says that already
    /// or none were given yet (a manager that starts postgres before it read the log keeps
    /// the file's values); true when it changed.
    @discardableResult
    func writeParametersFile() throws(NodeControlError) -> Bool {
        guard let parameters = managedParameters.withLock({ $0 }) else { return false }
        let content = Self.parametersContent(parameters)
        if fileExists(parametersFile), (try? readFile(parametersFile)) == content { return false }
        try writeFile(parametersFile, content, mode: 0o600)
        return true
    }

    /// The parameters the log manages for this node (`pgquorum pg set`): kept for every later
    /// rewrite of the configuration (a clone or rewind brings the source's file), and written
    /// now when the data directory exists. True when the file changed: a running postgres then
    /// needs `reload()`.
    public func setManagedParameters(_ parameters: [String: String]) throws(NodeControlError) -> Bool {
        managedParameters.withLock { $0 = parameters }
        guard fileExists(dataDirectory + "/PG_VERSION") else { return false }
        return try writeParametersFile()
    }

    /// Problems postgres found in its configuration files at its last read
    /// (`pg_file_settings.error`), each as "file:line: error".
    public func configurationErrors() throws(NodeControlError) -> [String] {
        try withConnection("read pg_file_settings on \(dataDirectory)") { connection throws(PostgresError) -> [String] in
            try connection.query("SELECT sourcefile, sourceline::text, coalesce(name, ''), error FROM pg_file_settings WHERE error IS NOT NULL ORDER BY seqno").rows.map {
                "\($0[0] ?? "?"):\($0[1] ?? "?"): \($0[2] ?? "") \($0[3] ?? "")"
            }
        }
    }

    var tlsCertificatePath: String { configuration.runDirectory + "/server.crt" }
    var tlsKeyPath: String { configuration.runDirectory + "/server.key" }
    /// The CA the server checks client certificates against and replication connections
    /// check other nodes' certificates against.
    var tlsCAPath: String { configuration.runDirectory + "/root.crt" }

    /// Copies the node's certificate, key and CA (`PostgresTLS`) into the run folder, mode
    /// 0600, owned by the server user; true when one of them changed (a running postgres
    /// then needs `reload()`: it reads its certificate again on SIGHUP).
    @discardableResult
    public func writeTLSFiles() throws(NodeControlError) -> Bool {
        guard let tls = configuration.tls else { return false }
        try prepareRunDirectory()
        var changed = false
        for (source, destination) in [(tls.certificateFile, tlsCertificatePath), (tls.keyFile, tlsKeyPath), (tls.caFile, tlsCAPath)] {
            let contents = try readFile(source)
            if (try? readFile(destination)) == contents { continue }
            try writeFile(destination, contents, mode: 0o600)
            changed = true
        }
        return changed
    }

    /// The pg_hba.conf pgquorum writes: local trust for the postgres superuser (the socket
    /// folder is private), SCRAM for the replication role from each peer (over TLS when the
    /// node has it), and the client networks (TLS only, unless the operator allowed clients
    /// without). `peers` are addresses or CIDRs (`HostAddresses`, `PeerAddressBook` resolve
    /// names); a name is refused, since postgres would refuse the file.
    public func hbaContent(peers: [String]) throws(NodeControlError) -> String {
        var lines = [
            "# Written by pgquorum; changes here are overwritten.",
            "local   all          postgres                        trust",
        ]
        let user = configuration.replicationUser
        let peerType = configuration.tls == nil ? "host   " : "hostssl"
        for peer in Set(peers).sorted() {
            guard let address = HostAddresses.cidr(peer) else {
                throw .invalidConfiguration("pg_hba.conf peer \(peer) is not an address or CIDR (resolve host names first)")
            }
            lines.append("\(peerType) replication  \(user)  \(address)  scram-sha-256")
            lines.append("\(peerType) postgres     \(user)  \(address)  scram-sha-256")
        }
        let clientType = configuration.tls.map { $0.requiredForClients ? "hostssl" : "host   " } ?? "host   "
        for network in configuration.clientNetworks {
            lines.append("\(clientType) all          all  \(HostAddresses.cidr(network) ?? network)  \(configuration.clientAuthMethod)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    var hbaPath: String { dataDirectory + "/pg_hba.conf" }

    /// Writes pg_hba.conf (see `hbaContent`) unless it already says exactly that; true when
    /// it changed (a running postgres needs `reload()` to see it).
    @discardableResult
    public func writeHBA(peers: [String]) throws(NodeControlError) -> Bool {
        let content = try hbaContent(peers: peers)
        if (try? readFile(hbaPath)) == content { return false }
        try writeFile(hbaPath, content, mode: 0o600)
        return true
    }

    /// Saves the replication password where libpq finds it (`PGPASSFILE`, and `passfile=` in
    /// `primary_conninfo`): a .pgpass file readable only by the server user.
    public func writeReplicationPassword(_ password: String) throws(NodeControlError) {
        guard !password.isEmpty, !password.contains(":"), !password.contains("\\"), !password.contains("\n") else {
            throw .invalidConfiguration("the replication password must be non-empty without ':', '\\' or newlines")
        }
        try prepareRunDirectory()
        try writeFile(passfilePath, "*:*:*:\(configuration.replicationUser):\(password)\n", mode: 0o600)
    }

    /// Creates (or updates) the replication role on a running primary: LOGIN REPLICATION with
    /// the SCRAM password, and the functions pg_rewind needs (PostgreSQL docs, pg_rewind).
    public func createReplicationRole(password: String) throws(NodeControlError) {
        let user = configuration.replicationUser
        try withConnection("create the replication role \(user)") { connection throws(PostgresError) in
            let exists = try connection.scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1", [user]) == "1"
            let verb = exists ? "ALTER" : "CREATE"
            // The password goes through a parameter into format(%L): never spliced by us.
            let statement = try connection.scalar("SELECT format('\(verb) ROLE \(user) LOGIN REPLICATION PASSWORD %L', $1::text)", [password]) ?? ""
            try connection.query(statement)
            for function in [
                "pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
                "pg_catalog.pg_read_binary_file(text)", "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                try connection.query("GRANT EXECUTE ON FUNCTION \(function) TO \(user)")
            }
        }
    }

    /// A fresh random password: 32 characters from the kernel's random source.
    public static func generatePassword() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var generator = SystemRandomNumberGenerator()
        return String((0..<32).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }
}

/// Quotes a value for a postgresql.conf line: single quotes doubled, backslashes escaped.
func escapeConfValue(_ value: String) -> String {
    value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''")
}
