// Command distribution measures how fast the manager's snapshot server pushes one
// RevocationList change to many subscribed sidecars. It runs against a local control plane
// with bin/manager as its own process (hack/bench-distribution.sh starts both):
//
//	distribution -kubeconfig bin/bench/distribution/n1000/kubeconfig -addr 127.0.0.1:PORT \
//	  -metrics http://127.0.0.1:PORT/metrics -manager-pid PID -manager-namespace tokenkeeper-system -subscribers 1000
//
// It creates, per namespace, a SigningKey, a TokenPolicy trusting it, a RevocationList
// "bench-changes" and a ServiceAccount; issues one projected token of audience
// tokenkeeper.dev/distribution per subscriber (TokenRequest); reads the server's CA from the
// bundle ConfigMap (distribution.CAKey) and checks that the server presents a certificate of
// that CA; then runs the subscribers, each a goroutine with its own TLS connection running a
// sidecar's long-poll loop (GET /v1/snapshots/{ns}/{policy}?version=..&timeout=30, gzip,
// distribution.Resolve, distribution.Accepts).
//
// Once every subscriber holds the current snapshot and has a poll parked at the server, it
// adds one jti to bench-changes with one API write and records, per subscriber, the time
// from just before that write to the moment the subscriber has applied a snapshot that
// revokes the jti. It repeats this -changes times and reports p50/p99/max, the manager's CPU
// seconds and peak RSS, and the body bytes the server sent.
//
// The server holds at most server.DefaultLimits.MaxPerNamespace polls per namespace, so
// subscribers are spread over namespaces of at most 4/5 of that (one namespace for 1000,
// three for 10000); a change is then one write per namespace, all sent at once, each
// subscriber timed from its own namespace's write.
//
// With -large-jtis it then revokes that many jtis across -large-lists RevocationLists of the
// first namespace (every subscriber must then be in it) and measures the push of one more
// jti to subscribers holding the whole set, the full and delta sizes, and, with -sidecar, the
// RSS of a standalone sidecar loading the same set from a file.
//
// Figures are reported, never asserted.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution/server"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

// Names of the objects created in each namespace.
const (
	keyName     = "bench-key"
	policyName  = "bench-api"
	changesList = "bench-changes"
	saName      = "bench-sidecar"
	seedJTI     = "bench-seed"
)

