import EventLog
import Foundation
import NodeControl

/// The documents every `--json` output prints, one JSON object per line, encoded from these
/// types by `JSONEncoder` (docs/JSON.md describes each). A field without a value is `null`,
/// never left out, so that consumers see the same keys every time.
public enum JSONDocument {
    /// One line of JSON: keys sorted, no pretty-printing, `/` unescaped.
    public static func line<Document: Encodable>(_ document: Document) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every document is made of strings, numbers, booleans and nulls: it always encodes.
        return String(decoding: try! encoder.encode(document), as: UTF8.self)
    }
}

/// An optional field of a document: `null` when it has no value, where synthesized
/// `Encodable` would leave the key out (every document keeps the same keys).
@propertyWrapper
public struct Nullable<Value: Encodable & Sendable>: Encodable, Sendable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}

/// `pgquorum status --json`: the formation as the log derives it.
public struct StatusDocument: Encodable, Sendable {
    public struct Node: Encodable, Sendable {
        var id: UInt32
        var name: String
        var host: String
        var port: UInt16
        var reachedState: String
        var goalState: String
        var goalReason: String
        var health: String
        var timeline: UInt32
        var lsn: String
        @Nullable var lagBytes: UInt64?
        @Nullable var postgresRunning: Bool?
        var candidatePriority: UInt8
        var replicationQuorum: Bool
        @Nullable var pendingRestart: Bool?
        var parameters: [String: String]
        @Nullable var slotRetainedBytes: UInt64?
        var slotLost: Bool

        enum CodingKeys: String, CodingKey {
            case id, name, host, port, health, timeline, lsn, parameters
            case reachedState = "reached_state", goalState = "goal_state", goalReason = "goal_reason", lagBytes = "lag_bytes"
            case postgresRunning = "postgres_running", candidatePriority = "candidate_priority", replicationQuorum = "replication_quorum"
            case pendingRestart = "pending_restart", slotRetainedBytes = "slot_retained_bytes", slotLost = "slot_lost"
        }
    }

    var formation: String
    var appliedIndex: UInt64
    var term: UInt64
    @Nullable var waitingReason: String?
    var nodes: [Node]

    enum CodingKeys: String, CodingKey {
        case formation, term, nodes
        case appliedIndex = "applied_index", waitingReason = "waiting_reason"
    }

    /// The status of `state`, as `pgquorum status --json` prints it.
    public init(_ state: ClusterState) {
        formation = state.formation
        appliedIndex = state.appliedIndex
        term = state.term
        waitingReason = state.waitingReason
        nodes = state.sortedNodes.map { node in
            Node(
                id: node.id, name: node.registration.name, host: node.registration.host, port: node.registration.port,
                reachedState: node.reached.rawValue, goalState: node.goal.rawValue, goalReason: node.goalReason, health: state.healthWord(node),
                timeline: node.timeline, lsn: LSNFormat.format(node.lsn), lagBytes: state.lagBytes(of: node),
                postgresRunning: node.lastReport?.postgresRunning, candidatePriority: node.registration.candidatePriority,
                replicationQuorum: node.registration.replicationQuorum, pendingRestart: node.lastReport?.pendingRestart,
                parameters: state.parameters(for: node.id),
                slotRetainedBytes: state.slotRetainedBytes(of: node).flatMap { $0 == .max ? nil : $0 },
                slotLost: state.slotRetainedBytes(of: node) == .max)
        }
    }
}

