/// The binary form of an event record, big-endian throughout:
///
///     version u8 | kind u8 | formation (u16 length + UTF-8) | leader clock u64 | wall time i64
///     | [version 2: request client u64 | sequence u64 | first outstanding sequence u64]
///     | [version 3: has request u8 | (request id as in version 2) | author (u16 length + UTF-8)]
///     | payload (by kind) | CRC32C u32 of everything before it
///
/// A record without a request id or author is written as version 1, and one with a request
/// id only as version 2, so logs written before those existed read the same and encode the
/// same.
/// Decoding verifies the checksum first, then the version, and refuses any field out of its
/// range, any count beyond its maximum and any trailing byte.
extension EventRecord {
    public static let formatVersion: UInt8 = 3
    /// The most node reports one coalesced heartbeat entry carries.
    public static let reportsPerEntryMax = 1024
    /// The longest author a record names ("operator " and a certificate's name).
    public static let authorBytesMax = 128
    /// The most witnesses a membership event lists.
    public static let witnessesMax = 16

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 96)
        let version: UInt8 = author != nil ? 3 : requestID != nil ? 2 : 1
        writer.write(version)
        writer.write(event.kind)
        writer.write(formation)
        writer.write(stamp.leaderClockNanos)
        writer.write(stamp.wallTimeMillis)
        if version == 3 { writer.write(requestID != nil) }
        if let requestID {
            writer.write(requestID.client)
            writer.write(requestID.sequence)
            writer.write(requestID.firstOutstanding)
        }
        if let author { writer.write(author) }
        event.encodePayload(into: &writer)
        writer.appendChecksum()
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = try ByteReader(checksummed: bytes)
        let version = try reader.readUInt8("format version")
        guard (1...Self.formatVersion).contains(version) else { throw .unknownVersion(version, supported: Self.formatVersion) }
        let kind = try reader.readUInt8("event kind")
        let formation = try reader.readString("formation")
        guard !formation.isEmpty else { throw .invalidValue(field: "formation", reason: "empty name") }
        let stamp = LogStamp(leaderClockNanos: try reader.readUInt64("leader clock"), wallTimeMillis: try reader.readInt64("wall time"))
        var requestID: RequestID?
        let hasRequest = version == 3 ? try reader.readBool("has request") : version == 2
        if hasRequest {
            let client = try reader.readUInt64("request client")
            guard client != 0 else { throw .invalidValue(field: "request client", reason: "zero") }
            let sequence = try reader.readUInt64("request sequence")
            let firstOutstanding = try reader.readUInt64("first outstanding sequence")
            guard firstOutstanding <= sequence else {
                throw .invalidValue(field: "first outstanding sequence", reason: "\(firstOutstanding) is past the request's own \(sequence)")
            }
            requestID = RequestID(client: client, sequence: sequence, firstOutstanding: firstOutstanding)
        }
        var author: String?
        if version == 3 {
            let text = try reader.readString("author")
            guard !text.isEmpty, text.utf8.count <= Self.authorBytesMax else {
                throw .invalidValue(field: "author", reason: "\(text.utf8.count) bytes, not 1 to \(Self.authorBytesMax)")
            }
            author = text
        }
        let event = try ClusterEvent.decodePayload(kind: kind, from: &reader)
        try reader.finish()
        self.init(formation: formation, stamp: stamp, event: event, requestID: requestID, author: author)
    }
}

extension EventRecord {
    /// Whether a reader of `formation` (not the default one, whose readers need every entry)
    /// needs this encoded record: one of that formation, or of no formation in particular
    /// (ticks, new terms, membership), as `FormationStates.apply` hands them out. Reads only
    /// the header; a record too short to tell is kept, so that its reader fails on it.
    public static func concerns(_ bytes: [UInt8], formation: String) -> Bool {
        guard bytes.count >= 4, !ClusterEvent.globalKinds.contains(bytes[1]) else { return true }
        let length = Int(bytes[2]) << 8 | Int(bytes[3])
        guard bytes.count >= 4 + length else { return true }
        return bytes[4..<(4 + length)].elementsEqual(formation.utf8)
    }
}

