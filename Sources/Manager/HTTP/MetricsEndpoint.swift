import CoreMetrics
import EventLog
import Prometheus

/// One process's metrics: a Prometheus registry behind a swift-metrics factory (node managers
/// and witnesses measure through swift-metrics), served in Prometheus's text format at
/// `GET /metrics`.
public final class MetricsEndpoint: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory that records into `registry`.
    public let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [WitnessMetrics.Name.commitLatency: WitnessMetrics.commitLatencyBuckets]
        self.factory = factory
    }

    public static let path = "/metrics"
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The answer to `method target` when `target` is `/metrics`; nil for any other path.
    /// `refresh` runs first, to set the gauges that are read at scrape time.
    public func respond(method: String, target: String, refresh: () -> Void = {}) -> HealthEndpoints.Response? {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        guard path == Self.path else { return nil }
        guard method == "GET" || method == "HEAD" else {
            return HealthEndpoints.Response(status: 405, body: "only GET and HEAD\n", headers: [("Allow", "GET, HEAD")], contentType: "text/plain")
        }
        refresh()
        return HealthEndpoints.Response(status: 200, body: registry.emitToString(), contentType: Self.contentType)
    }
}
