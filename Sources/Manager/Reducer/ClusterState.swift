import EventLog

/// What the reducer knows about one PostgreSQL node.
public struct NodeRecord: Sendable, Equatable {
    public var registration: NodeRegistration
    /// The state its manager last said it reached.
    public var reached: NodeState = .initial
    /// The state the policy wants it in, and why.
    public var goal: NodeState = .initial
    public var goalReason: String = "registered"
    /// The last report committed for it (LSNs, timeline, postgres running).
    public var lastReport: NodeReport?
    /// When a report from it was last committed, in log time (nanoseconds).
    /// After a Raft leader change it keeps running when the new leader carried log time over,
    /// and restarts at the new term's first entry otherwise (DESIGN §4).
    public var lastHeardNanos: UInt64 = 0
    /// Since when its reports say postgres is down (nil while it runs).
    public var postgresDownSinceNanos: UInt64?
    /// The LSN it reported while in report_lsn, for an election.
    public var electionLSN: LSN?
    /// Added to the candidate priority for the current election (a switchover target).
    public var priorityBoost: Int = 0
    /// The log index of its latest registration, and of its latest goal assignment: a
    /// primary whose goal was assigned at or after a node's registration acted on a log that
    /// shows that node, so its pg_hba.conf admits it (the manager rewrites pg_hba.conf before
    /// every action), and the node may clone it (DESIGN §6, joining).
    public var registeredIndex: UInt64 = 0
    public var goalIndex: UInt64 = 0
    /// Since when the primary's reports show this standby not streaming to it, or its last
    /// reply older than the primary's lease (log time); nil while it streams, or while no
    /// primary reports. A standby cut off from the primary one way still reports healthy to
    /// the witnesses; this is how the policy sees the cut.
    public var unstreamedSinceNanos: UInt64?
    /// When this standby last stopped following a primary to report its LSN (log time): when
    /// it reached report_lsn, or earlier when its report shows its WAL receiver gone since
    /// (`NodeReport.followingEndedMillisAgo`). Its replies can hold an old primary until a
    /// lease and the watchdog's grace after it.
    public var followingEndedNanos: UInt64?
    /// PostgreSQL parameters set for this node alone (`pgquorum pg set --node`), over the
    /// formation's (`ClusterState.parameters`).
    public var parameters: [String: String] = [:]
    /// The log index of the latest request to restart its postgres (`pgquorum pg restart`;
    /// 0: none): its manager restarts postgres once for each newer index it sees.
    public var restartIndex: UInt64 = 0

    public var id: PGNodeID { registration.node }

    /// Whether the node's goal and reached state agree.
    public var isConverged: Bool { goal == reached }

    /// The LSN that counts for this node: its election report, else its flush (or replay) LSN.
    public var lsn: LSN {
        if let electionLSN { return electionLSN }
        guard let report = lastReport else { return 0 }
        return max(report.flushLSN, report.replayLSN)
    }

    public var timeline: UInt32 { lastReport?.timeline ?? 0 }

    public var effectivePriority: Int { Int(registration.candidatePriority) + priorityBoost }
}

