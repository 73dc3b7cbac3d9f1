import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's System V shared memory segments that postmasters killed with SIGKILL left
/// behind. A killed postmaster cannot remove its segment; a new one on the same data directory
/// would, but a test deletes the directory. Left alone, they add up over many runs until the
/// kernel's limit (SHMMNI, 4096) refuses every new postmaster ("could not create shared
/// memory segment: No space left on device").
public enum SharedMemory {
    /// Removes the segments named in `postmaster.pid` of the data directories `data` one or
    /// two levels under `folder`, when no process is attached to them any more.
    public static func removeOrphans(under folder: String) {
        let manager = FileManager.default
        let children = (try? manager.contentsOfDirectory(atPath: folder)) ?? []
        let candidates = children.flatMap { child in ["\(folder)/\(child)/postmaster.pid", "\(folder)/\(child)/data/postmaster.pid"] }
        for path in candidates where manager.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            // Line 7: the segment's key and id.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            guard lines.count >= 7, let id = lines[6].split(separator: " ").last.flatMap({ Int32($0) }) else { continue }
            var status = shmid_ds()
            guard shmctl(id, IPC_STAT, &status) == 0, status.shm_nattch == 0 else { continue }
            _ = shmctl(id, IPC_RMID, nil)
        }
    }
}