type bench struct {
	cl          client.Client
	addr        string
	metricsURL  string
	managerPID  int
	clusterPIDs []int
	verbose     bool

	namespaces []string
	pools      map[string]*x509.CertPool
	subs       []*subscriber
	rounds     int // changes made so far

	share      atomic.Bool
	cacheMu    sync.Mutex
	cache      map[[32]byte]*future
	cacheOrder [][32]byte

	round atomic.Pointer[round]

	wireBytes, ok, notModified, unavailable, errors, resolveErrors, notAccepted atomic.Int64
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func main() {
	var (
		addr        = flag.String("addr", "", "host:port of the manager's snapshot server (--distribution-bind-address)")
		metricsURL  = flag.String("metrics", "", "URL of the manager's /metrics")
		managerPID  = flag.Int("manager-pid", 0, "pid of the manager (CPU and RSS from /proc)")
		clusterPIDs = flag.String("cluster-pids", "", "comma-separated pids of kube-apiserver and etcd (their CPU is reported)")
		managerNS   = flag.String("manager-namespace", "tokenkeeper-system", "the manager's --namespace (created here; its certificate Secret lives there)")
		nsPrefix    = flag.String("namespace-prefix", "bench", "subscribers' namespaces are <prefix>-0, <prefix>-1, ...")
		subscribers = flag.Int("subscribers", 1000, "simulated sidecars")
		changes     = flag.Int("changes", 5, "measured RevocationList changes")
		largeJTIs   = flag.Int("large-jtis", 0, "then revoke this many jtis and measure again (0: skip)")
		largeLists  = flag.Int("large-lists", 20, "RevocationLists the large set is sharded over (each at most 5000 tokens, the API's limit)")
		largeRounds = flag.Int("large-changes", 3, "measured changes with the large set")
		sidecarBin  = flag.String("sidecar", "", "with -large-jtis: bin/sidecar, started standalone with the large set to read its RSS")
		outDir      = flag.String("out", "bin/bench/distribution", "directory for the sidecar's files and result.json")
		perNS       = flag.Int("per-namespace", server.DefaultLimits.MaxPerNamespace*4/5, "most subscribers per namespace (the server holds at most server.DefaultLimits.MaxPerNamespace polls of one namespace)")
		verbose     = flag.Bool("v", false, "log every subscriber error")
		shared      = flag.Bool("shared-resolve", false, "subscribers share the resolution of byte-identical answers from the start (as the large phase always does): each real sidecar resolves on its own CPU, so this charges the manager's machine for one resolve instead of N")
	)
	// controller-runtime (imported through the server package) registers -kubeconfig.
	if flag.Lookup("kubeconfig") == nil {
		flag.String("kubeconfig", "", "kubeconfig of the API server the manager runs against (default $KUBECONFIG)")
	}
	flag.Parse()
	kubeconfig := flag.Lookup("kubeconfig").Value.String()
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	if *addr == "" || *managerPID == 0 || *metricsURL == "" {
		fail(errors.New("-addr, -metrics and -manager-pid are required"))
	}
	if err := raiseNoFile(); err != nil {
		fail(err)
	}
	b := &bench{addr: *addr, metricsURL: *metricsURL, managerPID: *managerPID, verbose: *verbose,
		pools: map[string]*x509.CertPool{}, cache: map[[32]byte]*future{}}
	b.share.Store(*shared)
	for _, f := range strings.Split(*clusterPIDs, ",") {
		var pid int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &pid); err == nil {
			b.clusterPIDs = append(b.clusterPIDs, pid)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fail(err)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	if b.cl, err = client.New(cfg, client.Options{Scheme: operator.Scheme()}); err != nil {
		fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	res := &Result{Subscribers: *subscribers, Changes: *changes, GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU(),
		Limits: server.DefaultLimits, StartedAt: time.Now().UTC()}
	err = b.run(ctx, res, runConfig{perNS: *perNS, managerNS: *managerNS, nsPrefix: *nsPrefix, subscribers: *subscribers, changes: *changes,
		largeJTIs: *largeJTIs, largeLists: *largeLists, largeRounds: *largeRounds, sidecar: *sidecarBin, out: *outDir})
	res.Errors = counters{OK: b.ok.Load(), NotModified: b.notModified.Load(), Unavailable: b.unavailable.Load(),
		Errors: b.errors.Load(), ResolveErrors: b.resolveErrors.Load(), NotAccepted: b.notAccepted.Load()}
	if err != nil {
		res.Failure = err.Error()
	}
	printResult(os.Stdout, res)
	if werr := writeJSON(filepath.Join(*outDir, "result.json"), res); werr != nil && err == nil {
		err = werr
	}
	cancel()
	if err != nil {
		fail(err)
	}
}

type runConfig struct {
	managerNS, nsPrefix                string
	perNS                              int
	subscribers, changes               int
	largeJTIs, largeLists, largeRounds int
	sidecar, out                       string
}

func (b *bench) run(ctx context.Context, res *Result, c runConfig) error {
	if c.subscribers < 1 {
		return errors.New("-subscribers must be at least 1")
	}
	if c.perNS < 1 {
		return errors.New("-per-namespace must be at least 1")
	}
	nNS := (c.subscribers + c.perNS - 1) / c.perNS
	if c.largeJTIs > 0 && nNS > 1 {
		return fmt.Errorf("-large-jtis needs every subscriber in one namespace: at most %d subscribers", c.perNS)
	}
	if c.largeJTIs > 0 && (c.largeJTIs+c.largeLists-1)/c.largeLists > 5000 {
		return fmt.Errorf("-large-jtis %d over %d lists is more than 5000 tokens per list (the API's maxItems)", c.largeJTIs, c.largeLists)
	}
	for i := range nNS {
		b.namespaces = append(b.namespaces, fmt.Sprintf("%s-%d", c.nsPrefix, i))
	}
	res.Namespaces = b.namespaces

	b.logf("Creating namespace %s and, in %d namespaces, a SigningKey, a TokenPolicy, RevocationList %s and ServiceAccount %s", c.managerNS, nNS, changesList, saName)
	if err := b.createObjects(ctx, c.managerNS); err != nil {
		return err
	}
	b.logf("Waiting for every bundle ConfigMap to carry the keys and %s", distribution.CAKey)
	bundles, err := b.waitBundles(ctx, 3*time.Minute)
	if err != nil {
		return err
	}
	if res.TLS, err = b.checkTLS(bundles[b.namespaces[0]][distribution.CAKey]); err != nil {
		return err
	}
	b.logf("TLS: %s", res.TLS.Summary)

	start := time.Now()
	tokens, err := b.issueTokens(ctx, c.subscribers)
	if err != nil {
		return err
	}
	res.TokenRequestSeconds = round3(time.Since(start).Seconds())
	b.logf("Issued %d distinct tokens in %.1fs", len(tokens), res.TokenRequestSeconds)

	authBefore, _ := scrape(b.metricsURL)
	start = time.Now()
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	b.startSubscribers(subCtx, tokens)
	if err := b.waitSettled(ctx, 0, 0, 10*time.Minute); err != nil {
		return fmt.Errorf("subscribers did not settle: %w", err)
	}
	res.ConnectSeconds = round3(time.Since(start).Seconds())
	authAfter, _ := scrape(b.metricsURL)
	res.TokenReviews = int64(metricSum(authAfter, "tokenkeeper_distribution_auth_total", `cached="false"`) -
		metricSum(authBefore, "tokenkeeper_distribution_auth_total", `cached="false"`))
	b.logf("All %d subscribers hold the snapshot and are parked (%.1fs after the first connect; %d TokenReviews)", len(b.subs), res.ConnectSeconds, res.TokenReviews)

	small, err := b.phase(ctx, "small set", c.changes, 0, nil)
	res.Phases = append(res.Phases, small)
	if err != nil {
		return err
	}
	if c.largeJTIs == 0 {
		return nil
	}
	large, err := b.phase(ctx, "large set", c.largeRounds, c.largeJTIs, func(p *Phase) error { return b.makeLarge(ctx, p, c) })
	res.Phases = append(res.Phases, large)
	if err != nil {
		return err
	}
	if c.sidecar != "" {
		stopSubs() // the sidecar is measured alone
		if res.Sidecar, err = b.sidecarRSS(ctx, c, bundles[b.namespaces[0]]); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) createObjects(ctx context.Context, managerNS string) error {
	create := func(obj client.Object) error {
		if err := b.cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
		return nil
	}
	if err := create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNS}}); err != nil {
		return err
	}
	for _, ns := range b.namespaces {
		objs := []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: saName}},
			&tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyName}, Spec: tkv1.SigningKeySpec{
				Algorithm: tkv1.ES256,
				Rotation: tkv1.RotationPolicy{
					Interval:     &metav1.Duration{Duration: 24 * time.Hour},
					PublishAhead: &metav1.Duration{Duration: time.Second},
					RetainFor:    &metav1.Duration{Duration: 24 * time.Hour},
				},
			}},
			&tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: policyName}, Spec: tkv1.TokenPolicySpec{
				Issuer: "https://issuer.bench.example", Audiences: []string{"bench-api"},
				TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: keyName}}},
			}},
			&tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: changesList}, Spec: tkv1.RevocationListSpec{
				Tokens: []tkv1.RevokedToken{{JTI: seedJTI, ExpiresAt: expiry()}},
			}},
		}
		for _, o := range objs {
			if err := create(o); err != nil {
				return err
			}
		}
	}
	return nil
}

