import Foundation
import NodeControl
import Synchronization

/// Hosts on a private network, for tests of what crosses a network: each host is a network
/// namespace with one interface into a bridge (itself in a namespace of its own), an address
/// in a /24 private to this lab, and static neighbour entries, so that a cut packet vanishes
/// silently as on a real network (no ARP failure reports the peer gone). The test process
/// itself is a further host (`clientAddress`) so that in-process clients reach the others.
///
/// Faults are `nft` drop rules inside the hosts: a whole host, a pair of hosts, or one
/// direction of one pair; `heal()` lifts them all. Every namespace goes in `destroy()`; one
/// left behind by a test process that was killed is removed by the next lab that starts.
/// Needs root (`ip netns`), like CI; `NetworkLab.unavailableReason` says why a test must skip.
public final class NetworkLab: Sendable {
    public struct Host: Sendable, Hashable {
        public let index: Int
        public let namespace: String
        public let address: String
        /// The host's name, known inside every lab host (`/etc/netns/NAMESPACE/hosts`, which
        /// `ip netns exec` puts over /etc/hosts) but not to the test process.
        public var name: String { "lab-h\(index)" }
    }

    public let hosts: [Host]
    /// The test process's own address on the lab network.
    public let clientAddress: String
    private let prefix: String
    private let bridgeNamespace: String
    private let rootInterface: String

    private static let ip = "/usr/sbin/ip"
    private static let nft = "/usr/sbin/nft"
    private static let labs = Atomic<Int>(0)

