/// A PostgreSQL node's id within a formation, assigned at registration. Zero is never valid.
public typealias PGNodeID = UInt32

/// A write-ahead log position (`pg_lsn`) as a 64-bit number.
public typealias LSN = UInt64

/// One fact appended to the event log (DESIGN §3). Goal states are never written: every
/// reader derives them by replaying these.
public enum ClusterEvent: Sendable, Equatable {
    /// A node manager registered a PostgreSQL instance at `pgquorum node create`.
    case nodeRegistered(NodeRegistration)
    /// The witness leader's coalesced heartbeats: the latest report of every node heard since
    /// the last tick.
    case nodeReports([NodeReport])
    /// A node manager reached a state.
    case stateReached(node: PGNodeID, state: NodeState)
    /// An operator asked for something through the CLI.
    case operatorRequest(OperatorRequest)
    /// An operator changed the formation's settings.
    case settingsChanged(FormationSettings)
    /// Nothing happened for a tick; the entry only advances log time.
    case tick
    /// A new witness leader's first entry: at most how long ago the last entry of an earlier
    /// term that it holds was stamped (measured on its own monotonic clock from when it stored
    /// that entry, which is later), so that log time carries on across the leader change
    /// instead of restarting (DESIGN §4).
    case termStarted(carriedNanos: UInt64)
    /// The set of witnesses changed (mirrors a Raft membership change, for display).
    case membershipChanged([WitnessMember])

    /// The kind byte on the wire and on disk.
    var kind: UInt8 {
        switch self {
        case .nodeRegistered: return 1
        case .nodeReports: return 11
        case .stateReached: return 3
        case .operatorRequest: return 4
        case .settingsChanged: return 12
        case .tick: return 6
        case .termStarted: return 9
        case .membershipChanged: return 7
        }
    }

    /// A change only an operator may ask for; the log records who asked.
    public var isOperatorChange: Bool {
        switch self {
        case .operatorRequest, .settingsChanged: return true
        case .nodeRegistered, .nodeReports, .stateReached, .tick, .termStarted, .membershipChanged: return false
        }
    }

    /// Events of no formation in particular (they carry log time, terms and membership):
    /// every formation's state applies them, and every formation's reader needs them.
    public var isGlobal: Bool { Self.globalKinds.contains(kind) }

    /// The kind bytes of the events that are `isGlobal`, for readers of encoded records.
    static let globalKinds: Set<UInt8> = [ClusterEvent.tick.kind, ClusterEvent.termStarted(carriedNanos: 0).kind, ClusterEvent.membershipChanged([]).kind]

    /// The short name `pgquorum log` shows and filters by.
    public var kindName: String {
        switch self {
        case .nodeRegistered: return "node-registered"
        case .nodeReports: return "node-reports"
        case .stateReached: return "state-reached"
        case .operatorRequest: return "operator-request"
        case .settingsChanged: return "settings-changed"
        case .tick: return "tick"
        case .termStarted: return "term-started"
        case .membershipChanged: return "membership-changed"
        }
    }
}

/// What a node manager registers about its PostgreSQL instance.
public struct NodeRegistration: Sendable, Equatable {
    /// The node's id; 0 in a registration asks the formation for the next free id.
    public var node: PGNodeID
    public var name: String
    public var host: String
    public var port: UInt16
    /// `pg_control_system().system_identifier`: every node of a formation shares it.
    public var systemIdentifier: UInt64
    /// 0 never becomes primary; higher wins elections (pg_auto_failover's default is 50).
    public var candidatePriority: UInt8
    /// Whether this node counts in `synchronous_standby_names` (false: asynchronous standby).
    public var replicationQuorum: Bool
    /// The highest candidate priority (pg_auto_failover's range, 0–100).
    public static let candidatePriorityMax: UInt8 = 100

    public init(
        node: PGNodeID, name: String, host: String, port: UInt16, systemIdentifier: UInt64,
        candidatePriority: UInt8 = 50, replicationQuorum: Bool = true
    ) {
        self.node = node
        self.name = name
        self.host = host
        self.port = port
        self.systemIdentifier = systemIdentifier
        self.candidatePriority = candidatePriority
        self.replicationQuorum = replicationQuorum
    }
}

/// How a standby replicates, as `pg_stat_replication.sync_state` says on its primary.
public enum SyncState: UInt8, Sendable, Equatable, CaseIterable {
    case unknown = 0
    case async = 1
    case potential = 2
    case sync = 3
    case quorum = 4
}

/// A primary's view of one standby, from its `pg_stat_replication` (a report carries one per
/// standby): it shows a link that is cut one way, which the standby's own reports cannot.
public struct StandbyView: Sendable, Equatable {
    public var node: PGNodeID
    /// The WAL sender is in state `streaming`.
    public var streaming: Bool
    public var syncState: SyncState
    /// Bytes of WAL the standby has not flushed yet.
    public var flushLagBytes: UInt64
    /// Milliseconds since the standby last replied (`UInt32.max`: never).
    public var replyAgeMillis: UInt32

