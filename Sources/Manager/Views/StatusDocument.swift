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
        var lagBytes: UInt64?
        var postgresRunning: Bool?
        var candidatePriority: UInt8
        var replicationQuorum: Bool

        enum CodingKeys: String, CodingKey {
            case id, name, host, port, health, timeline, lsn
            case reachedState = "reached_state", goalState = "goal_state", goalReason = "goal_reason", lagBytes = "lag_bytes"
            case postgresRunning = "postgres_running", candidatePriority = "candidate_priority", replicationQuorum = "replication_quorum"
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(name, forKey: .name)
            try container.encode(host, forKey: .host)
            try container.encode(port, forKey: .port)
            try container.encode(reachedState, forKey: .reachedState)
            try container.encode(goalState, forKey: .goalState)
            try container.encode(goalReason, forKey: .goalReason)
            try container.encode(health, forKey: .health)
            try container.encode(timeline, forKey: .timeline)
            try container.encode(lsn, forKey: .lsn)
            try container.encode(lagBytes, forKey: .lagBytes)
            try container.encode(postgresRunning, forKey: .postgresRunning)
            try container.encode(candidatePriority, forKey: .candidatePriority)
            try container.encode(replicationQuorum, forKey: .replicationQuorum)
        }
    }

    var formation: String
    var appliedIndex: UInt64
    var term: UInt64
    var waitingReason: String?
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
                replicationQuorum: node.registration.replicationQuorum)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(formation, forKey: .formation)
        try container.encode(appliedIndex, forKey: .appliedIndex)
        try container.encode(term, forKey: .term)
        try container.encode(waitingReason, forKey: .waitingReason)
        try container.encode(nodes, forKey: .nodes)
    }
}

