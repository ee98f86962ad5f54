package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution/server"
)

// Result is one run: one subscriber count, one manager.
type Result struct {
	Subscribers         int           `json:"subscribers"`
	Changes             int           `json:"changes"`
	Namespaces          []string      `json:"namespaces"`
	StartedAt           time.Time     `json:"startedAt"`
	CPUs                int           `json:"cpus"`
	GOMAXPROCS          int           `json:"benchGOMAXPROCS"`
	Limits              server.Limits `json:"serverLimits"`
	TLS                 *TLSCheck     `json:"tls,omitempty"`
	TokenRequestSeconds float64       `json:"tokenRequestSeconds"`
	ConnectSeconds      float64       `json:"connectSeconds"` // first connect to all holding and parked
	TokenReviews        int64         `json:"tokenReviews"`   // while connecting
	Phases              []*Phase      `json:"phases"`
	Sidecar             *Sidecar      `json:"sidecar,omitempty"`
	Errors              counters      `json:"answers"`
	Failure             string        `json:"failure,omitempty"`
}

// counters are the subscribers' answers over the whole run.
type counters struct {
	OK            int64 `json:"ok"`
	NotModified   int64 `json:"notModified"`
	Unavailable   int64 `json:"unavailable"`
	Errors        int64 `json:"errors"`
	ResolveErrors int64 `json:"resolveErrors"`
	NotAccepted   int64 `json:"notAccepted"`
}

func printResult(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\n### Distribution push: %d subscribers (%d namespace%s)\n\n", r.Subscribers, len(r.Namespaces), plural(len(r.Namespaces)))
	if r.TLS != nil {
		fmt.Fprintf(w, "- TLS: %s\n", r.TLS.Summary)
	}
	fmt.Fprintf(w, "- %d distinct TokenRequest tokens in %.1f s; all subscribers connected, authenticated (%d TokenReviews) and parked %.1f s after the first connect\n",
		r.Subscribers, r.TokenRequestSeconds, r.TokenReviews, r.ConnectSeconds)
	fmt.Fprintf(w, "- answers over the run: %d snapshots, %d not modified, %d 503, %d errors, %d resolve errors, %d not accepted\n",
		r.Errors.OK, r.Errors.NotModified, r.Errors.Unavailable, r.Errors.Errors, r.Errors.ResolveErrors, r.Errors.NotAccepted)
	for _, p := range r.Phases {
		fmt.Fprintf(w, "\n#### %s: %d revoked tokens held before the first change\n\n", p.Name, p.RevokedTokens)
		if p.Setup != "" {
			fmt.Fprintf(w, "%s.\n\n", p.Setup)
		}
		fmt.Fprintf(w, "Per subscriber, time from just before the API write to the new snapshot applied (resolved + validated), ms:\n\n")
		fmt.Fprintf(w, "| Change | min | p50 | p90 | p99 | max | received p99 | API write | manager CPU (s) | bytes sent (gzip bodies) | delivered as |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, rd := range p.Rounds {
			fmt.Fprintf(w, "| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %d | %s (%s) |\n", rd.Round, rd.Applied.Min, rd.Applied.P50, rd.Applied.P90, rd.Applied.P99, rd.Applied.Max,
				rd.Received.P99, rd.WriteMs, rd.ManagerCPUSecs, rd.BytesSent, rd.Delivered, sizes(rd.Sizes))
		}
		a := p.Aggregate
		fmt.Fprintf(w, "| **all %d** | %.1f | **%.1f** | %.1f | **%.1f** | **%.1f** | %.1f | | %.2f | %d | |\n\n", a.Count, a.Min, a.P50, a.P90, a.P99, a.Max, p.AggregateRecv.P99, p.ManagerCPUSecs, p.BytesSent)
		reset := "since the phase began (VmHWM reset with clear_refs)"
		if !p.PeakRSSReset {
			reset = "since the manager started (clear_refs failed)"
		}
		fmt.Fprintf(w, "- manager peak RSS %s: %.1f MiB; RSS at the end %.1f MiB\n", reset, kib(p.PeakRSSKiB), kib(p.RSSKiB))
		m := p.Machine
		fmt.Fprintf(w, "- CPU over the %.1f s of the changes (settling between them included), %d CPUs: busy %.2f s (irq+softirq %.2f) = manager %.2f + kube-apiserver/etcd %.2f + this program (the subscribers) %.2f + other processes and uncharged kernel time %.2f; load average %s → %s\n",
			m.Seconds, r.CPUs, m.BusyCPUSeconds, m.IRQSeconds, m.ManagerCPUSecs, m.ClusterCPUSecs, m.BenchCPUSecs, m.OtherCPUSecs, m.LoadAvgStart, m.LoadAvgEnd)
		fmt.Fprintf(w, "- TokenReviews during the changes: %d\n", p.TokenReviews)
		if p.FullBytesPlain > 0 {
			fmt.Fprintf(w, "- full snapshot: %d bytes plain, %d gzip; delta for one added jti: %d bytes plain, %d gzip\n", p.FullBytesPlain, p.FullBytesGzip, p.DeltaBytesPlain, p.DeltaBytesGzip)
		}
		for _, n := range p.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	if s := r.Sidecar; s != nil {
		fmt.Fprintf(w, "\n#### Standalone sidecar holding the large set\n\n")
		fmt.Fprintf(w, "- revocations file %d bytes; ready %.2f s after start; tokenkeeper_sidecar_revocations_loaded %.0f\n", s.FileBytes, s.ReadySeconds, s.RevocationsLoaded)
		fmt.Fprintf(w, "- VmRSS %.1f MiB, VmHWM %.1f MiB (2 s after ready)\n", kib(s.RSSKiB), kib(s.PeakRSSKiB))
	}
	if r.Failure != "" {
		fmt.Fprintf(w, "\n**FAILED**: %s\n", r.Failure)
	}
	fmt.Fprintln(w)
}

func sizes(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d B", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func kib(k int64) float64 { return float64(k) / 1024 }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func writeJSON(path string, r *Result) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