func expiry() metav1.Time {
	return metav1.NewTime(time.Now().Add(24 * time.Hour).Truncate(time.Second))
}

// waitBundles waits until each namespace's bundle holds keys and the distribution CA.
func (b *bench) waitBundles(ctx context.Context, timeout time.Duration) (map[string]map[string]string, error) {
	deadline := time.Now().Add(timeout)
	out := map[string]map[string]string{}
	tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: policyName}}
	for _, ns := range b.namespaces {
		for {
			cm := &corev1.ConfigMap{}
			err := b.cl.Get(ctx, types.NamespacedName{Namespace: ns, Name: tp.BundleConfigMapName()}, cm)
			if err == nil && cm.Data[distribution.CAKey] != "" && strings.Contains(cm.Data[policy.BundleJWKS], `"kid"`) {
				out[ns] = cm.Data
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM([]byte(cm.Data[distribution.CAKey])) {
					return nil, fmt.Errorf("%s/%s: %s is not PEM", ns, cm.Name, distribution.CAKey)
				}
				b.pools[ns] = pool
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("bundle %s/%s has no keys or no %s after %s (last error: %v)", ns, tp.BundleConfigMapName(), distribution.CAKey, timeout, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return out, nil
}

// TLSCheck is what the snapshot server presented.
type TLSCheck struct {
	CASubject       string    `json:"caSubject"`
	CASHA256        string    `json:"caSHA256"`
	LeafSubject     string    `json:"leafSubject"`
	LeafIssuer      string    `json:"leafIssuer"`
	LeafIPs         []string  `json:"leafIPs"`
	LeafDNSNames    []string  `json:"leafDNSNames"`
	LeafNotAfter    time.Time `json:"leafNotAfter"`
	Version         string    `json:"tlsVersion"`
	ALPN            string    `json:"alpn"`
	UntrustedRefuse string    `json:"untrustedRefused"` // the error of a client without the CA
	Summary         string    `json:"summary"`
}

// checkTLS connects trusting only the bundle's CA (the handshake verifies the chain and
// the name 127.0.0.1), and once more trusting nothing, which must fail.
func (b *bench) checkTLS(caPEM string) (*TLSCheck, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, errors.New("bundle CA is not PEM")
	}
	var ca *x509.Certificate // the first certificate of the bundle: the current CA
	for rest := []byte(caPEM); ca == nil; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		ca, _ = x509.ParseCertificate(blk.Bytes)
	}
	if ca == nil {
		return nil, errors.New("bundle CA: no certificate")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr,
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("TLS handshake trusting only the bundle's CA: %w", err)
	}
	st := conn.ConnectionState()
	_ = conn.Close()
	leaf := st.PeerCertificates[0]
	sum := sha256.Sum256(ca.Raw)
	c := &TLSCheck{
		CASubject: ca.Subject.String(), CASHA256: hex.EncodeToString(sum[:]),
		LeafSubject: leaf.Subject.String(), LeafIssuer: leaf.Issuer.String(), LeafDNSNames: leaf.DNSNames,
		LeafNotAfter: leaf.NotAfter.UTC(), Version: tls.VersionName(st.Version), ALPN: st.NegotiatedProtocol,
	}
	for _, ip := range leaf.IPAddresses {
		c.LeafIPs = append(c.LeafIPs, ip.String())
	}
	chainOK := false
	for _, chain := range st.VerifiedChains {
		if chain[len(chain)-1].Equal(ca) {
			chainOK = true
		}
	}
	if !chainOK {
		return nil, errors.New("no verified chain ends at the bundle's CA")
	}
	_, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr,
		&tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err == nil {
		return nil, errors.New("a client trusting no CA completed the handshake")
	}
	c.UntrustedRefuse = err.Error()
	c.Summary = fmt.Sprintf("%s, certificate %q issued by %q (the bundle's CA, SHA-256 %s…), IPs %v, verified chain to the bundle CA; a client without it is refused (%s)",
		c.Version, c.LeafSubject, c.LeafIssuer, c.CASHA256[:16], c.LeafIPs, c.UntrustedRefuse)
	return c, nil
}

// issueTokens asks TokenRequest for one token per subscriber, spread over the namespaces.
func (b *bench) issueTokens(ctx context.Context, n int) ([]string, error) {
	tokens := make([]string, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 32 {
		wg.Go(func() {
			for i := range jobs {
				ns := b.namespaces[i%len(b.namespaces)]
				sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: saName}}
				tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					Audiences: []string{distribution.Audience}, ExpirationSeconds: ptr.To[int64](3600),
				}}
				var err error
				for attempt := range 5 {
					if attempt > 0 {
						time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
					}
					if err = b.cl.SubResource("token").Create(ctx, sa, tr); err == nil {
						break
					}
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("TokenRequest %d: %w", i, err)
				}
				tokens[i] = tr.Status.Token
				mu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	seen := make(map[[32]byte]bool, n)
	for _, t := range tokens {
		seen[sha256.Sum256([]byte(t))] = true
	}
	if len(seen) != n {
		return nil, fmt.Errorf("TokenRequest gave %d distinct tokens for %d requests", len(seen), n)
	}
	return tokens, nil
}

// startSubscribers starts one goroutine per token; at most 64 first contacts at once.
func (b *bench) startSubscribers(ctx context.Context, tokens []string) {
	sem := make(chan struct{}, 64)
	base := "https://" + b.addr
	for i, tok := range tokens {
		ns := b.namespaces[i%len(b.namespaces)]
		s := newSubscriber(i, ns, base, policyName, tok, b.pools[ns], b)
		b.subs = append(b.subs, s)
	}
	go func() {
		for _, s := range b.subs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go s.run(ctx, func() { <-sem })
		}
	}()
}

// waitSettled waits until every subscriber holds a snapshot of change round want (or
// later) with at least minTokens revoked tokens, all of a namespace hold the same one, every
// subscriber has a poll outstanding and the server counts every poll as held: twice in a
// row, 250 ms apart.
func (b *bench) waitSettled(ctx context.Context, want, minTokens int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	progress := time.Now()
	okInARow := 0
	for {
		holding, parked := 0, 0
		digests := map[string]map[string]bool{}
		for _, s := range b.subs {
			h := s.cur.Load()
			if h == nil || h.round < want || len(h.snap.Revocations.Tokens) < minTokens {
				continue
			}
			holding++
			if digests[s.ns] == nil {
				digests[s.ns] = map[string]bool{}
			}
			digests[s.ns][h.snap.Token.Digest] = true
			if s.inflight.Load() {
				parked++
			}
		}
		same := true
		for _, d := range digests {
			same = same && len(d) == 1
		}
		held := -1.0
		if holding == len(b.subs) && parked == len(b.subs) && same {
			page, err := scrape(b.metricsURL)
			if err == nil {
				held = metricSum(page, "tokenkeeper_distribution_subscribers")
			}
		}
		if held >= float64(len(b.subs)) {
			if okInARow++; okInARow >= 2 {
				return nil
			}
		} else {
			okInARow = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %d/%d hold round %d, %d parked, one snapshot per namespace %v, server holds %.0f polls; errors %d, 503s %d, resolve errors %d",
				timeout, holding, len(b.subs), want, parked, same, held, b.errors.Load(), b.unavailable.Load(), b.resolveErrors.Load())
		}
		if time.Since(progress) > 10*time.Second {
			progress = time.Now()
			b.logf("  waiting: %d/%d hold round %d (≥%d tokens), %d parked; errors %d, 503s %d, resolve errors %d",
				holding, len(b.subs), want, minTokens, parked, b.errors.Load(), b.unavailable.Load(), b.resolveErrors.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Phase is a series of measured changes with one revocation set size.
type Phase struct {
	Name            string   `json:"name"`
	RevokedTokens   int      `json:"revokedTokens"` // in the snapshot before the first change
	Rounds          []Round  `json:"rounds"`
	Aggregate       Latency  `json:"aggregate"`
	AggregateRecv   Latency  `json:"aggregateReceived"`
	ManagerCPUSecs  float64  `json:"managerCPUSeconds"` // summed over the rounds' windows
	BytesSent       int64    `json:"bytesSent"`         // summed over the rounds' windows
	PeakRSSKiB      int64    `json:"managerPeakRSSKiB"` // VmHWM since the phase started
	PeakRSSReset    bool     `json:"peakRSSReset"`      // false: VmHWM is since the manager started
	RSSKiB          int64    `json:"managerRSSKiB"`     // VmRSS at the end
	Machine         Machine  `json:"machine"`           // from the first write to the last apply
	TokenReviews    int64    `json:"tokenReviews"`      // during the rounds
	Setup           string   `json:"setup,omitempty"`
	FullBytesPlain  int      `json:"fullBytesPlain,omitempty"`
	FullBytesGzip   int      `json:"fullBytesGzip,omitempty"`
	DeltaBytesPlain int      `json:"deltaBytesPlain,omitempty"`
	DeltaBytesGzip  int      `json:"deltaBytesGzip,omitempty"`
	Notes           []string `json:"notes,omitempty"`
}

// Round is one measured change.
type Round struct {
	Round          int         `json:"round"`
	Applied        Latency     `json:"applied"`  // write → snapshot applied
	Received       Latency     `json:"received"` // write → answer's body read
	WriteMs        float64     `json:"writeMs"`  // the API write's round trip (the slowest namespace)
	ManagerCPUSecs float64     `json:"managerCPUSeconds"`
	BytesSent      int64       `json:"bytesSent"`
	Full, Deltas   int64       `json:"-"`
	Delivered      string      `json:"delivered"` // "N full, M delta"
	Sizes          map[int]int `json:"sizes"`     // wire size of the delivering answer → count
	WindowSecs     float64     `json:"windowSeconds"`
	Missing        int         `json:"missing,omitempty"`
	ms, recvMs     []float64
}

func (b *bench) phase(ctx context.Context, name string, rounds, largeJTIs int, setup func(*Phase) error) (*Phase, error) {
	p := &Phase{Name: name}
	p.PeakRSSReset = resetPeakRSS(b.managerPID) == nil
	if setup != nil {
		if err := setup(p); err != nil {
			return p, err
		}
	}
	minTokens := largeJTIs
	if err := b.waitSettled(ctx, b.rounds, minTokens, 10*time.Minute); err != nil {
		return p, err
	}
	p.RevokedTokens = len(b.subs[0].cur.Load().snap.Revocations.Tokens)
	before := sampleMachine(b.managerPID, b.clusterPIDs)
	authBefore, _ := scrape(b.metricsURL)
	var all, allRecv []float64
	for i := range rounds {
		if i > 0 {
			if err := b.waitSettled(ctx, b.rounds, minTokens, 5*time.Minute); err != nil {
				return p, err
			}
			time.Sleep(500 * time.Millisecond)
		}
		prev := b.subs[0].cur.Load().snap.Token
		r, err := b.change(ctx)
		if err != nil {
			return p, err
		}
		b.logf("[%s] change %d: applied p50 %.1f ms, p99 %.1f ms, max %.1f ms; manager CPU %.2fs; %d bytes sent (%s)",
			name, r.Round, r.Applied.P50, r.Applied.P99, r.Applied.Max, r.ManagerCPUSecs, r.BytesSent, r.Delivered)
		p.Rounds = append(p.Rounds, *r)
		all, allRecv = append(all, r.ms...), append(allRecv, r.recvMs...)
		p.ManagerCPUSecs += r.ManagerCPUSecs
		p.BytesSent += r.BytesSent
		if largeJTIs > 0 && i == 0 {
			// The delta for one added jti, as the server sends it to a subscriber that held
			// the previous snapshot, and the full snapshot, both without and with gzip.
			if err := b.sizes(ctx, p, prev); err != nil {
				return p, err
			}
		}
	}
	after := sampleMachine(b.managerPID, b.clusterPIDs)
	authAfter, _ := scrape(b.metricsURL)
	p.Machine = machineBetween(before, after)
	p.TokenReviews = int64(metricSum(authAfter, "tokenkeeper_distribution_auth_total", `cached="false"`) -
		metricSum(authBefore, "tokenkeeper_distribution_auth_total", `cached="false"`))
	p.Aggregate, p.AggregateRecv = latency(all), latency(allRecv)
	p.ManagerCPUSecs = round3(p.ManagerCPUSecs)
	p.RSSKiB, p.PeakRSSKiB, _ = procMemKiB(b.managerPID)
	return p, nil
}

// change makes one change (one write per namespace, sent together) and waits until every
// subscriber applied it.
func (b *bench) change(ctx context.Context) (*Round, error) {
	b.rounds++
	n := b.rounds
	r := &round{n: n, start: map[string]*atomic.Int64{}, applied: make([]atomic.Int64, len(b.subs)),
		recv: make([]atomic.Int64, len(b.subs)), all: make(chan struct{}), sizes: map[int]int{}}
	for _, ns := range b.namespaces {
		r.start[ns] = &atomic.Int64{}
	}
	b.round.Store(r)
	defer b.round.Store(nil)
	patch := []byte(fmt.Sprintf(`[{"op":"add","path":"/spec/tokens/-","value":{"jti":%q,"expiresAt":%q}}]`,
		fmt.Sprint(markerPrefix, n), expiry().UTC().Format(time.RFC3339)))
	cpu0, _ := procCPUSeconds(b.managerPID)
	bytes0 := b.wireBytes.Load()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(b.namespaces))
	writeNs := make([]time.Duration, len(b.namespaces))
	for i, ns := range b.namespaces {
		wg.Go(func() {
			rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: changesList}}
			start := time.Now()
			r.start[ns].Store(start.UnixNano())
			errs[i] = b.cl.Patch(ctx, rl, client.RawPatch(types.JSONPatchType, patch))
			writeNs[i] = time.Since(start)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("change %d: %w", n, err)
	}
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case <-r.all:
	case <-timeout.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	end := time.Now()
	cpu1, _ := procCPUSeconds(b.managerPID)
	out := &Round{Round: n, ManagerCPUSecs: round3(cpu1 - cpu0), BytesSent: b.wireBytes.Load() - bytes0,
		WindowSecs: round3(end.Sub(t0).Seconds()), Full: r.full.Load(), Deltas: r.deltas.Load()}
	for _, d := range writeNs {
		out.WriteMs = max(out.WriteMs, round3(float64(d)/1e6))
	}
	for i := range r.applied {
		if a := r.applied[i].Load(); a > 0 {
			out.ms = append(out.ms, float64(a)/1e6)
			out.recvMs = append(out.recvMs, float64(r.recv[i].Load())/1e6)
		} else {
			out.Missing++
		}
	}
	out.Applied, out.Received = latency(out.ms), latency(out.recvMs)
	out.Delivered = fmt.Sprintf("%d full, %d delta", out.Full, out.Deltas)
	r.sizeMu.Lock()
	out.Sizes = r.sizes
	r.sizeMu.Unlock()
	if out.Missing > 0 {
		return out, fmt.Errorf("change %d: %d of %d subscribers had not applied it after 60s", n, out.Missing, len(b.subs))
	}
	return out, nil
}

// makeLarge revokes largeJTIs jtis over largeLists RevocationLists of the first namespace
// and turns on shared resolution (see bench.resolve).
func (b *bench) makeLarge(ctx context.Context, p *Phase, c runConfig) error {
	b.share.Store(true)
	ns := b.namespaces[0]
	per := (c.largeJTIs + c.largeLists - 1) / c.largeLists
	start := time.Now()
	var largest int
	for l := range c.largeLists {
		rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("bench-large-%02d", l)}}
		for i := l * per; i < min((l+1)*per, c.largeJTIs); i++ {
			rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: largeJTI(i), ExpiresAt: expiry()})
		}
		if raw, err := json.Marshal(rl); err == nil {
			largest = max(largest, len(raw))
		}
		if err := b.cl.Create(ctx, rl); err != nil {
			return fmt.Errorf("creating RevocationList %s: %w", rl.Name, err)
		}
	}
	p.Setup = fmt.Sprintf("%d jtis in %d RevocationLists of %d tokens (largest object %d bytes as JSON), created in %.1fs",
		c.largeJTIs, c.largeLists, per, largest, time.Since(start).Seconds())
	b.logf("[large set] %s; waiting until every subscriber holds them", p.Setup)
	return nil
}

