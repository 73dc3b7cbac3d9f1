@testable import Raft

/// A test application: it folds every applied command into a running hash, so two replicas
/// that applied the same commands in the same order have the same hash at the same index. It
/// also keeps a register per key, written by `write` commands, for the clients' reads.
struct StateMachine: Equatable {
    var appliedIndex: UInt64 = 0
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    var membership = Membership()
    var registers: [UInt8: UInt64] = [:]

    /// A command that sets register `key` to `value`: "W", the key, the value (8 bytes).
    static func write(key: UInt8, value: UInt64) -> [UInt8] {
        [UInt8(ascii: "W"), key] + (0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    mutating func apply(_ entry: Entry) {
        precondition(entry.index == appliedIndex + 1, "applied \(entry.index) after \(appliedIndex)")
        appliedIndex = entry.index
        for byte in entry.data + [entry.kind.rawValue] {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        if entry.kind == .membershipChange, let change = MembershipChange(encoded: entry.data) {
            membership = membership.applying(change)
        }
        if entry.kind == .normal, entry.data.count == 10, entry.data[0] == UInt8(ascii: "W") {
            registers[entry.data[1]] = Self.decode(entry.data[2...])
        }
    }

    /// The snapshot payload: applied index, hash, then each register (key, value), sorted.
    var snapshotData: [UInt8] {
        var bytes = Self.encode(appliedIndex) + Self.encode(hash)
        for key in registers.keys.sorted() { bytes += [key] + Self.encode(registers[key]!) }
        return bytes
    }

    init() {}

    init(snapshot: Snapshot) {
        let bytes = snapshot.data
        precondition(bytes.count >= 16 && (bytes.count - 16) % 9 == 0, "snapshot data of \(bytes.count) bytes")
        appliedIndex = Self.decode(bytes[0..<8])
        hash = Self.decode(bytes[8..<16])
        for start in stride(from: 16, to: bytes.count, by: 9) {
            registers[bytes[start]] = Self.decode(bytes[(start + 1)..<(start + 9)])
        }
        membership = snapshot.metadata.membership
        precondition(appliedIndex == snapshot.metadata.index, "snapshot data index \(appliedIndex) != \(snapshot.metadata.index)")
    }

    private static func encode(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    private static func decode(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << ($1.offset * 8) }
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
    /// The witness's rule: a commit-index-only hard state waits for the next real write, so a
    /// crash may forget it (`CommitDeferringPersistence`).
    var persistence = CommitDeferringPersistence(durable: HardState())

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
        persistence = CommitDeferringPersistence(durable: try storage.initialState().hardState)
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
            if let plan = persistence.plan(ready) {
                try storage.persist(hardState: plan.hardState, entries: plan.entries, snapshot: plan.snapshot)
            }
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
