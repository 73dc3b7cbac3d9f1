/// The kinds of message Raft replicas exchange (Raft paper Figure 2, plus pre-vote and
/// leadership transfer from the Raft thesis §9.6 and §3.10).
public enum MessageKind: UInt8, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case append = 1
    case appendResponse = 2
    case vote = 3
    case voteResponse = 4
    case preVote = 5
    case preVoteResponse = 6
    case heartbeat = 7
    case heartbeatResponse = 8
    case snapshot = 9
    case timeoutNow = 10
    /// Follower → leader: confirm leadership and tell me the read index (thesis §6.4).
    case readIndex = 11
    /// Leader → follower: the read index for the request with `context`.
    case readIndexResponse = 12

    public var description: String {
        switch self {
        case .append: return "App"
        case .appendResponse: return "AppResp"
        case .vote: return "Vote"
        case .voteResponse: return "VoteResp"
        case .preVote: return "PreVote"
        case .preVoteResponse: return "PreVoteResp"
        case .heartbeat: return "Heartbeat"
        case .heartbeatResponse: return "HeartbeatResp"
        case .snapshot: return "Snap"
        case .timeoutNow: return "TimeoutNow"
        case .readIndex: return "ReadIndex"
        case .readIndexResponse: return "ReadIndexResp"
        }
    }

    /// Messages only a leader sends; receiving one from a newer term makes the sender our leader.
    /// They promise nothing about the leader's own disk, so the shell may send them before it
    /// persists the `Ready` they came in (Raft thesis §10.2.1); every other message waits.
    public var isFromLeader: Bool { self == .append || self == .heartbeat || self == .snapshot }
}

/// One message between replicas. Fields a kind does not use stay zero.
public struct Message: Sendable, Equatable {
    public var kind: MessageKind
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    /// Append: the term of the entry before `entries`. Vote: the candidate's last log term.
    /// Rejected append response: the term of the follower's entry at `rejectHint`.
    public var logTerm: UInt64 = 0
    /// Append: the index of the entry before `entries`. Vote: the candidate's last log index.
    /// Append response: the follower's last matching index (or the rejected index).
    public var index: UInt64 = 0
    public var entries: [Entry] = []
    public var commit: UInt64 = 0
    public var reject: Bool = false
    /// Rejected append response: the index from which the leader should probe next.
    public var rejectHint: UInt64 = 0
    public var snapshot: Snapshot? = nil
    /// Vote request sent after a leadership transfer: voters grant it even while they
    /// still follow a live leader.
    public var force: Bool = false
    /// Heartbeat, append and their responses: the leader's latest read round when it sent the
    /// message (0: none), echoed back so the leader knows which reads a quorum has confirmed
    /// (a replica that does not echo it on appends only confirms reads by heartbeats, so
    /// mixed versions stay correct). ReadIndex and its response: the
    /// requester's own context, returned unchanged.
    public var context: UInt64 = 0

    public init(kind: MessageKind, from: NodeID, to: NodeID, term: UInt64) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
    }
}

extension Message: CustomStringConvertible {
    public var description: String {
        var text = "\(from)->\(to) \(kind) term=\(term)"
        switch kind {
        case .append:
            text += " log=\(logTerm)/\(index) commit=\(commit)"
            if !entries.isEmpty { text += " entries=[" + entries.map(\.shortDescription).joined(separator: " ") + "]" }
            if context > 0 { text += " read=\(context)" }
        case .appendResponse:
            text += reject ? " reject index=\(index) hint=\(logTerm)/\(rejectHint)" : " index=\(index)"
            if context > 0 { text += " read=\(context)" }
        case .vote, .preVote:
            text += " last=\(logTerm)/\(index)" + (force ? " force" : "")
        case .voteResponse, .preVoteResponse:
            text += reject ? " rejected" : " granted"
        case .heartbeat:
            text += " commit=\(commit)" + (context > 0 ? " read=\(context)" : "")
        case .heartbeatResponse:
            if context > 0 { text += " read=\(context)" }
        case .readIndex:
            text += " context=\(context)"
        case .readIndexResponse:
            text += " context=\(context) index=\(index)"
        case .timeoutNow:
            break
        case .snapshot:
            if let snapshot {
                let voters = snapshot.metadata.membership.voters.sorted().map(String.init).joined(separator: ",")
                text += " snapshot=\(snapshot.metadata.term)/\(snapshot.metadata.index) voters=(\(voters))"
                let learners = snapshot.metadata.membership.learners.sorted().map(String.init).joined(separator: ",")
                if !learners.isEmpty { text += " learners=(\(learners))" }
            }
        }
        return text
    }
}

extension Entry {
    /// `term/index` and a readable payload, for traces.
    public var shortDescription: String {
        switch kind {
        case .membershipChange:
            return "\(term)/\(index) " + (MembershipChange(encoded: data).map { "(\($0))" } ?? "(bad membership change)")
        case .normal:
            if data.isEmpty { return "\(term)/\(index)" }
            let printable = data.allSatisfy { $0 >= 0x20 && $0 < 0x7f }
            return "\(term)/\(index) " + (printable ? String(decoding: data, as: UTF8.self) : "<\(data.count) bytes>")
        }
    }
}