/// The formation's state derived from the event log: every reader that replays the same log
/// computes the same value (DESIGN §3).
public struct ClusterState: Sendable, Equatable {
    public var formation: String
    public var settings = FormationSettings()
    public internal(set) var nodes = NodeTable()
    /// The log position of the last applied entry.
    public var appliedIndex: UInt64 = 0
    /// The Raft term of the last applied entry; log time is measured within it.
    public var term: UInt64 = 0
    /// Log time of the last applied entry, in nanoseconds: its leader clock (since its term
    /// began) plus `clockOffsetNanos`.
    public var nowNanos: UInt64 = 0
    /// What the current term adds to its leader's clock: the log time carried over from the
    /// terms before (`termStarted`), or 0 when timers restarted at the term.
    public internal(set) var clockOffsetNanos: UInt64 = 0
    /// Why the formation is waiting, when it waits (an election short of reports, …).
    public var waitingReason: String?
    /// The smallest non-zero number of synchronous standbys in force since the current primary
    /// was promoted (0 if it never had one): writes acknowledged under a smaller `k` need more
    /// reports to be found, so an election counts with this, not with the latest setting.
    public var electionSyncStandbys: UInt8 = FormationSettings().numberSyncStandbys
    /// The largest node id ever registered: a registration without an id (node 0) gets the
    /// next one, and a dropped node's id is never given again.
    public internal(set) var highestNodeID: PGNodeID = 0
    /// The requests applied lately per client (Raft thesis §6.3): a retried request whose
    /// first attempt committed too is recognised and applied once.
    public internal(set) var requests = RequestSessions()
    /// The primary narrowing its quorum after a quorum standby left (apply_settings), until it
    /// reports that k of the remaining standbys hold its writes: meanwhile the departed
    /// standby may be the only one that does, and no automatic failover starts. Dropped
    /// meanwhile, it stays narrowing until it reports stopped: it may still list the standby
    /// that left, whose replies can hold it, so no successor takes writes before that.
    public internal(set) var narrowingPrimary: PGNodeID?
    /// When the standby that stopped following a primary last stopped (the latest
    /// `NodeRecord.followingEndedNanos`, log time): until a lease and the watchdog's grace
    /// later, an old primary may still be held by the standbys' last replies (DESIGN §5
    /// rule 1).
    public internal(set) var lastStoppedFollowingNanos: UInt64?
    /// Whether the primary last took writes without synchronous replication (it reached
    /// wait_primary, not primary, since it last reached a writable state): no set of standbys
    /// is known to hold what it acknowledged since, so an election after it waits for every
    /// healthy quorum standby, not only for n − k + 1 of them.
    public internal(set) var primaryAcknowledgedAlone = false
    /// After settings shortened the lease or the unhealthy timeout, the longer former values:
    /// a primary cut off before it read the change still holds to them, so decisions about an
    /// old primary use the longer of both (`holdLeaseMillis`, `leaseExpiryMillis`) until a
    /// primary reaches a writable state on a goal set after the change (its manager read it).
    public internal(set) var formerLeaseMillis: UInt32?
    public internal(set) var formerUnhealthyMillis: UInt32?
    /// The index of the settings change that set them.
    public internal(set) var formerTimeoutsIndex: UInt64 = 0
    /// PostgreSQL parameters set through the log for every node (`pgquorum pg set`), by
    /// lower-case name (`ManagedParameters`).
    public internal(set) var parameters: [String: String] = [:]

    /// The policy's inputs when it last settled (see `policyInputs`). Not part of the state:
    /// a state without it runs the policy once more and reaches the same fixpoint.
    var settledInputs: [PolicyInput]?

    public init(formation: String = EventRecord.defaultFormation) {
        self.formation = formation
    }

    public static func == (lhs: ClusterState, rhs: ClusterState) -> Bool {
        lhs.formation == rhs.formation && lhs.settings == rhs.settings && lhs.nodes == rhs.nodes
            && lhs.appliedIndex == rhs.appliedIndex && lhs.term == rhs.term && lhs.nowNanos == rhs.nowNanos
            && lhs.waitingReason == rhs.waitingReason && lhs.electionSyncStandbys == rhs.electionSyncStandbys
            && lhs.highestNodeID == rhs.highestNodeID && lhs.requests == rhs.requests && lhs.narrowingPrimary == rhs.narrowingPrimary
            && lhs.lastStoppedFollowingNanos == rhs.lastStoppedFollowingNanos && lhs.clockOffsetNanos == rhs.clockOffsetNanos
            && lhs.primaryAcknowledgedAlone == rhs.primaryAcknowledgedAlone && lhs.formerLeaseMillis == rhs.formerLeaseMillis
            && lhs.formerUnhealthyMillis == rhs.formerUnhealthyMillis && lhs.formerTimeoutsIndex == rhs.formerTimeoutsIndex
            && lhs.parameters == rhs.parameters
    }

    /// The leader clock (`LogStamp.leaderClockNanos`) of the last applied entry.
    public var lastStampNanos: UInt64 { nowNanos >= clockOffsetNanos ? nowNanos - clockOffsetNanos : 0 }

    /// The node registered for postgres at `host:port`, if any: one address is one node.
    public func node(host: String, port: UInt16) -> NodeRecord? {
        sortedNodes.first { $0.registration.host == host && $0.registration.port == port }
    }

    /// The nodes in id order: every rule iterates in this order, so decisions never depend on
    /// hashing.
    public var sortedNodes: [NodeRecord] { nodes.records }

    public subscript(node: PGNodeID) -> NodeRecord? {
        get { nodes[node] }
        set { nodes[node] = newValue }
    }

    mutating func remove(_ node: PGNodeID) {
        nodes[node] = nil
    }
}
