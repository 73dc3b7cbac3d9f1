import EventLog
import Foundation
import Testing
import TestSupport

@testable import NodeControl

/// PostgreSQL over TLS (issue 16): replication checks the other node's certificate against the
/// cluster's CA and the host it connects to, before the password goes out.
@Suite("PostgreSQL over TLS", .serialized)
struct PostgresTLSTests {
    @Test("a standby clones and streams over TLS from a primary whose certificate names its host; a server whose certificate names another host is refused (verify-full)")
    func verifyFull() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-pg-tls")
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"))
        func tls(_ name: String, hosts: [String]) throws -> PostgresTLS {
            let credentials = try WitnessCredentials.load(from: try pki.issue(try ClusterIdentity(role: .node, name: name), hosts: hosts))
            return PostgresTLS(certificateFile: credentials.certificateFile, keyFile: credentials.keyFile, caFile: credentials.caFile)
        }
        var fixtures: [NodeFixture] = []
        do {
            let primary = try NodeFixture(name: "node_1", tls: try tls("n1", hosts: ["127.0.0.1"]))
            let standby = try NodeFixture(name: "node_2", tls: try tls("n2", hosts: ["127.0.0.1"]))
            let impostor = try NodeFixture(name: "node_3", tls: try tls("n3", hosts: ["10.9.9.9", "db3.example.com"]))
            let victim = try NodeFixture(name: "node_4", tls: try tls("n4", hosts: ["127.0.0.1"]))
            fixtures = [primary, standby, impostor, victim]
            try await startPrimaryAndStandby(primary, standby)
            try await waitUntil("the standby streams over TLS 1.3") {
                try primary.sql("SELECT s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.ssl") == "TLSv1.3"
            }
            let hba = try String(contentsOfFile: primary.node.configuration.dataDirectory + "/pg_hba.conf", encoding: .utf8)
            #expect(hba.contains("hostssl replication  pgquorum_replicator  127.0.0.1/32  scram-sha-256"), "\(hba)")
            #expect(!hba.contains("host    replication"), "\(hba)")

            // A server whose certificate is the cluster CA's but for another host.
            try await impostor.startPrimary()
            await #expect {
                try await onOwnThread { try victim.node.basebackup(from: impostor.source, slot: nil) }
            } throws: { error in
                "\(error)".contains("does not match host name \"127.0.0.1\"")
            }
        } catch {
            for fixture in fixtures { await fixture.destroy() }
            throw error
        }
        for fixture in fixtures { await fixture.destroy() }
    }
}