    /// Why labs cannot be made here (not root, or a tool missing), or nil when they can.
    public static var unavailableReason: String? {
        if geteuid() != 0 { return "network-namespace tests need root (ip netns); CI runs them as root" }
        for tool in [ip, nft] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing; scripts/setup installs iproute2 and nftables"
        }
        return nil
    }

    public init(hostCount: Int) throws {
        if let reason = Self.unavailableReason { throw TestSupportError(reason) }
        Self.removeStale()
        let lab = Self.labs.add(1, ordering: .relaxed).newValue
        let pid = Int(getpid())
        prefix = "pgq-\(pid)-\(lab)-"
        bridgeNamespace = prefix + "bridge"
        rootInterface = "pq\(pid % 100_000)l\(lab % 100)"
        // A /24 of its own per lab: 10.(200 + pid % 50).(lab).0
        let subnet = "10.\(200 + pid % 50).\(lab % 250 + 1)"
        clientAddress = "\(subnet).254"
        hosts = (0..<hostCount).map { Host(index: $0, namespace: "pgq-\(pid)-\(lab)-h\($0)", address: "\(subnet).\($0 + 1)") }
        do {
            try build(labIndex: lab)
        } catch {
            destroy()
            throw error
        }
    }

    private func mac(_ host: Int, _ lab: Int) -> String {
        String(format: "02:51:%02x:%02x:00:%02x", getpid() % 256, lab % 256, host)
    }

    private func build(labIndex lab: Int) throws {
        try run(Self.ip, ["netns", "add", bridgeNamespace])
        try run(Self.ip, ["-n", bridgeNamespace, "link", "add", "br0", "type", "bridge"])
        try run(Self.ip, ["-n", bridgeNamespace, "link", "set", "br0", "up"])
        let clientMAC = mac(0xfe, lab)
        for host in hosts {
            try run(Self.ip, ["netns", "add", host.namespace])
            try run(Self.ip, ["-n", host.namespace, "link", "set", "lo", "up"])
            try run(Self.ip, ["-n", bridgeNamespace, "link", "add", "p\(host.index)", "type", "veth", "peer", "name", "eth0", "netns", host.namespace])
            try run(Self.ip, ["-n", bridgeNamespace, "link", "set", "p\(host.index)", "master", "br0", "up"])
            try run(Self.ip, ["-n", host.namespace, "link", "set", "eth0", "address", mac(host.index, lab), "up"])
            try run(Self.ip, ["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", "eth0"])
            try nft(host, ["add", "table", "inet", "lab"])
            for hook in ["input", "output"] {
                try nft(host, ["add", "chain", "inet", "lab", hook, "{", "type", "filter", "hook", hook, "priority", "0", ";", "policy", "accept", ";", "}"])
            }
        }
        // The test process's own leg, into the root namespace.
        try run(Self.ip, ["-n", bridgeNamespace, "link", "add", "client", "type", "veth", "peer", "name", rootInterface, "netns", "1"])
        try run(Self.ip, ["-n", bridgeNamespace, "link", "set", "client", "master", "br0", "up"])
        try run(Self.ip, ["link", "set", rootInterface, "address", clientMAC, "up"])
        try run(Self.ip, ["addr", "add", "\(clientAddress)/24", "dev", rootInterface])
        // Every host knows the others by name.
        let names = hosts.map { "\($0.address) \($0.name)" }.joined(separator: "\n")
        for host in hosts {
            let folder = "/etc/netns/\(host.namespace)"
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                try Data("127.0.0.1 localhost\n::1 localhost\n\(names)\n".utf8).write(to: URL(fileURLWithPath: folder + "/hosts"))
            } catch {
                throw TestSupportError("lab setup failed: cannot write \(folder)/hosts: \(error)")
            }
        }
        // Static neighbours everywhere: nobody learns that a cut peer is gone from ARP.
        for host in hosts {
            for other in hosts where other != host {
                try run(Self.ip, ["-n", host.namespace, "neigh", "replace", other.address, "lladdr", mac(other.index, lab), "dev", "eth0", "nud", "permanent"])
            }
            try run(Self.ip, ["-n", host.namespace, "neigh", "replace", clientAddress, "lladdr", clientMAC, "dev", "eth0", "nud", "permanent"])
            try run(Self.ip, ["neigh", "replace", host.address, "lladdr", mac(host.index, lab), "dev", rootInterface, "nud", "permanent"])
        }
    }

    // MARK: Processes

    /// Starts `executable` inside `host` (it dies with the test process); the pid is the
    /// program's own (`ip netns exec` execs it).
    public func spawn(on host: Host, _ executable: String, _ arguments: [String], output: ChildOutput = .null) throws -> ChildProcess {
        let (program, full) = command(on: host, executable, arguments)
        return try ChildProcess.spawn(program, full, output: output, parentDeathSignal: "KILL")
    }

    /// The command line that runs `executable` inside `host` (for `runCommand`).
    public func command(on host: Host, _ executable: String, _ arguments: [String]) -> (String, [String]) {
        (Self.ip, ["netns", "exec", host.namespace, executable] + arguments)
    }

    /// Moves the calling thread into `host`'s network: the sockets it opens from now on are
    /// that host's (the network namespace is per thread). For a thread of its own.
    public static func enterNetwork(of namespace: String) throws {
        let fd = open("/var/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestSupportError("opening the network namespace \(namespace): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // setns(2) is a GNU extension the Glibc module does not export; CLONE_NEWNET is 0x40000000.
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "setns") else {  // nil: RTLD_DEFAULT
            throw TestSupportError("setns is not available")
        }
        let setns = unsafeBitCast(symbol, to: SetNS.self)
        guard setns(fd, 0x4000_0000) == 0 else {
            throw TestSupportError("entering the network namespace \(namespace): \(String(cString: strerror(errno)))")
        }
    }

    /// The lab's network as a CIDR (for pg_hba.conf client lines).
    public var network: String { clientAddress.split(separator: ".").dropLast().joined(separator: ".") + ".0/24" }

    // MARK: Faults

    /// Cuts `host` off from every other host and from the test process.
    public func isolate(_ host: Host) throws {
        for other in hosts where other != host { try cut(host, other) }
        try cutBothWays(host, address: clientAddress)
    }

    /// Cuts both directions between two hosts.
    public func cut(_ a: Host, _ b: Host) throws {
        try cutBothWays(a, address: b.address)
    }

    /// Splits the hosts into groups that reach each other only within the group (the test
    /// process still reaches every host; `cutClient` cuts it too).
    public func split(_ groups: [[Host]]) throws {
        for (index, group) in groups.enumerated() {
            for other in groups[(index + 1)...].joined() {
                for host in group { try cut(host, other) }
            }
        }
    }

    /// Cuts the TCP connections between `server` and `peer` that reach `port` on `server`
    /// (both directions), and nothing else: say, replication to a primary's postgres, while
    /// both hosts still reach the witnesses.
    public func cutPort(_ server: Host, from peer: Host, port: Int) throws {
        try nft(server, ["add", "rule", "inet", "lab", "input", "ip", "saddr", peer.address, "tcp", "dport", "\(port)", "drop"])
        try nft(server, ["add", "rule", "inet", "lab", "output", "ip", "daddr", peer.address, "tcp", "sport", "\(port)", "drop"])
    }

    /// Drops what `from` sends to `to`; what `to` sends still arrives (a one-sided fault).
    public func cutOneWay(from: Host, to: Host) throws {
        try cutOneWay(from: from, toAddress: to.address)
    }

    /// Drops what `from` sends to `address` (another host's, or `clientAddress`).
    public func cutOneWay(from: Host, toAddress address: String) throws {
        try nft(from, ["add", "rule", "inet", "lab", "output", "ip", "daddr", address, "drop"])
    }

    private func cutBothWays(_ host: Host, address: String) throws {
        try nft(host, ["add", "rule", "inet", "lab", "output", "ip", "daddr", address, "drop"])
        try nft(host, ["add", "rule", "inet", "lab", "input", "ip", "saddr", address, "drop"])
    }

    /// Cuts the test process off from `hosts`, both ways (its own output is filtered too).
    public func cutClient(from hosts: [Host]) throws {
        for host in hosts { try cutBothWays(host, address: clientAddress) }
    }

    /// Lifts every cut.
    public func heal() throws {
        for host in hosts {
            try nft(host, ["flush", "chain", "inet", "lab", "input"])
            try nft(host, ["flush", "chain", "inet", "lab", "output"])
        }
    }

    /// Removes every namespace of this lab (and with them its interfaces). Safe to call twice.
    public func destroy() {
        for namespace in hosts.map(\.namespace) + [bridgeNamespace] {
            _ = try? runCommand(Self.ip, ["netns", "del", namespace], check: false)
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(namespace)")
        }
    }

    private func nft(_ host: Host, _ arguments: [String]) throws {
        try run(Self.ip, ["netns", "exec", host.namespace, Self.nft] + arguments)
    }

    private func run(_ executable: String, _ arguments: [String]) throws {
        do {
            // Generous: the kernel tears a deleted namespace down in the background, holding
            // the lock every `ip` command needs, and a loaded machine (a lab just destroyed)
            // has been seen to keep one waiting over 20 s.
            try runCommand(executable, arguments, timeout: .seconds(60))
        } catch {
            throw TestSupportError("lab setup failed: \(error)")
        }
    }

    /// Deletes the namespaces of labs whose test process is gone (killed before `destroy`).
    private static func removeStale() {
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        let hostFiles = (try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns")) ?? []
        for name in Set(namespaces + hostFiles) where name.hasPrefix("pgq-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = pid_t(parts[1]), kill(pid, 0) != 0, errno == ESRCH else { continue }
            _ = try? runCommand(ip, ["netns", "del", name], check: false)
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
        }
    }
}

/// Runs `body` with a lab of `hostCount` hosts and always removes it. One lab at a time on a
/// machine (a lock file, so also across processes): the lab tests measure seconds, and two
/// whole clusters of lab hosts on two cores would measure each other.
public func withNetworkLab<T>(hostCount: Int, _ body: (NetworkLab) async throws -> T) async throws -> T {
    if let reason = NetworkLab.unavailableReason { throw TestSupportError(reason) }
    let lock = open("/run/pgquorum-lab.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard lock >= 0 else { throw TestSupportError("cannot open /run/pgquorum-lab.lock: \(String(cString: strerror(errno)))") }
    defer { close(lock) }  // closing releases the lock, also when the process dies
    while flock(lock, LOCK_EX | LOCK_NB) != 0 {
        try await Task.sleep(for: .milliseconds(200))
    }
    // Tens of `ip` and `nft` commands: run from a thread of their own, not the test pool's.
    let lab = try await onOwnThread { try NetworkLab(hostCount: hostCount) }
    do {
        let result = try await body(lab)
        _ = try? await onOwnThread { lab.destroy() }
        return result
    } catch {
        _ = try? await onOwnThread { lab.destroy() }
        throw error
    }
}
