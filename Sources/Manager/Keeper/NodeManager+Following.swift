import EventLog
import Foundation

/// Following the committed log (DESIGN §3.1): one linearizable replay of the whole log, then
/// a stream of what commits after it, pushed by a witness (the leader, when known) as it
/// commits. The follower is the only writer of the replayed state once the first replay is
/// done; the control loop steps on what it left, woken by each batch.
extension NodeManager {
    func followLoop() async {
        var failures = 0
        while !Task.isCancelled && !isStopping {
            do {
                try await refresh()
                break
            } catch {
                failures += 1
                logger.warning("reading the log failed; retrying", metadata: ["error": "\(error)", "attempt": "\(failures)"])
                try? await Task.sleep(for: .milliseconds(min(100 * failures, 2_000)))
            }
        }
        shared.withLock { $0.replayed = true }
        wake.signal()
        while !Task.isCancelled && !isStopping {
            let next = shared.withLock { $0.state.appliedIndex } + 1
            do {
                for try await item in client.stream(from: next, preferLeader: true, formation: configuration.formation) {
                    try apply(item)
                    wake.signal()
                    if isStopping { return }
                }
            } catch {
                // The witnesses refused this node's credentials, or sent what does not follow:
                // follow again from what was applied.
                logger.warning("following the log failed; following it again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Applies one push of the stream to the replayed state.
    private func apply(_ item: WitnessClient.StreamItem) throws {
        var (state, handovers) = shared.withLock { ($0.state, $0.handovers) }
        switch item {
        case .entries(let entries):
            // The default formation follows every entry; another one only its own (and those
            // of no formation), with gaps where other formations' entries were.
            let contiguous = state.formation == EventRecord.defaultFormation
            for entry in entries where entry.index > state.appliedIndex {
                guard !contiguous || entry.index == state.appliedIndex + 1 else {
                    throw NodeManagerError("the log stream skipped from \(state.appliedIndex + 1) to \(entry.index)")
                }
                ClusterLog.apply(entry, to: &state) { step in self.note(step, handovers: &handovers) }
            }
        case .skipped(let through):
            ClusterLog.skip(through: through, in: &state)
        case .snapshot(let snapshot):
            // The entries after this manager's position were compacted: the snapshot replaces
            // what it replayed (its steps are not news).
            guard snapshot.index > state.appliedIndex else { return }
            state = try ClusterLog.restore(snapshot, formation: state.formation)
        }
        store(state, handovers)
    }

    /// Replays the committed entries this manager has not seen yet (a linearizable read).
    func refresh() async throws {
        var (state, handovers) = shared.withLock { ($0.state, $0.handovers) }
        // The first replay goes through the whole history: its goals are not news, and the
        // handovers it shows happened before this process counted.
        let firstReplay = state.appliedIndex == 0
        try await ClusterLog.replay(from: client, into: &state) { step in
            guard !firstReplay else {
                _ = handovers.observe(step)
                return
            }
            self.note(step, handovers: &handovers)
        }
        if firstReplay, state.appliedIndex > 0 {
            let me = state[node]
            logger.info(
                "read the formation's log",
                metadata: [
                    "index": "\(state.appliedIndex)", "reached": "\(me?.reached.rawValue ?? "-")", "goal": "\(me?.goal.rawValue ?? "not registered")",
                ])
        }
        store(state, handovers)
    }

    /// Counts a handover and logs this node's new goals.
    private func note(_ step: ClusterLog.Step, handovers: inout HandoverTracker) {
        if let handover = handovers.observe(step) { metrics.handedOver(handover) }
        for change in step.changes where change.node == node {
            logger.info("new goal", metadata: ["goal": "\(change.to.rawValue)", "reason": "\(change.reason)"])
        }
    }

    private func store(_ state: ClusterState, _ handovers: HandoverTracker) {
        shared.withLock { shared in
            guard state.appliedIndex >= shared.state.appliedIndex else { return }
            shared.state = state
            shared.handovers = handovers
            if state[node] != nil { shared.registered = true }
        }
    }
}
