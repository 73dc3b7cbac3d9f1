import EventLog
import Foundation
import NodeControl
import Raft
import Testing
import TestSupport

/// TLS and roles on real witness processes (DESIGN §5 rule 5): every refusal is one line on
/// both sides, nothing refused is appended, and the witness goes on serving everyone else.
@Suite("witness TLS and roles", .serialized)
struct WitnessSecurityTests {
    static let day: TimeInterval = 86_400

    func report(_ node: PGNodeID) -> NodeReport {
        NodeReport(
            node: node, reachedState: .secondary, postgresRunning: true, timeline: 1, flushLSN: 0, replayLSN: 0, syncState: .quorum,
            lagBytes: 0, sentAtNanos: 0)
    }

    /// The reason a request failed because its certificate does not allow it.
    func forbidden(_ body: () async throws -> UInt64) async -> String? {
        do {
            _ = try await body()
            return nil
        } catch WitnessClientError.failure(let failure) where failure.code == .forbidden {
            return failure.message
        } catch {
            return "unexpected: \(error)"
        }
    }

    /// The reason a client could not connect because the witness refused its certificate.
    func refused(_ client: WitnessClient) async -> String {
        do {
            _ = try await client.status()
            return "connected"
        } catch WitnessClientError.refused(_, let reason) {
            return reason
        } catch {
            return "unexpected: \(error)"
        }
    }

