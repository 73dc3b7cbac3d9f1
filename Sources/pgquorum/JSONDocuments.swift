import EventLog
import Foundation
import Manager

/// The documents every `--json` output prints, one JSON object per line, encoded from these
/// types by `JSONEncoder` (docs/JSON.md describes each). A field without a value is `null`,
/// never left out, so that consumers see the same keys every time.
enum JSONDocument {
    /// One line of JSON: keys sorted, no pretty-printing, `/` unescaped.
    static func line<Document: Encodable>(_ document: Document) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every document is made of strings, numbers, booleans and nulls: it always encodes.
        return String(decoding: try! encoder.encode(document), as: UTF8.self)
    }
}

/// `pgquorum status --json`: the formation as the log derives it.
struct StatusDocument: Encodable {
    struct Node: Encodable {
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

        func encode(to encoder: any Encoder) throws {
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

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(formation, forKey: .formation)
        try container.encode(appliedIndex, forKey: .appliedIndex)
        try container.encode(term, forKey: .term)
        try container.encode(waitingReason, forKey: .waitingReason)
        try container.encode(nodes, forKey: .nodes)
    }
}

/// `pgquorum show uri --json`.
struct URIDocument: Encodable {
    var formation: String
    var uri: String
}

/// `pgquorum show settings --json`: durations in milliseconds.
struct SettingsDocument: Encodable {
    var numberSyncStandbys: UInt8
    var strictSyncMode: Bool
    var heartbeatIntervalMillis: UInt32
    var nodeUnhealthyTimeoutMillis: UInt32
    var postgresRestartTimeoutMillis: UInt32
    var primaryLeaseMillis: UInt32

    init(_ settings: FormationSettings) {
        numberSyncStandbys = settings.numberSyncStandbys
        strictSyncMode = settings.strictSyncMode
        heartbeatIntervalMillis = settings.heartbeatIntervalMillis
        nodeUnhealthyTimeoutMillis = settings.nodeUnhealthyTimeoutMillis
        postgresRestartTimeoutMillis = settings.postgresRestartTimeoutMillis
        primaryLeaseMillis = settings.primaryLeaseMillis
    }

    enum CodingKeys: String, CodingKey {
        case numberSyncStandbys = "number_sync_standbys", strictSyncMode = "strict_sync_mode"
        case heartbeatIntervalMillis = "heartbeat_interval_ms", nodeUnhealthyTimeoutMillis = "node_unhealthy_timeout_ms"
        case postgresRestartTimeoutMillis = "postgres_restart_timeout_ms", primaryLeaseMillis = "primary_lease_ms"
    }
}

/// `pgquorum log --json`: one entry of the log with the decisions it caused.
struct LogEntryDocument: Encodable {
    struct Decision: Encodable {
        var node: UInt32
        var from: String
        var to: String
        var reason: String
    }

    var index: UInt64
    var term: UInt64
    var time: String
    var formation: String
    var kind: String
    var node: UInt32?
    var event: String
    var decisions: [Decision]
    var waiting: String?
    var retryOf: UInt64?
    var by: String?

    enum CodingKeys: String, CodingKey {
        case index, term, time, formation, kind, node, event, decisions, waiting, by
        case retryOf = "retry_of"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encode(term, forKey: .term)
        try container.encode(time, forKey: .time)
        try container.encode(formation, forKey: .formation)
        try container.encode(kind, forKey: .kind)
        try container.encode(node, forKey: .node)
        try container.encode(event, forKey: .event)
        try container.encode(decisions, forKey: .decisions)
        try container.encode(waiting, forKey: .waiting)
        try container.encode(retryOf, forKey: .retryOf)
        try container.encode(by, forKey: .by)
    }
}

/// `pgquorum witness status --json`: one witness's view, or why it could not be asked.
struct WitnessStatusDocument: Encodable {
    struct Member: Encodable {
        var id: UInt64
        var address: String
        var match: UInt64?
        var learner: Bool

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(address, forKey: .address)
            try container.encode(match, forKey: .match)
            try container.encode(learner, forKey: .learner)
        }

        enum CodingKeys: String, CodingKey { case id, address, match, learner }
    }

    var address: String
    var id: UInt64
    var clusterID: String
    var role: String
    var term: UInt64
    var leader: UInt64?
    var commit: UInt64
    var applied: UInt64
    var firstIndex: UInt64
    var lastIndex: UInt64
    var members: [Member]

    init(_ status: WitnessStatus, address: String) {
        self.address = address
        id = status.id
        clusterID = status.clusterID
        role = status.role
        term = status.term
        leader = status.leader
        commit = status.commit
        applied = status.applied
        firstIndex = status.firstIndex
        lastIndex = status.lastIndex
        members = status.members.map { Member(id: $0.id, address: $0.address, match: $0.match, learner: $0.isLearner) }
    }

    enum CodingKeys: String, CodingKey {
        case address, id, role, term, leader, commit, applied, members
        case clusterID = "cluster_id", firstIndex = "first_index", lastIndex = "last_index"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(address, forKey: .address)
        try container.encode(id, forKey: .id)
        try container.encode(clusterID, forKey: .clusterID)
        try container.encode(role, forKey: .role)
        try container.encode(term, forKey: .term)
        try container.encode(leader, forKey: .leader)
        try container.encode(commit, forKey: .commit)
        try container.encode(applied, forKey: .applied)
        try container.encode(firstIndex, forKey: .firstIndex)
        try container.encode(lastIndex, forKey: .lastIndex)
        try container.encode(members, forKey: .members)
    }
}

/// `pgquorum witness status --json` for a witness that did not answer.
struct WitnessErrorDocument: Encodable {
    var address: String
    var error: String
}
