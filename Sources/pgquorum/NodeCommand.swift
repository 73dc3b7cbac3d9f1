import ArgumentParser
import Dispatch
import EventLog
import Foundation
import Logging
import Manager
import NodeControl

/// `pgquorum node create|run`: make a PostgreSQL node part of a cluster.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Create and run the manager of one PostgreSQL node.",
        discussion: """
            `node create` writes the node's configuration file (DIR/node.conf) and registers the \
            node in the event log; `node run` reads that file, then supervises postgres (its \
            child: it dies with the manager), reports every heartbeat, follows the log and \
            drives postgres to the goal the formation assigns. The first node becomes the \
            primary (initdb); the others clone it and follow.
            """,
        subcommands: [NodeCreateCommand.self, NodeRunCommand.self, NodeSetCommand.self, NodeLogsCommand.self, NodeWatchdogCommand.self]
    )
}

/// The node-local configuration file: `key: value` lines.
struct NodeConfigFile {
    static let fileName = "node.conf"
    var values: [String: String]

    static func path(in directory: String) -> String { directory + "/" + fileName }

    static func load(directory: String) throws -> NodeConfigFile {
        let path = path(in: directory)
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CommandFailure("cannot read \(path): \(error.localizedDescription); create the node with `pgquorum node create --dir \(directory)`")
        }
        var values: [String: String] = [:]
        for (number, line) in text.split(separator: "\n").enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let colon = trimmed.firstIndex(of: ":") else { throw CommandFailure("\(path):\(number + 1): expected KEY: VALUE") }
            values[trimmed[..<colon].trimmingCharacters(in: .whitespaces)] = trimmed[trimmed.index(after: colon)...]
                .trimmingCharacters(in: .whitespaces)
        }
        return NodeConfigFile(values: values)
    }

    func write(directory: String) throws {
        let text = "# pgquorum node configuration (written by `pgquorum node create`; `node run` flags override it)\n"
            + values.keys.sorted().map { "\($0): \(values[$0]!)" }.joined(separator: "\n") + "\n"
        try replaceFile(Self.path(in: directory), contents: text)
    }

    func require(_ key: String, _ directory: String) throws -> String {
        guard let value = values[key], !value.isEmpty else { throw CommandFailure("\(Self.path(in: directory)) has no \(key)") }
        return value
    }
}