    @Test("another CA, expired and not-yet-valid certificates, a node's Raft message or another node's report, a monitor's switchover: refused on both sides, nothing appended")
    func certificatesAndRoles() async throws {
        try await withWitnessCluster { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let client = cluster.client()
            defer { client.close() }
            let acks = AckLog()
            let appenders = startAppenders(client, workers: 2, firstTag: 1_000, into: acks)
            try await waitUntil("appends commit", timeout: .seconds(30)) { acks.count >= 50 }
            for (id, name) in [(PGNodeID(1), "n1"), (2, "n2")] {
                _ = try await client.append(.nodeRegistered(NodeRegistration(node: id, name: name, host: "127.0.0.1", port: 5432 + UInt16(id), systemIdentifier: 7)))
            }
            let testOperator = try ClusterIdentity(role: .operator, name: "test")

            // A certificate of another CA (trusting ours): the witness refuses it.
            let other = try PKIDirectory.create(at: cluster.folder.appending("other-pki"), clusterID: cluster.credentials.clusterID)
            var foreign = try WitnessCredentials.load(from: try other.issue(testOperator))
            foreign.caFile = cluster.credentials.caFile
            let foreignClient = cluster.client(timeout: .seconds(10), credentials: foreign)
            defer { foreignClient.close() }
            let foreignReason = await refused(foreignClient)
            #expect(foreignReason.contains("refused this side's certificate: it is not signed by the CA it trusts"), "\(foreignReason)")

            // Expired three days ago, and valid only from tomorrow.
            let expired = try WitnessCredentials.load(
                from: try cluster.pki.issue(try ClusterIdentity(role: .operator, name: "expired"), days: 1, now: Date().addingTimeInterval(-3 * Self.day)))
            let future = try WitnessCredentials.load(
                from: try cluster.pki.issue(
                    try ClusterIdentity(role: .operator, name: "future"), days: 30, notValidBefore: Date().addingTimeInterval(Self.day)))
            for credentials in [expired, future] {
                let refusedClient = cluster.client(timeout: .seconds(10), credentials: credentials)
                defer { refusedClient.close() }
                let reason = await refused(refusedClient)
                #expect(reason.contains("refused this side's certificate: it has expired, or is not valid yet"), "\(reason)")
            }

            // A node's certificate carrying Raft messages; a witness's claiming another id.
            let n1 = try WitnessCredentials.load(from: try cluster.nodeCredentialsPath("n1"))
            let port = cluster.port(of: leader)
            for (credentials, peerID, expected) in [
                (n1, NodeID(2), "node n1 may not carry Raft messages: only a witness certificate may"),
                (try WitnessCredentials.load(from: try cluster.credentialsPath(of: .witness(3))), 2, "a peer connection claims witness 2, but its certificate is witness 3's"),
            ] {
                let socket = try await TLSSocket(port: port, credentials: credentials)
                do {
                    try authenticate(socket, credentials: credentials, peerID: peerID)
                    Issue.record("the witness accepted \(credentials.certificateFile) as peer \(peerID)")
                } catch {
                    #expect("\(error)".contains(expected), "\(error)")
                }
                try await socket.expectClosed(within: .seconds(5))
            }

            // Node n1 speaks for node 1 only; a monitor only reads.
            let nodeClient = cluster.client(credentials: n1)
            defer { nodeClient.close() }
            _ = try await nodeClient.report(report(1))
            let ownState = try await nodeClient.append(.stateReached(node: 1, state: .catchingUp))
            #expect(
                await forbidden { try await nodeClient.report(report(2)) }
                    == "node n1 may not report node 2 (n2): a node certificate speaks for its own node only")
            #expect(
                await forbidden { try await nodeClient.append(.stateReached(node: 2, state: .maintenance)) }
                    == "node n1 may not append the state of node 2 (n2): a node certificate speaks for its own node only")
            #expect(
                await forbidden { try await nodeClient.append(.operatorRequest(.switchover(target: 1))) }
                    == "node n1 may not append operator-request: an operator certificate is needed")
            let monitor = cluster.client(credentials: try WitnessCredentials.load(from: try cluster.credentialsPath(of: try ClusterIdentity(role: .monitor, name: "prom"))))
            defer { monitor.close() }
            #expect(
                await forbidden { try await monitor.append(.operatorRequest(.switchover(target: nil))) }
                    == "monitor prom may not append operator-request: an operator certificate is needed")
            #expect(try await monitor.status().leader == leader)
            // An operator's request records who made it.
            let switchover = try await client.append(.operatorRequest(.maintenance(node: 2, enabled: true)))

            // Nothing refused reached the log; what was allowed did, once.
            let afterwards = acks.count
            try await waitUntil("appends still commit", timeout: .seconds(30)) { acks.count >= afterwards + 50 }
            appenders.cancel()
            await appenders.value
            let entries = try await cluster.entries(of: leader)
            let records = entries.compactMap(\.logEntry)
            #expect(records.filter { if case .operatorRequest = $0.record.event { return true } else { return false } }.map(\.index) == [switchover])
            #expect(records.first { $0.index == switchover }?.record.author == "operator test")
            #expect(!records.contains { $0.record.event == .stateReached(node: 2, state: .maintenance) })
            #expect(records.contains { $0.index == ownState && $0.record.event == .stateReached(node: 1, state: .catchingUp) })
            let reportedNodes = records.flatMap { entry -> [PGNodeID] in
                if case .nodeReports(let reports) = entry.record.event { return reports.map(\.node) }
                return []
            }
            #expect(reportedNodes == [1])

            // The witnesses' side of each refusal, one line each.
            let log = cluster.log(of: 1) + cluster.log(of: 2) + cluster.log(of: 3)
            for reason in [
                "not signed by the cluster's CA, expired or not yet valid", "node n1 may not carry Raft messages",
                "claims witness 2, but its certificate is witness 3's", "node n1 may not report node 2",
                "monitor prom may not append operator-request",
            ] {
                #expect(log.contains(reason), "the witness log names \"\(reason)\"")
            }
            #expect(cluster.isRunning(1) && cluster.isRunning(2) && cluster.isRunning(3))
        }
    }

    @Test("a witness started with an expired certificate is refused by its peers and clients; renewed with pki issue --renew, it is used at once, without a restart")
    func renewalWithoutRestart() async throws {
        try await withWitnessCluster { cluster in
            _ = try cluster.pki.issue(.witness(1), hosts: ["127.0.0.1"], days: 1, now: Date().addingTimeInterval(-3 * Self.day))
            try cluster.startAll()
            _ = try await cluster.waitForLeader(among: [2, 3])
            _ = try await cluster.client().append(.settingsChanged(FormationSettings()))
            try await waitUntil("witness 1 logs that its certificate expired", timeout: .seconds(30)) {
                cluster.log(of: 1).contains("the certificate of witness 1 has expired")
            }
            let direct = cluster.client([cluster.endpoint(of: 1)], timeout: .seconds(2))
            defer { direct.close() }
            await #expect(throws: WitnessClientError.self) { try await direct.status() }
            // Renew it, as an operator would, with the CLI.
            let executable = try BuiltProducts.path(of: "pgquorum")
            let renewed = try await onOwnThread {
                try runCommand(executable, ["pki", "issue", "witness", "1", "--host", "127.0.0.1", "--renew", "--dir", cluster.pki.path], timeout: .seconds(30))
            }
            #expect(renewed.output.hasPrefix("renewed the certificate of witness 1"), "\(renewed.output)")
            try await waitUntilAsync("witness 1 serves clients and has caught up", timeout: .seconds(40)) {
                guard let status = try? await direct.status() else { return false }
                return status.applied >= 2 && status.leader != nil
            }
            #expect(cluster.isRunning(1))
        }
    }
}

