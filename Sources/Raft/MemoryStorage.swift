/// A `RaftStorage` kept in memory, for tests and simulations.
///
/// It follows the same contract as the durable storage: the conformance suite runs against both.
public final class MemoryStorage: RaftStorage {
    private var hardState = HardState()
    private var latestSnapshot = Snapshot()
    /// The log after the snapshot; `entries[0]` has index `latestSnapshot.metadata.index + 1`.
    private var log: [Entry] = []

    /// An empty storage. `RaftNode.bootstrap` writes a new cluster's first entries into it.
    public init() {}

    private var offset: UInt64 { latestSnapshot.metadata.index }

    public func initialState() throws -> (hardState: HardState, membership: Membership) {
        (hardState, latestSnapshot.metadata.membership)
    }

    public func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws -> [Entry] {
        guard low > offset else { throw StorageError.compacted(index: low, firstIndex: offset + 1) }
        let last = offset + UInt64(log.count)
        guard high <= last + 1 else { throw StorageError.unavailable(index: high - 1, lastIndex: last) }
        guard low < high else { return [] }
        var result: [Entry] = []
        var bytes = 0
        for position in Int(low - offset - 1)..<Int(high - offset - 1) {
            let entry = log[position]
            if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
            bytes += entry.sizeBytes
            result.append(entry)
        }
        return result
    }

    public func term(at index: UInt64) throws -> UInt64 {
        if index == offset { return latestSnapshot.metadata.term }
        guard index > offset else { throw StorageError.compacted(index: index, firstIndex: offset + 1) }
        let last = offset + UInt64(log.count)
        guard index <= last else { throw StorageError.unavailable(index: index, lastIndex: last) }
        return log[Int(index - offset - 1)].term
    }

    public func firstIndex() throws -> UInt64 { offset + 1 }

    public func lastIndex() throws -> UInt64 { offset + UInt64(log.count) }

    public func snapshot() throws -> Snapshot { latestSnapshot }

    public func persist(hardState: HardState?, entries: [Entry], snapshot: Snapshot?) throws {
        if let snapshot {
            let held = latestSnapshot.metadata.index
            guard snapshot.metadata.index > held else {
                throw StorageError.snapshotOutOfDate(offered: snapshot.metadata.index, held: held)
            }
            let index = snapshot.metadata.index
            let last = offset + UInt64(log.count)
            if index <= last, (try? term(at: index)) == snapshot.metadata.term {
                log.removeFirst(Int(index - offset))
            } else {
                log.removeAll()
            }
            latestSnapshot = snapshot
        }
        if let first = entries.first {
            let last = offset + UInt64(log.count)
            guard first.index <= last + 1 else { throw StorageError.nonContiguous(expected: last + 1, got: first.index) }
            for (position, entry) in entries.enumerated() where entry.index != first.index + UInt64(position) {
                throw StorageError.nonContiguous(expected: first.index + UInt64(position), got: entry.index)
            }
            // Entries at or below the snapshot are already covered by it.
            let kept = entries.drop { $0.index <= offset }
            if let firstKept = kept.first {
                log.removeSubrange(Int(firstKept.index - offset - 1)...)
                log.append(contentsOf: kept)
            }
        }
        if let hardState {
            self.hardState = hardState
        }
    }

    public func compact(to index: UInt64, membership: Membership, data: [UInt8]) throws {
        guard index > offset else { throw StorageError.snapshotOutOfDate(offered: index, held: offset) }
        let term = try term(at: index)
        log.removeFirst(Int(index - offset))
        latestSnapshot = Snapshot(
            metadata: SnapshotMetadata(index: index, term: term, membership: membership), data: data)
    }
}
