// Command signingkeys creates many SigningKeys against an API server (with a manager
// running against it) and measures, per object, the time from its create request to the
// moment its Ready condition is observed True, through an informer (no polling).
//
// It prints a markdown table (total wall time, objects/s, per algorithm p50/p90/p99/max
// time-to-Ready) and, with -json, writes the same figures to a file. With -manager-pid it
// also records the manager's peak RSS (VmHWM) and CPU seconds from /proc once all are Ready.
//
//	signingkeys -kubeconfig bin/bench/mixed/kubeconfig -count 1000 -mix mixed -namespace bench-mixed
//
// With -compare it reads two such JSON files (a candidate and a baseline) and prints the
// ratios between them; hack/bench-signingkeys.sh uses it for its summary.
//
//	signingkeys -compare bin/bench/mixed/result.json -baseline bin/bench/ec/result.json
//
// Performance is reported as ratios against a baseline run side by side, never asserted as
// wall-clock limits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/hack/bench/procstat"
)

// variant is one kind of SigningKey the benchmark creates.
type variant struct {
	alg  tkv1.Algorithm
	bits int32 // RSA modulus size; 0 for EC and EdDSA
}

func (v variant) label() string {
	if v.bits == 0 {
		return string(v.alg)
	}
	return fmt.Sprintf("%s/%d", v.alg, v.bits)
}

func (v variant) cheap() bool { return v.bits == 0 }

// mixes are the round robins the benchmark creates from.
var mixes = map[string][]variant{
	"mixed": {
		{tkv1.RS256, 2048}, {tkv1.RS384, 3072}, {tkv1.RS512, 4096},
		{tkv1.PS256, 2048}, {tkv1.PS384, 3072}, {tkv1.PS512, 4096},
		{tkv1.ES256, 0}, {tkv1.ES384, 0}, {tkv1.ES512, 0}, {tkv1.EdDSA, 0},
	},
	"ec": {{tkv1.ES256, 0}},
}

// Group names besides the per-algorithm ones.
const (
	groupCheap = "EC+EdDSA"
	groupRSA   = "RSA (all sizes)"
	groupAll   = "all"
)

// Stats are the time-to-Ready figures of one group of objects, in seconds.
type Stats struct {
	Group string  `json:"group"`
	Count int     `json:"count"`
	Ready int     `json:"ready"`
	P50   float64 `json:"p50Seconds"`
	P90   float64 `json:"p90Seconds"`
	P99   float64 `json:"p99Seconds"`
	Max   float64 `json:"maxSeconds"`
	Mean  float64 `json:"meanSeconds"`
}

// Manager is what /proc said about the manager process once every object was Ready.
type Manager struct {
	PID          int     `json:"pid"`
	PeakRSSKiB   int64   `json:"peakRSSKiB"`   // VmHWM
	RSSKiB       int64   `json:"rssKiB"`       // VmRSS at the same moment
	CPUSeconds   float64 `json:"cpuSeconds"`   // utime+stime since the process started
	CPUInRunSecs float64 `json:"cpuInRunSecs"` // utime+stime between the first create and the end
}

// Machine is what else used the CPUs during the run: on a shared machine, figures are only
// comparable when "other" stays small.
type Machine struct {
	CPUs            int     `json:"cpus"`
	BusyCPUSeconds  float64 `json:"busyCPUSeconds"`    // all CPUs, from /proc/stat, during the run
	ClusterCPUSecs  float64 `json:"clusterCPUSeconds"` // the -cluster-pids (kube-apiserver, etcd) during the run
	BenchCPUSeconds float64 `json:"benchCPUSeconds"`   // this program during the run
	OtherCPUSeconds float64 `json:"otherCPUSeconds"`   // busy minus manager, cluster and this program
	LoadAvgStart    string  `json:"loadAvgStart"`
	LoadAvgEnd      string  `json:"loadAvgEnd"`
}