extension ClusterEvent {
    func encodePayload(into writer: inout ByteWriter) {
        switch self {
        case .nodeRegistered(let registration):
            writer.write(registration)
        case .nodeReports(let reports):
            precondition(reports.count <= EventRecord.reportsPerEntryMax, "\(reports.count) reports in one entry")
            writer.write(UInt32(reports.count))
            for report in reports { writer.write(report) }
        case .stateReached(let node, let state):
            writer.write(node)
            writer.write(state.code)
        case .operatorRequest(let request):
            switch request {
            case .switchover(let target):
                writer.write(UInt8(1))
                writer.write(target ?? 0)
            case .maintenance(let node, let enabled):
                writer.write(UInt8(2))
                writer.write(node)
                writer.write(enabled)
            case .dropNode(let node):
                writer.write(UInt8(3))
                writer.write(node)
            case .forceDrop(let node):
                writer.write(UInt8(4))
                writer.write(node)
            case .setCandidatePriority(let node, let priority):
                writer.write(UInt8(5))
                writer.write(node)
                writer.write(priority)
            case .setReplicationQuorum(let node, let enabled):
                writer.write(UInt8(6))
                writer.write(node)
                writer.write(enabled)
            case .setParameter(let name, let value, let node):
                writer.write(UInt8(7))
                writer.write(name)
                writer.write(value != nil)
                writer.write(value ?? "")
                writer.write(node ?? 0)
            case .restartPostgres(let node):
                writer.write(UInt8(8))
                writer.write(node)
            }
        case .settingsChanged(let settings):
            writer.write(settings)
        case .tick:
            break
        case .termStarted(let carried):
            writer.write(carried)
        case .membershipChanged(let members):
            precondition(members.count <= EventRecord.witnessesMax, "\(members.count) witnesses in one event")
            writer.write(members)
        }
    }

    static func decodePayload(kind: UInt8, from reader: inout ByteReader) throws(DecodingError) -> ClusterEvent {
        switch kind {
        case 1:
            return .nodeRegistered(try reader.readRegistration())
        case 2, 8, 10, 11:
            // Kind 2: reports of format 1 (without the primary's view of its standbys), kind 8:
            // format 2 (without when a standby stopped following), kind 10: format 3 (without
            // a pending restart).
            let count = try reader.readCount("report count", maxCount: EventRecord.reportsPerEntryMax)
            var reports: [NodeReport] = []
            reports.reserveCapacity(count)
            let format = kind == 2 ? 1 : kind == 8 ? 2 : kind == 10 ? 3 : 4
            for _ in 0..<count { reports.append(try reader.readReport(format: format)) }
            return .nodeReports(reports)
        case 3:
            return .stateReached(node: try reader.readNodeID("node"), state: try reader.readNodeState())
        case 4:
            return .operatorRequest(try readOperatorRequest(&reader))
        case 5:
            // Kind 5: settings of format 1 (before replication slots).
            return .settingsChanged(try reader.readSettings(format: 1))
        case 12:
            return .settingsChanged(try reader.readSettings(format: 2))
        case 6:
            return .tick
        case 9:
            return .termStarted(carriedNanos: try reader.readUInt64("carried time"))
        case 7:
            return .membershipChanged(try reader.readWitnessMembers())
        default:
            throw .unknownKind(field: "event kind", value: kind)
        }
    }


