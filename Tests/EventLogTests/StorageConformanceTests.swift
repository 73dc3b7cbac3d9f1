import Raft
import Testing
import TestSupport

@testable import EventLog

/// The contract of `RaftStorage`, run against the in-memory storage and the LMDB storage
/// alike: both must give the same answers to the same writes.
enum StorageKind: String, CaseIterable, CustomTestStringConvertible {
    case memory
    case lmdb

    var testDescription: String { rawValue }

    /// A fresh storage and a cleanup action.
    func make() throws -> (any RaftStorage, () -> Void) {
        switch self {
        case .memory:
            return (MemoryStorage(), {})
        case .lmdb:
            let folder = try TemporaryDirectory()
            do {
                let storage = try LMDBRaftStorage(directory: folder.path)
                return (storage, { storage.close(); folder.remove() })
            } catch {
                folder.remove()
                throw error
            }
        }
    }
}

private func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
    range.map { Entry(term: term, index: $0, kind: $0 % 5 == 0 ? .membershipChange : .normal, data: Array("e\($0)".utf8)) }
}

@Suite("RaftStorage conformance")
struct StorageConformanceTests {
    @Test("an empty storage", arguments: StorageKind.allCases)
    func empty(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        #expect(try storage.firstIndex() == 1)
        #expect(try storage.lastIndex() == 0)
        #expect(try storage.term(at: 0) == 0)
        #expect(try storage.snapshot() == Snapshot())
        let state = try storage.initialState()
        #expect(state.hardState == HardState())
        #expect(state.membership == Membership())
        #expect(try storage.entries(from: 1, to: 1, maxBytes: .max) == [])
        #expect(throws: StorageError.unavailable(index: 1, lastIndex: 0)) { try storage.term(at: 1) }
    }