// Result is one run.
type Result struct {
	Mix               string    `json:"mix"`
	Namespace         string    `json:"namespace"`
	Count             int       `json:"count"`
	Ready             int       `json:"ready"`
	StartedAt         time.Time `json:"startedAt"`
	CreateSeconds     float64   `json:"createSeconds"`     // first create request to last create response
	TotalSeconds      float64   `json:"totalSeconds"`      // first create request to last Ready observed
	ObjectsPerSecond  float64   `json:"objectsPerSecond"`  // Ready objects / TotalSeconds
	CreateErrors      int       `json:"createErrors"`      // create requests that failed (after retries)
	TimedOut          bool      `json:"timedOut"`          // not every object became Ready in time
	NotReadyByReason  []string  `json:"notReadyByReason"`  // when timed out: "reason: count"
	Groups            []Stats   `json:"groups"`            // per algorithm, then EC+EdDSA, RSA, all
	Manager           *Manager  `json:"manager,omitempty"` // with -manager-pid
	Machine           *Machine  `json:"machine,omitempty"`
	BenchGoMaxProcs   int       `json:"benchGOMAXPROCS"`
	PublishAheadSecs  float64   `json:"publishAheadSeconds"`
	RotationInterval  string    `json:"rotationInterval"`
	RotationRetainFor string    `json:"rotationRetainFor"`
}

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server the manager runs against")
		count      = flag.Int("count", 1000, "how many SigningKeys to create")
		mix        = flag.String("mix", "mixed", "mixed: round robin over every algorithm and RSA size; ec: ES256 only (the baseline)")
		namespace  = flag.String("namespace", "bench", "namespace to create them in (created if missing; must hold no SigningKeys)")
		timeout    = flag.Duration("timeout", 20*time.Minute, "give up when not every SigningKey is Ready after this long")
		jsonOut    = flag.String("json", "", "also write the result as JSON to this file")
		managerPID = flag.Int("manager-pid", 0, "pid of the manager: record its peak RSS and CPU seconds from /proc at the end")
		clusterPID = flag.String("cluster-pids", "", "comma-separated pids of kube-apiserver and etcd: record their CPU seconds during the run")
		workers    = flag.Int("create-workers", 16, "create requests in flight at once")
		qps        = flag.Float64("kube-api-qps", 1000, "client-side QPS limit of this program")
		burst      = flag.Int("kube-api-burst", 2000, "client-side burst of this program")
		prefix     = flag.String("name-prefix", "bench", "name prefix of the SigningKeys")
		compare    = flag.String("compare", "", "print the ratios of this result JSON against -baseline instead of running")
		baseline   = flag.String("baseline", "", "baseline result JSON for -compare")
	)
	flag.Parse()
	// The informer logs watch restarts; they go to stderr, apart from the results on stdout.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	if *compare != "" {
		if err := runCompare(os.Stdout, *compare, *baseline); err != nil {
			fail(err)
		}
		return
	}
	variants, ok := mixes[*mix]
	if !ok {
		fail(fmt.Errorf("-mix must be mixed or ec, not %q", *mix))
	}
	if *count < 1 {
		fail(errors.New("-count must be at least 1"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cluster []int
	for _, f := range strings.Split(*clusterPID, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil {
			fail(fmt.Errorf("-cluster-pids: %w", err))
		}
		cluster = append(cluster, pid)
	}
	res, err := run(ctx, config{
		kubeconfig: *kubeconfig, count: *count, mix: *mix, variants: variants, namespace: *namespace,
		timeout: *timeout, managerPID: *managerPID, clusterPIDs: cluster, workers: *workers, qps: *qps, burst: *burst, prefix: *prefix,
	})
	if res != nil {
		printResult(os.Stdout, res)
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, res); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fail(err)
	}
}

type config struct {
	kubeconfig  string
	count       int
	mix         string
	variants    []variant
	namespace   string
	timeout     time.Duration
	managerPID  int
	clusterPIDs []int
	workers     int
	qps         float64
	burst       int
	prefix      string
}

const (
	rotationInterval  = time.Hour
	rotationAhead     = time.Second // the minimum the API accepts: Ready ≈ generation + 1s
	rotationRetainFor = time.Hour
)

// tracker records, per object, when its create request was sent and when it was first
// observed Ready.
type tracker struct {
	mu      sync.Mutex
	sent    map[string]time.Time
	readyAt map[string]time.Time
	last    time.Time
	all     chan struct{}
	want    int
	closed  bool
}

func newTracker(want int) *tracker {
	return &tracker{sent: map[string]time.Time{}, readyAt: map[string]time.Time{}, all: make(chan struct{}), want: want}
}

func (t *tracker) sending(name string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent[name] = at
}

func (t *tracker) observe(obj any) {
	sk, ok := obj.(*tkv1.SigningKey)
	if !ok {
		return
	}
	now := time.Now()
	if !meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionReady) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, seen := t.readyAt[sk.Name]; seen {
		return
	}
	if _, sent := t.sent[sk.Name]; !sent {
		return // not ours: the send time is recorded before the create request goes out
	}
	t.readyAt[sk.Name] = now
	if now.After(t.last) {
		t.last = now
	}
	if len(t.readyAt) == t.want && !t.closed {
		t.closed = true
		close(t.all)
	}
}

