#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import Raft

/// One witness (DESIGN §1–§3): a Raft replica of the event log stored in LMDB, serving its
/// peers and clients over TCP.
///
/// Threads: all Raft, storage and application work happens on one event loop of its own (the
/// Raft loop), so the replica needs no locks and a disk flush never delays network I/O, which
/// runs on a second loop. Connection handlers hand frames to the Raft loop; the Raft loop
/// writes answers to channels (NIO makes that safe from any thread).
public final class WitnessServer: @unchecked Sendable {
    public let configuration: WitnessConfiguration
    private let logger: Logger
    private let raftGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let ioGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let loop: any EventLoop
    private let application: (any WitnessApplication)?
    /// Called when the replica cannot go on safely (its storage failed).
    private let onFatal: @Sendable (String) -> Void

    // Everything below is touched on `loop` only.
    private var storage: LMDBRaftStorage!
    private var node: RaftNode!
    private var sequencer = EventSequencer()
    private var serverChannel: (any Channel)?
    private var tickTask: RepeatedTask?
    private var ticks = 0
    private var readyScheduled = false
    private var stopped = false
    private var applied: UInt64 = 0
    /// A change of the commit index alone waits for the next write that must reach the disk.
    private var persistence = CommitDeferringPersistence(durable: HardState())
    /// The address book from the log (witness id → address).
    private var loggedAddresses: [NodeID: String] = [:]
    private var links: [NodeID: PeerLink] = [:]
    private var clients: [ObjectIdentifier: any Channel] = [:]
    /// Inbound connections of peers, by the witness id each proved in its handshake.
    private var inboundPeers: [ObjectIdentifier: NodeID] = [:]
    private var subscribers: [ObjectIdentifier: Subscriber] = [:]
    /// Requests answered once the entry at an index commits with the expected term.
    private var waiters: [UInt64: [(term: UInt64, reply: @Sendable (WitnessResponse) -> Void)]] = [:]
    private var reportReplies: [EventSequencer.ReportToken: @Sendable (WitnessResponse) -> Void] = [:]
    private var nextToken: EventSequencer.ReportToken = 1
    /// Stamped records waiting to be proposed together, with whoever waits for their commit.
    private var proposalQueue: [(data: [UInt8], replies: [@Sendable (WitnessResponse) -> Void])] = []
    /// A snapshot taken at an index, to compact to once `keepEntries` more are applied.
    private var pendingSnapshot: (index: UInt64, membership: Membership, data: [UInt8])?

    private struct PeerLink {
        var endpoint: WitnessEndpoint
        var channel: (any Channel)?
        var connecting = false
        var nextAttemptNanos: UInt64 = 0
        var backoffMillis: UInt64 = 50
    }

    private struct Subscriber {
        var channel: any Channel
        var requestID: UInt64
        var next: UInt64
    }

    public init(
        configuration: WitnessConfiguration, application: (any WitnessApplication)? = nil, logger: Logger,
        onFatal: @escaping @Sendable (String) -> Void
    ) throws {
        try configuration.validate()
        self.configuration = configuration
        self.application = application
        self.logger = logger
        self.onFatal = onFatal
        self.loop = raftGroup.next()
    }

    /// The port the witness listens on (useful when configured with port 0).
    public private(set) var boundPort: Int = 0

