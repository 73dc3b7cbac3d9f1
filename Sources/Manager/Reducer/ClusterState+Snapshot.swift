import EventLog

/// The Raft snapshot of a formation: the serialized `ClusterState` at an index (DESIGN §3).
/// A reader that falls behind compaction restarts from it and replays the rest.
extension ClusterState {
    /// Version 2 added the highest node id, version 3 the request sessions, version 4 each
    /// node's registration and goal indexes (older snapshots: their nodes count as registered
    /// at index 0, so a waiting node is admitted by the primary's next goal), version 5 the
    /// primary's view of its standbys in reports and since when each standby has not streamed
    /// in that view, version 6 the primary narrowing its quorum and when a standby last stopped
    /// following, version 7 the log time carried from earlier terms, version 8 whether the
    /// primary last took writes without synchronous replication, when each standby last
    /// stopped following, the former lease and unhealthy timeout, and reports of format 3,
    /// version 9 the PostgreSQL parameters (the formation's and each node's), each node's
    /// latest restart request, reports of format 4 and settings of format 2; older snapshots still load.
    public static let snapshotVersion: UInt8 = 9
    /// The most nodes a formation holds.
    public static let nodesMax = 256

    public func snapshotData() -> [UInt8] {
        var writer = ByteWriter(capacity: 256 + nodes.count * 128)
        writer.write(Self.snapshotVersion)
        writer.write(formation)
        writer.write(settings)
        writer.write(appliedIndex)
        writer.write(term)
        writer.write(nowNanos)
        writer.write(waitingReason ?? "")
        writer.write(electionSyncStandbys)
        writer.write(highestNodeID)
        writer.write(requests)
        precondition(nodes.count <= Self.nodesMax, "\(nodes.count) nodes in one formation")
        writer.write(UInt32(nodes.count))
        for node in sortedNodes {
            writer.write(node.registration)
            writer.write(node.reached.code)
            writer.write(node.goal.code)
            writer.write(node.goalReason)
            writer.write(node.lastReport != nil)
            if let report = node.lastReport { writer.write(report) }
            writer.write(node.lastHeardNanos)
            writer.write(node.postgresDownSinceNanos != nil)
            writer.write(node.postgresDownSinceNanos ?? 0)
            writer.write(node.electionLSN != nil)
            writer.write(node.electionLSN ?? 0)
            writer.write(Int64(node.priorityBoost))
            writer.write(node.registeredIndex)
            writer.write(node.goalIndex)
            writer.write(node.unstreamedSinceNanos != nil)
            writer.write(node.unstreamedSinceNanos ?? 0)
            writer.write(node.followingEndedNanos != nil)
            writer.write(node.followingEndedNanos ?? 0)
            writer.writeParameters(node.parameters)
            writer.write(node.restartIndex)
        }
        writer.write(narrowingPrimary ?? 0)
        writer.write(lastStoppedFollowingNanos != nil)
        writer.write(lastStoppedFollowingNanos ?? 0)
        writer.write(clockOffsetNanos)
        writer.write(primaryAcknowledgedAlone)
        writer.write(formerLeaseMillis ?? 0)
        writer.write(formerUnhealthyMillis ?? 0)
        writer.write(formerTimeoutsIndex)
        writer.writeParameters(parameters)
        writer.appendChecksum()
        return writer.bytes
    }

