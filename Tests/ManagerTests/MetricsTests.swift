import EventLog
import Testing
import TestSupport

@testable import Manager

@Suite("metrics")
struct MetricsTests {
    func step(term: UInt64 = 2, seconds: Double, wall: Int64? = nil, event: ClusterEvent = .tick, _ changes: [GoalChange]) -> ClusterLog.Step {
        let stamp = LogStamp(leaderClockNanos: UInt64(seconds * 1e9), wallTimeMillis: wall ?? Int64(seconds * 1_000))
        return ClusterLog.Step(entry: LogEntry(index: 1, term: term, record: EventRecord(stamp: stamp, event: event)), changes: changes)
    }

    func change(_ node: PGNodeID, _ from: NodeState, _ to: NodeState) -> GoalChange {
        GoalChange(node: node, from: from, to: to, reason: "test")
    }

    @Test("a handover starts when the primary's goal leaves for draining or maintenance, ends at the next wait_primary; an operator's request makes it a switchover")
    func handovers() {
        var tracker = HandoverTracker()
        // A new formation's first primary opening for writes is no handover.
        #expect(tracker.observe(step(seconds: 1, [change(1, .single, .waitPrimary)])) == nil)
        // The policy fences an unhealthy primary: a failover, 2.5 s of log time to wait_primary.
        #expect(tracker.observe(step(seconds: 10, event: .nodeReports([]), [change(1, .primary, .draining), change(2, .secondary, .reportLSN)])) == nil)
        #expect(tracker.observe(step(seconds: 11, [change(2, .reportLSN, .preparePromotion)])) == nil)
        #expect(tracker.observe(step(seconds: 12.5, [change(2, .stopReplication, .waitPrimary)])) == HandoverTracker.Handover(kind: .failover, durationNanos: 2_500_000_000))
        // An operator's switchover, ending in a later Raft term: measured by the wall clock.
        #expect(tracker.observe(step(seconds: 20, event: .operatorRequest(.switchover(target: 3)), [change(2, .primary, .draining)])) == nil)
        #expect(
            tracker.observe(step(term: 3, seconds: 0.2, wall: 21_500, [change(3, .stopReplication, .waitPrimary)]))
                == HandoverTracker.Handover(kind: .switchover, durationNanos: 1_500_000_000))
        // Maintenance of the primary hands over too, as an operator asked.
        #expect(tracker.observe(step(term: 3, seconds: 5, event: .operatorRequest(.maintenance(node: 3, enabled: true)), [change(3, .primary, .prepareMaintenance)])) == nil)
        #expect(tracker.observe(step(term: 3, seconds: 6, [change(1, .stopReplication, .waitPrimary)]))?.kind == .switchover)
        // Called off: the old primary is given its role back; a later wait_primary of it
        // (its standbys gone) ends nothing.
        #expect(tracker.observe(step(term: 3, seconds: 6.5, [change(1, .primary, .draining)])) == nil)
        #expect(tracker.observe(step(term: 3, seconds: 6.6, [change(1, .draining, .primary)])) == nil)
        #expect(tracker.observe(step(term: 3, seconds: 6.7, [change(1, .primary, .waitPrimary)])) == nil)
        // A standby's goals never start one.
        #expect(tracker.observe(step(term: 3, seconds: 7, [change(2, .secondary, .draining)])) == nil)
        #expect(tracker.observe(step(term: 3, seconds: 8, [change(2, .catchingUp, .waitPrimary)])) == nil)
    }

    @Test("/metrics answers GET and HEAD with the registry in Prometheus text, refreshed first; other methods 405; other paths are not its own")
    func endpoint() throws {
        let endpoint = MetricsEndpoint()
        let metrics = ManagerMetrics(factory: endpoint.factory)
        let view = HealthEndpoints.View(
            postgresRunning: true, inRecovery: false, readOnly: false, timeline: 3, walReceiverStatus: nil, lagBytes: nil, reached: .primary,
            goal: .primary, leaseRemainingNanos: 1_500_000_000, fenced: false, managerAlive: true, clusterState: ClusterState())
        metrics.handedOver(HandoverTracker.Handover(kind: .failover, durationNanos: 1_250_000_000))
        var refreshed = 0
        let answer = try #require(endpoint.respond(method: "GET", target: "/metrics?x=1") {
            refreshed += 1
            metrics.refresh(view: view, observation: nil)
        })
        #expect(refreshed == 1)
        #expect(answer.status == 200 && answer.contentType.hasPrefix("text/plain; version=0.0.4"))
        let text = try PrometheusText(answer.body)
        #expect(text.value("pgquorum_postgres_up") == 1)
        #expect(text.value("pgquorum_lease_remaining_seconds") == 1.5)
        #expect(text.value("pgquorum_node_state", ["kind": "reached", "state": "primary"]) == 1)
        #expect(text.value("pgquorum_failovers_total") == 1 && text.value("pgquorum_switchovers_total") == 0)
        #expect(text.value("pgquorum_last_failover_seconds") == 1.25)

        // The node moves on: the old state's series goes to 0, the new one's to 1.
        var demoted = view
        demoted.reached = .demoted
        demoted.goal = .catchingUp
        metrics.refresh(view: demoted, observation: nil)
        let after = try PrometheusText(try #require(endpoint.respond(method: "HEAD", target: "/metrics")).body)
        #expect(after.value("pgquorum_node_state", ["kind": "reached", "state": "primary"]) == 0)
        #expect(after.value("pgquorum_node_state", ["kind": "reached", "state": "demoted"]) == 1)
        #expect(after.value("pgquorum_node_state", ["kind": "goal", "state": "catchingup"]) == 1)

        #expect(endpoint.respond(method: "POST", target: "/metrics")?.status == 405)
        #expect(endpoint.respond(method: "GET", target: "/primary") == nil)
        #expect(HealthEndpoints.respond(method: "GET", target: "/nope", view: view).body.contains("/metrics"))
    }

    @Test("the text parser refuses what Prometheus would")
    func parserRefuses() {
        #expect(throws: TestSupportError.self) { try PrometheusText("a_metric 1\n") }  // no TYPE line
        #expect(throws: TestSupportError.self) { try PrometheusText("# TYPE a gauge\na{x=1} 1\n") }  // unquoted label value
        #expect(throws: TestSupportError.self) { try PrometheusText("# TYPE a gauge\na one\n") }
        #expect(throws: Never.self) { try PrometheusText("# TYPE a histogram\na_bucket{le=\"+Inf\"} 3\na_sum 1.5\na_count 3\n") }
    }
}
