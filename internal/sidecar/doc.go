// Package sidecar is tokenkeeper's verifying reverse proxy: it reads a TokenPolicy, a JWKS
// and a RevocationList from files (the bundle the manager renders and the webhook mounts, or
// files a standalone user points at), fetches the policy's remote JWKS, verifies every
// request's token with the verification core (internal/verify) and forwards allowed
// requests to the app on loopback, with the token's claims as headers.
//
// Behaviour worth knowing:
//
//   - Files are polled (stat every PollInterval, content hashed on change and at least every
//     tenth poll), not watched with inotify: the kubelet updates a mounted ConfigMap by
//     swapping a symlink, which inotify on the file itself misses. A changed file is parsed
//     and applied atomically; an invalid one is logged and counted and the last good state
//     is kept. A missing policy or JWKS file keeps the last good state too (at start-up:
//     none). A revocations file that never existed revokes nothing; one that disappears
//     after it was loaded, or holds an entry that would revoke less than it says (no
//     expiresAt, notBefore, jti, subject or kid), keeps the last good list: revocations
//     fail closed.
//   - Remote JWKS (spec.trustedKeys[].jwksURI) are fetched in the background, refreshed as
//     Cache-Control/Expires say (clamped), and once more when a token names an unknown kid:
//     coalesced, and at most once per JWKSUnknownKIDInterval per URI. A failed fetch keeps
//     the last good set. signingKeyRef sources are ignored: the manager renders their keys
//     into the bundle's jwks.json. The effective key set is the file's keys plus every
//     remote set's (the first source to name a kid wins). Unlike the file, where one bad key
//     rejects the whole file, a remote set keeps its usable signing keys and skips the rest
//     (Keycloak publishes an encryption key; Azure AD keys carry no alg: an RSA key without
//     alg is used only when the policy allows exactly one RSA algorithm).
//   - Until a valid policy is loaded every request gets 503; until a key is loaded, every
//     request but those on anonymous routes does. /readyz says 503 meanwhile.
//   - A request whose method or path the app could read differently from the rules gets
//     400 before any rule applies (verify.CheckTarget: lower-case methods, ";", "\", dot or
//     empty segments, encoded "/", "\", ".", ";" or "%"). Rules match whole segments.
//   - Anonymous routes pass without a token. A token they carry is verified: a valid one is
//     forwarded with its claims as anywhere else; any other (invalid, ambiguous, or in the
//     access_token query parameter) is removed, so the app never reads a token nobody
//     verified. Every other request needs a valid token (401 otherwise) that satisfies the
//     route's rule (403 otherwise).
//   - Only WebSocket upgrades are passed: after a 101 the app talks to the client directly.
//   - A request body that sends nothing for BodyIdleTimeout gets 408; a body that keeps
//     coming is never cut.
//   - Incoming copies of the forwarded-claim headers are always removed (also spellings
//     with underscores, which some frameworks treat as the same header), after hop-by-hop
//     removal, so that a "Connection" header cannot strip the headers the sidecar sets.
//   - The app sees the Host the client asked for. X-Forwarded-For gains the peer's address;
//     X-Forwarded-Host, X-Forwarded-Proto and Forwarded pass as an ingress in front set them
//     (set by the sidecar when absent).
//   - Idle connections to the app are closed after UpstreamIdleTimeout (4s), before common
//     app servers close theirs, so a request is not sent on a connection the app is closing.
//   - Tokens are never logged; per-request rejections are logged at debug level with their
//     reason only.
package sidecar
