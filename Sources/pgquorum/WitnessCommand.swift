import ArgumentParser
import Dispatch
import EventLog
import Foundation
import Logging
import Manager
import Raft

/// `pgquorum witness …`: run and manage the witnesses that replicate the event log.
struct WitnessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "witness",
        abstract: "Run and manage the witnesses that replicate the cluster's event log.",
        discussion: """
            Three (or five) witnesses form the control plane: they replicate one event log with \
            Raft, stored in LMDB. Start with `pgquorum pki init` and `pgquorum pki issue` to \
            create the cluster's CA and each witness's certificate and credentials file, copy \
            them to its machine, then start each witness with `pgquorum witness run`.
            """,
        subcommands: [
            WitnessRunCommand.self, WitnessStatusCommand.self, WitnessAddCommand.self,
            WitnessRemoveCommand.self, WitnessReplaceCommand.self,
        ]
    )
}

/// Where the witnesses are and how to prove membership of the cluster, for every command
/// that talks to them.
struct WitnessClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Witness addresses, HOST:PORT,HOST:PORT,… (default: $PGQUORUM_WITNESSES).", valueName: "addresses"))
    var witnesses: String?

    @Option(help: ArgumentHelp("This holder's credentials file, from `pgquorum pki issue` (default: $PGQUORUM_CREDENTIALS).", valueName: "file"))
    var credentials: String?

    @Option(help: "Seconds to wait for the witnesses before giving up.")
    var timeout: Double = 10

    @Option(
        help: ArgumentHelp(
            "A node's folder: its node.conf gives the witnesses and credentials not given otherwise (default: $PGQUORUM_NODE_DIR).",
            valueName: "dir"))
    var nodeDir: String?

    /// node.conf of `--node-dir` (or $PGQUORUM_NODE_DIR), when one was named.
    private func nodeConfiguration() throws -> NodeConfigFile? {
        guard let directory = nodeDir ?? ProcessInfo.processInfo.environment["PGQUORUM_NODE_DIR"], !directory.isEmpty else { return nil }
        return try NodeConfigFile.load(directory: directory)
    }

    func endpoints() throws -> [WitnessEndpoint] {
        let fromNode = witnesses == nil ? try nodeConfiguration()?.values["witnesses"] : nil
        guard let text = witnesses ?? ProcessInfo.processInfo.environment["PGQUORUM_WITNESSES"] ?? fromNode, !text.isEmpty else {
            throw CommandFailure("no witness addresses: pass --witnesses HOST:PORT,… or set PGQUORUM_WITNESSES (or name a node's folder with --node-dir)")
        }
        return try text.split(separator: ",").map { item throws(WitnessConfigurationError) in
            try WitnessEndpoint(parsing: item.trimmingCharacters(in: .whitespaces))
        }
    }

    func loadCredentials() throws -> WitnessCredentials {
        let fromNode = credentials == nil ? try nodeConfiguration()?.values["credentials"] : nil
        guard let path = credentials ?? ProcessInfo.processInfo.environment["PGQUORUM_CREDENTIALS"] ?? fromNode, !path.isEmpty else {
            throw CommandFailure("no credentials file: pass --credentials FILE or set PGQUORUM_CREDENTIALS (or name a node's folder with --node-dir)")
        }
        return try WitnessCredentials.load(from: path)
    }

    func makeClient() throws -> WitnessClient {
        try WitnessClient(
            endpoints: try endpoints(), credentials: try loadCredentials(), requestTimeout: .milliseconds(Int64(timeout * 1000)),
            logger: quietLogger())
    }
}

/// An error the command reports as one line on stderr, with exit code 1.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A logger for commands whose output is for people: warnings only.
func quietLogger() -> Logger {
    var logger = Logger(label: "pgquorum")
    logger.logLevel = .error
    return logger
}

