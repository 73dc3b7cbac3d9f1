import ArgumentParser
import EventLog
import Foundation
import Manager

/// `pgquorum node set NODE candidate-priority N | replication-quorum true|false`: a node's
/// settings, changed through the log and applied by the policy at once.
struct NodeSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a node's candidate priority or replication quorum.",
        discussion: """
            candidate-priority 0..100: 0 never becomes primary; higher wins elections (among \
            standbys with the same WAL). Refused when no other standby would be left with a \
            priority above 0.

            replication-quorum true|false: whether the standby counts in \
            synchronous_standby_names and in elections. Leaving the quorum, the primary first \
            makes sure the other quorum standbys hold every acknowledged write. Refused when \
            fewer quorum standbys than number_sync_standbys would be left.

            Both are refused during an election. The command follows the change until every \
            node has acted on it.
            """
    )

    enum Key: String, CaseIterable, ExpressibleByArgument {
        case candidatePriority = "candidate-priority"
        case replicationQuorum = "replication-quorum"
    }

    @OptionGroup var options: FormationOptions
    @OptionGroup var wait: WaitOptions

    @Argument(help: "The node (id or name).")
    var node: String

    @Argument(help: ArgumentHelp("candidate-priority or replication-quorum.", valueName: "setting"))
    var key: Key

    @Argument(help: "The new value: 0 to 100 for candidate-priority, true or false for replication-quorum.")
    var value: String

    func run() async throws {
        let request = try Self.request(key, value)
        let client = try options.connection.makeClient()
        let state = try await options.load(client)
        client.close()
        let id = try resolveNode(node, in: state).id
        let refusal: String? =
            switch request {
            case .priority(let priority): state.candidatePriorityRefusal(id, priority)
            case .quorum(let enabled): state.replicationQuorumRefusal(id, enabled)
            }
        if let refusal { throw CommandFailure("refused: \(refusal)") }
        let runner = OperatorRequestRunner(options: options, noWait: wait.noWait, waitSeconds: wait.waitTimeout)
        switch request {
        case .priority(let priority):
            try await runner.run(
                .setCandidatePriority(node: id, priority: priority), describe: "candidate priority \(priority) for node \(id)",
                applied: { $0[id]?.registration.candidatePriority == priority }, done: { _ in true })
        case .quorum(let enabled):
            try await runner.run(
                .setReplicationQuorum(node: id, enabled: enabled), describe: "replication quorum \(enabled) for node \(id)",
                applied: { $0[id]?.registration.replicationQuorum == enabled },
                done: { state in state.sortedNodes.allSatisfy(\.isConverged) })
        }
    }

    enum Change {
        case priority(UInt8)
        case quorum(Bool)
    }

    static func request(_ key: Key, _ value: String) throws -> Change {
        switch key {
        case .candidatePriority:
            guard let priority = UInt8(value), priority <= NodeRegistration.candidatePriorityMax else {
                throw CommandFailure("candidate-priority must be a whole number from 0 to \(NodeRegistration.candidatePriorityMax), not \(value)")
            }
            return .priority(priority)
        case .replicationQuorum:
            switch value.lowercased() {
            case "true", "on", "yes", "1": return .quorum(true)
            case "false", "off", "no", "0": return .quorum(false)
            default: throw CommandFailure("replication-quorum must be true or false, not \(value)")
            }
        }
    }
}