    @Test("appended entries and hard state read back; a shorter conflicting tail replaces the old", arguments: StorageKind.allCases)
    func appendAndReplace(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        try storage.persist(hardState: HardState(term: 1, vote: 2, commit: 3), entries: entries(1...10, term: 1), snapshot: nil)
        #expect(try storage.entries(from: 3, to: 7, maxBytes: .max) == entries(3...6, term: 1))
        #expect(try storage.entries(from: 1, to: 11, maxBytes: 0) == entries(1...1, term: 1))
        let sized = try storage.entries(from: 1, to: 11, maxBytes: entries(1...3, term: 1).reduce(0) { $0 + $1.sizeBytes })
        #expect(sized == entries(1...3, term: 1))
        try storage.persist(hardState: HardState(term: 2, vote: nil, commit: 5), entries: entries(6...7, term: 2), snapshot: nil)
        #expect(try storage.lastIndex() == 7)
        #expect(try storage.entries(from: 5, to: 8, maxBytes: .max) == entries(5...5, term: 1) + entries(6...7, term: 2))
        #expect(try storage.initialState().hardState == HardState(term: 2, vote: nil, commit: 5))
        #expect(throws: StorageError.nonContiguous(expected: 8, got: 9)) {
            try storage.persist(hardState: nil, entries: entries(9...9, term: 2), snapshot: nil)
        }
        #expect(throws: StorageError.nonContiguous(expected: 8, got: 9)) {
            try storage.persist(hardState: nil, entries: [Entry(term: 2, index: 7), Entry(term: 2, index: 9)], snapshot: nil)
        }
        #expect(throws: StorageError.unavailable(index: 8, lastIndex: 7)) { try storage.entries(from: 7, to: 9, maxBytes: .max) }
        // A refused batch changed nothing.
        #expect(try storage.lastIndex() == 7)
    }

    @Test("compaction keeps the tail, the snapshot's term and its membership", arguments: StorageKind.allCases)
    func compaction(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        try storage.persist(hardState: HardState(term: 3, vote: 1, commit: 8), entries: entries(1...10, term: 3), snapshot: nil)
        try storage.compact(to: 6, membership: Membership(voters: [1, 2, 3]), data: [9, 9])
        #expect(try storage.firstIndex() == 7)
        #expect(try storage.lastIndex() == 10)
        #expect(try storage.term(at: 6) == 3)
        #expect(throws: StorageError.compacted(index: 5, firstIndex: 7)) { try storage.term(at: 5) }
        #expect(throws: StorageError.compacted(index: 6, firstIndex: 7)) { try storage.entries(from: 6, to: 8, maxBytes: .max) }
        #expect(try storage.entries(from: 7, to: 11, maxBytes: .max) == entries(7...10, term: 3))
        #expect(try storage.snapshot() == Snapshot(
            metadata: SnapshotMetadata(index: 6, term: 3, membership: Membership(voters: [1, 2, 3])), data: [9, 9]))
        #expect(try storage.initialState().membership == Membership(voters: [1, 2, 3]))
        #expect(throws: StorageError.snapshotOutOfDate(offered: 6, held: 6)) {
            try storage.compact(to: 6, membership: Membership(voters: [1]), data: [])
        }
        // Compacting everything leaves an empty log after the snapshot.
        try storage.compact(to: 10, membership: Membership(voters: [1]), data: [])
        #expect(try storage.firstIndex() == 11)
        #expect(try storage.lastIndex() == 10)
        try storage.persist(hardState: nil, entries: entries(11...12, term: 4), snapshot: nil)
        #expect(try storage.entries(from: 11, to: 13, maxBytes: .max) == entries(11...12, term: 4))
    }

    @Test("a snapshot from the leader replaces a log that does not hold its last entry", arguments: StorageKind.allCases)
    func snapshotReplacesLog(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        try storage.persist(hardState: nil, entries: entries(1...5, term: 1), snapshot: nil)
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 20, term: 4, membership: Membership(voters: [1, 2])), data: [1, 2, 3])
        try storage.persist(hardState: HardState(term: 4, vote: nil, commit: 20), entries: entries(21...22, term: 4), snapshot: snapshot)
        #expect(try storage.firstIndex() == 21)
        #expect(try storage.lastIndex() == 22)
        #expect(try storage.term(at: 20) == 4)
        #expect(try storage.snapshot() == snapshot)
        #expect(try storage.entries(from: 21, to: 23, maxBytes: .max) == entries(21...22, term: 4))
        #expect(throws: StorageError.snapshotOutOfDate(offered: 20, held: 20)) {
            try storage.persist(hardState: nil, entries: [], snapshot: snapshot)
        }
    }

    @Test("a snapshot whose last entry the log holds keeps the entries after it", arguments: StorageKind.allCases)
    func snapshotKeepsTail(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        try storage.persist(hardState: nil, entries: entries(1...8, term: 2), snapshot: nil)
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 5, term: 2, membership: Membership(voters: [1])), data: [])
        try storage.persist(hardState: nil, entries: [], snapshot: snapshot)
        #expect(try storage.firstIndex() == 6)
        #expect(try storage.lastIndex() == 8)
        #expect(try storage.entries(from: 6, to: 9, maxBytes: .max) == entries(6...8, term: 2))
        // With a different term at the snapshot's index, the log goes entirely.
        let other = Snapshot(metadata: SnapshotMetadata(index: 7, term: 9, membership: Membership(voters: [1])), data: [])
        try storage.persist(hardState: nil, entries: [], snapshot: other)
        #expect(try storage.firstIndex() == 8)
        #expect(try storage.lastIndex() == 7)
    }

    @Test("a Raft cluster runs on the storage: proposals commit and a replica restarts from it", arguments: StorageKind.allCases)
    func raftRunsOnIt(kind: StorageKind) throws {
        let (storage, cleanup) = try kind.make()
        defer { cleanup() }
        try RaftNode.bootstrap(storage: storage, voters: [1])
        var node = try RaftNode(config: RaftConfig(id: 1), storage: storage)
        try node.campaign()
        for value in 0..<50 { try node.propose([UInt8(value)]) }
        var applied: [Entry] = []
        while node.hasReady() {
            let ready = try node.ready()
            try storage.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
            applied += ready.committedEntries
            node.advance(ready)
        }
        #expect(applied.count == 52)
        try storage.compact(to: 30, membership: Membership(voters: [1]), data: [])
        var config = RaftConfig(id: 1)
        config.applied = 30
        let restarted = try RaftNode(config: config, storage: storage)
        #expect(restarted.status.commit == 52)
        #expect(restarted.status.lastIndex == 52)
        #expect(restarted.membership == Membership(voters: [1]))
        #expect(restarted.term == node.term)
    }
}
