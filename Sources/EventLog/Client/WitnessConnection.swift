import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Why a witness call failed, as one line an operator can act on.
public enum WitnessClientError: Error, Sendable, CustomStringConvertible {
    /// No witness answered; each tried address with what went wrong there.
    case unreachable([String])
    /// A witness refused the connection (this side's certificate, or a wrong cluster id); not
    /// retried.
    case refused(endpoint: WitnessEndpoint, reason: String)
    /// A witness answered with a refusal.
    case failure(WitnessFailure)
    /// The answer did not come in time.
    case timedOut(endpoint: WitnessEndpoint, after: Duration)
    /// The connection broke before the answer came.
    case connectionLost(endpoint: WitnessEndpoint, reason: String)
    /// The witness sent something this client cannot read.
    case malformedResponse(endpoint: WitnessEndpoint, reason: String)

    public var description: String {
        switch self {
        case .unreachable(let tried): return "no witness reachable (tried \(tried.joined(separator: "; ")))"
        case .refused(let endpoint, let reason): return "witness \(endpoint) refused the connection: \(reason)"
        case .failure(let failure): return failure.message
        case .timedOut(let endpoint, let after): return "witness \(endpoint) did not answer within \(after)"
        case .connectionLost(let endpoint, let reason): return "connection to witness \(endpoint) lost: \(reason)"
        case .malformedResponse(let endpoint, let reason): return "witness \(endpoint) sent a malformed response: \(reason)"
        }
    }
}

/// One authenticated connection to one witness, with requests multiplexed by id.
final class WitnessConnection: Sendable {
    let endpoint: WitnessEndpoint
    private let channel: any Channel
    private let state: Mutex<State>

    private struct State {
        var nextID: UInt64 = 1
        var pending: [UInt64: CheckedContinuation<WitnessResponse, any Error>] = [:]
        var pushes: [UInt64: @Sendable (WitnessResponse) -> Void] = [:]
        var onClose: [@Sendable (String) -> Void] = []
        var closedReason: String?
        var lastHeard = ContinuousClock.now
    }

    private init(endpoint: WitnessEndpoint, channel: any Channel) {
        self.endpoint = endpoint
        self.channel = channel
        self.state = Mutex(State())
    }

    var isOpen: Bool { state.withLock { $0.closedReason == nil } && channel.isActive }

    /// When the witness last sent anything on this connection (its handshake included).
    var lastHeard: ContinuousClock.Instant { state.withLock { $0.lastHeard } }

