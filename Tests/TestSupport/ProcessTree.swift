import Foundation

/// Processes seen through /proc, to check that nothing a command started outlives it.
public enum ProcessTree {
    /// Whether `pid` runs: it exists and is not a zombie waiting to be reaped (a container's
    /// first process may never reap the orphans it inherits).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0, let (_, state) = status(of: pid) else { return false }
        return state != "Z" && state != "X"
    }

    /// The pids among `pids` that still run.
    public static func living(_ pids: [pid_t]) -> [pid_t] {
        pids.filter(isAlive)
    }

    /// The processes whose parent is `pid`.
    public static func children(of pid: pid_t) -> [pid_t] {
        allProcesses().filter { status(of: $0)?.parent == pid }
    }

    /// Every process below `pid`: children, their children, and so on.
    public static func descendants(of pid: pid_t) -> [pid_t] {
        let parents = Dictionary(uniqueKeysWithValues: allProcesses().compactMap { child in status(of: child).map { (child, $0.parent) } })
        var found: [pid_t] = []
        var frontier = [pid]
        while let next = frontier.popLast() {
            let children = parents.filter { $0.value == next }.map(\.key)
            found += children
            frontier += children
        }
        return found.sorted()
    }

    private static func allProcesses() -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    }

    /// The parent pid and one-letter state from /proc/PID/stat (the command name, in
    /// parentheses, may itself hold spaces and parentheses).
    private static func status(of pid: pid_t) -> (parent: pid_t, state: Character)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return nil
        }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count >= 2, let state = fields[0].first, let parent = pid_t(fields[1]) else { return nil }
        return (parent, state)
    }
}