func run(ctx context.Context, c config) (*Result, error) {
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := tkv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %q: %w", c.kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = float32(c.qps), c.burst
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.namespace}}
	if err := cl.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating namespace %s: %w", c.namespace, err)
	}
	var existing tkv1.SigningKeyList
	if err := cl.List(ctx, &existing, client.InNamespace(c.namespace), client.Limit(1)); err != nil {
		return nil, fmt.Errorf("listing SigningKeys in %s: %w", c.namespace, err)
	}
	if len(existing.Items) > 0 {
		return nil, fmt.Errorf("namespace %s already holds SigningKeys; use an empty one", c.namespace)
	}

	// Watch through an informer, started (and synced) before the first create.
	tr := newTracker(c.count)
	informers, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{c.namespace: {}}})
	if err != nil {
		return nil, err
	}
	inf, err := informers.GetInformer(ctx, &tkv1.SigningKey{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    tr.observe,
		UpdateFunc: func(_, obj any) { tr.observe(obj) },
	}); err != nil {
		return nil, err
	}
	cacheCtx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = informers.Start(cacheCtx) }()
	if !informers.WaitForCacheSync(ctx) {
		return nil, errors.New("the SigningKey informer did not sync")
	}

	var cpuBefore float64
	if c.managerPID > 0 {
		if cpuBefore, err = procCPUSeconds(c.managerPID); err != nil {
			return nil, err
		}
	}
	machineBefore := sampleMachine(c.clusterPIDs)

	names := make([]string, c.count)
	kinds := make([]variant, c.count)
	width := len(strconv.Itoa(c.count - 1))
	for i := range names {
		names[i] = fmt.Sprintf("%s-%0*d", c.prefix, width, i)
		kinds[i] = c.variants[i%len(c.variants)]
	}

	fmt.Fprintf(os.Stderr, "Creating %d SigningKeys (%s) in namespace %s with %d workers\n", c.count, c.mix, c.namespace, c.workers)
	start := time.Now()
	var createErrs atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range max(1, c.workers) {
		wg.Go(func() {
			for i := range jobs {
				sk := newSigningKey(c.namespace, names[i], kinds[i])
				tr.sending(names[i], time.Now())
				if err := createWithRetry(ctx, cl, sk); err != nil {
					createErrs.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("creating %s: %w", names[i], err)
					}
					errMu.Unlock()
				}
			}
		})
	}
	for i := range names {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	createDur := time.Since(start)
	fmt.Fprintf(os.Stderr, "Created %d SigningKeys in %.2fs (%d errors); waiting until every one is Ready\n",
		c.count-int(createErrs.Load()), createDur.Seconds(), createErrs.Load())

	timedOut := false
	if createErrs.Load() == 0 {
		deadline := time.NewTimer(time.Until(start.Add(c.timeout)))
		defer deadline.Stop()
		progress := time.NewTicker(15 * time.Second)
		defer progress.Stop()
	wait:
		for {
			select {
			case <-tr.all:
				break wait
			case <-deadline.C:
				timedOut = true
				break wait
			case <-progress.C:
				tr.mu.Lock()
				n := len(tr.readyAt)
				tr.mu.Unlock()
				fmt.Fprintf(os.Stderr, "  +%4.0fs  %d/%d Ready\n", time.Since(start).Seconds(), n, c.count)
			}
		}
	}
	end := time.Now()

	res := &Result{
		Mix: c.mix, Namespace: c.namespace, Count: c.count, StartedAt: start.UTC(),
		CreateSeconds: round3(createDur.Seconds()), CreateErrors: int(createErrs.Load()), TimedOut: timedOut,
		BenchGoMaxProcs: runtime.GOMAXPROCS(0), PublishAheadSecs: rotationAhead.Seconds(),
		RotationInterval: rotationInterval.String(), RotationRetainFor: rotationRetainFor.String(),
	}
	if c.managerPID > 0 {
		m, err := procManager(c.managerPID)
		if err != nil {
			return nil, err
		}
		m.CPUInRunSecs = round3(m.CPUSeconds - cpuBefore)
		res.Manager = m
	}
	if machineBefore.ok {
		after := sampleMachine(c.clusterPIDs)
		m := &Machine{
			CPUs:            runtime.NumCPU(),
			BusyCPUSeconds:  round3(after.busy - machineBefore.busy),
			ClusterCPUSecs:  round3(after.cluster - machineBefore.cluster),
			BenchCPUSeconds: round3(after.self - machineBefore.self),
			LoadAvgStart:    machineBefore.loadavg,
			LoadAvgEnd:      after.loadavg,
		}
		m.OtherCPUSeconds = round3(m.BusyCPUSeconds - m.ClusterCPUSecs - m.BenchCPUSeconds)
		if res.Manager != nil {
			m.OtherCPUSeconds = round3(m.OtherCPUSeconds - res.Manager.CPUInRunSecs)
		}
		res.Machine = m
	}

	tr.mu.Lock()
	byGroup := map[string][]float64{}
	counts := map[string]int{}
	var order []string
	for _, v := range c.variants {
		order = append(order, v.label())
	}
	order = append(order, groupCheap, groupRSA, groupAll)
	for i, name := range names {
		v := kinds[i]
		groups := []string{v.label(), groupAll}
		if v.cheap() {
			groups = append(groups, groupCheap)
		} else {
			groups = append(groups, groupRSA)
		}
		for _, g := range groups {
			counts[g]++
		}
		r, ok := tr.readyAt[name]
		if !ok {
			continue
		}
		d := r.Sub(tr.sent[name]).Seconds()
		for _, g := range groups {
			byGroup[g] = append(byGroup[g], d)
		}
	}
	res.Ready = len(tr.readyAt)
	last := tr.last
	tr.mu.Unlock()

	if res.Ready == c.count {
		res.TotalSeconds = round3(last.Sub(start).Seconds())
	} else {
		res.TotalSeconds = round3(end.Sub(start).Seconds())
	}
	if res.TotalSeconds > 0 {
		res.ObjectsPerSecond = round3(float64(res.Ready) / res.TotalSeconds)
	}
	for _, g := range order {
		if counts[g] == 0 {
			continue
		}
		res.Groups = append(res.Groups, stats(g, counts[g], byGroup[g]))
	}

	if timedOut {
		res.NotReadyByReason = notReadyReasons(ctx, cl, c.namespace, tr)
		return res, fmt.Errorf("only %d of %d SigningKeys were Ready after %s", res.Ready, c.count, c.timeout)
	}
	if firstErr != nil {
		return res, fmt.Errorf("%d create requests failed; the first: %w", createErrs.Load(), firstErr)
	}
	return res, nil
}

