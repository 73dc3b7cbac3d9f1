import Raft
import Testing

@testable import EventLog

/// The witness's linearizable read gate: a read is answered only from an applied state at or
/// past a read index confirmed for it, and every read is answered once, in time.
@Suite("linearizable read gate")
struct ReadGateTests {
    @Test("reads that arrive together share one confirmation and wait for the applied index")
    func batching() {
        var gate = ReadGate<Int>()
        #expect(gate.startBatch() == nil)
        #expect(gate.add(1, deadlineNanos: 100) == true)
        #expect(gate.add(2, deadlineNanos: 100) == true)
        let first = gate.startBatch()?.context
        #expect(first != nil)
        #expect(gate.add(3, deadlineNanos: 100) == true)
        let second = gate.startBatch()?.context
        #expect(second != nil && second != first)
        // Nothing is served before its confirmation, whatever is applied.
        #expect(gate.served(applied: 1_000).isEmpty)
        gate.confirmed(ReadState(context: second!, index: 10))
        gate.confirmed(ReadState(context: first!, index: 8))
        #expect(gate.served(applied: 7).isEmpty)
        #expect(gate.served(applied: 8) == [1, 2])
        #expect(gate.served(applied: 9).isEmpty)
        #expect(gate.served(applied: 12) == [3])
        #expect(gate.count == 0)
    }

    @Test("an unconfirmed or unapplied read expires at its deadline; a refused batch fails at once")
    func expiry() {
        var gate = ReadGate<Int>()
        _ = gate.add(1, deadlineNanos: 100)
        let context = gate.startBatch()!.context
        _ = gate.add(2, deadlineNanos: 200)
        _ = gate.add(3, deadlineNanos: 300)
        let refused = gate.startBatch()!.context
        #expect(gate.failedBatch(refused) == [2, 3])
        gate.confirmed(ReadState(context: context, index: 50))
        #expect(gate.expired(nowNanos: 99).isEmpty)
        #expect(gate.expired(nowNanos: 100) == [1])
        // A confirmation that comes after its reads gave up is ignored.
        gate.confirmed(ReadState(context: refused, index: 1))
        #expect(gate.served(applied: 100).isEmpty)
        #expect(gate.count == 0)
    }

    @Test("a batch is prompt when one of its reads is; reads that may wait make a batch that waits")
    func promptness() {
        var gate = ReadGate<Int>()
        _ = gate.add(1, deadlineNanos: 100, prompt: false)
        _ = gate.add(2, deadlineNanos: 100, prompt: false)
        #expect(gate.startBatch()?.prompt == false)
        _ = gate.add(3, deadlineNanos: 100, prompt: false)
        _ = gate.add(4, deadlineNanos: 100)
        #expect(gate.startBatch()?.prompt == true)
        // Promptness belongs to the batch closed: the next one starts without it.
        _ = gate.add(5, deadlineNanos: 100, prompt: false)
        #expect(gate.startBatch()?.prompt == false)
    }

    @Test("the number of waiting reads is bounded")
    func bounded() {
        var gate = ReadGate<Int>()
        for read in 0..<ReadGate<Int>.pendingMax { _ = gate.add(read, deadlineNanos: 1) }
        #expect(gate.count == ReadGate<Int>.pendingMax)
        #expect(gate.add(-1, deadlineNanos: 1) == false)
        #expect(gate.removeAll().count == ReadGate<Int>.pendingMax)
        #expect(gate.add(0, deadlineNanos: 1) == true)
    }
}

/// Raft messages larger than a frame (a snapshot of a big formation) travel in chunks.
@Suite("chunked Raft messages")
struct MessageChunksTests {
    func bigSnapshot(bytes: Int) -> Message {
        var message = Message(kind: .snapshot, from: 1, to: 2, term: 7)
        var data = [UInt8](repeating: 0x5a, count: bytes)
        // Distinct bytes at every chunk boundary and at both ends, so a misplaced chunk shows.
        for offset in stride(from: 0, to: bytes, by: MessageChunks.chunkBytes / 2) { data[offset] = UInt8(truncatingIfNeeded: offset >> 20) }
        data[bytes - 1] = 0xa5
        message.snapshot = Snapshot(metadata: SnapshotMetadata(index: 90, term: 6, membership: Membership(voters: [1, 2, 3])), data: data)
        return message
    }

    @Test("a snapshot over 64 MiB is split into frames and reassembled exactly")
    func roundTrip() throws {
        let message = bigSnapshot(bytes: 70 << 20)
        let payload = message.wireEncoded()
        #expect(payload.count > Frame.bytesMax)
        let chunks = MessageChunks.split(payload, messageID: 1)
        #expect(chunks.count == 5)
        // Each chunk fits a frame, and goes through the frame codec.
        var decoder = FrameDecoder(bytesMax: Frame.bytesMax)
        for chunk in chunks {
            decoder.append(Frame(kind: WitnessFrameKind.raftMessageChunk.rawValue, payload: chunk).encoded())
        }
        var assembler = MessageChunks.Assembler()
        var whole: [UInt8]?
        while let frame = try decoder.next() { whole = try assembler.add(frame.payload) ?? whole }
        #expect(try Message(wireDecoding: try #require(whole)) == message)
    }

    @Test("a chunk out of order is refused and the partial message dropped")
    func outOfOrder() throws {
        let chunks = MessageChunks.split(bigSnapshot(bytes: 40 << 20).wireEncoded(), messageID: 9)
        var assembler = MessageChunks.Assembler()
        #expect(try assembler.add(chunks[0]) == nil)
        var refused = false
        do { _ = try assembler.add(chunks[2]) } catch { refused = true }
        #expect(refused)
        // The next message starts cleanly.
        #expect(try assembler.add(chunks[0]) == nil)
        #expect(try assembler.add(chunks[1]) == nil)
        #expect(try assembler.add(chunks[2]) != nil)
    }
}
