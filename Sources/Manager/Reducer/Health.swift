import EventLog

extension ClusterState {
    /// A node is unhealthy when no report of it committed for `nodeUnhealthyTimeout` of log
    /// time, or its reports say postgres has been down for longer than
    /// `postgresRestartTimeout` (DESIGN §4).
    public func isHealthy(_ node: NodeRecord) -> Bool {
        if nowNanos >= node.lastHeardNanos,
            nowNanos - node.lastHeardNanos > UInt64(settings.nodeUnhealthyTimeoutMillis) * 1_000_000
        {
            return false
        }
        if let since = node.postgresDownSinceNanos, nowNanos >= since,
            nowNanos - since > UInt64(settings.postgresRestartTimeoutMillis) * 1_000_000
        {
            return false
        }
        return node.lastReport != nil
    }

    /// Whether the node's primary lease has provably run out: nothing of it committed for the
    /// unhealthy timeout, which exceeds the lease by the drift margin `FormationSettings`
    /// enforces, measured on this term's clock.
    public func leaseExpired(_ node: NodeRecord) -> Bool {
        nowNanos >= node.lastHeardNanos
            && nowNanos - node.lastHeardNanos > UInt64(leaseExpiryMillis) * 1_000_000
    }

    /// The unhealthy timeout after which an old primary's lease has run out: the longer of
    /// the current and the former one (`formerUnhealthyMillis`).
    public var leaseExpiryMillis: UInt32 { max(settings.nodeUnhealthyTimeoutMillis, formerUnhealthyMillis ?? 0) }

    /// The lease an old primary may still hold to: the longer of the current and the former
    /// one (`formerLeaseMillis`).
    public var holdLeaseMillis: UInt32 { max(settings.primaryLeaseMillis, formerLeaseMillis ?? 0) }

    /// Whether the primary sees `node` streaming to it: its reports have not shown it cut off
    /// (`streamsInView` false) for longer than the unhealthy timeout. Only
    /// the primary's reports prove that, so the time counts up to its last report: the last
    /// view of a primary that fell silent (frozen, cut off, dead) is not evidence that grows
    /// with time, and must not narrow it to wait_primary, where no failover starts.
    public func streamsToPrimary(_ node: NodeRecord) -> Bool {
        guard let since = node.unstreamedSinceNanos else { return true }
        let end = min(nowNanos, primaryNode?.lastHeardNanos ?? nowNanos)
        guard end >= since else { return true }
        return end - since <= UInt64(settings.nodeUnhealthyTimeoutMillis) * 1_000_000
    }

    /// Whether the primary's latest report shows `node` streaming to it with a reply younger
    /// than the unhealthy timeout. Decisions that lean on a standby holding the primary's
    /// writes (back to primary from wait_primary, a switchover candidate) need this evidence;
    /// `streamsToPrimary` gives a standby the benefit of the doubt for the unhealthy timeout
    /// (and again at every new term), which only a decision to stop waiting for it may use.
    public func seenStreamingByPrimary(_ node: NodeRecord) -> Bool {
        // Never true where `streamsToPrimary` is false: rules that widen on this and narrow on
        // that would undo each other (primary, wait_primary, primary…) within one entry.
        guard streamsToPrimary(node) else { return false }
        guard let primary = primaryNode, primary.id != node.id, let report = primary.lastReport, report.standbysKnown else { return true }
        return report.standbys.contains { $0.node == node.id && streamsInView($0) }
    }

    /// Whether one standby view shows the standby streaming: a WAL sender streaming, and a
    /// reply within the unhealthy timeout (not the lease: an idle standby replies once a
    /// second, `wal_receiver_status_interval`, and the view itself is up to a heartbeat old).
    func streamsInView(_ view: StandbyView) -> Bool {
        view.streaming && view.replyAgeMillis <= settings.nodeUnhealthyTimeoutMillis
    }

    /// One word for `pgquorum status`.
    public func healthWord(_ node: NodeRecord) -> String {
        if node.lastReport == nil { return "unknown" }
        return isHealthy(node) ? "good" : "bad"
    }
}
