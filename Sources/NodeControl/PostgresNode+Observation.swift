/// One row of `pg_stat_replication` on a primary (or cascading standby).
public struct ReplicationPeer: Sendable, Equatable {
    public var applicationName: String
    public var state: String
    public var syncState: String
    public var flushLSN: UInt64?
    public var replayLSN: UInt64?
    /// Bytes of WAL between our current position and the peer's replay position.
    public var lagBytes: UInt64?
    /// Milliseconds since the peer's last reply, on this server's clock (nil before the first).
    public var replyAgeMillis: UInt64?
    /// Milliseconds since the peer connected (`backend_start`), on this server's clock.
    public var connectedMillis: UInt64?

    public init(
        applicationName: String, state: String, syncState: String, flushLSN: UInt64? = nil, replayLSN: UInt64? = nil, lagBytes: UInt64? = nil,
        replyAgeMillis: UInt64? = nil, connectedMillis: UInt64? = nil
    ) {
        self.connectedMillis = connectedMillis
        self.applicationName = applicationName
        self.state = state
        self.syncState = syncState
        self.flushLSN = flushLSN
        self.replayLSN = replayLSN
        self.lagBytes = lagBytes
        self.replyAgeMillis = replyAgeMillis
    }
}

/// `pg_stat_wal_receiver` on a standby.
public struct WALReceiver: Sendable, Equatable {
    public var status: String
    public var senderHost: String?
    public var senderPort: Int?
    public var receivedTimeline: UInt32?
    public var flushedLSN: UInt64?
}

/// What the manager observes of its postgres on each loop.
public struct PostgresObservation: Sendable, Equatable {
    public var inRecovery: Bool
    public var timeline: UInt32
    /// The primary's current write position; on a standby, the last received position.
    public var currentLSN: UInt64
    /// WAL flushed to disk (primary), or received and flushed (standby).
    public var flushLSN: UInt64
    /// WAL replayed (standby); equal to `flushLSN` on a primary.
    public var replayLSN: UInt64
    public var systemIdentifier: UInt64
    public var defaultTransactionReadOnly: Bool
    public var synchronousStandbyNames: String
    public var replication: [ReplicationPeer]
    public var walReceiver: WALReceiver?
    /// Parameters changed in the files that take effect only at a restart
    /// (`pg_settings.pending_restart`), by name.
    public var pendingRestart: [String] = []
    /// pgquorum's physical replication slots (`pgquorum_*`) on this node.
    public var slots: [ReplicationSlot] = []
}

/// One physical replication slot (`pg_replication_slots`).
public struct ReplicationSlot: Sendable, Equatable {
    public var name: String
    /// The oldest WAL it holds; nil when it reserves none (or lost it: `walStatus` "lost").
    public var restartLSN: UInt64?
    /// A WAL sender streams through it now.
    public var active: Bool
    /// `reserved`, `extended`, `unreserved` or `lost` (beyond `max_slot_wal_keep_size`).
    public var walStatus: String

    public init(name: String, restartLSN: UInt64?, active: Bool, walStatus: String) {
        self.name = name
        self.restartLSN = restartLSN
        self.active = active
        self.walStatus = walStatus
    }
}

extension PostgresNode {
    /// Reads the node's role, timeline, positions and replication status in one connection,
    /// the one kept from the last observation if it still works (a new one otherwise: the
    /// kept one fails once after postgres restarted). Concurrent observations each use their
    /// own; one connection is kept.
    public func observe() throws(NodeControlError) -> PostgresObservation {
        let operation = "observe \(dataDirectory)"
        if let kept = observationConnection.withLock({ $0.take() })?.connection {
            if let observation = try? observe(on: kept) {
                keepObservationConnection(kept)
                return observation
            }
            kept.close()
        }
        let connection = try connect(operation)
        do {
            let observation = try observe(on: connection)
            keepObservationConnection(connection)
            return observation
        } catch {
            connection.close()
            throw .postgres(operation: operation, error: error)
        }
    }

    private func keepObservationConnection(_ connection: PostgresConnection) {
        let offered = KeptConnection(connection)
        let extra = observationConnection.withLock { kept -> KeptConnection? in
            if kept == nil {
                kept = offered
                return nil
            }
            return offered
        }
        extra?.connection.close()
    }

    /// Closes the kept observation connection (postgres is being stopped).
    func dropObservationConnection() {
        observationConnection.withLock { $0.take() }?.connection.close()
    }
}

/// A connection parked between uses. Whoever takes it out of its mutex is its only user until
/// it puts it back (a libpq connection is used by one thread at a time, not shared).
final class KeptConnection: @unchecked Sendable {
    let connection: PostgresConnection

    init(_ connection: PostgresConnection) {
        self.connection = connection
    }
}

extension PostgresNode {

