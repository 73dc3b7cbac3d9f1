import EventLog
import Foundation
import Synchronization
import Manager
import NodeControl
import Testing
import TestSupport

/// A real HAProxy in front of a cluster, configured as the README says (issue 17): it sends a
/// writer's connections to whichever node answers 200 on `/primary`.
@Suite("a load balancer in front of the cluster", .serialized)
struct LoadBalancerTests: ClusterScenarios {
    static let haproxy = "/usr/sbin/haproxy"

    /// The configuration the README shows, for this cluster's nodes.
    func configuration(_ cluster: PGClusterFixture, port: Int) -> String {
        let servers = cluster.ids.map { id in
            "  server node\(id) \(cluster.address(of: id)):\(cluster.port(of: id)) check port \(cluster.httpPort(of: id))"
        }
        return """
            global
              maxconn 200
            defaults
              mode tcp
              timeout connect 2s
              timeout client 10m
              timeout server 10m
              timeout check 1s
            listen postgres_primary
              bind 127.0.0.1:\(port)
              option httpchk GET /primary
              http-check expect status 200
              default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
            \(servers.joined(separator: "\n"))

            """
    }

    @Test(
        "HAProxy with `option httpchk GET /primary` sends a writer to the primary; across a manager-crash failover and a switchover it reconnects through HAProxy and nothing acknowledged is lost",
        .enabled(if: FileManager.default.isExecutableFile(atPath: LoadBalancerTests.haproxy), "haproxy is not installed (scripts/setup installs it)"))
    func haproxyFollowsThePrimary() async throws {
        try await withPGCluster { cluster in
            let port = try FreePort.next()
            let configPath = cluster.witnesses.folder.appending("haproxy.cfg")
            try configuration(cluster, port: port).write(toFile: configPath, atomically: true, encoding: .utf8)
            let balancer = try ChildProcess.spawn(
                Self.haproxy, ["-f", configPath, "-db"], output: .file(path: cluster.witnesses.folder.appending("haproxy.log")),
                parentDeathSignal: "KILL")
            do {
                try await run(cluster, balancerPort: port)
            } catch {
                await balancer.stop(signal: SIGKILL, grace: .seconds(5))
                throw error
            }
            await balancer.stop(signal: SIGTERM, grace: .seconds(10))
        }
    }

    private func run(_ cluster: PGClusterFixture, balancerPort: Int) async throws {
        try await cluster.createTable("via_balancer")
        try await createTable(cluster)
        // TLS end to end: HAProxy passes the bytes through, and the node's certificate names
        // 127.0.0.1, where HAProxy listens too.
        let balanced = RowWriter(
            uri: "postgresql://127.0.0.1:\(balancerPort)/postgres?connect_timeout=2&sslmode=verify-full&sslrootcert=\(cluster.witnesses.credentials.caFile)",
            table: "via_balancer")
        let direct = RowWriter(uri: try await cluster.uri())
        try await waitUntil("both writers commit", timeout: .seconds(30)) { balanced.count >= 100 && direct.count >= 100 }

        // The primary's metrics: its state, postgres, its lease, each standby's lag.
        let old = try #require(primary(try await cluster.clusterState()))
        let before = try await cluster.metrics(of: old)
        #expect(before.value("pgquorum_node_state", ["kind": "reached", "state": "primary"]) == 1)
        #expect(before.value("pgquorum_node_state", ["kind": "goal", "state": "primary"]) == 1)
        #expect(before.value("pgquorum_postgres_up") == 1)
        #expect((before.value("pgquorum_lease_remaining_seconds") ?? 0) > 0)
        #expect((before.value("pgquorum_postgres_lsn_bytes") ?? 0) > 0)
        for standby in cluster.ids where standby != old {
            #expect(before.value("pgquorum_replication_lag_bytes", ["standby": "pgquorum_\(standby)"]) != nil, "\(before.samples)")
        }
        #expect(before.value("pgquorum_failovers_total") == 0)

        // A manager crash: postgres dies with it, another node is promoted.
        let crashedAt = ContinuousClock.now
        await cluster.killManager(old)
        let failedOver = try await cluster.waitFor("another node becomes primary", timeout: .seconds(60)) { state in
            self.primary(state).map { $0 != old } ?? false
        }
        let new = try #require(primary(failedOver))
        // The replayed log shows the failover: counted on the new primary, with its duration.
        try await waitUntilAsync("the failover is counted", timeout: .seconds(10)) {
            try await cluster.metrics(of: new).value("pgquorum_failovers_total") == 1
        }
        let lastFailover = try #require(try await cluster.metrics(of: new).value("pgquorum_last_failover_seconds"))
        #expect(lastFailover > 0 && lastFailover < 60, "\(lastFailover)")
        let (balancedAt, directAt) = (balanced.count, direct.count)
        try await waitUntil("both writers resume on the new primary", timeout: .seconds(30)) {
            balanced.count >= balancedAt + 100 && direct.count >= directAt + 100
        }
        let crashThroughBalancer = try #require(balanced.outage(after: crashedAt))
        let crashDirect = try #require(direct.outage(after: crashedAt))
        try cluster.startManager(old)
        _ = try await cluster.waitForHealthy(timeout: .seconds(90))

        // A switchover to the standby that streamed throughout.
        let target = try #require(cluster.ids.first { $0 != old && $0 != new })
        let switchedAt = ContinuousClock.now
        let result = try await cli(cluster, ["switchover", "--to", "\(target)"])
        #expect(result.termination == .exited(code: 0), "\(result.output)")
        let (balancedBefore, directBefore) = (balanced.count, direct.count)
        try await waitUntil("both writers resume after the switchover", timeout: .seconds(30)) {
            balanced.count >= balancedBefore + 100 && direct.count >= directBefore + 100
        }
        let switchThroughBalancer = try #require(balanced.outage(after: switchedAt))
        let switchDirect = try #require(direct.outage(after: switchedAt))
        await balanced.stop()
        await direct.stop()
        let final = try #require(primary(try await cluster.waitForHealthy(timeout: .seconds(60))))
        #expect(final == target)
        // The switchover's node ran throughout: it counted both handovers, each as what it was.
        let after = try await cluster.metrics(of: target)
        #expect(after.value("pgquorum_failovers_total") == 1 && after.value("pgquorum_switchovers_total") == 1, "\(after.samples)")
        let lostBalanced = try await cluster.lostRows(balanced, on: final)
        #expect(lostBalanced.isEmpty, "\(lostBalanced.count) rows acknowledged through HAProxy missing on node \(final)")
        try await expectAllAcknowledged(direct, on: final, cluster)
        print(
            "writes unavailable, through HAProxy / through the multi-host URI: node crash (node \(old) → \(new)) \(crashThroughBalancer) / \(crashDirect); switchover \(switchThroughBalancer) / \(switchDirect); acknowledged \(balanced.count) / \(direct.count), lost 0"
        )
    }