func largeJTI(i int) string { return fmt.Sprintf("revoked-%08d-4c55-4f5e-9a4b-2b8f0b0c1d2e", i) }

// sizes fetches the full snapshot and the delta from prev, plain and gzip, with the first
// subscriber's token (a one-off request, after the measured window).
func (b *bench) sizes(ctx context.Context, p *Phase, prev distribution.Token) error {
	s := b.subs[0]
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true,
		TLSClientConfig: &tls.Config{RootCAs: b.pools[s.ns], ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	get := func(version string, gz bool) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?timeout=1&version="+version, nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET version=%q: %d %s", version, resp.StatusCode, body)
		}
		return body, err
	}
	full, err := get("", false)
	if err != nil {
		return err
	}
	fullGz, err := get("", true)
	if err != nil {
		return err
	}
	delta, err := get(prev.String(), false)
	if err != nil {
		return err
	}
	deltaGz, err := get(prev.String(), true)
	if err != nil {
		return err
	}
	var m distribution.Message
	if err := json.Unmarshal(delta, &m); err != nil {
		return err
	}
	if m.Delta == nil {
		p.Notes = append(p.Notes, "the server answered the previous version with a full snapshot, not a delta")
	} else {
		p.Notes = append(p.Notes, fmt.Sprintf("the delta from the previous snapshot adds %d and removes %d tokens",
			len(m.Delta.Added.Tokens), len(m.Delta.Removed.Tokens)))
	}
	p.FullBytesPlain, p.FullBytesGzip, p.DeltaBytesPlain, p.DeltaBytesGzip = len(full), len(fullGz), len(delta), len(deltaGz)
	return nil
}