    private static func readOperatorRequest(_ reader: inout ByteReader) throws(DecodingError) -> OperatorRequest {
        let kind = try reader.readUInt8("operator request")
        switch kind {
        case 1:
            let target = try reader.readUInt32("switchover target")
            return .switchover(target: target == 0 ? nil : target)
        case 2:
            return .maintenance(node: try reader.readNodeID("maintenance node"), enabled: try reader.readBool("maintenance"))
        case 3:
            return .dropNode(node: try reader.readNodeID("dropped node"))
        case 4:
            return .forceDrop(node: try reader.readNodeID("force-dropped node"))
        case 5:
            let node = try reader.readNodeID("node of a candidate priority")
            let priority = try reader.readUInt8("candidate priority")
            guard priority <= NodeRegistration.candidatePriorityMax else {
                throw .invalidValue(field: "candidate priority", reason: "\(priority) is above \(NodeRegistration.candidatePriorityMax)")
            }
            return .setCandidatePriority(node: node, priority: priority)
        case 6:
            return .setReplicationQuorum(node: try reader.readNodeID("node of a replication quorum"), enabled: try reader.readBool("replication quorum"))
        case 7:
            let name = try reader.readString("parameter name")
            guard !name.isEmpty, name.utf8.count <= OperatorRequest.parameterNameMax else {
                throw .invalidValue(field: "parameter name", reason: "\(name.utf8.count) bytes (1 to \(OperatorRequest.parameterNameMax))")
            }
            let hasValue = try reader.readBool("parameter has a value")
            let value = try reader.readString("parameter value")
            guard value.utf8.count <= OperatorRequest.parameterValueMax else {
                throw .invalidValue(field: "parameter value", reason: "\(value.utf8.count) bytes (at most \(OperatorRequest.parameterValueMax))")
            }
            let node = try reader.readUInt32("parameter node")
            return .setParameter(name: name, value: hasValue ? value : nil, node: node == 0 ? nil : node)
        case 8:
            return .restartPostgres(node: try reader.readNodeID("restarted node"))
        default:
            throw .unknownKind(field: "operator request", value: kind)
        }
    }
}

extension NodeState {
    /// The stable byte each state is stored as. Never reorder: append new states at the end.
    static let wireOrder: [NodeState] = [
        .initial, .single, .waitPrimary, .primary, .applySettings, .draining, .demoteTimeout, .demoted,
        .catchingUp, .secondary, .preparePromotion, .stopReplication, .waitStandby, .reportLSN, .fastForward,
        .joinSecondary, .maintenance, .prepareMaintenance, .waitMaintenance, .dropped,
    ]

    public var code: UInt8 { UInt8(Self.wireOrder.firstIndex(of: self)! + 1) }

    public init?(code: UInt8) {
        guard code >= 1, Int(code) <= Self.wireOrder.count else { return nil }
        self = Self.wireOrder[Int(code) - 1]
    }
}

/// The parts of events that other records (the reducer's snapshot) store too.
extension ByteWriter {
    public mutating func write(_ registration: NodeRegistration) {
        write(registration.node)
        write(registration.name)
        write(registration.host)
        write(registration.port)
        write(registration.systemIdentifier)
        write(registration.candidatePriority)
        write(registration.replicationQuorum)
    }

    public mutating func write(_ report: NodeReport) {
        write(report.node)
        write(report.reachedState.code)
        write(report.postgresRunning)
        write(report.timeline)
        write(report.flushLSN)
        write(report.replayLSN)
        write(report.syncState.rawValue)
        write(report.lagBytes)
        write(report.sentAtNanos)
        precondition(report.standbys.count <= NodeReport.standbysMax, "\(report.standbys.count) standbys in one report")
        write(UInt8(report.standbys.count))
        for view in report.standbys {
            write(view.node)
            write(view.streaming)
            write(view.syncState.rawValue)
            write(view.flushLagBytes)
            write(view.replyAgeMillis)
        }
        write(report.followingEndedMillisAgo)
        write(report.pendingRestart)
        precondition(report.slots.count <= NodeReport.standbysMax, "\(report.slots.count) slots in one report")
        write(UInt8(report.slots.count))
        for slot in report.slots {
            write(slot.node)
            write(slot.retainedBytes)
        }
    }

    /// Settings of `format` 2 (the current), or 1 (before `maxSlotWALKeepSizeMB`).
    public mutating func write(_ settings: FormationSettings, format: Int = 2) {
        write(settings.numberSyncStandbys)
        write(settings.strictSyncMode)
        write(settings.heartbeatIntervalMillis)
        write(settings.nodeUnhealthyTimeoutMillis)
        write(settings.postgresRestartTimeoutMillis)
        write(settings.primaryLeaseMillis)
        if format >= 2 { write(settings.maxSlotWALKeepSizeMB) }
    }
}

extension ByteReader {
    public mutating func readNodeID(_ field: String) throws(DecodingError) -> PGNodeID {
        let node = try readUInt32(field)
        guard node != 0 else { throw .invalidValue(field: field, reason: "node id 0") }
        return node
    }

