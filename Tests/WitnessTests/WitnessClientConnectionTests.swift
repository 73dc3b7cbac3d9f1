import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import Synchronization
import Testing
import TestSupport

@testable import EventLog

/// A stand-in witness on a real TLS socket: it holds what a new connection sends for
/// `handshakeDelay` before TLS may begin (a witness, or the path to it, slow to start the
/// handshake), answers every request with an empty read — those that arrive in the first
/// `slowFor` of a connection only when that time is over — and counts the connections.
final class SlowWitness: Sendable {
    let channel: any Channel
    private let connections = Counter()

    /// How many connections it accepted.
    var accepted: Int { connections.value }

    init(credentials: WitnessCredentials, clusterID: String, handshakeDelay: TimeAmount, slowFor: TimeAmount) async throws {
        let context = try TLSCredentials(credentials).current().serverContext
        let connections = connections
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                connections.increment()
                let fastFrom = NIODeadline.now() + slowFor
                let events = WitnessChannelHandler.Events(
                    opened: { _, _, _, _ in },
                    frame: { channel, frame in
                        guard let id = try? WitnessRequest.decode(frame.payload).id else { return }
                        let answer = Frame(kind: WitnessFrameKind.response.rawValue, payload: WitnessResponse.entries([]).encoded(id: id))
                        channel.eventLoop.scheduleTask(deadline: fastFrom) {
                            channel.writeAndFlush(WitnessChannelHandler.buffer(answer), promise: nil)
                        }
                    },
                    closed: { _, _ in })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HoldInbound(for: handshakeDelay))
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

/// Passes on what arrives only once `delay` has passed since the connection opened.
private final class HoldInbound: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let delay: TimeAmount
    private var held: [NIOAny] = []
    private var released = false

    init(for delay: TimeAmount) { self.delay = delay }

    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.released = true
            for data in handler.held { context.fireChannelRead(data) }
            handler.held = []
            context.fireChannelReadComplete()
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if released { context.fireChannelRead(data) } else { held.append(data) }
    }
}

@Suite("the witness client's connections")
struct WitnessClientConnectionTests {
    @Test("a request that timed out on a connection whose handshake took most of the attempt keeps the connection: the next call uses it, with no new handshake")
    func slowHandshakeKeepsTheConnection() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-slow-witness")
        defer { folder.remove() }
        let pki = try PKIDirectory.create(at: folder.appending("pki"))
        let witness = try WitnessCredentials.load(from: try pki.issue(.witness(1), hosts: ["127.0.0.1"]))
        let operator_ = try WitnessCredentials.load(from: try pki.issue(try ClusterIdentity(role: .operator, name: "test")))
        // The client's TLS and witness handshake must end within 2 s; the call has 1.2 s in
        // all (1 s an attempt): its first request gets what the handshake left, and no
        // answer comes in the connection's first 3 s.
        let server = try await SlowWitness(credentials: witness, clusterID: witness.clusterID, handshakeDelay: .milliseconds(800), slowFor: .seconds(3))
        let client = try WitnessClient(endpoints: [server.endpoint], credentials: operator_, requestTimeout: .milliseconds(1_200))
        defer { client.close() }
        let started = ContinuousClock.now
        await #expect(throws: WitnessClientError.self) { _ = try await client.read(from: 1) }
        #expect(server.accepted == 1, "the client dialled again within the call")
        // Once the witness answers, the same connection serves the next call.
        try await Task.sleep(until: started + .milliseconds(3_500))
        #expect(try await client.read(from: 1).isEmpty)
        #expect(server.accepted == 1, "the client dialled again")
        client.close()
        await server.close()
    }
}
