// Package verify is tokenkeeper's token verification core: it decides whether a compact JWS
// JWT is valid for a policy (signature by a pinned key, iss, aud, time claims, lifetime,
// required claims, revocations), which route rules it satisfies and which claims reach the
// app as headers.
//
// It imports no Kubernetes package, so the sidecar and standalone tools can use it. A
// converter elsewhere maps a TokenPolicySpec onto Config.
//
// Keys and revocations are immutable snapshots (KeySet, Revocations) that a Verifier swaps
// atomically, so an update never races a verification in flight. Verified tokens are cached
// by SHA-256 of the raw token; a cache hit still checks revocations and that its key is in
// the current KeySet.
package verify
