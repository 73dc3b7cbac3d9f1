import EventLog
import Foundation

/// The node manager's HTTP endpoints for load balancers and probes (Patroni's paths, where one
/// exists), as a pure function of what the manager observes of its postgres and what the
/// committed log says (`View`). An answer never rests on a stale view: a primary whose lease
/// ran out, or whose last observation of postgres is too old, is not the primary here.
public enum HealthEndpoints {
    /// What the manager knows when a request arrives.
    public struct View: Sendable, Equatable {
        /// The postmaster is running (the manager's own child).
        public var postgresRunning: Bool
        /// From the last observation, when it is fresh (`freshObservationNanos`); nil when postgres
        /// did not answer lately.
        public var inRecovery: Bool?
        public var readOnly: Bool?
        public var timeline: UInt32?
        /// The standby's WAL receiver status (`streaming`, …); nil without one.
        public var walReceiverStatus: String?
        /// Bytes of WAL this standby has not replayed of what the primary last reported.
        public var lagBytes: UInt64?
        /// The state the log shows this node reached, and its goal; nil before it registered.
        public var reached: NodeState?
        public var goal: NodeState?
        /// How long the lease still runs from the last committed report (0: ran out or none).
        public var leaseRemainingNanos: UInt64
        /// Postgres was fenced because the lease ran out.
        public var fenced: Bool
        /// The manager's loops ran lately (`liveness`).
        public var managerAlive: Bool
        /// The state this manager replayed (`/cluster` serves its status document).
        public var clusterState: ClusterState

        public init(
            postgresRunning: Bool, inRecovery: Bool?, readOnly: Bool?, timeline: UInt32?, walReceiverStatus: String?, lagBytes: UInt64?,
            reached: NodeState?, goal: NodeState?, leaseRemainingNanos: UInt64, fenced: Bool, managerAlive: Bool, clusterState: ClusterState
        ) {
            self.postgresRunning = postgresRunning
            self.inRecovery = inRecovery
            self.readOnly = readOnly
            self.timeline = timeline
            self.walReceiverStatus = walReceiverStatus
            self.lagBytes = lagBytes
            self.reached = reached
            self.goal = goal
            self.leaseRemainingNanos = leaseRemainingNanos
            self.fenced = fenced
            self.managerAlive = managerAlive
            self.clusterState = clusterState
        }
    }

    /// An observation older than this says nothing about postgres now.
    public static let freshObservationNanos: UInt64 = 2_000_000_000

    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: String
        public var headers: [(String, String)] = []
        public var contentType = "application/json"

        public init(status: Int, body: String, headers: [(String, String)] = [], contentType: String = "application/json") {
            self.status = status
            self.body = body
            self.headers = headers
            self.contentType = contentType
        }

