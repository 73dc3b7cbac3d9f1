import EventLog
import Testing

@testable import Manager

@Suite("HTTP endpoints for load balancers")
struct HealthEndpointsTests {
    static let primary = HealthEndpoints.View(
        postgresRunning: true, inRecovery: false, readOnly: false, timeline: 2, walReceiverStatus: nil, lagBytes: nil, reached: .primary,
        goal: .primary, leaseRemainingNanos: 900_000_000, fenced: false, managerAlive: true, clusterState: ClusterState())
    static let replica = HealthEndpoints.View(
        postgresRunning: true, inRecovery: true, readOnly: true, timeline: 2, walReceiverStatus: "streaming", lagBytes: 4_096,
        reached: .secondary, goal: .secondary, leaseRemainingNanos: 0, fenced: false, managerAlive: true, clusterState: ClusterState())

    func statuses(_ view: HealthEndpoints.View, _ targets: [String]) -> [String] {
        targets.map { "\($0) \(HealthEndpoints.respond(method: "GET", target: $0, view: view).status)" }
    }

    static let targets = [
        "/primary", "/replica", "/replica?lag=4kB", "/replica?lag=4095", "/replica?replication_state=streaming", "/read-only", "/health",
        "/readiness", "/liveness",
    ]

    @Test("the primary with its lease, a streaming replica, and what each answers on every path")
    func roles() {
        #expect(
            statuses(Self.primary, Self.targets) == [
                "/primary 200", "/replica 503", "/replica?lag=4kB 503", "/replica?lag=4095 503", "/replica?replication_state=streaming 503",
                "/read-only 200", "/health 200", "/readiness 200", "/liveness 200",
            ])
        #expect(
            statuses(Self.replica, Self.targets) == [
                "/primary 503", "/replica 200", "/replica?lag=4kB 200", "/replica?lag=4095 503", "/replica?replication_state=streaming 200",
                "/read-only 200", "/health 200", "/readiness 200", "/liveness 200",
            ])
        #expect(
            HealthEndpoints.respond(method: "GET", target: "/primary", view: Self.primary).body
                == #"{"goal":"primary","lag_bytes":null,"lease_remaining_ms":900,"postgres_running":true,"role":"primary","state":"primary","timeline":2}"#)
    }

    @Test("a primary is not the primary here once its lease ran out, it was fenced, its state is not writable, or postgres did not answer lately")
    func noStaleClaims() {
        var expired = Self.primary
        expired.leaseRemainingNanos = 0
        var fenced = Self.primary
        fenced.fenced = true
        var demoting = Self.primary
        demoting.goal = .draining
        var silent = Self.primary
        silent.inRecovery = nil
        silent.readOnly = nil
        var readOnly = Self.primary
        readOnly.readOnly = true
        for view in [expired, fenced, demoting, silent, readOnly] {
            #expect(HealthEndpoints.respond(method: "GET", target: "/primary", view: view).status == 503, "\(view)")
        }
        #expect(HealthEndpoints.respond(method: "GET", target: "/health", view: silent).status == 503)
        var stalled = Self.replica
        stalled.managerAlive = false
        #expect(HealthEndpoints.respond(method: "GET", target: "/liveness", view: stalled).status == 503)
        var catchingUp = Self.replica
        catchingUp.walReceiverStatus = nil
        catchingUp.lagBytes = nil
        #expect(statuses(catchingUp, ["/replica", "/replica?replication_state=streaming", "/replica?lag=1GB", "/readiness"]) == [
            "/replica 200", "/replica?replication_state=streaming 503", "/replica?lag=1GB 503", "/readiness 503",
        ])
    }

    @Test("other methods, unknown paths and bad filters are refused with their status")
    func badRequests() {
        let post = HealthEndpoints.respond(method: "POST", target: "/primary", view: Self.primary)
        #expect(post.status == 405 && post.headers.contains { $0 == ("Allow", "GET, HEAD") })
        #expect(HealthEndpoints.respond(method: "GET", target: "/nowhere", view: Self.primary).status == 404)
        #expect(HealthEndpoints.respond(method: "GET", target: "/replica?lag=lots", view: Self.replica).status == 400)
        #expect(HealthEndpoints.respond(method: "GET", target: "/replica?replication_state=stopped", view: Self.replica).status == 400)
        #expect(
            HealthEndpoints.respond(method: "HEAD", target: "/cluster", view: Self.primary)
                == .init(status: 200, body: #"{"applied_index":0,"formation":"default","nodes":[],"term":0,"waiting_reason":null}"#))
        #expect(HealthEndpoints.ReplicaFilters.bytes("16MB") == 16 << 20)
        #expect(HealthEndpoints.ReplicaFilters.bytes("999999999999TB") == nil)
    }
}
