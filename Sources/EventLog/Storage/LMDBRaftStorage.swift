import Raft

/// Raft's log, hard state and snapshot in LMDB (DESIGN §3, §5 rule 4).
///
/// Layout: database `entries` maps an 8-byte big-endian index to an entry record; database
/// `meta` holds `hard-state` and `snapshot`. Every record carries a format version and a
/// CRC32C, verified whenever it is read: LMDB has no page checksums. Each `persist` is one
/// durable write transaction (no `MDB_NOSYNC`): a batch is on disk when it returns, or not
/// at all.
public final class LMDBRaftStorage: RaftStorage {
    public let environment: LMDBEnvironment
    private let entriesDatabase: LMDBDatabase
    private let metaDatabase: LMDBDatabase
    private var cachedHardState: HardState
    private var cachedSnapshotMetadata: SnapshotMetadata
    /// Index of the first and last stored entries; `last < first` when there is none.
    private var storedFirst: UInt64
    private var storedLast: UInt64

    static let hardStateKey = Array("hard-state".utf8)
    static let snapshotKey = Array("snapshot".utf8)
    /// The largest snapshot a peer may send us (the serialized cluster state is far smaller).
    public static let snapshotBytesMax = 256 << 20

    /// Opens (or creates) the storage in `directory`, which must exist, and checks that what
    /// it holds is whole: readable records and a contiguous log after the snapshot.
    public init(directory: String, configuration: LMDBConfiguration = LMDBConfiguration()) throws {
        environment = try LMDBEnvironment(directory: directory, configuration: configuration)
        entriesDatabase = try environment.openDatabase("entries")
        metaDatabase = try environment.openDatabase("meta")
        let (entries, meta) = (entriesDatabase, metaDatabase)
        let loaded = try environment.read { txn -> (HardState, SnapshotMetadata, UInt64?, UInt64?, Int) in
            let hardState = try txn.get(meta, Self.hardStateKey).map(StorageRecords.decodeHardState) ?? HardState()
            let snapshot = try txn.get(meta, Self.snapshotKey).map { try StorageRecords.decodeSnapshot($0).metadata }
                ?? SnapshotMetadata()
            let first = try txn.first(entries).map { try Self.index(fromKey: $0.key) }
            let last = try txn.last(entries).map { try Self.index(fromKey: $0.key) }
            return (hardState, snapshot, first, last, try txn.count(entries))
        }
        let (hardState, snapshot, first, last, count) = loaded
        cachedHardState = hardState
        cachedSnapshotMetadata = snapshot
        storedFirst = first ?? snapshot.index + 1
        storedLast = last ?? snapshot.index
        if let first, let last {
            guard first == snapshot.index + 1, last - first + 1 == UInt64(count) else {
                throw StorageCorruption.log(
                    "entries \(first)…\(last) (\(count) records) do not continue the snapshot at \(snapshot.index) without gaps")
            }
        }
        guard hardState.commit <= storedLast else {
            throw StorageCorruption.log("hard state commit \(hardState.commit) is beyond the last entry \(storedLast)")
        }
    }

    public func close() {
        environment.close()
    }

    static func index(fromKey key: [UInt8]) throws -> UInt64 {
        guard let index = LMDBKey.uint64(from: key) else {
            throw StorageCorruption.log("an entry key of \(key.count) bytes is not an index")
        }
        return index
    }

    // MARK: Reads

    public func initialState() throws -> (hardState: HardState, membership: Membership) {
        (cachedHardState, cachedSnapshotMetadata.membership)
    }

    public func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws -> [Entry] {
        guard low > cachedSnapshotMetadata.index else {
            throw StorageError.compacted(index: low, firstIndex: cachedSnapshotMetadata.index + 1)
        }
        guard high <= storedLast + 1 else { throw StorageError.unavailable(index: high - 1, lastIndex: storedLast) }
        guard low < high else { return [] }
        let database = entriesDatabase
        return try environment.read { txn in
            var result: [Entry] = []
            var bytes = 0
            var expected = low
            try txn.forEach(database, from: LMDBKey.uint64(low)) { key, value in
                let entry = try StorageRecords.decodeEntry(value, key: key)
                guard entry.index == expected else {
                    throw StorageCorruption.log("entry \(expected) is missing (found \(entry.index))")
                }
                if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { return false }
                bytes += entry.sizeBytes
                result.append(entry)
                expected += 1
                return expected < high
            }
            guard !result.isEmpty else { throw StorageCorruption.log("entry \(low) is missing") }
            return result
        }
    }

    public func term(at index: UInt64) throws -> UInt64 {
        if index == cachedSnapshotMetadata.index { return cachedSnapshotMetadata.term }
        guard index > cachedSnapshotMetadata.index else {
            throw StorageError.compacted(index: index, firstIndex: cachedSnapshotMetadata.index + 1)
        }
        guard index <= storedLast else { throw StorageError.unavailable(index: index, lastIndex: storedLast) }
        let database = entriesDatabase
        return try environment.read { txn in
            let key = LMDBKey.uint64(index)
            guard let value = try txn.get(database, key) else { throw StorageCorruption.log("entry \(index) is missing") }
            return try StorageRecords.decodeEntry(value, key: key).term
        }
    }

