import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Raft

/// One witness (DESIGN §1–§3): a Raft replica of the event log stored in LMDB, serving its
/// peers and clients over TCP.
///
/// The pieces: `WitnessReplica` drives Raft and applies what commits; `PeerLinks` keeps the
/// outbound connections to the other witnesses; this type accepts connections, routes their
/// frames and answers clients, streams included (`WitnessStreams`).
///
/// Threads: all Raft, storage and application work happens on one event loop of its own (the
/// Raft loop), so the replica needs no locks and a disk flush never delays clients' I/O, which
/// runs on a second loop. Connection handlers hand frames to the Raft loop; the Raft loop
/// writes answers to channels (NIO makes that safe from any thread). The connections this
/// witness opens to its peers run on the Raft loop itself: what goes out on them is written
/// by Raft as it is produced (a leader's appends before its own disk write, as before), and a
/// hop to another thread for each message was two wakeups more for every heartbeat.
public final class WitnessServer: @unchecked Sendable {
    public let configuration: WitnessConfiguration
    private let logger: Logger
    /// This witness's certificate, key and the cluster's CA, read again when they change.
    public let tls: TLSCredentials
    private let raftGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let ioGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let loop: any EventLoop
    private let metrics: WitnessMetrics

    // Everything below is touched on `loop` only.
    private var replica: WitnessReplica!
    private var peers: PeerLinks!
    private var streams: WitnessStreams!
    private var serverChannel: (any Channel)?
    /// Raft's ticks are due every `tickMillis` from `tickOriginNanos`; `ticksDelivered` of them
    /// were given to the replica. The timer fires only for a tick that does more than count
    /// (`armTickTimer`), and the ticks slept through are delivered before any other input.
    private var tickOriginNanos: UInt64 = 0
    private var ticksDelivered: UInt64 = 0
    private var tickTimer: (at: UInt64, task: Scheduled<Void>)?
    /// The members `peers` last kept connections to.
    private var maintainedMembers: Set<NodeID> = []
    /// The timer of the applied state's next deadline, and when it fires (`armDeadlineTimer`).
    private var deadlineTimer: (at: UInt64, task: Scheduled<Void>)?
    private var readyScheduled = false
    private var stopped = false
    /// Client connections, with who each one's certificate says it is.
    private var clients: [ObjectIdentifier: (channel: any Channel, identity: ClusterIdentity)] = [:]
    /// Inbound connections of peers, by the witness id each proved in its handshake, with the
    /// chunks of a large message being reassembled.
    private var inboundPeers: [ObjectIdentifier: (id: NodeID, chunks: MessageChunks.Assembler)] = [:]
    /// Confirmed reads waiting to be computed, per connection, in order. Each is computed in a
    /// loop turn of its own, so reads (each can be the whole log) never hold the Raft loop from
    /// its ticks and peers for long; and a connection whose answers back up (its client does
    /// not read them) has no more computed until they drain.
    private var pendingReads: [ObjectIdentifier: (reads: CircularBuffer<() -> Void>, scheduled: Bool)] = [:]

