import ArgumentParser
import EventLog
import Foundation
import Manager
import NodeControl

/// `pgquorum pg set|get|show|reset|restart`: PostgreSQL parameters managed through the log.
struct PGCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg",
        abstract: "Manage PostgreSQL parameters on every node, through the log.",
        discussion: """
            A parameter set here reaches every node (or, with --node, one node): each manager \
            writes it into pgquorum-parameters.conf in its data directory, which postgres \
            includes, and reloads postgres. The file is written again after a clone or a \
            rewind, so the value survives failovers. Parameters that take effect only at a \
            restart (shared_buffers, max_connections, …) show as "pending restart" in \
            `pgquorum status` until `pgquorum pg restart --rolling`.

            Values are checked before anything is appended, by this host's PostgreSQL server \
            programs (postgres -C: the rules of pg_settings: name, type, range, enum values, \
            units). Parameters pgquorum sets itself (replication, synchronous_standby_names, \
            ports, paths, TLS, logging) are refused with the reason. A value set with ALTER \
            SYSTEM on a node overrides the value set here (postgresql.auto.conf is read last).
            """,
        subcommands: [PGSetCommand.self, PGGetCommand.self, PGShowCommand.self, PGResetCommand.self, PGRestartCommand.self]
    )
}

/// Where the server programs that check values are.
struct ServerProgramsOptions: ParsableArguments {
    @Option(
        name: .customLong("pg-bindir"),
        help: ArgumentHelp(
            "The folder of the PostgreSQL server programs that check values; default: as `node create` finds them.", valueName: "dir"))
    var pgBindir: String?

    func catalog() throws -> ParameterCatalog {
        do {
            let installation = try PostgresInstallation.locate(binDirectory: pgBindir, environment: ProcessInfo.processInfo.environment)
            return try ParameterCatalog(installation: installation)
        } catch {
            throw CommandFailure("the PostgreSQL server programs check parameter values: \(error) (give --pg-bindir)")
        }
    }
}

/// `--node`: one node instead of every node.
struct ParameterNodeOption: ParsableArguments {
    @Option(help: ArgumentHelp("Only this node (id or name); default: every node of the formation.", valueName: "node"))
    var node: String?

    func resolve(in state: ClusterState) throws -> PGNodeID? {
        try node.map { try resolveNode($0, in: state).id }
    }
}

/// Appends a parameter change (set or reset), refused before appending when the log or the
/// server would refuse it.
private func changeParameter(
    name: String, value: String?, options: FormationOptions, scope: ParameterNodeOption, wait: WaitOptions, catalog: ParameterCatalog
) async throws {
    let name = name.lowercased()
    if let refusal = ManagedParameters.refusal(name: name, value: value) { throw CommandFailure("refused: \(refusal)") }
    if let value, let problem = catalog.problem(name: name, value: value) { throw CommandFailure("refused: \(name) = '\(value)': \(problem)") }
    if value == nil, !name.contains("."), catalog.parameters[name] == nil { throw CommandFailure("refused: unknown parameter \(name)") }
    let client = try options.connection.makeClient()
    let state = try await options.load(client)
    client.close()
    let node = try scope.resolve(in: state)
    let describe = (value.map { "\(name) = '\($0)'" } ?? "reset of \(name)") + (node.map { " on node \($0)" } ?? " on every node")
    try await OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout).run(
        .setParameter(name: name, value: value, node: node), describe: describe,
        applied: { state in (node.map { state[$0]?.parameters[name] } ?? state.parameters[name]) == value },
        done: { _ in true })
    if catalog.parameters[name]?.needsRestart == true {
        print("\(name) takes effect when postgres restarts: `pgquorum pg restart --rolling` restarts every node that needs it, one at a time")
    } else {
        print("every node's manager writes it and reloads postgres")
    }
}

