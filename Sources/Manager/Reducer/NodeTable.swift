import EventLog

/// The nodes of a formation, kept sorted by id: rules iterate in id order without sorting,
/// and a formation holds few nodes, so a search of the array beats hashing.
public struct NodeTable: Sendable, Equatable {
    public private(set) var records: [NodeRecord] = []

    public init() {}

    private func position(of id: PGNodeID) -> Int? {
        records.firstIndex { $0.id == id }
    }

    public subscript(id: PGNodeID) -> NodeRecord? {
        get { position(of: id).map { records[$0] } }
        set {
            if let newValue {
                precondition(newValue.id == id, "node \(newValue.id) stored under id \(id)")
                if let index = position(of: id) {
                    records[index] = newValue
                } else {
                    let index = records.firstIndex { $0.id > id } ?? records.count
                    records.insert(newValue, at: index)
                }
            } else if let index = position(of: id) {
                records.remove(at: index)
            }
        }
    }

    /// Changes one node in place (no copy of the record).
    mutating func update(_ id: PGNodeID, _ body: (inout NodeRecord) -> Void) {
        guard let index = position(of: id) else { return }
        body(&records[index])
    }

    /// Changes every node in place.
    mutating func updateAll(_ body: (inout NodeRecord) -> Void) {
        for index in records.indices { body(&records[index]) }
    }

    public var count: Int { records.count }
    public var keys: [PGNodeID] { records.map(\.id) }
}
