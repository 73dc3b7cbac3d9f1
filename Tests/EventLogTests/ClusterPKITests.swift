@testable import EventLog
import Foundation
import Raft
import Testing
import TestSupport
import X509

@Suite("the cluster PKI: CA, certificates, credentials files")
struct ClusterPKITests {
    func mode(_ path: String) -> mode_t {
        var attributes = stat()
        stat(path, &attributes)
        return attributes.st_mode & 0o777
    }

    @Test("pki init and issue write private files whose certificates name their holders; a node's carry the replication password")
    func issueAndLoad() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"), clusterID: "c1")
        #expect(mode(pki.path) == 0o700)
        let node = try ClusterIdentity(role: .node, name: "n1")
        let nodeFile = try pki.issue(node, hosts: ["10.0.0.1", "db1.example.com", "::1"])
        let operatorFile = try pki.issue(try ClusterIdentity(role: .operator, name: "alice"))
        for file in try FileManager.default.contentsOfDirectory(atPath: pki.path) {
            #expect(mode(pki.path + "/" + file) == 0o600, "\(file)")
        }
        let nodeCredentials = try WitnessCredentials.load(from: nodeFile)
        #expect(nodeCredentials.clusterID == "c1")
        #expect(nodeCredentials.replicationPassword == (try pki.cluster().replicationPassword))
        #expect(try WitnessCredentials.load(from: operatorFile).replicationPassword == nil)
        let loaded = try TLSCredentials(nodeCredentials).current()
        #expect(loaded.identity == node)
        #expect(loaded.names(host: "10.0.0.1") && loaded.names(host: "DB1.example.com") && loaded.names(host: "::1"))
        #expect(!loaded.names(host: "10.0.0.2") && !loaded.names(host: "db2.example.com") && !loaded.names(host: "127.0.0.1"))
        // The certificate names the hosts it is reached at, for host-name checks.
        let certificate = try Certificate(pemEncoded: try String(contentsOfFile: nodeCredentials.certificateFile, encoding: .utf8))
        let names = try certificate.extensions.subjectAlternativeNames.map(Array.init) ?? []
        #expect(names.count == 3 && names.contains(.dnsName("db1.example.com")))
        #expect(certificate.issuer == (try pki.authority()).certificate.subject)
        // Issuing again needs --renew; a renewal is a new certificate with the same name.
        #expect { try pki.issue(node) } throws: { "\($0)".contains("pass --renew") }
        try pki.issue(node, replacing: true)
        let renewed = try Certificate(pemEncoded: try String(contentsOfFile: nodeCredentials.certificateFile, encoding: .utf8))
        #expect(renewed.serialNumber != certificate.serialNumber)
        #expect { try PKIDirectory.create(at: pki.path) } throws: { "\($0)".contains("already holds a cluster's PKI") }
    }

    @Test("a renewed certificate is read again for the next connection; a half-written renewal keeps the old one")
    func reloadOnChange() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"))
        let identity = ClusterIdentity.witness(1)
        let credentials = try WitnessCredentials.load(from: try pki.issue(identity, days: 1))
        let tls = try TLSCredentials(credentials)
        let first = tls.current().notValidAfter
        try pki.issue(identity, days: 30, replacing: true)
        #expect(tls.current().notValidAfter > first.addingTimeInterval(86_400))
        // A key that does not belong to the certificate: the loaded contexts stay in use.
        let other = try WitnessCredentials.load(from: try pki.issue(.witness(2)))
        try FileManager.default.removeItem(atPath: credentials.keyFile)
        try FileManager.default.copyItem(atPath: other.keyFile, toPath: credentials.keyFile)
        #expect(tls.current().notValidAfter > first.addingTimeInterval(86_400))
        #expect(tls.reloadError?.contains("does not belong to the certificate") == true, "\(tls.reloadError ?? "nil")")
    }

    @Test("bad credentials are refused with the file and the reason")
    func badCredentials() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let old = folder.appending("old")
        try "cluster-id: x\nsecret: \(String(repeating: "ab", count: 32))\n".write(toFile: old, atomically: false, encoding: .utf8)
        #expect { try WitnessCredentials.load(from: old) } throws: { "\($0)".contains(old) && "\($0)".contains("pgquorum pki init") }
        let missing = folder.appending("missing")
        try "cluster-id: x\nca-file: ca.crt\ncert-file: a.crt\n".write(toFile: missing, atomically: false, encoding: .utf8)
        #expect { try WitnessCredentials.load(from: missing) } throws: { "\($0)" == "\(missing): no key-file line" }
        let unreadable = WitnessCredentials(clusterID: "x", caFile: folder.appending("none.crt"), certificateFile: "/dev/null", keyFile: "/dev/null")
        #expect { try TLSCredentials(unreadable) } throws: { "\($0)".contains("cannot read the CA certificate file \(folder.appending("none.crt"))") }
        #expect(throws: IdentityError.self) { try ClusterIdentity(role: .witness, name: "one") }
        #expect(throws: IdentityError.self) { try ClusterIdentity(role: .node, name: "a b") }
        #expect(throws: IdentityError.self) { try ClusterIdentity(role: .operator, name: "") }
    }
}

