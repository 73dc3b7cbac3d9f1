import Raft

/// What each holder of a cluster certificate may ask a witness (DESIGN §5 rule 5), as a pure
/// function of the request, the certificate's identity and the node names the log registered:
///
/// - anyone may read (reads, streams, snapshots, status);
/// - an operator may do everything a client can: operator requests, settings, witness
///   membership, and a node's own requests (an operator is trusted with the cluster);
/// - a node may register itself, report, and append the states it reached, for its own node
///   only: the name in its certificate must be the name its node id was registered with;
/// - a monitor, and a witness on a client connection, may only read.
///
/// Entries the witnesses write themselves (coalesced reports, ticks, a new term's first entry,
/// membership mirrors) are refused from every client.
public enum WitnessAccess {
    /// The name node `node` of `formation` registered with, as the committed log says; nil
    /// when no such node is registered (yet, or any more).
    public typealias NodeNames = (_ formation: String, _ node: PGNodeID) -> String?

    /// Nil when `identity` may make `request`; otherwise the one-line reason it may not.
    public static func refusal(of request: WitnessRequest, by identity: ClusterIdentity, nodeNames: NodeNames) -> String? {
        switch request {
        case .read, .subscribe, .snapshot, .status:
            return nil
        case .changeMembership:
            return identity.role == .operator ? nil : "\(identity) may not change the witness membership: an operator certificate is needed"
        case .append(let record):
            return refusal(of: record, by: identity, nodeNames: nodeNames)
        case .report(let formation, let report):
            switch identity.role {
            case .operator: return nil
            case .node: return ownNode(report.node, formation: formation, identity, nodeNames, doing: "report")
            case .witness, .monitor: return "\(identity) may not report for a node: only the node's own certificate may"
            }
        }
    }

    static func refusal(of record: EventRecord, by identity: ClusterIdentity, nodeNames: NodeNames) -> String? {
        switch record.event {
        case .nodeReports, .tick, .termStarted, .membershipChanged:
            return "\(record.event.kindName) entries are written by the witnesses only"
        case .operatorRequest, .settingsChanged:
            return identity.role == .operator ? nil : "\(identity) may not append \(record.event.kindName): an operator certificate is needed"
        case .nodeRegistered(let registration):
            switch identity.role {
            case .operator: return nil
            case .node:
                guard registration.name == identity.name else {
                    return "\(identity) may not register a node named \(registration.name): a node certificate registers its own name only"
                }
                // Registering again (a node that moved) keeps its id: the id must be its own.
                if registration.node != 0, let registered = nodeNames(record.formation, registration.node), registered != identity.name {
                    return "\(identity) may not register as node \(registration.node), which is \(registered)"
                }
                return nil
            case .witness, .monitor: return "\(identity) may not register a node: a node or operator certificate is needed"
            }
        case .stateReached(let node, _):
            switch identity.role {
            case .operator: return nil
            case .node: return ownNode(node, formation: record.formation, identity, nodeNames, doing: "append the state of")
            case .witness, .monitor: return "\(identity) may not append a node's state: only the node's own certificate may"
            }
        }
    }

    private static func ownNode(_ node: PGNodeID, formation: String, _ identity: ClusterIdentity, _ nodeNames: NodeNames, doing: String) -> String? {
        guard let registered = nodeNames(formation, node) else {
            return "\(identity) may not \(doing) node \(node) of formation \(formation): no such node is registered"
        }
        guard registered == identity.name else {
            return "\(identity) may not \(doing) node \(node) (\(registered)): a node certificate speaks for its own node only"
        }
        return nil
    }
}
