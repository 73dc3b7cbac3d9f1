import EventLog

extension ClusterState {
    /// The earliest log time after now at which the passage of time alone changes what the
    /// policy decides: a node becoming unhealthy (no report for the unhealthy timeout, or
    /// postgres down for the restart timeout), or a new primary's wait for the standbys' last
    /// replies (`standbyRepliesMayHoldOldPrimary`) running out. The witness leader appends a
    /// tick at that time (`WitnessApplication.nextDeadlineNanos`), so a failover or a
    /// promotion is decided then rather than at the next heartbeat batch, up to half a second
    /// later. Other timers are decided by the next entry, as before.
    public var nextDeadlineNanos: UInt64? {
        let unhealthy = UInt64(settings.nodeUnhealthyTimeoutMillis) * 1_000_000
        let restart = UInt64(settings.postgresRestartTimeoutMillis) * 1_000_000
        var deadlines: [UInt64] = []
        for node in sortedNodes where node.lastReport != nil {
            deadlines.append(node.lastHeardNanos + unhealthy + 1)
            if let since = node.postgresDownSinceNanos { deadlines.append(since + restart + 1) }
        }
        if let held = standbyRepliesHoldUntilNanos { deadlines.append(held) }
        return deadlines.filter { $0 > nowNanos }.min()
    }

    /// `nextDeadlineNanos` on the current term's leader clock (`LogStamp.leaderClockNanos`),
    /// which the witness leader compares with its own.
    public var nextDeadlineStampNanos: UInt64? {
        nextDeadlineNanos.map { $0 >= clockOffsetNanos ? $0 - clockOffsetNanos : 0 }
    }
}
