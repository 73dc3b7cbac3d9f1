import EventLog

/// Follows the replayed log for primary handovers, for the metrics: one starts when the
/// primary's goal leaves the primary states for draining or maintenance — a failover when the
/// policy decided it (the primary was unhealthy), a switchover when an operator asked — and
/// ends when another node's goal becomes wait_primary, the new primary taking writes (the old
/// primary's goal going back to a primary state calls it off). Its duration
/// is measured in log time, between the leader's clock stamps when both entries are of one
/// Raft term, else between their wall-clock stamps.
public struct HandoverTracker: Sendable {
    public enum Kind: String, Sendable {
        case failover
        case switchover
    }

    public struct Handover: Sendable, Equatable {
        public var kind: Kind
        public var durationNanos: UInt64
    }

    private var started: (primary: PGNodeID, kind: Kind, term: UInt64, stamp: LogStamp)?

    public init() {}

    static let primaryGoals: Set<NodeState> = [.primary, .applySettings, .waitPrimary]
    static let handingOverGoals: Set<NodeState> = [.draining, .prepareMaintenance]

    /// Takes one replayed step; returns the handover it completed, if any.
    public mutating func observe(_ step: ClusterLog.Step) -> Handover? {
        let entry = step.entry
        var completed: Handover?
        for change in step.changes {
            if Self.primaryGoals.contains(change.from), Self.handingOverGoals.contains(change.to), started == nil {
                let kind: Kind
                if case .operatorRequest = entry.record.event { kind = .switchover } else { kind = .failover }
                started = (change.node, kind, entry.term, entry.record.stamp)
            } else if let start = started, change.node == start.primary, Self.primaryGoals.contains(change.to) {
                started = nil
            } else if change.to == .waitPrimary, let start = started, change.node != start.primary {
                let stamp = entry.record.stamp
                let nanos: UInt64
                if start.term == entry.term, stamp.leaderClockNanos >= start.stamp.leaderClockNanos {
                    nanos = stamp.leaderClockNanos - start.stamp.leaderClockNanos
                } else {
                    nanos = UInt64(max(0, stamp.wallTimeMillis - start.stamp.wallTimeMillis)) * 1_000_000
                }
                completed = Handover(kind: start.kind, durationNanos: nanos)
                started = nil
            }
        }
        return completed
    }
}