    public init(
        configuration: WitnessConfiguration, application: (any WitnessApplication)? = nil, logger: Logger,
        metrics: WitnessMetrics = WitnessMetrics(), onFatal: @escaping @Sendable (String) -> Void
    ) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        tls = try TLSCredentials(configuration.credentials)
        guard tls.identity == .witness(configuration.id) else {
            throw WitnessConfigurationError.invalid(
                "the certificate \(configuration.credentials.certificateFile) is \(tls.identity)'s, not witness \(configuration.id)'s")
        }
        self.loop = raftGroup.next()
        let transport = WitnessReplica.Transport(
            send: { [unowned self] messages in self.peers.send(messages) },
            onApplied: { [unowned self] in self.streams.pump() },
            onFatal: { [unowned self] reason in
                self.stopped = true
                self.tickTimer?.task.cancel()
                onFatal(reason)
            })
        replica = WitnessReplica(configuration: configuration, application: application, logger: logger, metrics: metrics, transport: transport)
        peers = PeerLinks(
            configuration: configuration, tls: tls, logger: logger, loop: loop, group: loop,
            feedback: PeerLinks.Feedback(
                unreachable: { [unowned self] peer in self.replica.reportUnreachable(peer) },
                snapshotDelivered: { [unowned self] peer, delivered in self.replica.reportSnapshot(to: peer, delivered: delivered) },
                changed: { [unowned self] in self.publishConnectionCounts() }))
        streams = WitnessStreams(replica: replica)
    }

    /// The port the witness listens on (useful when configured with port 0).
    public private(set) var boundPort: Int = 0

    /// Opens the storage (bootstrapping a new cluster or waiting to join), restores the
    /// application from the latest snapshot, and starts listening and ticking.
    public func start() async throws {
        try await loop.submit { try self.replica.open() }.get()
        let handlerLogger = logger
        let credentials = configuration.credentials
        let tls = self.tls
        let id = configuration.id
        let stall = TimeAmount.milliseconds(Int64(configuration.stallTimeoutMillis))
        let handshake = TimeAmount.milliseconds(Int64(configuration.handshakeTimeoutMillis))
        let linkTimeouts = peers.linkTimeouts
        let channel = try await ServerBootstrap(group: ioGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 8 << 20))
            .childChannelInitializer { channel in
                let limiter = RequestLimiter()
                let events = WitnessChannelHandler.Events(
                    opened: { channel, role, remoteID, identity in
                        self.loop.execute { self.opened(channel, role: role, remoteID: remoteID, identity: identity) }
                    },
                    frame: { channel, frame in
                        self.loop.execute { self.received(frame, on: channel, limiter: limiter) }
                    },
                    closed: { channel, _ in
                        self.loop.execute { self.closed(channel) }
                    },
                    writable: { _ in
                        self.loop.execute { self.streams.pump() }
                    })
                return linkTimeouts.apply(to: channel).flatMapThrowing {
                    // A renewed certificate is read here, for the next connection.
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current().serverContext))
                    try channel.pipeline.syncOperations.addHandler(
                        WitnessChannelHandler(
                            side: .acceptor(clusterID: credentials.clusterID, witnessID: id),
                            events: events, logger: handlerLogger, handshakeTimeout: handshake, stallTimeout: stall, limiter: limiter,
                            bytesMax: Frame.bytesMax))
                }
            }
            .bind(host: configuration.listen.host, port: configuration.listen.port).get()
        boundPort = channel.localAddress?.port ?? configuration.listen.port
        try await loop.submit {
            self.serverChannel = channel
            self.tickOriginNanos = self.replica.nowNanos()
            self.maintainPeers()
            self.armTickTimer()
        }.get()
        if let warning = tls.expiryWarning() { logger.error("certificate problem", metadata: ["reason": "\(warning)"]) }
        logger.info(
            "witness listening",
            metadata: ["id": "\(id)", "address": "\(configuration.listen.host):\(boundPort)", "cluster": "\(credentials.clusterID)"])
    }

    /// Whether the Raft loop runs a task within `timeout` (systemd's watchdog asks): a loop
    /// stuck in a disk write or a bug answers late or never.
    public func loopResponds(within timeout: Duration) async -> Bool {
        let answered = loop.submit { true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await answered.get()) ?? false }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Stops serving: closes every connection and the storage. If this witness leads, it first
    /// hands leadership to the most up-to-date peer so that a planned restart costs no election.
    public func stop() async {
        let handedOver: Bool = (try? await loop.submit { self.stopped ? false : self.replica.handOverLeadership() }.get()) ?? false
        if handedOver { try? await Task.sleep(for: .milliseconds(300)) }
        let channels: [any Channel] = (try? await loop.submit { () -> [any Channel] in
            self.stopped = true
            self.peers.stopped = true
            self.tickTimer?.task.cancel()
            self.deadlineTimer?.task.cancel()
            let channels = [self.serverChannel].compactMap { $0 } + self.peers.channels + self.clients.values.map(\.channel)
            self.replica.stop()
            return channels
        }.get()) ?? []
        for channel in channels { try? await channel.close() }
        try? await ioGroup.shutdownGracefully()
        try? await raftGroup.shutdownGracefully()
        logger.info("witness stopped", metadata: ["id": "\(configuration.id)"])
    }

    // MARK: - Raft loop

    private var tickNanos: UInt64 { UInt64(configuration.tickMillis) * 1_000_000 }

    /// Delivers the ticks due since the last delivery, in order, and redials peer links that
    /// are down. Runs before any input from a peer or a client, so Raft sees its ticks and
    /// messages in the order a tick every interval gives.
    private func catchUpTicks() {
        guard !stopped, !replica.stopped else { return }
        let now = replica.nowNanos()
        let due = now > tickOriginNanos ? (now - tickOriginNanos) / tickNanos : 0
        guard due > ticksDelivered else { return }
        // After a long stall (a stopped process), two election timeouts of ticks do all that
        // more would.
        let most = UInt64(2 * configuration.electionTicks + 1)
        if due - ticksDelivered > most { ticksDelivered = due - most }
        while ticksDelivered < due && !replica.stopped {
            replica.tick()
            ticksDelivered += 1
        }
        maintainPeers()
        scheduleReady()
    }

    /// The tick timer fired: the ticks due, and what may fall between two ticks (a read's
    /// deadline, a stream's confirmation).
    private func tickTimerFired() {
        guard !stopped, !replica.stopped else { return }
        catchUpTicks()
        replica.expireReads()
        streams.tick()
        scheduleReady()
    }

    private func maintainPeers() {
        var targets = replica.node.membership.members
        maintainedMembers = targets
        targets.formUnion(configuration.peers.keys)
        peers.maintain(targets: targets, address: replica.address(of:))
    }

    /// Sets the timer for the next tick that does more than count: Raft's timers and the
    /// leader's flush (`ticksUntilTimerWork`), the earliest read's deadline, the streams' next
    /// confirmation, and every tick while a peer link is down (it is redialled). An idle
    /// follower wakes about once an election timeout instead of ten times a second. A timer
    /// set earlier than needed stays: it fires, delivers the ticks due and sets the next.
    private func armTickTimer() {
        guard !stopped, !replica.stopped else { return }
        // A day of ticks at the most: a replica whose ticks never act still wakes now and then.
        var ticks = UInt64(min(replica.ticksUntilTimerWork(), 86_400_000 / configuration.tickMillis))
        if peers.needsMaintenance { ticks = 1 }
        var at = tickOriginNanos + (ticksDelivered + ticks) * tickNanos
        if let read = replica.readDeadlineNanos() { at = min(at, read) }
        if let confirmation = streams.nextConfirmationNanos { at = min(at, confirmation) }
        // Never sooner than a millisecond: a deadline that passed unanswered cannot spin the loop.
        let now = replica.nowNanos()
        at = max(at, now + 1_000_000)
        if let armed = tickTimer, armed.at <= at { return }
        tickTimer?.task.cancel()
        let task = loop.scheduleTask(in: .nanoseconds(Int64(clamping: at - now))) { [unowned self] () -> Void in
            self.tickTimer = nil
            self.tickTimerFired()
        }
        tickTimer = (at, task)
    }

    private func scheduleReady() {
        guard !readyScheduled else { return }
        readyScheduled = true
        loop.execute {
            self.readyScheduled = false
            guard !self.stopped else { return }
            let (applied, leading) = (self.replica.applied, self.replica.isLeader)
            self.replica.processReady()
            // The next deadline moves only with the applied state or the leadership; working it
            // out (over every node of every formation) after every peer message would not do.
            if self.replica.applied != applied || self.replica.isLeader != leading { self.armDeadlineTimer() }
            if self.replica.node.membership.members != self.maintainedMembers { self.maintainPeers() }
            self.armTickTimer()
        }
    }

    /// Sets the timer for the applied state's next deadline (the leader only), unless one is
    /// set for that moment already: with ticks of 100 ms, a failover waiting on a timeout is
    /// decided when it runs out, not up to a tick later.
    private func armDeadlineTimer() {
        guard let nanos = replica.nanosUntilDeadline() else {
            deadlineTimer?.task.cancel()
            deadlineTimer = nil
            return
        }
        let at = replica.nowNanos() + nanos
        if let armed = deadlineTimer, armed.at <= at + 1_000_000, armed.at + 1_000_000 >= at { return }
        deadlineTimer?.task.cancel()
        let task = loop.scheduleTask(in: .nanoseconds(Int64(clamping: nanos))) { [unowned self] () -> Void in
            self.deadlineTimer = nil
            guard !self.stopped else { return }
            self.replica.deadlineReached()
            self.scheduleReady()
        }
        deadlineTimer = (at, task)
    }

    // MARK: Connections

    private func opened(_ channel: any Channel, role: WitnessHandshake.Role, remoteID: NodeID, identity: ClusterIdentity) {
        guard !stopped else { channel.close(promise: nil); return }
        switch role {
        case .client: clients[ObjectIdentifier(channel)] = (channel, identity)
        case .peer: inboundPeers[ObjectIdentifier(channel)] = (remoteID, MessageChunks.Assembler())
        }
        publishConnectionCounts()
    }

    /// The connection gauges: clients, and peers connected in either direction.
    private func publishConnectionCounts() {
        metrics.clientsConnected.record(clients.count)
        metrics.peersConnected.record(Set(inboundPeers.values.map(\.id)).union(peers.connectedPeers).count)
    }

    private func closed(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        clients.removeValue(forKey: key)
        inboundPeers.removeValue(forKey: key)
        pendingReads.removeValue(forKey: key)
        streams.remove(channel)
        peers.closed(channel)
        publishConnectionCounts()
    }

    private func received(_ frame: Frame, on channel: any Channel, limiter: RequestLimiter) {
        guard !stopped else { return }
        catchUpTicks()
        let key = ObjectIdentifier(channel)
        switch WitnessFrameKind(rawValue: frame.kind) {
        case .raftMessage where inboundPeers[key] != nil:
            receivedRaftMessage(frame.payload, on: channel)
        case .raftMessageChunk where inboundPeers[key] != nil:
            do {
                if let whole = try inboundPeers[key]!.chunks.add(frame.payload) { receivedRaftMessage(whole, on: channel) }
            } catch {
                logger.warning("dropped a chunked Raft message", metadata: ["error": "\(error)"])
            }
        case .request where clients[key] != nil:
            do {
                let (id, request) = try WitnessRequest.decode(frame.payload)
                handle(request, id: id, channel: channel, identity: clients[key]!.identity, limiter: limiter)
            } catch {
                // The frame itself was sound (its checksum matched), so the stream is still
                // in step: a request that names its id gets the reason back, so that the
                // client can tell its user (a newer client, an invalid field), and the
                // connection goes on. Without even an id, the connection closes.
                var reader = ByteReader(frame.payload)
                if let id = try? reader.readUInt64("request id") {
                    logger.warning("refused a malformed request", metadata: ["error": "\(error)"])
                    replier(id: id, channel: channel, limiter: limiter)(.failure(WitnessFailure(.badRequest, "malformed request: \(error)")))
                } else {
                    logger.warning("closing a client connection after a malformed request", metadata: ["error": "\(error)"])
                    channel.close(promise: nil)
                }
            }
        default:
            logger.warning("closing a connection after an unexpected frame", metadata: ["kind": "\(frame.kind)"])
            channel.close(promise: nil)
        }
    }

    private func receivedRaftMessage(_ payload: [UInt8], on channel: any Channel) {
        let message: Message
        do {
            message = try Message(wireDecoding: payload)
        } catch {
            logger.warning("dropped a Raft message", metadata: ["error": "\(error)"])
            return
        }
        guard message.to == configuration.id, message.from == inboundPeers[ObjectIdentifier(channel)]?.id else {
            logger.warning(
                "closing a peer connection that sent a Raft message not between it and this witness",
                metadata: ["from": "\(message.from)", "to": "\(message.to)"])
            channel.close(promise: nil)
            return
        }
        replica.step(message)
        scheduleReady()
    }

    /// Sends the one response to request `id`, and frees its place in the connection's budget.
    private func replier(id: UInt64, channel: any Channel, limiter: RequestLimiter) -> @Sendable (WitnessResponse) -> Void {
        { [loop] response in
            limiter.finished()
            let frame = Frame(kind: WitnessFrameKind.response.rawValue, payload: response.encoded(id: id))
            let buffer = WitnessChannelHandler.buffer(frame, allocator: channel.allocator)
            let bytes = buffer.readableBytes
            limiter.sending(bytes)
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { _ in
                if limiter.sent(bytes) { loop.execute { [weak self] in self?.schedulePendingReads(of: channel, limiter: limiter) } }
            }
            channel.writeAndFlush(buffer, promise: written)
        }
    }

    private func handle(_ request: WitnessRequest, id: UInt64, channel: any Channel, identity: ClusterIdentity, limiter: RequestLimiter) {
        let reply = replier(id: id, channel: channel, limiter: limiter)
        if let refusal = WitnessAccess.refusal(of: request, by: identity, nodeNames: replica.registeredNodeName(formation:node:)) {
            logger.warning("refused a request its certificate does not allow", metadata: ["holder": "\(identity)", "reason": "\(refusal)"])
            return reply(.failure(WitnessFailure(.forbidden, refusal)))
        }
        switch request {
        case .append(var record):
            // The log records who asked for every change an operator makes.
            if record.event.isOperatorChange { record.author = identity.description }
            replica.append(record, reply: timedCommit(reply))
        case .report(let formation, let report):
            replica.report(report, formation: formation, reply: timedCommit(reply))
        case .read(let from, let maxEntries, let stale, let formation):
            let maxEntries = min(maxEntries, WitnessRequest.readEntriesMax)
            let answer = { [unowned self] in reply(self.replica.entries(from: from, maxEntries: maxEntries, formation: formation)) }
            if stale { return whenDrained(channel, limiter: limiter, answer) }
            replica.linearizableRead { [unowned self] confirmed in
                // Entries read later than confirmed are newer, so still a linearizable answer.
                if confirmed { self.whenDrained(channel, limiter: limiter, answer) } else { reply(.failure(self.noQuorum())) }
            }
        case .subscribe(let from, let formation):
            limiter.finished()
            streams.add(channel: channel, requestID: id, from: from, formation: formation)
        case .snapshot:
            reply(replica.snapshotResponse())
        case .status:
            reply(.status(replica.status()))
        case .changeMembership(let change):
            replica.changeMembership(change, author: identity.description, reply: reply)
        }
        scheduleReady()
    }

    /// `reply`, recording how long the request took to commit when it did.
    private func timedCommit(_ reply: @escaping @Sendable (WitnessResponse) -> Void) -> @Sendable (WitnessResponse) -> Void {
        let received = NIODeadline.now()
        return { [metrics] response in
            if case .committed = response { metrics.commitLatency.recordNanoseconds((NIODeadline.now() - received).nanoseconds) }
            reply(response)
        }
    }

    /// Queues a confirmed read of a client connection (see `pendingReads`).
    private func whenDrained(_ channel: any Channel, limiter: RequestLimiter, _ read: @escaping () -> Void) {
        let key = ObjectIdentifier(channel)
        guard clients[key] != nil else { return }
        pendingReads[key, default: (CircularBuffer(), false)].reads.append(read)
        schedulePendingReads(of: channel, limiter: limiter)
    }

    private func schedulePendingReads(of channel: any Channel, limiter: RequestLimiter) {
        let key = ObjectIdentifier(channel)
        guard let pending = pendingReads[key], !pending.scheduled, !pending.reads.isEmpty, !limiter.answersBacklogged else { return }
        pendingReads[key]!.scheduled = true
        loop.execute { [weak self] in self?.serveOnePendingRead(of: channel, limiter: limiter) }
    }

    private func serveOnePendingRead(of channel: any Channel, limiter: RequestLimiter) {
        let key = ObjectIdentifier(channel)
        guard pendingReads[key] != nil else { return }
        pendingReads[key]!.scheduled = false
        guard !stopped, !limiter.answersBacklogged, let read = pendingReads[key]!.reads.popFirst() else { return }
        read()
        schedulePendingReads(of: channel, limiter: limiter)
    }

    private func noQuorum() -> WitnessFailure {
        WitnessFailure(
            .noQuorum,
            "witness \(configuration.id) could not confirm that it is in touch with a quorum (it knows no leader, or none confirmed within \(replica.readTimeoutNanos / 1_000_000) ms); ask another witness",
            leaderAddress: replica.address(of: replica.node.leader))
    }
}