@Suite("what each certificate may ask a witness")
struct WitnessAccessTests {
    static let stamp = LogStamp(leaderClockNanos: 0, wallTimeMillis: 0)

    func append(_ event: ClusterEvent, formation: String = "default") -> WitnessRequest {
        .append(EventRecord(formation: formation, stamp: Self.stamp, event: event))
    }

    func report(_ node: PGNodeID) -> WitnessRequest {
        .report(
            formation: "default",
            NodeReport(
                node: node, reachedState: .secondary, postgresRunning: true, timeline: 1, flushLSN: 0, replayLSN: 0, syncState: .quorum,
                lagBytes: 0, sentAtNanos: 0))
    }

    @Test("the whole table: every role against every kind of request")
    func table() throws {
        let names: WitnessAccess.NodeNames = { formation, node in
            formation == "default" ? [1: "n1", 2: "n2"][node] : nil
        }
        let holders = [
            ClusterIdentity.witness(1), try ClusterIdentity(role: .node, name: "n1"), try ClusterIdentity(role: .operator, name: "alice"),
            try ClusterIdentity(role: .monitor, name: "prom"),
        ]
        let requests: [(String, WitnessRequest)] = [
            ("read", .read(from: 1, maxEntries: 10)),
            ("status", .status),
            ("membership", .changeMembership(.remove(id: 3))),
            ("switchover", append(.operatorRequest(.switchover(target: nil)))),
            ("settings", append(.settingsChanged(FormationSettings()))),
            ("register n1", append(.nodeRegistered(NodeRegistration(node: 0, name: "n1", host: "h", port: 5432, systemIdentifier: 0)))),
            ("register n2", append(.nodeRegistered(NodeRegistration(node: 0, name: "n2", host: "h", port: 5432, systemIdentifier: 0)))),
            ("register n1 as 2", append(.nodeRegistered(NodeRegistration(node: 2, name: "n1", host: "h", port: 5432, systemIdentifier: 0)))),
            ("state of 1", append(.stateReached(node: 1, state: .secondary))),
            ("state of 2", append(.stateReached(node: 2, state: .secondary))),
            ("state of 1 elsewhere", append(.stateReached(node: 1, state: .secondary), formation: "other")),
            ("report 1", report(1)),
            ("report 2", report(2)),
            ("report 9", report(9)),
            ("tick", append(.tick)),
            ("term started", append(.termStarted(carriedNanos: 1))),
        ]
        var lines: [String] = []
        for (label, request) in requests {
            for holder in holders {
                let refusal = WitnessAccess.refusal(of: request, by: holder, nodeNames: names)
                lines.append("\(label) by \(holder): \(refusal ?? "allowed")")
            }
        }
        let expected = """
            read by witness 1: allowed
            read by node n1: allowed
            read by operator alice: allowed
            read by monitor prom: allowed
            status by witness 1: allowed
            status by node n1: allowed
            status by operator alice: allowed
            status by monitor prom: allowed
            membership by witness 1: witness 1 may not change the witness membership: an operator certificate is needed
            membership by node n1: node n1 may not change the witness membership: an operator certificate is needed
            membership by operator alice: allowed
            membership by monitor prom: monitor prom may not change the witness membership: an operator certificate is needed
            switchover by witness 1: witness 1 may not append operator-request: an operator certificate is needed
            switchover by node n1: node n1 may not append operator-request: an operator certificate is needed
            switchover by operator alice: allowed
            switchover by monitor prom: monitor prom may not append operator-request: an operator certificate is needed
            settings by witness 1: witness 1 may not append settings-changed: an operator certificate is needed
            settings by node n1: node n1 may not append settings-changed: an operator certificate is needed
            settings by operator alice: allowed
            settings by monitor prom: monitor prom may not append settings-changed: an operator certificate is needed
            register n1 by witness 1: witness 1 may not register a node: a node or operator certificate is needed
            register n1 by node n1: allowed
            register n1 by operator alice: allowed
            register n1 by monitor prom: monitor prom may not register a node: a node or operator certificate is needed
            register n2 by witness 1: witness 1 may not register a node: a node or operator certificate is needed
            register n2 by node n1: node n1 may not register a node named n2: a node certificate registers its own name only
            register n2 by operator alice: allowed
            register n2 by monitor prom: monitor prom may not register a node: a node or operator certificate is needed
            register n1 as 2 by witness 1: witness 1 may not register a node: a node or operator certificate is needed
            register n1 as 2 by node n1: node n1 may not register as node 2, which is n2
            register n1 as 2 by operator alice: allowed
            register n1 as 2 by monitor prom: monitor prom may not register a node: a node or operator certificate is needed
            state of 1 by witness 1: witness 1 may not append a node's state: only the node's own certificate may
            state of 1 by node n1: allowed
            state of 1 by operator alice: allowed
            state of 1 by monitor prom: monitor prom may not append a node's state: only the node's own certificate may
            state of 2 by witness 1: witness 1 may not append a node's state: only the node's own certificate may
            state of 2 by node n1: node n1 may not append the state of node 2 (n2): a node certificate speaks for its own node only
            state of 2 by operator alice: allowed
            state of 2 by monitor prom: monitor prom may not append a node's state: only the node's own certificate may
            state of 1 elsewhere by witness 1: witness 1 may not append a node's state: only the node's own certificate may
            state of 1 elsewhere by node n1: node n1 may not append the state of node 1 of formation other: no such node is registered
            state of 1 elsewhere by operator alice: allowed
            state of 1 elsewhere by monitor prom: monitor prom may not append a node's state: only the node's own certificate may
            report 1 by witness 1: witness 1 may not report for a node: only the node's own certificate may
            report 1 by node n1: allowed
            report 1 by operator alice: allowed
            report 1 by monitor prom: monitor prom may not report for a node: only the node's own certificate may
            report 2 by witness 1: witness 1 may not report for a node: only the node's own certificate may
            report 2 by node n1: node n1 may not report node 2 (n2): a node certificate speaks for its own node only
            report 2 by operator alice: allowed
            report 2 by monitor prom: monitor prom may not report for a node: only the node's own certificate may
            report 9 by witness 1: witness 1 may not report for a node: only the node's own certificate may
            report 9 by node n1: node n1 may not report node 9 of formation default: no such node is registered
            report 9 by operator alice: allowed
            report 9 by monitor prom: monitor prom may not report for a node: only the node's own certificate may
            tick by witness 1: tick entries are written by the witnesses only
            tick by node n1: tick entries are written by the witnesses only
            tick by operator alice: tick entries are written by the witnesses only
            tick by monitor prom: tick entries are written by the witnesses only
            term started by witness 1: term-started entries are written by the witnesses only
            term started by node n1: term-started entries are written by the witnesses only
            term started by operator alice: term-started entries are written by the witnesses only
            term started by monitor prom: term-started entries are written by the witnesses only
            """
        #expect(lines.joined(separator: "\n") == expected)
    }
}
