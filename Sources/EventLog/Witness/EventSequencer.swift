/// The witness leader's time source and report coalescing (DESIGN §3, §4), as a pure core:
/// the shell passes in its monotonic clock and proposes the records this returns.
///
/// - Every record is stamped with the leader's clock since its term began, so durations are
///   only ever measured within one term.
/// - Node reports received during a tick are coalesced — the latest per node — into one
///   `nodeReports` record per formation at the next tick, so the log grows by about one entry
///   per tick whatever the number of nodes. Each report carries a token; the shell acknowledges
///   a token once the record holding it commits (the primary's lease rests on that).
/// - A tick with nothing to say appends a `tick` record, so log time advances while idle.
public struct EventSequencer: Sendable {
    /// A caller's handle on one submitted report, acknowledged when its record commits.
    public typealias ReportToken = UInt64

    public struct Configuration: Sendable {
        /// How often reports are flushed and, when idle, a tick is appended.
        public var tickIntervalNanos: UInt64 = 500_000_000
        /// The most distinct nodes whose reports wait for the next tick (per formation).
        public var pendingNodesMax = EventRecord.reportsPerEntryMax

        public init() {}
    }

    /// A record to propose, with the report tokens it acknowledges once committed.
    public struct Proposal: Sendable, Equatable {
        public var record: EventRecord
        public var tokens: [ReportToken]
    }

    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case notLeader
        case tooManyPendingNodes(formation: String, maximum: Int)

        public var description: String {
            switch self {
            case .notLeader: return "this witness is not the leader"
            case .tooManyPendingNodes(let formation, let maximum):
                return "formation \(formation) has reports from more than \(maximum) nodes waiting for the next tick"
            }
        }
    }

    public let configuration: Configuration
    /// The Raft term this witness leads, if any.
    public private(set) var leadingTerm: UInt64?
    /// The monotonic clock when the current term began on this witness.
    private var termStartNanos: UInt64 = 0
    /// The clock when a record was last proposed, for idle ticks.
    private var lastProposalNanos: UInt64 = 0
    /// Per formation, per node: the latest report and every token waiting on it.
    private var pending: [String: [PGNodeID: (report: NodeReport, tokens: [ReportToken])]] = [:]
    /// Per formation, per node: the state and postgres status of the latest report submitted
    /// in this term, to tell a report that brings news from a heartbeat.
    private var lastSubmitted: [String: [PGNodeID: ReportedStatus]] = [:]

    private struct ReportedStatus: Equatable {
        var reached: NodeState
        var postgresRunning: Bool
    }

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// This witness became leader of `term` at `nowNanos`: log time restarts at zero.
    public mutating func becameLeader(term: UInt64, nowNanos: UInt64) {
        leadingTerm = term
        termStartNanos = nowNanos
        lastProposalNanos = nowNanos
        pending = [:]
        lastSubmitted = [:]
    }

    /// This witness no longer leads. Pending reports are dropped; the returned tokens must be
    /// failed so their senders report again to the new leader.
    public mutating func steppedDown() -> [ReportToken] {
        leadingTerm = nil
        let dropped = pending.values.flatMap { $0.values.flatMap(\.tokens) }
        pending = [:]
        lastSubmitted = [:]
        return dropped.sorted()
    }

    /// Stamps an event for immediate proposal (registrations, operator requests, …).
    public mutating func stamp(
        _ event: ClusterEvent, formation: String, nowNanos: UInt64, wallTimeMillis: Int64
    ) throws(Refusal) -> EventRecord {
        guard leadingTerm != nil else { throw .notLeader }
        lastProposalNanos = max(lastProposalNanos, nowNanos)
        return EventRecord(formation: formation, stamp: stamp(nowNanos, wallTimeMillis), event: event)
    }

    /// Queues a node's report for the next tick; a newer report of the same node replaces the
    /// older one, and both tokens are acknowledged by the same record. Returns whether the
    /// report brings news: a state reached or postgres started or stopped since the node's
    /// previous report in this term. The shell then flushes at once (`tick` now) rather than
    /// at the next tick: an election waits for such reports (the standbys' LSNs in
    /// report_lsn), and half a tick interval on average per round adds up.
    @discardableResult
    public mutating func submit(_ report: NodeReport, formation: String, token: ReportToken) throws(Refusal) -> Bool {
        guard leadingTerm != nil else { throw .notLeader }
        var reports = pending[formation, default: [:]]
        if reports[report.node] == nil && reports.count >= configuration.pendingNodesMax {
            throw .tooManyPendingNodes(formation: formation, maximum: configuration.pendingNodesMax)
        }
        let tokens = (reports[report.node]?.tokens ?? []) + [token]
        reports[report.node] = (report, tokens)
        pending[formation] = reports
        let status = ReportedStatus(reached: report.reachedState, postgresRunning: report.postgresRunning)
        let previous = lastSubmitted[formation]?[report.node]
        lastSubmitted[formation, default: [:]][report.node] = status
        return previous.map { $0 != status } ?? false
    }

    /// The records to propose at a tick: one coalesced report record per formation with
    /// pending reports (formations and nodes in sorted order), or a `tick` record when nothing
    /// was proposed for a whole tick interval, or at once when `deadline` (a time at which the
    /// passage of time changes a decision, see `WitnessApplication.nextDeadlineNanos`).
    public mutating func tick(nowNanos: UInt64, wallTimeMillis: Int64, deadline: Bool = false) -> [Proposal] {
        guard leadingTerm != nil else { return [] }
        var proposals: [Proposal] = []
        for formation in pending.keys.sorted() {
            let reports = pending[formation]!
            let nodes = reports.keys.sorted()
            proposals.append(
                Proposal(
                    record: EventRecord(
                        formation: formation, stamp: stamp(nowNanos, wallTimeMillis),
                        event: .nodeReports(nodes.map { reports[$0]!.report })),
                    tokens: nodes.flatMap { reports[$0]!.tokens }))
        }
        pending = [:]
        if proposals.isEmpty && (deadline || nowNanos >= lastProposalNanos + configuration.tickIntervalNanos) {
            proposals.append(Proposal(record: EventRecord(stamp: stamp(nowNanos, wallTimeMillis), event: .tick), tokens: []))
        }
        if !proposals.isEmpty { lastProposalNanos = max(lastProposalNanos, nowNanos) }
        return proposals
    }

    /// The log time (`LogStamp.leaderClockNanos`) an entry stamped at `nowNanos` would carry.
    public func leaderClockNanos(at nowNanos: UInt64) -> UInt64 {
        stamp(nowNanos, 0).leaderClockNanos
    }

    private func stamp(_ nowNanos: UInt64, _ wallTimeMillis: Int64) -> LogStamp {
        // A clock that went backwards (it must not: it is monotonic) stamps the term start.
        LogStamp(leaderClockNanos: nowNanos >= termStartNanos ? nowNanos - termStartNanos : 0, wallTimeMillis: wallTimeMillis)
    }
}
