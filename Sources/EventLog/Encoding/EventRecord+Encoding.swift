/// The binary form of an event record (format version 1), big-endian throughout:
///
///     version u8 | kind u8 | formation (u16 length + UTF-8) | leader clock u64 | wall time i64
///     | payload (by kind) | CRC32C u32 of everything before it
///
/// Decoding verifies the checksum first, then the version, and refuses any field out of its
/// range, any count beyond its maximum and any trailing byte.
extension EventRecord {
    public static let formatVersion: UInt8 = 1
    /// The most node reports one coalesced heartbeat entry carries.
    public static let reportsPerEntryMax = 1024
    /// The most witnesses a membership event lists.
    public static let witnessesMax = 16

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 96)
        writer.write(Self.formatVersion)
        writer.write(event.kind)
        writer.write(formation)
        writer.write(stamp.leaderClockNanos)
        writer.write(stamp.wallTimeMillis)
        event.encodePayload(into: &writer)
        writer.appendChecksum()
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = try ByteReader(checksummed: bytes)
        let version = try reader.readUInt8("format version")
        guard version == Self.formatVersion else { throw .unknownVersion(version, supported: Self.formatVersion) }
        let kind = try reader.readUInt8("event kind")
        let formation = try reader.readString("formation")
        guard !formation.isEmpty else { throw .invalidValue(field: "formation", reason: "empty name") }
        let stamp = LogStamp(leaderClockNanos: try reader.readUInt64("leader clock"), wallTimeMillis: try reader.readInt64("wall time"))
        let event = try ClusterEvent.decodePayload(kind: kind, from: &reader)
        try reader.finish()
        self.init(formation: formation, stamp: stamp, event: event)
    }
}

