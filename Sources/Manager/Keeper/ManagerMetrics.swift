import CoreMetrics
import EventLog
import NodeControl
import Synchronization

/// What a node manager measures, through swift-metrics (served at `/metrics` with its HTTP
/// endpoints). Gauges are set from the manager's view at each scrape (`refresh`); the handover
/// counters move as the replayed log shows a new primary taking writes.
final class ManagerMetrics: Sendable {
    private let factory: any MetricsFactory
    private let postgresUp: Gauge
    private let timeline: Gauge
    private let lsn: Gauge
    private let lagBytes: Gauge
    private let leaseRemaining: Gauge
    private let fenced: Gauge
    private let appliedIndex: Gauge
    private let failovers: Counter
    private let switchovers: Counter
    private let lastFailover: Gauge
    private let lastSwitchover: Gauge
    /// The labelled gauges made so far: the node's states (reached, goal) and, on a primary,
    /// each standby's lag. A label set no longer current goes to 0 (states) or away (standbys).
    private let labelled = Mutex(Labelled())

    private struct Labelled {
        var states: [String: Gauge] = [:]
        var standbys: [String: Gauge] = [:]
    }

    init(factory: any MetricsFactory) {
        self.factory = factory
        postgresUp = Gauge(label: "pgquorum_postgres_up", factory: factory)
        timeline = Gauge(label: "pgquorum_postgres_timeline", factory: factory)
        lsn = Gauge(label: "pgquorum_postgres_lsn_bytes", factory: factory)
        lagBytes = Gauge(label: "pgquorum_standby_lag_bytes", factory: factory)
        leaseRemaining = Gauge(label: "pgquorum_lease_remaining_seconds", factory: factory)
        fenced = Gauge(label: "pgquorum_fenced", factory: factory)
        appliedIndex = Gauge(label: "pgquorum_log_applied_index", factory: factory)
        failovers = Counter(label: "pgquorum_failovers_total", factory: factory)
        switchovers = Counter(label: "pgquorum_switchovers_total", factory: factory)
        lastFailover = Gauge(label: "pgquorum_last_failover_seconds", factory: factory)
        lastSwitchover = Gauge(label: "pgquorum_last_switchover_seconds", factory: factory)
    }

    /// A handover the replayed log completed.
    func handedOver(_ handover: HandoverTracker.Handover) {
        let seconds = Double(handover.durationNanos) / 1e9
        switch handover.kind {
        case .failover:
            failovers.increment()
            lastFailover.record(seconds)
        case .switchover:
            switchovers.increment()
            lastSwitchover.record(seconds)
        }
    }

    /// Sets the gauges from what the manager knows now.
    func refresh(view: HealthEndpoints.View, observation: PostgresObservation?) {
        postgresUp.record(view.postgresRunning ? 1 : 0)
        timeline.record(Double(observation?.timeline ?? 0))
        lsn.record(Double(observation.map { $0.inRecovery ? $0.replayLSN : $0.currentLSN } ?? 0))
        lagBytes.record(Double(view.lagBytes ?? 0))
        leaseRemaining.record(Double(view.leaseRemainingNanos) / 1e9)
        fenced.record(view.fenced ? 1 : 0)
        appliedIndex.record(Double(view.clusterState.appliedIndex))
        let current = [("reached", view.reached), ("goal", view.goal)].compactMap { kind, state in state.map { "\(kind)/\($0.rawValue)" } }
        let standbys = observation.map { $0.inRecovery ? [] : $0.replication } ?? []
        labelled.withLock { labelled in
            for key in current where labelled.states[key] == nil {
                let parts = key.split(separator: "/").map(String.init)
                labelled.states[key] = Gauge(label: "pgquorum_node_state", dimensions: [("kind", parts[0]), ("state", parts[1])], factory: factory)
            }
            for (key, gauge) in labelled.states { gauge.record(current.contains(key) ? 1 : 0) }
            let names = Set(standbys.map(\.applicationName))
            for (name, gauge) in labelled.standbys where !names.contains(name) {
                gauge.destroy()
                labelled.standbys[name] = nil
            }
            for standby in standbys {
                let gauge = labelled.standbys[standby.applicationName] ?? {
                    let made = Gauge(label: "pgquorum_replication_lag_bytes", dimensions: [("standby", standby.applicationName)], factory: factory)
                    labelled.standbys[standby.applicationName] = made
                    return made
                }()
                gauge.record(Double(standby.lagBytes ?? 0))
            }
        }
    }
}
