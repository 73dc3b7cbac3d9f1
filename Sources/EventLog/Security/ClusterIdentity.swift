import Raft
import X509

/// Who holds a certificate of the cluster (DESIGN §5 rule 5): the certificate's subject names
/// the role in its organizational unit (`OU`) and the holder in its common name (`CN`). The
/// witness grants requests by role: only a witness carries Raft messages, and only as its own
/// id; a node reports and appends state for itself only; an operator asks for changes; a
/// monitor only reads.
public struct ClusterIdentity: Sendable, Hashable, CustomStringConvertible {
    public enum Role: String, Sendable, CaseIterable {
        case witness
        case node
        case `operator`
        case monitor
    }

    public var role: Role
    /// A witness's id in decimal; a node's name; an operator's or a monitor's name.
    public var name: String

    /// The longest holder name a certificate may carry.
    public static let nameBytesMax = 64

    public init(role: Role, name: String) throws(IdentityError) {
        guard !name.isEmpty, name.utf8.count <= Self.nameBytesMax,
            name.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) })
        else {
            throw IdentityError("the \(role.rawValue) name \"\(name)\" is not 1 to \(Self.nameBytesMax) letters, digits, '-', '_' or '.'")
        }
        if role == .witness {
            guard let id = NodeID(name), id > 0, String(id) == name else {
                throw IdentityError("a witness certificate names its witness id (a positive number), not \"\(name)\"")
            }
        }
        self.role = role
        self.name = name
    }

    public static func witness(_ id: NodeID) -> ClusterIdentity {
        // A positive id in decimal is always a valid name.
        try! ClusterIdentity(role: .witness, name: String(id))
    }

    /// The witness id of a witness certificate, nil for every other role.
    public var witnessID: NodeID? { role == .witness ? NodeID(name) : nil }

    public var description: String { "\(role.rawValue) \(name)" }

    /// Reads the identity from a certificate's subject; a certificate without a role or a
    /// name of ours is refused, naming what it holds.
    public init(certificate: Certificate) throws(IdentityError) {
        var unit: String?
        var common: String?
        for relative in certificate.subject {
            for attribute in relative {
                if attribute.type == .RDNAttributeType.organizationalUnitName { unit = String(describing: attribute.value) }
                if attribute.type == .RDNAttributeType.commonName { common = String(describing: attribute.value) }
            }
        }
        guard let unit, let role = Role(rawValue: unit) else {
            throw IdentityError(
                "the certificate \"\(certificate.subject)\" names no pgquorum role: its OU must be one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let common else { throw IdentityError("the certificate \"\(certificate.subject)\" has no CN naming its holder") }
        try self.init(role: role, name: common)
    }

    /// The subject a certificate for this identity carries.
    public var subject: DistinguishedName {
        get throws {
            try DistinguishedName {
                OrganizationName("pgquorum")
                OrganizationalUnitName(role.rawValue)
                CommonName(name)
            }
        }
    }
}

/// A certificate that does not name a holder of ours, or a name that cannot be one.
public struct IdentityError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
