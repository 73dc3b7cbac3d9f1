import NIOCore

/// TCP settings that make a witness connection notice a dead path in seconds, not minutes:
/// keepalive probes on an idle connection, and `TCP_USER_TIMEOUT` (tcp(7)), after which the
/// kernel aborts a connection whose sent data (or probes) went unacknowledged. Without it a
/// connection cut by a silent partition sits in retransmission back-off, and after the heal
/// the first byte may wait tens of seconds for the next retransmission.
public struct LinkTimeouts: Sendable, Equatable {
    /// Unacknowledged data (or probes) for this long aborts the connection.
    public var userTimeoutMillis: Int

    public init(userTimeoutMillis: Int) {
        self.userTimeoutMillis = max(1_000, userTimeoutMillis)
    }

    // Linux values from <netinet/tcp.h>; the Glibc module does not export them all.
    private static let tcpKeepIdle: CInt = 4
    private static let tcpKeepInterval: CInt = 5
    private static let tcpKeepCount: CInt = 6
    private static let tcpUserTimeout: CInt = 18

    private static func tcp(_ name: CInt) -> ChannelOptions.Types.SocketOption {
        ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: name))
    }

    /// Sets the options on a connected channel (from its initializer or afterwards).
    public func apply(to channel: any Channel) -> EventLoopFuture<Void> {
        let probeSeconds = SocketOptionValue(max(1, userTimeoutMillis / 3_000))
        return channel.setOption(.socketOption(.so_keepalive), value: 1)
            .flatMap { channel.setOption(Self.tcp(Self.tcpKeepIdle), value: probeSeconds) }
            .flatMap { channel.setOption(Self.tcp(Self.tcpKeepInterval), value: probeSeconds) }
            .flatMap { channel.setOption(Self.tcp(Self.tcpKeepCount), value: 3) }
            .flatMap { channel.setOption(Self.tcp(Self.tcpUserTimeout), value: SocketOptionValue(self.userTimeoutMillis)) }
    }
}
