import Raft
import Testing

@testable import EventLog

@Suite("witness wire: frames and Raft messages")
struct WireTests {
    static let sampleMessages: [Message] = {
        var append = Message(kind: .append, from: 1, to: 2, term: 7)
        append.index = 41
        append.logTerm = 6
        append.commit = 40
        append.entries = [Entry(term: 7, index: 42, data: Array("x".utf8)), Entry(term: 7, index: 43, kind: .membershipChange, data: MembershipChange.addVoter(4).encoded)]
        var rejection = Message(kind: .appendResponse, from: 2, to: 1, term: 7)
        rejection.reject = true
        rejection.index = 43
        rejection.rejectHint = 30
        rejection.logTerm = 5
        var vote = Message(kind: .vote, from: 3, to: 1, term: 8)
        vote.force = true
        vote.index = .max
        vote.logTerm = .max
        var snapshot = Message(kind: .snapshot, from: 1, to: 3, term: 7)
        snapshot.snapshot = Snapshot(metadata: SnapshotMetadata(index: 100, term: 6, membership: Membership(voters: [1, 2, 3], learners: [4])), data: [1, 2, 3])
        return [append, rejection, vote, snapshot] + MessageKind.allCases.map { Message(kind: $0, from: 9, to: 8, term: 1) }
    }()

    @Test("every Raft message kind round-trips through a frame")
    func messageRoundTrip() throws {
        for message in Self.sampleMessages {
            let frame = Frame(kind: 1, payload: message.wireEncoded())
            var decoder = FrameDecoder()
            decoder.append(frame.encoded())
            let decoded = try #require(try decoder.next())
            #expect(decoded == frame)
            #expect(try Message(wireDecoding: decoded.payload) == message)
            #expect(decoder.bufferedBytes == 0)
        }
    }

    @Test("frames arrive whole whatever the chunking, one byte at a time included")
    func chunking() throws {
        let frames = (0..<20).map { Frame(kind: UInt8($0), payload: [UInt8](repeating: UInt8($0), count: $0 * 37)) }
        let stream = frames.flatMap { $0.encoded() }
        for chunk in [1, 3, 64, 4096] {
            var decoder = FrameDecoder()
            var received: [Frame] = []
            var position = 0
            while position < stream.count {
                decoder.append(stream[position..<min(position + chunk, stream.count)])
                position += chunk
                while let frame = try decoder.next() { received.append(frame) }
            }
            #expect(received == frames, "chunk size \(chunk)")
        }
    }

    @Test("an oversized length is refused before its bytes are buffered; bad version and checksum are refused")
    func refusals() {
        var decoder = FrameDecoder(bytesMax: 1024)
        decoder.append([0, 0, 0x10, 0])
        #expect(throws: FrameError.oversized(bytes: 4096, maximum: 1024)) { try decoder.next() }

        var short = FrameDecoder()
        short.append([0, 0, 0, 2, 1, 1])
        #expect(throws: FrameError.tooShort(bytes: 2)) { try short.next() }

        var frame = Frame(kind: 3, payload: [9, 9]).encoded()
        frame[4] = 7
        let body = Array(frame[4..<(frame.count - 4)])
        frame = Array(frame[..<4]) + body + withUnsafeBytes(of: CRC32C.checksum(body).bigEndian) { Array($0) }
        var future = FrameDecoder()
        future.append(frame)
        #expect(throws: FrameError.malformed(.unknownVersion(7, supported: 1))) { try future.next() }

        var flipped = Frame(kind: 3, payload: [9, 9]).encoded()
        flipped[6] ^= 1
        var corrupt = FrameDecoder()
        corrupt.append(flipped)
        #expect {
            try corrupt.next()
        } throws: { error in
            if case FrameError.malformed(.checksumMismatch) = error { return true }
            return false
        }
    }

    @Test("100,000 random and mutated inputs: decoders never crash, and decoded messages never crash a replica")
    func fuzz() throws {
        var generator = SeededGenerator(seed: 0xBADC0DE)
        let valid = Self.sampleMessages.map { $0.wireEncoded() }
        var replica = try fuzzTarget()
        var decodedCount = 0
        var stepped = 0
        var leaderSteps = 0
        try lead(&replica)
        for round in 0..<100_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = valid[Int(generator.next() % UInt64(valid.count))]
                for _ in 0..<(1 + Int(generator.next() % 3)) where !bytes.isEmpty {
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
            } else {
                bytes = (0..<Int(generator.next() % 80)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            }
            var frames = FrameDecoder(bytesMax: 4096)
            frames.append(bytes)
            _ = try? frames.next()
            guard var message = try? Message(wireDecoding: bytes) else { continue }
            decodedCount += 1
            #expect(message.wireEncoded() == bytes)
            // Aim it at the replica, from a peer, and let the core judge it.
            message.to = 1
            message.from = 2 + message.from % 3
            if replica.role == .leader { leaderSteps += 1 }
            do {
                try replica.step(message)
                stepped += 1
                if replica.hasReady() {
                    let ready = try replica.ready()
                    try storage.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
                    replica.advance(ready)
                }
            } catch is RaftError {
                // Refused, as it should be for nonsense; the replica carries on.
            }
            if round % 500 == 0 { try lead(&replica) }
        }
        #expect(decodedCount > 10_000)
        #expect(stepped > 0)
        #expect(leaderSteps > 0)
    }

    private let storage = MemoryStorage()

    /// Makes the replica leader again (votes from 2 and 3), so that leader paths meet the
    /// fuzzed messages too.
    private func lead(_ replica: inout RaftNode) throws {
        guard replica.role != .leader else { return }
        try replica.campaign()
        for _ in 0..<2 {
            let kind: MessageKind = replica.role == .preCandidate ? .preVoteResponse : .voteResponse
            let term = replica.role == .preCandidate ? replica.term + 1 : replica.term
            for voter: NodeID in [2, 3] where replica.role != .leader {
                try replica.step(Message(kind: kind, from: voter, to: 1, term: term))
            }
        }
        while replica.hasReady() {
            let ready = try replica.ready()
            try storage.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
            replica.advance(ready)
        }
    }

    private func fuzzTarget() throws -> RaftNode {
        try RaftNode.bootstrap(storage: storage, voters: [1, 2, 3, 4])
        return try RaftNode(config: RaftConfig(id: 1), storage: storage)
    }
}
