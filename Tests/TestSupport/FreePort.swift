import Foundation
import Synchronization

/// Free TCP ports on the loopback interface.
public enum FreePort {
    /// Every port handed out in this process: never handed out twice.
    private static let given = Mutex<Set<Int>>([])

    /// Asks the kernel for a port that is free now, by binding port 0 on 127.0.0.1, and not
    /// handed out before by this process (the kernel may offer a port again once the probe
    /// closed it, and many tests pick ports before they bind them: two nodes of one cluster
    /// once got the same one).
    ///
    /// Another process may take the port before the caller binds it; callers that start a
    /// server treat "address in use" as a reason to pick again.
    public static func next() throws -> Int {
        for _ in 0..<100 {
            let port = try probe()
            if given.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw TestSupportError("no port that was not handed out already, in 100 tries")
    }

    private static func probe() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupportError("socket() failed: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard bound else { throw TestSupportError("binding a free port failed: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
