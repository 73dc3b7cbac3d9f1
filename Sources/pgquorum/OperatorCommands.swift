import ArgumentParser
import EventLog
import Foundation
import Manager

/// Appends an operator request after checking that the policy would honour it now, then
/// (unless `noWait`) follows the log, printing each decision and state reached, until `done`
/// holds or `waitSeconds` pass.
struct OperatorRequestRunner {
    var options: FormationOptions
    var noWait: Bool
    var waitSeconds: Double

    /// `applied`, when given, tells a request the reducer took from one it refused, for
    /// requests that change no goal (a reason left waiting then is not a refusal).
    func run(
        _ request: OperatorRequest, describe: String, applied: (@Sendable (ClusterState) -> Bool)? = nil,
        done: @escaping @Sendable (ClusterState) -> Bool
    ) async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let state = try await options.load(client)
        // The same reducer, one entry ahead: a request the policy would ignore is refused here
        // with its reason instead of being appended.
        var trial = state
        let changes = trial.apply(probeEntry(request, after: state))
        let refused = applied.map { !$0(trial) } ?? (changes.isEmpty && trial.waitingReason != state.waitingReason)
        if refused, let reason = trial.waitingReason { throw CommandFailure("refused: \(reason)") }
        let index = try await client.append(.operatorRequest(request), formation: options.formation)
        print("\(describe) requested (log index \(index))")
        guard !noWait else { return }
        try await follow(client, from: state, requestIndex: index, applied: applied, done: done)
    }

    private func probeEntry(_ request: OperatorRequest, after state: ClusterState) -> LogEntry {
        LogEntry(
            index: state.appliedIndex + 1, term: state.term,
            record: EventRecord(
                formation: options.formation, stamp: LogStamp(leaderClockNanos: state.lastStampNanos, wallTimeMillis: 0),
                event: .operatorRequest(request)))
    }

    private func follow(
        _ client: WitnessClient, from start: ClusterState, requestIndex: UInt64, applied: (@Sendable (ClusterState) -> Bool)?,
        done: @escaping @Sendable (ClusterState) -> Bool
    ) async throws {
        let formation = options.formation
        let seconds = waitSeconds
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var state = start
                for try await item in client.stream(from: start.appliedIndex + 1, formation: formation) {
                    switch item {
                    case .snapshot(let snapshot):
                        state = try ClusterLog.restore(snapshot, formation: formation)
                    case .skipped(let through):
                        ClusterLog.skip(through: through, in: &state)
                    case .entries(let entries):
                        for entry in entries {
                            var problem: String?
                            ClusterLog.apply(entry, to: &state) { step in
                                if step.entry.index == requestIndex, step.changes.isEmpty, let reason = step.waitingReason {
                                    problem = reason
                                }
                                printStep(step, formation: formation)
                            }
                            if let applied, entry.index == requestIndex {
                                if !applied(state) { throw CommandFailure("refused: \(state.waitingReason ?? "the request changed nothing")") }
                            } else if let problem {
                                throw CommandFailure("refused: \(problem)")
                            }
                        }
                    }
                    if state.appliedIndex >= requestIndex && done(state) {
                        print("done")
                        return
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                throw CommandFailure("not done after \(Int(seconds)) s; `pgquorum status` shows where it stands")
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// One line per decision and per state reached, as the operator follows a request.
func printStep(_ step: ClusterLog.Step, formation: String) {
    guard step.entry.record.formation == formation else { return }
    if case .stateReached(let node, let reached) = step.entry.record.event {
        print("  node \(node) reached \(reached.rawValue)")
    }
    for change in step.changes {
        print("  node \(change.node): goal \(change.from.rawValue) -> \(change.to.rawValue): \(change.reason)")
    }
    fflush(nil)
}

/// Finds a node by id or name; an unknown one is an error listing the known ones.
func resolveNode(_ text: String, in state: ClusterState) throws -> NodeRecord {
    if let id = PGNodeID(text), let node = state[id] { return node }
    if let node = state.sortedNodes.first(where: { $0.registration.name == text }) { return node }
    let known = state.sortedNodes.map { "\($0.id) (\($0.registration.name))" }.joined(separator: ", ")
    throw CommandFailure("unknown node \(text) in formation \(state.formation); known nodes: \(known.isEmpty ? "none" : known)")
}

struct WaitOptions: ParsableArguments {
    @Flag(help: "Return once the request is in the log, without following it.")
    var noWait = false

    @Option(help: "Seconds to follow the request before giving up.")
    var waitTimeout: Double = 60
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Hand the primary role to a standby without losing a write.",
        discussion: """
            The primary stops taking writes, the standbys report their positions, and the \
            chosen standby (--to, or the best candidate) is promoted; the old primary comes \
            back as a standby. Shows each step until the new primary is in place.
            """
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Option(help: ArgumentHelp("The node to promote (id or name).", valueName: "node"))
    var to: String?

    func run() async throws {
        let client = try options.connection.makeClient()
        let state = try await options.load(client)
        client.close()
        let target = try to.map { try resolveNode($0, in: state).id }
        guard let old = state.primaryNode?.id else { throw CommandFailure("refused: formation \(options.formation) has no primary") }
        try await OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout).run(
            .switchover(target: target), describe: "switchover" + (target.map { " to node \($0)" } ?? ""),
            done: switchoverDone(old: old, target: target))
    }
}

/// A switchover is done when the new primary runs with synchronous replication and every
/// node reached its goal (the old primary is back as a standby).
func switchoverDone(old: PGNodeID, target: PGNodeID?) -> @Sendable (ClusterState) -> Bool {
    { state in
        guard let primary = state.primaryNode, primary.id != old, primary.goal != .waitPrimary else { return false }
        return (target == nil || primary.id == target) && state.sortedNodes.allSatisfy(\.isConverged)
    }
}

struct MaintenanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maintenance",
        abstract: "Take a node out of service for maintenance, or bring it back.",
        subcommands: [MaintenanceEnableCommand.self, MaintenanceDisableCommand.self]
    )
}

