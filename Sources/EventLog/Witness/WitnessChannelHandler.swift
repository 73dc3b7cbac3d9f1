#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Raft
import Synchronization

/// Bounds the requests of one connection that wait on the Raft loop: at the limit the
/// connection stops decoding and reading until answers went out, so one client flooding
/// requests cannot starve the replica's heartbeats (or everyone else).
///
/// It also counts the bytes of answers written but not yet taken by the kernel, so that the
/// witness stops computing answers (reads can be the whole log) for a client that does not
/// read them: at `unsentHigh` answers are backlogged until the bytes fall to `unsentLow`.
final class RequestLimiter: Sendable {
    let limit: Int
    let unsentHigh: Int
    let unsentLow: Int
    private let state = Mutex<(inFlight: Int, paused: Bool, onResume: (@Sendable () -> Void)?)>((0, false, nil))
    private let unsent = Mutex<(bytes: Int, backlogged: Bool)>((0, false))

    init(limit: Int = 256, unsentHigh: Int = 8 << 20, unsentLow: Int = 1 << 20) {
        self.limit = limit
        self.unsentHigh = unsentHigh
        self.unsentLow = unsentLow
    }

    /// True from when the unsent bytes reach `unsentHigh` until they fall to `unsentLow`.
    var answersBacklogged: Bool { unsent.withLock { $0.backlogged } }

    /// An answer of `bytes` was handed to the channel.
    func sending(_ bytes: Int) {
        unsent.withLock { unsent in
            unsent.bytes += bytes
            if unsent.bytes >= unsentHigh { unsent.backlogged = true }
        }
    }

    /// An answer of `bytes` left the channel (or the channel failed); true when that ended a
    /// backlog, so that parked answers can be computed.
    func sent(_ bytes: Int) -> Bool {
        unsent.withLock { unsent in
            unsent.bytes -= bytes
            guard unsent.backlogged, unsent.bytes <= unsentLow else { return false }
            unsent.backlogged = false
            return true
        }
    }

    var isSaturated: Bool { state.withLock { $0.inFlight >= limit } }

    func started() { state.withLock { $0.inFlight += 1 } }

    /// The connection stopped reading; `onResume` runs once half the budget is free.
    func pause(onResume: @escaping @Sendable () -> Void) {
        state.withLock { state in
            state.paused = true
            state.onResume = onResume
        }
    }

    /// A request was answered.
    func finished() {
        let resume = state.withLock { state -> (@Sendable () -> Void)? in
            state.inFlight -= 1
            guard state.paused, state.inFlight <= limit / 2 else { return nil }
            state.paused = false
            defer { state.onResume = nil }
            return state.onResume
        }
        resume?()
    }
}