/// Options shared by `node create` and `node run` (run reads the rest from node.conf).
struct NodeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The node's folder: node.conf, data/ (PGDATA) and run/ live there.", valueName: "dir"))
    var dir: String

    @Option(help: "The node's id in the formation (a positive number; `node create` assigns the next free one when left out).")
    var id: UInt32?

    @Option(help: "The node's name.")
    var name: String?

    @Option(help: "The host name or address clients and peers use for this postgres.")
    var host: String?

    @Option(help: "The postgres port.")
    var port: Int?

    @Option(help: "The formation the node belongs to.")
    var formation: String?

    @Option(help: "0 never becomes primary; the highest wins elections.")
    var candidatePriority: UInt8?

    @Flag(help: "An asynchronous standby: not counted in synchronous_standby_names.")
    var async = false

    @Option(help: ArgumentHelp("Witness addresses, HOST:PORT,… (default: $PGQUORUM_WITNESSES).", valueName: "addresses"))
    var witnesses: String?

    @Option(help: ArgumentHelp("This holder's credentials file, from `pgquorum pki issue` (default: $PGQUORUM_CREDENTIALS).", valueName: "file"))
    var credentials: String?

    /// node.conf's values overridden by the flags given.
    func merged(with file: NodeConfigFile) -> NodeConfigFile {
        var values = file.values
        let environment = ProcessInfo.processInfo.environment
        let overrides: [String: String?] = [
            "id": id.map(String.init), "name": name, "host": host, "port": port.map(String.init), "formation": formation,
            "candidate-priority": candidatePriority.map(String.init), "replication-quorum": async ? "false" : nil,
            "witnesses": witnesses ?? (values["witnesses"] == nil ? environment["PGQUORUM_WITNESSES"] : nil),
            "credentials": credentials ?? (values["credentials"] == nil ? environment["PGQUORUM_CREDENTIALS"] : nil),
        ]
        for (key, value) in overrides { if let value { values[key] = value } }
        return NodeConfigFile(values: values)
    }

    /// The manager's configuration from node.conf and the flags; without an id in them (only
    /// before `node create` registered the node) the id is 0, "to be assigned".
    func managerConfiguration(_ file: NodeConfigFile, idRequired: Bool = true) throws -> NodeManagerConfiguration {
        let directory = URL(fileURLWithPath: dir).standardizedFileURL.path
        let id: PGNodeID
        if !idRequired && (file.values["id"] ?? "").isEmpty {
            id = 0
        } else {
            guard let given = PGNodeID(try file.require("id", dir)), given > 0 else { throw CommandFailure("the node id must be a positive number") }
            id = given
        }
        guard let port = Int(try file.require("port", dir)), (1...65_535).contains(port) else { throw CommandFailure("the port must be 1-65535") }
        let witnesses = try file.require("witnesses", dir).split(separator: ",").map { item throws(WitnessConfigurationError) in
            try WitnessEndpoint(parsing: item.trimmingCharacters(in: .whitespaces))
        }
        var configuration = NodeManagerConfiguration(
            node: id, name: try file.require("name", dir), host: try file.require("host", dir), port: port,
            dataDirectory: directory + "/data", runDirectory: directory + "/run", witnesses: witnesses,
            credentials: try WitnessCredentials.load(from: try file.require("credentials", dir)))
        configuration.formation = file.values["formation"] ?? EventRecord.defaultFormation
        if let priority = file.values["candidate-priority"] {
            guard let value = UInt8(priority) else { throw CommandFailure("candidate-priority must be 0-255") }
            configuration.candidatePriority = value
        }
        configuration.replicationQuorum = file.values["replication-quorum"] != "false"
        configuration.clientNetworks = (file.values["client-networks"] ?? "").split(separator: ",").map(String.init)
        configuration.clientAuthMethod = file.values["client-auth"] ?? "scram-sha-256"
        configuration.clientsWithoutTLS = file.values["client-tls"] == "optional"
        configuration.roleChangeCommand = file.values["on-role-change"].flatMap { $0.isEmpty ? nil : $0 }
        if let seconds = file.values["on-role-change-timeout"] {
            guard let value = Int(seconds), value > 0 else { throw CommandFailure("on-role-change-timeout must be a positive number of seconds") }
            configuration.roleChangeTimeout = .seconds(value)
        }
        if let http = file.values["http"], http != "off" {
            do { configuration.httpAddress = try WitnessEndpoint(parsing: http) } catch {
                throw CommandFailure("http: \(error) (HOST:PORT, or off)")
            }
        }
        // node.conf names the server programs `node create` found; one written before it
        // did finds them the same way now.
        do {
            configuration.installation = try PostgresInstallation.locate(
                binDirectory: file.values["pg-bindir"], environment: ProcessInfo.processInfo.environment)
        } catch {
            throw CommandFailure("\(error)")
        }
        if let settings = file.values["postgres-settings"], !settings.isEmpty {
            for pair in settings.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { configuration.postgresSettings[String(parts[0])] = String(parts[1]) }
            }
        }
        return configuration
    }
}

