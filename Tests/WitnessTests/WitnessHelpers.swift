import EventLog
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import Synchronization
import Testing
import TestSupport

/// The event appended with `tag`: a fact the test can recognise at its index.
func taggedEvent(_ tag: UInt32) -> ClusterEvent { .stateReached(node: tag, state: .single) }

/// Acknowledged appends: the index the witnesses answered for each tag.
final class AckLog: Sendable {
    private let state = Mutex<(acks: [(tag: UInt32, index: UInt64)], errors: Int, lastAck: ContinuousClock.Instant?, longestGap: Duration)>(
        ([], 0, nil, .zero))

    func record(tag: UInt32, index: UInt64) {
        state.withLock { state in
            let now = ContinuousClock.now
            if let last = state.lastAck { state.longestGap = max(state.longestGap, now - last) }
            state.lastAck = now
            state.acks.append((tag, index))
        }
    }

    func recordError() { state.withLock { $0.errors += 1 } }

    var acks: [(tag: UInt32, index: UInt64)] { state.withLock { $0.acks } }
    var count: Int { state.withLock { $0.acks.count } }
    var errors: Int { state.withLock { $0.errors } }
    var maxIndex: UInt64 { state.withLock { $0.acks.map(\.index).max() ?? 0 } }
    /// The longest time between two acknowledgments.
    var longestGap: Duration { state.withLock { $0.longestGap } }
}

/// `count` appends spread over `concurrency` tasks, tags `firstTag…`.
func appendConcurrently(_ client: WitnessClient, count: Int, concurrency: Int, firstTag: UInt32 = 1, into log: AckLog) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<concurrency {
            group.addTask {
                var offset = worker
                while offset < count {
                    let tag = firstTag + UInt32(offset)
                    log.record(tag: tag, index: try await client.append(taggedEvent(tag)))
                    offset += concurrency
                }
            }
        }
        try await group.waitForAll()
    }
}

/// Appenders that run until cancelled, tolerating failures (a leader may be down).
func startAppenders(_ client: WitnessClient, workers: Int, firstTag: UInt32, into log: AckLog) -> Task<Void, Never> {
    Task {
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var tag = firstTag + UInt32(worker)
                    while !Task.isCancelled {
                        do {
                            log.record(tag: tag, index: try await client.append(taggedEvent(tag)))
                        } catch {
                            log.recordError()
                            try? await Task.sleep(for: .milliseconds(20))
                        }
                        tag += UInt32(workers)
                    }
                }
            }
        }
    }
}

/// Checks that every acknowledged append is in `entries` at its index with its tag.
func expectAcknowledged(_ acks: [(tag: UInt32, index: UInt64)], in entries: [CommittedEntry], sourceLocation: SourceLocation = #_sourceLocation) {
    let byIndex = Dictionary(entries.map { ($0.index, $0) }, uniquingKeysWith: { first, _ in first })
    var missing: [String] = []
    for ack in acks {
        guard let entry = byIndex[ack.index], case .event(let record) = entry.payload, record.event == taggedEvent(ack.tag) else {
            missing.append("tag \(ack.tag) at \(ack.index): \(byIndex[ack.index].map { "\($0.payload)" } ?? "absent")")
            continue
        }
    }
    #expect(missing.isEmpty, "acknowledged appends lost: \(missing.prefix(10))", sourceLocation: sourceLocation)
}

/// Waits until witness `id` applied at least `index`.
func waitApplied(_ cluster: WitnessClusterFixture, _ id: NodeID, _ index: UInt64, timeout: Duration = .seconds(30)) async throws {
    try await waitUntilAsync("witness \(id) applies index \(index)", timeout: timeout) {
        try await cluster.status(of: id).applied >= index
    }
}

/// A raw TCP connection to a witness port, for bytes no client would send.
final class RawSocket {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            close(fd)
            throw TestSupportError("connect to \(port) failed: \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Writes everything; false when the other side closed.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }

    /// Reads whatever arrives within a second: nil at end of stream (closed by the witness).
    func read() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count > 0 { return Array(buffer[0..<count]) }
        if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return [] }
        return nil
    }

    /// Reads until the witness closes the connection, or fails after `timeout`.
    func expectClosed(within timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if read() == nil { return }
        }
        throw TestSupportError("the witness kept the connection open for \(timeout)")
    }
}

/// A TLS connection to a witness that the test drives byte by byte, as a hostile or broken
/// client would: what it reads is collected as it arrives (until `stopReading`).
final class TLSSocket: Sendable {
    private let channel: any Channel
    private let received: Collector

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
            state.withLock { $0.bytes += bytes }
        }

        func channelInactive(context: ChannelHandlerContext) { state.withLock { $0.closed = true } }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    init(port: Int, credentials: WitnessCredentials) async throws {
        let context = try TLSCredentials(credentials).current().clientContext
        let collector = Collector()
        received = collector
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
    }

    deinit { channel.close(promise: nil) }

    func write(_ bytes: [UInt8]) { channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil) }

    /// What arrived within a second ([] if nothing); nil once the witness closed and all was read.
    func read() -> [UInt8]? {
        let deadline = ContinuousClock.now + .seconds(1)
        while true {
            let (bytes, closed) = received.state.withLock { state in
                defer { state.bytes = [] }
                return (state.bytes, state.closed)
            }
            if !bytes.isEmpty { return bytes }
            if closed { return nil }
            if ContinuousClock.now >= deadline { return [] }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// Reads nothing more: what the witness sends stays in the kernel's buffers.
    func stopReading() async throws { try await channel.setOption(.autoRead, value: false).get() }

    /// Reads (again) until the witness closed the connection: a closed connection shows only
    /// once what it sent before was read.
    func expectClosed(within timeout: Duration) async throws {
        if channel.isActive {
            try? await channel.setOption(.autoRead, value: true).get()
            channel.read()
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            received.state.withLock { $0.bytes = [] }
            if !channel.isActive { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportError("the witness kept the connection open for \(timeout)")
    }
}