/// One witness connection's framing, handshake and health, shared by the witness (accepting
/// side) and by peers and clients (connecting side). After the handshake every frame goes to
/// `events.frame`; a malformed frame, a failed handshake or a peer that stops reading closes
/// the connection with a logged reason (DESIGN §5 rule 5) and nothing else is affected.
final class WitnessChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side {
        /// The witness: it sends the challenge and checks the hello.
        case acceptor(clusterID: String, witnessID: NodeID)
        /// A peer or client: it checks the cluster id, proves the secret and checks the proof.
        case connector(clusterID: String, role: WitnessHandshake.Role, peerID: NodeID)
    }

    struct Events: Sendable {
        /// The handshake succeeded; the remote's role and id (the witness id for connectors).
        var opened: @Sendable (any Channel, WitnessHandshake.Role, NodeID) -> Void
        var frame: @Sendable (any Channel, Frame) -> Void
        /// The connection closed; the reason when it was closed because of a problem.
        var closed: @Sendable (any Channel, String?) -> Void
        var writable: @Sendable (any Channel) -> Void = { _ in }
    }

    private enum State {
        case handshaking
        case open
        case closed
    }

    private let side: Side
    private let secret: [UInt8]
    private let events: Events
    private let logger: Logger
    private let handshakeTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    private let limiter: RequestLimiter?
    private var decoder: FrameDecoder
    private var state = State.handshaking
    private var challenge: WitnessHandshake.Challenge?
    private var clientNonce: [UInt8] = []
    private var closeReason: String?
    private var remote = "unknown"
    private var pausedForWritability = false

    init(
        side: Side, secret: [UInt8], events: Events, logger: Logger, handshakeTimeout: TimeAmount = .seconds(5),
        stallTimeout: TimeAmount = .seconds(10), limiter: RequestLimiter? = nil, bytesMax: Int = Frame.bytesMax
    ) {
        self.limiter = limiter
        self.side = side
        self.secret = secret
        self.events = events
        self.logger = logger
        self.handshakeTimeout = handshakeTimeout
        self.stallTimeout = stallTimeout
        self.decoder = FrameDecoder(bytesMax: bytesMax)
    }

    static func buffer(_ frame: Frame, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        allocator.buffer(bytes: frame.encoded())
    }

    func channelActive(context: ChannelHandlerContext) {
        remote = context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
        if case .acceptor(let clusterID, let witnessID) = side {
            let challenge = WitnessHandshake.Challenge(clusterID: clusterID, witnessID: witnessID, nonce: WitnessHandshake.randomNonce())
            self.challenge = challenge
            send(context, Frame(kind: WitnessFrameKind.challenge.rawValue, payload: challenge.encoded()))
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let (handler, context) = loopBound.value
            if case .handshaking = handler.state { handler.fail(context, "no handshake within \(handler.handshakeTimeout.nanoseconds / 1_000_000) ms") }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard closeReason == nil else { return }
        decoder.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
        decodeFrames(context)
    }

    /// Hands on every whole frame received, unless the request budget is spent: then the
    /// rest waits in the decoder and reading stops until answers free the budget.
    private func decodeFrames(_ context: ChannelHandlerContext) {
        do {
            while closeReason == nil {
                // A peer that does not read its answers gets no more of them computed: its
                // requests wait (and it is closed once the stall timeout passes).
                if limiter != nil, case .open = state, !context.channel.isWritable {
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                    pausedForWritability = true
                    return
                }
                if let limiter, limiter.isSaturated {
                    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                    limiter.pause {
                        loopBound.eventLoop.execute {
                            let (handler, context) = loopBound.value
                            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
                            handler.decodeFrames(context)
                        }
                    }
                    return
                }
                guard let frame = try decoder.next() else { return }
                if case .open = state, frame.kind == WitnessFrameKind.request.rawValue { limiter?.started() }
                handle(context, frame)
            }
        } catch {
            fail(context, "\(error)")
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            if case .open = state { events.writable(context.channel) }
            if pausedForWritability {
                pausedForWritability = false
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
                decodeFrames(context)
            }
        } else {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: stallTimeout) {
                let (handler, context) = loopBound.value
                if !context.channel.isWritable, case .open = handler.state {
                    handler.fail(context, "the other side stopped reading for \(handler.stallTimeout.nanoseconds / 1_000_000_000) s")
                }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The kernel's TCP user timeout (LinkTimeouts) ended the connection: what was sent
        // stayed unacknowledged (the link is cut) or the other side's window stayed shut (it
        // stopped reading), whichever came before the stall timer. Name that, not only errno.
        if let error = error as? IOError, error.errnoCode == ETIMEDOUT {
            return fail(context, "the other side stopped reading or cannot be reached: the TCP user timeout passed (\(error))")
        }
        fail(context, "\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        events.closed(context.channel, closeReason)
        context.fireChannelInactive()
    }

    private func handle(_ context: ChannelHandlerContext, _ frame: Frame) {
        if frame.kind == WitnessFrameKind.refused.rawValue {
            let reason = frame.payload.isEmpty ? "no reason given" : String(decoding: frame.payload, as: UTF8.self)
            fail(context, "refused by \(remote): \(reason)")
            return
        }
        switch (state, side) {
        case (.open, _):
            events.frame(context.channel, frame)
        case (.handshaking, .acceptor):
            guard frame.kind == WitnessFrameKind.hello.rawValue, let challenge else {
                return fail(context, "expected a hello frame, got kind \(frame.kind)")
            }
            let hello: WitnessHandshake.Hello
            do { hello = try WitnessHandshake.Hello(decoding: frame.payload) } catch { return fail(context, "malformed hello: \(error)") }
            if let problem = WitnessHandshake.verify(hello, challenge: challenge, secret: secret) {
                return refuse(context, problem)
            }
            let proof = WitnessHandshake.welcomeProof(
                secret: secret, clusterID: challenge.clusterID, serverNonce: challenge.nonce, clientNonce: hello.nonce)
            send(context, Frame(kind: WitnessFrameKind.welcome.rawValue, payload: proof))
            state = .open
            events.opened(context.channel, hello.role, hello.peerID)
        case (.handshaking, .connector(let clusterID, let role, let peerID)):
            if challenge == nil {
                guard frame.kind == WitnessFrameKind.challenge.rawValue else {
                    return fail(context, "expected a challenge frame, got kind \(frame.kind)")
                }
                let received: WitnessHandshake.Challenge
                do { received = try WitnessHandshake.Challenge(decoding: frame.payload) } catch { return fail(context, "malformed challenge: \(error)") }
                guard received.clusterID == clusterID else {
                    return refuse(
                        context, "cluster id mismatch: the witness at \(remote) serves cluster \(received.clusterID), expected \(clusterID)")
                }
                challenge = received
                clientNonce = WitnessHandshake.randomNonce()
                let hello = WitnessHandshake.Hello(
                    clusterID: clusterID, role: role, peerID: peerID, nonce: clientNonce,
                    proof: WitnessHandshake.helloProof(secret: secret, challenge: received, role: role, peerID: peerID, clientNonce: clientNonce))
                send(context, Frame(kind: WitnessFrameKind.hello.rawValue, payload: hello.encoded()))
            } else if let challenge {
                guard frame.kind == WitnessFrameKind.welcome.rawValue else {
                    return fail(context, "expected a welcome frame, got kind \(frame.kind)")
                }
                let expected = WitnessHandshake.welcomeProof(
                    secret: secret, clusterID: clusterID, serverNonce: challenge.nonce, clientNonce: clientNonce)
                guard Hashing.constantTimeEqual(expected, frame.payload) else {
                    return fail(context, "authentication failed: the witness at \(remote) could not prove the shared secret")
                }
                state = .open
                events.opened(context.channel, .peer, challenge.witnessID)
            }
        case (.closed, _):
            break
        }
    }

    private func send(_ context: ChannelHandlerContext, _ frame: Frame) {
        context.writeAndFlush(wrapOutboundOut(Self.buffer(frame, allocator: context.channel.allocator)), promise: nil)
    }

    /// Tells the other side why, then closes.
    private func refuse(_ context: ChannelHandlerContext, _ reason: String) {
        var writer = ByteWriter()
        writer.writeRaw(Array(reason.utf8))
        send(context, Frame(kind: WitnessFrameKind.refused.rawValue, payload: writer.bytes))
        fail(context, reason)
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        guard closeReason == nil else { return }
        closeReason = reason
        logger.warning("closing connection", metadata: ["remote": "\(remote)", "reason": "\(reason)"])
        context.close(promise: nil)
    }
}