    public init(node: PGNodeID, streaming: Bool, syncState: SyncState, flushLagBytes: UInt64, replyAgeMillis: UInt32) {
        self.node = node
        self.streaming = streaming
        self.syncState = syncState
        self.flushLagBytes = flushLagBytes
        self.replyAgeMillis = replyAgeMillis
    }
}

/// A node's replication slot for another node.
public struct SlotView: Sendable, Equatable {
    public var node: PGNodeID
    /// Bytes of WAL between the node's current position and the slot's; `UInt64.max` when
    /// the slot lost its WAL (past `max_slot_wal_keep_size`) or reserves none.
    public var retainedBytes: UInt64

    public init(node: PGNodeID, retainedBytes: UInt64) {
        self.node = node
        self.retainedBytes = retainedBytes
    }
}

/// One node's heartbeat: what its manager last observed of its postgres.
public struct NodeReport: Sendable, Equatable {
    public var node: PGNodeID
    public var reachedState: NodeState
    public var postgresRunning: Bool
    /// The postgres timeline (a *timeline* is not a Raft *term*).
    public var timeline: UInt32
    public var flushLSN: LSN
    public var replayLSN: LSN
    public var syncState: SyncState
    /// Replication lag behind the primary, in bytes (zero on the primary).
    public var lagBytes: UInt64
    /// When the manager sent the report, on its own monotonic clock (nanoseconds). The
    /// primary's lease runs from the send time of its last committed report (DESIGN §5).
    public var sentAtNanos: UInt64
    /// A primary's view of its standbys (empty for a standby, and in reports of format 1).
    public var standbys: [StandbyView] = []
    /// Whether `standbys` is the primary's view (reports of format 1 have none to give).
    public var standbysKnown = true
    /// A standby that stopped following its primary to report its LSN: how long before this
    /// report was sent its WAL receiver was last possibly connected, as its manager watched it
    /// without a gap (`ReceiverWatch`); `UInt32.max` when it cannot say (and in reports of
    /// formats 1 and 2). A primary that died took its connections with it: the standby's last
    /// reply to it is then older than the election, and the new primary need not wait for it
    /// to age (DESIGN §5 rule 1).
    public var followingEndedMillisAgo = UInt32.max
    /// Postgres runs with a parameter changed in its files that takes effect only at a
    /// restart (`pg_settings.pending_restart`; reports of format 4).
    public var pendingRestart = false
    /// The replication slots this node keeps for the other nodes: how much WAL each holds
    /// back (reports of format 4).
    public var slots: [SlotView] = []
    /// The most standby views one report carries.
    public static let standbysMax = 64

    public init(
        node: PGNodeID, reachedState: NodeState, postgresRunning: Bool, timeline: UInt32 = 0, flushLSN: LSN = 0,
        replayLSN: LSN = 0, syncState: SyncState = .unknown, lagBytes: UInt64 = 0, sentAtNanos: UInt64 = 0
    ) {
        self.node = node
        self.reachedState = reachedState
        self.postgresRunning = postgresRunning
        self.timeline = timeline
        self.flushLSN = flushLSN
        self.replayLSN = replayLSN
        self.syncState = syncState
        self.lagBytes = lagBytes
        self.sentAtNanos = sentAtNanos
    }
}

/// What an operator can ask for through the CLI.
public enum OperatorRequest: Sendable, Equatable {
    /// A planned switchover, to `target` or to the best candidate.
    case switchover(target: PGNodeID?)
    /// Put a node into maintenance (`true`) or take it out (`false`).
    case maintenance(node: PGNodeID, enabled: Bool)
    /// Remove a node from the formation.
    case dropNode(node: PGNodeID)
    /// Remove a node at once, without waiting for its manager (gone for good) to report it
    /// stopped. Refused for a primary whose lease may still run.
    case forceDrop(node: PGNodeID)
    /// Change a node's candidate priority (0: never promoted; 1–100, higher wins elections).
    case setCandidatePriority(node: PGNodeID, priority: UInt8)
    /// Count a node in `synchronous_standby_names` and in elections' quorum (`true`), or make
    /// it an asynchronous standby (`false`).
    case setReplicationQuorum(node: PGNodeID, enabled: Bool)
    /// Set a PostgreSQL parameter (`value` nil: reset it to what postgres would use without
    /// pgquorum), for every node or, with `node`, for that node alone.
    case setParameter(name: String, value: String?, node: PGNodeID?)
    /// Restart a standby's postgres (for parameters that take effect only at a restart);
    /// refused for the primary, which switches over first (`pgquorum pg restart --rolling`).
    case restartPostgres(node: PGNodeID)

    /// The longest parameter name and value a request may carry, in bytes.
    public static let parameterNameMax = 256
    public static let parameterValueMax = 8_192
}

