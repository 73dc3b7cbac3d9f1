/// An error a storage reports to Raft about the log it holds.
public enum StorageError: Error, Equatable, CustomStringConvertible {
    /// The requested index lies at or below the snapshot: those entries were compacted away.
    case compacted(index: UInt64, firstIndex: UInt64)
    /// The requested index lies beyond the last entry.
    case unavailable(index: UInt64, lastIndex: UInt64)
    /// A snapshot older than the one already held was offered.
    case snapshotOutOfDate(offered: UInt64, held: UInt64)
    /// Appended entries would leave a gap or are not in order.
    case nonContiguous(expected: UInt64, got: UInt64)

    public var description: String {
        switch self {
        case .compacted(let index, let first):
            return "log entry \(index) was compacted; the log now starts at \(first)"
        case .unavailable(let index, let last):
            return "log entry \(index) is beyond the last entry \(last)"
        case .snapshotOutOfDate(let offered, let held):
            return "snapshot at \(offered) is older than the held snapshot at \(held)"
        case .nonContiguous(let expected, let got):
            return "appended entries must start at or before index \(expected), got \(got)"
        }
    }
}

/// The stable storage of one Raft replica: its log, hard state and latest snapshot.
///
/// The log holds the entries after the snapshot: `firstIndex()` is the snapshot's index plus
/// one, `lastIndex()` is the snapshot's index when the log is empty. The term of the snapshot's
/// own index is still answered by `term(at:)`.
///
/// Writes go through `persist`, one call per ready batch, which a durable storage commits
/// atomically: either all of it is on disk when it returns, or none of it.
public protocol RaftStorage: AnyObject {
    /// The hard state saved last and the membership of the latest snapshot (empty without
    /// one). Raft derives the current membership by replaying the committed membership
    /// changes after the snapshot.
    func initialState() throws -> (hardState: HardState, membership: Membership)
    /// Entries in `[low, high)`, stopping early after `maxBytes` (at least one entry is
    /// returned when any is in range).
    func entries(from low: UInt64, to high: UInt64, maxBytes: Int) throws -> [Entry]
    /// The term of the entry at `index`, which may be the snapshot's index.
    func term(at index: UInt64) throws -> UInt64
    func firstIndex() throws -> UInt64
    func lastIndex() throws -> UInt64
    /// The latest snapshot (empty when there has been none).
    func snapshot() throws -> Snapshot

    /// Atomically installs `snapshot` (if any, discarding the log it covers and, if the log
    /// does not contain the snapshot's last entry, the whole log), then appends `entries`
    /// (replacing every entry from the first new index on), then saves `hardState` (if any).
    func persist(hardState: HardState?, entries: [Entry], snapshot: Snapshot?) throws
    /// Records a snapshot of the application state at `index` (which must be applied and in the
    /// log) and discards the log entries up to and including `index`.
    func compact(to index: UInt64, membership: Membership, data: [UInt8]) throws
}
