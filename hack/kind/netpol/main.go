//go:build ignore

// Command netpol enforces NetworkPolicies on the e2e kind node, whose static ptp CNI enforces
// none. hack/kind/netpol.sh builds it in a module of its own around
// sigs.k8s.io/kube-network-policies (the version in hack/versions.sh, from the Go module
// proxy), so its dependencies stay out of tokenkeeper's go.mod; the build constraint keeps it
// out of tokenkeeper's packages.
//
// kube-network-policies decides: it watches NetworkPolicies, namespaces and pods, reads the
// first packet of every new connection from an NFQUEUE and returns accept or drop. It also
// installs the nftables rules that send those packets to the queue, with nftables' native
// queue expression. A kernel built without CONFIG_NFT_QUEUE (this CI's) refuses that
// expression ("no such file or directory") and the whole ruleset with it, so the engine would
// run and drop nothing. This command then installs the queue rules itself with the xtables
// NFQUEUE target through nft_compat, which such kernels keep for iptables-nft: every new
// connection from or to the pod CIDR goes to the engine (it accepts pods no policy selects).
// Where the native expression works, the engine's own rules stay the only ones.
//
// /readyz answers 200 once the engine holds the queue and the queue rules are in place.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// table holds this command's queue rules (the engine keeps its own table, kube-network-policies).
const table = "tokenkeeper-netpol"

func main() { os.Exit(run()) }

func run() int {
	nodeName := flag.String("node-name", "", "the Node this pod runs on (the engine only evaluates its pods' policies)")
	queueID := flag.Int("nfqueue-id", 98, "the NFQUEUE the engine reads")
	podCIDR := flag.String("pod-cidr", "10.244.0.0/16", "IPv4 pod addresses: new connections from or to them are queued when the kernel lacks nftables' queue expression")
	addr := flag.String("serve-address", ":9080", "where /readyz and /metrics are served (the pod uses the host network)")
	klog.InitFlags(nil)
	flag.Parse()
	cidr, err := netip.ParsePrefix(*podCIDR)
	if err != nil || !cidr.Addr().Is4() {
		klog.ErrorS(err, "The pod CIDR must be an IPv4 prefix", "podCIDR", *podCIDR)
		return 1
	}
	cidr = cidr.Masked()
	if *nodeName == "" || *queueID < 1 || *queueID > 65535 {
		klog.ErrorS(nil, "Both --node-name and an --nfqueue-id in 1..65535 are required")
		return 1
	}

	cfg, err := rest.InClusterConfig()
	if err != nil {
		klog.ErrorS(err, "Could not read the in-cluster configuration")
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.ErrorS(err, "Could not create the client")
		return 1
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	engine, err := networkpolicy.NewController(cs,
		factory.Networking().V1().NetworkPolicies(), factory.Core().V1().Namespaces(), factory.Core().V1().Pods(),
		nil, nil, nil, nil, // no (Baseline)AdminNetworkPolicy
		networkpolicy.Config{QueueID: *queueID, NodeName: *nodeName})
	if err != nil {
		klog.ErrorS(err, "Could not create the NetworkPolicy engine")
		return 1
	}

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "the queue rules are not in place yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "The HTTP server stopped", "address", *addr)
		}
	}()

	// The engine stops only after the queue rules are gone: with no reader, the queue drops.
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	engineDone := make(chan error, 1)
	go func() { engineDone <- engine.Run(engineCtx) }()
	factory.Start(engineCtx.Done())

	native, err := nativeQueue()
	if err != nil {
		klog.ErrorS(err, "Could not probe nftables")
		return 1
	}
	if !native {
		klog.InfoS("The kernel has no nftables queue expression: queueing pod connections with the xtables NFQUEUE target instead",
			"podCIDR", cidr, "queue", *queueID)
	}
	// The engine binds the queue once its caches are synced (and, with the native expression,
	// after installing its rules).
	if err := waitQueueBound(sig, engineDone, *queueID); err != nil {
		klog.ErrorS(err, "The engine did not bind its queue", "queue", *queueID)
		return 1
	}
	if !native {
		if err := installCompatRules(cidr, uint16(*queueID)); err != nil {
			klog.ErrorS(err, "Could not install the queue rules", "table", table)
			return 1
		}
		klog.InfoS("Installed the queue rules", "table", table)
	}
	ready.Store(true)
	klog.InfoS("Enforcing NetworkPolicies", "node", *nodeName, "queue", *queueID)

	code, stopped := 0, false
	select {
	case <-sig.Done():
		klog.InfoS("Stopping")
	case err := <-engineDone:
		klog.ErrorS(err, "The NetworkPolicy engine stopped")
		code, stopped = 1, true
	}
	ready.Store(false)
	if !native {
		if err := deleteCompatRules(); err != nil {
			klog.ErrorS(err, "Could not remove the queue rules", "table", table)
			code = 1
		}
	}
	// The engine removes its own rules when it stops: give it the time.
	stopEngine()
	if !stopped {
		select {
		case <-engineDone:
		case <-time.After(5 * time.Second):
		}
	}
	return code
}

// nativeQueue tells whether the kernel accepts nftables' queue expression, by adding a
// table with one queue rule and deleting it in the same transaction.
func nativeQueue() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	t := c.AddTable(&nftables.Table{Name: table + "-probe", Family: nftables.TableFamilyIPv4})
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Queue{Num: 1}}})
	c.DelTable(t)
	err = c.Flush()
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// waitQueueBound waits until /proc/net/netfilter/nfnetlink_queue lists the queue, i.e. the
// engine reads it.
func waitQueueBound(ctx context.Context, engineDone <-chan error, id int) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(2 * time.Minute)
	for {
		b, err := os.ReadFile("/proc/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(id) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-engineDone:
			return fmt.Errorf("the engine stopped: %w", err)
		case <-timeout:
			return errors.New("timed out after 2m")
		case <-tick.C:
		}
	}
}

// installCompatRules (re)creates the table: new connections from or to the pod CIDR go to the
// queue, except the node's own root processes' (the kubelet's probes), as the engine's rules do.
// No bypass flag: with no reader the queue drops, so a stopped engine fails closed.
func installCompatRules(cidr netip.Prefix, queue uint16) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t) // flushes whatever an earlier run left
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeFilter,
		// Where the engine hooks its own rules: after routing, before source NAT.
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource - 5),
	})
	rule := func(e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e}) }
	// ct state established,related accept
	rule(&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept})
	// meta skuid 0 accept
	rule(&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept})
	// ip saddr <cidr> queue num <queue>; ip daddr <cidr> queue num <queue>
	mask := netipMask(cidr)
	for _, offset := range []uint32{12, 16} {
		rule(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: cidr.Addr().AsSlice()},
			&expr.Counter{},
			nfqueueTarget(queue))
	}
	return c.Flush()
}

func deleteCompatRules() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
	return c.Flush()
}

// nfqueueTarget is the xtables NFQUEUE target, revision 3: struct xt_NFQ_info_v3 {u16
// queuenum; u16 queues_total; u16 flags}, in host byte order, padded to 8 bytes (XT_ALIGN).
func nfqueueTarget(queue uint16) *expr.Target {
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], queue)
	binary.NativeEndian.PutUint16(info[2:], 1)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}

func netipMask(p netip.Prefix) []byte {
	m := make([]byte, 4)
	binary.BigEndian.PutUint32(m, ^uint32(0)<<(32-p.Bits())) // a shift by 32 gives 0
	return m
}