/// The formation's tunables, changed only through the log so every reader agrees on them.
/// Durations are in milliseconds of log time (DESIGN §4).
public struct FormationSettings: Sendable, Equatable {
    /// `k` in `synchronous_standby_names = 'ANY k (…)'`; 0 turns synchronous replication off.
    public var numberSyncStandbys: UInt8 = 1
    /// Strict mode keeps writes waiting when too few standbys are left; availability mode (the
    /// default) drops to `wait_primary` and lets writes through.
    public var strictSyncMode: Bool = false
    /// How often node managers report.
    public var heartbeatIntervalMillis: UInt32 = 300
    /// A node with no committed report for this long is unhealthy.
    public var nodeUnhealthyTimeoutMillis: UInt32 = 1_500
    /// A node whose reports say postgres is down for this long is unhealthy.
    public var postgresRestartTimeoutMillis: UInt32 = 5_000
    /// How long the primary keeps writing after its last committed report (< unhealthy timeout).
    public var primaryLeaseMillis: UInt32 = 1_000
    /// The most WAL, in MB, a node's replication slot for another node may hold back
    /// (`max_slot_wal_keep_size`), so that a standby that is gone for good cannot fill the disk;
    /// 0: no limit. Past it the slot is given up, and the standby is cloned again when it
    /// returns. (Settings of format 1, before slots, read as the default.)
    public var maxSlotWALKeepSizeMB: UInt32 = 4_096

    public init() {}

    /// Checks the relations DESIGN §5 needs between the timeouts.
    /// How long after a primary's lease ends its manager's watchdog kills postgres when the
    /// manager stopped renewing it (frozen): a node is declared unhealthy only after that.
    public static let watchdogGraceMillis: UInt32 = 500

    public func validate() throws(SettingsError) {
        guard heartbeatIntervalMillis > 0 else { throw SettingsError("heartbeat interval must be positive") }
        guard primaryLeaseMillis > heartbeatIntervalMillis else {
            throw SettingsError("primary lease (\(primaryLeaseMillis) ms) must exceed the heartbeat interval (\(heartbeatIntervalMillis) ms)")
        }
        // A margin for clock-rate drift between the primary and the witness leader.
        guard UInt64(primaryLeaseMillis) * 5 <= UInt64(nodeUnhealthyTimeoutMillis) * 4 else {
            throw SettingsError(
                "primary lease (\(primaryLeaseMillis) ms) must be at most 80% of the node unhealthy timeout (\(nodeUnhealthyTimeoutMillis) ms)")
        }
        guard UInt64(primaryLeaseMillis) + UInt64(Self.watchdogGraceMillis) <= UInt64(nodeUnhealthyTimeoutMillis) else {
            throw SettingsError(
                "primary lease (\(primaryLeaseMillis) ms) plus the watchdog's grace (\(Self.watchdogGraceMillis) ms) must not exceed the node unhealthy timeout (\(nodeUnhealthyTimeoutMillis) ms)")
        }
    }
}

/// Settings that cannot work together.
public struct SettingsError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One witness of the control plane.
public struct WitnessMember: Sendable, Equatable {
    public var id: UInt64
    public var address: String

    public init(id: UInt64, address: String) {
        self.id = id
        self.address = address
    }
}

/// When the witness leader appended an event.
public struct LogStamp: Sendable, Equatable {
    /// The leader's monotonic clock in nanoseconds since its term began: durations are
    /// measured only between stamps of the same Raft term (DESIGN §4).
    public var leaderClockNanos: UInt64
    /// The leader's wall clock in milliseconds since 1970, for display only.
    public var wallTimeMillis: Int64

    public init(leaderClockNanos: UInt64, wallTimeMillis: Int64) {
        self.leaderClockNanos = leaderClockNanos
        self.wallTimeMillis = wallTimeMillis
    }
}

/// The payload of one Raft entry: an event of one formation, stamped by the leader.
public struct EventRecord: Sendable, Equatable {
    public static let defaultFormation = "default"

    public var formation: String
    public var stamp: LogStamp
    public var event: ClusterEvent
    /// Who asked for this entry, so that a retried request is applied once; nil for entries
    /// the witnesses write themselves (reports, ticks) and for older clients.
    public var requestID: RequestID?
    /// Who asked, for the changes operators make (`ClusterEvent.isOperatorChange`, and the
    /// mirror of a witness membership change): the holder its certificate names ("operator
    /// alice"), written by the witness that took the request, never by the client. Nil for
    /// everything else and in older logs.
    public var author: String?

    public init(
        formation: String = EventRecord.defaultFormation, stamp: LogStamp, event: ClusterEvent, requestID: RequestID? = nil, author: String? = nil
    ) {
        self.formation = formation
        self.stamp = stamp
        self.event = event
        self.requestID = requestID
        self.author = author
    }
}

/// An event record with its place in the log.
public struct LogEntry: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var record: EventRecord

    public init(index: UInt64, term: UInt64, record: EventRecord) {
        self.index = index
        self.term = term
        self.record = record
    }
}