struct NodeCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Write the node's configuration file and register the node in the event log.",
        discussion: """
            Needs --name, --host, --port, the witnesses and the node's own credentials file (`pgquorum \
            pki issue node NAME`, whose name must be --name). Without --id the \
            formation assigns the next free id (never one a dropped node had); creating again at \
            the same host and port keeps the node's id. Start the node with `pgquorum node run --dir DIR`.
            """
    )

    @OptionGroup var options: NodeOptions

    @Option(help: ArgumentHelp("Extra postgres settings, KEY=VALUE,… (for tests: fsync=off).", valueName: "settings"))
    var postgresSettings: String?

    @Option(
        name: .customLong("pg-bindir"),
        help: ArgumentHelp(
            "The folder of the PostgreSQL server programs (postgres, initdb, pg_rewind…); default: pg_config --bindir of $PG_CONFIG or of the pg_config on the PATH, else the postgres on the PATH, else /usr/lib/postgresql/15/bin. Saved in node.conf.",
            valueName: "dir"))
    var pgBindir: String?

    @Option(help: ArgumentHelp("Networks clients may connect from, CIDR,… (pg_hba.conf `host all all`).", valueName: "networks"))
    var clientNetworks: String?

    @Option(help: ArgumentHelp("How those clients authenticate: scram-sha-256 (default), md5, password, cert or trust.", valueName: "method"))
    var clientAuth: String?

    @Option(
        help: ArgumentHelp(
            "required (default): clients connect over TLS only (pg_hba.conf hostssl); optional: without TLS too. Replication always uses TLS.",
            valueName: "required|optional"))
    var clientTLS: String?

    @Option(
        help: ArgumentHelp(
            "A command run (/bin/sh -c) when the node becomes primary, replica or stopped, with PGQUORUM_NODE, PGQUORUM_OLD_ROLE, PGQUORUM_NEW_ROLE, PGQUORUM_TIMELINE… in its environment; nothing waits for it.",
            valueName: "command"))
    var onRoleChange: String?

    @Option(help: ArgumentHelp("Seconds the role change command may run before it is killed.", valueName: "seconds"))
    var onRoleChangeTimeout: Int?

    @Option(
        help: ArgumentHelp(
            "Where the HTTP endpoints for load balancers listen (/primary, /replica, /health, …; default: --host, port 8008), or off.",
            valueName: "host:port|off"))
    var http: String?

    func validate() throws {
        if let clientTLS, !["required", "optional"].contains(clientTLS) {
            throw ValidationError("--client-tls must be required or optional, not \(clientTLS)")
        }
    }

    func run() async throws {
        try FileManager.default.createDirectory(atPath: options.dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        var file = options.merged(with: NodeConfigFile(values: ["formation": EventRecord.defaultFormation]))
        if let postgresSettings { file.values["postgres-settings"] = postgresSettings }
        if let clientNetworks { file.values["client-networks"] = clientNetworks }
        if let clientAuth { file.values["client-auth"] = clientAuth }
        if let clientTLS { file.values["client-tls"] = clientTLS }
        if let onRoleChange { file.values["on-role-change"] = onRoleChange }
        if let onRoleChangeTimeout { file.values["on-role-change-timeout"] = String(onRoleChangeTimeout) }
        file.values["http"] = http ?? file.values["http"] ?? "\(file.values["host"].map { $0.contains(":") ? "[\($0)]" : $0 } ?? "127.0.0.1"):8008"
        if let credentials = file.values["credentials"] {
            file.values["credentials"] = URL(fileURLWithPath: credentials).standardizedFileURL.path
        }
        if let pgBindir { file.values["pg-bindir"] = URL(fileURLWithPath: pgBindir).standardizedFileURL.path }
        var configuration = try options.managerConfiguration(file, idRequired: false)
        file.values["pg-bindir"] = configuration.installation.binDirectory
        // Refuse here what would stop postgres later: a bad client network, a host that does
        // not resolve (every node's pg_hba.conf gets this host's addresses), server programs
        // of another major version than an existing data directory's.
        try configuration.postgresConfiguration().validate()
        do { try configuration.installation.checkDataDirectory(configuration.dataDirectory) } catch { throw CommandFailure("\(error)") }
        do {
            _ = try HostAddresses.resolve(configuration.host)
        } catch {
            throw CommandFailure("--host \(configuration.host): \(error); give an address or a name this host and the others resolve")
        }
        let client = try WitnessClient(
            endpoints: configuration.witnesses, credentials: configuration.credentials, requestTimeout: .seconds(30), logger: quietLogger())
        defer { client.close() }
        // The other nodes check this node's certificate against the host it registers
        // (sslmode=verify-full): a certificate for another host would fail every clone later.
        let certificate = client.tls.current()
        if certificate.identity.role == .node, !certificate.names(host: configuration.host) {
            throw CommandFailure(
                "the certificate of \(certificate.identity) names \(certificate.hostsDescription), not --host \(configuration.host): "
                    + "issue it again with `pgquorum pki issue node \(certificate.identity.name) --host \(configuration.host) --renew`")
        }
        try Self.checkConflicts(configuration, in: try await ClusterLog.load(from: client, formation: configuration.formation))
        let index = try await client.append(.nodeRegistered(configuration.registration), formation: configuration.formation)
        if configuration.node == 0 {
            configuration.node = try await assignedID(configuration, registeredAt: index, client: client)
        }
        file.values["id"] = String(configuration.node)
        try file.write(directory: options.dir)
        print("node \(configuration.node) (\(configuration.name)) registered at log index \(index); start it with: pgquorum node run --dir \(options.dir)")
    }

    /// One postgres address is one node, and one id one address.
    static func checkConflicts(_ configuration: NodeManagerConfiguration, in state: ClusterState) throws {
        let address = "\(configuration.host):\(configuration.port)"
        if let existing = state.node(host: configuration.host, port: UInt16(configuration.port)) {
            if existing.goal == .dropped {
                throw CommandFailure("node \(existing.id) at \(address) is being dropped; create the node again once it is gone")
            }
            if configuration.node != 0 && existing.id != configuration.node {
                throw CommandFailure(
                    "\(address) is already node \(existing.id) (\(existing.registration.name)); use --id \(existing.id), or drop that node first")
            }
        }
        if configuration.node != 0, let other = state[configuration.node],
            other.registration.host != configuration.host || Int(other.registration.port) != configuration.port
        {
            throw CommandFailure(
                "node id \(configuration.node) is already \(other.registration.name) at \(other.registration.host):\(other.registration.port); "
                    + "leave --id out to get a free one")
        }
    }

    /// The id the formation gave the registration committed at `index`: the node at our
    /// address once a witness has applied that entry.
    private func assignedID(_ configuration: NodeManagerConfiguration, registeredAt index: UInt64, client: WitnessClient) async throws -> PGNodeID {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let state = try await ClusterLog.load(from: client, formation: configuration.formation)
            if state.appliedIndex >= index {
                guard let node = state.node(host: configuration.host, port: UInt16(configuration.port)) else {
                    throw CommandFailure("registered at log index \(index), but the formation has no node at \(configuration.host):\(configuration.port)")
                }
                return node.id
            }
            guard ContinuousClock.now < deadline else {
                throw CommandFailure("registered at log index \(index), but no witness answered with that entry applied within 30 s; run node create again")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

struct NodeRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the node manager until SIGTERM or SIGINT.",
        discussion: """
            On SIGTERM or SIGINT the manager stops postgres (fast shutdown) and exits 0; so it \
            does once the node is dropped from the formation. SIGHUP makes postgres reload its \
            configuration files and stops nothing. Killed outright, the manager takes postgres \
            with it. A node the log does not know (never created, or dropped before this start) \
            is an error: exit 1.
            """
    )

    @OptionGroup var options: NodeOptions

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "pgquorum.node")
        let file = options.merged(with: try NodeConfigFile.load(directory: options.dir))
        var configuration = try options.managerConfiguration(file)
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        configuration.watchdogCommand = [executable, "node", "watchdog"]
        let manager = try NodeManager(configuration: configuration, logger: logger)
        let (stops, stopSink) = AsyncStream<String>.makeStream()
        let signals = forwardStopSignals(to: stopSink) { $0 }
        let reload = onReloadSignal { Task { await manager.reload() } }
        defer {
            signals.forEach { $0.cancel() }
            reload.cancel()
        }
        let runner = Task {
            do {
                try await manager.run()
                stopSink.yield("the manager ended")
            } catch {
                stopSink.yield("the manager failed: \(error)")
                throw error
            }
        }
        var reason = "the manager ended"
        for await received in stops {
            reason = received
            break
        }
        logger.info("stopping", metadata: ["reason": "\(reason)"])
        await manager.stop()
        runner.cancel()
        if case .failure(let error) = await runner.result, !(error is CancellationError) {
            throw CommandFailure("\(error)")
        }
    }
}

/// `pgquorum node watchdog`: the fence `node run` starts beside postgres (DESIGN §5 rule 1).
struct NodeWatchdogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watchdog",
        abstract: "The node manager's watchdog (started by `node run`; not for direct use).",
        discussion: """
            Reads `arm PID MILLISECONDS` and `disarm` lines on standard input. When an armed \
            deadline passes without a new `arm`, or standard input closes while armed, it kills \
            the postmaster PID and every process it started.
            """,
        shouldDisplay: false
    )

    func run() throws {
        Watchdog.serve()
    }
}