struct WitnessRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one witness until SIGTERM or SIGINT.",
        discussion: """
            On its first start a witness records the cluster id in its data directory and, \
            unless --join is given, bootstraps the cluster with the witnesses of --peers as \
            voters (start all of them with the same --peers). A restarted witness keeps its \
            term, vote and log. A witness started with --join waits until `pgquorum witness \
            add` makes it a member. On SIGTERM or SIGINT a leader hands over leadership, then \
            the witness closes its connections and its storage and exits 0.
            """
    )

    @Option(help: "This witness's id (a positive number, unique in the cluster).")
    var id: UInt64

    @Option(help: ArgumentHelp("The folder holding this witness's LMDB log.", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("The address to listen on, HOST:PORT.", valueName: "host:port"))
    var listen: String

    @Option(help: ArgumentHelp("Every witness, this one included: 1=HOST:PORT,2=HOST:PORT,…", valueName: "peers"))
    var peers: String

    @Option(help: ArgumentHelp("This holder's credentials file, from `pgquorum pki issue` (default: $PGQUORUM_CREDENTIALS).", valueName: "file"))
    var credentials: String?

    @Flag(help: "Do not bootstrap: wait to be added with `pgquorum witness add`.")
    var join = false

    @Option(
        help: ArgumentHelp(
            "Serve Prometheus metrics at http://HOST:PORT/metrics (term, role, commit and applied index, leader changes, commit latency, snapshots, connections).",
            valueName: "host:port"))
    var metrics: String?

    @Option(help: "Milliseconds per Raft tick.")
    var tickMs = 100

    @Option(help: "Raft ticks without a leader before an election (randomized up to twice this).")
    var electionTicks = 8

    @Option(help: "Raft ticks between the leader's heartbeats; less than --election-ticks.")
    var heartbeatTicks = 2

    @Option(help: "Take a snapshot every this many entries.")
    var snapshotEntries: UInt64 = 20_000

    @Option(help: "Keep this many entries in the log behind the latest snapshot.")
    var keepEntries: UInt64 = 2_000

    @Option(help: "Close a connection whose other side has not read for this many milliseconds.")
    var stallTimeoutMs = 10_000

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "pgquorum.witness")
        let options = WitnessClientOptions(credentials: credentials)
        let credentials = try options.loadCredentials()
        var configuration = WitnessConfiguration(
            id: id, dataDirectory: data, listen: try WitnessEndpoint(parsing: listen), peers: try WitnessEndpoint.parsePeers(peers),
            credentials: credentials)
        configuration.join = join
        configuration.tickMillis = tickMs
        configuration.electionTicks = electionTicks
        configuration.heartbeatTicks = heartbeatTicks
        configuration.snapshotEntries = snapshotEntries
        configuration.keepEntries = keepEntries
        configuration.stallTimeoutMillis = stallTimeoutMs
        try configuration.validate()
        let metricsAddress: WitnessEndpoint?
        do { metricsAddress = try metrics.map { try WitnessEndpoint(parsing: $0) } } catch {
            throw ValidationError("--metrics: \(error) (HOST:PORT)")
        }
        try WitnessIdentity.claim(dataDirectory: data, clusterID: credentials.clusterID)

        let (stops, stopSink) = AsyncStream<(reason: String, failed: Bool)>.makeStream()
        let signals = forwardStopSignals(to: stopSink) { ($0, false) }
        defer { signals.forEach { $0.cancel() } }
        let endpoint = MetricsEndpoint()
        let server = try WitnessServer(
            configuration: configuration, application: ClusterStateApplication(), logger: logger,
            metrics: metricsAddress == nil ? WitnessMetrics() : WitnessMetrics(factory: endpoint.factory),
            onFatal: { reason in stopSink.yield((reason, true)) })
        try await server.start()
        // The metrics endpoint runs on a loop of its own; a scrape only reads what the Raft
        // loop recorded.
        var metricsServer: HTTPEndpointServer?
        if let metricsAddress {
            metricsServer = try await HTTPEndpointServer(host: metricsAddress.host, port: metricsAddress.port, logger: logger) { method, target in
                endpoint.respond(method: method, target: target)
                    ?? HealthEndpoints.Response(status: 404, body: "a witness serves \(MetricsEndpoint.path) only\n", contentType: "text/plain")
            }
        }
        // Under systemd (Type=notify): ready now; with WatchdogSec, alive while the Raft loop
        // answers, so a hung witness is killed and restarted.
        let notify = SystemdNotify()
        notify.ready()
        let keepalive = Task {
            guard let interval = notify.watchdogInterval else { return }
            while !Task.isCancelled {
                if await server.loopResponds(within: interval / 2) { notify.watchdog() }
                try? await Task.sleep(for: interval / 4)
            }
        }
        var stop = (reason: "end of input", failed: false)
        for await received in stops {
            stop = received
            break
        }
        keepalive.cancel()
        notify.stopping()
        logger.info("stopping", metadata: ["reason": "\(stop.reason)"])
        await metricsServer?.close()
        await server.stop()
        if stop.failed { throw ExitCode(1) }
    }
}

extension WitnessClientOptions {
    init(credentials: String?) {
        self.init()
        self.credentials = credentials
    }
}

/// The witness's replicated state: the cluster state of every formation, as every reader
/// derives it from the log, snapshotted when the log is compacted.
final class ClusterStateApplication: WitnessApplication {
    private var formations = FormationStates()

    func apply(_ entry: LogEntry) { formations.apply(entry) }