extension ClusterEvent {
    func encodePayload(into writer: inout ByteWriter) {
        switch self {
        case .nodeRegistered(let registration):
            writer.write(registration.node)
            writer.write(registration.name)
            writer.write(registration.host)
            writer.write(registration.port)
            writer.write(registration.systemIdentifier)
            writer.write(registration.candidatePriority)
            writer.write(registration.replicationQuorum)
        case .nodeReports(let reports):
            precondition(reports.count <= EventRecord.reportsPerEntryMax, "\(reports.count) reports in one entry")
            writer.write(UInt32(reports.count))
            for report in reports {
                writer.write(report.node)
                writer.write(report.reachedState.code)
                writer.write(report.postgresRunning)
                writer.write(report.timeline)
                writer.write(report.flushLSN)
                writer.write(report.replayLSN)
                writer.write(report.syncState.rawValue)
                writer.write(report.lagBytes)
                writer.write(report.sentAtNanos)
            }
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
            }
        case .settingsChanged(let settings):
            writer.write(settings.numberSyncStandbys)
            writer.write(settings.strictSyncMode)
            writer.write(settings.heartbeatIntervalMillis)
            writer.write(settings.nodeUnhealthyTimeoutMillis)
            writer.write(settings.postgresRestartTimeoutMillis)
            writer.write(settings.primaryLeaseMillis)
        case .tick:
            break
        case .membershipChanged(let members):
            precondition(members.count <= EventRecord.witnessesMax, "\(members.count) witnesses in one event")
            writer.write(UInt32(members.count))
            for member in members {
                writer.write(member.id)
                writer.write(member.address)
            }
        }
    }

    static func decodePayload(kind: UInt8, from reader: inout ByteReader) throws(DecodingError) -> ClusterEvent {
        switch kind {
        case 1:
            let registration = NodeRegistration(
                node: try readNodeID(&reader, "registered node"), name: try reader.readString("node name"),
                host: try reader.readString("node host"), port: try reader.readUInt16("node port"),
                systemIdentifier: try reader.readUInt64("system identifier"),
                candidatePriority: try reader.readUInt8("candidate priority"),
                replicationQuorum: try reader.readBool("replication quorum"))
            guard registration.candidatePriority <= 100 else {
                throw .invalidValue(field: "candidate priority", reason: "\(registration.candidatePriority) is above 100")
            }
            guard !registration.name.isEmpty, !registration.host.isEmpty, registration.port != 0 else {
                throw .invalidValue(field: "registration", reason: "empty name or host, or port 0")
            }
            return .nodeRegistered(registration)
        case 2:
            let count = try reader.readCount("report count", maxCount: EventRecord.reportsPerEntryMax)
            var reports: [NodeReport] = []
            reports.reserveCapacity(count)
            for _ in 0..<count {
                reports.append(
                    NodeReport(
                        node: try readNodeID(&reader, "reporting node"), reachedState: try readState(&reader),
                        postgresRunning: try reader.readBool("postgres running"), timeline: try reader.readUInt32("timeline"),
                        flushLSN: try reader.readUInt64("flush LSN"), replayLSN: try reader.readUInt64("replay LSN"),
                        syncState: try readSyncState(&reader), lagBytes: try reader.readUInt64("lag"),
                        sentAtNanos: try reader.readUInt64("report send time")))
            }
            return .nodeReports(reports)
        case 3:
            return .stateReached(node: try readNodeID(&reader, "node"), state: try readState(&reader))
        case 4:
            return .operatorRequest(try readOperatorRequest(&reader))
        case 5:
            var settings = FormationSettings()
            settings.numberSyncStandbys = try reader.readUInt8("number of sync standbys")
            settings.strictSyncMode = try reader.readBool("strict sync mode")
            settings.heartbeatIntervalMillis = try reader.readUInt32("heartbeat interval")
            settings.nodeUnhealthyTimeoutMillis = try reader.readUInt32("node unhealthy timeout")
            settings.postgresRestartTimeoutMillis = try reader.readUInt32("postgres restart timeout")
            settings.primaryLeaseMillis = try reader.readUInt32("primary lease")
            return .settingsChanged(settings)
        case 6:
            return .tick
        case 7:
            let count = try reader.readCount("witness count", maxCount: EventRecord.witnessesMax)
            var members: [WitnessMember] = []
            for _ in 0..<count {
                members.append(WitnessMember(id: try reader.readUInt64("witness id"), address: try reader.readString("witness address")))
            }
            return .membershipChanged(members)
        default:
            throw .unknownKind(field: "event kind", value: kind)
        }
    }

    private static func readNodeID(_ reader: inout ByteReader, _ field: String) throws(DecodingError) -> PGNodeID {
        let node = try reader.readUInt32(field)
        guard node != 0 else { throw .invalidValue(field: field, reason: "node id 0") }
        return node
    }

    private static func readState(_ reader: inout ByteReader) throws(DecodingError) -> NodeState {
        let code = try reader.readUInt8("node state")
        guard let state = NodeState(code: code) else { throw .unknownKind(field: "node state", value: code) }
        return state
    }

    private static func readSyncState(_ reader: inout ByteReader) throws(DecodingError) -> SyncState {
        let code = try reader.readUInt8("sync state")
        guard let state = SyncState(rawValue: code) else { throw .unknownKind(field: "sync state", value: code) }
        return state
    }

    private static func readOperatorRequest(_ reader: inout ByteReader) throws(DecodingError) -> OperatorRequest {
        let kind = try reader.readUInt8("operator request")
        switch kind {
        case 1:
            let target = try reader.readUInt32("switchover target")
            return .switchover(target: target == 0 ? nil : target)
        case 2:
            return .maintenance(node: try readNodeID(&reader, "maintenance node"), enabled: try reader.readBool("maintenance"))
        case 3:
            return .dropNode(node: try readNodeID(&reader, "dropped node"))
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

    var code: UInt8 { UInt8(Self.wireOrder.firstIndex(of: self)! + 1) }

    init?(code: UInt8) {
        guard code >= 1, Int(code) <= Self.wireOrder.count else { return nil }
        self = Self.wireOrder[Int(code) - 1]
    }
}
