// Package distribution carries what a TokenPolicy enforces from the manager to its sidecars
// within a second of a change: the wire format of a snapshot (the policy, the public JWKS,
// the revocations), the versions that order snapshots, deltas, and the client a sidecar
// subscribes with. The server is in the server subpackage; this package imports no
// Kubernetes client, so the sidecar can use it.
//
// # Versions
//
// Every manager replica serves from its own informer caches, and caches lag each other. A
// sidecar that fails over from a replica that has seen a revocation to one that has not yet
// must not apply the older state, not even for a moment. A single counter per replica cannot
// say that (two replicas count differently), and one resourceVersion per snapshot cannot
// either (a snapshot is made of several objects, and a deletion leaves no object behind).
//
// A snapshot's Version is therefore a vector with one component per kind of input object
// (TokenPolicy, RevocationList, ConfigMap). A component is the highest resourceVersion the
// replica's informer for that kind has delivered. One watch delivers its kind's events in
// resourceVersion order, and resourceVersions are comparable within a resource (apimachinery's
// CompareResourceVersion), so "component k is r" means "every change to kind k up to r is
// in this snapshot". The server builds snapshots from its own copy of the inputs, updated
// by the same event handlers that raise the vector, so a vector and the content it labels
// are taken together under one lock (the informer's indexer runs ahead of its handlers and
// would not do). A relist that finds an object deleted may leave content newer than its
// label; that only makes a snapshot look older, which is the safe direction.
//
// A sidecar holding version V accepts a snapshot W only when W dominates V (every component
// at least as high) and its content digest differs. A lagging replica does not answer a
// sidecar that is ahead of it: it holds the long poll until its caches catch up, or answers
// "not modified" at the poll timeout, which the sidecar counts as word from the manager
// (nothing newer exists there) without changing what it enforces. This is the same idea as
// Kubernetes watch bookmarks and Envoy xDS version_info: the version says how far a stream
// has come, and a client resumes from it.
//
// A sidecar that starts from its mounted bundle holds no snapshot yet, but the bundle
// already enforces some state. The bundle records its floor (VersionKey: the resourceVersions
// of the policy and the RevocationLists it was rendered from), and the client asks from
// there and applies no snapshot below it, so a replica lagging behind the bundle cannot
// take back a revocation the sidecar started with.
//
// # Deltas
//
// Revocation sets can hold hundreds of thousands of entries. A server keeps the last few
// snapshots of each policy by digest; when a sidecar's digest is among them and the set is
// large, it sends only the entries added and removed, with the digest of the result. The
// sidecar applies the delta to what it holds and checks the digest: a mismatch rejects the
// delta and asks for a full snapshot, so a delta can never leave a sidecar with a set the
// manager did not have.
//
// # Client
//
// A sidecar subscribes with Client: it polls with the token of the snapshot it holds (a
// newer one it could not apply instead, so the server waits for something else), decodes
// gzip itself within a size cap, applies through a callback only what Accepts allows, and
// counts a 304 or a snapshot not newer as word from the manager (LastHeard), which the
// sidecar's staleness bound and remote JWKS ownership read. A delta that does not fit asks
// at once for a full snapshot by sending the held version with a digest no server keeps.
// Failures wait a jittered exponential backoff up to 10s, or the server's Retry-After.
package distribution