    func registeredNodeName(formation: String, node: UInt32) -> String? {
        formations[formation]?[node]?.registration.name
    }

    func snapshotData() -> [UInt8] { formations.snapshotData() }

    func restore(from data: [UInt8]) throws {
        formations = data.isEmpty ? FormationStates() : try FormationStates(snapshot: data)
    }

    func nextDeadlineNanos() -> UInt64? { formations.nextDeadlineStampNanos }

    func reportFlushIntervalMillis() -> UInt32? { formations.shortestHeartbeatMillis }
}

struct WitnessStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every witness's view: role, term, leader, commit and applied index, members."
    )

    @OptionGroup var connection: WitnessClientOptions

    @Flag(help: "Print JSON (one object per witness, one per line).")
    var json = false

    func run() async throws {
        let client = try connection.makeClient()
        defer { client.close() }
        var rows: [[String]] = []
        var failures = 0
        for endpoint in client.endpoints {
            do {
                let status = try await client.status(of: endpoint)
                if json {
                    print(JSONDocument.line(WitnessStatusDocument(status, address: endpoint.description)))
                } else {
                    let members = status.members.map { member in
                        "\(member.id)" + (member.isLearner ? "(learner)" : "") + (member.match.map { "@\($0)" } ?? "")
                    }.joined(separator: " ")
                    rows.append([
                        "\(status.id)", endpoint.description, status.role, "\(status.term)", status.leader.map(String.init) ?? "-",
                        "\(status.commit)", "\(status.applied)", members,
                    ])
                }
            } catch {
                failures += 1
                if json {
                    print(JSONDocument.line(WitnessErrorDocument(address: endpoint.description, error: "\(error)")))
                } else {
                    rows.append(["?", endpoint.description, "unreachable", "", "", "", "", ""])
                }
                FileHandle.standardError.write(Data("witness \(endpoint): \(error)\n".utf8))
            }
        }
        if !json {
            print(formatTable(header: ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "MEMBERS(@MATCH)"], rows: rows))
        }
        if failures == client.endpoints.count { throw ExitCode(1) }
    }
}

struct WitnessAddCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a witness (started with --join) to the cluster.",
        discussion: """
            The new witness joins as a learner: it receives the log (or a snapshot) but counts for \
            no quorum, so an empty replica never weakens the cluster. The leader promotes it to \
            voter once it has caught up, and the command returns then. Run it again if it timed \
            out while a large log was copied: it waits for the same promotion.
            """
    )

    @Option(help: "The new witness's id.")
    var id: UInt64

    @Option(help: ArgumentHelp("The new witness's address, HOST:PORT.", valueName: "host:port"))
    var address: String

    @OptionGroup var connection: WitnessClientOptions

    func run() async throws {
        let client = try connection.makeClient()
        defer { client.close() }
        let index = try await client.changeMembership(.add(id: id, address: try WitnessEndpoint(parsing: address).description))
        print("witness \(id) (\(address)) added, a voter from log index \(index)")
    }
}

struct WitnessRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove a witness from the cluster.",
        discussion: "Returns once the membership change has committed. Removing the leader hands leadership to another witness first."
    )

    @Option(help: "The id of the witness to remove.")
    var id: UInt64

    @OptionGroup var connection: WitnessClientOptions

    func run() async throws {
        let client = try connection.makeClient()
        defer { client.close() }
        let index = try await client.changeMembership(.remove(id: id))
        print("witness \(id) removed at log index \(index)")
    }
}

struct WitnessReplaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replace",
        abstract: "Replace a (dead) witness with a new one started with --join.",
        discussion: """
            Removes the old witness, then adds the new one, one committed membership change at \
            a time. Removing first keeps the cluster writable when the old witness is dead: the \
            remaining witnesses form the quorum while the new one catches up.
            """
    )

    @Option(help: "The id of the witness to replace.")
    var old: UInt64

    @Option(help: "The new witness's id.")
    var id: UInt64

    @Option(help: ArgumentHelp("The new witness's address, HOST:PORT.", valueName: "host:port"))
    var address: String

    @OptionGroup var connection: WitnessClientOptions

    func run() async throws {
        guard old != id else { throw CommandFailure("the new witness needs an id other than \(old)") }
        let client = try connection.makeClient()
        defer { client.close() }
        let endpoint = try WitnessEndpoint(parsing: address)
        let removed = try await client.changeMembership(.remove(id: old))
        print("witness \(old) removed at log index \(removed)")
        let added = try await client.changeMembership(.add(id: id, address: endpoint.description))
        print("witness \(id) (\(endpoint)) added, a voter from log index \(added)")
    }
}

/// A JSON string literal.
/// Columns padded to their widest cell.
func formatTable(header: [String], rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}
