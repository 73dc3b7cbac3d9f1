import Raft
import Testing

@testable import EventLog

/// One record of every event kind, with values at the edges of their ranges.
let sampleRecords: [EventRecord] = {
    let stamp = LogStamp(leaderClockNanos: 1_234_567_890, wallTimeMillis: 1_795_000_000_000)
    var settings = FormationSettings()
    settings.numberSyncStandbys = 2
    settings.strictSyncMode = true
    var withViews = NodeReport(node: 3, reachedState: .reportLSN, postgresRunning: true, timeline: 2, flushLSN: 77, sentAtNanos: 5)
    withViews.standbys = [StandbyView(node: 2, streaming: false, syncState: .quorum, flushLagBytes: .max, replyAgeMillis: .max)]
    withViews.followingEndedMillisAgo = 2_750
    withViews.pendingRestart = true
    withViews.slots = [SlotView(node: 1, retainedBytes: 1 << 30), SlotView(node: 2, retainedBytes: .max)]
    let events: [ClusterEvent] = [
        .nodeRegistered(NodeRegistration(node: 1, name: "node-1", host: "10.0.0.1", port: 5432, systemIdentifier: .max, candidatePriority: 100, replicationQuorum: false)),
        .nodeReports([]),
        .nodeReports([
            NodeReport(node: 1, reachedState: .primary, postgresRunning: true, timeline: 3, flushLSN: 0x1_0000_0028, replayLSN: 0, syncState: .unknown, lagBytes: 0, sentAtNanos: 99),
            NodeReport(node: .max, reachedState: .secondary, postgresRunning: false, timeline: .max, flushLSN: .max, replayLSN: .max, syncState: .quorum, lagBytes: .max, sentAtNanos: .max),
        ]),
        .nodeReports([withViews]),
        .stateReached(node: 2, state: .waitPrimary),
        .operatorRequest(.switchover(target: nil)),
        .operatorRequest(.switchover(target: 3)),
        .operatorRequest(.maintenance(node: 2, enabled: true)),
        .operatorRequest(.dropNode(node: 4)),
        .operatorRequest(.forceDrop(node: 5)),
        .operatorRequest(.setCandidatePriority(node: 6, priority: 0)),
        .operatorRequest(.setCandidatePriority(node: 6, priority: 100)),
        .operatorRequest(.setReplicationQuorum(node: 7, enabled: false)),
        .operatorRequest(.setParameter(name: "work_mem", value: "64MB", node: nil)),
        .operatorRequest(.setParameter(name: "log_min_duration_statement", value: "", node: 3)),
        .operatorRequest(.setParameter(name: "search_path", value: nil, node: nil)),
        .settingsChanged(settings),
        .tick,
        .termStarted(carriedNanos: 1_234_567_890),
        .membershipChanged([WitnessMember(id: 1, address: "127.0.0.1:7001"), WitnessMember(id: 2, address: "[::1]:7002")]),
    ]
    return events.map { EventRecord(formation: "default", stamp: stamp, event: $0) }
        + [EventRecord(formation: "formation-é", stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: -1), event: .tick)]
}()

@Suite("event records")
struct EventRecordTests {
    @Test("every kind encodes and decodes to itself")
    func roundTrip() throws {
        for record in sampleRecords {
            #expect(try EventRecord(decoding: record.encoded()) == record)
        }
    }

    @Test("reports of formats 2 and 3 (kinds 8 and 10, before standbys said when they stopped following, and before pending restarts) still decode")
    func reportsOfFormat2() throws {
        let report = NodeReport(node: 2, reachedState: .reportLSN, postgresRunning: true, timeline: 4, flushLSN: 42, sentAtNanos: 7)
        let current = EventRecord(formation: "default", stamp: LogStamp(leaderClockNanos: 1, wallTimeMillis: 2), event: .nodeReports([report]))
            .encoded()
        // Format 3 is format 4 without its last fields (2 bytes before the checksum: no pending
        // restart, no slots).
        var format3 = ByteWriter()
        for (index, byte) in current.dropLast(6).enumerated() { format3.write(index == 1 ? UInt8(10) : byte) }
        format3.appendChecksum()
        #expect(try EventRecord(decoding: format3.bytes).event == .nodeReports([report]))
        // Format 2 is format 3 without its last field (4 more bytes).
        var writer = ByteWriter()
        for (index, byte) in current.dropLast(10).enumerated() { writer.write(index == 1 ? UInt8(8) : byte) }
        writer.appendChecksum()
        let decoded = try EventRecord(decoding: writer.bytes)
        guard case .nodeReports(let reports) = decoded.event else {
            Issue.record("decoded \(decoded.event)")
            return
        }
        #expect(reports == [report])
        #expect(reports.first?.followingEndedMillisAgo == UInt32.max)
        let kinds = Set(sampleRecords.map(\.event.kindName))
        #expect(kinds == ["node-registered", "node-reports", "state-reached", "operator-request", "settings-changed", "tick", "term-started", "membership-changed"])
        for state in NodeState.allCases {
            let record = EventRecord(stamp: LogStamp(leaderClockNanos: 1, wallTimeMillis: 1), event: .stateReached(node: 1, state: state))
            #expect(try EventRecord(decoding: record.encoded()) == record)
        }
    }