@Suite("witness logs")
struct WitnessLogTests {
    @Test("--log-format json writes one JSON object per line with time, level, label, message, metadata and source; an unknown format is refused")
    func jsonLogs() async throws {
        try await withWitnessCluster(extraArguments: ["--log-format", "json"]) { cluster in
            try cluster.startAll()
            _ = try await cluster.waitForLeader()
            let lines = cluster.log(of: 1).split(separator: "\n")
            #expect(!lines.isEmpty)
            var listening = false
            for line in lines {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
                #expect(Set(object.keys) == ["time", "level", "label", "message", "metadata", "source"], "\(line)")
                if object["message"] as? String == "witness listening", (object["metadata"] as? [String: String])?["id"] == "1" { listening = true }
            }
            #expect(listening, "\(lines.prefix(5))")
        }
        let refused = try await runProgram(
            try BuiltProducts.path(of: "pgquorum"), ["witness", "run", "--id", "1", "--data", "/nonexistent", "--listen", "127.0.0.1:1", "--peers", "1=127.0.0.1:1", "--log-format", "xml"],
            timeout: .seconds(30), check: false)
        #expect(refused.termination == .exited(code: 64) && refused.output.contains("--log-format must be text or json, not xml"), "\(refused.output)")
    }
}

@Suite("systemd notifications")
struct SystemdNotifyTests {
    @Test("a witness run by systemd says READY=1 once it listens and WATCHDOG=1 while its Raft loop answers; frozen, it stops saying so")
    func witnessNotifies() async throws {
        try await withWitnessCluster(witnesses: 1) { cluster in
            let notify = try NotifySocket(path: cluster.folder.appending("notify.sock"))
            var environment = ProcessInfo.processInfo.environment
            environment["NOTIFY_SOCKET"] = notify.path
            environment["WATCHDOG_USEC"] = "2000000"
            let endpoint = cluster.endpoint(of: 1)
            let witness = try ChildProcess.spawn(
                try BuiltProducts.path(of: "pgquorum"),
                ["witness", "run", "--id", "1", "--data", cluster.folder.appending("witness-1"), "--listen", "\(endpoint)", "--peers", "1=\(endpoint)",
                 "--credentials", try cluster.credentialsPath(of: .witness(1), hosts: ["127.0.0.1"])],
                environment: environment, output: .file(path: cluster.logPath(of: 1)), parentDeathSignal: "KILL")
            let first = notify.messages(during: .seconds(5))
            #expect(first.first?.hasPrefix("READY=1") == true, "\(first)")
            #expect(first.filter { $0 == "WATCHDOG=1\n" }.count >= 2, "\(first)")
            witness.send(SIGSTOP)
            _ = notify.messages(during: .milliseconds(300))
            let frozen = notify.messages(during: .seconds(2))
            witness.send(SIGCONT)
            #expect(!frozen.contains("WATCHDOG=1\n"), "\(frozen)")
            #expect(notify.messages(during: .seconds(3)).contains("WATCHDOG=1\n"))
            witness.send(SIGTERM)
            #expect(notify.messages(during: .seconds(2)).contains { $0.hasPrefix("STOPPING=1") })
            _ = await witness.stop(signal: SIGTERM, grace: .seconds(10))
        }
    }

    @Test("show systemd prints a Type=notify unit with a watchdog for a node and for a witness; missing options are named")
    func units() async throws {
        let executable = try BuiltProducts.path(of: "pgquorum")
        let node = try await runProgram(executable, ["show", "systemd", "node", "--dir", "/var/lib/pgquorum/node", "--executable", "/usr/bin/pgquorum"], timeout: .seconds(30))
        for line in ["Type=notify", "User=postgres", "ExecStart=/usr/bin/pgquorum node run --dir /var/lib/pgquorum/node", "WatchdogSec=10", "Restart=always"] {
            #expect(node.output.contains("\n\(line)\n"), "\(line) in \(node.output)")
        }
        let witness = try await runProgram(
            executable,
            ["show", "systemd", "witness", "--id", "2", "--data", "/var/lib/w", "--listen", "10.0.0.2:7400", "--peers", "1=a:1,2=b:2", "--credentials",
             "/etc/pgquorum/witness-2.credentials", "--executable", "/usr/bin/pgquorum", "--metrics", "10.0.0.2:9400"], timeout: .seconds(30))
        #expect(witness.output.contains(
            "\nExecStart=/usr/bin/pgquorum witness run --id 2 --data /var/lib/w --listen 10.0.0.2:7400 --peers 1=a:1,2=b:2 --credentials /etc/pgquorum/witness-2.credentials --metrics 10.0.0.2:9400\n"),
            "\(witness.output)")
        #expect(witness.output.contains("\nUser=pgquorum\n"))
        let missing = try await runProgram(executable, ["show", "systemd", "witness", "--id", "2"], timeout: .seconds(30), check: false)
        #expect(missing.termination == .exited(code: 64) && missing.output.contains("needs --id, --data, --listen, --peers and --credentials"), "\(missing.output)")
    }
}