// Sidecar is a standalone sidecar holding the large set from a file.
type Sidecar struct {
	RevocationsLoaded float64 `json:"revocationsLoaded"` // its tokenkeeper_sidecar_revocations_loaded
	FileBytes         int     `json:"revocationsFileBytes"`
	ReadySeconds      float64 `json:"readySeconds"`
	RSSKiB            int64   `json:"rssKiB"`
	PeakRSSKiB        int64   `json:"peakRSSKiB"`
}

func (b *bench) sidecarRSS(ctx context.Context, c runConfig, bundle map[string]string) (*Sidecar, error) {
	dir := filepath.Join(c.out, "sidecar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rl := &tkv1.RevocationList{TypeMeta: metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "RevocationList"},
		ObjectMeta: metav1.ObjectMeta{Name: "bench-large"}}
	exp := expiry()
	for i := range c.largeJTIs {
		rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: largeJTI(i), ExpiresAt: exp})
	}
	// JSON, as the manager writes a bundle's revocations (policy.ParseRevocationList reads
	// it without the YAML route's conversions).
	revs, err := json.Marshal(rl)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"policy.yaml": []byte(bundle[policy.BundlePolicy]), "jwks.json": []byte(bundle[policy.BundleJWKS]), "revocations.yaml": revs}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	// The sidecar becomes ready only once the app listens on loopback: a stand-in app.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = appSrv.Serve(app) }()
	defer appSrv.Close()
	listen, admin, upstream := freePort(), freePort(), fmt.Sprint(app.Addr().(*net.TCPAddr).Port)
	logf, err := os.Create(filepath.Join(dir, "sidecar.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, c.sidecar, "--listen=127.0.0.1:"+listen, "--admin-listen=127.0.0.1:"+admin,
		"--upstream=http://127.0.0.1:"+upstream, "--policy-file="+filepath.Join(dir, "policy.yaml"),
		"--jwks-file="+filepath.Join(dir, "jwks.json"), "--revocations-file="+filepath.Join(dir, "revocations.yaml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://127.0.0.1:" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > time.Minute {
			return nil, fmt.Errorf("the sidecar was not ready after a minute (log in %s)", logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := &Sidecar{ReadySeconds: round3(time.Since(start).Seconds()), FileBytes: len(revs)}
	time.Sleep(2 * time.Second) // let it settle, as it would idle in a pod
	page, _ := scrape("http://127.0.0.1:" + admin + "/metrics")
	out.RevocationsLoaded = metricSum(page, "tokenkeeper_sidecar_revocations_loaded")
	if out.RSSKiB, out.PeakRSSKiB, err = procMemKiB(cmd.Process.Pid); err != nil {
		return nil, err
	}
	b.logf("Sidecar with %.0f revocations: VmRSS %d KiB, VmHWM %d KiB", out.RevocationsLoaded, out.RSSKiB, out.PeakRSSKiB)
	return out, nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// raiseNoFile lifts the soft open-files limit to the hard one: every subscriber holds a
// connection.
func raiseNoFile() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "distribution:", err)
	os.Exit(1)
}
