import CoreMetrics

/// What a witness measures (`witness run --metrics`), through swift-metrics: the process
/// backs it with a Prometheus registry; without one (tests, the demo's in-process use) every
/// metric is a no-op.
///
/// Gauges are set where their value changes, on the Raft loop (a few atomic stores per
/// commit); a scrape only reads them.
public struct WitnessMetrics: Sendable {
    let term: Gauge
    let isLeader: Gauge
    let commitIndex: Gauge
    let appliedIndex: Gauge
    let firstIndex: Gauge
    let lastIndex: Gauge
    let peersConnected: Gauge
    let clientsConnected: Gauge
    let leaderChanges: Counter
    let snapshots: Counter
    /// From a client's append or report reaching the witness to its commit being answered.
    let commitLatency: Timer

    /// The names, as Prometheus shows them.
    public enum Name {
        public static let commitLatency = "pgquorum_witness_commit_seconds"
    }

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        term = Gauge(label: "pgquorum_witness_term", factory: factory)
        isLeader = Gauge(label: "pgquorum_witness_is_leader", factory: factory)
        commitIndex = Gauge(label: "pgquorum_witness_commit_index", factory: factory)
        appliedIndex = Gauge(label: "pgquorum_witness_applied_index", factory: factory)
        firstIndex = Gauge(label: "pgquorum_witness_first_index", factory: factory)
        lastIndex = Gauge(label: "pgquorum_witness_last_index", factory: factory)
        peersConnected = Gauge(label: "pgquorum_witness_peers_connected", factory: factory)
        clientsConnected = Gauge(label: "pgquorum_witness_clients_connected", factory: factory)
        leaderChanges = Counter(label: "pgquorum_witness_leader_changes_total", factory: factory)
        snapshots = Counter(label: "pgquorum_witness_snapshots_total", factory: factory)
        commitLatency = Timer(label: Name.commitLatency, factory: factory)
    }

    /// The commit latency histogram's buckets: a commit is one fsync on a majority, from a
    /// millisecond on a fast disk to seconds on a stalled one.
    public static let commitLatencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2_500), .seconds(5),
    ]
}
