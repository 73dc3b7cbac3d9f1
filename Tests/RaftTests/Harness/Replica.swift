@testable import Raft

/// A test application: it folds every applied command into a running hash, so two replicas
/// that applied the same commands in the same order have the same hash at the same index.
struct StateMachine: Equatable {
    var appliedIndex: UInt64 = 0
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    var membership = Membership()

    mutating func apply(_ entry: Entry) {
        precondition(entry.index == appliedIndex + 1, "applied \(entry.index) after \(appliedIndex)")
        appliedIndex = entry.index
        for byte in entry.data + [entry.kind.rawValue] {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        if entry.kind == .membershipChange, let change = MembershipChange(encoded: entry.data) {
            membership = membership.applying(change)
        }
    }

    /// The snapshot payload: applied index and hash, 16 bytes.
    var snapshotData: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: appliedIndex >> ($0 * 8)) } + (0..<8).map { UInt8(truncatingIfNeeded: hash >> ($0 * 8)) }
    }

    init() {}

    init(snapshot: Snapshot) {
        let bytes = snapshot.data
        precondition(bytes.count == 16, "snapshot data of \(bytes.count) bytes")
        appliedIndex = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << ($1 * 8) }
        hash = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[8 + $1]) << ($1 * 8) }
        membership = snapshot.metadata.membership
        precondition(appliedIndex == snapshot.metadata.index, "snapshot data index \(appliedIndex) != \(snapshot.metadata.index)")
    }
}

/// What happened while one replica's ready batches were processed.
enum ReplicaEvent {
    case softState(SoftState, term: UInt64)
    case persisted([Entry])
    case snapshotInstalled(SnapshotMetadata, hash: UInt64)
    case applied(Entry, hash: UInt64)
    case readState(ReadState)
}

/// One replica in a test: a Raft core over a `MemoryStorage` that plays the disk, and the
/// application. A crash drops the core and the application; a restart rebuilds both from the
/// storage alone.
final class Replica {
    let id: NodeID
    let storage = MemoryStorage()
    var raft: RaftNode?
    var stateMachine = StateMachine()
    var configTemplate: RaftConfig

    init(id: NodeID, config: RaftConfig) {
        self.id = id
        self.configTemplate = config
    }

    var isUp: Bool { raft != nil }

    /// Starts (or restarts) the core from what storage holds.
    func start(seed: UInt64) throws {
        let snapshot = try storage.snapshot()
        stateMachine = snapshot.isEmpty ? StateMachine() : StateMachine(snapshot: snapshot)
        var config = configTemplate
        config.seed = seed
        config.applied = stateMachine.appliedIndex
        raft = try RaftNode(config: config, storage: storage)
    }

    func crash() {
        raft = nil
    }

    /// Processes ready batches until there are none: persist, collect messages, apply, advance.
    /// Returns the messages to send and what happened.
    func processReady() throws -> (messages: [Message], events: [ReplicaEvent]) {
        guard var node = raft else { return ([], []) }
        var messages: [Message] = []
        var events: [ReplicaEvent] = []
        while node.hasReady() {
            let ready = try node.ready()
            try storage.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
            if let soft = ready.softState { events.append(.softState(soft, term: node.term)) }
            if !ready.entries.isEmpty { events.append(.persisted(ready.entries)) }
            messages += ready.messages
            if let snapshot = ready.snapshot {
                stateMachine = StateMachine(snapshot: snapshot)
                events.append(.snapshotInstalled(snapshot.metadata, hash: stateMachine.hash))
            }
            for entry in ready.committedEntries {
                stateMachine.apply(entry)
                events.append(.applied(entry, hash: stateMachine.hash))
            }
            events += ready.readStates.map { .readState($0) }
            node.advance(ready)
        }
        raft = node
        return (messages, events)
    }

    /// Takes a snapshot of the application at its applied index and compacts the log up to
    /// it. Returns false when there was nothing new to compact.
    @discardableResult
    func compact() throws -> Bool {
        let target = stateMachine.appliedIndex
        guard target >= (try storage.firstIndex()) else { return false }
        try storage.compact(to: target, membership: stateMachine.membership, data: stateMachine.snapshotData)
        return true
    }
}