    @Test("the byte layout of a tick is pinned: version, kind, formation, clocks, CRC32C")
    func pinnedLayout() {
        let record = EventRecord(formation: "f", stamp: LogStamp(leaderClockNanos: 2, wallTimeMillis: 3), event: .tick)
        let bytes = record.encoded()
        let body: [UInt8] = [1, 6, 0, 1, 0x66, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
        #expect(bytes == body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) })
    }

    @Test("CRC32C matches the standard check value")
    func crcCheckValue() {
        // The CRC-32C of "123456789" is 0xE3069283 (RFC 3720, appendix B.4).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        let long = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(CRC32C.checksum(Array(long[500...]), continuing: CRC32C.checksum(Array(long[..<500]))) == CRC32C.checksum(long))
    }

    @Test("a record with a request id round-trips as version 2; one without stays version 1")
    func requestIDs() throws {
        var record = sampleRecords[0]
        #expect(record.encoded()[0] == 1)
        record.requestID = RequestID(client: 0xfeed, sequence: 42, firstOutstanding: 40)
        let bytes = record.encoded()
        #expect(bytes[0] == 2)
        #expect(try EventRecord(decoding: bytes) == record)
        // Client 0 is never valid: a zero there is corruption, not "no id".
        var zero = bytes
        for offset in 0..<8 { zero[2 + 2 + record.formation.utf8.count + 16 + offset] = 0 }
        let body = Array(zero.dropLast(4))
        zero = body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) }
        #expect(throws: DecodingError.invalidValue(field: "request client", reason: "zero")) { try EventRecord(decoding: zero) }
    }

    @Test("a record with an author round-trips as version 3, with or without a request id; an empty author is refused")
    func authors() throws {
        var record = sampleRecords[0]
        record.author = "operator alice"
        #expect(record.encoded()[0] == 3)
        #expect(try EventRecord(decoding: record.encoded()) == record)
        record.requestID = RequestID(client: 7, sequence: 3, firstOutstanding: 2)
        #expect(record.encoded()[0] == 3)
        #expect(try EventRecord(decoding: record.encoded()) == record)
        record.author = ""
        #expect(throws: DecodingError.invalidValue(field: "author", reason: "0 bytes, not 1 to 128")) { try EventRecord(decoding: record.encoded()) }
    }

    @Test("an unknown version, a flipped bit, a short record each give a typed error")
    func typedErrors() {
        var bytes = sampleRecords[0].encoded()
        var future = bytes
        future[0] = 4
        let body = Array(future.dropLast(4))
        future = body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) }
        #expect(throws: DecodingError.unknownVersion(4, supported: 3)) { try EventRecord(decoding: future) }
        bytes[10] ^= 0x04
        #expect {
            try EventRecord(decoding: bytes)
        } throws: { error in
            if case DecodingError.checksumMismatch = error { return true }
            return false
        }
        #expect(throws: DecodingError.truncated(field: "checksum", needed: 4, available: 3)) { try EventRecord(decoding: [1, 2, 3]) }
        #expect(throws: DecodingError.self) { try EventRecord(decoding: []) }
    }

    @Test("a record with a valid checksum but a bad field is refused, naming the field")
    func badFieldsWithValidChecksum() {
        func sealed(_ body: [UInt8]) -> [UInt8] { body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) } }
        let header: [UInt8] = [1, 3, 0, 1, 0x66] + [UInt8](repeating: 0, count: 16)
        #expect(throws: DecodingError.invalidValue(field: "node", reason: "node id 0")) {
            try EventRecord(decoding: sealed(header + [0, 0, 0, 0, 1]))
        }
        #expect(throws: DecodingError.unknownKind(field: "node state", value: 99)) {
            try EventRecord(decoding: sealed(header + [0, 0, 0, 1, 99]))
        }
        #expect(throws: DecodingError.trailingBytes(count: 1)) {
            try EventRecord(decoding: sealed(header + [0, 0, 0, 1, 1, 0]))
        }
        #expect(throws: DecodingError.unknownKind(field: "event kind", value: 77)) {
            try EventRecord(decoding: sealed([1, 77, 0, 1, 0x66] + [UInt8](repeating: 0, count: 16)))
        }
        let hugeCount: [UInt8] = [1, 2, 0, 1, 0x66] + [UInt8](repeating: 0, count: 16) + [0xff, 0xff, 0xff, 0xff]
        #expect(throws: DecodingError.invalidValue(field: "report count", reason: "count 4294967295 exceeds the maximum of 1024")) {
            try EventRecord(decoding: sealed(hugeCount))
        }
    }

    @Test("100,000 random and mutated inputs never crash the decoder")
    func fuzz() {
        var generator = SeededGenerator(seed: 0xF00D)
        var accepted = 0
        var refused = 0
        let valid = sampleRecords.map { $0.encoded() }
        for round in 0..<100_000 {
            var bytes: [UInt8]
            switch round % 4 {
            case 0:
                bytes = (0..<Int(generator.next() % 96)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            case 1:
                bytes = valid[Int(generator.next() % UInt64(valid.count))]
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    bytes[Int(generator.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: 1 + generator.next() % 255)
                }
            case 2:
                bytes = valid[Int(generator.next() % UInt64(valid.count))]
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1))))
            default:
                // Mutate the body and re-seal it, so the field checks (not the CRC) must refuse it.
                var body = Array(valid[Int(generator.next() % UInt64(valid.count))].dropLast(4))
                if !body.isEmpty {
                    body[Int(generator.next() % UInt64(body.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
                if generator.next() % 3 == 0 { body += [UInt8(truncatingIfNeeded: generator.next())] }
                bytes = body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) }
            }
            do {
                let record = try EventRecord(decoding: bytes)
                // Whatever decodes must encode back to the same bytes.
                #expect(record.encoded() == bytes)
                accepted += 1
            } catch {
                refused += 1
            }
        }
        #expect(accepted + refused == 100_000)
        #expect(refused > 50_000)
    }
}
