import EventLog
import Foundation
import Manager
import NodeControl
import Testing
import TestSupport

/// The operator commands (issue 9) against a real witness quorum, with stand-in managers.
@Suite("operator commands against a witness quorum", .serialized)
struct OperatorCLITests {
    /// Runs `pgquorum ARGUMENTS` against `cluster`; stdout and stderr interleaved.
    func cli(_ cluster: WitnessClusterFixture, _ arguments: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        let executable = try BuiltProducts.path(of: "pgquorum")
        let connection = [
            "--witnesses", cluster.endpoints.map(\.description).joined(separator: ","), "--credentials", cluster.credentialsPath,
        ]
        return try await onOwnThread { try runCommand(executable, arguments + connection, timeout: timeout, check: false) }
    }

    /// Compares with `snapshots/NAME.txt`; `SNAPSHOT_REWRITE=1` rewrites it.
    func expectSnapshot(_ text: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("snapshots/\(name).txt").path
        if ProcessInfo.processInfo.environment["SNAPSHOT_REWRITE"] == "1" {
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            return
        }
        let expected = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == expected, "output differs from snapshots/\(name).txt", sourceLocation: sourceLocation)
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// A quorum with three converged stand-in nodes: alpha primary, beta and gamma secondaries.
    ///
    /// The stand-ins run inside the test process, whose threads the CPU-bound simulations
    /// share on a two-core machine; a node is declared unhealthy after 10 s without a report
    /// rather than 2.5 s, so that no failover these tests do not ask for starts while they run.
    func withFormation(_ body: (WitnessClusterFixture, FakeManagers) async throws -> Void) async throws {
        try await withWitnessCluster { cluster in
            try cluster.startAll()
            _ = try await cluster.waitForLeader()
            let client = cluster.client()
            defer { client.close() }
            var settings = FormationSettings()
            settings.nodeUnhealthyTimeoutMillis = 10_000
            _ = try await client.append(.settingsChanged(settings))
            let managers = FakeManagers(client: client)
            do {
                try await managers.register(1, name: "alpha", port: 5432)
                try await waitSettled(client, [.single])
                try await managers.register(2, name: "beta", port: 5433)
                try await managers.register(3, name: "gamma", port: 5434)
                try await waitSettled(client, [.primary, .secondary, .secondary])
                try await body(cluster, managers)
            } catch {
                await managers.stop()
                throw error
            }
            await managers.stop()
        }
    }

    /// Waits until the nodes reached exactly `states` (by node id) and every goal is reached.
    /// Converged is not enough: between two entries a formation can be converged on its way.
    func waitSettled(_ client: WitnessClient, _ states: [NodeState]) async throws {
        try await waitUntilAsync("the nodes settle in \(states.map(\.rawValue))", timeout: .seconds(30)) {
            let state = try await ClusterLog.load(from: client)
            return state.sortedNodes.map(\.reached) == states && state.sortedNodes.allSatisfy { $0.isConverged && state.isHealthy($0) }
        }
    }

