import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Serves GET endpoints over HTTP/1.1 on an event loop of its own, so that a flood of probes
/// never delays a node manager's heartbeats and lease checks, or a witness's Raft loop: each
/// request is answered by `respond` (method, target) from one snapshot of what the process
/// knows — `HealthEndpoints` and `/metrics` on a node manager, `/metrics` on a witness; the
/// connection closes after the answer.
public final class HTTPEndpointServer: Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: any Channel

    /// The most connections served at once; more are closed on accept.
    static let connectionsMax = 256

    public typealias Respond = @Sendable (_ method: String, _ target: String) -> HealthEndpoints.Response

    public init(host: String, port: Int, logger: Logger, respond: @escaping Respond) async throws {
        let open = OpenConnections()
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 128)
                .childChannelInitializer { channel in
                    guard open.admit(max: Self.connectionsMax) else { return channel.close() }
                    channel.closeFuture.whenComplete { _ in open.closed() }
                    return channel.eventLoop.makeCompletedFuture {
                        // A client that sends nothing for 5 s is closed.
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(5)))
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(EndpointHandler(respond: respond))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        logger.info("HTTP endpoints listening", metadata: ["address": "\(host):\(channel.localAddress?.port ?? port)"])
    }

    public var port: Int? { channel.localAddress?.port }

    public func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Counts the connections being served.
private final class OpenConnections: Sendable {
    private let count = Mutex(0)

    func admit(max: Int) -> Bool {
        count.withLock { count in
            guard count < max else { return false }
            count += 1
            return true
        }
    }

    func closed() { count.withLock { $0 -= 1 } }
}

/// One connection: answers the request when it ends, then closes.
private final class EndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: HTTPEndpointServer.Respond
    private var head: HTTPRequestHead?

    init(respond: @escaping HTTPEndpointServer.Respond) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let response = respond(head.method.rawValue, head.uri)
            var headers = HTTPHeaders([("Content-Type", response.contentType), ("Connection", "close")] + response.headers)
            let body = response.body.hasSuffix("\n") ? response.body : response.body + "\n"
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            let status = HTTPResponseStatus(statusCode: response.status)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
    }
}
