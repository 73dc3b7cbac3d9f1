import Testing

@testable import Raft

@Suite("in-memory Raft storage")
struct MemoryStorageTests {
    private func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
        range.map { Entry(term: term, index: $0, data: [UInt8($0 & 0xff)]) }
    }

    @Test("append, read back, replace a conflicting suffix")
    func appendAndTruncate() throws {
        let storage = MemoryStorage()
        try storage.persist(hardState: HardState(term: 1, vote: 1, commit: 0), entries: entries(1...5, term: 1), snapshot: nil)
        #expect(try storage.firstIndex() == 1)
        #expect(try storage.lastIndex() == 5)
        #expect(try storage.entries(from: 2, to: 4, maxBytes: .max) == entries(2...3, term: 1))

        try storage.persist(hardState: HardState(term: 2, vote: 2, commit: 3), entries: entries(4...4, term: 2), snapshot: nil)
        #expect(try storage.lastIndex() == 4)
        #expect(try storage.term(at: 4) == 2)
        let state = try storage.initialState()
        #expect(state.hardState == HardState(term: 2, vote: 2, commit: 3))
        #expect(state.membership == Membership())
        #expect(throws: StorageError.nonContiguous(expected: 5, got: 7)) {
            try storage.persist(hardState: nil, entries: entries(7...7, term: 2), snapshot: nil)
        }
        #expect(throws: StorageError.unavailable(index: 5, lastIndex: 4)) {
            try storage.entries(from: 1, to: 6, maxBytes: .max)
        }
    }

    @Test("maxBytes limits a read but always returns one entry")
    func sizeLimit() throws {
        let storage = MemoryStorage()
        try storage.persist(hardState: nil, entries: entries(1...10, term: 1), snapshot: nil)
        #expect(try storage.entries(from: 1, to: 11, maxBytes: 0).count == 1)
        #expect(try storage.entries(from: 1, to: 11, maxBytes: 3 * 25).count == 3)
    }

    @Test("compaction keeps the snapshot's term and refuses compacted reads")
    func compaction() throws {
        let storage = MemoryStorage()
        try storage.persist(hardState: nil, entries: entries(1...10, term: 3), snapshot: nil)
        try storage.compact(to: 6, membership: Membership(voters: [1]), data: [42])
        #expect(try storage.firstIndex() == 7)
        #expect(try storage.lastIndex() == 10)
        #expect(try storage.term(at: 6) == 3)
        #expect(throws: StorageError.compacted(index: 5, firstIndex: 7)) { try storage.term(at: 5) }
        #expect(throws: StorageError.compacted(index: 6, firstIndex: 7)) {
            try storage.entries(from: 6, to: 8, maxBytes: .max)
        }
        #expect(try storage.snapshot() == Snapshot(metadata: SnapshotMetadata(index: 6, term: 3, membership: Membership(voters: [1])), data: [42]))
        #expect(try storage.initialState().membership == Membership(voters: [1]))
    }

    @Test("installing a snapshot past the log discards the log")
    func snapshotInstall() throws {
        let storage = MemoryStorage()
        try storage.persist(hardState: nil, entries: entries(1...3, term: 1), snapshot: nil)
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 20, term: 4, membership: Membership(voters: [1, 2])), data: [7])
        try storage.persist(hardState: HardState(term: 4, vote: nil, commit: 20), entries: entries(21...22, term: 4), snapshot: snapshot)
        #expect(try storage.firstIndex() == 21)
        #expect(try storage.lastIndex() == 22)
        #expect(try storage.term(at: 20) == 4)
        #expect(throws: StorageError.snapshotOutOfDate(offered: 20, held: 20)) {
            try storage.persist(hardState: nil, entries: [], snapshot: snapshot)
        }
    }

    @Test("a snapshot inside the log keeps the entries after it")
    func snapshotInsideLog() throws {
        let storage = MemoryStorage()
        try storage.persist(hardState: nil, entries: entries(1...8, term: 2), snapshot: nil)
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 5, term: 2, membership: Membership(voters: [1])), data: [])
        try storage.persist(hardState: nil, entries: [], snapshot: snapshot)
        #expect(try storage.firstIndex() == 6)
        #expect(try storage.entries(from: 6, to: 9, maxBytes: .max) == entries(6...8, term: 2))
    }
}
