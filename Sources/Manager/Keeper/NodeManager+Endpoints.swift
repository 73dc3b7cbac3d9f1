import EventLog
import Foundation
import NodeControl

/// The HTTP endpoints (`HealthEndpoints`, and `/metrics`) answer from the manager's view at
/// the time of each request.
extension NodeManager {
    /// Starts the endpoints when configured. A port that cannot be bound is logged and left:
    /// high availability does not wait for a probe endpoint.
    func startHTTPEndpoints() async -> HTTPEndpointServer? {
        guard let address = configuration.httpAddress else { return nil }
        do {
            return try await HTTPEndpointServer(host: address.host, port: address.port, logger: logger) { [self] method, target in
                let metrics = metricsEndpoint.respond(method: method, target: target) {
                    let view = endpointView()
                    // The observation only when fresh, as the view has it.
                    self.metrics.refresh(view: view, observation: view.inRecovery == nil ? nil : shared.withLock { $0.lastObservation })
                }
                return metrics ?? HealthEndpoints.respond(method: method, target: target, view: endpointView())
            }
        } catch {
            logger.error("the HTTP endpoints cannot listen; running without them", metadata: ["address": "\(address)", "error": "\(error)"])
            return nil
        }
    }

    /// What the manager knows now: its last observation of postgres if fresh, the lease from
    /// its last committed report, and the state it replayed.
    func endpointView() -> HealthEndpoints.View {
        let now = nowNanos()
        let snapshot = shared.withLock { $0 }
        let state = snapshot.state
        let fresh = snapshot.lastObservedNanos.map { now < $0 + HealthEndpoints.freshObservationNanos } ?? false
        let observation = fresh ? snapshot.lastObservation : nil
        let lease = snapshot.lastAckedSentNanos.flatMap {
            LeaseRules.remainingByReport(nowNanos: now, lastAckedSentNanos: $0, leaseMillis: state.settings.primaryLeaseMillis)
        }
        var lag: UInt64?
        if let observation, observation.inRecovery, let primary = state.primaryNode, primary.id != node {
            lag = primary.lsn > observation.replayLSN ? primary.lsn - observation.replayLSN : 0
        }
        // The observation loop begins a round every heartbeat interval; three missed is stalled.
        let loopWindow = 3 * UInt64(max(state.settings.heartbeatIntervalMillis, 1_000)) * 1_000_000
        return HealthEndpoints.View(
            postgresRunning: postgres.isRunning, inRecovery: observation?.inRecovery, readOnly: observation?.defaultTransactionReadOnly,
            timeline: observation?.timeline, walReceiverStatus: observation?.walReceiver?.status, lagBytes: lag, reached: state[node]?.reached,
            goal: state[node]?.goal, leaseRemainingNanos: lease ?? 0, fenced: snapshot.fenced,
            managerAlive: snapshot.observationLoopNanos.map { now < $0 + loopWindow } ?? false,
            clusterState: state)
    }
}
