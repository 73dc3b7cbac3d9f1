import EventLog
import Foundation
import NodeControl

/// Everything one node manager needs to know (DESIGN §1): its node, its postgres, the
/// witnesses.
public struct NodeManagerConfiguration: Sendable {
    public var node: PGNodeID
    public var name: String
    /// The address peers and clients use for this postgres.
    public var host: String
    public var port: Int
    /// PGDATA and a private run folder (socket, log, password file).
    public var dataDirectory: String
    public var runDirectory: String
    public var formation: String = EventRecord.defaultFormation
    public var candidatePriority: UInt8 = 50
    public var replicationQuorum = true
    public var witnesses: [WitnessEndpoint]
    public var credentials: WitnessCredentials
    /// Extra postgres settings (tests turn fsync off).
    public var postgresSettings: [String: String] = [:]
    /// Where clients may connect from, and how they authenticate (pg_hba.conf).
    public var clientNetworks: [String] = []
    public var clientAuthMethod = "scram-sha-256"
    /// A command run (`/bin/sh -c`) when the node's role changes (`RoleChangeHook`), and how
    /// long it may run.
    public var roleChangeCommand: String?
    public var roleChangeTimeout: Duration = .seconds(30)
    /// Where the HTTP endpoints for load balancers and probes listen (`HealthEndpoints`); nil
    /// serves none.
    public var httpAddress: WitnessEndpoint?
    /// Let clients connect without TLS (pg_hba.conf `host` instead of `hostssl`).
    public var clientsWithoutTLS = false
    /// The command that runs the watchdog process (`pgquorum node watchdog`); nil runs none.
    public var watchdogCommand: [String]?
    /// Where the PostgreSQL server programs are (node.conf's `pg-bindir`).
    public var installation = PostgresInstallation()

    public init(
        node: PGNodeID, name: String, host: String, port: Int, dataDirectory: String, runDirectory: String, witnesses: [WitnessEndpoint],
        credentials: WitnessCredentials
    ) {
        self.node = node
        self.name = name
        self.host = host
        self.port = port
        self.dataDirectory = dataDirectory
        self.runDirectory = runDirectory
        self.witnesses = witnesses
        self.credentials = credentials
    }

    public var registration: NodeRegistration {
        NodeRegistration(
            node: node, name: name, host: host, port: UInt16(port), systemIdentifier: 0, candidatePriority: candidatePriority,
            replicationQuorum: replicationQuorum)
    }

    /// The password of the replication role, the same on every node: `pgquorum pki init`
    /// makes it, and every node's credentials file carries it.
    public var replicationPassword: String { credentials.replicationPassword ?? "" }

    public func postgresConfiguration() -> PostgresNodeConfiguration {
        var configuration = PostgresNodeConfiguration(
            dataDirectory: dataDirectory, runDirectory: runDirectory, port: port, applicationName: ClusterState.applicationName(of: node))
        configuration.installation = installation
        configuration.listenAddress = host
        configuration.extraSettings = postgresSettings
        configuration.clientNetworks = clientNetworks
        configuration.clientAuthMethod = clientAuthMethod
        configuration.tls = PostgresTLS(
            certificateFile: credentials.certificateFile, keyFile: credentials.keyFile, caFile: credentials.caFile,
            requiredForClients: !clientsWithoutTLS)
        configuration.peerConnectTimeoutSeconds = 2
        configuration.replicationTimeout = LeaseRules.replicationTimeout(leaseMillis: FormationSettings().primaryLeaseMillis)
        return configuration
    }
}
