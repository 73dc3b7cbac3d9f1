import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Raft

/// The outbound connections of one witness to its peers: one per other witness, redialled
/// with backoff, carrying Raft messages (a snapshot too large for one frame in chunks).
///
/// Confined to the witness's Raft loop, like `WitnessReplica`; NIO callbacks hop back onto it
/// (hence `@unchecked Sendable`: the loop, not the compiler, keeps it single-threaded).
final class PeerLinks: @unchecked Sendable {
    /// What the links report back to Raft.
    struct Feedback {
        var unreachable: (NodeID) -> Void
        var snapshotDelivered: (NodeID, Bool) -> Void
        /// A link came up or went down.
        var changed: () -> Void = {}
    }

    private struct Link {
        /// The address as the log or the configuration gives it, and parsed.
        var text: String
        var endpoint: WitnessEndpoint
        var channel: (any Channel)?
        var connecting = false
        var nextAttemptNanos: UInt64 = 0
        var backoffMillis: UInt64 = 50
    }

    private let configuration: WitnessConfiguration
    private let tls: TLSCredentials
    private let logger: Logger
    private let loop: any EventLoop
    private let group: any EventLoopGroup
    private let feedback: Feedback
    private var links: [NodeID: Link] = [:]
    private var nextChunkedMessage: UInt64 = 0
    var stopped = false

    init(
        configuration: WitnessConfiguration, tls: TLSCredentials, logger: Logger, loop: any EventLoop, group: any EventLoopGroup, feedback: Feedback
    ) {
        self.tls = tls
        self.configuration = configuration
        self.logger = logger
        self.loop = loop
        self.group = group
        self.feedback = feedback
    }

    var channels: [any Channel] { links.values.compactMap(\.channel) }

    /// The peers this witness's own connections reach now.
    var connectedPeers: Set<NodeID> { Set(links.filter { $0.value.channel != nil }.keys) }

    /// Keeps a connection to every witness in `targets` (this one excluded), at the address
    /// `address` gives, and closes the others.
    func maintain(targets: Set<NodeID>, address: (NodeID) -> String?) {
        for id in links.keys where !targets.contains(id) {
            links.removeValue(forKey: id)?.channel?.close(promise: nil)
        }
        let now = NIODeadline.now().uptimeNanoseconds
        for id in targets where id != configuration.id {
            guard let text = address(id) else { continue }
            var link: Link
            if let known = links[id], known.text == text {
                link = known
            } else {
                guard let endpoint = try? WitnessEndpoint(parsing: text) else { continue }
                if var known = links[id], known.endpoint == endpoint {
                    known.text = text
                    link = known
                } else {
                    links[id]?.channel?.close(promise: nil)
                    link = Link(text: text, endpoint: endpoint)
                }
            }
            if link.channel == nil && !link.connecting && now >= link.nextAttemptNanos {
                link.connecting = true
                dial(id, link.endpoint)
            }
            links[id] = link
        }
    }

    /// Whether a link is down or being dialled: `maintain` has work at the next tick.
    var needsMaintenance: Bool { links.values.contains { $0.channel == nil } }

    /// A connection closed: forget it if it was a link.
    func closed(_ channel: any Channel) {
        for (id, link) in links where link.channel.map({ ObjectIdentifier($0) }) == ObjectIdentifier(channel) {
            links[id]?.channel = nil
        }
    }

