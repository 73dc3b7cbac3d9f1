@testable import EventLog
import Foundation
import Raft
import Testing
import TestSupport

@Suite("HMAC-SHA-256 (swift-crypto, behind Hashing)")
struct HashingTests {
    func hex(_ bytes: [UInt8]) -> String { WitnessCredentials.hex(bytes) }

    @Test("RFC 4231 HMAC-SHA-256 test cases 1, 2 and 6")
    func hmac() {
        #expect(
            hex(Hashing.hmacSHA256(key: Array(repeating: 0x0b, count: 20), message: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(
            hex(Hashing.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(
            hex(Hashing.hmacSHA256(key: Array(repeating: 0xaa, count: 131), message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }
}

@Suite("witness handshake and messages")
struct WitnessProtocolTests {
    let secret = Array(repeating: UInt8(42), count: 32)

    func challenge() -> WitnessHandshake.Challenge {
        WitnessHandshake.Challenge(clusterID: "c1", witnessID: 2, nonce: WitnessHandshake.randomNonce())
    }

    func hello(to challenge: WitnessHandshake.Challenge, clusterID: String = "c1", secret: [UInt8]) -> WitnessHandshake.Hello {
        let nonce = WitnessHandshake.randomNonce()
        return WitnessHandshake.Hello(
            clusterID: clusterID, role: .peer, peerID: 3, nonce: nonce,
            proof: WitnessHandshake.helloProof(secret: secret, challenge: challenge, role: .peer, peerID: 3, clientNonce: nonce))
    }

    @Test("the right secret passes; a wrong id or secret is refused with a reason")
    func verify() throws {
        let challenge = challenge()
        #expect(WitnessHandshake.verify(hello(to: challenge, secret: secret), challenge: challenge, secret: secret) == nil)
        let wrongID = WitnessHandshake.verify(hello(to: challenge, clusterID: "c2", secret: secret), challenge: challenge, secret: secret)
        #expect(wrongID?.contains("cluster id mismatch") == true)
        let wrongSecret = WitnessHandshake.verify(hello(to: challenge, secret: Array(repeating: 1, count: 32)), challenge: challenge, secret: secret)
        #expect(wrongSecret?.contains("authentication failed") == true)
        // A proof made for another challenge (a replay) fails.
        let replayed = hello(to: self.challenge(), secret: secret)
        #expect(WitnessHandshake.verify(replayed, challenge: challenge, secret: secret) != nil)
        // A peer cannot claim another id with someone else's proof.
        var claimed = hello(to: challenge, secret: secret)
        claimed.peerID = 1
        #expect(WitnessHandshake.verify(claimed, challenge: challenge, secret: secret) != nil)
        #expect(try WitnessHandshake.Hello(decoding: claimed.encoded()) == claimed)
        #expect(try WitnessHandshake.Challenge(decoding: challenge.encoded()) == challenge)
    }

    static let requests: [WitnessRequest] = [
        .append(EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: .stateReached(node: 3, state: .primary))),
        .report(formation: "f", NodeReport(node: 1, reachedState: .secondary, postgresRunning: true, timeline: 2, flushLSN: 99)),
        .read(from: 5, maxEntries: 10), .subscribe(from: 7), .snapshot, .status,
        .changeMembership(.add(id: 4, address: "127.0.0.1:9")), .changeMembership(.remove(id: 2)),
    ]

    static let responses: [WitnessResponse] = [
        .committed(index: 9, term: 2),
        .entries([Entry(term: 1, index: 1, kind: .membershipChange, data: MembershipChange.addVoter(1).encoded), Entry(term: 2, index: 2)]),
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

    @Test("the credentials file round-trips and its problems name the file")
    func credentialsFile() throws {
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        let path = folder.appending("credentials")
        let credentials = WitnessCredentials.generate()
        try credentials.write(to: path)
        let loaded = try WitnessCredentials.load(from: path)
        #expect(loaded.clusterID == credentials.clusterID && loaded.secret == credentials.secret)
        #expect(throws: WitnessCredentials.FileError.self) { try credentials.write(to: path) }
        var attributes = stat()
        stat(path, &attributes)
        #expect(attributes.st_mode & 0o777 == 0o600)
        try "cluster-id: x\nsecret: abc\n".write(toFile: path + "2", atomically: false, encoding: .utf8)
        #expect {
            try WitnessCredentials.load(from: path + "2")
        } throws: { error in
            "\(error)".contains(path + "2") && "\(error)".contains("at least 32 hexadecimal digits")
        }
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