    @Test("status, show uri and show settings print tables and JSON")
    func readCommands() async throws {
        try await withFormation { cluster, _ in
            let status = try await cli(cluster, ["status"])
            #expect(status.termination == .exited(code: 0), "\(status.output)")
            try expectSnapshot(status.output, "status")
            let statusJSON = try json(try await cli(cluster, ["status", "--json"]).output)
            let nodes = try #require(statusJSON["nodes"] as? [[String: Any]])
            #expect(nodes.map { $0["name"] as? String } == ["alpha", "beta", "gamma"])
            #expect(nodes.map { $0["goal_state"] as? String } == ["primary", "secondary", "secondary"])
            #expect(nodes.allSatisfy { $0["health"] as? String == "good" && $0["lsn"] as? String == "0/A00000" })
            // Each document has every key docs/JSON.md lists, a missing value as null.
            #expect(Set(statusJSON.keys) == ["formation", "applied_index", "term", "waiting_reason", "nodes"])
            #expect(statusJSON["waiting_reason"] is NSNull || statusJSON["waiting_reason"] is String)
            let nodeKeys: Set<String> = [
                "id", "name", "host", "port", "reached_state", "goal_state", "goal_reason", "health", "timeline", "lsn", "lag_bytes",
                "postgres_running", "candidate_priority", "replication_quorum", "pending_restart", "parameters", "slot_retained_bytes",
                "slot_lost",
            ]
            #expect(nodes.allSatisfy { Set($0.keys) == nodeKeys }, "\(nodes)")
            let witnesses = try await cli(cluster, ["witness", "status", "--json"]).output.split(separator: "\n").map { try json(String($0)) }
            #expect(witnesses.count == 3)
            #expect(
                witnesses.allSatisfy {
                    Set($0.keys) == ["address", "id", "cluster_id", "role", "term", "leader", "commit", "applied", "first_index", "last_index", "members"]
                })
            #expect(witnesses.contains { $0["role"] as? String == "leader" })

            let uri = try await cli(cluster, ["show", "uri", "--dbname", "app", "--ca-file", "/etc/pgquorum/ca.crt"])
            try expectSnapshot(uri.output, "show-uri")
            let uriJSON = try json(try await cli(cluster, ["show", "uri", "--json"]).output)
            #expect((uriJSON["uri"] as? String)?.hasPrefix("postgresql://127.0.0.1:5432,127.0.0.1:5433,127.0.0.1:5434/postgres?") == true)

            // --watch redraws as the log moves.
            let watchOutput = cluster.folder.appending("watch.out")
            let watcher = try ChildProcess.spawn(
                try BuiltProducts.path(of: "pgquorum"),
                ["status", "--watch", "--witnesses", cluster.endpoints.map(\.description).joined(separator: ","), "--credentials", cluster.credentialsPath],
                output: .file(path: watchOutput))
            // Stopped by pid whatever happens.
            do {
                try await waitUntil("status --watch prints the table", timeout: .seconds(30)) {
                    ((try? String(contentsOfFile: watchOutput, encoding: .utf8)) ?? "").contains("gamma")
                }
                let enable = try await cli(cluster, ["maintenance", "enable", "gamma", "--no-wait"])
                #expect(enable.termination == .exited(code: 0), "\(enable.output)")
                try await waitUntil(
                    "status --watch shows the maintenance; it printed: \(tail((try? String(contentsOfFile: watchOutput, encoding: .utf8)) ?? "", lines: 12))",
                    timeout: .seconds(30)
                ) {
                    ((try? String(contentsOfFile: watchOutput, encoding: .utf8)) ?? "").contains("\u{1B}[H\u{1B}[2J")
                        && ((try? String(contentsOfFile: watchOutput, encoding: .utf8)) ?? "").contains("maintenance")
                }
            } catch {
                await watcher.stop(signal: SIGKILL, grace: .seconds(5))
                throw error
            }
            #expect(await watcher.stop(signal: SIGTERM, grace: .seconds(5)) == .signaled(signal: SIGTERM))

            try expectSnapshot(try await cli(cluster, ["show", "settings"]).output, "show-settings")
            let settings = try json(try await cli(cluster, ["show", "settings", "--json"]).output)
            #expect(settings["number_sync_standbys"] as? Int == 1 && settings["primary_lease_ms"] as? Int == 1000)
            #expect(settings.count == 7 && settings["max_slot_wal_keep_size_mb"] as? Int == 4096)
        }
    }

    @Test("node create assigns the next id, keeps the id of an address created again, and refuses a clash of address or id; --node-dir finds the witnesses")
    func nodeCreate() async throws {
        try await withFormation { cluster, _ in
            func create(_ name: String, port: Int, id: Int? = nil) async throws -> CommandResult {
                try await cli(
                    cluster, ["node", "create", "--dir", cluster.folder.appending(name), "--name", name, "--host", "127.0.0.1", "--port", "\(port)"]
                        + (id.map { ["--id", "\($0)"] } ?? []))
            }
            let delta = try await create("delta", port: 6001)
            #expect(delta.termination == .exited(code: 0) && delta.output.hasPrefix("node 4 (delta) registered at log index "), "\(delta.output)")
            let conf = try String(contentsOfFile: cluster.folder.appending("delta/node.conf"), encoding: .utf8)
            #expect(conf.contains("\nid: 4\n"), "\(conf)")
            let again = try await create("delta", port: 6001)
            #expect(again.output.hasPrefix("node 4 (delta) registered"), "\(again.output)")

            let address = try await create("epsilon", port: 5432, id: 7)
            #expect(address.termination == .exited(code: 1))
            #expect(address.output == "Error: 127.0.0.1:5432 is already node 1 (alpha); use --id 1, or drop that node first\n")
            let id = try await create("epsilon", port: 6002, id: 2)
            #expect(id.termination == .exited(code: 1))
            #expect(id.output == "Error: node id 2 is already beta at 127.0.0.1:5433; leave --id out to get a free one\n")
            let state = try await ClusterLog.load(from: cluster.client())
            #expect(state.sortedNodes.map(\.id) == [1, 2, 3, 4])

            // A node's own certificate must name the host it registers: the other nodes
            // check it there (verify-full).
            let elsewhere = try cluster.nodeCredentialsPath("zeta", hosts: ["10.1.1.1", "db9.example.com"])
            let pgquorum = try BuiltProducts.path(of: "pgquorum")
            let misnamed = try await onOwnThread {
                try runCommand(
                    pgquorum,
                    ["node", "create", "--dir", cluster.folder.appending("zeta"), "--name", "zeta", "--host", "127.0.0.1", "--port", "6003",
                     "--credentials", elsewhere, "--witnesses", cluster.endpoints.map(\.description).joined(separator: ",")],
                    timeout: .seconds(60), check: false)
            }
            #expect(misnamed.termination == .exited(code: 1))
            #expect(
                misnamed.output
                    == "Error: the certificate of node zeta names db9.example.com, 10.1.1.1, not --host 127.0.0.1: issue it again with `pgquorum pki issue node zeta --host 127.0.0.1 --renew`\n",
                "\(misnamed.output)")
            #expect(try await ClusterLog.load(from: cluster.client()).sortedNodes.count == 4)

            // On a node's host, its node.conf is enough to reach the witnesses.
            let executable = try BuiltProducts.path(of: "pgquorum")
            let fromNode = try await onOwnThread {
                try runCommand(executable, ["status", "--node-dir", cluster.folder.appending("delta")], timeout: .seconds(60), check: false)
            }
            #expect(fromNode.termination == .exited(code: 0) && fromNode.output.contains("delta"), "\(fromNode.output)")
        }
    }

    @Test("settings set validates keys and ranges and changes the formation through the log")
    func settings() async throws {
        try await withFormation { cluster, _ in
            let set = try await cli(cluster, ["settings", "set", "node_unhealthy_timeout", "3s"])
            #expect(set.termination == .exited(code: 0) && set.output.hasPrefix("node_unhealthy_timeout = 3000ms (log index "), "\(set.output)")
            #expect(try await cli(cluster, ["settings", "get", "node_unhealthy_timeout"]).output == "3000ms\n")

            let unknown = try await cli(cluster, ["settings", "set", "lease", "1s"])
            #expect(unknown.termination == .exited(code: 1))
            try expectSnapshot(unknown.output, "settings-unknown-key")
            let range = try await cli(cluster, ["settings", "set", "number_sync_standbys", "3"])
            #expect(range.termination == .exited(code: 1))
            try expectSnapshot(range.output, "settings-out-of-range")
            let conflict = try await cli(cluster, ["settings", "set", "primary_lease", "2900ms"])
            #expect(conflict.termination == .exited(code: 1))
            #expect(conflict.output.contains("primary lease (2900 ms) must be at most 80% of the node unhealthy timeout (3000 ms)"))
        }
    }

    @Test("maintenance and switchover show each step until done; refusals and unknown nodes are one-line errors")
    func operatorRequests() async throws {
        try await withFormation { cluster, managers in
            let enable = try await cli(cluster, ["maintenance", "enable", "gamma"])
            #expect(enable.termination == .exited(code: 0), "\(enable.output)")
            #expect(enable.output.contains("maintenance of node 3 requested (log index"))
            #expect(enable.output.contains("node 3: goal secondary -> "))
            #expect(enable.output.contains("node 3 reached maintenance"))
            #expect(enable.output.hasSuffix("done\n"))

            // The policy refuses a switchover to a node in maintenance: nothing is appended.
            try await waitSettled(managers.client, [.primary, .secondary, .maintenance])
            let refused = try await cli(cluster, ["switchover", "--to", "gamma"])
            #expect(refused.termination == .exited(code: 1))
            try expectSnapshot(refused.output, "switchover-refused")

            let unknown = try await cli(cluster, ["switchover", "--to", "delta"])
            #expect(unknown.termination == .exited(code: 1))
            try expectSnapshot(unknown.output, "switchover-unknown-node")

            let disable = try await cli(cluster, ["maintenance", "disable", "3"])
            #expect(disable.termination == .exited(code: 0), "\(disable.output)")
            #expect(disable.output.hasSuffix("done\n"))

            let switchover = try await cli(cluster, ["switchover", "--to", "beta"])
            #expect(switchover.termination == .exited(code: 0), "\(switchover.output)")
            #expect(switchover.output.contains("switchover to node 2 requested"))
            #expect(switchover.output.contains("node 1: goal primary -> draining"))
            #expect(switchover.output.contains("node 2 reached"))
            let after = try json(try await cli(cluster, ["status", "--json"]).output)
            let nodes = try #require(after["nodes"] as? [[String: Any]])
            #expect(nodes.first { $0["id"] as? Int == 2 }?["reached_state"] as? String == "primary")

            // A forced drop of the healthy primary is refused by the policy.
            let forced = try await cli(cluster, ["drop", "beta", "--force"])
            #expect(forced.termination == .exited(code: 1))
            #expect(forced.output.contains("refused: forced drop of node 2 refused: it is the primary and its lease may still run"), "\(forced.output)")

            let noWait = try await cli(cluster, ["drop", "gamma", "--no-wait"])
            #expect(noWait.termination == .exited(code: 0))
            #expect(noWait.output.hasPrefix("drop of node 3 requested (log index ") && !noWait.output.contains("done"))
        }
    }

    @Test("log shows events with their decisions, filters by node, kind, time and count, and prints JSON lines")
    func log() async throws {
        try await withFormation { cluster, _ in
            let all = try await cli(cluster, ["log"])
            #expect(all.termination == .exited(code: 0))
            #expect(all.output.contains("registered alpha at 127.0.0.1:5432, priority 50, synchronous"))
            #expect(all.output.contains("-> node 1: goal init -> single: first node of the formation"))
            #expect(!all.output.contains(" tick"), "ticks are hidden without --all")

            let beta = try await cli(cluster, ["log", "--node", "beta"])
            // Each event shown (with its decision lines) is about beta or decides something for it.
            var blocks: [String] = []
            for line in beta.output.split(separator: "\n") {
                if line.hasPrefix("    "), !blocks.isEmpty { blocks[blocks.count - 1] += "\n" + line } else { blocks.append(String(line)) }
            }
            #expect(blocks.count >= 3 && blocks.allSatisfy { $0.contains("node 2") || $0.contains("beta") }, "\(beta.output)")
            #expect(!beta.output.contains("registered gamma"))

            let kinds = try await cli(cluster, ["log", "--kind", "node-registered", "--json"])
            let lines = kinds.output.split(separator: "\n").map(String.init)
            #expect(lines.count == 3)
            for line in lines {
                let object = try json(line)
                #expect(object["kind"] as? String == "node-registered" && object["decisions"] is [Any] && object["index"] is Int)
                #expect(
                    Set(object.keys) == ["index", "term", "time", "formation", "kind", "node", "event", "decisions", "waiting", "retry_of", "by"],
                    "\(line)")
                #expect(object["by"] is NSNull && object["retry_of"] is NSNull, "\(line)")
            }
            #expect(try await cli(cluster, ["log", "--all", "-n", "2"]).output.split(separator: "\n").filter { !$0.hasPrefix("    ") }.count == 2)
            #expect(try await cli(cluster, ["log", "--until", "1h"]).output.isEmpty, "nothing is older than an hour")
            #expect(try await cli(cluster, ["log", "--since", "1h"]).output.contains("registered gamma"))
            let badKind = try await cli(cluster, ["log", "--kind", "heartbeat"])
            #expect(badKind.termination == .exited(code: 64) && badKind.output.contains("unknown kind heartbeat"))
            let badTime = try await cli(cluster, ["log", "--since", "yesterday"])
            #expect(badTime.termination == .exited(code: 1) && badTime.output.contains("is neither a duration"))

            // --follow streams entries as they commit.
            let followOutput = cluster.folder.appending("follow.out")
            let follower = try ChildProcess.spawn(
                try BuiltProducts.path(of: "pgquorum"),
                [
                    "log", "--follow", "--kind", "operator-request", "--witnesses",
                    cluster.endpoints.map(\.description).joined(separator: ","), "--credentials", cluster.credentialsPath,
                ], output: .file(path: followOutput))
            do {
                try await Task.sleep(for: .seconds(1))
                _ = try await cli(cluster, ["maintenance", "enable", "gamma", "--no-wait"])
                try await waitUntil("log --follow prints the request", timeout: .seconds(15)) {
                    ((try? String(contentsOfFile: followOutput, encoding: .utf8)) ?? "").contains("operator asked to start maintenance of node 3")
                }
            } catch {
                await follower.stop(signal: SIGKILL, grace: .seconds(5))
                throw error
            }
            #expect(await follower.stop(signal: SIGTERM, grace: .seconds(5)) == .signaled(signal: SIGTERM))
        }
    }

    @Test("no witness reachable, another cluster's CA and a monitor changing settings are one clear line with a non-zero exit; the log names the operator")
    func connectionErrors() async throws {
        try await withWitnessCluster { cluster in
            try cluster.startAll()
            _ = try await cluster.waitForLeader()
            let executable = try BuiltProducts.path(of: "pgquorum")
            let closedPort = try FreePort.next()
            let unreachable = try await onOwnThread {
                try runCommand(
                    executable, ["status", "--witnesses", "127.0.0.1:\(closedPort)", "--credentials", cluster.credentialsPath, "--timeout", "1"],
                    timeout: .seconds(30), check: false)
            }
            #expect(unreachable.termination == .exited(code: 1))
            #expect(unreachable.output.hasPrefix("Error: no witness reachable (tried 127.0.0.1:\(closedPort): "), "\(unreachable.output)")
            #expect(unreachable.output.split(separator: "\n").count == 1)

            // Another cluster's CA, with this cluster's id: the client refuses the witness's
            // certificate (TLS 1.3 shows the server's first), and says so in one line.
            let other = try PKIDirectory.create(at: cluster.folder.appending("other-pki"), clusterID: cluster.credentials.clusterID)
            let otherCredentials = try other.issue(try ClusterIdentity(role: .operator, name: "test"))
            let otherCA = try await onOwnThread {
                try runCommand(
                    executable, ["status", "--witnesses", cluster.endpoints[0].description, "--credentials", otherCredentials],
                    timeout: .seconds(30), check: false)
            }
            #expect(otherCA.termination == .exited(code: 1))
            #expect(
                otherCA.output.contains("TLS handshake failed") && otherCA.output.contains("not signed by the cluster's CA"), "\(otherCA.output)")
            #expect(otherCA.output.split(separator: "\n").count == 1, "\(otherCA.output)")

            // A monitor may read but not change settings; an operator may, and the log says who.
            let monitor = try cluster.credentialsPath(of: try ClusterIdentity(role: .monitor, name: "grafana"))
            let connection = ["--witnesses", cluster.endpoints.map(\.description).joined(separator: ",")]
            let refused = try await onOwnThread {
                try runCommand(executable, ["settings", "set", "primary_lease", "1s", "--credentials", monitor] + connection, timeout: .seconds(30), check: false)
            }
            #expect(refused.termination == .exited(code: 1))
            #expect(refused.output == "Error: monitor grafana may not append settings-changed: an operator certificate is needed\n", "\(refused.output)")
            let read = try await onOwnThread {
                try runCommand(executable, ["log", "--credentials", monitor] + connection, timeout: .seconds(30), check: false)
            }
            #expect(read.termination == .exited(code: 0) && !read.output.contains("settings:"), "\(read.output)")
            _ = try await onOwnThread {
                try runCommand(executable, ["settings", "set", "primary_lease", "1s", "--credentials", cluster.credentialsPath] + connection, timeout: .seconds(30))
            }
            let log = try await onOwnThread {
                try runCommand(executable, ["log", "--credentials", monitor] + connection, timeout: .seconds(30))
            }
            #expect(log.output.contains("primary_lease=1000ms max_slot_wal_keep_size=4096MB  (by operator test)"), "\(log.output)")

            let noAddresses = try await onOwnThread { try runCommand(executable, ["status"], timeout: .seconds(30), check: false) }
            #expect(noAddresses.output.contains("no witness addresses: pass --witnesses HOST:PORT,… or set PGQUORUM_WITNESSES (or name a node's folder with --node-dir)"))
        }
    }
}