struct PGSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a parameter on every node (or one).")

    @OptionGroup var options: FormationOptions
    @OptionGroup var scope: ParameterNodeOption
    @OptionGroup var programs: ServerProgramsOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The parameter, as in pg_settings (work_mem, log_min_duration_statement, …).")
    var name: String

    @Argument(help: "Its value, as in postgresql.conf without quotes (64MB, 250ms, on, 'a, b' for lists).")
    var value: String

    func run() async throws {
        guard value.utf8.count <= OperatorRequest.parameterValueMax, name.utf8.count <= OperatorRequest.parameterNameMax else {
            throw CommandFailure("refused: a name is at most \(OperatorRequest.parameterNameMax) bytes, a value \(OperatorRequest.parameterValueMax)")
        }
        try await changeParameter(name: name, value: value, options: options, scope: scope, wait: wait, catalog: try programs.catalog())
    }
}

struct PGResetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset", abstract: "Stop managing a parameter: postgres uses its own default (or what postgresql.conf says) again.")

    @OptionGroup var options: FormationOptions
    @OptionGroup var scope: ParameterNodeOption
    @OptionGroup var programs: ServerProgramsOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The parameter.")
    var name: String

    func run() async throws {
        try await changeParameter(name: name, value: nil, options: options, scope: scope, wait: wait, catalog: try programs.catalog())
    }
}

struct PGGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Print a parameter's value as the log sets it.")

    @OptionGroup var options: FormationOptions
    @OptionGroup var scope: ParameterNodeOption
    @OptionGroup var stale: StaleReadOption

    @Argument(help: "The parameter.")
    var name: String

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client, stale: stale.stale)
        let name = name.lowercased()
        let value = try scope.resolve(in: state).map { state.parameters(for: $0)[name] } ?? state.parameters[name]
        guard let value else {
            throw CommandFailure("\(name) is not set through pgquorum\(scope.node.map { " for node \($0)" } ?? ""): postgres uses its own configuration")
        }
        print(value)
    }
}

struct PGShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "List the parameters the log sets, for every node and per node, and which nodes wait for a restart.")

    @OptionGroup var options: FormationOptions
    @OptionGroup var stale: StaleReadOption

    @Flag(help: "One JSON object (docs/JSON.md).")
    var json = false

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client, stale: stale.stale)
        if json {
            print(JSONDocument.line(ParametersDocument(state)))
            return
        }
        var rows = state.parameters.sorted { $0.key < $1.key }.map { [$0.key, $0.value, "every node"] }
        for node in state.sortedNodes {
            rows += node.parameters.sorted { $0.key < $1.key }.map { [$0.key, $0.value, "node \(node.id) (\(node.registration.name))"] }
        }
        print(rows.isEmpty ? "no parameter is set through pgquorum in formation \(state.formation)" : formatTable(header: ["NAME", "VALUE", "SET FOR"], rows: rows))
        for node in state.sortedNodes where node.lastReport?.pendingRestart == true {
            print("node \(node.id) (\(node.registration.name)): pending restart (`pgquorum pg restart --rolling`)")
        }
    }
}

/// `pgquorum pg show --json`.
struct ParametersDocument: Encodable {
    struct Node: Encodable {
        var id: UInt32
        var name: String
        var parameters: [String: String]
        var effective: [String: String]
        @Nullable var pendingRestart: Bool?

        enum CodingKeys: String, CodingKey {
            case id, name, parameters, effective
            case pendingRestart = "pending_restart"
        }
    }

    var formation: String
    var parameters: [String: String]
    var nodes: [Node]

    init(_ state: ClusterState) {
        formation = state.formation
        parameters = state.parameters
        nodes = state.sortedNodes.map {
            Node(
                id: $0.id, name: $0.registration.name, parameters: $0.parameters, effective: state.parameters(for: $0.id),
                pendingRestart: $0.lastReport?.pendingRestart)
        }
    }
}