    public init(snapshot bytes: [UInt8]) throws(DecodingError) {
        var reader = try ByteReader(checksummed: bytes)
        let version = try reader.readUInt8("snapshot version")
        guard (1...Self.snapshotVersion).contains(version) else { throw .unknownVersion(version, supported: Self.snapshotVersion) }
        self.init(formation: try reader.readString("formation"))
        settings = try reader.readSettings(format: version >= 9 ? 2 : 1)
        appliedIndex = try reader.readUInt64("applied index")
        term = try reader.readUInt64("term")
        nowNanos = try reader.readUInt64("log time")
        let waiting = try reader.readString("waiting reason")
        waitingReason = waiting.isEmpty ? nil : waiting
        electionSyncStandbys = try reader.readUInt8("election sync standbys")
        if version >= 2 { highestNodeID = try reader.readUInt32("highest node id") }
        if version >= 3 { requests = try reader.readRequestSessions() }
        let count = try reader.readCount("node count", maxCount: Self.nodesMax)
        for _ in 0..<count {
            var node = NodeRecord(registration: try reader.readRegistration())
            guard node.id != 0 else { throw .invalidValue(field: "registered node", reason: "node id 0 in a snapshot") }
            node.reached = try reader.readNodeState("reached state")
            node.goal = try reader.readNodeState("goal state")
            node.goalReason = try reader.readString("goal reason")
            node.lastReport = try reader.readBool("has report") ? try reader.readReport(format: version >= 9 ? 4 : version >= 8 ? 3 : version >= 5 ? 2 : 1) : nil
            node.lastHeardNanos = try reader.readUInt64("last heard")
            let down = try reader.readBool("postgres down")
            let downSince = try reader.readUInt64("postgres down since")
            node.postgresDownSinceNanos = down ? downSince : nil
            let hasElectionLSN = try reader.readBool("has election LSN")
            let electionLSN = try reader.readUInt64("election LSN")
            node.electionLSN = hasElectionLSN ? electionLSN : nil
            node.priorityBoost = Int(try reader.readInt64("priority boost"))
            if version >= 4 {
                node.registeredIndex = try reader.readUInt64("registration index")
                node.goalIndex = try reader.readUInt64("goal index")
            }
            if version >= 5 {
                let unstreamed = try reader.readBool("not streaming")
                let since = try reader.readUInt64("not streaming since")
                node.unstreamedSinceNanos = unstreamed ? since : nil
            }
            if version >= 8 {
                let ended = try reader.readBool("stopped following")
                let endedAt = try reader.readUInt64("stopped following at")
                node.followingEndedNanos = ended ? endedAt : nil
            }
            if version >= 9 {
                node.parameters = try reader.readParameters()
                node.restartIndex = try reader.readUInt64("restart index")
            }
            nodes[node.id] = node
        }
        highestNodeID = max(highestNodeID, nodes.records.last?.id ?? 0)
        if version >= 6 {
            let narrowing = try reader.readUInt32("narrowing primary")
            narrowingPrimary = narrowing == 0 ? nil : narrowing
            let stopped = try reader.readBool("a standby stopped following")
            let stoppedAt = try reader.readUInt64("stopped following at")
            lastStoppedFollowingNanos = stopped ? stoppedAt : nil
            if version < 8, stopped {
                // Before version 8 only the latest time was kept: it stands for every
                // standby now in report_lsn.
                nodes.updateAll { node in if node.reached == .reportLSN { node.followingEndedNanos = stoppedAt } }
            }
        }
        if version >= 7 { clockOffsetNanos = try reader.readUInt64("clock offset") }
        if version >= 8 {
            primaryAcknowledgedAlone = try reader.readBool("primary acknowledged alone")
            let lease = try reader.readUInt32("former lease")
            let unhealthy = try reader.readUInt32("former unhealthy timeout")
            formerLeaseMillis = lease == 0 ? nil : lease
            formerUnhealthyMillis = unhealthy == 0 ? nil : unhealthy
            formerTimeoutsIndex = try reader.readUInt64("former timeouts index")
        }
        if version >= 9 { parameters = try reader.readParameters() }
        try reader.finish()
    }
}

/// The most PostgreSQL parameters one scope (the formation, or a node) holds.
let parametersMax = 4_096

extension ByteWriter {
    /// Parameters sorted by name, so that equal states give equal snapshots.
    mutating func writeParameters(_ parameters: [String: String]) {
        precondition(parameters.count <= parametersMax, "\(parameters.count) parameters")
        write(UInt32(parameters.count))
        for (name, value) in parameters.sorted(by: { $0.key < $1.key }) {
            write(name)
            write(value)
        }
    }
}