    public func firstIndex() throws -> UInt64 { cachedSnapshotMetadata.index + 1 }

    public func lastIndex() throws -> UInt64 { storedLast }

    public func snapshot() throws -> Snapshot {
        guard cachedSnapshotMetadata.index > 0 else { return Snapshot() }
        let meta = metaDatabase
        return try environment.read { txn in
            guard let value = try txn.get(meta, Self.snapshotKey) else { throw StorageCorruption.log("the snapshot record is missing") }
            return try StorageRecords.decodeSnapshot(value)
        }
    }

    // MARK: Writes

    public func persist(hardState: HardState?, entries: [Entry], snapshot: Snapshot?) throws {
        if let snapshot, snapshot.metadata.index <= cachedSnapshotMetadata.index {
            throw StorageError.snapshotOutOfDate(offered: snapshot.metadata.index, held: cachedSnapshotMetadata.index)
        }
        var first = storedFirst
        var last = storedLast
        var snapshotMetadata = cachedSnapshotMetadata
        let (entriesDatabase, metaDatabase) = (self.entriesDatabase, self.metaDatabase)
        try environment.write { txn in
            first = storedFirst
            last = storedLast
            snapshotMetadata = cachedSnapshotMetadata
            if let snapshot {
                try Self.install(snapshot, txn: txn, entries: entriesDatabase, meta: metaDatabase, first: &first, last: &last)
                snapshotMetadata = snapshot.metadata
            }
            if let head = entries.first {
                guard head.index <= last + 1 else { throw StorageError.nonContiguous(expected: last + 1, got: head.index) }
                for (position, entry) in entries.enumerated() where entry.index != head.index + UInt64(position) {
                    throw StorageError.nonContiguous(expected: head.index + UInt64(position), got: entry.index)
                }
                // Entries the snapshot already covers are skipped; the rest replace the log's tail.
                let kept = entries.drop { $0.index <= snapshotMetadata.index }
                if let firstKept = kept.first {
                    if firstKept.index <= last { try txn.deleteRange(entriesDatabase, from: LMDBKey.uint64(firstKept.index)) }
                    for entry in kept {
                        try txn.put(entriesDatabase, LMDBKey.uint64(entry.index), StorageRecords.encode(entry))
                    }
                    last = kept.last!.index
                    first = snapshotMetadata.index + 1
                }
            }
            if let hardState {
                try txn.put(metaDatabase, Self.hardStateKey, StorageRecords.encode(hardState))
            }
        }
        storedFirst = first
        storedLast = last
        cachedSnapshotMetadata = snapshotMetadata
        if let hardState { cachedHardState = hardState }
    }

    /// Writes the snapshot and drops the log it covers (all of it, unless the log holds the
    /// snapshot's own last entry).
    private static func install(
        _ snapshot: Snapshot, txn: borrowing LMDBTransaction, entries: LMDBDatabase, meta: LMDBDatabase,
        first: inout UInt64, last: inout UInt64
    ) throws {
        let index = snapshot.metadata.index
        var keepTail = false
        if index >= first, index <= last, let value = try txn.get(entries, LMDBKey.uint64(index)) {
            keepTail = try StorageRecords.decodeEntry(value, key: LMDBKey.uint64(index)).term == snapshot.metadata.term
        }
        if keepTail {
            try txn.deleteRange(entries, from: LMDBKey.uint64(0), through: LMDBKey.uint64(index))
        } else {
            try txn.removeAll(entries)
            last = index
        }
        first = index + 1
        try txn.put(meta, snapshotKey, StorageRecords.encode(snapshot))
    }

    public func compact(to index: UInt64, membership: Membership, data: [UInt8]) throws {
        guard index > cachedSnapshotMetadata.index else {
            throw StorageError.snapshotOutOfDate(offered: index, held: cachedSnapshotMetadata.index)
        }
        let term = try self.term(at: index)
        let metadata = SnapshotMetadata(index: index, term: term, membership: membership)
        let (entriesDatabase, metaDatabase) = (self.entriesDatabase, self.metaDatabase)
        try environment.write { txn in
            try txn.deleteRange(entriesDatabase, from: LMDBKey.uint64(0), through: LMDBKey.uint64(index))
            try txn.put(metaDatabase, Self.snapshotKey, StorageRecords.encode(Snapshot(metadata: metadata, data: data)))
        }
        cachedSnapshotMetadata = metadata
        storedFirst = index + 1
    }
}

/// The stored log is not what a correct writer could have left: the store refuses to go on.
public enum StorageCorruption: Error, Equatable, CustomStringConvertible {
    case log(String)
    case record(DecodingError)

    public var description: String {
        switch self {
        case .log(let reason): return "the Raft log store is damaged: \(reason)"
        case .record(let error): return "the Raft log store is damaged: \(error)"
        }
    }
}
