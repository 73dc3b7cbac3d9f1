import Raft
import Testing
import TestSupport

@testable import EventLog

@Suite("LMDB Raft storage: durability and damage")
struct LMDBRaftStorageTests {
    @Test("what was persisted is there after close and reopen")
    func reopen() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let written = (1...100).map { Entry(term: 1 + $0 / 40, index: $0, data: Array("entry \($0)".utf8)) }
        do {
            let storage = try LMDBRaftStorage(directory: folder.path)
            try storage.persist(hardState: HardState(term: 3, vote: 2, commit: 90), entries: written, snapshot: nil)
            try storage.compact(to: 50, membership: Membership(voters: [1, 2, 3]), data: [7, 7, 7])
            storage.close()
        }
        let storage = try LMDBRaftStorage(directory: folder.path)
        defer { storage.close() }
        #expect(try storage.initialState().hardState == HardState(term: 3, vote: 2, commit: 90))
        #expect(try storage.initialState().membership == Membership(voters: [1, 2, 3]))
        #expect(try storage.firstIndex() == 51)
        #expect(try storage.lastIndex() == 100)
        #expect(try storage.entries(from: 51, to: 101, maxBytes: .max) == Array(written[50...]))
        #expect(try storage.snapshot().data == [7, 7, 7])
    }

    @Test("a snapshot's learners survive a reopen; one without learners keeps the old record version")
    func snapshotLearners() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let written = (1...20).map { Entry(term: 1, index: $0) }
        let withLearners = Membership(voters: [1, 2, 3], learners: [4])
        do {
            let storage = try LMDBRaftStorage(directory: folder.path)
            try storage.persist(hardState: HardState(term: 1, vote: nil, commit: 20), entries: written, snapshot: nil)
            try storage.compact(to: 10, membership: withLearners, data: [1])
            storage.close()
        }
        let storage = try LMDBRaftStorage(directory: folder.path)
        defer { storage.close() }
        #expect(try storage.initialState().membership == withLearners)
        #expect(try storage.snapshot().metadata.membership == withLearners)
        let plain = Snapshot(metadata: SnapshotMetadata(index: 5, term: 1, membership: Membership(voters: [1, 2, 3])), data: [])
        #expect(StorageRecords.encode(plain)[0] == StorageRecords.version)
        #expect(try StorageRecords.decodeSnapshot(StorageRecords.encode(plain)) == plain)
    }

    @Test("a damaged entry record is reported as corruption, never returned")
    func damagedRecord() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let storage = try LMDBRaftStorage(directory: folder.path)
        defer { storage.close() }
        try storage.persist(hardState: nil, entries: (1...3).map { Entry(term: 1, index: $0, data: [1, 2, 3]) }, snapshot: nil)
        // Flip one bit of entry 2 behind the storage's back.
        let database = try storage.environment.openDatabase("entries")
        try storage.environment.write { txn in
            var value = try txn.get(database, LMDBKey.uint64(2))!
            value[12] ^= 0x10
            try txn.put(database, LMDBKey.uint64(2), value)
        }
        #expect {
            try storage.entries(from: 1, to: 4, maxBytes: .max)
        } throws: { error in
            guard case StorageCorruption.record(.checksumMismatch) = error else { return false }
            return String(describing: error).hasPrefix("the Raft log store is damaged: record is corrupted: stored CRC32C")
        }
        #expect(throws: StorageCorruption.self) { try storage.term(at: 2) }
        #expect(try storage.term(at: 3) == 1)
    }

    @Test("a record moved under another index is refused")
    func misplacedRecord() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let storage = try LMDBRaftStorage(directory: folder.path)
        defer { storage.close() }
        try storage.persist(hardState: nil, entries: (1...2).map { Entry(term: 1, index: $0) }, snapshot: nil)
        let database = try storage.environment.openDatabase("entries")
        try storage.environment.write { txn in
            try txn.put(database, LMDBKey.uint64(2), try txn.get(database, LMDBKey.uint64(1))!)
        }
        #expect(throws: StorageCorruption.record(.invalidValue(field: "entry index", reason: "record 1 is stored under another key"))) {
            try storage.term(at: 2)
        }
    }

    @Test("a store with a gap in its log refuses to open")
    func gapRefusesOpen() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        do {
            let storage = try LMDBRaftStorage(directory: folder.path)
            try storage.persist(hardState: nil, entries: (1...5).map { Entry(term: 1, index: $0) }, snapshot: nil)
            let database = try storage.environment.openDatabase("entries")
            try storage.environment.write { txn in try txn.delete(database, LMDBKey.uint64(3)) }
            storage.close()
        }
        #expect(throws: StorageCorruption.log("entries 1…5 (4 records) do not continue the snapshot at 0 without gaps")) {
            try LMDBRaftStorage(directory: folder.path)
        }
    }

    @Test("a damaged hard state refuses to open")
    func damagedHardState() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        do {
            let storage = try LMDBRaftStorage(directory: folder.path)
            try storage.persist(hardState: HardState(term: 1, vote: 1, commit: 0), entries: [], snapshot: nil)
            let database = try storage.environment.openDatabase("meta")
            try storage.environment.write { txn in try txn.put(database, Array("hard-state".utf8), [1, 2, 3, 4, 5]) }
            storage.close()
        }
        #expect(throws: StorageCorruption.self) { try LMDBRaftStorage(directory: folder.path) }
    }
}