    @Test("a flood of probes and of connections that send nothing neither stalls the manager's heartbeats nor its lease: no failover, writes go on, /primary keeps answering")
    func floodOfProbes() async throws {
        try await withPGCluster { cluster in
            let primary = try #require(primary(try await cluster.clusterState()))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            let host = cluster.address(of: primary)
            let port = cluster.httpPort(of: primary)
            // 300 connections that never send a request (more than the 256 served at once)…
            var idle: [Int32] = []
            defer { for fd in idle { close(fd) } }
            for _ in 0..<300 {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = UInt16(port).bigEndian
                address.sin_addr.s_addr = inet_addr(host)
                _ = withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                idle.append(fd)
            }
            // …and 8 clients asking as fast as they can for 8 s.
            let floodStart = ContinuousClock.now
            let answered = Counter()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        await onOwnThreadIgnoringErrors {
                            while ContinuousClock.now - floodStart < .seconds(8) {
                                if (try? httpRequest(host: host, port: port, path: "/primary", timeoutSeconds: 2)) != nil {
                                    answered.add()
                                }
                            }
                        }
                    }
                }
            }
            let state = try await cluster.clusterState()
            #expect(state[primary]?.goal == .primary && state.sortedNodes.allSatisfy(\.isConverged), "no failover")
            #expect(writer.longestGap(from: floodStart, to: ContinuousClock.now) < .seconds(2), "writes paused during the flood")
            #expect(answered.value > 200, "the endpoints answered \(answered.value) requests in 8 s")
            // The idle connections were closed (after 5 s, or at once beyond 256); it still answers.
            #expect(try cluster.http(primary, "/primary").status == 200)
            await writer.stop()
            try await expectAllAcknowledged(writer, on: primary, cluster)
            print("flood: \(answered.value) probes answered in 8 s beside 300 idle connections; writer's longest gap \(writer.longestGap(from: floodStart, to: ContinuousClock.now))")
        }
    }
}

/// A node manager under systemd (`Type=notify`, `WatchdogSec=`).
@Suite("node manager and systemd", .serialized)
struct NodeSystemdTests: ClusterScenarios {
    @Test("a node manager says READY=1 and WATCHDOG=1 with each round of its lease check; frozen, it stops saying so")
    func managerNotifies() async throws {
        try await withPGCluster { cluster in
            let current = primary(try await cluster.clusterState())
            let standby = try #require(cluster.ids.last { $0 != current })
            await cluster.killManager(standby)
            let notify = try NotifySocket(path: cluster.witnesses.folder.appending("notify.sock"))
            func messages(during duration: Duration) -> [String] { notify.messages(during: duration) }
            try cluster.startManager(standby, environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"])
            let first = messages(during: .seconds(4))
            #expect(first.contains { $0.hasPrefix("READY=1") }, "\(first)")
            #expect(first.filter { $0 == "WATCHDOG=1\n" }.count >= 4, "\(first)")
            cluster.manager(of: standby)?.send(SIGSTOP)
            _ = messages(during: .milliseconds(300))
            let frozen = messages(during: .seconds(1.5))
            cluster.manager(of: standby)?.send(SIGCONT)
            #expect(!frozen.contains("WATCHDOG=1\n"), "\(frozen)")
            #expect(messages(during: .seconds(1.5)).contains("WATCHDOG=1\n"))
            _ = try await cluster.waitForHealthy(timeout: .seconds(60))
        }
    }
}

/// A count shared by threads.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// Runs blocking work on a thread of its own and waits for it.
func onOwnThreadIgnoringErrors(_ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            body()
            continuation.resume()
        }
    }
}