    /// What an observation asks, in one round trip (`PostgresConnection.queries`): an
    /// observation every heartbeat, five round trips each, woke the manager and postgres five
    /// times instead of once.
    private static let observationStatements = [
        """
        SELECT pg_is_in_recovery(), system_identifier::text, current_setting('default_transaction_read_only'),
               current_setting('synchronous_standby_names'),
               (SELECT timeline_id FROM pg_control_checkpoint()),
               (SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM pg_settings WHERE pending_restart)
        FROM pg_control_system()
        """,
        """
        SELECT slot_name, restart_lsn::text, active, coalesce(wal_status, '') FROM pg_replication_slots
        WHERE slot_type = 'physical' AND slot_name LIKE 'pgquorum\\_%' ORDER BY slot_name
        """,
        // A standby's positions, or a primary's: the functions of the other kind are not
        // called (a primary's fail during recovery).
        """
        SELECT pg_is_in_recovery(),
               CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text END,
               CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END,
               CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END,
               CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_flush_lsn()::text END,
               CASE WHEN NOT pg_is_in_recovery() THEN substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END
        """,
        walReceiverStatement,
        replicationPeersStatement,
    ]

    private func observe(on connection: PostgresConnection) throws(PostgresError) -> PostgresObservation {
        let results = try connection.queries(Self.observationStatements)
        let row = results[0].rows[0]
        let inRecovery = row[0] == "t"
        var observation = PostgresObservation(
            inRecovery: inRecovery, timeline: UInt32(row[4] ?? "") ?? 0, currentLSN: 0, flushLSN: 0, replayLSN: 0,
            systemIdentifier: UInt64(row[1] ?? "") ?? 0, defaultTransactionReadOnly: row[2] == "on",
            synchronousStandbyNames: row[3] ?? "", replication: [], walReceiver: nil)
        observation.pendingRestart = (row[5] ?? "").split(separator: ",").map(String.init)
        observation.slots = results[1].rows.map { row in
            ReplicationSlot(name: row[0] ?? "", restartLSN: row[1].flatMap(LSNFormat.parse), active: row[2] == "t", walStatus: row[3] ?? "")
        }
        let positions = results[2].rows[0]
        guard (positions[0] == "t") == inRecovery else {
            // Promoted between the statements: the next observation sees it whole.
            throw .unexpectedResult(
                target: connection.options.description, query: Self.observationStatements[2], message: "postgres left recovery during the observation")
        }
        if inRecovery {
            observation.replayLSN = positions[2].flatMap(LSNFormat.parse) ?? 0
            observation.flushLSN = positions[1].flatMap(LSNFormat.parse) ?? observation.replayLSN
            observation.currentLSN = observation.flushLSN
            observation.walReceiver = Self.walReceiver(results[3])
            if let timeline = observation.walReceiver?.receivedTimeline, timeline > observation.timeline {
                observation.timeline = timeline
            }
        } else {
            observation.currentLSN = positions[3].flatMap(LSNFormat.parse) ?? 0
            observation.flushLSN = positions[4].flatMap(LSNFormat.parse) ?? 0
            observation.replayLSN = observation.flushLSN
            observation.timeline = positions[5].flatMap { UInt32($0, radix: 16) } ?? observation.timeline
        }
        observation.replication = Self.replicationPeers(results[4])
        return observation
    }

    private static let replicationPeersStatement = """
        SELECT application_name, state, sync_state, flush_lsn::text, replay_lsn::text,
               pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                               replay_lsn)::bigint,
               (extract(epoch FROM clock_timestamp() - reply_time) * 1000)::bigint,
               (extract(epoch FROM clock_timestamp() - backend_start) * 1000)::bigint
        FROM pg_stat_replication ORDER BY application_name
        """

    private static func replicationPeers(_ result: PostgresResult) -> [ReplicationPeer] {
        result.rows.map { row in
            ReplicationPeer(
                applicationName: row[0] ?? "", state: row[1] ?? "", syncState: row[2] ?? "",
                flushLSN: row[3].flatMap(LSNFormat.parse), replayLSN: row[4].flatMap(LSNFormat.parse),
                lagBytes: row[5].flatMap { Int64($0) }.map { UInt64(max(0, $0)) },
                replyAgeMillis: row[6].flatMap { Int64($0) }.map { UInt64(max(0, $0)) },
                connectedMillis: row[7].flatMap { Int64($0) }.map { UInt64(max(0, $0)) })
        }
    }

    /// Whether postgres is in recovery, and its `pg_stat_replication`, in one short
    /// connection: what the lease check asks once the lease ran out.
    public func replicationStatus() throws(NodeControlError) -> (inRecovery: Bool, peers: [ReplicationPeer]) {
        try withConnection("read the replication status of \(dataDirectory)") { connection throws(PostgresError) in
            let inRecovery = try connection.scalar("SELECT pg_is_in_recovery()") == "t"
            return (inRecovery, Self.replicationPeers(try connection.query(Self.replicationPeersStatement)))
        }
    }

    private static let walReceiverStatement = "SELECT status, sender_host, sender_port, received_tli, flushed_lsn::text FROM pg_stat_wal_receiver"

    private static func walReceiver(_ result: PostgresResult) -> WALReceiver? {
        guard let row = result.rows.first else { return nil }
        return WALReceiver(
            status: row[0] ?? "", senderHost: row[1], senderPort: row[2].flatMap { Int($0) },
            receivedTimeline: row[3].flatMap { UInt32($0) }, flushedLSN: row[4].flatMap(LSNFormat.parse))
    }
}
