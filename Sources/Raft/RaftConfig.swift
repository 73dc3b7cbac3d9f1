/// The settings of one Raft replica. Time is counted in ticks; the shell decides how long a
/// tick is (the witness uses 100 ms).
public struct RaftConfig: Sendable {
    /// This replica's id; never zero.
    public var id: NodeID
    /// A follower that hears nothing from a leader for a random number of ticks in
    /// `[electionTicks, 2 * electionTicks)` starts an election. A leader with check-quorum steps
    /// down when it has not heard from a majority for `electionTicks`.
    public var electionTicks: Int = 10
    /// A leader sends heartbeats every `heartbeatTicks`; must be less than `electionTicks`.
    public var heartbeatTicks: Int = 1
    /// Ask for pre-votes before starting an election (Raft thesis §9.6), so that a replica
    /// cut off from the cluster does not raise the term and depose a healthy leader on return.
    public var preVote: Bool = true
    /// Leaders step down without contact from a majority, and followers that hear from a
    /// leader ignore vote requests for an election timeout (thesis §6.2, §4.2.3).
    public var checkQuorum: Bool = true
    /// The most entry bytes one append message carries (at least one entry is always sent).
    public var maxMessageSizeBytes: Int = 1 << 20
    /// The most append messages in flight to one follower in the replicate state.
    public var maxInflightMessages: Int = 256
    /// The most committed entry bytes handed out in one `Ready` (at least one entry).
    public var maxCommittedSizePerReadyBytes: Int = 8 << 20
    /// The index the application has already applied, when restarting from storage.
    public var applied: UInt64 = 0
    /// Seeds the generator of randomized election timeouts.
    public var seed: UInt64

    public init(id: NodeID, seed: UInt64? = nil) {
        self.id = id
        self.seed = seed ?? id
    }

    public func validate() throws(RaftError) {
        guard id != 0 else { throw .invalidConfig("id must not be zero") }
        guard heartbeatTicks > 0 else { throw .invalidConfig("heartbeatTicks must be positive") }
        guard electionTicks > heartbeatTicks else {
            throw .invalidConfig("electionTicks (\(electionTicks)) must exceed heartbeatTicks (\(heartbeatTicks))")
        }
        guard maxInflightMessages > 0 else { throw .invalidConfig("maxInflightMessages must be positive") }
        guard maxMessageSizeBytes > 0, maxCommittedSizePerReadyBytes > 0 else {
            throw .invalidConfig("maxMessageSizeBytes and maxCommittedSizePerReadyBytes must be positive")
        }
    }
}

/// Why Raft refused a request or a message.
public enum RaftError: Error, Equatable, CustomStringConvertible {
    case invalidConfig(String)
    /// Only the leader accepts proposals; `leader` is the one this replica knows of, if any.
    case notLeader(leader: NodeID?)
    /// The leader is handing over to `transferee` and accepts no proposals meanwhile.
    case transferInProgress(transferee: NodeID)
    /// A membership change was refused; the reason says why.
    case membershipChangeRefused(String)
    /// A membership change must wait: the change (or the new leader's first entry) at `index`
    /// has not committed yet. Retrying soon succeeds.
    case membershipChangePending(index: UInt64)
    /// A leadership transfer was refused; the reason says why.
    case transferRefused(String)
    /// A peer sent a message that breaks the protocol; it was dropped.
    case protocolViolation(String)
    /// The storage failed; the replica cannot go on safely.
    case storage(String)

    public var description: String {
        switch self {
        case .invalidConfig(let reason): return "invalid Raft configuration: \(reason)"
        case .notLeader(let leader):
            return "this replica is not the leader" + (leader.map { "; the leader is \($0)" } ?? "; no leader is known")
        case .transferInProgress(let transferee): return "leadership is being transferred to \(transferee)"
        case .membershipChangeRefused(let reason): return "membership change refused: \(reason)"
        case .membershipChangePending(let index):
            return "membership change refused for now: the change at index \(index) has not committed yet"
        case .transferRefused(let reason): return "leadership transfer refused: \(reason)"
        case .protocolViolation(let reason): return "message dropped: \(reason)"
        case .storage(let reason): return "Raft storage failed: \(reason)"
        }
    }
}

/// A small, fast, seedable generator (SplitMix64), so that a simulation replays exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