extension ByteReader {
    mutating func readParameters() throws(DecodingError) -> [String: String] {
        let count = try readCount("parameter count", maxCount: parametersMax)
        var parameters: [String: String] = [:]
        for _ in 0..<count {
            let name = try readString("parameter name")
            guard !name.isEmpty, parameters[name] == nil else { throw .invalidValue(field: "parameter name", reason: "empty or repeated: \(name)") }
            parameters[name] = try readString("parameter value")
        }
        return parameters
    }
}

/// The cluster states of every formation on one witness quorum, as the witnesses keep them
/// and snapshot them: a snapshot holds every formation, so a manager of any formation that
/// falls behind compaction restarts from it (DESIGN §3).
public struct FormationStates: Sendable, Equatable {
    /// By formation name; the default formation is always there.
    public private(set) var states: [String: ClusterState] = [EventRecord.defaultFormation: ClusterState()]

    /// The first byte of a snapshot of several formations; a snapshot that starts with
    /// anything else is one formation's (`ClusterState.snapshotVersion`, from before).
    static let marker: UInt8 = 0xF0
    /// The most formations one quorum's snapshot holds.
    public static let formationsMax = 4_096

    public init() {}

    public subscript(formation: String) -> ClusterState? { states[formation] }

    /// Applies one committed entry. The default formation sees every entry, as every reader
    /// of it always has; another formation sees its own entries and those of no formation in
    /// particular (ticks, new terms, membership), which carry log time and terms.
    public mutating func apply(_ entry: LogEntry) {
        let formation = entry.record.formation
        if entry.record.event.isGlobal {
            // The states are independent of each other: any order gives the same result.
            for name in states.keys { states[name]!.apply(entry) }
            return
        }
        states[EventRecord.defaultFormation]!.apply(entry)
        guard formation != EventRecord.defaultFormation else { return }
        if states[formation] == nil, states.count < Self.formationsMax { states[formation] = ClusterState(formation: formation) }
        states[formation]?.apply(entry)
    }

    /// The earliest time at which the passage of time alone changes a decision in any
    /// formation, on the current leader's clock.
    public var nextDeadlineStampNanos: UInt64? {
        states.values.compactMap(\.nextDeadlineStampNanos).min()
    }

    /// The shortest heartbeat interval of a formation that has nodes: the witness leader
    /// flushes reports at least that often.
    public var shortestHeartbeatMillis: UInt32? {
        states.values.filter { !$0.sortedNodes.isEmpty }.map(\.settings.heartbeatIntervalMillis).min()
    }

    public func snapshotData() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.marker)
        let names = states.keys.sorted()
        writer.write(UInt32(names.count))
        for name in names {
            writer.writeBlob(states[name]!.snapshotData())
        }
        writer.appendChecksum()
        return writer.bytes
    }

    /// Reads a snapshot of several formations, or of the default one alone (older witnesses).
    public init(snapshot bytes: [UInt8]) throws(DecodingError) {
        guard bytes.first == Self.marker else {
            let state = try ClusterState(snapshot: bytes)
            states = [state.formation: state]
            if states[EventRecord.defaultFormation] == nil { states[EventRecord.defaultFormation] = ClusterState() }
            return
        }
        var reader = try ByteReader(checksummed: bytes)
        _ = try reader.readUInt8("snapshot marker")
        let count = try reader.readCount("formation count", maxCount: Self.formationsMax)
        states = [:]
        for _ in 0..<count {
            let state = try ClusterState(snapshot: try reader.readBlob("formation snapshot", maxCount: bytes.count))
            guard states[state.formation] == nil else { throw .invalidValue(field: "formation", reason: "\(state.formation) twice in a snapshot") }
            states[state.formation] = state
        }
        if states[EventRecord.defaultFormation] == nil { states[EventRecord.defaultFormation] = ClusterState() }
        try reader.finish()
    }
}