struct PGRestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Restart postgres where a changed parameter waits for it: one standby, or every node in turn.",
        discussion: """
            --rolling restarts every node whose postgres reports "pending restart", one at a \
            time: each standby, waiting until it streams again before the next; then, if the \
            primary needs it, a switchover to a restarted standby (writes pause only for the \
            switchover), and the old primary comes back as a standby (a restart itself). Never \
            two nodes at once. Each step is shown as it happens.

            --node restarts one standby's postgres; the primary is refused (use --rolling).
            """
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Flag(help: "Every node that waits for a restart, one at a time (the primary last, after a switchover).")
    var rolling = false

    @Option(help: ArgumentHelp("One standby (id or name).", valueName: "node"))
    var node: String?

    func run() async throws {
        guard rolling != (node != nil) else { throw CommandFailure("give either --rolling or --node NODE") }
        // One connection for the reads between the steps (each step's runner has its own).
        let client = try options.connection.makeClient()
        defer { client.close() }
        // Each read goes on from the last one instead of replaying the log from its start.
        var current = try await options.load(client)
        func load() async throws -> ClusterState {
            try await ClusterLog.replay(from: client, into: &current, onStep: nil)
            return current
        }
        var state = current
        let runner = OperatorRequestRunner(options: options, noWait: false, waitSeconds: wait.waitTimeout)
        if let node {
            let id = try resolveNode(node, in: state).id
            if state[id]?.lastReport?.pendingRestart != true { print("node \(id) does not wait for a restart; restarting it anyway") }
            try await restart(id, in: state, runner)
            return
        }
        let pending = state.sortedNodes.filter { $0.lastReport?.pendingRestart == true }
        guard !pending.isEmpty else {
            print("no node waits for a restart")
            return
        }
        let primary = state.primaryNode?.id
        print("nodes that wait for a restart: \(pending.map { "\($0.id) (\($0.registration.name))" }.joined(separator: ", "))")
        var skipped: [PGNodeID] = []
        for standby in pending where standby.id != primary {
            // A node in maintenance belongs to the operator: left for after it.
            if let refusal = state.restartRefusal(standby.id) {
                print("node \(standby.id): skipped: \(refusal)")
                skipped.append(standby.id)
                continue
            }
            try await restart(standby.id, in: state, runner)
            state = try await load()
        }
        let left = skipped
        func finish() throws {
            guard left.isEmpty else {
                throw CommandFailure("nodes \(left.map(String.init).joined(separator: ", ")) still wait for a restart (skipped above)")
            }
            print("done: every node runs with its parameters")
        }
        guard let primary, state[primary]?.lastReport?.pendingRestart == true else {
            try finish()
            return
        }
        print("node \(primary) is the primary: switching over first")
        try await runner.run(.switchover(target: nil), describe: "switchover", done: switchoverDone(old: primary, target: nil))
        // The old primary comes back as a standby: a restart of its own. If it still waits,
        // restart it as a standby now.
        print("node \(primary): waiting until it streams from the new primary")
        state = try await waitUntil(load) { Self.streamsAsStandby(primary, $0) }
        if state[primary]?.lastReport?.pendingRestart == true { try await restart(primary, in: state, runner) }
        try finish()
    }

    /// A standby that streams from the primary, as a report built in state secondary says.
    static func streamsAsStandby(_ id: PGNodeID, _ state: ClusterState) -> Bool {
        guard let node = state[id], let report = node.lastReport else { return false }
        return report.postgresRunning && report.reachedState == .secondary && node.isConverged && node.goal == .secondary
            && state.isHealthy(node) && state.seenStreamingByPrimary(node)
    }

    /// Reads the state every half second until `condition` holds, for at most --wait-timeout.
    private func waitUntil(_ load: () async throws -> ClusterState, _ condition: (ClusterState) -> Bool) async throws -> ClusterState {
        let deadline = ContinuousClock.now + .milliseconds(Int64(wait.waitTimeout * 1000))
        while true {
            let state = try await load()
            if condition(state) { return state }
            guard ContinuousClock.now < deadline else {
                throw CommandFailure("not done after \(Int(wait.waitTimeout)) s; `pgquorum status` shows where it stands")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    /// Restarts one standby and waits until it streams again without a pending restart.
    private func restart(_ id: PGNodeID, in state: ClusterState, _ runner: OperatorRequestRunner) async throws {
        if let refusal = state.restartRefusal(id) { throw CommandFailure("refused: restart of node \(id): \(refusal)") }
        let before = state[id]?.restartIndex ?? 0
        print("node \(id): restarting postgres")
        try await runner.run(
            .restartPostgres(node: id), describe: "restart of node \(id)", applied: { $0[id].map { $0.restartIndex > before } ?? false },
            done: { state in Self.streamsAsStandby(id, state) && state[id]?.lastReport?.pendingRestart == false })
    }
}
