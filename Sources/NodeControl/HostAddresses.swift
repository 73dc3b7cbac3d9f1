import Foundation
import Synchronization

/// Host names and addresses as `pg_hba.conf` needs them. Its address field takes an address
/// with a mask; a bare name there is matched by reverse DNS (which rarely works between
/// database hosts), and `name/32` stops postgres from starting. So pgquorum writes addresses
/// only: an IP literal gets a host mask, a CIDR stays as it is, a name is resolved first.
public enum HostAddresses {
    /// `value` as a pg_hba.conf address field when it is an IPv4 or IPv6 address or a CIDR
    /// (`10.0.0.7` → `10.0.0.7/32`, `::1` → `::1/128`); nil for a name or anything else.
    public static func cidr(_ value: String) -> String? {
        let parts = value.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = parts.first.map(String.init) else { return nil }
        let bits: Int
        if isIPv4(address) {
            bits = 32
        } else if isIPv6(address) {
            bits = 128
        } else {
            return nil
        }
        guard parts.count == 2 else { return "\(address)/\(bits)" }
        guard let mask = Int(parts[1]), (0...bits).contains(mask), String(mask) == parts[1] else { return nil }
        return value
    }

    public static func isIPv4(_ value: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, value, &address) == 1
    }

    public static func isIPv6(_ value: String) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, value, &address) == 1
    }

    /// Every address `host` resolves to (getaddrinfo: /etc/hosts, then DNS), numeric, sorted,
    /// without repeats. An IP literal resolves to itself. Blocks for as long as the resolver.
    public static func resolve(_ host: String) throws(NodeControlError) -> [String] {
        if isIPv4(host) || isIPv6(host) { return [host] }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            throw .invalidConfiguration("host name \(host) does not resolve: \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var addresses = Set<String>()
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.pointee.ai_addr, current.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                // A link-local IPv6 address comes with its zone ("fe80::1%eth0"): not for pg_hba.conf.
                if !text.contains("%") { addresses.insert(text) }
            }
            entry = current.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw .invalidConfiguration("host name \(host) resolves to no usable address") }
        return addresses.sorted()
    }
}

/// The pg_hba.conf addresses of a set of peer hosts, resolving names at most once a minute
/// (a name that failed: again after a few seconds). A name that resolved once and fails later
/// keeps its last addresses: a resolver hiccup must not lock a standby out.
public final class PeerAddressBook: Sendable {
    public struct Lookup: Sendable, Equatable {
        /// The address fields to write, sorted, each once.
        public var cidrs: [String]
        /// Hosts that could not be resolved, with the reason: no line is written for them.
        public var unresolved: [String: String]
    }

    private struct Entry {
        var addresses: [String]
        var failure: String?
        var resolvedAt: ContinuousClock.Instant
    }

    private let refresh: Duration
    private let retry: Duration
    private let resolver: @Sendable (String) throws(NodeControlError) -> [String]
    private let entries = Mutex<[String: Entry]>([:])

    public init(
        refresh: Duration = .seconds(60), retry: Duration = .seconds(5),
        resolver: @escaping @Sendable (String) throws(NodeControlError) -> [String] = HostAddresses.resolve
    ) {
        self.refresh = refresh
        self.retry = retry
        self.resolver = resolver
    }

    /// A name is resolved again a refresh after it resolved, a retry after it failed.
    private func isDue(_ entry: Entry, now: ContinuousClock.Instant) -> Bool {
        now - entry.resolvedAt >= (entry.failure == nil ? refresh : retry)
    }

    /// Whether `lookup(hosts)` answers from the cache alone, without asking the resolver.
    public func isCurrent(_ hosts: [String]) -> Bool {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            hosts.allSatisfy { host in
                HostAddresses.cidr(host) != nil || entries[host].map { !isDue($0, now: now) } ?? false
            }
        }
    }

    /// The address fields for `hosts` (names, addresses or CIDRs).
    public func lookup(_ hosts: [String]) -> Lookup {
        var cidrs = Set<String>()
        var unresolved: [String: String] = [:]
        let now = ContinuousClock.now
        for host in Set(hosts) {
            if let cidr = HostAddresses.cidr(host) {
                cidrs.insert(cidr)
                continue
            }
            let cached = entries.withLock { $0[host] }
            var entry = cached
            let due = cached.map { isDue($0, now: now) } ?? true
            if due {
                do throws(NodeControlError) {
                    entry = Entry(addresses: try resolver(host), failure: nil, resolvedAt: now)
                } catch {
                    entry = Entry(addresses: cached?.addresses ?? [], failure: error.description, resolvedAt: now)
                }
                entries.withLock { $0[host] = entry }
            }
            guard let entry else { continue }
            if entry.addresses.isEmpty {
                unresolved[host] = entry.failure ?? "no address"
            }
            for address in entry.addresses { cidrs.insert(HostAddresses.cidr(address) ?? address) }
        }
        return Lookup(cidrs: cidrs.sorted(), unresolved: unresolved)
    }
}
