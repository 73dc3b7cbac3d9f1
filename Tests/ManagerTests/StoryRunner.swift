import EventLog

@testable import Manager

/// Drives the reducer with the entries a witness leader would commit: registrations,
/// coalesced heartbeats every 500 ms of log time, states reached, operator requests. Node
/// managers are simulated as obedient: `converge` makes every reporting node reach its goal.
struct StoryRunner {
    /// The stories were written for these timings (the defaults before issue 19: heartbeats
    /// every 500 ms, unhealthy after 2.5 s, a 1.5 s lease); a story changes them with its
    /// own `settings` commands.
    static let storySettings: FormationSettings = {
        var settings = FormationSettings()
        settings.heartbeatIntervalMillis = 500
        settings.nodeUnhealthyTimeoutMillis = 2_500
        settings.primaryLeaseMillis = 1_500
        return settings
    }()

    var state: ClusterState
    var log: [LogEntry] = []
    var term: UInt64 = 1
    var clockNanos: UInt64 = 0
    /// Per node: what its simulated manager reports.
    var lsnMB: [PGNodeID: UInt64] = [:]
    var timeline: [PGNodeID: UInt32] = [:]
    var postgresRunning: [PGNodeID: Bool] = [:]
    /// Nodes whose manager is cut off: nothing of theirs reaches the log.
    var down: Set<PGNodeID> = []
    /// Standbys cut off from the primary only: its reports show them not streaming.
    var unlinked: Set<PGNodeID> = []
    /// Standbys whose WAL receiver is gone since the story clock given (the primary died):
    /// their reports from report_lsn say so (`NodeReport.followingEndedMillisAgo`).
    var receiverGoneSince: [PGNodeID: UInt64] = [:]
    var lastWaiting: String?

    static let heartbeatNanos: UInt64 = 500_000_000

    /// A runner whose log starts with `settings` in force (as if set before the story).
    init(settings: FormationSettings = StoryRunner.storySettings) {
        state = ClusterState()
        state.settings = settings
    }

    mutating func append(_ event: ClusterEvent) -> [GoalChange] {
        let entry = LogEntry(
            index: UInt64(log.count + 1), term: term,
            record: EventRecord(stamp: LogStamp(leaderClockNanos: clockNanos, wallTimeMillis: Int64(clockNanos / 1_000_000)), event: event))
        log.append(entry)
        return state.apply(entry)
    }

    func report(_ id: PGNodeID, reached: NodeState) -> NodeReport {
        let stopped: Set<NodeState> = [.draining, .demoteTimeout, .demoted, .joinSecondary, .prepareMaintenance, .dropped]
        let running = (postgresRunning[id] ?? true) && !stopped.contains(reached)
        let lsn = (lsnMB[id] ?? 0) << 20
        var report = NodeReport(
            node: id, reachedState: reached, postgresRunning: running, timeline: timeline[id] ?? 1,
            flushLSN: lsn, replayLSN: lsn, syncState: .unknown, lagBytes: 0, sentAtNanos: clockNanos)
        if reached == .reportLSN, let since = receiverGoneSince[id], since <= clockNanos {
            report.followingEndedMillisAgo = UInt32((clockNanos - since) / 1_000_000)
        }
        // A primary sees every standby that follows it and runs, unless the link is cut.
        if ClusterState.writableGoals.contains(reached) {
            report.standbys = state.sortedNodes.filter { node in
                node.id != id && !unlinked.contains(node.id) && (postgresRunning[node.id] ?? true)
                    && [.catchingUp, .secondary, .waitMaintenance].contains(node.reached)
            }.map { StandbyView(node: $0.id, streaming: true, syncState: .quorum, flushLagBytes: 0, replyAgeMillis: 100) }
        }
        return report
    }

    /// One heartbeat entry with a report from every node that is up.
    mutating func heartbeat() -> [GoalChange] {
        let reports = state.sortedNodes.filter { !down.contains($0.id) }.map { report($0.id, reached: $0.reached) }
        return append(reports.isEmpty ? .tick : .nodeReports(reports))
    }

    /// Every node that is up reaches its goal, one entry per step, until nothing changes.
    mutating func converge() -> [GoalChange] {
        var changes: [GoalChange] = []
        for _ in 0..<64 {
            let pending = state.sortedNodes.filter { !down.contains($0.id) && !$0.isConverged }
            guard !pending.isEmpty else { return changes }
            for node in pending {
                // A node promoted by the policy writes on the new timeline.
                if node.goal == .stopReplication { timeline[node.id] = (timeline[node.id] ?? 1) + 1 }
                // Fast-forward fetches the most advanced standby's WAL.
                if node.goal == .fastForward, let source = state.fastForwardSource { lsnMB[node.id] = lsnMB[source.id] }
                // A standby that follows the primary streams its timeline and catches up with it.
                if [.catchingUp, .secondary].contains(node.goal), let primary = state.primaryNode, primary.id != node.id {
                    timeline[node.id] = timeline[primary.id] ?? 1
                    lsnMB[node.id] = max(lsnMB[node.id] ?? 0, lsnMB[primary.id] ?? 0)
                }
                // As a real manager: it reaches the goal, says so, then reports from there.
                changes += append(.stateReached(node: node.id, state: node.goal))
                changes += append(.nodeReports([report(node.id, reached: node.goal)]))
            }
        }
        preconditionFailure("converge did not settle")
    }

    /// Lets `seconds` of log time pass with heartbeats every 500 ms.
    mutating func elapse(milliseconds: UInt64) -> [GoalChange] {
        var changes: [GoalChange] = []
        var left = milliseconds * 1_000_000
        while left > 0 {
            let step = min(left, Self.heartbeatNanos)
            clockNanos += step
            left -= step
            changes += heartbeat()
        }
        return changes
    }

    /// A Raft leader change: a new term whose clock starts at zero. With `carriedNanos`, its
    /// first entry says at most how long ago the last entry was stamped (`termStarted`), at
    /// most what really passed since (`carried(fraction:)`).
    mutating func newTerm(carriedNanos: UInt64? = nil) -> [GoalChange] {
        term += 1
        clockNanos = 0
        return append(carriedNanos.map { .termStarted(carriedNanos: $0) } ?? .tick)
    }

    /// Log time since the last entry was stamped, times `fraction` (a new leader knows a
    /// bound no larger than that).
    func carried(fraction: Double) -> UInt64 {
        guard let last = log.last, last.term == term, clockNanos >= last.record.stamp.leaderClockNanos else { return 0 }
        return UInt64(Double(clockNanos - last.record.stamp.leaderClockNanos) * min(max(fraction, 0), 1))
    }

    func statusLines() -> [String] {
        state.sortedNodes.map { node in
            "\(node.id) \(node.registration.name): reached=\(node.reached.rawValue) goal=\(node.goal.rawValue) "
                + "health=\(state.healthWord(node)) lsn=\(node.lsn >> 20)MB tl=\(node.timeline) priority=\(node.registration.candidatePriority)"
        }
    }
}
