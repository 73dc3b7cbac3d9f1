import EventLog
import Foundation
import NodeControl

/// Heartbeats and the primary's lease (DESIGN §5 rule 1).
extension NodeManager {
    func nowNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Sends a report every heartbeat interval, each in a task of its own: a report waiting
    /// for a quorum that is gone never delays the next one, nor the lease check.
    func heartbeatLoop() async {
        await withTaskGroup(of: Void.self) { reports in
            while !Task.isCancelled && !isStopping {
                let settings = shared.withLock { $0.state.settings }
                let sent = nowNanos()
                let report = observeAndBuildReport(sentAt: sent)
                reports.addTask {
                    do {
                        let index = try await self.client.report(report, formation: self.configuration.formation)
                        self.shared.withLock { shared in
                            if sent > (shared.lastAckedSentNanos ?? 0) { shared.lastAckedSentNanos = sent }
                            shared.lastAckedIndex = max(shared.lastAckedIndex, index)
                        }
                    } catch {
                        self.logger.warning("report not acknowledged", metadata: ["error": "\(error)"])
                    }
                }
                let elapsed = nowNanos() - sent
                let interval = UInt64(settings.heartbeatIntervalMillis) * 1_000_000
                if elapsed < interval { try? await Task.sleep(for: .nanoseconds(Int64(interval - elapsed))) }
            }
            reports.cancelAll()
        }
    }