    public mutating func readNodeState(_ field: String = "node state") throws(DecodingError) -> NodeState {
        let code = try readUInt8(field)
        guard let state = NodeState(code: code) else { throw .unknownKind(field: field, value: code) }
        return state
    }

    public mutating func readRegistration() throws(DecodingError) -> NodeRegistration {
        let registration = NodeRegistration(
            node: try readUInt32("registered node"), name: try readString("node name"), host: try readString("node host"),
            port: try readUInt16("node port"), systemIdentifier: try readUInt64("system identifier"),
            candidatePriority: try readUInt8("candidate priority"), replicationQuorum: try readBool("replication quorum"))
        guard registration.candidatePriority <= 100 else {
            throw .invalidValue(field: "candidate priority", reason: "\(registration.candidatePriority) is above 100")
        }
        guard !registration.name.isEmpty, !registration.host.isEmpty, registration.port != 0 else {
            throw .invalidValue(field: "registration", reason: "empty name or host, or port 0")
        }
        return registration
    }

    /// A report of `format` 1, 2 (adds the primary's view of its standbys), 3 (adds when a
    /// standby stopped following) or 4 (adds a pending restart and the node's slots).
    public mutating func readReport(format: Int) throws(DecodingError) -> NodeReport {
        let node = try readNodeID("reporting node")
        let state = try readNodeState()
        let running = try readBool("postgres running")
        let timeline = try readUInt32("timeline")
        let flush = try readUInt64("flush LSN")
        let replay = try readUInt64("replay LSN")
        let syncCode = try readUInt8("sync state")
        guard let sync = SyncState(rawValue: syncCode) else { throw .unknownKind(field: "sync state", value: syncCode) }
        var report = NodeReport(
            node: node, reachedState: state, postgresRunning: running, timeline: timeline, flushLSN: flush, replayLSN: replay,
            syncState: sync, lagBytes: try readUInt64("lag"), sentAtNanos: try readUInt64("report send time"))
        guard format >= 2 else {
            report.standbysKnown = false
            return report
        }
        let count = try readCount8("standby count", maxCount: NodeReport.standbysMax)
        for _ in 0..<count {
            let standby = try readNodeID("standby")
            let streaming = try readBool("standby streaming")
            let code = try readUInt8("standby sync state")
            guard let syncState = SyncState(rawValue: code) else { throw .unknownKind(field: "standby sync state", value: code) }
            report.standbys.append(
                StandbyView(
                    node: standby, streaming: streaming, syncState: syncState, flushLagBytes: try readUInt64("standby flush lag"),
                    replyAgeMillis: try readUInt32("standby reply age")))
        }
        if format >= 3 { report.followingEndedMillisAgo = try readUInt32("following ended") }
        if format >= 4 {
            report.pendingRestart = try readBool("pending restart")
            let slots = try readCount8("slot count", maxCount: NodeReport.standbysMax)
            for _ in 0..<slots {
                report.slots.append(SlotView(node: try readNodeID("slot node"), retainedBytes: try readUInt64("slot retained bytes")))
            }
        }
        return report
    }

    mutating func readCount8(_ field: String, maxCount: Int) throws(DecodingError) -> Int {
        let count = Int(try readUInt8(field))
        guard count <= maxCount else { throw .invalidValue(field: field, reason: "\(count) is above the maximum \(maxCount)") }
        return count
    }

    public mutating func readSettings(format: Int) throws(DecodingError) -> FormationSettings {
        var settings = FormationSettings()
        settings.numberSyncStandbys = try readUInt8("number of sync standbys")
        settings.strictSyncMode = try readBool("strict sync mode")
        settings.heartbeatIntervalMillis = try readUInt32("heartbeat interval")
        settings.nodeUnhealthyTimeoutMillis = try readUInt32("node unhealthy timeout")
        settings.postgresRestartTimeoutMillis = try readUInt32("postgres restart timeout")
        settings.primaryLeaseMillis = try readUInt32("primary lease")
        if format >= 2 { settings.maxSlotWALKeepSizeMB = try readUInt32("max slot WAL keep size") }
        return settings
    }
}