func newSigningKey(namespace, name string, v variant) *tkv1.SigningKey {
	sk := &tkv1.SigningKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
			Labels: map[string]string{"bench.tokenkeeper.dev/algorithm": strings.ReplaceAll(v.label(), "/", "-")}},
		Spec: tkv1.SigningKeySpec{
			Algorithm: v.alg,
			Rotation: tkv1.RotationPolicy{
				Interval:     &metav1.Duration{Duration: rotationInterval},
				PublishAhead: &metav1.Duration{Duration: rotationAhead},
				RetainFor:    &metav1.Duration{Duration: rotationRetainFor},
			},
		},
	}
	if v.bits != 0 {
		bits := v.bits
		sk.Spec.RSAKeySize = &bits
	}
	return sk
}

// createWithRetry retries only what an overloaded API server answers (429, 5xx, timeouts);
// the first attempt's send time stays the object's start.
func createWithRetry(ctx context.Context, cl client.Client, sk *tkv1.SigningKey) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		err = cl.Create(ctx, sk.DeepCopy())
		if err == nil || (apierrors.IsAlreadyExists(err) && attempt > 0) {
			return nil
		}
		if !(apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
			apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)) {
			return err
		}
	}
	return err
}

// notReadyReasons counts, for a run that timed out, the Ready condition reasons of the
// objects that never became Ready (from the API server, not the informer).
func notReadyReasons(ctx context.Context, cl client.Client, namespace string, tr *tracker) []string {
	var list tkv1.SigningKeyList
	if err := cl.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return []string{"listing failed: " + err.Error()}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := map[string]int{}
	for _, sk := range list.Items {
		if _, ok := tr.readyAt[sk.Name]; ok {
			continue
		}
		reason := "no Ready condition"
		if c := meta.FindStatusCondition(sk.Status.Conditions, tkv1.ConditionReady); c != nil {
			reason = fmt.Sprintf("Ready=%s %s", c.Status, c.Reason)
		}
		alg := string(sk.Spec.Algorithm)
		if sk.Spec.RSAKeySize != nil {
			alg += "/" + strconv.Itoa(int(*sk.Spec.RSAKeySize))
		}
		n[alg+": "+reason]++
	}
	out := make([]string, 0, len(n))
	for k, v := range n {
		out = append(out, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(out)
	return out
}

func stats(group string, count int, ds []float64) Stats {
	s := Stats{Group: group, Count: count, Ready: len(ds)}
	if len(ds) == 0 {
		return s
	}
	slices.Sort(ds)
	var sum float64
	for _, d := range ds {
		sum += d
	}
	s.P50, s.P90, s.P99 = round3(procstat.Percentile(ds, 50)), round3(procstat.Percentile(ds, 90)), round3(procstat.Percentile(ds, 99))
	s.Max, s.Mean = round3(ds[len(ds)-1]), round3(sum/float64(len(ds)))
	return s
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// procManager reads the manager's memory and CPU from /proc.
func procManager(pid int) (*Manager, error) {
	m := &Manager{PID: pid}
	var err error
	if m.RSSKiB, m.PeakRSSKiB, err = procstat.MemKiB(pid); err != nil {
		return nil, fmt.Errorf("reading the manager's /proc status (is it still running?): %w", err)
	}
	if m.CPUSeconds, err = procCPUSeconds(pid); err != nil {
		return nil, err
	}
	return m, nil
}

type machineSample struct {
	ok                  bool
	busy, cluster, self float64
	loadavg             string
}

// sampleMachine reads the busy time of all CPUs, of the cluster's processes and of this one.
func sampleMachine(clusterPIDs []int) machineSample {
	busy, _, ok := procstat.Busy()
	if !ok {
		return machineSample{}
	}
	s := machineSample{ok: true, busy: busy}
	for _, pid := range clusterPIDs {
		if c, err := procCPUSeconds(pid); err == nil {
			s.cluster += c
		}
	}
	s.self, _ = procCPUSeconds(os.Getpid())
	s.loadavg = procstat.LoadAvg()
	return s
}

// procCPUSeconds is utime+stime of pid, to the millisecond.
func procCPUSeconds(pid int) (float64, error) {
	c, err := procstat.CPUSeconds(pid)
	return round3(c), err
}

func printResult(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\n### SigningKeys: %s, %d objects (namespace %s)\n\n", r.Mix, r.Count, r.Namespace)
	fmt.Fprintf(w, "| Figure | Value |\n|---|---|\n")
	fmt.Fprintf(w, "| Ready | %d / %d%s |\n", r.Ready, r.Count, map[bool]string{true: " (timed out)", false: ""}[r.TimedOut])
	fmt.Fprintf(w, "| Create requests (first sent to last answered) | %.3f s |\n", r.CreateSeconds)
	fmt.Fprintf(w, "| Total: first create request to last Ready observed | %.3f s |\n", r.TotalSeconds)
	fmt.Fprintf(w, "| Throughput | %.3f objects/s |\n", r.ObjectsPerSecond)
	if m := r.Manager; m != nil {
		fmt.Fprintf(w, "| Manager peak RSS (VmHWM) | %d KiB (%.1f MiB) |\n", m.PeakRSSKiB, float64(m.PeakRSSKiB)/1024)
		fmt.Fprintf(w, "| Manager RSS at the end (VmRSS) | %d KiB (%.1f MiB) |\n", m.RSSKiB, float64(m.RSSKiB)/1024)
		fmt.Fprintf(w, "| Manager CPU (utime+stime): whole process / during the run | %.2f s / %.2f s |\n", m.CPUSeconds, m.CPUInRunSecs)
	}
	if m := r.Machine; m != nil {
		fmt.Fprintf(w, "| Machine CPU busy during the run (%d CPUs) | %.2f s: manager %.2f, kube-apiserver+etcd %.2f, this program %.2f, other processes %.2f |\n",
			m.CPUs, m.BusyCPUSeconds, r.managerCPU(), m.ClusterCPUSecs, m.BenchCPUSeconds, m.OtherCPUSeconds)
		fmt.Fprintf(w, "| Load average at start / end | %s / %s |\n", m.LoadAvgStart, m.LoadAvgEnd)
	}
	fmt.Fprintf(w, "\nTime from an object's create request to its Ready=True observed, in seconds:\n\n")
	fmt.Fprintf(w, "| Algorithm | Objects | Ready | p50 | p90 | p99 | max | mean |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, g := range r.Groups {
		fmt.Fprintf(w, "| %s | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f |\n", g.Group, g.Count, g.Ready, g.P50, g.P90, g.P99, g.Max, g.Mean)
	}
	for _, s := range r.NotReadyByReason {
		fmt.Fprintf(w, "- not Ready: %s\n", s)
	}
	fmt.Fprintln(w)
}

func writeJSON(path string, r *Result) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &Result{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func (r *Result) managerCPU() float64 {
	if r.Manager == nil {
		return 0
	}
	return r.Manager.CPUInRunSecs
}

func (r *Result) group(name string) (Stats, bool) {
	for _, g := range r.Groups {
		if g.Group == name {
			return g, true
		}
	}
	return Stats{}, false
}

// runCompare prints a candidate run against its baseline, as ratios.
func runCompare(w io.Writer, candidatePath, baselinePath string) error {
	if baselinePath == "" {
		return errors.New("-compare needs -baseline")
	}
	cand, err := readJSON(candidatePath)
	if err != nil {
		return err
	}
	base, err := readJSON(baselinePath)
	if err != nil {
		return err
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	candCheap, _ := cand.group(groupCheap)
	baseAll, _ := base.group(groupAll)
	candAll, _ := cand.group(groupAll)
	candRSA, hasRSA := cand.group(groupRSA)

	cn, bn := cand.Mix, base.Mix
	fmt.Fprintf(w, "\n### Summary: %s (%d objects) against the %s baseline (%d objects)\n\n", cn, cand.Count, bn, base.Count)
	fmt.Fprintf(w, "| Figure | %s | %s | ratio %s/%s |\n|---|---:|---:|---:|\n", cn, bn, cn, bn)
	fmt.Fprintf(w, "| Ready | %d/%d | %d/%d | |\n", cand.Ready, cand.Count, base.Ready, base.Count)
	fmt.Fprintf(w, "| Total time until all Ready (s) | %.3f | %.3f | %s |\n", cand.TotalSeconds, base.TotalSeconds, ratio(cand.TotalSeconds, base.TotalSeconds))
	fmt.Fprintf(w, "| Throughput (objects/s) | %.3f | %.3f | %s |\n", cand.ObjectsPerSecond, base.ObjectsPerSecond, ratio(cand.ObjectsPerSecond, base.ObjectsPerSecond))
	fmt.Fprintf(w, "| p50 time-to-Ready, %s objects vs all %s objects (s) | %.3f | %.3f | %s |\n", groupCheap, bn, candCheap.P50, baseAll.P50, ratio(candCheap.P50, baseAll.P50))
	fmt.Fprintf(w, "| p99 time-to-Ready, %s objects vs all %s objects (s) | %.3f | %.3f | %s |\n", groupCheap, bn, candCheap.P99, baseAll.P99, ratio(candCheap.P99, baseAll.P99))
	fmt.Fprintf(w, "| max time-to-Ready, %s objects vs all %s objects (s) | %.3f | %.3f | %s |\n", groupCheap, bn, candCheap.Max, baseAll.Max, ratio(candCheap.Max, baseAll.Max))
	fmt.Fprintf(w, "| p99 time-to-Ready, all objects (s) | %.3f | %.3f | %s |\n", candAll.P99, baseAll.P99, ratio(candAll.P99, baseAll.P99))
	if hasRSA {
		fmt.Fprintf(w, "| p99 time-to-Ready, %s (s) | %.3f | | |\n", groupRSA, candRSA.P99)
	}
	if cand.Manager != nil && base.Manager != nil {
		cm, bm := cand.Manager, base.Manager
		fmt.Fprintf(w, "| Manager peak RSS, VmHWM (MiB) | %.1f | %.1f | %s |\n", float64(cm.PeakRSSKiB)/1024, float64(bm.PeakRSSKiB)/1024, ratio(float64(cm.PeakRSSKiB), float64(bm.PeakRSSKiB)))
		fmt.Fprintf(w, "| Manager CPU during the run (s) | %.2f | %.2f | %s |\n", cm.CPUInRunSecs, bm.CPUInRunSecs, ratio(cm.CPUInRunSecs, bm.CPUInRunSecs))
		fmt.Fprintf(w, "| Manager CPU, whole process (s) | %.2f | %.2f | %s |\n", cm.CPUSeconds, bm.CPUSeconds, ratio(cm.CPUSeconds, bm.CPUSeconds))
	}
	if cand.Machine != nil && base.Machine != nil {
		fmt.Fprintf(w, "| kube-apiserver+etcd CPU during the run (s) | %.2f | %.2f | %s |\n", cand.Machine.ClusterCPUSecs, base.Machine.ClusterCPUSecs, ratio(cand.Machine.ClusterCPUSecs, base.Machine.ClusterCPUSecs))
		fmt.Fprintf(w, "| CPU of other processes on the machine during the run (s) | %.2f | %.2f | |\n", cand.Machine.OtherCPUSeconds, base.Machine.OtherCPUSeconds)
	}
	fmt.Fprintf(w, "\nThe p99 ratio of the %s objects is the stall indicator: near 1× means RSA key generation in the %s run did not hold up the reconciles of cheap keys.\n\n", groupCheap, cn)
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "signingkeys:", err)
	os.Exit(1)
}
