import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import Synchronization
import Testing
import TestSupport

@testable import EventLog

/// A stand-in witness on a real TLS socket: it answers every request with an empty read at
/// once — except, on each connection, the first read from index `slowFrom`, answered only
/// after `delay` — sends an answer to no request every 200 ms (as a stream's pushes keep a
/// real witness heard, whatever the client's own timing), and counts the connections.
final class SlowWitness: Sendable {
    let channel: any Channel
    private let connections = Counter()

    /// How many connections it accepted.
    var accepted: Int { connections.value }

    init(credentials: WitnessCredentials, clusterID: String, slowFrom: UInt64, delay: TimeAmount, group: any EventLoopGroup) async throws {
        let context = try TLSCredentials(credentials).current().serverContext
        let connections = connections
        channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                connections.increment()
                let slowOnes = Counter()
                let events = WitnessChannelHandler.Events(
                    opened: { channel, _, _, _ in
                        let heard = Frame(kind: WitnessFrameKind.response.rawValue, payload: WitnessResponse.entries([]).encoded(id: .max))
                        let beat = channel.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
                            channel.writeAndFlush(WitnessChannelHandler.buffer(heard), promise: nil)
                        }
                        channel.closeFuture.whenComplete { _ in beat.cancel() }
                    },
                    frame: { channel, frame in
                        guard let (id, request) = try? WitnessRequest.decode(frame.payload) else { return }
                        var wait = TimeAmount.zero
                        if case .read(slowFrom, _, _, _) = request, slowOnes.increment() == 1 { wait = delay }
                        let answer = Frame(kind: WitnessFrameKind.response.rawValue, payload: WitnessResponse.entries([]).encoded(id: id))
                        channel.eventLoop.scheduleTask(in: wait) {
                            channel.writeAndFlush(WitnessChannelHandler.buffer(answer), promise: nil)
                        }
                    },
                    closed: { _, _ in })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(
                        WitnessChannelHandler(side: .acceptor(clusterID: clusterID, witnessID: 1), events: events, logger: .init(label: "slow-witness")))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    var endpoint: WitnessEndpoint { WitnessEndpoint(host: "127.0.0.1", port: channel.localAddress!.port!) }

    func close() async { try? await channel.close() }
}

final class Counter: Sendable {
    private let count = Mutex(0)

    var value: Int { count.withLock { $0 } }

    /// Adds one; returns the new count.
    @discardableResult
    func increment() -> Int { count.withLock { $0 += 1; return $0 } }
}

@Suite("the witness client's connections")
struct WitnessClientConnectionTests {
    @Test("a request that timed out on a connection the witness answered on lately keeps the connection: the retry uses it, with no new handshake")
    func answeredConnectionIsKept() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-slow-witness")
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"))
        let witness = try WitnessCredentials.load(from: try pki.issue(.witness(1), hosts: ["127.0.0.1"]))
        let operator_ = try WitnessCredentials.load(from: try pki.issue(try ClusterIdentity(role: .operator, name: "test")))
        // Event loops of its own: another test's work on the shared ones cannot hold back this
        // one's timers.
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await SlowWitness(credentials: witness, clusterID: witness.clusterID, slowFrom: 7, delay: .seconds(10), group: serverGroup)
        // 6 s a call, 2 s an attempt.
        let client = try WitnessClient(endpoints: [server.endpoint], credentials: operator_, requestTimeout: .seconds(6), group: clientGroup)
        defer {
            client.close()
            Task {
                await server.close()
                try? await serverGroup.shutdownGracefully()
                try? await clientGroup.shutdownGracefully()
            }
        }
        #expect(try await client.read(from: 1).isEmpty)
        #expect(server.accepted == 1)
        // The read from 7 gets no answer within its attempt; meanwhile the witness is heard on
        // the same connection (another read is answered, and its beats): it is slow for one
        // request, the path is sound, and the retry goes out on the same connection (answered
        // at once).
        let slow = Task { try await client.read(from: 7) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await client.read(from: 1).isEmpty)
        let started = ContinuousClock.now
        #expect(try await slow.value.isEmpty)
        // The retry goes out after the 2 s attempt; the slow answer would come after 10 s.
        #expect(ContinuousClock.now - started < .seconds(8))
        #expect(server.accepted == 1, "the client dialled again")
    }
}
