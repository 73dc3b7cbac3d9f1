import Foundation
import Synchronization
import Testing
import TestSupport

@testable import NodeControl

@Suite("pg_hba.conf addresses")
struct HostAddressesTests {
    @Test("addresses get a host mask, CIDRs stay, names and bad masks are not addresses")
    func cidr() {
        #expect(HostAddresses.cidr("10.0.0.7") == "10.0.0.7/32")
        #expect(HostAddresses.cidr("::1") == "::1/128")
        #expect(HostAddresses.cidr("10.0.0.0/24") == "10.0.0.0/24")
        #expect(HostAddresses.cidr("fd00::/8") == "fd00::/8")
        for value in ["db1.example.com", "localhost", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/24/1", "", "::1/129", "10.0.0.0/024"] {
            #expect(HostAddresses.cidr(value) == nil, "\(value)")
        }
    }

    @Test("a name resolves to its addresses; a literal to itself; an unknown name fails by name")
    func resolve() throws {
        let localhost = try HostAddresses.resolve("localhost")
        #expect(localhost.contains("127.0.0.1"))
        #expect(localhost.allSatisfy { HostAddresses.cidr($0) != nil })
        #expect(try HostAddresses.resolve("10.1.2.3") == ["10.1.2.3"])
        #expect(try HostAddresses.resolve("::1") == ["::1"])
        do {
            _ = try HostAddresses.resolve("no-such-host.invalid")
            Issue.record("an unknown name resolved")
        } catch {
            #expect(error.description.contains("no-such-host.invalid"))
        }
    }

    @Test("the address book resolves a name once per refresh, keeps its last addresses when the resolver fails, and retries a failure")
    func addressBook() async throws {
        let answers = Mutex<[String: [String]]>(["db1": ["10.0.0.1"]])
        let calls = Mutex(0)
        let book = PeerAddressBook(refresh: .milliseconds(300), retry: .milliseconds(100)) { (host: String) throws(NodeControlError) -> [String] in
            calls.withLock { $0 += 1 }
            guard let addresses = answers.withLock({ $0[host] }) else { throw .invalidConfiguration("\(host) does not resolve") }
            return addresses
        }
        #expect(book.lookup(["db1", "10.0.0.9", "10.0.0.9", "10.1.0.0/16"]).cidrs == ["10.0.0.1/32", "10.0.0.9/32", "10.1.0.0/16"])
        #expect(book.lookup(["db1"]).cidrs == ["10.0.0.1/32"])
        #expect(calls.withLock { $0 } == 1)
        // The name moves; the book sees it after its refresh time, not before.
        answers.withLock { $0["db1"] = ["10.0.0.2", "fd00::2"] }
        #expect(book.lookup(["db1"]).cidrs == ["10.0.0.1/32"])
        try await Task.sleep(for: .milliseconds(350))
        #expect(book.lookup(["db1"]).cidrs == ["10.0.0.2/32", "fd00::2/128"])
        // The resolver fails: the last addresses stay.
        answers.withLock { $0["db1"] = nil }
        try await Task.sleep(for: .milliseconds(350))
        let kept = book.lookup(["db1"])
        #expect(kept.cidrs == ["10.0.0.2/32", "fd00::2/128"])
        #expect(kept.unresolved.isEmpty)
        // A name never resolved is reported, and tried again after the retry time.
        let missing = book.lookup(["db2"])
        #expect(missing.cidrs.isEmpty)
        #expect(missing.unresolved["db2"]?.contains("db2 does not resolve") == true)
        answers.withLock { $0["db2"] = ["10.0.0.3"] }
        #expect(book.lookup(["db2"]).cidrs.isEmpty)
        try await Task.sleep(for: .milliseconds(150))
        #expect(book.lookup(["db2"]).cidrs == ["10.0.0.3/32"])
    }

    @Test("pg_hba.conf refuses a name, is rewritten only when it changes, and postgres starts with IPv4, IPv6 and resolved lines")
    func hbaFile() async throws {
        try await withNodes(["node_1"]) { nodes in
            let node = nodes[0].node
            #expect(throws: NodeControlError.self) { _ = try node.hbaContent(peers: ["db1.example.com"]) }
            try await onOwnThread { try node.initialize(peers: ["127.0.0.1"]) }
            let peers = try ["10.0.0.7", "fd00::7", "192.168.0.0/16"] + HostAddresses.resolve("localhost")
            #expect(try node.writeHBA(peers: peers))
            #expect(try !node.writeHBA(peers: peers.reversed()))
            let text = try String(contentsOfFile: node.dataDirectory + "/pg_hba.conf", encoding: .utf8)
            #expect(text.contains("host    replication  pgquorum_replicator  10.0.0.7/32  scram-sha-256"))
            #expect(text.contains("host    replication  pgquorum_replicator  fd00::7/128  scram-sha-256"))
            #expect(text.contains("host    replication  pgquorum_replicator  192.168.0.0/16  scram-sha-256"))
            #expect(!text.contains("/32/"))
            try await node.start()
            #expect(try nodes[0].sql("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0")
            // A dropped peer's lines go, and a reload takes the file.
            #expect(try node.writeHBA(peers: ["127.0.0.1"]))
            try node.reload()
            try await waitUntil("the reloaded rules no longer list 10.0.0.7", timeout: .seconds(10)) {
                try nodes[0].sql("SELECT count(*) FROM pg_hba_file_rules WHERE address = '10.0.0.7'") == "0"
            }
        }
    }
}
