@testable import EventLog
import Foundation
import Raft
import Testing
import TestSupport

@Suite("witness handshake and messages")
struct WitnessProtocolTests {
    @Test("the handshake inside TLS: a peer only with its own witness certificate, a client only to a witness, the cluster id on both sides")
    func handshakeChecks() throws {
        let challenge = WitnessHandshake.Challenge(clusterID: "c1", witnessID: 2)
        let peer = WitnessHandshake.Hello(clusterID: "c1", role: .peer, peerID: 3)
        let client = WitnessHandshake.Hello(clusterID: "c1", role: .client, peerID: 0)
        let node = try ClusterIdentity(role: .node, name: "n1")
        let results = [
            WitnessHandshake.refusal(of: peer, from: .witness(3), to: challenge),
            WitnessHandshake.refusal(of: peer, from: .witness(1), to: challenge),
            WitnessHandshake.refusal(of: peer, from: node, to: challenge),
            WitnessHandshake.refusal(of: client, from: node, to: challenge),
            WitnessHandshake.refusal(of: WitnessHandshake.Hello(clusterID: "c2", role: .client, peerID: 0), from: node, to: challenge),
            WitnessHandshake.refusal(of: challenge, from: .witness(2), clusterID: "c1", expectedWitness: 2),
            WitnessHandshake.refusal(of: challenge, from: .witness(2), clusterID: "c1", expectedWitness: nil),
            WitnessHandshake.refusal(of: challenge, from: .witness(2), clusterID: "c1", expectedWitness: 3),
            WitnessHandshake.refusal(of: challenge, from: .witness(1), clusterID: "c1", expectedWitness: nil),
            WitnessHandshake.refusal(of: challenge, from: node, clusterID: "c1", expectedWitness: nil),
            WitnessHandshake.refusal(of: challenge, from: .witness(2), clusterID: "c9", expectedWitness: nil),
        ]
        #expect(
            results == [
                nil,
                "a peer connection claims witness 3, but its certificate is witness 1's",
                "node n1 may not carry Raft messages: only a witness certificate may",
                nil,
                "cluster id mismatch: this witness serves cluster c1, the connection expected c2",
                nil,
                nil,
                "expected witness 3 at this address, found witness 2",
                "the server says it is witness 2, but its certificate is witness 1's",
                "the server presented node n1's certificate, not a witness's",
                "cluster id mismatch: the witness serves cluster c1, expected c9",
            ])
        #expect(try WitnessHandshake.Hello(decoding: peer.encoded()) == peer)
        #expect(try WitnessHandshake.Challenge(decoding: challenge.encoded()) == challenge)
    }

    static let requests: [WitnessRequest] = [
        .append(EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: .stateReached(node: 3, state: .primary))),
        .report(formation: "f", NodeReport(node: 1, reachedState: .secondary, postgresRunning: true, timeline: 2, flushLSN: 99)),
        .read(from: 5, maxEntries: 10), .read(from: 5, maxEntries: 10, stale: true, formation: "b"), .subscribe(from: 7),
        .subscribe(from: 7, formation: "b"), .snapshot, .status,
        .changeMembership(.add(id: 4, address: "127.0.0.1:9")), .changeMembership(.remove(id: 2)),
    ]

    static let responses: [WitnessResponse] = [
        .committed(index: 9, term: 2),
        .entries([Entry(term: 1, index: 1, kind: .membershipChange, data: MembershipChange.addVoter(1).encoded), Entry(term: 2, index: 2)]),
        .filtered([Entry(term: 2, index: 4)], through: 9), .filtered([], through: 3),
        .snapshot(WitnessSnapshot(index: 9, term: 2, voters: [1, 2], addresses: [WitnessMember(id: 1, address: "a:1")], application: [1, 2])),
        .status(
            WitnessStatus(
                id: 1, clusterID: "c", term: 3, role: "leader", leader: 1, leaderAddress: "a:1", commit: 9, applied: 9, firstIndex: 1,
                lastIndex: 9, members: [.init(id: 1, address: "a:1", match: 9), .init(id: 2, address: "b:2", match: nil)])),
        .failure(WitnessFailure(.notLeader, "no", leaderAddress: "b:2")),
    ]

    @Test("requests and responses round-trip")
    func roundTrip() throws {
        for (offset, request) in Self.requests.enumerated() {
            let decoded = try WitnessRequest.decode(request.encoded(id: UInt64(offset)))
            #expect(decoded.id == UInt64(offset) && decoded.request == request)
        }
        for (offset, response) in Self.responses.enumerated() {
            let decoded = try WitnessResponse.decode(response.encoded(id: UInt64(offset)))
            #expect(decoded.id == UInt64(offset) && decoded.response == response)
        }
    }

    @Test("a formation's filter keeps its entries, those of no formation and Raft's own, and says how far it looked; the default formation's readers get every entry")
    func formationFilter() throws {
        func record(_ formation: String, _ event: ClusterEvent) -> [UInt8] {
            EventRecord(formation: formation, stamp: LogStamp(leaderClockNanos: 1, wallTimeMillis: 1), event: event).encoded()
        }
        let entries = [
            Entry(term: 1, index: 10, kind: .membershipChange, data: MembershipChange.addVoter(1).encoded),
            Entry(term: 1, index: 11),
            Entry(term: 1, index: 12, data: record("a", .stateReached(node: 1, state: .primary))),
            Entry(term: 1, index: 13, data: record("ab", .stateReached(node: 1, state: .primary))),
            Entry(term: 1, index: 14, data: record("b", .stateReached(node: 2, state: .primary))),
            Entry(term: 1, index: 15, data: record("default", .tick)),
            Entry(term: 1, index: 16, data: record("default", .termStarted(carriedNanos: 5))),
            Entry(term: 1, index: 17, data: record("default", .membershipChanged([WitnessMember(id: 1, address: "a:1")]))),
            Entry(term: 1, index: 18, data: record("default", .stateReached(node: 1, state: .single))),
            Entry(term: 1, index: 19, data: record("b", .tick)),
            Entry(term: 1, index: 20, data: record("a", .settingsChanged(FormationSettings()))),
        ]
        let kept = WitnessReplica.response(for: .success(entries), from: 10, formation: "a")
        #expect(kept == .filtered(entries.filter { [10, 11, 12, 15, 16, 17, 19, 20].contains($0.index) }, through: 20))
        #expect(WitnessReplica.response(for: .success(Array(entries[3...4])), from: 13, formation: "a") == .filtered([], through: 14))
        #expect(WitnessReplica.response(for: .success([]), from: 21, formation: "a") == .filtered([], through: 20))
        #expect(WitnessReplica.response(for: .success(entries), from: 10, formation: "default") == .entries(entries))
        #expect(WitnessReplica.response(for: .success(entries), from: 10, formation: nil) == .entries(entries))
        let failure = WitnessFailure(.compacted, "gone", snapshotIndex: 9)
        #expect(WitnessReplica.response(for: .failure(failure), from: 5, formation: "a") == .failure(failure))
        // The default formation asks without a filter; a filter naming it is refused.
        #expect(try WitnessRequest.decode(WitnessRequest.read(from: 1, maxEntries: 5, formation: "default").encoded(id: 1)).request == .read(from: 1, maxEntries: 5))
        var forged = ByteWriter()
        forged.write(UInt64(1))
        forged.write(UInt8(14))
        forged.write(UInt64(1))
        forged.write("default")
        #expect(throws: DecodingError.self) { try WitnessRequest.decode(forged.bytes) }
        // A push whose end is before its last entry is malformed.
        var backwards = ByteWriter()
        backwards.write(UInt64(1))
        backwards.write(UInt8(6))
        backwards.write([Entry(term: 1, index: 8)])
        backwards.write(UInt64(7))
        #expect(throws: DecodingError.self) { try WitnessResponse.decode(backwards.bytes) }
    }

    @Test("the witness snapshot keeps its request sessions; a version 1 snapshot (without them) still loads")
    func witnessSnapshotData() throws {
        var requests = RequestSessions()
        _ = requests.admit(RequestID(client: 3, sequence: 1), index: 40, wallTimeMillis: 9)
        let addresses = [WitnessMember(id: 1, address: "10.0.0.1:7400")]
        let current = WitnessSnapshotData(addresses: addresses, requests: requests, application: [5, 6])
        #expect(try WitnessSnapshotData(decoding: current.encoded()) == current)
        var old = ByteWriter()
        old.write(UInt8(1))
        old.write(addresses)
        old.writeBlob([5, 6])
        old.appendChecksum()
        #expect(try WitnessSnapshotData(decoding: old.bytes) == WitnessSnapshotData(addresses: addresses, application: [5, 6]))
    }

    @Test("truncated, mutated and random bytes are refused, never a crash")
    func garbage() {
        var generator = SeededGenerator(seed: 7)
        let valid = Self.requests.map { $0.encoded(id: 1) } + Self.responses.map { $0.encoded(id: 1) }
        for round in 0..<20_000 {
            var bytes = valid[round % valid.count]
            switch round % 3 {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
            case 1: bytes[Int.random(in: 0..<bytes.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            default: bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            }
            _ = try? WitnessRequest.decode(bytes)
            _ = try? WitnessResponse.decode(bytes)
            _ = try? WitnessHandshake.Hello(decoding: bytes)
            _ = try? WitnessHandshake.Challenge(decoding: bytes)
        }
    }

    @Test("a data directory keeps the cluster it was first started for")
    func dataDirectoryIdentity() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        // A data directory keeps the cluster it was first started for.
        let data = folder.appending("data")
        try WitnessIdentity.claim(dataDirectory: data, clusterID: "a")
        try WitnessIdentity.claim(dataDirectory: data, clusterID: "a")
        #expect { try WitnessIdentity.claim(dataDirectory: data, clusterID: "b") } throws: { "\($0)".contains("belongs to cluster a") }
    }

    @Test("peer lists and addresses are parsed with clear errors")
    func addresses() throws {
        let peers = try WitnessEndpoint.parsePeers("1=127.0.0.1:7001, 2=[::1]:7002")
        #expect(peers[1] == WitnessEndpoint(host: "127.0.0.1", port: 7001))
        #expect(peers[2]?.description == "[::1]:7002")
        #expect { try WitnessEndpoint.parsePeers("1=a:1,1=b:2") } throws: { "\($0)".contains("listed twice") }
        #expect { try WitnessEndpoint.parsePeers("0=a:1") } throws: { "\($0)".contains("positive ID") }
        #expect { try WitnessEndpoint(parsing: "host") } throws: { "\($0)".contains("no :PORT") }
        #expect { try WitnessEndpoint(parsing: "host:99999") } throws: { "\($0)".contains("valid port") }
    }
}