    /// Opens the storage (bootstrapping a new cluster or waiting to join), restores the
    /// application from the latest snapshot, and starts listening and ticking.
    public func start() async throws {
        try await loop.submit { try self.openReplica() }.get()
        let handlerLogger = logger
        let credentials = configuration.credentials
        let id = configuration.id
        let stall = TimeAmount.milliseconds(Int64(configuration.stallTimeoutMillis))
        let handshake = TimeAmount.milliseconds(Int64(configuration.handshakeTimeoutMillis))
        let channel = try await ServerBootstrap(group: ioGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 8 << 20))
            .childChannelInitializer { channel in
                let limiter = RequestLimiter()
                let events = WitnessChannelHandler.Events(
                    opened: { channel, role, remoteID in
                        self.loop.execute { self.opened(channel, role: role, remoteID: remoteID) }
                    },
                    frame: { channel, frame in
                        self.loop.execute { self.received(frame, on: channel, limiter: limiter) }
                    },
                    closed: { channel, _ in
                        self.loop.execute { self.closed(channel) }
                    },
                    writable: { _ in
                        self.loop.execute { self.pumpSubscribers() }
                    })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        WitnessChannelHandler(
                            side: .acceptor(clusterID: credentials.clusterID, witnessID: id), secret: credentials.secret,
                            events: events, logger: handlerLogger, handshakeTimeout: handshake, stallTimeout: stall, limiter: limiter))
                }
            }
            .bind(host: configuration.listen.host, port: configuration.listen.port).get()
        boundPort = channel.localAddress?.port ?? configuration.listen.port
        try await loop.submit {
            self.serverChannel = channel
            let tick = TimeAmount.milliseconds(Int64(self.configuration.tickMillis))
            self.tickTask = self.loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in self.onTick() }
        }.get()
        logger.info(
            "witness listening",
            metadata: ["id": "\(id)", "address": "\(configuration.listen.host):\(boundPort)", "cluster": "\(credentials.clusterID)"])
    }

    /// Stops serving: closes every connection and the storage. If this witness leads, it first
    /// hands leadership to the most up-to-date peer so that a planned restart costs no election.
    public func stop() async {
        let handedOver: Bool = (try? await loop.submit { self.handOverLeadership() }.get()) ?? false
        if handedOver { try? await Task.sleep(for: .milliseconds(300)) }
        let channels: [any Channel] = (try? await loop.submit { () -> [any Channel] in
            self.stopped = true
            self.tickTask?.cancel()
            let channels = [self.serverChannel].compactMap { $0 } + self.links.values.compactMap(\.channel) + Array(self.clients.values)
            self.failAllWaiters(WitnessFailure(.unavailable, "the witness is shutting down; retry"))
            return channels
        }.get()) ?? []
        for channel in channels { try? await channel.close() }
        try? await loop.submit { self.storage?.close() }.get()
        try? await ioGroup.shutdownGracefully()
        try? await raftGroup.shutdownGracefully()
        logger.info("witness stopped", metadata: ["id": "\(configuration.id)"])
    }

    // MARK: - Raft loop

    private func openReplica() throws {
        var lmdb = LMDBConfiguration()
        lmdb.mapSizeBytesMax = configuration.mapSizeMaxBytes
        storage = try LMDBRaftStorage(directory: configuration.dataDirectory, configuration: lmdb)
        let (hardState, membership) = try storage.initialState()
        let isNew = try hardState == HardState() && membership.voters.isEmpty && storage.lastIndex() == 0
        if isNew && !configuration.join {
            let voters = Set(configuration.peers.keys)
            try RaftNode.bootstrap(storage: storage, voters: voters)
            logger.info("bootstrapped a new witness cluster", metadata: ["voters": "\(voters.sorted())"])
        } else if isNew {
            logger.info("waiting to be added to the witness cluster (witness add)")
        }
        let snapshot = try storage.snapshot()
        if !snapshot.data.isEmpty { try restore(snapshot.data) }
        var config = RaftConfig(id: configuration.id, seed: UInt64.random(in: 1...UInt64.max))
        config.electionTicks = configuration.electionTicks
        config.heartbeatTicks = configuration.heartbeatTicks
        config.applied = snapshot.metadata.index
        applied = snapshot.metadata.index
        persistence = CommitDeferringPersistence(durable: hardState)
        node = try RaftNode(config: config, storage: storage)
        let last = try storage.lastIndex()
        logger.info(
            "witness replica opened", metadata: ["term": "\(node.term)", "commit": "\(hardState.commit)", "last": "\(last)", "snapshot": "\(applied)"])
        processReady()
    }

    private func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    private func wallTimeMillis() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    private func onTick() {
        guard !stopped else { return }
        do { try node.tick() } catch { return fatal("Raft tick failed: \(error)") }
        ticks += 1
        if ticks % max(1, configuration.sequencerTickMillis / configuration.tickMillis) == 0, sequencer.leadingTerm != nil {
            for proposal in sequencer.tick(nowNanos: nowNanos(), wallTimeMillis: wallTimeMillis()) {
                propose(proposal.record, tokens: proposal.tokens)
            }
        }
        connectPeers()
        scheduleReady()
    }

    private func scheduleReady() {
        guard !readyScheduled else { return }
        readyScheduled = true
        loop.execute {
            self.readyScheduled = false
            self.processReady()
        }
    }

    private func processReady() {
        guard !stopped else { return }
        flushProposals()
        do {
            while node.hasReady() {
                let ready = try node.ready()
                if let soft = ready.softState { leadershipChanged(soft) }
                // The leader's appends go out while its own disk write runs (thesis §10.2.1);
                // everything else promises what this write stores, so it waits for it.
                send(ready.messages.filter { $0.kind.isFromLeader })
                try persist(ready)
                send(ready.messages.filter { !$0.kind.isFromLeader })
                if let snapshot = ready.snapshot { try installSnapshot(snapshot) }
                try apply(ready.committedEntries)
                node.advance(ready)
            }
            try compactIfDue()
        } catch {
            return fatal("the replica cannot go on: \(error)")
        }
        pumpSubscribers()
    }

    /// Writes what Raft needs on disk before messages go out. A change of the commit index
    /// alone is not flushed on its own (it costs two fsyncs and nothing depends on it; see
    /// `CommitDeferringPersistence`).
    private func persist(_ ready: Ready) throws {
        guard let plan = persistence.plan(ready) else { return }
        try storage.persist(hardState: plan.hardState, entries: plan.entries, snapshot: plan.snapshot)
    }

    private func fatal(_ reason: String) {
        guard !stopped else { return }
        stopped = true
        tickTask?.cancel()
        logger.critical("\(reason)")
        onFatal(reason)
    }

    private func leadershipChanged(_ soft: SoftState) {
        if soft.role == .leader {
            sequencer.becameLeader(term: node.term, nowNanos: nowNanos())
            logger.info("became leader", metadata: ["term": "\(node.term)"])
        } else {
            if sequencer.leadingTerm != nil {
                for token in sequencer.steppedDown() {
                    reportReplies.removeValue(forKey: token)?(.failure(WitnessFailure(.notLeader, "leadership changed; report again", leaderAddress: address(of: soft.leader))))
                }
            }
            logger.info("following", metadata: ["term": "\(node.term)", "leader": "\(soft.leader.map(String.init) ?? "none")"])
        }
    }

    private func installSnapshot(_ snapshot: Snapshot) throws {
        try restore(snapshot.data)
        applied = snapshot.metadata.index
        pendingSnapshot = nil
        for index in waiters.keys where index <= applied {
            for waiter in waiters.removeValue(forKey: index) ?? [] {
                waiter.reply(.failure(WitnessFailure(.unavailable, "the outcome is unknown (a snapshot replaced the log); check and retry")))
            }
        }
        logger.info("installed a snapshot", metadata: ["index": "\(applied)"])
    }

    private func restore(_ data: [UInt8]) throws {
        let witnessData = try WitnessSnapshotData(decoding: data)
        loggedAddresses = Dictionary(witnessData.addresses.map { ($0.id, $0.address) }, uniquingKeysWith: { $1 })
        try application?.restore(from: witnessData.application)
    }

    private func apply(_ entries: [Entry]) throws {
        for entry in entries {
            if entry.kind == .normal && !entry.data.isEmpty {
                do {
                    let record = try EventRecord(decoding: entry.data)
                    if case .membershipChanged(let members) = record.event {
                        loggedAddresses = Dictionary(members.map { ($0.id, $0.address) }, uniquingKeysWith: { $1 })
                    }
                    application?.apply(LogEntry(index: entry.index, term: entry.term, record: record))
                } catch {
                    logger.error("committed entry does not decode; skipped", metadata: ["index": "\(entry.index)", "error": "\(error)"])
                }
            }
            applied = entry.index
            for waiter in waiters.removeValue(forKey: entry.index) ?? [] {
                waiter.reply(
                    waiter.term == entry.term
                        ? .committed(index: entry.index, term: entry.term)
                        : .failure(WitnessFailure(.unavailable, "a new leader replaced the entry before it committed; retry")))
            }
            if entry.index % configuration.snapshotEntries == 0 && pendingSnapshot == nil {
                let data = WitnessSnapshotData(addresses: addressBook(), application: application?.snapshotData() ?? [])
                pendingSnapshot = (entry.index, node.membership, data.encoded())
            }
        }
    }

    private func compactIfDue() throws {
        guard let pending = pendingSnapshot, applied >= pending.index + configuration.keepEntries else { return }
        pendingSnapshot = nil
        guard pending.index >= (try storage.firstIndex()) else { return }
        try storage.compact(to: pending.index, membership: pending.membership, data: pending.data)
        logger.info("compacted the log", metadata: ["snapshot": "\(pending.index)"])
    }

    // MARK: Proposals

    /// Queues a record; queued records are proposed together at the next ready, so a burst of
    /// appends travels to the followers as one append message, not one each.
    private func propose(_ record: EventRecord, tokens: [EventSequencer.ReportToken] = [], reply: (@Sendable (WitnessResponse) -> Void)? = nil) {
        var replies = tokens.compactMap { reportReplies.removeValue(forKey: $0) }
        if let reply { replies.append(reply) }
        proposalQueue.append((record.encoded(), replies))
        scheduleReady()
    }

    private func flushProposals() {
        guard !proposalQueue.isEmpty else { return }
        let queue = proposalQueue
        proposalQueue = []
        do {
            let last = try node.propose(queue.map(\.data))
            let term = node.term
            for (offset, proposal) in queue.enumerated() where !proposal.replies.isEmpty {
                let replies = proposal.replies
                waiters[last - UInt64(queue.count - 1 - offset), default: []].append(
                    (term, { response in for reply in replies { reply(response) } }))
            }
        } catch {
            let failure = notLeaderFailure(error)
            for proposal in queue { for reply in proposal.replies { reply(.failure(failure)) } }
        }
    }

    private func notLeaderFailure(_ error: any Error) -> WitnessFailure {
        switch error as? RaftError {
        case .notLeader(let leader):
            return WitnessFailure(.notLeader, "witness \(configuration.id) is not the leader", leaderAddress: address(of: leader))
        case .some(let raftError):
            return WitnessFailure(.refused, raftError.description)
        case nil:
            return WitnessFailure(.refused, "\(error)")
        }
    }

    private func failAllWaiters(_ failure: WitnessFailure) {
        for proposal in proposalQueue { for reply in proposal.replies { reply(.failure(failure)) } }
        proposalQueue = []
        for waiter in waiters.values.joined() { waiter.reply(.failure(failure)) }
        waiters = [:]
        for reply in reportReplies.values { reply(.failure(failure)) }
        reportReplies = [:]
    }

    // MARK: Connections

    private func opened(_ channel: any Channel, role: WitnessHandshake.Role, remoteID: NodeID) {
        guard !stopped else { channel.close(promise: nil); return }
        switch role {
        case .client: clients[ObjectIdentifier(channel)] = channel
        case .peer: inboundPeers[ObjectIdentifier(channel)] = remoteID
        }
    }

    private func closed(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        clients.removeValue(forKey: key)
        inboundPeers.removeValue(forKey: key)
        subscribers.removeValue(forKey: key)
        for (id, link) in links where link.channel.map({ ObjectIdentifier($0) }) == key {
            links[id]?.channel = nil
        }
    }

    private func received(_ frame: Frame, on channel: any Channel, limiter: RequestLimiter) {
        guard !stopped else { return }
        switch WitnessFrameKind(rawValue: frame.kind) {
        case .raftMessage where inboundPeers[ObjectIdentifier(channel)] != nil:
            do {
                let message = try Message(wireDecoding: frame.payload)
                guard message.to == configuration.id, message.from == inboundPeers[ObjectIdentifier(channel)] else {
                    logger.warning(
                        "closing a peer connection that sent a Raft message not between it and this witness",
                        metadata: ["from": "\(message.from)", "to": "\(message.to)"])
                    channel.close(promise: nil)
                    return
                }
                try node.step(message)
                scheduleReady()
            } catch {
                logger.warning("dropped a Raft message", metadata: ["error": "\(error)"])
            }
        case .request where clients[ObjectIdentifier(channel)] != nil:
            do {
                let (id, request) = try WitnessRequest.decode(frame.payload)
                handle(request, id: id, channel: channel, limiter: limiter)
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

    /// Sends the one response to request `id`, and frees its place in the connection's budget.
    private func replier(id: UInt64, channel: any Channel, limiter: RequestLimiter) -> @Sendable (WitnessResponse) -> Void {
        { response in
            limiter.finished()
            let frame = Frame(kind: WitnessFrameKind.response.rawValue, payload: response.encoded(id: id))
            channel.writeAndFlush(WitnessChannelHandler.buffer(frame, allocator: channel.allocator), promise: nil)
        }
    }

    private func handle(_ request: WitnessRequest, id: UInt64, channel: any Channel, limiter: RequestLimiter) {
        let reply = replier(id: id, channel: channel, limiter: limiter)
        switch request {
        case .append(let record):
            switch record.event {
            case .nodeReports, .tick, .membershipChanged:
                return reply(.failure(WitnessFailure(.badRequest, "\(record.event.kindName) entries are written by the witnesses only")))
            default: break
            }
            guard sequencer.leadingTerm != nil else { return reply(.failure(notLeaderFailure(RaftError.notLeader(leader: node.leader)))) }
            do {
                let stamped = try sequencer.stamp(record.event, formation: record.formation, nowNanos: nowNanos(), wallTimeMillis: wallTimeMillis())
                propose(stamped, reply: reply)
            } catch {
                reply(.failure(notLeaderFailure(RaftError.notLeader(leader: node.leader))))
            }
        case .report(let formation, let report):
            let token = nextToken
            nextToken += 1
            do {
                try sequencer.submit(report, formation: formation, token: token)
                reportReplies[token] = reply
            } catch .notLeader {
                reply(.failure(notLeaderFailure(RaftError.notLeader(leader: node.leader))))
            } catch {
                reply(.failure(WitnessFailure(.refused, error.description)))
            }
        case .read(let from, let maxEntries):
            reply(read(from: from, maxEntries: min(maxEntries, WitnessRequest.readEntriesMax)))
        case .subscribe(let from):
            limiter.finished()
            subscribers[ObjectIdentifier(channel)] = Subscriber(channel: channel, requestID: id, next: max(from, 1))
            pumpSubscribers()
        case .snapshot:
            reply(snapshotResponse())
        case .status:
            reply(.status(status()))
        case .changeMembership(let change):
            changeMembership(change, reply: reply)
        }
    }

    private func read(from: UInt64, maxEntries: UInt32) -> WitnessResponse {
        do {
            let first = try storage.firstIndex()
            let from = max(from, 1)
            if from < first {
                return .failure(WitnessFailure(.compacted, "entries before \(first) were compacted into a snapshot", snapshotIndex: first - 1))
            }
            guard from <= applied, maxEntries > 0 else { return .entries([]) }
            let high = min(applied + 1, from + UInt64(maxEntries))
            return .entries(try storage.entries(from: from, to: high, maxBytes: 4 << 20))
        } catch {
            return .failure(WitnessFailure(.refused, "reading the log failed: \(error)"))
        }
    }

    private func pumpSubscribers() {
        for (key, subscriber) in subscribers {
            var subscriber = subscriber
            var batches = 0
            while subscriber.next <= applied && subscriber.channel.isWritable && batches < 8 {
                let response = read(from: subscriber.next, maxEntries: 2_000)
                let frame = Frame(kind: WitnessFrameKind.response.rawValue, payload: response.encoded(id: subscriber.requestID))
                subscriber.channel.writeAndFlush(WitnessChannelHandler.buffer(frame, allocator: subscriber.channel.allocator), promise: nil)
                guard case .entries(let entries) = response, let last = entries.last else {
                    subscribers.removeValue(forKey: key)  // compacted or failed: the client starts over
                    break
                }
                subscriber.next = last.index + 1
                subscribers[key] = subscriber
                batches += 1
            }
        }
    }

    private func snapshotResponse() -> WitnessResponse {
        do {
            let snapshot = try storage.snapshot()
            let data = snapshot.data.isEmpty ? nil : try WitnessSnapshotData(decoding: snapshot.data)
            return .snapshot(
                WitnessSnapshot(
                    index: snapshot.metadata.index, term: snapshot.metadata.term, voters: snapshot.metadata.membership.voters.sorted(),
                    addresses: data?.addresses ?? [], application: data?.application ?? []))
        } catch {
            return .failure(WitnessFailure(.refused, "reading the snapshot failed: \(error)"))
        }
    }

    private func status() -> WitnessStatus {
        let status = node.status
        let members = status.membership.voters.sorted().map { id in
            WitnessStatus.Member(id: id, address: address(of: id) ?? "unknown", match: status.peers[id]?.match)
        }
        return WitnessStatus(
            id: configuration.id, clusterID: configuration.credentials.clusterID, term: status.term, role: status.role.rawValue,
            leader: status.leader, leaderAddress: address(of: status.leader), commit: status.commit, applied: applied,
            firstIndex: (try? storage.firstIndex()) ?? 0, lastIndex: status.lastIndex, members: members)
    }

    private func changeMembership(_ change: MembershipRequest, reply: @escaping @Sendable (WitnessResponse) -> Void) {
        guard sequencer.leadingTerm != nil else { return reply(.failure(notLeaderFailure(RaftError.notLeader(leader: node.leader)))) }
        var book = addressBook()
        let raftChange: MembershipChange
        switch change {
        case .add(let id, let address):
            guard !node.membership.voters.contains(id) else { return reply(.failure(WitnessFailure(.refused, "witness \(id) is already a member"))) }
            do { _ = try WitnessEndpoint(parsing: address) } catch { return reply(.failure(WitnessFailure(.badRequest, error.description))) }
            book.removeAll { $0.id == id }
            book.append(WitnessMember(id: id, address: address))
            raftChange = .addVoter(id)
        case .remove(let id):
            guard node.membership.voters.contains(id) else { return reply(.failure(WitnessFailure(.refused, "witness \(id) is not a member"))) }
            guard node.membership.voters.count > 1 else { return reply(.failure(WitnessFailure(.refused, "cannot remove the last witness"))) }
            book.removeAll { $0.id == id }
            raftChange = .removeVoter(id)
        }
        flushProposals()
        do {
            // The address first, so every witness knows where the new member is by the time
            // the membership change takes effect.
            let record = try sequencer.stamp(
                .membershipChanged(book.sorted { $0.id < $1.id }), formation: EventRecord.defaultFormation, nowNanos: nowNanos(),
                wallTimeMillis: wallTimeMillis())
            if case .addVoter = raftChange { _ = try node.propose(record.encoded()) }
            let index = try node.proposeMembershipChange(raftChange)
            waiters[index, default: []].append((node.term, reply))
            if case .removeVoter = raftChange { _ = try node.propose(record.encoded()) }
            logger.info("proposed a membership change", metadata: ["change": "\(raftChange)", "index": "\(index)"])
            scheduleReady()
        } catch {
            reply(.failure(notLeaderFailure(error)))
        }
    }

    private func handOverLeadership() -> Bool {
        guard !stopped, node.role == .leader else { return false }
        let status = node.status
        guard let target = status.peers.filter({ $0.key != configuration.id }).max(by: { $0.value.match < $1.value.match })?.key else { return false }
        do {
            try node.transferLeadership(to: target)
            processReady()
            logger.info("handing leadership over before stopping", metadata: ["to": "\(target)"])
            return true
        } catch {
            return false
        }
    }

    // MARK: Peers

    /// The witnesses' addresses: the log's book, completed by `--peers`.
    private func addressBook() -> [WitnessMember] {
        var book = loggedAddresses
        for (id, endpoint) in configuration.peers where book[id] == nil { book[id] = endpoint.description }
        return book.sorted { $0.key < $1.key }.map { WitnessMember(id: $0.key, address: $0.value) }
    }

    private func address(of id: NodeID?) -> String? {
        guard let id else { return nil }
        return loggedAddresses[id] ?? configuration.peers[id]?.description
    }

    /// Keeps an outbound connection to every other witness that is a member or named in
    /// `--peers`, reconnecting with backoff.
    private func connectPeers() {
        var targets = Set(node.membership.voters)
        targets.formUnion(configuration.peers.keys)
        targets.remove(configuration.id)
        for id in links.keys where !targets.contains(id) {
            links.removeValue(forKey: id)?.channel?.close(promise: nil)
        }
        let now = nowNanos()
        for id in targets {
            guard let text = address(of: id), let endpoint = try? WitnessEndpoint(parsing: text) else { continue }
            var link = links[id] ?? PeerLink(endpoint: endpoint)
            if link.endpoint != endpoint {
                link.channel?.close(promise: nil)
                link = PeerLink(endpoint: endpoint)
            }
            if link.channel == nil && !link.connecting && now >= link.nextAttemptNanos {
                link.connecting = true
                dial(id, endpoint)
            }
            links[id] = link
        }
    }

    private func dial(_ peer: NodeID, _ endpoint: WitnessEndpoint) {
        let credentials = configuration.credentials
        let myID = configuration.id
        let logger = self.logger
        let stall = TimeAmount.milliseconds(Int64(configuration.stallTimeoutMillis))
        let events = WitnessChannelHandler.Events(
            opened: { [weak self] channel, _, remoteID in
                guard let self else { return }
                self.loop.execute { self.peerConnected(peer, channel: channel, remoteID: remoteID) }
            },
            frame: { channel, frame in
                logger.warning("unexpected frame on an outbound peer connection", metadata: ["kind": "\(frame.kind)"])
                channel.close(promise: nil)
            },
            closed: { [weak self] channel, reason in
                guard let self else { return }
                self.loop.execute { self.peerDisconnected(peer, channel: channel, reason: reason) }
            })
        ClientBootstrap(group: ioGroup)
            .connectTimeout(.seconds(1))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 16 << 20))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        WitnessChannelHandler(
                            side: .connector(clusterID: credentials.clusterID, role: .peer, peerID: myID), secret: credentials.secret,
                            events: events, logger: logger, stallTimeout: stall))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .whenFailure { [weak self] error in
                guard let self else { return }
                self.loop.execute { self.peerDisconnected(peer, channel: nil, reason: "\(error)") }
            }
    }

    private func peerConnected(_ peer: NodeID, channel: any Channel, remoteID: NodeID) {
        guard !stopped, remoteID == peer else {
            if remoteID != peer {
                logger.error("the witness at a peer's address has another id", metadata: ["expected": "\(peer)", "found": "\(remoteID)"])
            }
            channel.close(promise: nil)
            return
        }
        links[peer]?.channel = channel
        links[peer]?.connecting = false
        links[peer]?.backoffMillis = 50
        logger.info("connected to peer", metadata: ["peer": "\(peer)"])
    }

    private func peerDisconnected(_ peer: NodeID, channel: (any Channel)?, reason: String?) {
        guard var link = links[peer] else { return }
        if let channel, let current = link.channel, ObjectIdentifier(current) != ObjectIdentifier(channel) { return }
        if link.channel != nil { logger.info("lost peer", metadata: ["peer": "\(peer)", "reason": "\(reason ?? "closed")"]) }
        link.channel = nil
        link.connecting = false
        link.nextAttemptNanos = nowNanos() + link.backoffMillis * 1_000_000
        link.backoffMillis = min(link.backoffMillis * 2, 1_000)
        links[peer] = link
        if !stopped { node.reportUnreachable(peer) }
    }

    /// Sends each peer its messages in one write; a peer that is not connected or not reading
    /// loses them (Raft retransmits) and never delays the others.
    private func send(_ messages: [Message]) {
        var byPeer: [NodeID: [Message]] = [:]
        for message in messages { byPeer[message.to, default: []].append(message) }
        for (peer, messages) in byPeer {
            guard let channel = links[peer]?.channel, channel.isWritable else {
                node.reportUnreachable(peer)
                for message in messages where message.kind == .snapshot { node.reportSnapshot(to: peer, delivered: false) }
                continue
            }
            var buffer = channel.allocator.buffer(capacity: 256)
            for message in messages {
                buffer.writeBytes(Frame(kind: WitnessFrameKind.raftMessage.rawValue, payload: message.wireEncoded()).encoded())
            }
            let snapshotSent = messages.contains { $0.kind == .snapshot }
            let promise: EventLoopPromise<Void>? = snapshotSent ? channel.eventLoop.makePromise() : nil
            promise?.futureResult.whenComplete { [weak self] result in
                guard let self else { return }
                let delivered = (try? result.get()) != nil
                self.loop.execute { self.node.reportSnapshot(to: peer, delivered: delivered) }
            }
            channel.writeAndFlush(buffer, promise: promise)
        }
    }
}
