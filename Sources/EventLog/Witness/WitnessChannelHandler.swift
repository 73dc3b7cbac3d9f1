#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Raft
import Synchronization
import X509

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
/// side) and by peers and clients (connecting side). It sits behind the TLS handler: once TLS
/// completes it reads who the other side is from its certificate, and the handshake checks
/// that against the part it plays (`WitnessHandshake`). After the handshake every frame goes to
/// `events.frame`; a malformed frame, a failed handshake or a peer that stops reading closes
/// the connection with a logged reason (DESIGN §5 rule 5) and nothing else is affected.
final class WitnessChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side {
        /// The witness: it sends the challenge and checks the hello.
        case acceptor(clusterID: String, witnessID: NodeID)
        /// A peer or client: it checks the challenge and the witness's certificate (on a peer
        /// link, that it is `expectedWitness`), and says who it is.
        case connector(clusterID: String, role: WitnessHandshake.Role, peerID: NodeID, expectedWitness: NodeID? = nil)
    }

    /// Why a connection closed.
    struct CloseReason: Sendable, CustomStringConvertible {
        var text: String
        /// A refusal that trying again, or another witness, does not help: the other side
        /// refused this one (its certificate, its cluster id), or it serves another cluster.
        var refusal = false
        var description: String { text }
    }

    struct Events: Sendable {
        /// The handshake succeeded; the remote's role, its id (the witness id for connectors)
        /// and who its certificate says it is.
        var opened: @Sendable (any Channel, WitnessHandshake.Role, NodeID, ClusterIdentity) -> Void
        var frame: @Sendable (any Channel, Frame) -> Void
        /// The connection closed; the reason when it was closed because of a problem.
        var closed: @Sendable (any Channel, CloseReason?) -> Void
        var writable: @Sendable (any Channel) -> Void = { _ in }
    }

    private enum State {
        case handshaking
        case open
        case closed
    }

    private let side: Side
    private let events: Events
    private let logger: Logger
    private let handshakeTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    private let limiter: RequestLimiter?
    private var decoder: FrameDecoder
    private var state = State.handshaking
    private var challenge: WitnessHandshake.Challenge?
    /// Who the other side's certificate says it is, once TLS completed.
    private var remoteIdentity: ClusterIdentity?
    private var closeReason: CloseReason?
    private var remote = "unknown"
    private var pausedForWritability = false

    init(
        side: Side, events: Events, logger: Logger, handshakeTimeout: TimeAmount = .seconds(5),
        stallTimeout: TimeAmount = .seconds(10), limiter: RequestLimiter? = nil, bytesMax: Int = Frame.bytesMax
    ) {
        self.limiter = limiter
        self.side = side
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
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let (handler, context) = loopBound.value
            if case .handshaking = handler.state { handler.fail(context, "no handshake within \(handler.handshakeTimeout.nanoseconds / 1_000_000) ms") }
        }
        context.fireChannelActive()
    }

    /// TLS completed: the other side's certificate chains to the cluster's CA. Reads who it
    /// names; the witness then sends its challenge.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event, closeReason == nil {
            do {
                guard let certificate = try context.pipeline.syncOperations.nioSSL_peerCertificate() else {
                    return refuse(context, "the other side presented no certificate")
                }
                remoteIdentity = try ClusterIdentity(certificate: try Certificate(derEncoded: try certificate.toDERBytes()))
            } catch {
                return refuse(context, "the other side's certificate is not a pgquorum one: \(error)")
            }
            if case .acceptor(let clusterID, let witnessID) = side {
                let challenge = WitnessHandshake.Challenge(clusterID: clusterID, witnessID: witnessID)
                self.challenge = challenge
                send(context, Frame(kind: WitnessFrameKind.challenge.rawValue, payload: challenge.encoded()))
            }
        }
        context.fireUserInboundEventTriggered(event)
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
        if let failure = TLSFailure(error) {
            return fail(context, failure.description, refusal: failure.refusedThisSide)
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
            fail(context, "refused by \(remote): \(reason)", refusal: true)
            return
        }
        switch (state, side) {
        case (.open, _):
            events.frame(context.channel, frame)
        case (.handshaking, .acceptor):
            guard frame.kind == WitnessFrameKind.hello.rawValue, let challenge, let remoteIdentity else {
                return fail(context, "expected a hello frame, got kind \(frame.kind)")
            }
            let hello: WitnessHandshake.Hello
            do { hello = try WitnessHandshake.Hello(decoding: frame.payload) } catch { return fail(context, "malformed hello: \(error)") }
            if let problem = WitnessHandshake.refusal(of: hello, from: remoteIdentity, to: challenge) {
                return refuse(context, problem)
            }
            send(context, Frame(kind: WitnessFrameKind.welcome.rawValue, payload: []))
            state = .open
            events.opened(context.channel, hello.role, hello.peerID, remoteIdentity)
        case (.handshaking, .connector(let clusterID, let role, let peerID, let expectedWitness)):
            guard let remoteIdentity else { return fail(context, "a frame of kind \(frame.kind) before TLS completed") }
            if challenge == nil {
                guard frame.kind == WitnessFrameKind.challenge.rawValue else {
                    return fail(context, "expected a challenge frame, got kind \(frame.kind)")
                }
                let received: WitnessHandshake.Challenge
                do { received = try WitnessHandshake.Challenge(decoding: frame.payload) } catch { return fail(context, "malformed challenge: \(error)") }
                if let problem = WitnessHandshake.refusal(of: received, from: remoteIdentity, clusterID: clusterID, expectedWitness: expectedWitness) {
                    // Another cluster's witness: every witness of it says the same, so this is
                    // final; a witness with the wrong certificate is this one's problem only.
                    return refuse(context, "the witness at \(remote): \(problem)", final: received.clusterID != clusterID)
                }
                challenge = received
                let hello = WitnessHandshake.Hello(clusterID: clusterID, role: role, peerID: peerID)
                send(context, Frame(kind: WitnessFrameKind.hello.rawValue, payload: hello.encoded()))
            } else if let challenge {
                guard frame.kind == WitnessFrameKind.welcome.rawValue else {
                    return fail(context, "expected a welcome frame, got kind \(frame.kind)")
                }
                state = .open
                events.opened(context.channel, .peer, challenge.witnessID, remoteIdentity)
            }
        case (.closed, _):
            break
        }
    }

    private func send(_ context: ChannelHandlerContext, _ frame: Frame) {
        context.writeAndFlush(wrapOutboundOut(Self.buffer(frame, allocator: context.channel.allocator)), promise: nil)
    }

    /// Tells the other side why, then closes; `final` when trying another witness cannot help.
    private func refuse(_ context: ChannelHandlerContext, _ reason: String, final: Bool = false) {
        var writer = ByteWriter()
        writer.writeRaw(Array(reason.utf8))
        send(context, Frame(kind: WitnessFrameKind.refused.rawValue, payload: writer.bytes))
        fail(context, reason, refusal: final)
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String, refusal: Bool = false) {
        guard closeReason == nil else { return }
        closeReason = CloseReason(text: reason, refusal: refusal)
        logger.warning("closing connection", metadata: ["remote": "\(remote)", "reason": "\(reason)"])
        context.close(promise: nil)
    }
}