        public static func == (lhs: Response, rhs: Response) -> Bool {
            lhs.status == rhs.status && lhs.body == rhs.body && lhs.headers.elementsEqual(rhs.headers) { $0 == $1 } && lhs.contentType == rhs.contentType
        }
    }

    /// The paths a node manager serves (`/metrics` by `MetricsEndpoint`), for the 404 message.
    public static let paths = ["/primary", "/replica", "/read-only", "/health", "/liveness", "/readiness", "/cluster", MetricsEndpoint.path]

    /// The answer to `method target` (a path with an optional query).
    public static func respond(method: String, target: String, view: View) -> Response {
        guard method == "GET" || method == "HEAD" else {
            return Response(status: 405, body: #"{"error":"only GET and HEAD"}"#, headers: [("Allow", "GET, HEAD")])
        }
        let (path, query) = split(target)
        switch path {
        case "/primary", "/master", "/leader", "/read-write":
            return answer(isPrimary(view), view)
        case "/replica":
            guard let filters = ReplicaFilters(query) else {
                return Response(status: 400, body: #"{"error":"lag takes a size (16MB, 1048576); replication_state takes streaming"}"#)
            }
            return answer(isReplica(view, filters), view)
        case "/read-only":
            return answer(isPrimary(view) || isReplica(view, ReplicaFilters()), view)
        case "/health":
            return answer(view.postgresRunning && view.inRecovery != nil, view)
        case "/liveness":
            return Response(status: view.managerAlive ? 200 : 503, body: #"{"manager":"\#(view.managerAlive ? "running" : "stalled")"}"#)
        case "/readiness":
            return answer(isPrimary(view) || isReplica(view, ReplicaFilters(replicationStateStreaming: true)), view)
        case "/cluster":
            return Response(status: 200, body: JSONDocument.line(StatusDocument(view.clusterState)))
        default:
            return Response(status: 404, body: JSONDocument.line(NotFound(error: "no such path", paths: paths)))
        }
    }

    /// Writable now: postgres runs out of recovery, the log made this node a writable
    /// primary, and its lease still runs.
    static func isPrimary(_ view: View) -> Bool {
        guard view.postgresRunning, view.inRecovery == false, view.readOnly == false, !view.fenced, view.leaseRemainingNanos > 0,
            let reached = view.reached, let goal = view.goal
        else { return false }
        return NodeManager.writableStates.contains(reached) && NodeManager.writableStates.contains(goal)
    }

    static func isReplica(_ view: View, _ filters: ReplicaFilters) -> Bool {
        guard view.postgresRunning, view.inRecovery == true else { return false }
        if filters.replicationStateStreaming && view.walReceiverStatus != "streaming" { return false }
        if let lagMax = filters.lagBytesMax {
            guard let lag = view.lagBytes, lag <= lagMax else { return false }
        }
        return true
    }

    private static func answer(_ ok: Bool, _ view: View) -> Response {
        Response(status: ok ? 200 : 503, body: JSONDocument.line(NodeDocument(view)))
    }

    private static func split(_ target: String) -> (String, [String: String]) {
        guard let mark = target.firstIndex(of: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target[target.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            query[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return (String(target[..<mark]), query)
    }

    /// `/replica?lag=16MB&replication_state=streaming`.
    struct ReplicaFilters {
        var lagBytesMax: UInt64?
        var replicationStateStreaming = false

        init(lagBytesMax: UInt64? = nil, replicationStateStreaming: Bool = false) {
            self.lagBytesMax = lagBytesMax
            self.replicationStateStreaming = replicationStateStreaming
        }

        init?(_ query: [String: String]) {
            if let lag = query["lag"] {
                guard let bytes = Self.bytes(lag) else { return nil }
                lagBytesMax = bytes
            }
            if let state = query["replication_state"] {
                guard state == "streaming" else { return nil }
                replicationStateStreaming = true
            }
        }

        /// `16MB`, `512kB`, `1GB` (powers of 1024, as PostgreSQL's units) or plain bytes.
        static func bytes(_ text: String) -> UInt64? {
            let units: [(String, UInt64)] = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("KB", 1 << 10), ("B", 1)]
            for (suffix, factor) in units where text.hasSuffix(suffix) {
                guard let value = UInt64(text.dropLast(suffix.count)) else { return nil }
                return value.multipliedReportingOverflow(by: factor).overflow ? nil : value * factor
            }
            return UInt64(text)
        }
    }

    /// The body of the role endpoints.
    struct NodeDocument: Encodable {
        var role: String
        @Nullable var state: String?
        @Nullable var goal: String?
        var postgresRunning: Bool
        @Nullable var timeline: UInt32?
        @Nullable var lagBytes: UInt64?
        var leaseRemainingMillis: UInt64

        init(_ view: View) {
            role = HealthEndpoints.isPrimary(view) ? "primary" : view.inRecovery == true && view.postgresRunning ? "replica" : "unknown"
            state = view.reached?.rawValue
            goal = view.goal?.rawValue
            postgresRunning = view.postgresRunning
            timeline = view.timeline
            lagBytes = view.inRecovery == true ? view.lagBytes : nil
            leaseRemainingMillis = view.leaseRemainingNanos / 1_000_000
        }

        enum CodingKeys: String, CodingKey {
            case role, state, goal, timeline
            case postgresRunning = "postgres_running", lagBytes = "lag_bytes", leaseRemainingMillis = "lease_remaining_ms"
        }
    }

    struct NotFound: Encodable {
        var error: String
        var paths: [String]
    }
}
