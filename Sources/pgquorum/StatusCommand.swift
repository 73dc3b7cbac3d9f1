import ArgumentParser
import EventLog
import Foundation
import Manager

/// Options of every command that reads or writes one formation through the witnesses.
struct FormationOptions: ParsableArguments {
    @OptionGroup var connection: WitnessClientOptions

    @Option(help: "The formation (group of PostgreSQL nodes) to act on.")
    var formation: String = EventRecord.defaultFormation

    /// The formation's state; a formation other than the default one without any node is
    /// an error that lists the formations there are.
    func load(_ client: WitnessClient, stale: Bool = false) async throws -> ClusterState {
        let state = try await ClusterLog.load(from: client, formation: formation, stale: stale)
        if state.sortedNodes.isEmpty, formation != EventRecord.defaultFormation {
            let known = try await ClusterLog.formations(from: client)
            throw CommandFailure(
                "formation \(formation) does not exist (no node is registered in it); formations: \(known.isEmpty ? "none" : known.joined(separator: ", "))")
        }
        return state
    }
}

/// `--stale` on the commands that only read.
struct StaleReadOption: ParsableArguments {
    @Flag(
        help: ArgumentHelp(
            "Show what the first witness to answer has applied, without checking that it is current.",
            discussion: """
                By default a read is linearizable: a witness answers only once it has confirmed with the \
                quorum that nothing newer is committed, and a witness cut off from the others says so \
                and the next one is asked. --stale answers from one witness's own copy, however old: \
                for diagnosing a witness (list it first in --witnesses).
                """))
    var stale = false
}

/// `pgquorum status`: the formation's nodes as the log says, like `pg_autoctl show state`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every node: state reached, goal, health, timeline/LSN, lag, priority, replication.",
        discussion: """
            The table is derived by replaying the committed event log with the same reducer as \
            the node managers, so it shows what they are driving towards. Below it: why a node \
            has not reached its goal yet, and why the formation waits, when it does.
            """
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var read: StaleReadOption

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Refresh in place as the log moves (Ctrl-C to stop).")
    var watch = false

    func validate() throws {
        if watch && read.stale { throw ValidationError("--watch follows the quorum's log; it cannot be combined with --stale") }
    }

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        var state = try await options.load(client, stale: read.stale)
        guard watch else { return print(render(state)) }
        print(json ? render(state) : "\u{1B}[H\u{1B}[2J" + render(state), terminator: json ? "\n" : "")
        fflush(nil)
        var last = render(state)
        for try await item in client.stream(from: state.appliedIndex + 1, formation: options.formation) {
            switch item {
            case .snapshot(let snapshot): state = try ClusterLog.restore(snapshot, formation: options.formation)
            case .skipped(let through): ClusterLog.skip(through: through, in: &state)
            case .entries(let entries): for entry in entries { ClusterLog.apply(entry, to: &state, onStep: nil) }
            }
            let text = render(state)
            if text != last {
                if json { print(text) } else { print("\u{1B}[H\u{1B}[2J" + text, terminator: "") }
                fflush(nil)
                last = text
            }
        }
    }

    private func render(_ state: ClusterState) -> String {
        json ? ClusterView.statusJSON(state) : ClusterView.statusTable(state)
    }
}

/// `pgquorum show uri|settings`.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show the connection URI, the formation settings, or a systemd unit.",
        subcommands: [ShowURICommand.self, ShowSettingsCommand.self, ShowSystemdCommand.self]
    )
}

struct ShowURICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uri",
        abstract: "Print the connection string that always finds the writable node.",
        discussion: """
            Every node of the formation, with target_session_attrs=read-write, timeouts that give \
            up on a dead host in seconds, and sslmode=verify-full with the cluster's CA \
            certificate as sslrootcert (the CA file of these credentials, or --ca-file: where \
            the clients find it).
            """
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var read: StaleReadOption

    @Option(help: "The database name in the URI.")
    var dbname = "postgres"

    @Option(help: ArgumentHelp("The CA certificate's path on the clients' machines (default: the CA file of the credentials).", valueName: "file"))
    var caFile: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client, stale: read.stale)
        guard !state.sortedNodes.isEmpty else { throw CommandFailure("no node registered in formation \(options.formation)") }
        let uri = state.connectionURI(database: dbname, caFile: caFile ?? client.credentials.caFile)
        print(json ? JSONDocument.line(URIDocument(formation: options.formation, uri: uri)) : uri)
    }
}

struct ShowSettingsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "settings", abstract: "Print the formation settings.")

    @OptionGroup var options: FormationOptions
    @OptionGroup var read: StaleReadOption

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client, stale: read.stale)
        let lines = ClusterView.settingsLines(state.settings)
        if json {
            print(JSONDocument.line(SettingsDocument(state.settings)))
        } else {
            print(formatTable(header: ["SETTING", "VALUE"], rows: lines.map { [$0.key, $0.value] }))
        }
    }
}

/// `pgquorum settings get|set`.
struct SettingsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settings",
        abstract: "Read or change the formation settings (through the log, so every reader agrees).",
        subcommands: [SettingsGetCommand.self, SettingsSetCommand.self]
    )
}

struct SettingsGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Print one setting's value.")

    @OptionGroup var options: FormationOptions

    @Argument(help: ArgumentHelp("The setting: \(SettingKey.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "key"))
    var key: String

    func run() async throws {
        guard let setting = SettingKey(rawValue: key) else { throw unknownKey(key) }
        let client = try options.connection.makeClient()
        defer { client.close() }
        print(setting.display(try await options.load(client).settings))
    }
}

func unknownKey(_ key: String) -> CommandFailure {
    CommandFailure("unknown setting \(key); valid settings: \(SettingKey.allCases.map(\.rawValue).joined(separator: ", "))")
}

struct SettingsSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change one setting.",
        discussion: """
            Durations take ms, s or m (500ms, 2.5s); plain numbers are milliseconds. The timeouts \
            must keep the primary lease above the heartbeat interval, at most 80% of the node \
            unhealthy timeout, and with the watchdog's \(FormationSettings.watchdogGraceMillis) ms \
            grace within it (DESIGN §5). Each change is checked alone: to shorten them all, set \
            the heartbeat first, then the lease, then the unhealthy timeout.

            Defaults: heartbeat_interval \(FormationSettings().heartbeatIntervalMillis)ms, primary_lease \
            \(FormationSettings().primaryLeaseMillis)ms, node_unhealthy_timeout \
            \(FormationSettings().nodeUnhealthyTimeoutMillis)ms (a node crash fails over in about \
            1.8 s). The fast profile of docs/BENCHMARKS.md, heartbeat_interval 100ms, primary_lease \
            300ms, node_unhealthy_timeout 800ms, fails over in about 1.1 s; its short lease pauses \
            writes for about a second whenever the witnesses elect a new leader.
            """
    )

    @OptionGroup var options: FormationOptions

    @Argument(help: ArgumentHelp("The setting: \(SettingKey.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "key"))
    var key: String

    @Argument(help: "The new value.")
    var value: String

    func run() async throws {
        guard let setting = SettingKey(rawValue: key) else { throw unknownKey(key) }
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client)
        let quorumStandbys = max(0, state.sortedNodes.filter { $0.registration.replicationQuorum && $0.goal != .dropped }.count - 1)
        let updated = try setting.applying(value, to: state.settings, quorumStandbys: quorumStandbys)
        let index = try await client.append(.settingsChanged(updated), formation: options.formation)
        print("\(setting.rawValue) = \(setting.display(updated)) (log index \(index))")
    }
}