    /// Checks the primary's lease ten times a second.
    func leaseLoop() async {
        while !Task.isCancelled && !isStopping {
            await enforceLease()
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Observes postgres once every heartbeat interval, on a thread of its own: a slow or
    /// hung postgres delays the observation, never the heartbeat nor the lease check.
    func observationLoop() async {
        while !Task.isCancelled && !isStopping {
            let interval = shared.withLock { $0.state.settings.heartbeatIntervalMillis }
            let started = nowNanos()
            await refreshObservation()
            let elapsed = nowNanos() - started
            let intervalNanos = UInt64(interval) * 1_000_000
            if elapsed < intervalNanos { try? await Task.sleep(for: .nanoseconds(Int64(intervalNanos - elapsed))) }
        }
    }

    /// Observes postgres now. An observation replaces the stored one only if it started
    /// later: one begun before an action ended never hides one taken after it (a report of
    /// `report_lsn` must carry the LSN frozen by the action, not one from before).
    func refreshObservation() async {
        let started = nowNanos()
        guard postgres.isRunning else {
            shared.withLock { $0.lastObservation = nil }
            return
        }
        let postgres = self.postgres
        guard let observation = try? await blocking({ try postgres.observe() }) else { return }
        shared.withLock { shared in
            guard started > (shared.lastObservedNanos ?? 0) else { return }
            shared.lastObservation = observation
            shared.lastObservedNanos = started
        }
    }

    /// A report from the latest observation. Postgres counts as running while its process
    /// lives and it answered an observation within the unhealthy timeout: a slow answer is
    /// not a dead postgres.
    func observeAndBuildReport(sentAt: UInt64) -> NodeReport {
        let (reached, observation, observedAt, unhealthyMillis) = shared.withLock {
            ($0.state[node]?.reached ?? .initial, $0.lastObservation, $0.lastObservedNanos, $0.state.settings.nodeUnhealthyTimeoutMillis)
        }
        var report = NodeReport(node: node, reachedState: reached, postgresRunning: false, sentAtNanos: sentAt)
        guard postgres.isRunning, let observation, let observedAt,
            sentAt < observedAt + UInt64(unhealthyMillis) * 1_000_000
        else { return report }
        report.postgresRunning = true
        // A standby's control file names its timeline only after a restartpoint; the WAL
        // receiver knows the timeline it streams now.
        report.timeline = observation.inRecovery ? (observation.walReceiver?.receivedTimeline ?? observation.timeline) : observation.timeline
        report.flushLSN = observation.inRecovery ? (observation.walReceiver?.flushedLSN ?? observation.replayLSN) : observation.currentLSN
        report.replayLSN = observation.inRecovery ? observation.replayLSN : observation.currentLSN
        if !observation.inRecovery {
            // The primary's view of its standbys: a link cut one way shows only here.
            // The reply ages as of now: the observation may be a few hundred ms old.
            report.standbys = StandbyView.primaryView(
                observation.replication, currentLSN: observation.currentLSN, observedMillisAgo: (sentAt > observedAt ? sentAt - observedAt : 0) / 1_000_000)
        }
        return report
    }

    /// The lease is held on what postgres is, not on the state the log shows it reached (an
    /// action may have promoted it before its `stateReached` committed): while postgres may
    /// take writes, the lease runs from the send time of the last committed report. Once it
    /// ran out, postgres is stopped, unless fresh replies from enough synchronous standbys
    /// still hold it (`LeaseRules`).
    ///
    /// The watchdog is armed at every check with the same deadline plus `watchdogGrace`, so a
    /// manager that stops checking (frozen, deadlocked) still fences postgres within that
    /// grace of the lease's end; a live manager, checking every 100 ms, re-arms it before (with
    /// the hold of fresh synchronous standbys, when the lease ran out).
    func enforceLease() async {
        let snapshot = shared.withLock { $0 }
        let state = snapshot.state
        let loggedWritable = state[node].map { Self.writableStates.contains($0.reached) } ?? false
        let maybeWritable = loggedWritable || snapshot.lastObservation.map { !$0.inRecovery } ?? true
        guard postgres.isRunning, let pid = postgres.pid, maybeWritable, !snapshot.fenced, let acked = snapshot.lastAckedSentNanos else {
            disarmWatchdog()
            return
        }
        if let remaining = LeaseRules.remainingByReport(nowNanos: nowNanos(), lastAckedSentNanos: acked, leaseMillis: state.settings.primaryLeaseMillis) {
            armWatchdog(pid, remainingNanos: remaining + Self.watchdogGraceNanos)
            return
        }
        // The lease ran out: ask postgres what it is now, and who replies to it.
        let postgres = self.postgres
        let status = try? await blocking { try postgres.replicationStatus() }
        if let status, status.inRecovery {
            disarmWatchdog()
            return
        }
        let k = Int(state.settings.numberSyncStandbys)
        let quorumNames = Set(state.quorumStandbys(excluding: node).map { ClusterState.applicationName(of: $0.id) })
        let hold = LeaseRules.remainingBySynchronousStandbys(
            status?.peers ?? [], quorumNames: quorumNames, k: k, leaseMillis: state.settings.primaryLeaseMillis)
        if let remaining = hold.remainingNanos {
            armWatchdog(pid, remainingNanos: remaining + Self.watchdogGraceNanos)
            return
        }
        logger.error(
            "primary lease ran out without a committed report or fresh replies from enough synchronous standbys: fencing postgres",
            metadata: ["fresh standbys": "\(hold.freshStandbys)", "k": "\(k)", "status": status == nil ? "postgres did not answer" : "not in recovery"])
        shared.withLock { $0.fenced = true }
        // The watchdog stays armed a moment longer: if the shutdown hangs, it kills.
        armWatchdog(pid, remainingNanos: 1_000_000_000)
        await postgres.stop(.fast)
        disarmWatchdog()
    }

    /// How long after the lease's end the watchdog kills postgres when the manager stopped
    /// renewing it: five lease checks. The reducer elects a new primary only once a node was
    /// silent for the unhealthy timeout, which settings keep at least lease + grace.
    static let watchdogGraceNanos = UInt64(FormationSettings.watchdogGraceMillis) * 1_000_000

    private func armWatchdog(_ pid: pid_t, remainingNanos: UInt64) {
        guard let watchdog else { return }
        do {
            try watchdog.arm(postmaster: pid, remaining: .nanoseconds(Int64(remainingNanos)))
        } catch {
            logger.error("the watchdog cannot be armed; the manager alone fences postgres", metadata: ["error": "\(error)"])
        }
    }

    private func disarmWatchdog() {
        do {
            try watchdog?.disarm()
        } catch {
            logger.error("the watchdog cannot be disarmed", metadata: ["error": "\(error)"])
        }
    }
}
