// Package sidecar is tokenkeeper's verifying reverse proxy: it reads a TokenPolicy, a JWKS
// and a RevocationList from files (the bundle the manager renders and the webhook mounts, or
// files a standalone user points at), follows the snapshots the manager's distribution
// server pushes when DistributionURL is set, fetches the policy's remote JWKS (unless the
// manager does), verifies every request's token with the verification core
// (internal/verify) and forwards allowed requests to the app on loopback, with the token's
// claims as headers.
//
// Behaviour worth knowing:
//
//   - With DistributionURL the sidecar starts from the files as below, then subscribes to
//     Namespace/PolicyName (distribution.Client: a long poll over TLS trusting only
//     DistributionCAFile, with the token of DistributionTokenFile; both re-read, so token
//     rotation and CA renewal need no restart). Each snapshot is checked whole (policy,
//     keys, revocations), then applied at once under one lock: with the same policy spec
//     the Verifier and its cache stay and the revocations are set before the keys, so a
//     kid revoked in an emergency never verifies in between; with another spec a new
//     Verifier with the new keys and revocations is swapped in once. A snapshot that fails
//     is rejected, counted and logged, and the last good one stays; one not newer than
//     the one held is never applied. From the first snapshot on the stream is the source:
//     changes of the policy, JWKS and revocations files are ignored (logged once per file
//     at debug level; the bundle can only be older), and a snapshot, being complete,
//     clears an incomplete bundle's unreadiness.
//
//   - Remote JWKS have one owner. While a snapshot was applied and the manager was heard
//     within DistributionFallback (90s, three poll holds), its snapshots carry the keys
//     it fetched: the sidecar neither fetches nor adds its own (not on an unknown kid
//     either) and forgets what it fetched before, so a key the manager withdrew stops
//     verifying at the next push. Past the window it fetches afresh at once and adds the
//     remote sets to the last snapshot's keys, until the manager is heard again.
//
//   - spec.distribution.maxStaleness (with a distribution server only): once the manager
//     has not been heard (a snapshot, a 304, or a snapshot not newer) for longer, measured
//     from the start when it never was, every request gets 503 with the reason and
//     Retry-After, and /readyz fails with it, until it is heard again. /startupz does not:
//     a restart would only lose the last good snapshot.
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
//
//   - Remote JWKS (spec.trustedKeys[].jwksURI) are fetched in the background, refreshed as
//     Cache-Control/Expires say (clamped), and once more when a token names an unknown kid:
//     coalesced, and at most once per JWKSUnknownKIDInterval per URI. A failed fetch keeps
//     the last good set. signingKeyRef sources are ignored: the manager renders their keys
//     into the bundle's jwks.json. The effective key set is the file's keys plus every
//     remote set's (the first source to name a kid wins). Unlike the file, where one bad key
//     rejects the whole file, a remote set keeps its usable signing keys and skips the rest
//     (Keycloak publishes an encryption key; Azure AD keys carry no alg: an RSA key without
//     alg is used only when the policy allows exactly one RSA algorithm).
//
//   - Until a valid policy is loaded (from the file or the stream) every request gets 503;
//     until a key is loaded, every request but those on anonymous routes does. /readyz
//     says 503 meanwhile.
//
//   - A request whose method or path the app could read differently from the rules gets
//     400 before any rule applies (verify.CheckTarget: lower-case methods, ";", "\", dot or
//     empty segments, encoded "/", "\", ".", ";" or "%"), and so does one asking for another
//     method (verify.CheckMethodOverride: X-HTTP-Method-Override and kin, a _method query
//     parameter). Rules match whole segments, as sent and case-folded.
//
//   - Anonymous routes pass without a token. A token they carry is verified: a valid one is
//     forwarded with its claims as anywhere else; any other (invalid, ambiguous, or in an
//     access_token query parameter, in any spelling an app reads as one) is removed, so the app never reads a token nobody
//     verified. Every other request needs a valid token (401 otherwise) that satisfies the
//     route's rule (403 otherwise).
//
//   - Only WebSocket upgrades are passed: after a 101 the app talks to the client directly,
//     until the token's exp, when the sidecar closes the tunnel. A change of revocations,
//     keys or policy re-verifies each open tunnel's token and closes those no longer
//     allowed (closeTunnels is the hook for closing tunnels from elsewhere).
//
//   - A request body that sends nothing for BodyIdleTimeout gets 408, and so does one that
//     averages less than BodyMinRate (1 KiB/s) once it has taken BodyIdleTimeout: a body
//     dripped a byte just before each idle timeout cannot hold an app worker.
//
//   - Caps against one client: MaxConns client connections (AdminMaxConns on the admin
//     port; past them new connections wait in the kernel's backlog), MaxUpstreamRequests
//     in flight to the app (past it 503 with Retry-After; refusals take no slot), and a
//     connection whose requests were all refused before a token verified (401, 400, 503)
//     idles out after UnauthenticatedIdleTimeout (5s) instead of IdleTimeout, as every
//     admin connection does.
//
//   - The app's probes, moved by the webhook to the admin port (TOKENKEEPER_APP_PROBES),
//     are forwarded to it on 127.0.0.1 at /app-health/<container>/<livez|readyz|startupz>:
//     httpGet (the app's status code, no redirects followed, TLS unverified as the kubelet
//     does), tcpSocket, and grpc (grpc.health.v1.Health/Check over h2c, encoded by hand),
//     so the app can bind loopback and still be probed.
//
//   - /readyz fails while the app port (the upstream's) listens on a non-loopback address,
//     read from /proc/net/tcp and tcp6 (no privileges: the pod shares one network
//     namespace), because any pod could then reach the app without a token; the body names
//     the port and the fix, a warning is logged once per change and
//     tokenkeeper_sidecar_app_port_exposed{port} is 1. It is re-checked at each /readyz (at
//     most twice a second) and every PollInterval. Where the files cannot be read it fails
//     closed. AllowAppNonLoopback turns it off (then only a NetworkPolicy protects the
//     app); an upstream not on loopback is not checked. /startupz is /readyz without this
//     check, for the startup probe: the app only starts after it passes.
//
//   - Incoming copies of the forwarded-claim headers are always removed (also spellings
//     with underscores, which some frameworks treat as the same header), after hop-by-hop
//     removal, so that a "Connection" header cannot strip the headers the sidecar sets.
//
//   - The app sees the Host the client asked for. The forwarding headers are this hop's
//     truth by default: the client's X-Forwarded-For, -Host, -Proto and Forwarded (and
//     their underscore spellings) are removed and X-Forwarded-For is set to the peer,
//     X-Forwarded-Host to the Host, X-Forwarded-Proto to http, so a client cannot claim
//     another address or scheme to the app. TrustForwardedHeaders (behind an ingress that
//     sets them) keeps the client's values and appends the peer to X-Forwarded-For.
//
//   - Idle connections to the app are closed after UpstreamIdleTimeout (4s), before common
//     app servers close theirs, so a request is not sent on a connection the app is closing.
//
//   - Tokens are never logged; per-request rejections are logged at debug level with their
//     reason only.
package sidecar
