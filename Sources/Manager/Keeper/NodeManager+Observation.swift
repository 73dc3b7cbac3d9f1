import EventLog
import Foundation
import NodeControl

/// Observing postgres and reporting it: observations on a loop of their own, reports every
/// heartbeat from the latest observation (DESIGN §4).
extension NodeManager {
    /// Sends a report every heartbeat interval, each in a task of its own: a report waiting
    /// for a quorum that is gone never delays the next one, nor the lease check.
    func heartbeatLoop() async {
        await withTaskGroup(of: Void.self) { reports in
            while !Task.isCancelled && !isStopping {
                let settings = shared.withLock { $0.state.settings }
                let sent = nowNanos()
                let report = observeAndBuildReport(sentAt: sent)
                reports.addTask { await self.send(report, sentAt: sent) }
                let elapsed = nowNanos() - sent
                let interval = UInt64(settings.heartbeatIntervalMillis) * 1_000_000
                if elapsed < interval { await executor.sleep(for: .nanoseconds(Int64(interval - elapsed))) }
            }
            reports.cancelAll()
        }
    }

    /// Reports now, beside the heartbeats: after a state reached, so that the witnesses flush
    /// the news at once (an election waits for the standbys' reports from report_lsn).
    func reportNow() {
        let sent = nowNanos()
        let report = observeAndBuildReport(sentAt: sent)
        Task(executorPreference: executor) { await self.send(report, sentAt: sent) }
    }

    /// Sends one report; once it commits, the lease runs from its send time.
    private func send(_ report: NodeReport, sentAt sent: UInt64) async {
        do {
            let index = try await client.report(report, formation: configuration.formation)
            shared.withLock { shared in
                if sent > (shared.lastAckedSentNanos ?? 0) { shared.lastAckedSentNanos = sent }
                shared.lastAckedIndex = max(shared.lastAckedIndex, index)
            }
            leaseWake.signal()
        } catch {
            logger.warning("report not acknowledged", metadata: ["error": "\(error)"])
        }
    }

    /// Observes postgres once every heartbeat interval, on a thread of its own: a slow or
    /// hung postgres delays the observation, never the heartbeat nor the lease check.
    func observationLoop() async {
        while !Task.isCancelled && !isStopping {
            let started = nowNanos()
            let interval = shared.withLock { shared in
                shared.observationLoopNanos = started
                return shared.state.settings.heartbeatIntervalMillis
            }
            await refreshObservation()
            let elapsed = nowNanos() - started
            let intervalNanos = UInt64(interval) * 1_000_000
            if elapsed < intervalNanos { await executor.sleep(for: .nanoseconds(Int64(intervalNanos - elapsed))) }
        }
    }

    /// Observes postgres now. An observation replaces the stored one only if it started
    /// later: one begun before an action ended never hides one taken after it (a report of
    /// `report_lsn` must carry the LSN frozen by the action, not one from before).
    func refreshObservation() async {
        let started = nowNanos()
        guard postgres.isRunning else {
            shared.withLock { shared in
                shared.lastObservation = nil
                shared.receiverWatch.unknown()
            }
            return
        }
        let postgres = self.postgres
        guard let observation = try? await blocking({ try postgres.observe() }) else { return }
        record(observation, startedNanos: started)
    }

    /// Keeps an observation that started later than the stored one, and notes it in the
    /// watch of the WAL receiver (`ReceiverWatch`).
    func record(_ observation: PostgresObservation, startedNanos started: UInt64) {
        let finished = nowNanos()
        shared.withLock { shared in
            guard started > (shared.lastObservedNanos ?? 0) else { return }
            shared.lastObservation = observation
            shared.lastObservedNanos = started
            shared.receiverWatch.observed(
                standbyWithoutReceiver: observation.inRecovery && observation.walReceiver == nil, startedNanos: started, finishedNanos: finished)
        }
    }

    /// A report from the latest observation. Postgres counts as running while its process
    /// lives and it answered an observation within the unhealthy timeout: a slow answer is
    /// not a dead postgres.
    func observeAndBuildReport(sentAt: UInt64) -> NodeReport {
        let (reached, observation, observedAt, unhealthyMillis, followingEnded) = shared.withLock {
            (
                $0.state[node]?.reached ?? .initial, $0.lastObservation, $0.lastObservedNanos, $0.state.settings.nodeUnhealthyTimeoutMillis,
                $0.followingEndedNanos
            )
        }
        var report = NodeReport(node: node, reachedState: reached, postgresRunning: false, sentAtNanos: sentAt)
        if reached == .reportLSN, let followingEnded, followingEnded <= sentAt {
            report.followingEndedMillisAgo = UInt32(clamping: (sentAt - followingEnded) / 1_000_000)
        }
        guard postgres.isRunning, let observation, let observedAt,
            sentAt < observedAt + UInt64(unhealthyMillis) * 1_000_000
        else { return report }
        report.postgresRunning = true
        // A standby's control file names its timeline only after a restartpoint; the WAL
        // receiver knows the timeline it streams now.
        report.timeline = observation.inRecovery ? (observation.walReceiver?.receivedTimeline ?? observation.timeline) : observation.timeline
        report.flushLSN = observation.inRecovery ? (observation.walReceiver?.flushedLSN ?? observation.replayLSN) : observation.currentLSN
        report.replayLSN = observation.inRecovery ? observation.replayLSN : observation.currentLSN
        report.pendingRestart = !observation.pendingRestart.isEmpty
        report.slots = observation.slots.prefix(NodeReport.standbysMax).compactMap { slot in
            guard let id = ClusterState.node(ofApplicationName: slot.name) else { return nil }
            guard let restart = slot.restartLSN, slot.walStatus != "lost" else { return SlotView(node: id, retainedBytes: .max) }
            return SlotView(node: id, retainedBytes: observation.currentLSN > restart ? observation.currentLSN - restart : 0)
        }
        if !observation.inRecovery {
            // The primary's view of its standbys: a link cut one way shows only here.
            // The reply ages as of now: the observation may be a few hundred ms old.
            report.standbys = StandbyView.primaryView(
                observation.replication, currentLSN: observation.currentLSN, observedMillisAgo: (sentAt > observedAt ? sentAt - observedAt : 0) / 1_000_000)
        }
        return report
    }
}
