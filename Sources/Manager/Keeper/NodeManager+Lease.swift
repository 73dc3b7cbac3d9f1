import EventLog
import Foundation
import NodeControl

/// The primary's lease and the watchdog (DESIGN §5 rule 1).
extension NodeManager {
    func nowNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Checks the primary's lease whenever it may have changed: at each acknowledged report
    /// (which renews it), when it runs out, every 100 ms while only the synchronous standbys'
    /// replies hold it, and at least every `leaseCheckIdleNanos` (a postgres found writable
    /// that should not be). A check at every one of those moments is all a check ten times a
    /// second did: the watchdog's deadline moves only with a renewal.
    /// Under systemd with `WatchdogSec=`, each round that checked the lease also tells systemd
    /// the manager is alive: a manager whose lease checks stop is killed and restarted (its
    /// postgres dies with it), on top of the watchdog process's own fencing.
    func leaseLoop() async {
        var lastKeepaliveNanos: UInt64 = 0
        let keepaliveNanos = notify.watchdogInterval.map { UInt64($0.components.seconds) * 1_000_000_000 / 2 + UInt64($0.components.attoseconds / 2_000_000_000) }
        while !Task.isCancelled && !isStopping {
            var next = min(await enforceLease(), Self.leaseCheckIdleNanos)
            if let keepaliveNanos {
                if nowNanos() >= lastKeepaliveNanos + keepaliveNanos {
                    notify.watchdog()
                    lastKeepaliveNanos = nowNanos()
                }
                next = min(next, keepaliveNanos)
            }
            await leaseWake.wait(timeout: .nanoseconds(Int64(max(next, 1_000_000))))
        }
    }

    /// The longest a lease check waits for a reason to check again.
    static let leaseCheckIdleNanos: UInt64 = 500_000_000
    /// How often the lease is checked while fresh replies of synchronous standbys alone hold
    /// it (they age continuously), or while postgres is being fenced.
    static let leaseCheckHeldNanos: UInt64 = 100_000_000

    /// The lease is held on what postgres is, not on the state the log shows it reached (an
    /// action may have promoted it before its `stateReached` committed): while postgres may
    /// take writes, the lease runs from the send time of the last committed report. Once it
    /// ran out, postgres is stopped, unless fresh replies from enough synchronous standbys
    /// still hold it (`LeaseRules`).
    ///
    /// The watchdog is armed at every check with the same deadline plus `watchdogGrace`, so a
    /// manager that stops checking (frozen, deadlocked) still fences postgres within that
    /// grace of the lease's end; a live manager, checking again when the lease ends, re-arms
    /// it before (with the hold of fresh synchronous standbys, when the lease ran out).
    /// Returns how long until the lease needs checking again, at the latest.
    @discardableResult
    func enforceLease() async -> UInt64 {
        let snapshot = shared.withLock { $0 }
        let state = snapshot.state
        let loggedWritable = state[node].map { Self.writableStates.contains($0.reached) } ?? false
        let maybeWritable = loggedWritable || snapshot.lastObservation.map { !$0.inRecovery } ?? true
        // A fenced manager still checks a postgres started since the fence (an action that
        // restarts it may never see its state reached commit; the simulation found one left
        // writable without a lease); only the postmaster being stopped is left alone.
        let beingFenced = snapshot.fenced && snapshot.fencedPostmaster == postgres.pid
        guard postgres.isRunning, let pid = postgres.pid, maybeWritable, !beingFenced, let acked = snapshot.lastAckedSentNanos else {
            disarmWatchdog()
            return beingFenced ? Self.leaseCheckHeldNanos : Self.leaseCheckIdleNanos
        }
        if let remaining = LeaseRules.remainingByReport(nowNanos: nowNanos(), lastAckedSentNanos: acked, leaseMillis: state.settings.primaryLeaseMillis) {
            armWatchdog(pid, remainingNanos: remaining + Self.watchdogGraceNanos)
            // Checked again at the next renewal, or when it runs out.
            return remaining
        }
        // The lease ran out: ask postgres what it is now, and who replies to it.
        let postgres = self.postgres
        let status = try? await blocking { try postgres.replicationStatus() }
        if let status, status.inRecovery {
            disarmWatchdog()
            return Self.leaseCheckIdleNanos
        }
        let k = Int(state.settings.numberSyncStandbys)
        let quorumNames = Set(state.quorumStandbys(excluding: node).map { ClusterState.applicationName(of: $0.id) })
        let hold = LeaseRules.remainingBySynchronousStandbys(
            status?.peers ?? [], quorumNames: quorumNames, k: k, leaseMillis: state.settings.primaryLeaseMillis)
        if let remaining = hold.remainingNanos {
            armWatchdog(pid, remainingNanos: remaining + Self.watchdogGraceNanos)
            return min(remaining, Self.leaseCheckHeldNanos)
        }
        logger.error(
            "primary lease ran out without a committed report or fresh replies from enough synchronous standbys: fencing postgres",
            metadata: ["fresh standbys": "\(hold.freshStandbys)", "k": "\(k)", "status": status == nil ? "postgres did not answer" : "not in recovery"])
        shared.withLock { shared in
            shared.fenced = true
            shared.fencedPostmaster = pid
        }
        // The watchdog stays armed a moment longer: if the shutdown hangs, it kills.
        armWatchdog(pid, remainingNanos: 1_000_000_000)
        await postgres.stop(.fast)
        disarmWatchdog()
        return Self.leaseCheckHeldNanos
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