    /// Connects and completes TLS and the handshake. The witness refusing this side (its
    /// certificate, its cluster id) is `.refused`; this side refusing the witness (its
    /// certificate is not a witness's, or not the cluster CA's) is `.connectionLost` with the
    /// reason, so that the other witnesses are tried.
    static func connect(
        to endpoint: WitnessEndpoint, clusterID: String, tls: TLSCredentials, group: any EventLoopGroup, timeout: Duration, logger: Logger,
        linkTimeouts: LinkTimeouts = LinkTimeouts(userTimeoutMillis: 3_000)
    ) async throws -> WitnessConnection {
        let box = ConnectionBox()
        let handshake = group.next().makePromise(of: Void.self)
        let events = WitnessChannelHandler.Events(
            opened: { _, _, _, _ in handshake.succeed(()) },
            frame: { _, frame in box.connection?.received(frame) },
            closed: { _, reason in
                handshake.fail(HandshakeClosed(reason: reason ?? .init(text: "the witness closed the connection")))
                box.connection?.closed(reason?.text ?? "closed")
            })
        let tlsContext = tls.current().clientContext
        let millis = Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let channel: any Channel
        do {
            // At most 1 s: a connect started while the path was cut sits in SYN back-off
            // (1 s, then 3 s…); a new attempt after the heal goes through at once. A witness
            // on a working network answers a SYN in far less.
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(min(millis, 1_000)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    linkTimeouts.apply(to: channel).flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(
                            WitnessChannelHandler(
                                side: .connector(clusterID: clusterID, role: .client, peerID: 0),
                                events: events, logger: logger, handshakeTimeout: .milliseconds(millis)))
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            handshake.fail(error)
            throw WitnessClientError.connectionLost(endpoint: endpoint, reason: "\(error)")
        }
        let connection = WitnessConnection(endpoint: endpoint, channel: channel)
        box.connection = connection
        do {
            try await handshake.futureResult.get()
            connection.state.withLock { $0.lastHeard = .now }
        } catch let closed as HandshakeClosed {
            channel.close(promise: nil)
            if closed.reason.refusal { throw WitnessClientError.refused(endpoint: endpoint, reason: closed.reason.text) }
            throw WitnessClientError.connectionLost(endpoint: endpoint, reason: closed.reason.text)
        }
        return connection
    }

    /// Sends a request and waits for its answer (at most `timeout`).
    func request(_ request: WitnessRequest, timeout: Duration) async throws -> WitnessResponse {
        guard channel.isActive else { throw WitnessClientError.connectionLost(endpoint: endpoint, reason: "closed") }
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        let timer = Mutex<Scheduled<Void>?>(nil)
        defer { timer.withLock { $0?.cancel() } }
        return try await withCheckedThrowingContinuation { continuation in
            let closedReason = state.withLock { state -> String? in
                if state.closedReason == nil { state.pending[id] = continuation }
                return state.closedReason
            }
            if let closedReason {
                continuation.resume(throwing: WitnessClientError.connectionLost(endpoint: endpoint, reason: closedReason))
                return
            }
            // Armed only once the request is pending: a timer that fired before would find
            // nothing to fail, and the request would wait for its answer however late.
            let nanos = Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            timer.withLock {
                $0 = channel.eventLoop.scheduleTask(in: .nanoseconds(nanos)) { [self] in
                    self.finish(id, with: .failure(WitnessClientError.timedOut(endpoint: self.endpoint, after: timeout)))
                }
            }
            write(request.encoded(id: id))
        }
    }

    /// Subscribes to committed entries from `from`; every push and the final failure (if any)
    /// go to `onResponse`, and `onClose` is called once when the connection ends.
    func subscribe(
        from: UInt64, formation: String? = nil, onResponse: @escaping @Sendable (WitnessResponse) -> Void, onClose: @escaping @Sendable (String) -> Void
    ) {
        let (id, closedReason) = state.withLock { state -> (UInt64, String?) in
            defer { state.nextID += 1 }
            state.pushes[state.nextID] = onResponse
            state.onClose.append(onClose)
            return (state.nextID, state.closedReason)
        }
        if let closedReason { return onClose(closedReason) }
        write(WitnessRequest.subscribe(from: from, formation: formation).encoded(id: id))
    }

    func close() {
        channel.close(promise: nil)
    }

    private func write(_ payload: [UInt8]) {
        let frame = Frame(kind: WitnessFrameKind.request.rawValue, payload: payload)
        channel.writeAndFlush(WitnessChannelHandler.buffer(frame, allocator: channel.allocator), promise: nil)
    }

    private func received(_ frame: Frame) {
        guard frame.kind == WitnessFrameKind.response.rawValue else {
            return closeBroken("unexpected frame kind \(frame.kind)")
        }
        let decoded: (id: UInt64, response: WitnessResponse)
        do { decoded = try WitnessResponse.decode(frame.payload) } catch { return closeBroken("\(error)") }
        let push = state.withLock { state in
            state.lastHeard = .now
            return state.pushes[decoded.id]
        }
        if let push {
            push(decoded.response)
        } else {
            finish(decoded.id, with: .success(decoded.response))
        }
    }

    private func closeBroken(_ reason: String) {
        closed("malformed response: \(reason)")
        channel.close(promise: nil)
    }

    private func finish(_ id: UInt64, with result: Result<WitnessResponse, any Error>) {
        state.withLock { $0.pending.removeValue(forKey: id) }?.resume(with: result)
    }

    private func closed(_ reason: String) {
        let (pending, onClose) = state.withLock { state in
            guard state.closedReason == nil else { return ([CheckedContinuation<WitnessResponse, any Error>](), [@Sendable (String) -> Void]()) }
            state.closedReason = reason
            defer {
                state.pending = [:]
                state.pushes = [:]
                state.onClose = []
            }
            return (Array(state.pending.values), state.onClose)
        }
        for continuation in pending { continuation.resume(throwing: WitnessClientError.connectionLost(endpoint: endpoint, reason: reason)) }
        for callback in onClose { callback(reason) }
    }
}

private struct HandshakeClosed: Error {
    var reason: WitnessChannelHandler.CloseReason
}

/// Lets the channel's callbacks reach the connection object created after the channel.
private final class ConnectionBox: Sendable {
    private let value = Mutex<WitnessConnection?>(nil)
    var connection: WitnessConnection? {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