struct MaintenanceEnableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable",
        abstract: "Put a node into maintenance (a primary first hands over to a standby)."
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The node (id or name).")
    var node: String

    func run() async throws {
        let client = try options.connection.makeClient()
        let id = try resolveNode(node, in: try await options.load(client)).id
        client.close()
        try await OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout).run(
            .maintenance(node: id, enabled: true), describe: "maintenance of node \(id)"
        ) { state in
            state[id].map { $0.reached == .maintenance && $0.goal == .maintenance } ?? false
        }
    }
}

struct MaintenanceDisableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Bring a node back from maintenance.")

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The node (id or name).")
    var node: String

    func run() async throws {
        let client = try options.connection.makeClient()
        let id = try resolveNode(node, in: try await options.load(client)).id
        client.close()
        try await OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout).run(
            .maintenance(node: id, enabled: false), describe: "end of maintenance of node \(id)"
        ) { state in
            state[id].map { $0.isConverged && ![.maintenance, .waitMaintenance, .prepareMaintenance].contains($0.goal) } ?? false
        }
    }
}

struct DropCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drop",
        abstract: "Remove a node from the formation.",
        discussion: "The node's manager stops its postgres and reports dropped; the node then leaves the formation and the URI, and its manager exits 0. Its data directory stays; to bring it back, run `pgquorum node create` again (it gets a new id)."
    )

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The node (id or name).")
    var node: String

    @Flag(help: "The node's manager is gone for good: remove the node without waiting for it to stop (refused for a primary whose lease may still run).")
    var force = false

    func run() async throws {
        let client = try options.connection.makeClient()
        let id = try resolveNode(node, in: try await options.load(client)).id
        client.close()
        try await OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout).run(
            force ? .forceDrop(node: id) : .dropNode(node: id), describe: (force ? "forced drop" : "drop") + " of node \(id)"
        ) { state in
            state[id].map { $0.reached == .dropped } ?? true
        }
    }
}
