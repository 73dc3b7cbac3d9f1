import EventLog
import Testing

/// Exactly-once requests (Raft thesis §6.3): the table every replayer keeps must call a retry a
/// duplicate, remember the index the original went to, forget idle clients deterministically,
/// and survive a snapshot.
@Suite("request sessions")
struct RequestSessionsTests {
    @Test("a retried request is a duplicate of the first, with the first's index")
    func duplicates() {
        var table = RequestSessions()
        let first = RequestID(client: 7, sequence: 1)
        #expect(table.admit(first, index: 10, wallTimeMillis: 1_000) == .new)
        #expect(table.admit(first, index: 11, wallTimeMillis: 1_001) == .duplicate(ofIndex: 10))
        #expect(table.admit(RequestID(client: 7, sequence: 2, firstOutstanding: 1), index: 12, wallTimeMillis: 1_002) == .new)
        // Another client's sequence numbers are its own.
        #expect(table.admit(RequestID(client: 8, sequence: 1), index: 13, wallTimeMillis: 1_003) == .new)
        #expect(table.appliedIndex(of: first) == 10)
    }

    @Test("requests in flight together apply in any order, and are forgotten once their client says it has its answers")
    func outOfOrder() {
        var table = RequestSessions()
        // 200 requests sent together (the first still unanswered when each was sent) commit
        // in reverse order: each is new, whatever the window.
        for sequence in (UInt64(1)...200).reversed() {
            #expect(table.admit(RequestID(client: 1, sequence: sequence, firstOutstanding: 1), index: 1_000 - sequence, wallTimeMillis: 0) == .new)
        }
        #expect(table.admit(RequestID(client: 1, sequence: 50, firstOutstanding: 1), index: 5_000, wallTimeMillis: 0) == .duplicate(ofIndex: 950))
        // A later request says everything below 120 was answered: those are forgotten, and a
        // stray late copy of one is not applied.
        #expect(table.admit(RequestID(client: 1, sequence: 201, firstOutstanding: 120), index: 5_001, wallTimeMillis: 0) == .new)
        #expect(table.appliedIndex(of: RequestID(client: 1, sequence: 50)) == nil)
        #expect(table.admit(RequestID(client: 1, sequence: 50, firstOutstanding: 1), index: 5_002, wallTimeMillis: 0) == .expired)
        #expect(table.admit(RequestID(client: 1, sequence: 150, firstOutstanding: 1), index: 5_003, wallTimeMillis: 0) == .duplicate(ofIndex: 850))
    }

    @Test("a client that never says its requests were answered keeps at most the window")
    func window() {
        var table = RequestSessions()
        for sequence in UInt64(1)...UInt64(RequestSessions.windowMax + 10) {
            #expect(table.admit(RequestID(client: 1, sequence: sequence, firstOutstanding: 1), index: sequence, wallTimeMillis: 0) == .new)
        }
        #expect(table.admit(RequestID(client: 1, sequence: 3, firstOutstanding: 1), index: 9_999, wallTimeMillis: 0) == .expired)
        let recent = UInt64(RequestSessions.windowMax)
        #expect(table.admit(RequestID(client: 1, sequence: recent, firstOutstanding: 1), index: 9_999, wallTimeMillis: 0) == .duplicate(ofIndex: recent))
    }

    @Test("idle clients expire by log time, and the table is bounded")
    func expiry() {
        var table = RequestSessions()
        #expect(table.admit(RequestID(client: 1, sequence: 1), index: 1, wallTimeMillis: 0) == .new)
        let later = RequestSessions.idleExpiryMillis + 1
        #expect(table.admit(RequestID(client: 2, sequence: 1), index: 2, wallTimeMillis: later) == .new)
        // Idle for longer than the expiry: a late copy of client 1's request is new again.
        #expect(table.admit(RequestID(client: 1, sequence: 1), index: 3, wallTimeMillis: later) == .new)
        for client in UInt64(10)..<UInt64(10 + RequestSessions.clientsMax + 5) {
            _ = table.admit(RequestID(client: client, sequence: 1), index: client, wallTimeMillis: later + Int64(client))
        }
        // The least recently seen clients made room; the newest are kept.
        #expect(table.appliedIndex(of: RequestID(client: 2, sequence: 1)) == nil)
        #expect(table.appliedIndex(of: RequestID(client: UInt64(10 + RequestSessions.clientsMax + 4), sequence: 1)) != nil)
    }

    @Test("the table round-trips through its encoding")
    func encoding() throws {
        var table = RequestSessions()
        for sequence in UInt64(1)...100 {
            _ = table.admit(
                RequestID(client: sequence % 3 + 1, sequence: sequence, firstOutstanding: sequence / 2 + 1), index: sequence * 2,
                wallTimeMillis: Int64(sequence))
        }
        var writer = ByteWriter()
        writer.write(table)
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readRequestSessions() == table)
        try reader.finish()
    }
}
