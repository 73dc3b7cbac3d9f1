import EventLog
import Foundation
import Manager

// The documents of the `--json` outputs (docs/JSON.md); `JSONDocument` and `StatusDocument`
// live in Manager, since the node manager's `/cluster` endpoint serves the status too.

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
    var maxSlotWALKeepSizeMB: UInt32

    init(_ settings: FormationSettings) {
        numberSyncStandbys = settings.numberSyncStandbys
        strictSyncMode = settings.strictSyncMode
        heartbeatIntervalMillis = settings.heartbeatIntervalMillis
        nodeUnhealthyTimeoutMillis = settings.nodeUnhealthyTimeoutMillis
        postgresRestartTimeoutMillis = settings.postgresRestartTimeoutMillis
        primaryLeaseMillis = settings.primaryLeaseMillis
        maxSlotWALKeepSizeMB = settings.maxSlotWALKeepSizeMB
    }

    enum CodingKeys: String, CodingKey {
        case numberSyncStandbys = "number_sync_standbys", strictSyncMode = "strict_sync_mode"
        case heartbeatIntervalMillis = "heartbeat_interval_ms", nodeUnhealthyTimeoutMillis = "node_unhealthy_timeout_ms"
        case postgresRestartTimeoutMillis = "postgres_restart_timeout_ms", primaryLeaseMillis = "primary_lease_ms"
        case maxSlotWALKeepSizeMB = "max_slot_wal_keep_size_mb"
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
    @Nullable var node: UInt32?
    var event: String
    var decisions: [Decision]
    @Nullable var waiting: String?
    @Nullable var retryOf: UInt64?
    @Nullable var by: String?

    enum CodingKeys: String, CodingKey {
        case index, term, time, formation, kind, node, event, decisions, waiting, by
        case retryOf = "retry_of"
    }
}

/// `pgquorum witness status --json`: one witness's view, or why it could not be asked.
struct WitnessStatusDocument: Encodable {
    struct Member: Encodable {
        var id: UInt64
        var address: String
        @Nullable var match: UInt64?
        var learner: Bool


        enum CodingKeys: String, CodingKey { case id, address, match, learner }
    }

    var address: String
    var id: UInt64
    var clusterID: String
    var role: String
    var term: UInt64
    @Nullable var leader: UInt64?
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
}

/// `pgquorum witness status --json` for a witness that did not answer.
struct WitnessErrorDocument: Encodable {
    var address: String
    var error: String
}