    /// Sends each peer its messages in one write; a peer that is not connected or not reading
    /// loses them (Raft retransmits) and never delays the others.
    func send(_ messages: [Message]) {
        var byPeer: [NodeID: [Message]] = [:]
        for message in messages { byPeer[message.to, default: []].append(message) }
        for (peer, messages) in byPeer {
            guard let channel = links[peer]?.channel, channel.isWritable else {
                feedback.unreachable(peer)
                for message in messages where message.kind == .snapshot { feedback.snapshotDelivered(peer, false) }
                continue
            }
            var buffer = channel.allocator.buffer(capacity: 256)
            for message in messages {
                for frame in frames(for: message) { buffer.writeBytes(frame.encoded()) }
            }
            let snapshotSent = messages.contains { $0.kind == .snapshot }
            let promise: EventLoopPromise<Void>? = snapshotSent ? channel.eventLoop.makePromise() : nil
            promise?.futureResult.whenComplete { [weak self] result in
                guard let self else { return }
                let delivered = (try? result.get()) != nil
                self.loop.execute { if !self.stopped { self.feedback.snapshotDelivered(peer, delivered) } }
            }
            channel.writeAndFlush(buffer, promise: promise)
        }
    }

    /// One frame, or chunks when the message is larger than a frame holds (a big snapshot).
    private func frames(for message: Message) -> [Frame] {
        let payload = message.wireEncoded()
        guard payload.count > MessageChunks.chunkBytes else {
            return [Frame(kind: WitnessFrameKind.raftMessage.rawValue, payload: payload)]
        }
        nextChunkedMessage += 1
        return MessageChunks.split(payload, messageID: nextChunkedMessage).map {
            Frame(kind: WitnessFrameKind.raftMessageChunk.rawValue, payload: $0)
        }
    }

    /// A peer link whose messages go unacknowledged for two election timeouts (at least 2 s)
    /// is aborted and redialled, so a healed partition is not left behind TCP's back-off.
    var linkTimeouts: LinkTimeouts {
        LinkTimeouts(userTimeoutMillis: max(2_000, 2 * configuration.electionTicks * configuration.tickMillis))
    }

    private func dial(_ peer: NodeID, _ endpoint: WitnessEndpoint) {
        let clusterID = configuration.credentials.clusterID
        let tlsContext = tls.current().clientContext
        let myID = configuration.id
        let logger = self.logger
        let stall = TimeAmount.milliseconds(Int64(configuration.stallTimeoutMillis))
        let events = WitnessChannelHandler.Events(
            opened: { [weak self] channel, _, remoteID, _ in
                guard let self else { return }
                self.loop.execute { self.connected(peer, channel: channel, remoteID: remoteID) }
            },
            frame: { channel, frame in
                logger.warning("unexpected frame on an outbound peer connection", metadata: ["kind": "\(frame.kind)"])
                channel.close(promise: nil)
            },
            closed: { [weak self] channel, reason in
                guard let self else { return }
                self.loop.execute { self.disconnected(peer, channel: channel, reason: reason?.text) }
            })
        ClientBootstrap(group: group)
            .connectTimeout(.seconds(1))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 16 << 20))
            .channelInitializer { [linkTimeouts] channel in
                linkTimeouts.apply(to: channel).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(
                        WitnessChannelHandler(
                            side: .connector(clusterID: clusterID, role: .peer, peerID: myID, expectedWitness: peer),
                            events: events, logger: logger, stallTimeout: stall))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .whenFailure { [weak self] error in
                guard let self else { return }
                self.loop.execute { self.disconnected(peer, channel: nil, reason: "\(error)") }
            }
    }

    private func connected(_ peer: NodeID, channel: any Channel, remoteID: NodeID) {
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
        feedback.changed()
    }

    private func disconnected(_ peer: NodeID, channel: (any Channel)?, reason: String?) {
        guard var link = links[peer] else { return }
        if let channel, let current = link.channel, ObjectIdentifier(current) != ObjectIdentifier(channel) { return }
        if link.channel != nil { logger.info("lost peer", metadata: ["peer": "\(peer)", "reason": "\(reason ?? "closed")"]) }
        link.channel = nil
        link.connecting = false
        link.nextAttemptNanos = NIODeadline.now().uptimeNanoseconds + link.backoffMillis * 1_000_000
        link.backoffMillis = min(link.backoffMillis * 2, 1_000)
        links[peer] = link
        feedback.changed()
        if !stopped { feedback.unreachable(peer) }
    }
}
